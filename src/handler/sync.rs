//! Executes one batch: the targets it coalesces to (the module, or up to 64 dirs), each synced
//! inside the opened destination directory; two passes when the module has `last` patterns; the
//! trace files after a good run that covered the whole module.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant, SystemTime};

use super::config::{Config, Module};
use super::destdir;
use super::listsync;
use super::log;
use super::queue::{coalesce, Entry, ModuleDir, FULL_SYNC};
use super::rsync::{self, Changes, Invocation, Outcome, RunPlace, PGID_FILE};
use super::status::{Kind, RunRecord, TargetRun, LISTED};
use super::trace;
use crate::request::RelDir;

pub const RSYNC_LOG: &str = "rsync.log";
/// Most of a run's log read back to classify a failure.
const LOG_TAIL: u64 = 256 * 1024;

/// What every target of a batch shares: the opened dest and the batch's rsync log.
pub struct Prepared {
    pub dest: OwnedFd,
    pub log: File,
}

/// The refusal of root, in the words an admin can act on.
pub fn root_refusal(module: &str) -> String {
    format!(
        "refusing to sync as root: the mirror tree and the state files must stay owned by the mirror account; run it as that account, e.g. `runuser -u mirrorpush -- mirrorpush-handler sync {module}`"
    )
}

pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What must hold before any rsync starts.
fn prepare(cfg: &Config, m: &Module, md: &ModuleDir) -> Result<Prepared, String> {
    if running_as_root() {
        return Err(root_refusal(m.name.as_str()));
    }
    rsync::check_version(&cfg.rsync, &cfg.state_dir, true)?;
    let dest = destdir::open_dest(&m.dest).map_err(|e| format!("dest: {e}"))?;
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(md.path(RSYNC_LOG))
        .map_err(|e| format!("cannot write {RSYNC_LOG}: {e}"))?;
    Ok(Prepared { dest, log })
}

/// Runs the batch and returns its record (also for a batch that failed before rsync started).
pub fn execute(cfg: &Config, m: &Module, md: &ModuleDir, batch: &[Entry]) -> RunRecord {
    let started = SystemTime::now();
    let start = log::now();
    let clock = Instant::now();
    let mut runs = Vec::new();
    let mut trace_written = false;
    match prepare(cfg, m, md) {
        Err(msg) => runs.push(TargetRun::refused(FULL_SYNC, msg)),
        Ok(p) => {
            let targets = coalesce(batch);
            let mut rsync_time = Duration::ZERO;
            let t0 = Instant::now();
            let list = fetch_list(cfg, m, md, &p);
            // `sync --full`: a plain rsync, whose good end still moves the baseline.
            let plain = batch.iter().any(|e| e.plain);
            rsync_time += t0.elapsed();
            for target in &targets {
                let t0 = Instant::now();
                let run = match (&list, plain) {
                    (Some(Ok(())), false) => listsync::target(cfg, m, md, &p, target.as_ref()),
                    (Some(Ok(())), true) => {
                        listsync::plain_then_adopt(cfg, m, md, &p, target.as_ref())
                    }
                    (Some(Err(why)), _) => {
                        listsync::with_note(plain_target(cfg, m, md, &p, target.as_ref()), why)
                    }
                    (None, _) => plain_target(cfg, m, md, &p, target.as_ref()),
                };
                runs.push(run);
                rsync_time += t0.elapsed();
            }
            let whole = targets.iter().any(Option::is_none);
            if whole && runs.iter().all(|r| r.ok) {
                let facts = trace::RunFacts {
                    started,
                    ended: SystemTime::now(),
                    trigger: trigger(batch),
                    bytes_received: runs.iter().map(|r| r.changes.bytes_received).sum(),
                    rsync_time,
                };
                match trace::write(m, &p.dest, &facts) {
                    Ok(written) => trace_written = written,
                    Err(e) => {
                        super::runner::log_event(cfg, m, "trace-error", &e.to_string());
                    }
                }
            }
        }
    }
    record(batch, runs, start, clock.elapsed(), trace_written)
}

