//! Record: after every target of a batch, the trace files (after a good run that covered the
//! whole module) and the run's record, which the runner writes to status, the log and the queue's
//! results.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::{event, Context, Event};
use crate::handler::last_run::{RunRecord, TargetRun, LISTED};
use crate::handler::log;
use crate::handler::queue::Queued;
use crate::handler::rsync::Changes;
use crate::handler::trace;

/// When and how long a batch ran.
pub(crate) struct Timing {
    pub(crate) started: SystemTime,
    /// `started` as the record shows it.
    pub(crate) start: String,
    pub(crate) took: Duration,
    /// Time spent in rsync (the list fetch and every target).
    pub(crate) rsync_time: Duration,
}

/// Writes the trace and lastsync files after a good run that covered the whole module;
/// returns whether they were written. Err (naming the file) fails the run: a mirror whose
/// trace or lastsync is stale must not say `ok`.
pub(crate) fn trace(
    ctx: &Context,
    batch: &[Queued],
    runs: &[TargetRun],
    whole_module: bool,
    timing: &Timing,
    events: &mut Vec<Event>,
) -> Result<bool, String> {
    if !whole_module || !runs.iter().all(|r| r.ok) {
        return Ok(false);
    }
    let facts = trace::RunFacts {
        started: timing.started,
        ended: SystemTime::now(),
        trigger: trigger(batch),
        bytes_received: runs.iter().map(|r| r.changes.bytes_received).sum(),
        rsync_time: timing.rsync_time,
    };
    trace::write(ctx.m, &ctx.dest, &facts).map_err(|e| {
        events.push(event("trace-error", e.to_string()));
        e.to_string()
    })
}

/// ftpsync's names: `ssh` when a push asked, `cron` when only local runs (the timer) did.
fn trigger(batch: &[Queued]) -> &'static str {
    if batch.iter().any(|e| e.from != "local") {
        "ssh"
    } else {
        "cron"
    }
}

/// The batch's record: what was asked, by whom, each target's run and the totals.
/// `trace`: whether the trace files were written, or why writing them failed the run.
pub(crate) fn run_record(
    batch: &[Queued],
    runs: Vec<TargetRun>,
    timing: &Timing,
    trace: Result<bool, String>,
) -> RunRecord {
    let failed: Vec<&TargetRun> = runs.iter().filter(|r| !r.ok).collect();
    let result = match failed.first() {
        None => match &trace {
            Ok(_) => "ok".to_owned(),
            Err(why) => why.clone(),
        },
        Some(f) if runs.len() == 1 => f.result.clone(),
        Some(f) => format!(
            "{} of {} runs failed; {}: {}",
            failed.len(),
            runs.len(),
            f.target,
            f.result
        ),
    };
    let uniq = |f: fn(&Queued) -> &String| -> Vec<String> {
        batch
            .iter()
            .map(f)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(LISTED)
            .collect()
    };
    let mut changes = Changes::default();
    for r in &runs {
        changes.add(r.changes);
    }
    RunRecord {
        start: timing.start.clone(),
        end: log::now(),
        duration_ms: u64::try_from(timing.took.as_millis()).unwrap_or(u64::MAX),
        requests: batch.iter().take(LISTED).map(Queued::target).collect(),
        requests_total: batch.len(),
        pushers: uniq(|e| &e.from),
        keys: uniq(|e| &e.key),
        ok: failed.is_empty() && trace.is_ok(),
        rsync_exit: failed.first().map_or(Some(0), |f| f.rsync_exit),
        result,
        changes,
        trace_written: trace.unwrap_or(false),
        runs,
    }
}
