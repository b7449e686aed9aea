//! What a push tells people and scripts: live progress on a terminal, a line per mirror, the
//! completion warnings, a summary and a propagation line; or JSON Lines with one object per
//! mirror as it finishes, then one summary object (README, "Using mirrorpush").

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use super::json;
use super::protocol::Answer;
use super::session::Outcome;
use super::transport::Target;
use crate::history::recorder::Recorder;

/// One mirror's result, as reported: the JSON object of a `push --json` line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MirrorReport {
    pub mirror: String,
    /// null for a bus mirror, which has no address.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `ssh` or `bus`.
    pub transport: &'static str,
    pub stage: u32,
    pub ok: bool,
    pub exit_status: Option<u32>,
    pub error: Option<String>,
    /// `accepted`, `queued`, `synced`, `unreported` (a bus mirror whose ack did not come in
    /// time), or null (failed, or an answer the master does not know).
    pub answer: Option<Answer>,
    pub elapsed_ms: u64,
    /// When this mirror's session started, in ms since the push started (shows stage order).
    pub started_ms: u64,
    /// `mirrorpush` or `ftpsync`.
    pub protocol: &'static str,
    /// Exactly what was sent.
    pub request: String,
    /// E.g. that a dir push reached an ftpsync mirror as a full sync.
    pub note: Option<String>,
    pub message: String,
    /// Set when the mirror answered without reporting completion where completion matters: a
    /// stage that has later stages, or a mirror the registry marks `wait = true`.
    pub warning: Option<String>,
    pub attempts: u32,
    /// The handler's stdout then stderr, at most 64 KiB.
    pub output: String,
    pub output_truncated: bool,
    /// Never started: an earlier stage had a failure and `after_failed_stage = "hold"`.
    pub held: bool,
}

impl MirrorReport {
    pub fn new(target: &Target, outcome: Outcome, elapsed: Duration) -> Self {
        let mirror = target.mirror();
        let ssh = !mirror.transport.is_bus();
        MirrorReport {
            mirror: mirror.name.clone(),
            host: ssh.then(|| mirror.host.clone()),
            port: ssh.then_some(mirror.port),
            transport: mirror.transport.name(),
            stage: mirror.stage,
            ok: outcome.error.is_none(),
            exit_status: outcome.exit_status,
            answer: outcome.answer,
            elapsed_ms: ms(elapsed),
            started_ms: 0,
            protocol: mirror.protocol.name(),
            request: target.command().text.clone(),
            note: target.command().note.clone(),
            message: capped(outcome.message),
            warning: None,
            attempts: outcome.attempts,
            output: outcome.output.text(),
            output_truncated: outcome.output.truncated,
            error: outcome.error.map(capped),
            held: false,
        }
    }

    /// A mirror of a later stage that is not pushed because an earlier stage had failures.
    pub fn held(target: &Target, why: String) -> Self {
        let outcome = Outcome {
            error: Some(why.clone()),
            message: why,
            ..Outcome::default()
        };
        let mut report = MirrorReport::new(target, outcome, Duration::ZERO);
        report.held = true;
        report
    }

    /// A mirror that never got an answer because the push was interrupted.
    pub fn interrupted(target: &Target, elapsed: Duration) -> Self {
        let error = "interrupted (Ctrl-C) before the mirror answered".to_owned();
        let outcome = Outcome {
            error: Some(error.clone()),
            message: error,
            attempts: 1,
            ..Outcome::default()
        };
        MirrorReport::new(target, outcome, elapsed)
    }

