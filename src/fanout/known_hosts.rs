//! Strict OpenSSH known_hosts verification.
//!
//! russh's own `check_known_hosts_path` is not used because it stops at the first same-type
//! mismatch (a host listing two ed25519 keys looks "changed"), ignores `@revoked`, and reads an
//! unreadable file as empty (every host unknown, silently). Here: a host is trusted when any
//! line for it lists the presented key; a `@revoked` key is refused whatever else matches;
//! `@cert-authority` lines are skipped (we do not accept host certificates); an unreadable file
//! is an error for the caller.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::PublicKey;
use sha1::Sha1;

/// A loaded known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    pub path: PathBuf,
    entries: Vec<HostEntry>,
    /// Where to look, so that judging one host costs the same with 10 or 10,000 lines (a push
    /// judges every mirror): the usable entries naming a host by its plain name, by that
    /// name; the usable entries that must be tried on every host (hashed names, wildcards,
    /// negations), and the revoked ones. Indices into `entries`, in file order.
    by_name: HashMap<String, Vec<usize>>,
    tried: Vec<usize>,
    revoked: Vec<usize>,
    /// Line numbers of lines that are neither comments nor usable entries (`check` warns).
    pub skipped: Vec<usize>,
}

#[derive(Debug, Clone)]
struct HostEntry {
    line: usize,
    revoked: bool,
    hosts: HostPatterns,
    key: KeyData,
}

#[derive(Debug, Clone)]
enum HostPatterns {
    /// `|1|base64(salt)|base64(hmac-sha1(salt, host))`, as written by `ssh-keygen -H`.
    Hashed { salt: Vec<u8>, mac: Vec<u8> },
    /// Comma-separated patterns, `*`/`?` wildcards, `!` negation.
    List(Vec<String>),
}

/// What known_hosts says about a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    Trusted {
        line: usize,
    },
    Revoked {
        line: usize,
    },
    /// The host is listed, but never with this key.
    Mismatch {
        lines: Vec<usize>,
    },
    Unknown,
}

impl fmt::Display for HostKeyVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyVerdict::Trusted { line } => write!(f, "host key trusted (known_hosts line {line})"),
            HostKeyVerdict::Revoked { line } => {
                write!(f, "host key is marked @revoked (known_hosts line {line})")
            }
            HostKeyVerdict::Mismatch { lines } => {
                let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
                write!(
                    f,
                    "host key mismatch: the server's key is not the one in known_hosts (line {}); \
                     the key changed or someone is intercepting",
                    lines.join(", ")
                )
            }
            HostKeyVerdict::Unknown => write!(
                f,
                "unknown host: no host key in known_hosts; add it (e.g. with ssh-keyscan) after checking it"
            ),
        }
    }
}

/// The name known_hosts files use: `host` on port 22, `[host]:port` otherwise.
pub fn host_port_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

