//! Last-run records (`<state_dir>/<module>/status.json`) and the `status` command's output.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::queue::{Entry, ModuleDir};

pub const STATUS_FILE: &str = "status.json";

/// One rsync invocation within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRun {
    /// `(all)` or the dir.
    pub target: String,
    pub rsync_exit: Option<i32>,
    pub result: String,
}

/// One run of a batch: what was asked, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    /// Every request in the batch, `(all)` or a dir, in arrival order.
    pub requests: Vec<String>,
    pub pushers: Vec<String>,
    pub keys: Vec<String>,
    pub runs: Vec<TargetRun>,
    pub ok: bool,
    /// The first failing rsync exit code, else 0 (null if rsync never ran to an exit code).
    pub rsync_exit: Option<i32>,
    pub result: String,
}

pub fn read(md: &ModuleDir) -> Option<RunRecord> {
    let bytes = std::fs::read(md.path(STATUS_FILE)).ok()?;
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
                let _ = writeln!(out, "  requests:  {}", r.requests.join(", "));
                let _ = writeln!(out, "  pushers:   {}", r.pushers.join(", "));
                let _ = writeln!(out, "  keys:      {}", r.keys.join(", "));
            }
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
            at: "2025-01-01T00:00:00Z".into(),
            dir: Some("a/b".into()),
            from: "10.0.0.1".into(),
            key: "master".into(),
        };
        vec![
            ModuleStatus {
                module: "fedora".into(),
                last_run: Some(RunRecord {
                    start: "2025-01-01T00:00:00Z".into(),
                    end: "2025-01-01T00:01:05Z".into(),
                    duration_ms: 65_000,
                    requests: vec!["(all)".into(), "a/b".into()],
                    pushers: vec!["10.0.0.1".into()],
                    keys: vec!["master".into()],
                    runs: vec![TargetRun {
                        target: "(all)".into(),
                        rsync_exit: Some(23),
                        result: "rsync failed with exit code 23".into(),
                    }],
                    ok: false,
                    rsync_exit: Some(23),
                    result: "rsync failed with exit code 23".into(),
                }),
                in_flight: vec![],
                pending: vec![e],
            },
            ModuleStatus {
                module: "idle".into(),
                last_run: None,
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
        assert!(t.contains("idle:\n  last run:  never\n"), "{t}");
    }

    #[test]
    fn json_has_stable_fields() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        let m = &v["modules"][0];
        assert_eq!(m["module"], "fedora");
        assert_eq!(m["last_run"]["rsync_exit"], 23);
        assert_eq!(m["last_run"]["ok"], false);
        assert_eq!(m["pending"][0]["dir"], "a/b");
        assert!(v["modules"][1]["last_run"].is_null());
    }
}
