//! OpenSSH `allowed_signers` files (ssh-keygen(1), "ALLOWED SIGNERS"): which keys may sign
//! for which principals, read as `ssh-keygen -Y verify` reads them.
//!
//! ```text
//! # principals        [options]                          keytype      key
//! master.example.org  namespaces="mirrorpush-trigger"    ssh-ed25519  AAAA...
//! "*.example.org"     valid-before="20271231Z"           ssh-ed25519  AAAA...
//! ```
//! Principals and `namespaces` are comma-separated pattern lists (`*`, `?`, and `!` negation),
//! matched as OpenSSH's `match_pattern_list` does: a name matches when some pattern matches and
//! no negated one does. `valid-after` / `valid-before` are honoured in their UTC forms
//! (`YYYYMMDD[HHMM[SS]]Z`); a local-time timestamp is refused, since this machine's zone need
//! not be the signer's. `cert-authority` lines are ignored with a warning: mirrorpush checks
//! plain keys only, and ignoring them can only refuse more, never trust more.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

/// A line that is not a valid entry: `<file> line N: <what>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignersError(pub String);

impl fmt::Display for SignersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SignersError {}

#[derive(Debug, Clone)]
struct SignerEntry {
    principals: String,
    namespaces: Option<String>,
    valid_after: Option<SystemTime>,
    valid_before: Option<SystemTime>,
    key: PublicKey,
    line: usize,
}

/// A parsed allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    pub path: PathBuf,
    entries: Vec<SignerEntry>,
    /// Lines that were read but ignored, with the reason (`cert-authority`).
    pub warnings: Vec<String>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<Self, SignersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SignersError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    /// Parses file text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SignersError> {
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let at = |what: String| SignersError(format!("{} line {line}: {what}", path.display()));
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let words = split_words(trimmed).map_err(at)?;
            let mut words = words.into_iter();
            let principals = words.next().ok_or_else(|| at("empty line".into()))?;
            let mut next = words
                .next()
                .ok_or_else(|| at("no key after the principals".into()))?;
            let mut options = None;
            if !is_key_type(&next) {
                options = Some(next);
                next = words
                    .next()
                    .ok_or_else(|| at("no key after the options".into()))?;
            }
            let blob = words
                .next()
                .ok_or_else(|| at("no key data after the key type".into()))?;
            let key = PublicKey::from_openssh(&format!("{next} {blob}"))
                .map_err(|e| at(format!("cannot read the key: {e}")))?;
            let mut entry = SignerEntry {
                principals: principals.clone(),
                namespaces: None,
                valid_after: None,
                valid_before: None,
                key,
                line,
            };
            let mut ca = false;
            for opt in options.as_deref().map(split_options).unwrap_or_default() {
                let (name, value) = match opt.split_once('=') {
                    Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v).map_err(at)?)),
                    None => (opt.to_ascii_lowercase(), None),
                };
                match (name.as_str(), value) {
                    ("cert-authority", None) => ca = true,
                    ("namespaces", Some(v)) => entry.namespaces = Some(v),
                    ("valid-after", Some(v)) => {
                        entry.valid_after = Some(parse_timestamp(&v).map_err(at)?)
                    }
                    ("valid-before", Some(v)) => {
                        entry.valid_before = Some(parse_timestamp(&v).map_err(at)?)
                    }
                    _ => return Err(at(format!("unknown option {opt:?}"))),
                }
            }
            if ca {
                warnings.push(format!(
                    "{} line {line}: cert-authority entry ignored: only plain keys are trusted",
                    path.display()
                ));
                continue;
            }
            entries.push(entry);
        }
        Ok(AllowedSigners {
            path: path.to_owned(),
            entries,
            warnings,
        })
    }

    /// How many keys are trusted (cert-authority lines not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key `key` if an entry lets it sign for `principal` in `namespace` at `now`;
    /// otherwise why not, in words for a log line.
    pub fn find(
        &self,
        principal: &str,
        namespace: &str,
        key: &KeyData,
        now: SystemTime,
    ) -> Result<&PublicKey, String> {
        let mut why = format!(
            "no key in {} for principal {principal:?} made this signature",
            self.path.display()
        );
        for e in &self.entries {
            if e.key.key_data() != key || !match_pattern_list(principal, &e.principals) {
                continue;
            }
            if let Some(ns) = &e.namespaces {
                if !match_pattern_list(namespace, ns) {
                    why = format!(
                        "{} line {}: the key may not sign in namespace {namespace:?}",
                        self.path.display(),
                        e.line
                    );
                    continue;
                }
            }
            if e.valid_after.is_some_and(|t| now < t) || e.valid_before.is_some_and(|t| now > t) {
                why = format!(
                    "{} line {}: the key is not valid at this time",
                    self.path.display(),
                    e.line
                );
                continue;
            }
            return Ok(&e.key);
        }
        Err(why)
    }
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-")
        || word.starts_with("ecdsa-sha2-")
        || word.starts_with("sk-")
        || word.starts_with("rsa-sha2-")
}

