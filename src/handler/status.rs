//! Last-run records (`<state_dir>/<module>/status.json`) and the `status` command's output.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::queue::{read_state_file, Entry, ModuleDir};
use super::rsync::Changes;

pub const STATUS_FILE: &str = "status.json";
/// Most requests, pushers and keys a record lists (the rest are counted).
pub const LISTED: usize = 100;

/// How a target was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain rsync of the module or dir.
    Full,
    /// The file list changed: only the entries that changed were transferred or removed.
    Filelist,
    /// The file list was unchanged: nothing else ran.
    Null,
    /// The dir is gone upstream: it was removed here.
    Removed,
    /// Nothing ran (refused before rsync started).
    None,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Filelist => "filelist",
            Kind::Null => "null",
            Kind::Removed => "removed",
            Kind::None => "none",
        }
    }
}

/// One target (the module or a dir) within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRun {
    /// `(all)` or the dir.
    pub target: String,
    pub kind: Kind,
    pub ok: bool,
    pub rsync_exit: Option<i32>,
    pub result: String,
    #[serde(flatten)]
    pub changes: Changes,
}

/// One run of a batch: what was asked, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    /// The batch's requests, `(all)` or a dir, in arrival order (at most [`LISTED`]).
    pub requests: Vec<String>,
    /// How many requests the batch held.
    pub requests_total: usize,
    pub pushers: Vec<String>,
    pub keys: Vec<String>,
    pub runs: Vec<TargetRun>,
    pub ok: bool,
    /// The first failing rsync exit code, else 0 (null if rsync never ran to an exit code).
    pub rsync_exit: Option<i32>,
    pub result: String,
    /// Totals over the runs.
    #[serde(flatten)]
    pub changes: Changes,
    /// A trace (or lastsync) file was written after this run.
    pub trace_written: bool,
}

impl RunRecord {
    /// For an answer: `rsync code 5 at <end>`, or the result text when rsync had no exit code.
    pub fn failure_summary(&self) -> String {
        match self.rsync_exit {
            Some(code) if code != 0 => format!("rsync code {code} at {}", self.end),
            _ => format!("{} at {}", self.result, self.end),
        }
    }
}

