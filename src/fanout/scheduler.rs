//! Runs a push: stage by stage (stage N+1 starts once every stage N mirror has answered or timed
//! out; after a failure in an earlier stage it starts with a warning, or, with
//! `after_failed_stage = "hold"`, not at all), at most `concurrency` SSH sessions at once (bus
//! mirrors, which hold no connection of their own, are not counted), each bounded by its
//! mirror's own timeouts, so a dead or slow mirror never holds up the others beyond them. How a
//! mirror is reached is the target's business ([`transport`](super::transport)), not the
//! scheduler's. A mirror of a stage that has
//! later stages is expected to answer `synced` (later stages may pull from it): one that only
//! accepted the push is flagged in its report, as is one the registry marks `wait = true`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::registry::StagePolicy;
use super::report::{MirrorReport, Reporter, Summary};
use super::session;
use super::transport::Target;

/// Runs every target and reports through `reporter`. When `stop` completes (Ctrl-C), no more
/// sessions start, open ones are dropped (which closes their connections), and the summary so
/// far is returned with `interrupted` set.
pub async fn run(
    targets: Vec<Target>,
    concurrency: usize,
    after_failed_stage: StagePolicy,
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
    // (stage, mirror) of every failure so far: decides whether and how a later stage starts.
    let mut failed: Vec<(u32, String)> = Vec::new();
    'stages: for (stage, targets) in stages {
        if !failed.is_empty() {
            let why = earlier_failures(&failed);
            if after_failed_stage == StagePolicy::Hold {
                for t in &targets {
                    reporter.started();
                    reporter.finished(MirrorReport::held(
                        t,
                        format!("held back, not pushed: {why}, and after_failed_stage = \"hold\""),
                    ));
                }
                continue;
            }
            reporter.stage_warning(format!(
                "stage {stage} starts although {why}: its mirrors may pull from a mirror that \
                 does not have the content (set after_failed_stage = \"hold\" in [defaults] to \
                 start no later stage after a failure)"
            ));
        }
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
                            let r = report(&t, done.outcome, done.elapsed, done.begun);
                            if !r.ok {
                                failed.push((stage, r.mirror.clone()));
                            }
                            reporter.finished(r);
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
                            failed.push((stage, t.mirror().name.clone()));
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

/// "1 mirror of stage 1 failed (hub.example.net)", naming at most a few mirrors.
fn earlier_failures(failed: &[(u32, String)]) -> String {
    const NAMED: usize = 3;
    let mut stages: Vec<u32> = failed.iter().map(|(s, _)| *s).collect();
    stages.sort_unstable();
    stages.dedup();
    let label = if stages.len() == 1 { "stage" } else { "stages" };
    let stages = stages
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut names = failed
        .iter()
        .take(NAMED)
        .map(|(_, n)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if failed.len() > NAMED {
        names.push_str(&format!(" and {} more", failed.len() - NAMED));
    }
    let n = failed.len();
    let mirrors = if n == 1 { "mirror" } else { "mirrors" };
    format!("{n} {mirrors} of {label} {stages} failed ({names})")
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_failures_name_a_few_mirrors() {
        let one = [(1, "hub".to_owned())];
        assert_eq!(earlier_failures(&one), "1 mirror of stage 1 failed (hub)");
        let many: Vec<(u32, String)> = (0..5).map(|i| (1 + i / 3, format!("m{i}"))).collect();
        assert_eq!(
            earlier_failures(&many),
            "5 mirrors of stages 1, 2 failed (m0, m1, m2 and 2 more)"
        );
    }
}