    /// Flags a mirror that answered without reporting completion where completion matters:
    /// `later_stages` (later stages of this push start once it has answered, and may pull from
    /// it) or `expects_synced` (the registry says it answers `synced`). A failure is reported as
    /// a failure, not flagged.
    pub fn check_completion(&mut self, later_stages: bool, expects_synced: bool) {
        if !self.ok || self.answer == Some(Answer::Synced) {
            return;
        }
        let said = match self.answer {
            Some(a) => format!("answered {a}, not synced"),
            None => format!("answered {:?}, not synced", self.message),
        };
        if self.protocol == "ftpsync" {
            // ftpsync has no modes: `queued` means it was already running and runs once more
            // for this push. Nothing to configure; only the stage order is not guaranteed.
            self.warning = later_stages.then(|| {
                format!(
                    "{said}: ftpsync was already running and syncs once more after its current \
                     run, and later stages have started: they may pull from it before it has the \
                     content"
                )
            });
            return;
        }
        self.warning = if later_stages {
            Some(format!(
                "{said}, and later stages have started: they may pull from it before it has the \
                 content (run its module in wait mode and set wait = true)"
            ))
        } else if expects_synced {
            Some(format!(
                "{said}, but the registry expects synced (wait = true): is its module in wait \
                 mode on the mirror?"
            ))
        } else {
            None
        };
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
    /// Mirrors that answered `synced`: the content is on them.
    pub synced: usize,
    /// Mirrors that answered `accepted` or `queued`: a sync will run, completion unreported.
    pub accepted: usize,
    pub queued: usize,
    /// Succeeded without an answer the master knows (e.g. an older handler).
    pub unreported: usize,
    /// The longest single session among the synced mirrors.
    pub slowest_synced_ms: Option<u64>,
    /// From the start of the push to the last `synced` answer: the content is on every synced
    /// mirror this long after the push began.
    pub synced_within_ms: Option<u64>,
    /// Mirrors with a completion warning.
    pub warnings: usize,
    /// Failed mirrors that were never started: held back after an earlier stage's failure.
    pub held: usize,
    /// One line for each later stage that started although an earlier one had failures.
    pub stage_warnings: Vec<String>,
    /// The propagation line, as printed on the terminal.
    pub propagation: String,
    /// The push's id in the history (absent when it could not be recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<i64>,
}

impl Summary {
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.not_started == 0 && !self.interrupted
    }

    fn from_reports(
        done: &[MirrorReport],
        unfinished: usize,
        interrupted: bool,
        elapsed: Duration,
    ) -> Summary {
        let failed = done.iter().filter(|r| !r.ok).count();
        let answered = |a: Answer| done.iter().filter(|r| r.ok && r.answer == Some(a)).count();
        let synced: Vec<&MirrorReport> = done
            .iter()
            .filter(|r| r.ok && r.answer == Some(Answer::Synced))
            .collect();
        let (accepted, queued) = (answered(Answer::Accepted), answered(Answer::Queued));
        let mut s = Summary {
            selected: done.len() + unfinished,
            ok: done.len() - failed,
            failed,
            not_started: unfinished,
            interrupted,
            elapsed_ms: ms(elapsed),
            synced: synced.len(),
            accepted,
            queued,
            unreported: done.len() - failed - synced.len() - accepted - queued,
            slowest_synced_ms: synced.iter().map(|r| r.elapsed_ms).max(),
            synced_within_ms: synced
                .iter()
                .map(|r| r.started_ms.saturating_add(r.elapsed_ms))
                .max(),
            warnings: done.iter().filter(|r| r.warning.is_some()).count(),
            held: done.iter().filter(|r| r.held).count(),
            stage_warnings: Vec::new(),
            propagation: String::new(),
            push: None,
        };
        s.propagation = propagation(&s);
        s
    }
}

/// Prints reports as they come, in the chosen style.
pub struct Reporter {
    json: bool,
    /// Live progress line on stderr (only when stderr is a terminal).
    progress: bool,
    done: Vec<MirrorReport>,
    /// How many of `done` failed, kept as they arrive: the progress line is redrawn for
    /// every mirror, and counting them there costs O(N) per mirror at 10,000 mirrors.
    failed: usize,
    running: usize,
    waiting: usize,
    /// Where each answer and the end are recorded, as they happen.
    history: Option<Recorder>,
    stage_warnings: Vec<String>,
}

impl Reporter {
    pub fn new(json: bool, progress: bool, selected: usize) -> Self {
        Reporter {
            json,
            progress,
            done: Vec::new(),
            failed: 0,
            running: 0,
            waiting: selected,
            history: None,
            stage_warnings: Vec::new(),
        }
    }