pub fn read(md: &ModuleDir) -> Option<RunRecord> {
    let bytes = read_state_file(&md.path(STATUS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(md: &ModuleDir, r: &RunRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    super::queue::write_atomic(&md.path(STATUS_FILE), &bytes)
}

/// Everything `status` shows for one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatus {
    pub module: String,
    pub last_run: Option<RunRecord>,
    /// A hub's last push to its downstream mirrors.
    pub downstream: Option<super::downstream::Record>,
    /// The batch a runner took and has not finished: running now, or interrupted and merged
    /// into the next run.
    pub in_flight: Vec<Entry>,
    pub pending: Vec<Entry>,
}

pub fn render_json(all: &[ModuleStatus]) -> String {
    serde_json::json!({ "modules": all }).to_string()
}

fn targets(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "-".to_owned();
    }
    let list: Vec<String> = entries.iter().map(Entry::target).collect();
    format!("{} ({})", entries.len(), list.join(", "))
}

pub fn render_text(all: &[ModuleStatus]) -> String {
    let mut out = String::new();
    if all.is_empty() {
        out.push_str("no modules configured\n");
    }
    for m in all {
        let _ = writeln!(out, "{}:", m.module);
        match &m.last_run {
            None => {
                let _ = writeln!(out, "  last run:  never");
            }
            Some(r) => {
                let took = humantime::format_duration(std::time::Duration::from_secs(
                    r.duration_ms / 1000,
                ));
                let _ = writeln!(out, "  last run:  {} .. {} ({took})", r.start, r.end);
                let _ = writeln!(out, "  result:    {}", r.result);
                for t in &r.runs {
                    let _ = writeln!(
                        out,
                        "  run:       {} {}: {} transferred, {} deleted, {} bytes received",
                        t.kind.as_str(),
                        t.target,
                        t.changes.transferred,
                        t.changes.deleted,
                        t.changes.bytes_received
                    );
                }
                let more = r.requests_total.saturating_sub(r.requests.len());
                let more = if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  requests:  {}{more}", r.requests.join(", "));
                let _ = writeln!(out, "  pushers:   {}", r.pushers.join(", "));
                let _ = writeln!(out, "  keys:      {}", r.keys.join(", "));
            }
        }
        if let Some(d) = &m.downstream {
            let (mirrors, ok, failed) = d.totals();
            let _ = writeln!(
                out,
                "  downstream: {} .. {}: {} push(es) to {mirrors} mirror(s), {ok} ok, {failed} failed{}",
                d.start,
                d.end,
                d.pushes.len(),
                d.pushes
                    .iter()
                    .find_map(|p| p.error.as_deref())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "  in flight: {}", targets(&m.in_flight));
        let _ = writeln!(out, "  pending:   {}", targets(&m.pending));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ModuleStatus> {
        let e = Entry {
            seq: 1,
            at: "2025-01-01T00:00:00Z".into(),
            dir: Some("a/b".into()),
            from: "10.0.0.1".into(),
            key: "master".into(),
            plain: false,
        };
        vec![
            ModuleStatus {
                module: "fedora".into(),
                last_run: Some(RunRecord {
                    start: "2025-01-01T00:00:00Z".into(),
                    end: "2025-01-01T00:01:05Z".into(),
                    duration_ms: 65_000,
                    requests: vec!["(all)".into(), "a/b".into()],
                    requests_total: 2,
                    pushers: vec!["10.0.0.1".into()],
                    keys: vec!["master".into()],
                    runs: vec![TargetRun {
                        target: "(all)".into(),
                        kind: Kind::Full,
                        ok: false,
                        rsync_exit: Some(23),
                        result: "rsync failed with exit code 23".into(),
                        changes: Changes {
                            transferred: 3,
                            deleted: 1,
                            bytes_received: 99,
                        },
                    }],
                    ok: false,
                    rsync_exit: Some(23),
                    result: "rsync failed with exit code 23".into(),
                    changes: Changes::default(),
                    trace_written: false,
                }),
                downstream: None,
                in_flight: vec![],
                pending: vec![e],
            },
            ModuleStatus {
                module: "idle".into(),
                last_run: None,
                downstream: None,
                in_flight: vec![],
                pending: vec![],
            },
        ]
    }

    #[test]
    fn text_shows_last_run_and_pending() {
        let t = render_text(&sample());
        assert!(
            t.contains(
                "fedora:\n  last run:  2025-01-01T00:00:00Z .. 2025-01-01T00:01:05Z (1m 5s)"
            ),
            "{t}"
        );
        assert!(
            t.contains("  result:    rsync failed with exit code 23\n"),
            "{t}"
        );
        assert!(t.contains("  pending:   1 (a/b)\n"), "{t}");
        assert!(
            t.contains("  run:       full (all): 3 transferred, 1 deleted, 99 bytes received\n"),
            "{t}"
        );
        assert!(t.contains("idle:\n  last run:  never\n"), "{t}");
    }

    #[test]
    fn json_has_stable_fields() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        let m = &v["modules"][0];
        assert_eq!(m["module"], "fedora");
        assert_eq!(m["last_run"]["rsync_exit"], 23);
        assert_eq!(m["last_run"]["ok"], false);
        assert_eq!(m["last_run"]["runs"][0]["kind"], "full");
        assert_eq!(m["last_run"]["runs"][0]["transferred"], 3);
        assert_eq!(m["last_run"]["runs"][0]["deleted"], 1);
        assert_eq!(m["last_run"]["runs"][0]["bytes_received"], 99);
        assert_eq!(m["pending"][0]["dir"], "a/b");
        assert!(v["modules"][1]["last_run"].is_null());
    }
}
