//! The runner: the one executor of a module's syncs. It holds the module lock, drains the queue
//! batch by batch, drives each batch through the stages ([`super::stages`]) in one direction,
//! writes what they return (log lines, status, the batch result waiters read), then starts the
//! hub's downstream push, and unlocks when nothing is pending. It runs detached from any SSH
//! session (hidden verb `__run`), or in the foreground for a local `sync` (a systemd unit would
//! kill a detached child with its cgroup).

use std::io;
use std::time::{Instant, SystemTime};

use super::cli::RUN_VERB;
use super::config::{Config, Module};
use super::exit::{EXIT_NOPERM, EXIT_OK, EXIT_TEMPFAIL};
use super::last_run::{self, RunRecord, TargetRun};
use super::log;
use super::queue::{coalesce, BatchResult, ModuleLock, Queued, WHOLE_MODULE};
use super::stages::record::{self, Timing};
use super::stages::{decide, Decision, ListFetch};
use super::stages::{remove, settle, target_name, transfer, Context, Event};
use super::state::{self, ModuleDir};
use super::{child, downstream};
use crate::request::RelDir;

/// Starts the module's runner, detached (`<handler> --config <cfg> __run <module>`).
pub(crate) fn spawn(cfg: &Config, m: &Module) -> io::Result<()> {
    child::spawn_self(&cfg.path, &[RUN_VERB, m.name.as_str()])
}

/// The hidden `__run <module>` verb. Exits quietly when another runner holds the lock: that
/// runner re-reads `pending` before it lets go, so our request is not lost.
pub(crate) fn run_detached(cfg: &Config, module: &str) -> i32 {
    let Some(m) = cfg.modules.get(module) else {
        return EXIT_NOPERM;
    };
    let md = match ModuleDir::create(&cfg.state_dir, module) {
        Ok(md) => md,
        Err(_) => return EXIT_TEMPFAIL,
    };
    match md.try_lock() {
        Ok(Some(lock)) => drain(cfg, m, &md, lock),
        Ok(None) => EXIT_OK,
        Err(e) => {
            log::event(&cfg.state_dir, m, "lock-error", &e.to_string());
            EXIT_TEMPFAIL
        }
    }
}

/// Runs batches until nothing is pending, then unlocks and looks once more (closing the race
/// with a requester whose try-lock failed just before we let go).
pub(crate) fn drain(cfg: &Config, m: &Module, md: &ModuleDir, lock: ModuleLock) -> i32 {
    let mut lock = lock;
    loop {
        loop {
            match run_next(cfg, m, md) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    log::event(&cfg.state_dir, m, "queue-error", &e.to_string());
                    return EXIT_TEMPFAIL;
                }
            }
        }
        drop(lock);
        if !md.has_pending() {
            return EXIT_OK;
        }
        match md.try_lock() {
            Ok(Some(l)) => lock = l,
            // Someone else holds it now and will see what is pending.
            _ => return EXIT_OK,
        }
    }
}

/// Takes and runs one batch; `None` when there was nothing to do. Caller holds the lock.
fn run_next(cfg: &Config, m: &Module, md: &ModuleDir) -> io::Result<Option<RunRecord>> {
    // A runner killed with -9 may have left rsync behind: it must be gone before we start one.
    child::kill_leftover(&md.path(state::RSYNC_PGID), &cfg.rsync);
    let batch = md.take()?;
    if batch.is_empty() {
        return Ok(None);
    }
    let targets = coalesce(&batch);
    // A hub records what it means to pass on before anything is transferred: a runner killed
    // after the transfer leaves a redo that changes nothing, which must still push.
    let left = match m.downstream {
        None => Vec::new(),
        Some(_) => downstream::record_intended(md, &targets).unwrap_or_else(|e| {
            log::event(&cfg.state_dir, m, "downstream-error", &e.to_string());
            Vec::new()
        }),
    };
    let record = run_batch(cfg, m, md, &batch, &targets);
    log_run(cfg, m, &record);
    if let Err(e) = last_run::write(md, &record) {
        log::event(&cfg.state_dir, m, "status-error", &e.to_string());
    }
    let covered = BatchResult {
        seq: batch.iter().map(|e| e.seq).max().unwrap_or(0),
        ok: record.ok,
        result: record.result.clone(),
        rsync_exit: record.rsync_exit,
        end: record.end.clone(),
    };
    md.finish(&covered)?;
    // Only now, with every waiter answered: a hub passes the push on.
    downstream::pass_on(cfg, m, md, &left, &record);
    Ok(Some(record))
}

