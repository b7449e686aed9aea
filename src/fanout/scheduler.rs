//! Runs a push: stage by stage (stage N+1 starts once every stage N mirror has answered or timed
//! out, whatever its result), at most `concurrency` SSH sessions at once (bus mirrors, which hold
//! no connection of their own, are not counted), each bounded by its mirror's own timeouts, so a
//! dead or slow mirror never holds up the others beyond them. How a mirror is reached is the
//! target's business ([`transport`](super::transport)), not the scheduler's. A mirror of a stage that has
//! later stages is expected to answer `synced` (later stages may pull from it): one that only
//! accepted the push is flagged in its report, as is one the registry marks `wait = true`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::report::{MirrorReport, Reporter, Summary};
use super::session;
use super::transport::Target;

/// Runs every target and reports through `reporter`. When `stop` completes (Ctrl-C), no more
/// sessions start, open ones are dropped (which closes their connections), and the summary so
/// far is returned with `interrupted` set.
pub async fn run(
    targets: Vec<Target>,
    concurrency: usize,
    mut reporter: Reporter,
    stop: impl Future<Output = ()>,
) -> Summary {
    let started = Instant::now();
    let mut stages: BTreeMap<u32, Vec<Target>> = BTreeMap::new();
    for t in targets {
        stages.entry(t.mirror().stage).or_default().push(t);
    }
    let last_stage = stages.keys().next_back().copied().unwrap_or(0);
    let concurrency = concurrency.max(1);
    tokio::pin!(stop);
    let mut interrupted = false;
    'stages: for (stage, targets) in stages {
        debug!(stage, mirrors = targets.len(), "stage starts");
        let later_stages = stage < last_stage;
        let report = |t: &Target, outcome: session::Outcome, elapsed: Duration, begun: Instant| {
            let mut report = MirrorReport::new(t, outcome, elapsed);
            report.started_ms = ms(begun - started);
            report.check_completion(later_stages, t.mirror().expects_synced());
            report
        };
        // Targets without a connection of their own start at once; sessions take turns.
        let (mut queue, free): (Vec<Target>, Vec<Target>) =
            targets.into_iter().partition(Target::holds_connection);
        queue.reverse();
        let mut free = free.into_iter();
        let mut set = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, (Target, Instant)> = HashMap::new();
        let mut sessions = 0;
        loop {
            loop {
                let next = match free.next() {
                    Some(t) => t,
                    None if sessions < concurrency => match queue.pop() {
                        Some(t) => {
                            sessions += 1;
                            t
                        }
                        None => break,
                    },
                    None => break,
                };
                reporter.started();
                let task = next.clone();
                // The target times itself (Done::begun): with many spawned at once, a task may
                // start a little after its spawn, and started_ms + elapsed_ms must be when its
                // answer arrived (the propagation line is built from them).
                let id = set.spawn(async move { task.push().await }).id();
                running.insert(id, (next, Instant::now()));
            }
            tokio::select! {
                joined = set.join_next_with_id() => match joined {
                    None => break,
                    Some(Ok((id, done))) => {
                        if let Some((t, _)) = running.remove(&id) {
                            sessions -= usize::from(t.holds_connection());
                            reporter.finished(report(&t, done.outcome, done.elapsed, done.begun));
                        }
                    }
                    Some(Err(e)) => {
                        // A session task panicked: report that mirror as failed, keep going.
                        warn!(error = %e, "session task failed");
                        if let Some((t, begun)) = running.remove(&e.id()) {
                            sessions -= usize::from(t.holds_connection());
                            let mut outcome = session::Outcome::default();
                            outcome.error = Some(format!("internal error: {e}"));
                            outcome.message = outcome.error.clone().unwrap_or_default();
                            reporter.finished(report(&t, outcome, begun.elapsed(), begun));
                        }
                    }
                },
                () = &mut stop => {
                    interrupted = true;
                    set.abort_all();
                    for (_, (t, begun)) in running.drain() {
                        let mut report = MirrorReport::interrupted(&t, begun.elapsed());
                        report.started_ms = ms(begun - started);
                        reporter.finished(report);
                    }
                    // Let aborted tasks unwind so their connections are dropped before we return.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while set.join_next().await.is_some() {}
                    }).await;
                    break 'stages;
                }
            }
        }
    }
    reporter.finish(interrupted, started.elapsed())
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
