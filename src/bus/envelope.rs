//! Signed triggers and acks: the payloads, the JSON envelope that carries them, and their
//! OpenSSH signatures (SSHSIG).
//!
//! A trigger payload is exactly these lines, each ending in `\n`, in this order:
//! ```text
//! mirrorpush-trigger 1
//! request: sync fedora updates/41
//! id: 0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162
//! issued: 2026-11-30T10:00:00Z
//! origin: master.example.org
//! serial: 2026113001            (optional)
//! ```
//! An ack payload is `mirrorpush-ack 1` then `id:`, `mirror:`, `request:`, `result:`, `detail:`,
//! `started:`, `ended:` lines. The request is parsed with [`crate::request`], the one grammar.
//! Parsing is strict in the same way as the grammar: whatever parses re-renders byte for byte,
//! so a signature over the payload covers exactly what the receiver acts on.
//!
//! The envelope is the JSON object `{"payload": "<payload>", "signature": "<armored SSHSIG>"}`;
//! the signature is `ssh-keygen -Y sign -n <namespace>` over the payload bytes, so OpenSSH can
//! produce and check the same envelopes.

use std::fmt;
use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use super::signers::AllowedSigners;
use crate::request::{Request, RequestError};

/// SSHSIG namespace of a master's triggers.
pub const TRIGGER_NAMESPACE: &str = "mirrorpush-trigger";
/// SSHSIG namespace of a listener's acks.
pub const ACK_NAMESPACE: &str = "mirrorpush-ack";
/// Largest envelope accepted, in bytes. A real one is well under 2 KiB (an RSA-4096 signature
/// included); anything larger is refused before it is parsed.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;
/// Largest text [`Envelope::from_text`] reads an envelope from (a mail with its headers).
pub const MAX_TEXT_LEN: usize = 1024 * 1024;
const TRIGGER_MAGIC: &str = "mirrorpush-trigger 1";
const ACK_MAGIC: &str = "mirrorpush-ack 1";
const MAX_NAME_LEN: usize = 253;
const MAX_SERIAL_LEN: usize = 128;
const MAX_DETAIL_LEN: usize = 512;

/// Why an envelope or payload was refused. [`EnvelopeError::reason`] is the short word that
/// logs and status counters use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    TooLarge(usize),
    /// Not a JSON object of two strings `payload` and `signature`.
    NotJson(String),
    /// The payload's lines are not the contract's.
    Malformed(String),
    /// The request line fails the grammar.
    Request(RequestError),
    /// The signature is not an armored SSHSIG, has the wrong namespace, or does not verify.
    Signature(String),
    /// No key in allowed_signers for this principal and namespace made the signature.
    UnknownSigner(String),
}