impl KnownHosts {
    /// Reads the file as bytes, as OpenSSH does: a comment in Latin-1 (`root@mirr\xf6r`) is no
    /// reason to refuse every host.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        let bytes = std::fs::read(path)?;
        Ok(KnownHosts::parse_bytes(path, &bytes))
    }

    pub fn parse(path: &Path, text: &str) -> KnownHosts {
        KnownHosts::parse_bytes(path, text.as_bytes())
    }

    /// Lines that cannot be parsed are skipped (as OpenSSH does): they can only make a host
    /// unknown, never trusted. Bytes that are not UTF-8 become U+FFFD, which matches no host
    /// name and no key, so such a line is used only where its invalid bytes are in the comment.
    pub fn parse_bytes(path: &Path, bytes: &[u8]) -> KnownHosts {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(raw);
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            match parse_line(i + 1, text) {
                Some(e) => entries.push(e),
                // CA lines are skipped on purpose, not because they are broken.
                None if text.starts_with("@cert-authority") => {}
                None => skipped.push(i + 1),
            }
        }
        let (mut by_name, mut tried, mut revoked) = (HashMap::new(), Vec::new(), Vec::new());
        for (i, e) in entries.iter().enumerate() {
            match &e.hosts {
                _ if e.revoked => revoked.push(i),
                HostPatterns::List(patterns) if patterns.iter().all(|p| is_plain(p)) => {
                    for p in patterns {
                        let at: &mut Vec<usize> = by_name.entry(p.clone()).or_default();
                        if at.last() != Some(&i) {
                            at.push(i);
                        }
                    }
                }
                _ => tried.push(i),
            }
        }
        KnownHosts {
            path: path.to_owned(),
            entries,
            by_name,
            tried,
            revoked,
            skipped,
        }
    }

    /// The usable entries that may name `name`, in file order: every other one cannot.
    fn candidates(&self, name: &str) -> impl Iterator<Item = &HostEntry> {
        let mut at: Vec<usize> = self.by_name.get(name).map_or(Vec::new(), Vec::clone);
        if !self.tried.is_empty() {
            at.extend_from_slice(&self.tried);
            at.sort_unstable();
        }
        at.into_iter().map(|i| &self.entries[i])
    }

    /// Judges `key` as presented by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyVerdict {
        let name = host_port_name(host, port);
        let data = key.key_data();
        // A revoked key is refused wherever it appears, whatever its host patterns say.
        let mut revoked = self.revoked.iter().map(|&i| &self.entries[i]);
        if let Some(e) = revoked.find(|e| &e.key == data) {
            return HostKeyVerdict::Revoked { line: e.line };
        }
        let mut mismatches = Vec::new();
        for e in self.candidates(&name) {
            if e.hosts.matches(&name) {
                if &e.key == data {
                    return HostKeyVerdict::Trusted { line: e.line };
                }
                mismatches.push(e.line);
            }
        }
        if mismatches.is_empty() {
            HostKeyVerdict::Unknown
        } else {
            HostKeyVerdict::Mismatch { lines: mismatches }
        }
    }

    /// True when some usable (not revoked) line names this host.
    pub fn knows(&self, host: &str, port: u16) -> bool {
        let name = host_port_name(host, port);
        self.candidates(&name).any(|e| e.hosts.matches(&name))
    }
}

fn parse_line(line_no: usize, line: &str) -> Option<HostEntry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            // CA lines certify host certificates, which we never accept; other markers are unknown.
            _ => return None,
        }
        first = fields.next()?;
    }
    let _key_type = fields.next()?;
    let blob = BASE64.decode(fields.next()?.as_bytes()).ok()?;
    let key = PublicKey::from_bytes(&blob).ok()?.key_data().clone();
    let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
        let (salt, mac) = hashed.split_once('|')?;
        HostPatterns::Hashed {
            salt: BASE64.decode(salt.as_bytes()).ok()?,
            mac: BASE64.decode(mac.as_bytes()).ok()?,
        }
    } else {
        HostPatterns::List(first.split(',').map(str::to_ascii_lowercase).collect())
    };
    Some(HostEntry {
        line: line_no,
        revoked,
        hosts,
        key,
    })
}

