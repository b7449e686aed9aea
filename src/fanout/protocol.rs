//! What a mirror is sent, and what its answer means, for each kind of push endpoint.
//!
//! - `mirrorpush`: `mirrorpush-handler` is the forced command. It is sent the request of the one
//!   grammar (`sync <module> [dir]`) and answers on the first stdout line: `accepted` or
//!   `queued` (detach mode, at once), `synced` (wait mode, once a run covering the request has
//!   ended). Its exit codes are the handler's (README, "Exit codes").
//! - `ftpsync`: Debian's ftpsync is the forced command. It is sent byte for byte what Debian's
//!   `runmirrors` sends for a plain push (`signal()` with PUSHTYPE `all`): the words
//!   ` sync:archive:<archive> sync:all`, including the leading space runmirrors' string
//!   building leaves there (ftpsync splits the command into words, so the space is harmless, and
//!   a wrapper a mirror admin wrote against what runmirrors sends sees the same bytes). ftpsync
//!   syncs in the foreground: exit 0 means the archive is synced. ftpsync has no dir sync, so a
//!   dir push is sent as a full sync and the report says so.

use std::fmt;

use serde::Serialize;

use super::output::Captured;
use crate::request::Request;

/// The line ftpsync prints (on stdout, exit 1) when another ftpsync holds its lock. It has
/// already touched its `Archive-Update-Required-<host>` file, so the running ftpsync loops once
/// more and covers this push: the push is queued, not failed. (The second form is printed by
/// ftpsync on shells without `$BASHPID`.)
const FTPSYNC_LOCKED: [&str; 2] = [
    "Unable to start rsync, lock file still exists",
    "Unable to start rsync, lock file younger than one hour",
];

/// How a mirror is pushed. `archive` is ftpsync's archive name (its `ftpsync-<archive>.conf`);
/// `None` means its main archive (`ftpsync.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Mirrorpush,
    Ftpsync { archive: Option<String> },
}

/// What one mirror answered, when it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// A sync started in the background (detach mode): the content is not there yet.
    Accepted,
    /// A sync was running; it will run again to cover this push (not there yet).
    Queued,
    /// A run covering this push has ended well: the content is on the mirror.
    Synced,
    /// A bus mirror: the broker took the trigger, but no verified ack came in time. Its
    /// listener may still run it (the trigger waits in its queue); the master cannot tell.
    Unreported,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::Queued => "queued",
            Answer::Synced => "synced",
            Answer::Unreported => "unreported",
        }
    }

    /// The first word of the handler's first stdout line, when it is one of the answers
    /// (`accepted (last run failed: ...)` is still `accepted`).
    pub fn parse_first_word(stdout: &[u8]) -> Option<Answer> {
        let text = String::from_utf8_lossy(stdout);
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let word = line.split(|c: char| !c.is_ascii_alphabetic()).next()?;
        match word {
            "accepted" => Some(Answer::Accepted),
            "queued" => Some(Answer::Queued),
            "synced" => Some(Answer::Synced),
            _ => None,
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exact command one mirror gets for a push, and anything the operator should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Sent as the SSH `exec` request, byte for byte.
    pub text: String,
    /// E.g. that a dir push reaches an ftpsync mirror as a full sync.
    pub note: Option<String>,
}

/// The note on a dir push sent to an ftpsync mirror.
pub const FULL_SYNC_NOTE: &str = "dir push sent as a full sync (ftpsync has no dir sync)";

/// How a session ended, as far as the protocol cares.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    pub exit_status: Option<u32>,
    pub signal: Option<String>,
    /// The server answered the exec request with a failure.
    pub exec_refused: bool,
    /// Why the SSH session ended without a close, when it did (e.g. missed keepalives).
    pub session_error: Option<String>,
    /// Every exit status after the first, in order: a well-behaved command exits once.
    pub later_exit_statuses: Vec<u32>,
    pub output: Captured,
}