impl EnvelopeError {
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge(_) => "too-large",
            EnvelopeError::NotJson(_) => "not-json",
            EnvelopeError::Malformed(_) => "malformed",
            EnvelopeError::Request(_) => "grammar",
            EnvelopeError::Signature(_) => "signature",
            EnvelopeError::UnknownSigner(_) => "unknown-signer",
        }
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooLarge(n) => {
                write!(f, "message is {n} bytes, the limit is {MAX_ENVELOPE_LEN}")
            }
            EnvelopeError::NotJson(e) => write!(f, "not a signed envelope: {e}"),
            EnvelopeError::Malformed(e) => write!(f, "malformed payload: {e}"),
            EnvelopeError::Request(e) => write!(f, "request refused: {e}"),
            EnvelopeError::Signature(e) => write!(f, "bad signature: {e}"),
            EnvelopeError::UnknownSigner(e) => write!(f, "signer not trusted: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

fn malformed(what: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed(what.into())
}

/// A message id: a lowercase UUID version 4 (`8-4-4-4-12` hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

impl MessageId {
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        let b = s.as_bytes();
        let dashes_ok = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
        let hex_ok = b
            .iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !(dashes_ok && hex_ok && b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')) {
            return Err(malformed("id is not a lowercase UUID version 4"));
        }
        Ok(MessageId(s.to_owned()))
    }

    /// A fresh random id (from the kernel's random source).
    pub fn random() -> std::io::Result<Self> {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(MessageId(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A master's `origin` or a mirror's name: the principal in allowed_signers. Letters, digits
/// and `.`, `_`, `-`, `@`, `:`, starting with a letter or digit, at most 253 bytes: no space,
/// comma or wildcard, so it can never be read as a principals pattern list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(u8::is_ascii_alphanumeric);
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-@:".contains(c));
        if !first_ok || !rest_ok || b.len() > MAX_NAME_LEN {
            return Err(malformed(format!(
                "name {:?} is not letters, digits and . _ - @ : (at most {MAX_NAME_LEN})",
                crate::request::escape_bytes(b)
            )));
        }
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `2026-11-30T10:00:00Z`: RFC 3339, UTC, whole seconds.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses exactly the form [`format_time`] writes.
pub fn parse_time(s: &str) -> Result<SystemTime, EnvelopeError> {
    let t = humantime::parse_rfc3339(s)
        .map_err(|_| malformed(format!("{s:?} is not an RFC 3339 UTC time")))?;
    if format_time(t) != s {
        return Err(malformed(format!(
            "{s:?} is not of the form 2026-11-30T10:00:00Z"
        )));
    }
    Ok(t)
}

/// Whole seconds: what a payload can carry.
fn truncate(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A master's trigger: what to sync, and the facts that make it checkable and unrepeatable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub request: Request,
    pub id: MessageId,
    pub issued: SystemTime,
    pub origin: Name,
    /// sha256 of the module's file list or the trace's `Archive serial`.
    pub serial: Option<String>,
}

impl Trigger {
    /// A new trigger issued now with a random id.
    pub fn new(request: Request, origin: Name, serial: Option<String>) -> std::io::Result<Self> {
        if let Some(s) = &serial {
            check_serial(s).map_err(std::io::Error::other)?;
        }
        Ok(Trigger {
            request,
            id: MessageId::random()?,
            issued: truncate(SystemTime::now()),
            origin,
            serial,
        })
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "{TRIGGER_MAGIC}\nrequest: {}\nid: {}\nissued: {}\norigin: {}\n",
            self.request,
            self.id,
            format_time(self.issued),
            self.origin
        );
        if let Some(serial) = &self.serial {
            s.push_str(&format!("serial: {serial}\n"));
        }
        s
    }

    pub fn parse(payload: &str) -> Result<Self, EnvelopeError> {
        let mut lines = Lines::new(payload, TRIGGER_MAGIC)?;
        let request = parse_request(lines.field("request")?)?;
        let id = MessageId::parse(lines.field("id")?)?;
        let issued = parse_time(lines.field("issued")?)?;
        let origin = Name::parse(lines.field("origin")?)?;
        let serial = match lines.optional("serial")? {
            Some(s) => Some(check_serial(s)?.to_owned()),
            None => None,
        };
        lines.end()?;
        let t = Trigger {
            request,
            id,
            issued,
            origin,
            serial,
        };
        // Belt and braces: every field re-renders as read, so nothing was normalised.
        if t.render() != payload {
            return Err(malformed("payload does not re-render byte for byte"));
        }
        Ok(t)
    }
}

fn check_serial(s: &str) -> Result<&str, EnvelopeError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SERIAL_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c));
    if !ok {
        return Err(malformed("serial is not 1-128 letters, digits, . _ : -"));
    }
    Ok(s)
}

fn parse_request(s: &str) -> Result<Request, EnvelopeError> {
    Request::parse(s.as_bytes()).map_err(EnvelopeError::Request)
}

/// What a listener reports for a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// A `wait` module: the run covering the request ended well.
    Synced,
    /// A `detach` module: the handler accepted (or queued) the request.
    Accepted,
    /// A `wait` module: the run covering the request failed.
    Failed,
}

impl AckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AckResult::Synced => "synced",
            AckResult::Accepted => "accepted",
            AckResult::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, EnvelopeError> {
        match s {
            "synced" => Ok(AckResult::Synced),
            "accepted" => Ok(AckResult::Accepted),
            "failed" => Ok(AckResult::Failed),
            _ => Err(malformed("result is not synced, accepted or failed")),
        }
    }
}

/// A listener's answer to one signed trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The trigger's id.
    pub id: MessageId,
    pub mirror: Name,
    pub request: Request,
    pub result: AckResult,
    /// One line for people (printable ASCII; anything else is escaped by [`Ack::new`]).
    pub detail: String,
    pub started: SystemTime,
    pub ended: SystemTime,
}

