//! What a push tells people and scripts: live progress on a terminal, a line per mirror and a
//! summary, or JSON Lines (DESIGN.md section 6) with one object per mirror as it finishes.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::registry::Mirror;
use super::session::Outcome;

/// One mirror's result, as reported (the JSON object of DESIGN.md section 6, plus extras).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MirrorReport {
    pub mirror: String,
    pub host: String,
    pub port: u16,
    pub stage: u32,
    pub ok: bool,
    pub exit_status: Option<u32>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// When this mirror's session started, in ms since the push started (shows stage order).
    pub started_ms: u64,
    pub request: String,
    pub message: String,
    pub attempts: u32,
    /// The handler's stdout then stderr, at most 64 KiB.
    pub output: String,
    pub output_truncated: bool,
}

impl MirrorReport {
    pub fn new(mirror: &Mirror, request: String, outcome: Outcome, elapsed: Duration) -> Self {
        MirrorReport {
            mirror: mirror.name.clone(),
            host: mirror.host.clone(),
            port: mirror.port,
            stage: mirror.stage,
            ok: outcome.error.is_none(),
            exit_status: outcome.exit_status,
            elapsed_ms: elapsed.as_millis().try_into().unwrap_or(u64::MAX),
            started_ms: 0,
            request,
            message: outcome.message,
            attempts: outcome.attempts,
            output: outcome.output.text(),
            output_truncated: outcome.output.truncated,
            error: outcome.error,
        }
    }

    /// A mirror that never got an answer because the push was interrupted.
    pub fn interrupted(mirror: &Mirror, request: String, elapsed: Duration) -> Self {
        let error = "interrupted (Ctrl-C) before the mirror answered".to_owned();
        let outcome = Outcome {
            error: Some(error.clone()),
            message: error,
            attempts: 1,
            ..Outcome::default()
        };
        MirrorReport::new(mirror, request, outcome, elapsed)
    }
}

/// Totals for the end of a push.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub selected: usize,
    pub ok: usize,
    pub failed: usize,
    /// Selected but never started (Ctrl-C).
    pub not_started: usize,
    pub interrupted: bool,
    pub elapsed_ms: u64,
}

impl Summary {
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.not_started == 0 && !self.interrupted
    }
}

/// Prints reports as they come, in the chosen style.
pub struct Reporter {
    json: bool,
    /// Live progress line on stderr (only when stderr is a terminal).
    progress: bool,
    done: Vec<MirrorReport>,
    running: usize,
    waiting: usize,
}

impl Reporter {
    pub fn new(json: bool, progress: bool, selected: usize) -> Self {
        Reporter {
            json,
            progress,
            done: Vec::new(),
            running: 0,
            waiting: selected,
        }
    }

    pub fn started(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
        self.running += 1;
        self.draw_progress();
    }

    pub fn finished(&mut self, report: MirrorReport) {
        self.running = self.running.saturating_sub(1);
        if self.json {
            self.clear_progress();
            // Scripts read results as they arrive, so each line is flushed at once.
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{}", json_line(&report));
            let _ = out.flush();
        }
        self.done.push(report);
        self.draw_progress();
    }

    /// Ends the push: per-mirror lines (human mode) and the summary. Returns the summary.
    pub fn finish(mut self, interrupted: bool, elapsed: Duration) -> Summary {
        self.clear_progress();
        let failed = self.done.iter().filter(|r| !r.ok).count();
        let summary = Summary {
            selected: self.done.len() + self.waiting + self.running,
            ok: self.done.len() - failed,
            failed,
            not_started: self.waiting + self.running,
            interrupted,
            elapsed_ms: elapsed.as_millis().try_into().unwrap_or(u64::MAX),
        };
        let mut out = io::stdout().lock();
        if self.json {
            let _ = writeln!(out, "{}", serde_json::json!({ "summary": summary }));
        } else {
            self.done
                .sort_by(|a, b| (a.stage, &a.mirror).cmp(&(b.stage, &b.mirror)));
            let _ = out.write_all(human_lines(&self.done).as_bytes());
            let _ = writeln!(out, "{}", human_summary(&summary));
        }
        let _ = out.flush();
        summary
    }

