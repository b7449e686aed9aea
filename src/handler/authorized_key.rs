//! `mirrorpush-handler [--config F] [--key LABEL] authorized-key [--from PATTERNS] KEYFILE|-`:
//! prints the authorized_keys line that lets one master push to this mirror.
//!
//! sshd runs a key's `command="..."` through the account's login shell (`$SHELL -c`), so a
//! hand-typed line breaks as soon as a path holds a space or a `$`; and a mangled key or a typo
//! in `command=` only shows on the master as "authentication refused". This verb writes the
//! line from parts it checks: `restrict` (every forwarding, the PTY and `~/.ssh/rc` off), an
//! optional `from=`, the command with the absolute path of this very handler and the absolute
//! `--config`, each word quoted for the shell, and the key itself, whose type must match the
//! type inside its base64 blob.
//!
//! Exit codes: 0 printed; 64 bad arguments or key data; 66 the key file cannot be read.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::exit::{EXIT_NOINPUT, EXIT_OK, EXIT_USAGE};

/// A public key file is one line; anything much larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Key types OpenSSH accepts in authorized_keys (certificates aside: a master's key is a key).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why no line was printed: an exit code and the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLineError {
    pub(crate) code: i32,
    pub(crate) message: String,
}

fn bad(message: impl Into<String>) -> KeyLineError {
    KeyLineError {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

/// What the line is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLine<'a> {
    /// Absolute path of the handler sshd runs.
    pub(crate) handler: &'a Path,
    /// Absolute path of its config.
    pub(crate) config: &'a Path,
    /// `--key LABEL` for the handler's log lines.
    pub(crate) label: Option<&'a str>,
    /// `from="..."`: the master's addresses (sshd patterns, comma-separated).
    pub(crate) from: Option<&'a str>,
    /// The public key line, as `ssh-keygen` writes it (`type base64 [comment]`).
    pub(crate) public_key: &'a str,
}

/// The verb: reads the key, prints the line, returns the exit code.
pub(crate) fn run(config: &Path, label: Option<&str>, from: Option<&str>, key_file: &OsStr) -> i32 {
    match line_for(config, label, from, key_file) {
        Ok(line) => {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", e.message);
            e.code
        }
    }
}

fn line_for(
    config: &Path,
    label: Option<&str>,
    from: Option<&str>,
    key_file: &OsStr,
) -> Result<String, KeyLineError> {
    let handler = std::env::current_exe()
        .map_err(|e| bad(format!("cannot find this handler's own path: {e}")))?;
    let config = absolute(config)?;
    if !config.is_file() {
        // Not fatal: the key line may well be written before the config. But a typo here is
        // what makes every push fail with "configuration error", so say it now.
        let _ = writeln!(
            std::io::stderr(),
            "warning: {} does not exist (yet): the handler will read it on every push",
            config.display()
        );
    }
    let public_key = read_key(key_file)?;
    render(&KeyLine {
        handler: &handler,
        config: &config,
        label,
        from,
        public_key: &public_key,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, KeyLineError> {
    std::path::absolute(path)
        .map_err(|e| bad(format!("cannot make {} absolute: {e}", path.display())))
}

fn read_key(key_file: &OsStr) -> Result<String, KeyLineError> {
    let noinput = |what: String| KeyLineError {
        code: EXIT_NOINPUT,
        message: what,
    };
    let mut bytes = Vec::new();
    let name = Path::new(key_file).display().to_string();
    let read = if key_file == "-" {
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(key_file).and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| noinput(format!("cannot read the public key {name}: {e}")))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(bad(format!(
            "{name} is larger than {MAX_KEY_FILE} bytes: not a public key file"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        bad(format!(
            "{name} is not text: give the public key (.pub) file"
        ))
    })?;
    if text.contains("PRIVATE KEY-----") {
        return Err(bad(format!(
            "{name} is a private key: give the master's public key (the .pub file)"
        )));
    }
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let key = keys
        .next()
        .ok_or_else(|| bad(format!("{name} holds no key")))?;
    if keys.next().is_some() {
        return Err(bad(format!(
            "{name} holds more than one key: give one master's public key per line you print"
        )));
    }
    Ok(key.to_owned())
}

/// The authorized_keys line.
pub(crate) fn render(line: &KeyLine<'_>) -> Result<String, KeyLineError> {
    let key = checked_key(line.public_key)?;
    let mut words = vec![
        utf8(line.handler, "the handler's path")?,
        "--config",
        utf8(line.config, "--config")?,
    ];
    if let Some(label) = line.label {
        words.extend(["--key", label]);
    }
    for w in &words {
        if w.chars().any(char::is_control) {
            return Err(bad(format!(
                "{w:?} holds a control character, which a key line cannot carry"
            )));
        }
    }
    let command = shell_words::join(&words);
    let mut options = String::from("restrict");
    if let Some(from) = line.from {
        options.push_str(&format!(",from=\"{}\"", checked_from(from)?));
    }
    // sshd's option parser knows one escape inside quotes, `\"`; everything else is literal.
    options.push_str(&format!(",command=\"{}\"", command.replace('"', "\\\"")));
    Ok(format!("{options} {key}"))
}

fn utf8<'a>(path: &'a Path, what: &str) -> Result<&'a str, KeyLineError> {
    path.to_str()
        .ok_or_else(|| bad(format!("{what} is not UTF-8: {}", path.display())))
}

/// `from=` patterns: addresses, CIDR, host names, `*`, `?`, `!` and commas; nothing that could
/// end the quoted option or start another.
fn checked_from(from: &str) -> Result<&str, KeyLineError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || ".:*?!/,-_%[]".contains(c);
    if from.is_empty() || from.split(',').any(str::is_empty) || !from.chars().all(ok) {
        return Err(bad(format!(
            "--from {from:?}: give the master's addresses as comma-separated patterns, \
             e.g. 203.0.113.10,2001:db8::10 or 203.0.113.0/28"
        )));
    }
    Ok(from)
}

/// `type base64 [comment]`, with the type inside the blob equal to the first word: a key
/// pasted with a character lost or added shows here, not as a refused login on the master.
fn checked_key(text: &str) -> Result<String, KeyLineError> {
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(bad(format!(
            "not a public key line: {:?} (expected \"ssh-ed25519 AAAA... comment\")",
            clip(text)
        )));
    };
    if !KEY_TYPES.contains(&kind) {
        let hint = if kind.contains('=') || kind.starts_with("restrict") {
            " (that looks like an authorized_keys line with options: give the master's .pub file)"
        } else {
            ""
        };
        return Err(bad(format!(
            "unknown key type {:?}{hint}; expected one of {}",
            clip(kind),
            KEY_TYPES.join(", ")
        )));
    }
    let decoded = base64_decode(blob)
        .ok_or_else(|| bad("the key's base64 is damaged (a character lost or added?)"))?;
    match embedded_type(&decoded) {
        Some(inner) if inner == kind.as_bytes() => {}
        _ => {
            return Err(bad(format!(
                "the key's base64 does not hold a {kind} key (a damaged or truncated paste?)"
            )))
        }
    }
    let comment: Vec<&str> = parts.collect();
    let comment = comment.join(" ");
    if comment.chars().any(char::is_control) {
        return Err(bad("the key's comment holds a control character"));
    }
    Ok(if comment.is_empty() {
        format!("{kind} {blob}")
    } else {
        format!("{kind} {blob} {comment}")
    })
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The SSH wire blob starts with the key type as a length-prefixed string.
fn embedded_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4usize.checked_add(len)?)
}