impl Ack {
    /// An ack with `detail` made safe for one payload line, times in whole seconds.
    pub fn new(
        trigger: &Trigger,
        mirror: Name,
        result: AckResult,
        detail: &str,
        started: SystemTime,
        ended: SystemTime,
    ) -> Self {
        let mut detail = crate::request::escape_bytes(detail.as_bytes());
        if detail.len() > MAX_DETAIL_LEN {
            let mut end = MAX_DETAIL_LEN;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Ack {
            id: trigger.id.clone(),
            mirror,
            request: trigger.request.clone(),
            result,
            detail,
            started: truncate(started),
            ended: truncate(ended),
        }
    }

    pub fn render(&self) -> String {
        format!(
            "{ACK_MAGIC}\nid: {}\nmirror: {}\nrequest: {}\nresult: {}\ndetail: {}\nstarted: {}\nended: {}\n",
            self.id,
            self.mirror,
            self.request,
            self.result.as_str(),
            self.detail,
            format_time(self.started),
            format_time(self.ended)
        )
    }

    pub fn parse(payload: &str) -> Result<Self, EnvelopeError> {
        let mut lines = Lines::new(payload, ACK_MAGIC)?;
        let id = MessageId::parse(lines.field("id")?)?;
        let mirror = Name::parse(lines.field("mirror")?)?;
        let request = parse_request(lines.field("request")?)?;
        let result = AckResult::parse(lines.field("result")?)?;
        let detail = lines.field_or_empty("detail")?;
        if detail.len() > MAX_DETAIL_LEN || !detail.bytes().all(|c| (0x20..0x7f).contains(&c)) {
            return Err(malformed("detail is not one line of printable ASCII"));
        }
        let started = parse_time(lines.field("started")?)?;
        let ended = parse_time(lines.field("ended")?)?;
        lines.end()?;
        let ack = Ack {
            id,
            mirror,
            request,
            result,
            detail: detail.to_owned(),
            started,
            ended,
        };
        if ack.render() != payload {
            return Err(malformed("payload does not re-render byte for byte"));
        }
        Ok(ack)
    }
}

/// The payload's lines in order: the magic line, then `key: value` lines.
struct Lines<'a> {
    lines: std::iter::Peekable<std::str::Split<'a, char>>,
}

impl<'a> Lines<'a> {
    fn new(payload: &'a str, magic: &str) -> Result<Self, EnvelopeError> {
        let body = payload
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the last line does not end in a newline"))?;
        if body.bytes().any(|c| c.is_ascii_control() && c != b'\n') {
            return Err(malformed("control characters"));
        }
        let mut lines = body.split('\n').peekable();
        if lines.next() != Some(magic) {
            return Err(malformed(format!("the first line is not {magic:?}")));
        }
        Ok(Lines { lines })
    }

    fn field(&mut self, key: &str) -> Result<&'a str, EnvelopeError> {
        let v = self.field_or_empty(key)?;
        if v.is_empty() {
            return Err(malformed(format!("{key} is empty")));
        }
        Ok(v)
    }

    fn field_or_empty(&mut self, key: &str) -> Result<&'a str, EnvelopeError> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| malformed(format!("no {key}: line")))?;
        if line == format!("{key}:") {
            return Ok("");
        }
        line.strip_prefix(key)
            .and_then(|l| l.strip_prefix(": "))
            .ok_or_else(|| malformed(format!("expected a {key}: line")))
    }

    fn optional(&mut self, key: &str) -> Result<Option<&'a str>, EnvelopeError> {
        let prefix = format!("{key}:");
        match self.lines.peek() {
            Some(l) if l.starts_with(&prefix) => self.field(key).map(Some),
            _ => Ok(None),
        }
    }

    fn end(&mut self) -> Result<(), EnvelopeError> {
        match self.lines.next() {
            None => Ok(()),
            Some(_) => Err(malformed("unexpected lines after the last field")),
        }
    }
}

/// The signed envelope: a payload and an armored SSHSIG over its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    pub signature: String,
}

impl Envelope {
    /// Signs `payload` with `key` in `namespace` (SHA-512, as `ssh-keygen -Y sign` does).
    pub fn sign(payload: String, namespace: &str, key: &PrivateKey) -> Result<Self, EnvelopeError> {
        let sig = key
            .sign(namespace, HashAlg::Sha512, payload.as_bytes())
            .map_err(|e| EnvelopeError::Signature(format!("cannot sign: {e}")))?;
        let signature = sig
            .to_pem(LineEnding::LF)
            .map_err(|e| EnvelopeError::Signature(format!("cannot armor: {e}")))?;
        Ok(Envelope { payload, signature })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("two strings always serialise")
    }

