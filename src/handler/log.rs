//! `<state_dir>/handler.log`: one line per request and per run, logfmt style
//! (`key="value"`). Every client-supplied or admin-supplied text goes through [`field`], which
//! escapes control bytes, non-ASCII, `\` and `"`, so nothing can split a line or close a quoted
//! value and append fields of its own (`verdict=accepted` inside a refused request).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::config::Module;
use super::state;
use crate::request::escape_bytes;

/// Who asked: the address from `SSH_CONNECTION` (or `local`) and the admin's key label.
#[derive(Debug, Clone)]
pub struct Requester {
    /// `ip port` escaped, or `local`.
    pub addr: String,
    /// Just the ip (or `local`), for the status "pushers" list.
    pub ip: String,
    pub key: String,
}

impl Requester {
    pub fn from_env(key: Option<&str>) -> Requester {
        let conn = std::env::var_os("SSH_CONNECTION");
        let fields: Vec<String> = conn
            .as_ref()
            .map(|c| {
                c.as_encoded_bytes()
                    .split(|&b| b == b' ')
                    .take(2)
                    .map(escape_bytes)
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<String> = fields.iter().map(|f| f.replace('"', "\\x22")).collect();
        let (addr, ip) = match fields.as_slice() {
            [ip, port] if !ip.is_empty() => (format!("{ip} {port}"), ip.clone()),
            _ => ("local".to_owned(), "local".to_owned()),
        };
        Requester {
            addr,
            ip,
            key: field(key.unwrap_or("-").as_bytes()),
        }
    }
}

/// A value for inside `"..."`: printable ASCII only, with `\`, `"` and everything else as
/// `\xNN`.
pub fn field(raw: &[u8]) -> String {
    escape_bytes(raw).replace('"', "\\x22")
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join(state::LOG)
}

/// Renders one request line; `raw` is the request exactly as received.
pub fn request_line(client: &Requester, verdict: &str, raw: &[u8], reason: &str) -> String {
    format!(
        "{} client=\"{}\" key=\"{}\" verdict={verdict} request=\"{}\" reason=\"{}\"\n",
        now(),
        client.addr,
        client.key,
        field(raw),
        field(reason.as_bytes())
    )
}

/// Appends one line with a single O_APPEND write, so concurrent handlers never interleave.
pub fn append(state_dir: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log_path(state_dir))?;
    f.write_all(line.as_bytes())
}

/// Renders one line about the module (not about a request): a run, a hub's push, an error.
pub fn event_line(module: &str, verdict: &str, detail: &str) -> String {
    format!(
        "{} module={module} verdict={verdict} detail=\"{}\"\n",
        now(),
        field(detail.as_bytes())
    )
}

/// Appends an [`event_line`]. Nobody to tell if this fails: the run's status.json still
/// records the result.
pub fn event(state_dir: &Path, m: &Module, verdict: &str, detail: &str) {
    let _ = append(state_dir, &event_line(m.name.as_str(), verdict, detail));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_is_one_escaped_line() {
        let c = Requester {
            addr: "10.0.0.1 5555".into(),
            ip: "10.0.0.1".into(),
            key: "master".into(),
        };
        let l = request_line(
            &c,
            "refused",
            b"sync a\n2020 \" verdict=accepted key=\"trusted-master",
            "bad",
        );
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.ends_with("reason=\"bad\"\n"));
        assert!(
            l.contains(
                "request=\"sync a\\x0a2020 \\x22 verdict=accepted key=\\x22trusted-master\""
            ),
            "{l}"
        );
        // A logfmt reader sees exactly the handler's fields: every quote in the line is ours.
        assert_eq!(l.matches('"').count(), 8, "{l}");
        assert_eq!(l.matches("verdict=").count(), 2);
        assert!(l.contains(" verdict=refused "));
    }
}