/// A module with a file list fetches it once per batch; `None` without one.
fn fetch_list(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    p: &Prepared,
) -> Option<Result<(), String>> {
    m.filelist.as_ref()?;
    let fetched = listsync::fetch(cfg, m, md, p);
    if let Err(e) = &fetched {
        super::runner::log_event(cfg, m, "filelist-fetch-failed", e);
    }
    Some(fetched)
}

/// ftpsync's names: `ssh` when a push asked, `cron` when only local runs (the timer) did.
fn trigger(batch: &[Entry]) -> &'static str {
    if batch.iter().any(|e| e.from != "local") {
        "ssh"
    } else {
        "cron"
    }
}

fn record(
    batch: &[Entry],
    runs: Vec<TargetRun>,
    start: String,
    took: Duration,
    trace_written: bool,
) -> RunRecord {
    let failed: Vec<&TargetRun> = runs.iter().filter(|r| !r.ok).collect();
    let result = match failed.first() {
        None => "ok".to_owned(),
        Some(f) if runs.len() == 1 => f.result.clone(),
        Some(f) => format!(
            "{} of {} runs failed; {}: {}",
            failed.len(),
            runs.len(),
            f.target,
            f.result
        ),
    };
    let uniq = |f: fn(&Entry) -> &String| -> Vec<String> {
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
        start,
        end: log::now(),
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        requests: batch.iter().take(LISTED).map(Entry::target).collect(),
        requests_total: batch.len(),
        pushers: uniq(|e| &e.from),
        keys: uniq(|e| &e.key),
        ok: failed.is_empty(),
        rsync_exit: failed.first().map_or(Some(0), |f| f.rsync_exit),
        result,
        changes,
        trace_written,
        runs,
    }
}

impl TargetRun {
    pub fn refused(target: &str, why: String) -> TargetRun {
        TargetRun {
            target: target.to_owned(),
            kind: Kind::None,
            ok: false,
            rsync_exit: None,
            result: why,
            changes: Changes::default(),
        }
    }
}

/// The handler's own files that lie inside the transfer root, as paths relative to it.
pub fn protected_within(m: &Module, dir: Option<&RelDir>) -> Vec<String> {
    m.own_files()
        .into_iter()
        .filter_map(|f| match dir {
            None => Some(f.as_str().to_owned()),
            Some(d) => f
                .as_str()
                .strip_prefix(d.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_owned),
        })
        .collect()
}

/// A plain rsync of the module or one dir, in one or two passes.
pub fn plain_target(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    p: &Prepared,
    dir: Option<&RelDir>,
) -> TargetRun {
    let name = dir.map_or(FULL_SYNC, RelDir::as_str);
    let (cwd, created) = match dir {
        None => match p.dest.try_clone() {
            Ok(fd) => (fd, Vec::new()),
            Err(e) => return TargetRun::refused(name, format!("dest: {e}")),
        },
        // Checked again here: the tree may have changed since the request was accepted.
        Some(d) => match destdir::open_dir(&p.dest, d, true) {
            Ok(o) => (o.fd, o.created),
            Err(e) => return TargetRun::refused(name, format!("refused: {e}")),
        },
    };
    let source = match dir {
        None => m.source.clone(),
        Some(d) => format!("{}{d}/", m.source),
    };
    // Two-stage: everything but `last` without deleting, then everything with deletes.
    let passes: Vec<(bool, Vec<String>)> = if m.last.is_empty() {
        vec![(true, Vec::new())]
    } else {
        vec![(false, m.last.clone()), (true, Vec::new())]
    };
    let pgid_file = md.path(PGID_FILE);
    let place = RunPlace {
        cwd: &cwd,
        log: &p.log,
        pgid_file: &pgid_file,
    };
    let mut changes = Changes::default();
    for (delete, exclude) in passes {
        let inv = Invocation {
            source: source.clone(),
            delete,
            protect: protected_within(m, dir),
            exclude,
            files_from: None,
        };
        let offset = p.log.metadata().map_or(0, |meta| meta.len());
        let (outcome, c) = rsync::run(&cfg.rsync, &rsync::args(m, &inv), &place, m.timeout);
        changes.add(c);
        if outcome == Outcome::Success {
            continue;
        }
        if let (Some(d), Outcome::Failed(23)) = (dir, &outcome) {
            if gone_upstream(&log_since(&p.log, offset), d) {
                return remove_gone(m, p, d, &created, changes);
            }
        }
        return TargetRun {
            target: name.to_owned(),
            kind: Kind::Full,
            ok: false,
            rsync_exit: outcome.exit_code(),
            result: outcome.describe(),
            changes,
        };
    }
    TargetRun {
        target: name.to_owned(),
        kind: Kind::Full,
        ok: true,
        rsync_exit: Some(0),
        result: "ok".into(),
        changes,
    }
}