    /// Exactly one JSON object `{"payload": "...", "signature": "..."}` (whitespace around it
    /// allowed), at most [`MAX_ENVELOPE_LEN`] bytes.
    pub fn from_json(body: &[u8]) -> Result<Self, EnvelopeError> {
        if body.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge(body.len()));
        }
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))
    }

    /// An envelope as text may carry it: bare JSON, or a mail whose body holds one. In a mail
    /// (the input does not start with `{`), the envelope is read from the first line after the
    /// first empty line that starts with `{`; one JSON object is read there and anything after
    /// its closing brace is ignored. Transfer encodings are not decoded.
    pub fn from_text(input: &[u8]) -> Result<Self, EnvelopeError> {
        if input.len() > MAX_TEXT_LEN {
            return Err(EnvelopeError::TooLarge(input.len()));
        }
        let trimmed = input.trim_ascii_start();
        let start = if trimmed.starts_with(b"{") {
            trimmed
        } else {
            mail_json_start(input).ok_or_else(|| {
                EnvelopeError::NotJson("no line starting with '{' in the mail body".into())
            })?
        };
        let mut stream = serde_json::Deserializer::from_slice(start).into_iter::<Envelope>();
        match stream.next() {
            Some(Ok(_)) if stream.byte_offset() > MAX_ENVELOPE_LEN => {
                Err(EnvelopeError::TooLarge(stream.byte_offset()))
            }
            Some(Ok(env)) => Ok(env),
            Some(Err(e)) => Err(EnvelopeError::NotJson(e.to_string())),
            None => Err(EnvelopeError::NotJson("empty".into())),
        }
    }

    fn sshsig(&self, namespace: &str) -> Result<SshSig, EnvelopeError> {
        let sig = SshSig::from_pem(self.signature.as_bytes())
            .map_err(|e| EnvelopeError::Signature(format!("not an armored SSH signature: {e}")))?;
        if sig.namespace() != namespace {
            return Err(EnvelopeError::Signature(format!(
                "namespace is {:?}, expected {namespace:?}",
                crate::request::escape_bytes(sig.namespace().as_bytes())
            )));
        }
        Ok(sig)
    }

    /// Checks the signature against one known key (an ack against the mirror's `ack_key`).
    pub fn verify_key(&self, namespace: &str, key: &PublicKey) -> Result<(), EnvelopeError> {
        let sig = self.sshsig(namespace)?;
        if sig.public_key() != key.key_data() {
            return Err(EnvelopeError::UnknownSigner(
                "signed by another key".to_owned(),
            ));
        }
        key.verify(namespace, self.payload.as_bytes(), &sig)
            .map_err(|e| EnvelopeError::Signature(format!("does not verify: {e}")))
    }

    /// Checks the signature against the keys `signers` trusts for `principal` in `namespace`
    /// at `now`, as `ssh-keygen -Y verify -f allowed_signers -I principal -n namespace` does.
    /// Returns the signing key's SHA256 fingerprint.
    pub fn verify_signers(
        &self,
        namespace: &str,
        signers: &AllowedSigners,
        principal: &str,
        now: SystemTime,
    ) -> Result<String, EnvelopeError> {
        let sig = self.sshsig(namespace)?;
        let key = signers
            .find(principal, namespace, sig.public_key(), now)
            .map_err(|why| EnvelopeError::UnknownSigner(why.to_string()))?;
        key.verify(namespace, self.payload.as_bytes(), &sig)
            .map_err(|e| EnvelopeError::Signature(format!("does not verify: {e}")))?;
        Ok(key.fingerprint(HashAlg::Sha256).to_string())
    }
}

/// The start of the first line after the first empty line (the end of the mail header) that
/// starts with `{`.
fn mail_json_start(input: &[u8]) -> Option<&[u8]> {
    let mut in_body = false;
    let mut offset = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        let bare = line
            .strip_suffix(b"\n")
            .unwrap_or(line)
            .strip_suffix(b"\r")
            .unwrap_or(line.strip_suffix(b"\n").unwrap_or(line));
        if in_body && bare.starts_with(b"{") {
            return Some(&input[offset..]);
        }
        if bare.is_empty() {
            in_body = true;
        }
        offset += line.len();
    }
    None
}

/// A signed trigger that parsed and verified: the payload's facts and who signed it.
#[derive(Debug, Clone)]
pub struct VerifiedTrigger {
    pub trigger: Trigger,
    /// SHA256 fingerprint of the signing key.
    pub key: String,
}

