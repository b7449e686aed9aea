//! The `status` verb: per module the last run, a hub's last push, what is in flight and pending.

use std::fmt::Write as _;

use serde::Serialize;

use super::cli::Invocation;
use super::config;
use super::downstream;
use super::exit::{report, say, EXIT_OK};
use super::last_run::{self, RunRecord};
use super::queue::Queued;
use super::state::ModuleDir;

/// Everything `status` shows for one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatus {
    pub module: String,
    pub last_run: Option<RunRecord>,
    /// A hub's last push to its downstream mirrors.
    pub downstream: Option<downstream::PushRecord>,
    /// The batch a runner took and has not finished: running now, or interrupted and merged
    /// into the next run.
    pub in_flight: Vec<Queued>,
    pub pending: Vec<Queued>,
}

/// The `status [--json]` verb. It only reads: as root (or as anyone) it creates nothing.
pub(crate) fn command(inv: &Invocation, json: bool) -> i32 {
    let cfg = match config::load_for(&inv.config, false) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    let all: Vec<ModuleStatus> = cfg
        .modules
        .keys()
        .map(|name| {
            let md = ModuleDir::new(&cfg.state_dir, name);
            ModuleStatus {
                module: name.clone(),
                last_run: last_run::read(&md),
                downstream: downstream::read(&md),
                in_flight: md.inflight().unwrap_or_default(),
                pending: md.pending().unwrap_or_default(),
            }
        })
        .collect();
    if json {
        say(&render_json(&all));
    } else {
        say(render_text(&all).trim_end_matches('\n'));
    }
    EXIT_OK
}

pub fn render_json(all: &[ModuleStatus]) -> String {
    serde_json::json!({ "modules": all }).to_string()
}

fn targets(entries: &[Queued]) -> String {
    if entries.is_empty() {
        return "-".to_owned();
    }
    let list: Vec<String> = entries.iter().map(Queued::target).collect();
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
                    if let Some(c) = &t.rsync_command {
                        let _ = writeln!(out, "  rsync:     {c}");
                    }
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
    use crate::handler::last_run::{RunKind, TargetRun};
    use crate::handler::rsync::Changes;

    fn sample() -> Vec<ModuleStatus> {
        let e = Queued {
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
                        kind: RunKind::Plain,
                        ok: false,
                        rsync_exit: Some(23),
                        result: "rsync failed with exit code 23".into(),
                        changes: Changes {
                            transferred: 3,
                            deleted: 1,
                            bytes_received: 99,
                        },
                        rsync_command: Some(
                            "cd /srv/m && /usr/bin/rsync -rlpt -- 'rsync://h/m/' .".into(),
                        ),
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
            t.contains("  run:       full (all): 3 transferred, 1 deleted, 99 bytes received\n  rsync:     cd /srv/m && /usr/bin/rsync -rlpt -- 'rsync://h/m/' .\n"),
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