    fn draw_progress(&self) {
        if self.progress {
            let failed = self.done.iter().filter(|r| !r.ok).count();
            eprint!(
                "\r\x1b[K{} done, {} failed, {} running, {} waiting",
                self.done.len() - failed,
                failed,
                self.running,
                self.waiting
            );
        }
    }

    fn clear_progress(&self) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
    }
}

pub fn json_line(report: &MirrorReport) -> String {
    serde_json::to_string(report)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode report: {e}\"}}"))
}

/// `name  ok|FAILED  1.2s  message`, names padded to one column.
pub fn human_lines(reports: &[MirrorReport]) -> String {
    let width = reports.iter().map(|r| r.mirror.len()).max().unwrap_or(0);
    let mut s = String::new();
    for r in reports {
        let status = if r.ok { "ok" } else { "FAILED" };
        let secs = r.elapsed_ms as f64 / 1000.0;
        s.push_str(&format!(
            "{:width$}  {:6}  {:>6.1}s  {}\n",
            r.mirror, status, secs, r.message
        ));
    }
    s
}

pub fn human_summary(s: &Summary) -> String {
    let mut line = format!("{} mirror(s): {} ok, {} failed", s.selected, s.ok, s.failed);
    if s.not_started > 0 {
        line.push_str(&format!(", {} not finished", s.not_started));
    }
    if s.interrupted {
        line.push_str(" (interrupted)");
    }
    line.push_str(&format!(" in {:.1}s", s.elapsed_ms as f64 / 1000.0));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::registry::Registry;
    use crate::fanout::session::Captured;

    fn mirror() -> Mirror {
        let r = Registry::parse(
            std::path::Path::new("m.toml"),
            "[[mirror]]\nname = \"m1\"\nhost = \"127.0.0.1\"\nport = 2222\nstage = 2\n",
        )
        .unwrap();
        r.mirrors[0].clone()
    }

    #[test]
    fn json_object_has_the_contract_fields() {
        let outcome = Outcome {
            exit_status: Some(0),
            message: "accepted".into(),
            output: Captured {
                stdout: b"accepted\n".to_vec(),
                stderr: vec![],
                truncated: false,
            },
            attempts: 1,
            ..Outcome::default()
        };
        let r = MirrorReport::new(
            &mirror(),
            "sync fedora".into(),
            outcome,
            Duration::from_millis(1234),
        );
        let v: serde_json::Value = serde_json::from_str(&json_line(&r)).unwrap();
        assert_eq!(v["mirror"], "m1");
        assert_eq!(v["host"], "127.0.0.1");
        assert_eq!(v["port"], 2222);
        assert_eq!(v["stage"], 2);
        assert_eq!(v["ok"], true);
        assert_eq!(v["exit_status"], 0);
        assert!(v["error"].is_null());
        assert_eq!(v["elapsed_ms"], 1234);
        assert_eq!(v["output"], "accepted\n");
        assert_eq!(v["request"], "sync fedora");

        let failed = MirrorReport::new(
            &mirror(),
            "sync fedora".into(),
            Outcome {
                error: Some("host key mismatch".into()),
                message: "host key mismatch".into(),
                ..Outcome::default()
            },
            Duration::ZERO,
        );
        let v: serde_json::Value = serde_json::from_str(&json_line(&failed)).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v["exit_status"].is_null());
        assert_eq!(v["error"], "host key mismatch");
    }

    #[test]
    fn human_lines_and_summary() {
        let m = mirror();
        let ok = MirrorReport::new(
            &m,
            "sync f".into(),
            Outcome {
                exit_status: Some(0),
                message: "queued".into(),
                ..Outcome::default()
            },
            Duration::from_millis(1500),
        );
        let text = human_lines(&[ok]);
        assert_eq!(text, "m1  ok         1.5s  queued\n");
        let s = Summary {
            selected: 3,
            ok: 1,
            failed: 1,
            not_started: 1,
            interrupted: true,
            elapsed_ms: 2000,
        };
        assert_eq!(
            human_summary(&s),
            "3 mirror(s): 1 ok, 1 failed, 1 not finished (interrupted) in 2.0s"
        );
        assert!(!s.all_ok());
        let v = serde_json::json!({ "summary": s });
        assert_eq!(v["summary"]["failed"], 1);
    }
}