impl HostPatterns {
    fn matches(&self, name: &str) -> bool {
        match self {
            HostPatterns::Hashed { salt, mac } => match Hmac::<Sha1>::new_from_slice(salt) {
                Ok(h) => h.chain_update(name.as_bytes()).verify_slice(mac).is_ok(),
                Err(_) => false,
            },
            HostPatterns::List(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if let Some(negated) = p.strip_prefix('!') {
                        if glob(negated.as_bytes(), name.as_bytes()) {
                            return false;
                        }
                    } else if glob(p.as_bytes(), name.as_bytes()) {
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

/// A pattern that matches one name only, itself (no wildcard, no negation).
fn is_plain(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '!'])
}

/// OpenSSH-style wildcard match: `*` any run, `?` any one byte. Iterative, so no blowup.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Generates an ed25519 key with ssh-keygen; returns the public line "type base64 comment".
    fn keygen(dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn public(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    #[test]
    fn a_latin1_comment_does_not_stop_the_file_and_broken_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
        let mut bytes = format!("m1.example.net {a}").into_bytes();
        bytes.truncate(bytes.len() - 1);
        bytes.extend_from_slice(b" root@mirr\xf6r\n");
        bytes.extend_from_slice(b"m2.example.net ssh-ed25519 AAAA-not-base64\n");
        bytes.extend_from_slice(b"m\xf6.example.net ");
        bytes.extend_from_slice(format!("{b}\n@cert-authority *.example.net {b}\n").as_bytes());
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, &bytes).unwrap();
        let kh = KnownHosts::load(&path).unwrap();
        assert_eq!(
            kh.check("m1.example.net", 22, &public(&a)),
            HostKeyVerdict::Trusted { line: 1 }
        );
        assert_eq!(kh.skipped, [2]);
        // A host name with an invalid byte matches no real name.
        assert_eq!(
            kh.check("mo.example.net", 22, &public(&b)),
            HostKeyVerdict::Unknown
        );
        assert!(!kh.knows("m.example.net", 22));
    }

    #[test]
    fn plain_and_port_forms() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
        let text = format!("# comment\n\nmirror.example.net,10.0.0.1 {a}\n[127.0.0.1]:2222 {b}\n");
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(
            kh.check("mirror.example.net", 22, &public(&a)),
            HostKeyVerdict::Trusted { line: 3 }
        );
        assert_eq!(
            kh.check("MIRROR.example.net", 22, &public(&a)),
            HostKeyVerdict::Trusted { line: 3 }
        );
        assert_eq!(
            kh.check("10.0.0.1", 22, &public(&a)),
            HostKeyVerdict::Trusted { line: 3 }
        );
        assert_eq!(
            kh.check("127.0.0.1", 2222, &public(&b)),
            HostKeyVerdict::Trusted { line: 4 }
        );
        // Port 2222 entries do not vouch for port 22 and vice versa.
        assert_eq!(
            kh.check("127.0.0.1", 22, &public(&b)),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            kh.check("mirror.example.net", 2200, &public(&a)),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            kh.check("mirror.example.net", 22, &public(&b)),
            HostKeyVerdict::Mismatch { lines: vec![3] }
        );
        assert!(kh.knows("127.0.0.1", 2222));
        assert!(!kh.knows("127.0.0.1", 2223));
        assert!(HostKeyVerdict::Mismatch { lines: vec![3] }
            .to_string()
            .contains("host key"));
        assert!(HostKeyVerdict::Unknown.to_string().contains("host key"));
    }

    #[test]
    fn several_keys_of_one_type_any_match_is_enough() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            keygen(dir.path(), "a"),
            keygen(dir.path(), "b"),
            keygen(dir.path(), "c"),
        );
        let text = format!("h {a}\nh {b}\n");
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(
            kh.check("h", 22, &public(&b)),
            HostKeyVerdict::Trusted { line: 2 }
        );
        assert_eq!(
            kh.check("h", 22, &public(&c)),
            HostKeyVerdict::Mismatch { lines: vec![1, 2] }
        );
    }

    #[test]
    fn revoked_refused_and_cert_authority_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
        let text = format!("h {a}\n@revoked * {a}\n@cert-authority h {b}\n");
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(
            kh.check("h", 22, &public(&a)),
            HostKeyVerdict::Revoked { line: 2 }
        );
        // The CA line does not make b a trusted host key.
        assert_eq!(
            kh.check("h", 22, &public(&b)),
            HostKeyVerdict::Mismatch { lines: vec![1] }
        );
        let kh = KnownHosts::parse(Path::new("kh"), &format!("@cert-authority h {b}\n"));
        assert!(!kh.knows("h", 22));
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (keygen(dir.path(), "a"), keygen(dir.path(), "b"));
        let kh_path = dir.path().join("known_hosts");
        std::fs::write(
            &kh_path,
            format!("[127.0.0.1]:2022 {a}\nmirror.example.net {b}\n"),
        )
        .unwrap();
        let status = Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&kh_path)
            .output()
            .unwrap();
        assert!(status.status.success());
        let text = std::fs::read_to_string(&kh_path).unwrap();
        assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");
        let kh = KnownHosts::load(&kh_path).unwrap();
        assert_eq!(
            kh.check("127.0.0.1", 2022, &public(&a)),
            HostKeyVerdict::Trusted { line: 1 }
        );
        assert_eq!(
            kh.check("mirror.example.net", 22, &public(&b)),
            HostKeyVerdict::Trusted { line: 2 }
        );
        assert_eq!(
            kh.check("127.0.0.1", 2022, &public(&b)),
            HostKeyVerdict::Mismatch { lines: vec![1] }
        );
        assert_eq!(
            kh.check("127.0.0.1", 2023, &public(&a)),
            HostKeyVerdict::Unknown
        );
        assert!(kh.knows("mirror.example.net", 22));
    }

    #[test]
    fn patterns_and_negation() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path(), "a");
        let kh = KnownHosts::parse(
            Path::new("kh"),
            &format!("*.example.net,!bad.example.net {a}\n"),
        );
        assert!(kh.knows("m1.example.net", 22));
        assert!(!kh.knows("bad.example.net", 22));
        assert!(!kh.knows("example.org", 22));
        assert!(glob(b"a?c*", b"abcdef"));
        assert!(!glob(b"a?c", b"abcd"));
        assert!(glob(b"*", b""));
    }

    /// Plain names are looked up, the rest tried on every host: the verdict is the one a scan
    /// of the whole file in order gives.
    #[test]
    fn plain_names_and_patterns_mixed_judge_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            keygen(dir.path(), "a"),
            keygen(dir.path(), "b"),
            keygen(dir.path(), "c"),
        );
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!("m{i}.example.net,other{i} {c}\n"));
        }
        text.push_str(&format!("*.example.org {a}\n")); // line 51
        text.push_str(&format!("host.example.org,HOST.example.org {b}\n")); // line 52
        text.push_str(&format!("host.example.org {c}\n")); // line 53
        text.push_str(&format!("[host.example.org]:2222 {a}\n")); // line 54
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        let revoked = KnownHosts::parse(Path::new("kh"), &format!("{text}@revoked * {b}\n"));
        let (a, b, c) = (public(&a), public(&b), public(&c));
        let host = "host.example.org";
        assert_eq!(kh.check(host, 22, &a), HostKeyVerdict::Trusted { line: 51 });
        assert_eq!(kh.check(host, 22, &b), HostKeyVerdict::Trusted { line: 52 });
        assert_eq!(kh.check(host, 22, &c), HostKeyVerdict::Trusted { line: 53 });
        assert_eq!(
            kh.check("m7.example.net", 22, &c),
            HostKeyVerdict::Trusted { line: 8 }
        );
        assert_eq!(
            kh.check("m7.example.net", 22, &a),
            HostKeyVerdict::Mismatch { lines: vec![8] }
        );
        assert_eq!(
            kh.check(host, 2222, &a),
            HostKeyVerdict::Trusted { line: 54 }
        );
        assert_eq!(
            kh.check(host, 2222, &b),
            HostKeyVerdict::Mismatch { lines: vec![54] }
        );
        assert_eq!(
            kh.check("nowhere.example.net", 22, &a),
            HostKeyVerdict::Unknown
        );
        assert!(kh.knows("x.example.org", 22) && kh.knows("other3", 22));
        assert!(!kh.knows("other3", 2222));
        assert_eq!(
            revoked.check(host, 22, &b),
            HostKeyVerdict::Revoked { line: 55 }
        );
    }

    #[test]
    fn garbage_lines_never_trust_and_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path(), "a");
        let text = format!(
            "h\nh ssh-ed25519\nh ssh-ed25519 !!!notbase64\n|1|x|y {a}\n|1|| {a}\n@revoked\n@bogus h {a}\n\u{0} \u{1} \u{2}\n"
        );
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(kh.check("h", 22, &public(&a)), HostKeyVerdict::Unknown);
    }

    #[test]
    fn unreadable_file_is_an_error() {
        assert!(KnownHosts::load(Path::new("/nonexistent/known_hosts")).is_err());
    }
}