    /// Records every answer, and the end, in the push history too.
    pub fn record_to(mut self, history: Option<Recorder>) -> Self {
        self.history = history;
        self
    }

    pub fn started(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
        self.running += 1;
        self.draw_progress();
    }

    /// A later stage starts although an earlier one had failures: said at once on stderr (a
    /// push may run for hours), and again with the report.
    pub fn stage_warning(&mut self, text: String) {
        self.clear_progress();
        eprintln!("warning: {text}");
        self.stage_warnings.push(text);
        self.draw_progress();
    }

    pub fn finished(&mut self, report: MirrorReport) {
        self.running = self.running.saturating_sub(1);
        if let Some(h) = &mut self.history {
            h.mirror_finished(&report);
        }
        if self.json {
            self.clear_progress();
            // Scripts read results as they arrive, so each line is flushed at once.
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{}", json_line(&report));
            let _ = out.flush();
        }
        self.failed += usize::from(!report.ok);
        self.done.push(report);
        self.draw_progress();
    }

    /// Ends the push: per-mirror lines, warnings, the summary and the propagation line (human
    /// mode), or the summary object (JSON). Returns the summary.
    pub fn finish(mut self, interrupted: bool, elapsed: Duration) -> Summary {
        self.clear_progress();
        let mut summary = Summary::from_reports(
            &self.done,
            self.waiting + self.running,
            interrupted,
            elapsed,
        );
        if let Some(h) = &mut self.history {
            h.finish(&summary);
            summary.push = Some(h.push_id());
        }
        summary.stage_warnings = std::mem::take(&mut self.stage_warnings);
        let mut out = io::stdout().lock();
        if self.json {
            let _ = writeln!(
                out,
                "{}",
                json::line(&serde_json::json!({ "summary": summary }))
            );
        } else {
            self.done
                .sort_by(|a, b| (a.stage, &a.mirror).cmp(&(b.stage, &b.mirror)));
            let _ = out.write_all(human_lines(&self.done).as_bytes());
            let _ = out.write_all(human_warnings(&self.done).as_bytes());
            for w in &summary.stage_warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(out, "{}", human_summary(&summary));
            let _ = writeln!(out, "{}", summary.propagation);
            if let Some(id) = summary.push {
                let _ = writeln!(out, "push {id}");
            }
        }
        let _ = out.flush();
        summary
    }