/// Parses the payload, then checks the signature against `signers` for the payload's origin.
/// The grammar is checked before the signature, so a refused request is reported as such
/// whoever signed it.
pub fn open_trigger(
    env: &Envelope,
    signers: &AllowedSigners,
    now: SystemTime,
) -> Result<VerifiedTrigger, EnvelopeError> {
    let trigger = Trigger::parse(&env.payload)?;
    let key = env.verify_signers(TRIGGER_NAMESPACE, signers, trigger.origin.as_str(), now)?;
    Ok(VerifiedTrigger { trigger, key })
}

/// Parses an ack's payload and checks it was signed by `key` (the mirror's `ack_key`).
pub fn open_ack(env: &Envelope, key: &PublicKey) -> Result<Ack, EnvelopeError> {
    let ack = Ack::parse(&env.payload)?;
    env.verify_key(ACK_NAMESPACE, key)?;
    Ok(ack)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn trigger() -> Trigger {
        Trigger {
            request: Request::new("fedora", Some("updates/41")).unwrap(),
            id: MessageId::parse("0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162").unwrap(),
            issued: parse_time("2026-11-30T10:00:00Z").unwrap(),
            origin: Name::parse("master.example.org").unwrap(),
            serial: None,
        }
    }

    const PAYLOAD: &str = "mirrorpush-trigger 1\nrequest: sync fedora updates/41\n\
        id: 0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162\nissued: 2026-11-30T10:00:00Z\n\
        origin: master.example.org\n";

    #[test]
    fn trigger_renders_the_contract_lines_and_parses_back() {
        assert_eq!(trigger().render(), PAYLOAD);
        assert_eq!(Trigger::parse(PAYLOAD).unwrap(), trigger());
        let mut t = trigger();
        t.serial = Some("2026113001".into());
        let text = t.render();
        assert!(text.ends_with("origin: master.example.org\nserial: 2026113001\n"));
        assert_eq!(Trigger::parse(&text).unwrap(), t);
    }

    #[test]
    fn trigger_parsing_refuses_rather_than_repairs() {
        let bad = |p: &str| Trigger::parse(p).unwrap_err();
        assert_eq!(
            bad(&PAYLOAD.replace("updates/41", "../etc")).reason(),
            "grammar"
        );
        assert_eq!(
            bad(&PAYLOAD.replace("sync fedora", "sync  fedora")).reason(),
            "grammar"
        );
        assert_eq!(
            bad(&PAYLOAD.replace("request: ", "request:  ")).reason(),
            "grammar"
        );
        for p in [
            PAYLOAD.trim_end().to_owned(), // no final newline
            PAYLOAD.replace("\n", "\r\n"), // CRLF
            PAYLOAD.replace("mirrorpush-trigger 1", "mirrorpush-trigger 2"),
            PAYLOAD.replace("id: 0b7c", "id: 0B7C"), // uppercase id
            PAYLOAD.replace("-4c8a-", "-3c8a-"),     // not version 4
            PAYLOAD.replace("10:00:00Z", "10:00:00+00:00"),
            PAYLOAD.replace("10:00:00Z", "10:00:00.5Z"),
            PAYLOAD.replace("origin: master", "origin: *master"),
            PAYLOAD.replace("origin: master.example.org", "origin: a,b"),
            format!("{PAYLOAD}extra: 1\n"),
            format!("{PAYLOAD}serial: \n"),
            PAYLOAD.replace("id: ", "Id: "),
            String::new(),
        ] {
            assert_eq!(bad(&p).reason(), "malformed", "{p:?}");
        }
    }

    #[test]
    fn ack_renders_and_parses_back_with_detail_escaped() {
        let t = trigger();
        let when = parse_time("2026-11-30T10:00:05Z").unwrap();
        let ack = Ack::new(
            &t,
            Name::parse("mirror.example.net").unwrap(),
            AckResult::Synced,
            "synced\nforged: line",
            when,
            when,
        );
        let text = ack.render();
        assert_eq!(
            text,
            "mirrorpush-ack 1\nid: 0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162\nmirror: mirror.example.net\n\
             request: sync fedora updates/41\nresult: synced\ndetail: synced\\x0aforged: line\n\
             started: 2026-11-30T10:00:05Z\nended: 2026-11-30T10:00:05Z\n"
        );
        assert_eq!(Ack::parse(&text).unwrap(), ack);
        let mut empty = ack.clone();
        empty.detail.clear();
        assert_eq!(Ack::parse(&empty.render()).unwrap(), empty);
        assert!(Ack::parse(&text.replace("result: synced", "result: ok")).is_err());
    }

    #[test]
    fn ids_are_random_lowercase_uuid4() {
        let a = MessageId::random().unwrap();
        let b = MessageId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(MessageId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn envelope_json_is_strict() {
        let env = Envelope {
            payload: PAYLOAD.into(),
            signature: "sig".into(),
        };
        assert_eq!(Envelope::from_json(env.to_json().as_bytes()).unwrap(), env);
        for body in [
            &b"not json"[..],
            br#"{"payload": "x"}"#,
            br#"{"payload": "x", "signature": "y", "extra": 1}"#,
            br#"{"payload": 1, "signature": "y"}"#,
            br#"[]"#,
            br#"{"payload": "x", "signature": "y"} trailing"#,
        ] {
            assert_eq!(Envelope::from_json(body).unwrap_err().reason(), "not-json");
        }
        let big = vec![b' '; MAX_ENVELOPE_LEN + 1];
        assert_eq!(Envelope::from_json(&big).unwrap_err().reason(), "too-large");
    }

    #[test]
    fn a_mail_body_may_wrap_the_envelope() {
        let env = Envelope {
            payload: PAYLOAD.into(),
            signature: "sig".into(),
        };
        let mail = format!(
            "From: master@example.org\r\nSubject: {{push}}\r\n\r\nHello,\r\n{}\r\n-- \r\nsignature {{ }}\r\n",
            env.to_json()
        );
        assert_eq!(Envelope::from_text(mail.as_bytes()).unwrap(), env);
        assert_eq!(Envelope::from_text(env.to_json().as_bytes()).unwrap(), env);
        // A `{` in a header line is not the body.
        let header_only = "Subject: {\"payload\": \"x\", \"signature\": \"y\"}\n\nno json here\n";
        assert_eq!(
            Envelope::from_text(header_only.as_bytes())
                .unwrap_err()
                .reason(),
            "not-json"
        );
    }

    #[test]
    fn signatures_verify_only_for_the_key_namespace_and_payload_signed() {
        let key = test_key();
        let other = test_key();
        let env = Envelope::sign(PAYLOAD.into(), TRIGGER_NAMESPACE, &key).unwrap();
        assert!(env.signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        env.verify_key(TRIGGER_NAMESPACE, key.public_key()).unwrap();
        assert_eq!(
            env.verify_key(ACK_NAMESPACE, key.public_key())
                .unwrap_err()
                .reason(),
            "signature"
        );
        assert_eq!(
            env.verify_key(TRIGGER_NAMESPACE, other.public_key())
                .unwrap_err()
                .reason(),
            "unknown-signer"
        );
        let mut tampered = env.clone();
        tampered.payload = PAYLOAD.replace("updates/41", "updates/40");
        assert_eq!(
            tampered
                .verify_key(TRIGGER_NAMESPACE, key.public_key())
                .unwrap_err()
                .reason(),
            "signature"
        );
    }

    #[test]
    fn hostile_bodies_are_refused_without_a_panic() {
        let deep_array = "[".repeat(60_000);
        let deep_object = format!("{}1", "{\"a\":".repeat(12_000));
        let nested_payload = format!(
            "{{\"payload\": {}1{}, \"signature\": \"x\"}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut mail = b"From: x\n\n{\"payload\": \"\xff\xfe\", \"signature\": \"s\"}\n".to_vec();
        mail.extend_from_slice(deep_array.as_bytes());
        for body in [
            deep_array.as_bytes(),
            deep_object.as_bytes(),
            nested_payload.as_bytes(),
            b"\xff\xfe\x00{",
            b"{\"payload\": \"\xc3\x28\", \"signature\": \"s\"}",
            b"{\"payload\": \"\\ud800\", \"signature\": \"s\"}",
            &mail,
        ] {
            let a = Envelope::from_json(body)
                .map(|_| ())
                .map_err(|e| e.reason());
            let b = Envelope::from_text(body)
                .map(|_| ())
                .map_err(|e| e.reason());
            assert_eq!(
                (a, b),
                (Err("not-json"), Err("not-json")),
                "{:?}",
                &body[..body.len().min(40)]
            );
        }
    }

    /// A fresh ed25519 key made by OpenSSH's ssh-keygen.
    pub(crate) fn test_key() -> PrivateKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        PrivateKey::read_openssh_file(&path).unwrap()
    }
}