/// The protocol's reading of an [`Ended`] session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None` means success.
    pub error: Option<String>,
    pub answer: Option<Answer>,
    /// A short line for people: the answer on success, the error otherwise.
    pub message: String,
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Mirrorpush => "mirrorpush",
            Protocol::Ftpsync { .. } => "ftpsync",
        }
    }

    /// What this mirror is sent for `request`.
    pub fn command(&self, request: &Request) -> Exec {
        match self {
            Protocol::Mirrorpush => Exec {
                text: request.to_string(),
                note: None,
            },
            Protocol::Ftpsync { archive } => Exec {
                // runmirrors: PUSHARGS="${PUSHARGS} sync:archive:${PUSHARCHIVE}", then
                // "${PUSHARGS} ${PUSHARGS1}" with PUSHARGS1="sync:all".
                text: format!(
                    " sync:archive:{} sync:all",
                    archive.as_deref().unwrap_or("")
                ),
                note: request.dir.as_ref().map(|_| FULL_SYNC_NOTE.to_owned()),
            },
        }
    }

    /// Whether this kind of mirror reports completion by itself (ftpsync syncs in the
    /// foreground; a mirrorpush handler only in wait mode, which the registry cannot see).
    pub fn reports_completion(&self) -> bool {
        matches!(self, Protocol::Ftpsync { .. })
    }

    /// Reads how the session ended. A missing exit status is never success.
    pub fn judge(&self, ended: &Ended) -> Verdict {
        let stdout_line = first_line(&ended.output.stdout);
        let stderr_line = error_line(&ended.output.stderr);
        let Some(code) = ended.exit_status else {
            return failed(no_exit_status(ended));
        };
        if let Some(&later) = ended.later_exit_statuses.first() {
            // Which one would be the answer? Neither can be trusted: a forced command exits
            // once, and a mirror that says "failed" then "synced" must not pass as synced.
            return failed(format!(
                "protocol error: the mirror sent a second exit status ({code}, then {later})"
            ));
        }
        match self {
            Protocol::Mirrorpush => {
                judge_handler(code, &ended.output.stdout, stdout_line, stderr_line)
            }
            Protocol::Ftpsync { .. } => {
                judge_ftpsync(code, &ended.output, stdout_line, stderr_line)
            }
        }
    }
}

fn no_exit_status(ended: &Ended) -> String {
    if let Some(sig) = &ended.signal {
        format!("killed by signal {sig} (no exit status)")
    } else if ended.exec_refused {
        "the server refused to run the request (no exit status)".into()
    } else if let Some(why) = &ended.session_error {
        format!("{why} (no exit status)")
    } else {
        "channel closed without an exit status (no exit status): the handler or the connection died"
            .into()
    }
}

fn failed(error: String) -> Verdict {
    Verdict {
        message: error.clone(),
        error: Some(error),
        answer: None,
    }
}

fn with_detail(what: &str, code: u32, stdout_line: &str, stderr_line: &str) -> String {
    let detail = if stderr_line.is_empty() {
        stdout_line
    } else {
        stderr_line
    };
    if detail.is_empty() {
        format!("{what} (exit {code})")
    } else {
        format!("{what} (exit {code}): {detail}")
    }
}

fn judge_handler(code: u32, stdout: &[u8], stdout_line: String, stderr_line: String) -> Verdict {
    if code == 0 {
        return Verdict {
            error: None,
            answer: Answer::parse_first_word(stdout),
            message: if stdout_line.is_empty() {
                "ok".into()
            } else {
                stdout_line
            },
        };
    }
    let what = match code {
        1 => "the sync ran and rsync failed",
        64 => "handler refused a malformed request",
        75 => "temporary failure on the mirror; try again later",
        77 => "handler refused: not permitted (unknown module, dirs not allowed, or symlink)",
        78 => "handler configuration error on the mirror",
        _ => "handler failed",
    };
    failed(with_detail(what, code, &stdout_line, &stderr_line))
}