    fn draw_progress(&self) {
        if self.progress {
            eprint!(
                "\r\x1b[K{} done, {} failed, {} running, {} waiting",
                self.done.len() - self.failed,
                self.failed,
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

/// Longest `message`/`error` kept, in bytes: a mirror's first output line can be 64 KiB of
/// text it chose, and one report line of that size splits into journal records (journald cuts
/// at 48 KiB) that can read like other mirrors' lines. The full text stays in JSON `output`.
pub const MESSAGE_LIMIT: usize = 300;

/// `text` cut to [`MESSAGE_LIMIT`] bytes at a character boundary, with a mark saying so.
fn capped(text: String) -> String {
    if text.len() <= MESSAGE_LIMIT {
        return text;
    }
    let mut end = MESSAGE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... [{} more bytes; the whole output is in push --json]",
        &text[..end],
        text.len() - end
    )
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

pub fn json_line(report: &MirrorReport) -> String {
    json::line(report)
}

/// `name  ok|FAILED  1.2s  message`, names padded to one column.
pub fn human_lines(reports: &[MirrorReport]) -> String {
    let width = reports.iter().map(|r| r.mirror.len()).max().unwrap_or(0);
    let mut s = String::new();
    for r in reports {
        let status = if r.ok { "ok" } else { "FAILED" };
        let secs = r.elapsed_ms as f64 / 1000.0;
        s.push_str(&format!(
            "{:width$}  {:6}  {:>6.1}s  {}",
            r.mirror, status, secs, r.message
        ));
        if let Some(note) = &r.note {
            s.push_str(&format!(" ({note})"));
        }
        s.push('\n');
    }
    s
}

/// `warning: name (stage N): ...` for every flagged mirror.
pub fn human_warnings(reports: &[MirrorReport]) -> String {
    reports
        .iter()
        .filter_map(|r| {
            let w = r.warning.as_ref()?;
            Some(format!("warning: {} (stage {}): {w}\n", r.mirror, r.stage))
        })
        .collect()
}

pub fn human_summary(s: &Summary) -> String {
    let mut line = format!("{} mirror(s): {} ok, {} failed", s.selected, s.ok, s.failed);
    if s.held > 0 {
        line.push_str(&format!(" ({} held back)", s.held));
    }
    if s.not_started > 0 {
        line.push_str(&format!(", {} not finished", s.not_started));
    }
    let warnings = s.warnings + s.stage_warnings.len();
    if warnings > 0 {
        line.push_str(&format!(", {warnings} warning(s)"));
    }
    if s.interrupted {
        line.push_str(" (interrupted)");
    }
    line.push_str(&format!(" in {:.1}s", s.elapsed_ms as f64 / 1000.0));
    line
}

/// How far the content has got: `41 of 45 mirror(s) synced within 3m12s; 4 accepted without
/// reporting completion`, plus what failed or never answered.
pub fn propagation(s: &Summary) -> String {
    let mut parts = vec![match s.synced_within_ms {
        Some(t) if s.synced > 0 => format!(
            "{} of {} mirror(s) synced within {}",
            s.synced,
            s.selected,
            short_duration(t)
        ),
        _ => format!("0 of {} mirror(s) reported synced", s.selected),
    }];
    let pending = s.accepted + s.queued;
    if pending > 0 {
        let mut p = format!("{pending} accepted without reporting completion");
        if s.queued > 0 {
            p.push_str(&format!(
                " ({} of them queued behind a running sync)",
                s.queued
            ));
        }
        parts.push(p);
    }
    if s.unreported > 0 {
        parts.push(format!("{} ok without saying what they did", s.unreported));
    }
    if s.failed > 0 {
        parts.push(format!("{} failed", s.failed));
    }
    if s.not_started > 0 {
        parts.push(format!("{} not finished", s.not_started));
    }
    parts.join("; ")
}

/// `850ms`, `12.3s`, `3m12s`, `2h05m`: short enough for one line, exact enough for people.
pub fn short_duration(ms: u64) -> String {
    let secs = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::known_hosts::KnownHosts;
    use crate::fanout::output::Captured;
    use crate::fanout::registry::Registry;
    use crate::request::Request;
    use std::sync::Arc;

    fn target(extra: &str, dir: Option<&str>) -> Target {
        let r = Registry::parse(
            std::path::Path::new("m.toml"),
            &format!(
                "[[mirror]]\nname = \"m1\"\nhost = \"127.0.0.1\"\nport = 2222\nstage = 2\n{extra}\n"
            ),
        )
        .unwrap();
        Target::Ssh(crate::fanout::session::SshTarget::new(
            r.mirrors[0].clone(),
            Request::new("fedora", dir).unwrap(),
            Arc::new(KnownHosts::parse(std::path::Path::new("kh"), "")),
            None,
        ))
    }

    fn answered(answer: Option<Answer>, message: &str) -> Outcome {
        Outcome {
            exit_status: Some(0),
            answer,
            message: message.into(),
            attempts: 1,
            ..Outcome::default()
        }
    }

    fn report(answer: Option<Answer>, started_ms: u64, elapsed_ms: u64) -> MirrorReport {
        let mut r = MirrorReport::new(
            &target("", None),
            answered(answer, answer.map_or("ok", Answer::as_str)),
            Duration::from_millis(elapsed_ms),
        );
        r.started_ms = started_ms;
        r
    }

    #[test]
    fn json_object_has_the_contract_fields() {
        let outcome = Outcome {
            output: Captured {
                stdout: b"accepted\n".to_vec(),
                stderr: vec![],
                truncated: false,
            },
            ..answered(Some(Answer::Accepted), "accepted")
        };
        let r = MirrorReport::new(&target("", None), outcome, Duration::from_millis(1234));
        let v: serde_json::Value = serde_json::from_str(&json_line(&r)).unwrap();
        assert_eq!(v["mirror"], "m1");
        assert_eq!(v["host"], "127.0.0.1");
        assert_eq!(v["port"], 2222);
        assert_eq!(v["transport"], "ssh");
        assert_eq!(v["stage"], 2);
        assert_eq!(v["ok"], true);
        assert_eq!(v["exit_status"], 0);
        assert!(v["error"].is_null());
        assert_eq!(v["answer"], "accepted");
        assert_eq!(v["elapsed_ms"], 1234);
        assert_eq!(v["output"], "accepted\n");
        assert_eq!(v["request"], "sync fedora");
        assert_eq!(v["protocol"], "mirrorpush");
        assert!(v["note"].is_null() && v["warning"].is_null());

        let failed = MirrorReport::new(
            &target("", None),
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
        assert!(v["answer"].is_null());
        assert_eq!(v["error"], "host key mismatch");
    }

    #[test]
    fn mirror_output_in_json_cannot_drive_a_terminal() {
        let outcome = Outcome {
            output: Captured {
                stdout: "accepted\u{85}\u{9b}31m\u{202e}gpj.exe\u{7f}\n".into(),
                stderr: "\u{1b}]0;owned\u{7}".into(),
                truncated: false,
            },
            ..answered(Some(Answer::Accepted), "accepted")
        };
        let r = MirrorReport::new(&target("", None), outcome, Duration::ZERO);
        let line = json_line(&r);
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || crate::fanout::json::needs_escape(c)),
            "{line:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["output"].as_str(), Some(r.output.as_str()));
    }

    #[test]
    fn ftpsync_dir_push_is_noted() {
        let t = target(
            "protocol = \"ftpsync\"\narchive = \"debian\"",
            Some("dists/trixie"),
        );
        let r = MirrorReport::new(&t, answered(Some(Answer::Synced), "synced"), Duration::ZERO);
        assert_eq!(r.request, " sync:archive:debian sync:all");
        assert_eq!(r.protocol, "ftpsync");
        let text = human_lines(&[r]);
        assert!(
            text.contains("synced (dir push sent as a full sync"),
            "{text}"
        );
    }

    #[test]
    fn a_busy_ftpsync_mirror_is_not_told_to_use_wait_mode() {
        let t = target("protocol = \"ftpsync\"", None);
        let mut r = MirrorReport::new(&t, answered(Some(Answer::Queued), "queued"), Duration::ZERO);
        r.check_completion(true, true);
        let w = r
            .warning
            .clone()
            .expect("flagged: later stages have started");
        assert!(w.contains("ftpsync was already running"), "{w}");
        assert!(
            !w.contains("wait mode") && !w.contains("wait = true"),
            "{w}"
        );
        // In the last stage a busy ftpsync is normal: nothing to warn about.
        r.check_completion(false, true);
        assert_eq!(r.warning, None);
    }

    #[test]
    fn long_messages_are_capped_with_a_mark() {
        let long = format!("accepted {}", "é".repeat(100_000));
        let r = MirrorReport::new(
            &target("", None),
            answered(Some(Answer::Accepted), &long),
            Duration::ZERO,
        );
        assert!(r.message.len() < MESSAGE_LIMIT + 80, "{}", r.message.len());
        assert!(r
            .message
            .ends_with("more bytes; the whole output is in push --json]"));
        assert!(r.message.starts_with("accepted éé"));
        let short = capped("synced".into());
        assert_eq!(short, "synced");
    }

    #[test]
    fn completion_warnings() {
        // A stage with later stages: accepted/queued is flagged, synced and failures are not.
        for answer in [Some(Answer::Accepted), Some(Answer::Queued), None] {
            let mut r = report(answer, 0, 10);
            r.check_completion(true, false);
            let w = r.warning.expect("flagged");
            assert!(w.contains("later stages"), "{w}");
        }
        let mut r = report(Some(Answer::Synced), 0, 10);
        r.check_completion(true, true);
        assert_eq!(r.warning, None);
        let mut failed = report(None, 0, 10);
        failed.ok = false;
        failed.check_completion(true, true);
        assert_eq!(failed.warning, None);
        // The last stage: only a mirror the registry marks wait = true is flagged.
        let mut r = report(Some(Answer::Accepted), 0, 10);
        r.check_completion(false, false);
        assert_eq!(r.warning, None);
        r.check_completion(false, true);
        assert!(r.warning.as_deref().unwrap().contains("wait = true"));
        let text = human_warnings(&[r]);
        assert!(
            text.starts_with("warning: m1 (stage 2): answered accepted"),
            "{text}"
        );
    }

    #[test]
    fn summary_separates_synced_from_accepted_and_failed() {
        let mut failed = report(None, 0, 5);
        failed.ok = false;
        let mut flagged = report(Some(Answer::Accepted), 0, 20);
        flagged.check_completion(true, false);
        let done = [
            report(Some(Answer::Synced), 0, 70_000),
            report(Some(Answer::Synced), 120_000, 72_000),
            flagged,
            report(Some(Answer::Queued), 0, 30),
            report(None, 0, 40),
            failed,
        ];
        let s = Summary::from_reports(&done, 1, false, Duration::from_secs(200));
        assert_eq!((s.selected, s.ok, s.failed, s.not_started), (7, 5, 1, 1));
        assert_eq!((s.synced, s.accepted, s.queued, s.unreported), (2, 1, 1, 1));
        assert_eq!(s.slowest_synced_ms, Some(72_000));
        assert_eq!(s.synced_within_ms, Some(192_000));
        assert_eq!(s.warnings, 1);
        assert_eq!(
            s.propagation,
            "2 of 7 mirror(s) synced within 3m12s; 2 accepted without reporting completion \
             (1 of them queued behind a running sync); 1 ok without saying what they did; \
             1 failed; 1 not finished"
        );
        assert!(!s.all_ok());
        assert_eq!(
            human_summary(&s),
            "7 mirror(s): 5 ok, 1 failed, 1 not finished, 1 warning(s) in 200.0s"
        );
        let v: serde_json::Value =
            serde_json::from_str(&json::line(&serde_json::json!({ "summary": s }))).unwrap();
        assert_eq!(v["summary"]["synced"], 2);
        assert_eq!(v["summary"]["accepted"], 1);
        assert_eq!(v["summary"]["queued"], 1);
        assert_eq!(v["summary"]["failed"], 1);
        assert_eq!(v["summary"]["slowest_synced_ms"], 72_000);
        assert_eq!(v["summary"]["synced_within_ms"], 192_000);

        let none = Summary::from_reports(
            &[report(Some(Answer::Accepted), 0, 1)],
            0,
            false,
            Duration::ZERO,
        );
        assert_eq!(
            none.propagation,
            "0 of 1 mirror(s) reported synced; 1 accepted without reporting completion"
        );
        assert_eq!(none.slowest_synced_ms, None);
        assert!(none.all_ok());
    }

    #[test]
    fn human_lines_and_summary() {
        let ok = report(Some(Answer::Queued), 0, 1500);
        assert_eq!(human_lines(&[ok]), "m1  ok         1.5s  queued\n");
        let s = Summary {
            selected: 3,
            ok: 1,
            failed: 1,
            not_started: 1,
            interrupted: true,
            elapsed_ms: 2000,
            ..Summary::default()
        };
        assert_eq!(
            human_summary(&s),
            "3 mirror(s): 1 ok, 1 failed, 1 not finished (interrupted) in 2.0s"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(850), "850ms");
        assert_eq!(short_duration(12_340), "12.3s");
        assert_eq!(short_duration(192_000), "3m12s");
        assert_eq!(short_duration(7_500_000), "2h05m");
    }
}