/// A pushed dir that no longer exists upstream is removed here too (inside dest only, never
/// through a symlink), with the empty parents this run created for it.
fn remove_gone(
    m: &Module,
    p: &Prepared,
    d: &RelDir,
    created: &[String],
    mut changes: Changes,
) -> TargetRun {
    // The same cap as any run's deletions: an upstream that lost a mount must not empty us.
    let would = destdir::count_path(&p.dest, d.as_str().as_bytes(), m.max_delete);
    if let Ok(n) = would {
        if n > m.max_delete {
            return TargetRun {
                target: d.to_string(),
                kind: Kind::Removed,
                ok: false,
                rsync_exit: Some(23),
                result: format!(
                    "the dir is gone upstream, but removing it would delete more than max_delete ({}) entries: nothing deleted",
                    m.max_delete
                ),
                changes,
            };
        }
    }
    let removed = destdir::remove_path(&p.dest, d.as_str().as_bytes());
    destdir::remove_created(&p.dest, created);
    let created_leaf = created.last().is_some_and(|c| c == d.as_str());
    match removed {
        Ok(n) => {
            // The leaf this run created itself is not mirror content.
            let n = n - u64::from(created_leaf && n > 0);
            changes.deleted += n;
            TargetRun {
                target: d.to_string(),
                kind: Kind::Removed,
                ok: true,
                rsync_exit: None,
                result: format!("the dir is gone upstream: removed here ({n} entries)"),
                changes,
            }
        }
        Err(e) => TargetRun {
            target: d.to_string(),
            kind: Kind::Removed,
            ok: false,
            rsync_exit: None,
            result: format!("the dir is gone upstream, but removing it here failed: {e}"),
            changes,
        },
    }
}

/// The tail of rsync.log written since `offset`.
fn log_since(log: &File, offset: u64) -> String {
    let len = log.metadata().map_or(offset, |m| m.len());
    let from = offset.max(len.saturating_sub(LOG_TAIL));
    let mut buf = vec![0u8; usize::try_from(len - from.min(len)).unwrap_or(0)];
    match log.read_exact_at(&mut buf, from) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

/// Whether rsync's sender said the requested dir (or a parent) does not exist upstream:
/// `rsync: [sender] change_dir "<path>" (in <module>) failed: No such file or directory (2)`,
/// or `Not a directory (20)` when it became a file.
pub fn gone_upstream(log: &str, dir: &RelDir) -> bool {
    log.lines().any(|l| {
        let missing = l.ends_with("failed: No such file or directory (2)")
            || l.ends_with("failed: Not a directory (20)");
        let Some(rest) = l.split("change_dir \"").nth(1) else {
            return false;
        };
        let quoted = rest.split('"').next().unwrap_or("");
        let quoted = quoted.trim_end_matches('/');
        missing && (quoted == dir.as_str() || quoted.ends_with(&format!("/{dir}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_dir_gone_upstream() {
        let d = RelDir::parse("updates/40").unwrap();
        let daemon = "rsync: [sender] change_dir \"updates/40\" (in fedora) failed: No such file or directory (2)\n";
        assert!(gone_upstream(daemon, &d));
        let prefixed = "rsync: [sender] change_dir \"pub/updates/40\" (in fedora) failed: No such file or directory (2)";
        assert!(gone_upstream(prefixed, &d));
        let local =
            "rsync: [sender] change_dir \"/srv/up/updates/40\" failed: Not a directory (20)";
        assert!(gone_upstream(local, &d));
        let other = "rsync: [sender] change_dir \"updates/400\" (in fedora) failed: No such file or directory (2)";
        assert!(!gone_upstream(other, &d));
        let denied =
            "rsync: [sender] change_dir \"updates/40\" (in fedora) failed: Permission denied (13)";
        assert!(!gone_upstream(denied, &d));
    }
}