fn judge_ftpsync(
    code: u32,
    output: &Captured,
    stdout_line: String,
    stderr_line: String,
) -> Verdict {
    if code == 0 {
        return Verdict {
            error: None,
            answer: Some(Answer::Synced),
            message: "synced".into(),
        };
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    if code == 1 {
        if let Some(line) = stdout
            .lines()
            .map(str::trim)
            .find(|l| FTPSYNC_LOCKED.iter().any(|m| l.starts_with(m)))
        {
            return Verdict {
                error: None,
                answer: Some(Answer::Queued),
                message: format!(
                    "queued: ftpsync is running and will sync once more ({})",
                    crate::request::escape_bytes(line.as_bytes())
                ),
            };
        }
    }
    let what = match code {
        3 => "ftpsync: the first rsync pass failed; see ftpsync's log on the mirror",
        4 => "ftpsync: the second rsync pass failed; see ftpsync's log on the mirror",
        78 => "ftpsync configuration error (is `archive` right?)",
        _ => "ftpsync failed",
    };
    failed(with_detail(what, code, &stdout_line, &stderr_line))
}

/// The first non-empty line, escaped so it can never forge a report line or a terminal escape.
fn first_line(bytes: &[u8]) -> String {
    let text = crate::request::escape_bytes(bytes);
    text.split("\\x0a")
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned()
}

/// The handler's errors are one stderr line starting "error:"; prefer it over noise a login
/// shell may print first (e.g. profile scripts).
fn error_line(bytes: &[u8]) -> String {
    let text = crate::request::escape_bytes(bytes);
    text.split("\\x0a")
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .map(str::to_owned)
        .unwrap_or_else(|| first_line(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: Option<u32>, stdout: &str, stderr: &str) -> Ended {
        Ended {
            exit_status: code,
            output: Captured {
                stdout: stdout.into(),
                stderr: stderr.into(),
                truncated: false,
            },
            ..Ended::default()
        }
    }

    fn ftpsync(archive: Option<&str>) -> Protocol {
        Protocol::Ftpsync {
            archive: archive.map(str::to_owned),
        }
    }

    #[test]
    fn mirrorpush_is_sent_the_request_itself() {
        let r = Request::new("fedora", Some("updates/41")).unwrap();
        let c = Protocol::Mirrorpush.command(&r);
        assert_eq!(c.text, "sync fedora updates/41");
        assert_eq!(c.note, None);
    }

    #[test]
    fn ftpsync_is_sent_what_runmirrors_sends() {
        let full = Request::new("debian", None).unwrap();
        let dir = Request::new("debian", Some("dists/trixie")).unwrap();
        let c = ftpsync(Some("debian-security")).command(&full);
        assert_eq!(c.text, " sync:archive:debian-security sync:all");
        assert_eq!(c.note, None);
        // No archive: runmirrors still sends the empty one, which ftpsync reads as its main one.
        assert_eq!(ftpsync(None).command(&full).text, " sync:archive: sync:all");
        let c = ftpsync(None).command(&dir);
        assert_eq!(c.text, " sync:archive: sync:all");
        assert_eq!(c.note.as_deref(), Some(FULL_SYNC_NOTE));
    }

    #[test]
    fn the_answer_is_the_first_word_of_the_first_line() {
        let p = Protocol::Mirrorpush;
        for (stdout, answer) in [
            ("accepted\n", Some(Answer::Accepted)),
            ("queued\n", Some(Answer::Queued)),
            ("synced\n", Some(Answer::Synced)),
            (
                "\naccepted (last run failed: rsync code 5 at 2026-11-25T10:00:00Z)\n",
                Some(Answer::Accepted),
            ),
            ("ok\n", None),
            ("", None),
            ("synchronised\n", None),
        ] {
            let v = p.judge(&ended(Some(0), stdout, ""));
            assert_eq!((v.error.as_deref(), v.answer), (None, answer), "{stdout:?}");
        }
        let v = p.judge(&ended(
            Some(0),
            "accepted (last run failed: rsync code 5)\n",
            "",
        ));
        assert_eq!(v.message, "accepted (last run failed: rsync code 5)");
        // Only exit 0 carries an answer.
        let v = p.judge(&ended(
            Some(1),
            "synced\n",
            "error: sync failed: rsync code 23\n",
        ));
        assert_eq!(v.answer, None);
        assert_eq!(
            v.error.as_deref(),
            Some("the sync ran and rsync failed (exit 1): error: sync failed: rsync code 23")
        );
    }

    #[test]
    fn handler_exit_codes_become_messages() {
        let p = Protocol::Mirrorpush;
        let e = p.judge(&ended(Some(77), "", "error: unknown module \"x\"\nmore\n"));
        let text = e.error.unwrap();
        assert!(text.contains("not permitted"), "{text}");
        assert!(
            text.contains("(exit 77): error: unknown module \"x\""),
            "{text}"
        );
        for code in [1, 64, 75, 78, 3] {
            let e = p.judge(&ended(Some(code), "", ""));
            assert!(e.error.unwrap().contains(&format!("exit {code}")));
        }
        let e = p.judge(&ended(Some(1), "", "\x1b[31mbad\rline\n"));
        let text = e.error.unwrap();
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    }

    #[test]
    fn a_second_exit_status_is_a_protocol_error() {
        for p in [Protocol::Mirrorpush, ftpsync(None)] {
            let mut e = ended(Some(1), "synced\n", "");
            e.later_exit_statuses = vec![0];
            let v = p.judge(&e);
            assert_eq!(v.answer, None);
            assert_eq!(
                v.error.as_deref(),
                Some("protocol error: the mirror sent a second exit status (1, then 0)")
            );
        }
    }

    #[test]
    fn no_exit_status_is_a_failure_for_every_protocol() {
        for p in [Protocol::Mirrorpush, ftpsync(None)] {
            let mut e = ended(None, "synced\n", "");
            assert!(p.judge(&e).error.unwrap().contains("no exit status"));
            e.signal = Some("KILL".into());
            assert!(p.judge(&e).error.unwrap().contains("signal KILL"));
            e.signal = None;
            e.exec_refused = true;
            assert!(p.judge(&e).error.unwrap().contains("refused to run"));
            e.exec_refused = false;
            e.session_error = Some("no answer to SSH keepalives".into());
            let v = p.judge(&e);
            assert!(v.error.unwrap().contains("keepalives"));
            assert_eq!(v.answer, None);
        }
    }

    #[test]
    fn ftpsync_exit_status_is_its_answer() {
        let p = ftpsync(Some("debian"));
        let v = p.judge(&ended(Some(0), "", ""));
        assert_eq!((v.error, v.answer), (None, Some(Answer::Synced)));
        // Another ftpsync holds the lock: it has flagged one more run, so this push is queued.
        let v = p.judge(&ended(
            Some(1),
            "Unable to start rsync, lock file still exists, PID 4242\n",
            "",
        ));
        assert_eq!((v.error.as_deref(), v.answer), (None, Some(Answer::Queued)));
        assert!(v.message.contains("PID 4242"), "{}", v.message);
        let v = p.judge(&ended(
            Some(1),
            "Unable to start rsync, lock file younger than one hour\n",
            "",
        ));
        assert_eq!(v.answer, Some(Answer::Queued));
        // The lock message with another exit code, or exit 1 without it, is a failure.
        let v = p.judge(&ended(
            Some(3),
            "Unable to start rsync, lock file still exists\n",
            "",
        ));
        assert!(v.error.unwrap().contains("first rsync pass failed"));
        let v = p.judge(&ended(
            Some(1),
            "",
            "ARCH_EXCLUDE and ARCH_INCLUDE are mutually exclusive.  Set only one.\n",
        ));
        assert!(v.error.unwrap().contains("mutually exclusive"));
        // A wrong archive name: ftpsync finds no config for it and says so.
        let v = p.judge(&ended(
            Some(78),
            "",
            "Can't read config file ftpsync-debain.conf!\n",
        ));
        let e = v.error.unwrap();
        assert!(
            e.contains("exit 78") && e.contains("Can't read config file ftpsync-debain.conf!"),
            "{e}"
        );
        assert_eq!(v.answer, None);
        assert!(p
            .judge(&ended(Some(4), "", ""))
            .error
            .unwrap()
            .contains("second rsync pass"));
    }
}