/// Standard base64 with padding, as ssh-keygen writes it; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key (ssh-keygen -t ed25519).
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII31u3FhdZS2EcUYfmykuHxxn9QWZOEI+zG6pq3lGLVE master@fedora";

    fn line(
        config: &str,
        label: Option<&str>,
        from: Option<&str>,
        key: &str,
    ) -> Result<String, KeyLineError> {
        render(&KeyLine {
            handler: Path::new("/usr/bin/mirrorpush-handler"),
            config: Path::new(config),
            label,
            from,
            public_key: key,
        })
    }

    #[test]
    fn a_plain_line() {
        assert_eq!(
            line(
                "/etc/mirrorpush/handler.toml",
                Some("fedora-master"),
                Some("203.0.113.10,2001:db8::10"),
                KEY
            )
            .unwrap(),
            format!(
                "restrict,from=\"203.0.113.10,2001:db8::10\",command=\"/usr/bin/mirrorpush-handler \
                 --config /etc/mirrorpush/handler.toml --key fedora-master\" {KEY}"
            )
        );
        assert_eq!(
            line("/etc/mirrorpush/handler.toml", None, None, KEY).unwrap(),
            format!("restrict,command=\"/usr/bin/mirrorpush-handler --config /etc/mirrorpush/handler.toml\" {KEY}")
        );
    }

    #[test]
    fn words_are_quoted_for_the_shell_and_quotes_for_sshd() {
        let l = line("/srv/my conf/$HOME/h\"x.toml", Some("it's"), None, KEY).unwrap();
        let command = l
            .strip_prefix("restrict,command=\"")
            .and_then(|r| r.strip_suffix(&format!("\" {KEY}")))
            .unwrap();
        // What sshd hands the shell: only `\"` is an escape inside the quoted option.
        let for_shell = command.replace("\\\"", "\"");
        assert_eq!(
            shell_words::split(&for_shell).unwrap(),
            [
                "/usr/bin/mirrorpush-handler",
                "--config",
                "/srv/my conf/$HOME/h\"x.toml",
                "--key",
                "it's"
            ]
        );
        assert!(!command.contains("\"\""), "{command}");
    }

    #[test]
    fn damaged_keys_are_refused() {
        let lost = KEY.replacen("AAAAC3", "AAAC3", 1);
        let wrong_type = KEY.replacen("ssh-ed25519", "ssh-rsa", 1);
        let with_options = format!("restrict,command=\"x\" {KEY}");
        for (key, what) in [
            (lost.as_str(), "base64"),
            (wrong_type.as_str(), "does not hold a ssh-rsa key"),
            (with_options.as_str(), "with options"),
            ("ssh-ed25519", "not a public key line"),
            ("", "not a public key line"),
        ] {
            let e = line("/h.toml", None, None, key).unwrap_err();
            assert_eq!(e.code, EXIT_USAGE);
            assert!(e.message.contains(what), "{key:?}: {}", e.message);
        }
    }

    #[test]
    fn from_patterns_cannot_break_out_of_their_quotes() {
        for from in ["a\" b", "", "1.2.3.4,,5.6.7.8", "1.2.3.4 5.6.7.8", "x\ny"] {
            assert!(line("/h.toml", None, Some(from), KEY).is_err(), "{from:?}");
        }
        assert!(line(
            "/h.toml",
            None,
            Some("203.0.113.0/28,!203.0.113.5,*.example.org"),
            KEY
        )
        .is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(line("/a\nb.toml", None, None, KEY).is_err());
        assert!(line("/h.toml", Some("a\tb"), None, KEY).is_err());
        assert!(line("/h.toml", None, None, &format!("{KEY}\u{1b}[2J")).is_err());
    }

    #[test]
    fn the_shipped_example_line_is_what_the_verb_prints() {
        let example = include_str!("../../authorized_keys.example");
        let live: Vec<&str> = example
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(live.len(), 1, "{live:?}");
        let printed = line(
            "/etc/mirrorpush/handler.toml",
            Some("fedora-master"),
            Some("203.0.113.10,2001:db8::10"),
            KEY,
        )
        .unwrap();
        let options = |l: &str| l.split(" ssh-ed25519 ").next().unwrap().to_owned();
        assert_eq!(options(live[0]), options(&printed));
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ=="), Some(b"M".to_vec()));
        assert_eq!(base64_decode("T==="), None);
        assert_eq!(base64_decode("TQ==TWFu"), None);
        assert_eq!(base64_decode("TW!u"), None);
    }
}
