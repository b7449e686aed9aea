//! What `push` records: the push and its mirrors when it starts (with the master's proof values
//! as they are now, so later publishes do not rewrite history), each mirror's answer as it
//! arrives, and the end. A history that cannot be written never stops a push: the push goes on,
//! and one warning says what was not recorded.

use std::collections::BTreeMap;
use std::path::Path;

use super::{now_ms, Answered, History, NewMirror, NewPush};
use crate::fanout::registry::{Mirror, VerifyTrees};
use crate::fanout::report::{MirrorReport, Summary};
use crate::request::Request;
use crate::verify::proof;

pub struct Recorder {
    history: History,
    push: i64,
    /// Set after the first failed write: later ones are not reported again.
    failed: bool,
}

impl Recorder {
    /// Opens the history and records the start of a push of `request` to `mirrors`. `None` (with a
    /// warning on stderr) when the history cannot be written.
    pub fn start(
        path: &Path,
        trees: &VerifyTrees,
        request: &Request,
        mirrors: &[&Mirror],
    ) -> Option<Recorder> {
        let module = request.module.as_str();
        let push = NewPush {
            module: module.to_owned(),
            dir: request.dir.as_ref().map(|d| d.to_string()),
            started_ms: now_ms(),
            who: who(),
            ..NewPush::default()
        };
        let push = with_proofs(push, trees.of(module), mirrors);
        let mut history = match History::open(path) {
            Ok(h) => h,
            Err(e) => {
                warn(&format!("{e}; this push is not recorded"));
                return None;
            }
        };
        match history.begin_push(&push) {
            Ok(id) => Some(Recorder {
                history,
                push: id,
                failed: false,
            }),
            Err(e) => {
                warn(&format!("{e}; this push is not recorded"));
                None
            }
        }
    }

    pub fn push_id(&self) -> i64 {
        self.push
    }

    pub fn mirror_finished(&mut self, r: &MirrorReport) {
        let answered = Answered {
            mirror: r.mirror.clone(),
            ok: r.ok,
            answer: r
                .answer
                .map(|a| a.as_str().to_owned())
                .or_else(|| r.ok.then(|| "unreported".to_owned())),
            error: r.error.clone(),
            error_class: r.error.as_deref().map(push_error_class),
            answered_ms: now_ms(),
        };
        let result = self.history.record_answer(self.push, &answered);
        self.check(result);
    }

    pub fn finish(&mut self, s: &Summary) {
        let outcome = if s.interrupted {
            "interrupted"
        } else if s.all_ok() {
            "ok"
        } else {
            "failed"
        };
        let result = self.history.end_push(self.push, now_ms(), outcome);
        self.check(result);
    }

    fn check(&mut self, result: Result<(), super::HistoryError>) {
        if let Err(e) = result {
            if !self.failed {
                warn(&format!("{e}; push {} is recorded only in part", self.push));
            }
            self.failed = true;
        }
    }
}

/// Takes the master's value of every proof the mirrors use; `serial` is the Archive serial when
/// any mirror verifies by trace, else the value of the proof most of them use.
fn with_proofs(mut push: NewPush, tree: Option<&Path>, mirrors: &[&Mirror]) -> NewPush {
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for m in mirrors {
        let spec = m.verify.as_ref().map(ToString::to_string);
        if let Some(s) = &spec {
            *uses.entry(s.clone()).or_default() += 1;
        }
        push.mirrors.push(NewMirror {
            name: m.name.clone(),
            transport: m.transport().to_owned(),
            proof: spec,
        });
    }
    let specs: BTreeMap<String, _> = mirrors
        .iter()
        .filter_map(|m| m.verify.as_ref())
        .map(|s| (s.to_string(), s))
        .collect();
    for (text, spec) in specs {
        let value = match tree {
            Some(tree) => proof::master_value(tree, spec),
            None => Err(format!(
                "no master tree for module {} ([verify] tree or [verify.trees])",
                push.module
            )),
        };
        push.proofs.push((text, value));
    }
    // The Archive serial when any mirror verifies by trace (every trace proof has that one
    // master value), else the proof most mirrors use.
    let trace = uses.keys().find(|s| s.starts_with("trace:")).cloned();
    let most = trace.or_else(|| uses.iter().max_by_key(|(_, n)| **n).map(|(s, _)| s.clone()));
    push.serial = most.and_then(|s| {
        push.proofs
            .iter()
            .find(|(p, _)| *p == s)
            .and_then(|(_, v)| v.clone().ok())
    });
    push
}

/// Why a push failed for one mirror, in a word: the error class `verify` and `report` show
/// until the mirror is verified anyway.
pub fn push_error_class(error: &str) -> String {
    let e = error.to_ascii_lowercase();
    let class = if e.contains("interrupted") {
        "interrupted"
    } else if e.contains("host key") {
        "push-host-key"
    } else if e.contains("timed out") || e.contains("timeout") {
        "push-timeout"
    } else if e.contains("connect") || e.contains("resolve") || e.contains("refused") {
        "push-connect"
    } else if e.contains("auth") || e.contains("permission denied") {
        "push-auth"
    } else {
        "push-failed"
    };
    class.to_owned()
}

/// `user@host` of whoever runs the push (sudo's caller when run through sudo).
fn who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid(2) cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{user}@{host}")
}

fn warn(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_failures_have_classes() {
        assert_eq!(push_error_class("host key mismatch for x"), "push-host-key");
        assert_eq!(
            push_error_class("connect: Connection refused"),
            "push-connect"
        );
        assert_eq!(push_error_class("timed out after 2m"), "push-timeout");
        assert_eq!(
            push_error_class("interrupted (Ctrl-C) before the mirror answered"),
            "interrupted"
        );
        assert_eq!(
            push_error_class("sync failed: rsync exit 23"),
            "push-failed"
        );
    }
}