/// One batch through the stages: fetch the list, then per target decide → transfer → remove
/// → settle, then record. Returns the record also for a batch that failed before rsync started.
fn run_batch(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    batch: &[Queued],
    targets: &[Option<RelDir>],
) -> RunRecord {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut timing = Timing {
        started,
        start: log::now(),
        took: clock.elapsed(),
        rsync_time: clock.elapsed(),
    };
    let ctx = match Context::open(cfg, m, md) {
        Ok(ctx) => ctx,
        Err(why) => {
            timing.took = clock.elapsed();
            return record::run_record(
                batch,
                vec![TargetRun::refused(WHOLE_MODULE, why)],
                &timing,
                Ok(false),
            );
        }
    };
    let t0 = Instant::now();
    let list = transfer::fetch_list(&ctx);
    if let ListFetch::Failed(why) = &list {
        write_events(
            cfg,
            m,
            vec![super::stages::event("filelist-fetch-failed", why.clone())],
        );
    }
    // `sync --full`: a plain rsync even where the module has a file list.
    let plain_asked = batch.iter().any(|e| e.plain);
    timing.rsync_time += t0.elapsed();
    let mut runs = Vec::with_capacity(targets.len());
    for target in targets {
        let t0 = Instant::now();
        let dir = target.as_ref();
        let mut events = Vec::new();
        let decision = decide::target(&ctx, dir, &list, plain_asked, &mut events);
        let run = match &decision {
            Decision::Null => TargetRun::null(target_name(dir)),
            Decision::Refused(why) => TargetRun::failed(
                target_name(dir),
                last_run::RunKind::Filelist,
                None,
                why.clone(),
                Default::default(),
            ),
            Decision::Listed { transfer: planned } => match transfer::listed(&ctx, dir, *planned) {
                run if run.ok => remove::listed(&ctx, run),
                run => run,
            },
            Decision::Plain { note, .. } => {
                let run = match transfer::plain(&ctx, dir) {
                    transfer::Plain::Ended(run) => run,
                    transfer::Plain::GoneUpstream {
                        dir,
                        created,
                        changes,
                    } => remove::gone_upstream(&ctx, &dir, &created, changes),
                };
                match note {
                    Some(n) => run.with_note(n),
                    None => run,
                }
            }
        };
        let mut run = run;
        if let Err(why) = settle::target(&ctx, dir, &decision, &run, &mut events) {
            if run.ok {
                run.ok = false;
                run.result = why;
            }
        }
        write_events(cfg, m, events);
        runs.push(run);
        timing.rsync_time += t0.elapsed();
    }
    let mut events = Vec::new();
    let whole = targets.iter().any(Option::is_none);
    let trace = record::trace(&ctx, batch, &runs, whole, &timing, &mut events);
    write_events(cfg, m, events);
    timing.took = clock.elapsed();
    record::run_record(batch, runs, &timing, trace)
}

/// The stages' events, in the order they happened, as `handler.log` lines.
fn write_events(cfg: &Config, m: &Module, events: Vec<Event>) {
    for e in events {
        log::event(&cfg.state_dir, m, e.verdict, &e.detail);
    }
}

fn log_run(cfg: &Config, m: &Module, record: &RunRecord) {
    let runs: Vec<String> = record
        .runs
        .iter()
        .map(|r| {
            format!(
                "{} {} (+{} -{})",
                r.kind.as_str(),
                r.target,
                r.changes.transferred,
                r.changes.deleted
            )
        })
        .collect();
    log::event(
        &cfg.state_dir,
        m,
        if record.ok { "run-ok" } else { "run-failed" },
        &format!(
            "{} request(s), ran {}; {} bytes received: {}",
            record.requests_total,
            runs.join(", "),
            record.changes.bytes_received,
            record.result
        ),
    );
}