/// Splits on spaces and tabs, keeping double-quoted runs (quotes included) inside one word.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' | '\t' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    // Principals may be quoted as a whole.
    if let Some(first) = words.first_mut() {
        if first.starts_with('"') {
            *first = unquote(first)?;
        }
    }
    Ok(words)
}

/// Splits `a,b="x,y",c` on commas outside quotes.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> Result<String, String> {
    match s.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .map(str::to_owned)
            .ok_or_else(|| format!("badly quoted {s:?}")),
        None => Ok(s.to_owned()),
    }
}

/// `YYYYMMDD[HHMM[SS]]Z`, UTC.
fn parse_timestamp(s: &str) -> Result<SystemTime, String> {
    let digits = s.strip_suffix(['Z', 'z']).ok_or_else(|| {
        format!("timestamp {s:?} is local time: write it in UTC with a trailing Z")
    })?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(format!("timestamp {s:?} is not YYYYMMDD[HHMM[SS]]Z"));
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map_or("00", |v| v);
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        n(0..4),
        n(4..6),
        n(6..8),
        n(8..10),
        n(10..12),
        n(12..14)
    );
    humantime::parse_rfc3339(&text).map_err(|_| format!("timestamp {s:?} is not a valid date"))
}

/// OpenSSH's `match_pattern_list`: true when some pattern matches and no `!`-negated one does.
pub(crate) fn match_pattern_list(name: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(name.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` any run of characters, `?` any one character, everything else itself.
fn match_pattern(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_pattern(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && match_pattern(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && match_pattern(&s[1..], rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn key() -> KeyData {
        PublicKey::from_openssh(KEY).unwrap().key_data().clone()
    }

    fn epoch(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn signers(text: &str) -> AllowedSigners {
        AllowedSigners::parse(Path::new("/etc/as"), text).unwrap()
    }

    #[test]
    fn patterns_match_as_openssh_does() {
        assert!(match_pattern_list(
            "master.example.org",
            "master.example.org"
        ));
        assert!(match_pattern_list("m1.example.org", "*.example.org"));
        assert!(match_pattern_list("m1", "m?,x"));
        assert!(!match_pattern_list("m12", "m?"));
        assert!(!match_pattern_list(
            "bad.example.org",
            "*.example.org,!bad.*"
        ));
        assert!(!match_pattern_list("x", "!y"));
    }

    #[test]
    fn principal_namespace_and_validity_are_all_checked() {
        let now = epoch(1_800_000_000);
        let s = signers(&format!(
            "# comment\n\n\"master.example.org,*.masters.org\" namespaces=\"mirrorpush-trigger\" {KEY} a comment\n"
        ));
        assert!(s
            .find("master.example.org", "mirrorpush-trigger", &key(), now)
            .is_ok());
        assert!(s
            .find("b.masters.org", "mirrorpush-trigger", &key(), now)
            .is_ok());
        assert!(s.find("other", "mirrorpush-trigger", &key(), now).is_err());
        let e = s
            .find("master.example.org", "file", &key(), now)
            .unwrap_err();
        assert!(e.contains("line 3") && e.contains("namespace"), "{e}");

        let s = signers(&format!(
            "m valid-after=\"20300101Z\",valid-before=\"20310101000000Z\" {KEY}\n"
        ));
        assert!(s.find("m", "n", &key(), epoch(1_800_000_000)).is_err());
        assert!(s.find("m", "n", &key(), epoch(1_900_000_000)).is_ok());
        assert!(s.find("m", "n", &key(), epoch(1_990_000_000)).is_err());
    }

    #[test]
    fn cert_authority_is_ignored_with_a_reason_and_bad_lines_name_the_line() {
        let s = signers(&format!("*.example.org cert-authority {KEY}\n"));
        assert!(s.is_empty());
        assert!(
            s.warnings[0].contains("line 1: cert-authority"),
            "{:?}",
            s.warnings
        );
        assert!(s.find("a.example.org", "n", &key(), epoch(0)).is_err());

        for (text, what) in [
            ("m\n".to_owned(), "no key"),
            (format!("m unknown-opt {KEY}\n"), "unknown option"),
            (format!("m valid-after=\"20300101\" {KEY}\n"), "local time"),
            (
                "m ssh-ed25519 AAAAnot-base64\n".to_owned(),
                "cannot read the key",
            ),
            (format!("\"m {KEY}\n"), "quote"),
        ] {
            let e = AllowedSigners::parse(Path::new("/etc/as"), &text).unwrap_err();
            assert!(
                e.0.starts_with("/etc/as line 1: ") && e.0.contains(what),
                "{e}"
            );
        }
    }
}
