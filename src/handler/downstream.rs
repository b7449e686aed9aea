//! Hubs: after a run that changed something, pass the push on to this mirror's own downstream
//! mirrors with the `mirrorpush` master, as Debian's ftpsync does with `HUB=true` (runmirrors).
//!
//! The runner records the batch's result first (waiters have their answer), then starts a
//! detached pusher (hidden verb `__downstream`), so a slow or failing downstream never delays
//! this mirror's own answer nor its next sync. A run that changed nothing pushes nothing, which
//! also ends any cycle a misconfiguration creates (A downstream of B and B of A).
//!
//! Pushers of one module, under `<state_dir>/<module>/` (files named in [`super::state`]):
//! - `downstream.pending`: the targets queued for a pusher, one per line, merged (a full push
//!   swallows dirs, more than [`MAX_DIR_PUSHES`] dirs become one full push). Every pusher first
//!   adds its own targets here.
//! - `downstream.lock`: held by the one pusher that pushes. It takes everything pending, pushes
//!   it in one round, and looks again before it lets go: targets queued meanwhile go out in
//!   its next round.
//! - `downstream.wait`: held by the one pusher waiting for `downstream.lock`. A pusher that
//!   finds it taken leaves at once: its targets are queued, and the waiter takes them when its
//!   turn comes (it queued its own before it took this lock, and takes the queue only after it
//!   holds `downstream.lock`). So a stalled downstream holds at most two pushers per module,
//!   however many pushes reach the hub meanwhile, and each target is pushed after the run
//!   that queued it. (A pusher whose targets cannot be queued, on a full disk, waits its turn
//!   anyway and pushes them itself.)
//! - `downstream.intended`: the targets of a batch, recorded before its transfer
//!   ([`record_intended`]) and moved to the queue after it ([`pass_on`]): a runner killed
//!   between the two leaves them there, and the next batch pushes them even when it changes
//!   nothing itself.
//! - `downstream.queue.lock`: a short lock around every change to the two target files.

use std::fs::TryLockError;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child;
use super::cli::DOWNSTREAM_VERB;
use super::config::{Config, Module};
use super::exit::{EXIT_CONFIG, EXIT_NOPERM, EXIT_OK, EXIT_SYNC_FAILED, EXIT_TEMPFAIL};
use super::last_run::RunRecord;
use super::log;
use super::queue::WHOLE_MODULE;
use super::state::{self, read_state_file, ModuleDir};
use crate::request::RelDir;

/// More changed dirs than this are passed on as one full push.
pub const MAX_DIR_PUSHES: usize = 8;
/// The longest line of mirrorpush's JSON Lines kept for parsing: a summary is a few hundred
/// bytes; longer lines (a hostile mirror's output, escaped) are skipped, never buffered whole.
const MAX_JSON_LINE: usize = 1024 * 1024;
/// A safety bound on one push: the registry's own timeouts normally end it far sooner.
const PUSH_WALL_CLOCK: Duration = Duration::from_secs(6 * 3600);

/// One `mirrorpush push` to the downstream registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// `(all)` or the dir.
    pub target: String,
    /// mirrorpush's exit code (0 all ok, 1 some mirror failed, 2 usage/config error).
    pub exit: Option<i32>,
    pub mirrors: u64,
    pub ok: u64,
    pub failed: u64,
    /// mirrorpush's `{"summary": ...}` object, as it printed it.
    pub summary: Option<serde_json::Value>,
    /// Its first error line, when it failed before pushing.
    pub error: Option<String>,
}

/// The last downstream push of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    pub registry: PathBuf,
    pub pushes: Vec<Push>,
    pub ok: bool,
}

impl PushRecord {
    /// Over every push: mirrors selected, ok, failed.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.pushes.iter().fold((0, 0, 0), |(a, b, c), p| {
            (a + p.mirrors, b + p.ok, c + p.failed)
        })
    }
}

pub fn read(md: &ModuleDir) -> Option<PushRecord> {
    let bytes = read_state_file(&md.path(state::DOWNSTREAM)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `mirrorpush` a hub runs: the config's, else the one beside the handler's own binary
/// (one package installs both).
pub fn master_binary(cfg: &Config) -> PathBuf {
    cfg.mirrorpush.clone().unwrap_or_else(|| {
        child::self_exe()
            .parent()
            .map_or_else(|| PathBuf::from("/usr/bin"), Path::to_path_buf)
            .join("mirrorpush")
    })
}

/// What to pass on after a batch: `None` when nothing is to be pushed (no downstream, the run
/// failed, or it changed nothing); else the targets, `[None]` for the whole module.
pub fn targets(m: &Module, record: &RunRecord) -> Option<Vec<Option<RelDir>>> {
    m.downstream.as_ref()?;
    if !record.ok || !record.changes.changed_anything() {
        return None;
    }
    let changed: Vec<&str> = record
        .runs
        .iter()
        .filter(|r| r.changes.changed_anything())
        .map(|r| r.target.as_str())
        .collect();
    let dirs: Option<Vec<RelDir>> = changed.iter().map(|t| RelDir::parse(t).ok()).collect();
    Some(match dirs {
        Some(d) if !d.is_empty() && d.len() <= MAX_DIR_PUSHES => d.into_iter().map(Some).collect(),
        _ => vec![None],
    })
}

/// Starts the detached pusher for `targets` (called by the runner after a batch).
pub fn spawn(cfg: &Config, m: &Module, targets: &[Option<RelDir>]) {
    let mut args = vec![DOWNSTREAM_VERB, m.name.as_str()];
    args.extend(
        targets
            .iter()
            .map(|t| t.as_ref().map_or(WHOLE_MODULE, RelDir::as_str)),
    );
    if let Err(e) = child::spawn_self(&cfg.path, &args) {
        log::event(
            &cfg.state_dir,
            m,
            "downstream-error",
            &format!("cannot start the push: {e}"),
        );
    }
}

/// The hidden `__downstream <module> <target>...` verb: queues the targets, then pushes what
/// is queued (or leaves that to the pusher already waiting), recording each round.
pub fn run(cfg: &Config, module: &str, targets: &[String]) -> i32 {
    let Some(m) = cfg.modules.get(module) else {
        return EXIT_NOPERM;
    };
    let Some(registry) = &m.downstream else {
        return EXIT_CONFIG;
    };
    let md = ModuleDir::new(&cfg.state_dir, module);
    let parsed: Vec<Option<RelDir>> = targets.iter().filter_map(|t| parse_target(t)).collect();
    // Targets that cannot be queued (a full disk) are not left to a waiter: this pusher
    // waits its turn whatever the waiters, and pushes them itself.
    let mut own = Vec::new();
    if let Err(e) = queue(&md, &parsed) {
        log::event(
            &cfg.state_dir,
            m,
            "downstream-error",
            &format!("cannot queue the targets ({e}): this pusher pushes them itself"),
        );
        own = parsed;
    }
    let lock = match wait_turn(&md, !own.is_empty()) {
        Ok(Some(lock)) => lock,
        // Another pusher waits: it pushes our targets with its own.
        Ok(None) => return EXIT_OK,
        Err(e) => {
            log::event(&cfg.state_dir, m, "downstream-error", &e.to_string());
            return EXIT_TEMPFAIL;
        }
    };
    let mut all_ok = true;
    loop {
        let queued = take(&md, state::DOWNSTREAM_PENDING).unwrap_or_else(|e| {
            log::event(&cfg.state_dir, m, "downstream-error", &e.to_string());
            all_ok = false;
            Vec::new()
        });
        let round = merge(&queued, &std::mem::take(&mut own));
        if round.is_empty() {
            break;
        }
        all_ok &= push_round(cfg, m, &md, registry, &round);
    }
    drop(lock);
    if all_ok {
        EXIT_OK
    } else {
        EXIT_SYNC_FAILED
    }
}

/// Becomes the pusher that pushes (`Some`, holding `downstream.lock`), after waiting for the
/// one pushing now; `None` when another pusher already waits (unless `must_wait`: this one
/// holds targets no queue has).
fn wait_turn(md: &ModuleDir, must_wait: bool) -> io::Result<Option<std::fs::File>> {
    let wait = md.open_rw(state::DOWNSTREAM_WAIT)?;
    let waiting = match wait.try_lock() {
        Ok(()) => Some(wait),
        Err(TryLockError::WouldBlock) if must_wait => None,
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(e),
    };
    let push = md.open_rw(state::DOWNSTREAM_LOCK)?;
    push.lock()?;
    // Our turn: the next pusher to come may wait now.
    drop(waiting);
    Ok(Some(push))
}

/// One round: pushes each target, records the result in `downstream.json` and the log.
fn push_round(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    registry: &Path,
    targets: &[Option<RelDir>],
) -> bool {
    let start = log::now();
    let clock = Instant::now();
    let master = master_binary(cfg);
    let pushes: Vec<Push> = targets
        .iter()
        .map(|t| {
            push_once(
                &master,
                registry,
                m.name.as_str(),
                t.as_ref().map(RelDir::as_str),
            )
        })
        .collect();
    let record = PushRecord {
        start,
        end: log::now(),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        registry: registry.to_owned(),
        ok: pushes.iter().all(|p| p.exit == Some(0)),
        pushes,
    };
    let (mirrors, ok, failed) = record.totals();
    let errors: Vec<&str> = record
        .pushes
        .iter()
        .filter_map(|p| p.error.as_deref())
        .collect();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t.as_ref().map_or(WHOLE_MODULE, RelDir::as_str))
        .collect();
    log::event(&cfg.state_dir,
        m,
        if record.ok {
            "downstream-ok"
        } else {
            "downstream-failed"
        },
        &format!(
            "pushed {} to {} ({} push(es), {mirrors} mirror(s): {ok} ok, {failed} failed) in {:.1}s{}{}",
            names.join(", "),
            registry.display(),
            record.pushes.len(),
            record.duration_ms as f64 / 1000.0,
            if errors.is_empty() { "" } else { ": " },
            errors.join("; ")
        ),
    );
    match serde_json::to_vec_pretty(&record) {
        Ok(bytes) => {
            if let Err(e) = state::write(&md.path(state::DOWNSTREAM), &bytes) {
                log::event(&cfg.state_dir, m, "status-error", &e.to_string());
            }
        }
        Err(e) => log::event(&cfg.state_dir, m, "status-error", &e.to_string()),
    }
    record.ok
}

/// Before a batch's transfer (the caller holds the module lock): adds the batch's targets to
/// the record of intended downstream pushes. Returns the targets a killed runner left there,
/// which [`pass_on`] pushes after this batch even if it changes nothing.
pub fn record_intended(
    md: &ModuleDir,
    targets: &[Option<RelDir>],
) -> io::Result<Vec<Option<RelDir>>> {
    let _guard = queue_lock(md)?;
    let left = read_targets(md, state::DOWNSTREAM_INTENDED)?;
    write_targets(md, state::DOWNSTREAM_INTENDED, &merge(&left, targets))?;
    Ok(left)
}

/// After a batch (the caller holds the module lock, every waiter has its answer): a good batch
/// passes on what it changed and what a killed runner intended (`left`, from
/// [`record_intended`]), and a pusher starts for whatever is queued. A failed batch keeps the
/// record for the next one.
pub fn pass_on(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    left: &[Option<RelDir>],
    record: &RunRecord,
) {
    if m.downstream.is_none() || !record.ok {
        return;
    }
    let changed = targets(m, record).unwrap_or_default();
    match hand_over(md, &changed, left) {
        Ok(queued) if !queued.is_empty() => spawn(cfg, m, &queued),
        Ok(_) => {}
        Err(e) => log::event(&cfg.state_dir, m, "downstream-error", &e.to_string()),
    }
}

/// Queues `changed` and `left` for the pushers, then clears the record of intended pushes;
/// returns everything queued (which includes what a runner killed before it started a pusher
/// left in the queue). The record is cleared only once its targets are queued: a kill in
/// between pushes them twice, never not at all.
fn hand_over(
    md: &ModuleDir,
    changed: &[Option<RelDir>],
    left: &[Option<RelDir>],
) -> io::Result<Vec<Option<RelDir>>> {
    let _guard = queue_lock(md)?;
    let wanted = merge(changed, left);
    let pending = read_targets(md, state::DOWNSTREAM_PENDING)?;
    let all = merge(&pending, &wanted);
    if all != pending {
        write_targets(md, state::DOWNSTREAM_PENDING, &all)?;
    }
    remove(md, state::DOWNSTREAM_INTENDED)?;
    Ok(all)
}

/// Adds `targets` to the pushers' queue.
fn queue(md: &ModuleDir, targets: &[Option<RelDir>]) -> io::Result<()> {
    let _guard = queue_lock(md)?;
    let pending = read_targets(md, state::DOWNSTREAM_PENDING)?;
    let all = merge(&pending, targets);
    if all != pending {
        write_targets(md, state::DOWNSTREAM_PENDING, &all)?;
    }
    Ok(())
}

/// Takes (reads and empties) one of the target files.
fn take(md: &ModuleDir, name: &str) -> io::Result<Vec<Option<RelDir>>> {
    let _guard = queue_lock(md)?;
    let targets = read_targets(md, name)?;
    if !targets.is_empty() {
        remove(md, name)?;
    }
    Ok(targets)
}

fn queue_lock(md: &ModuleDir) -> io::Result<std::fs::File> {
    let f = md.open_rw(state::DOWNSTREAM_QUEUE_LOCK)?;
    f.lock()?;
    Ok(f)
}

fn remove(md: &ModuleDir, name: &str) -> io::Result<()> {
    match std::fs::remove_file(md.path(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `(all)` or a dir; anything else (a damaged file) is dropped.
fn parse_target(t: &str) -> Option<Option<RelDir>> {
    if t == WHOLE_MODULE {
        return Some(None);
    }
    RelDir::parse(t).ok().map(Some)
}

fn read_targets(md: &ModuleDir, name: &str) -> io::Result<Vec<Option<RelDir>>> {
    let bytes = read_state_file(&md.path(name))?;
    let parsed: Vec<Option<RelDir>> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(parse_target)
        .collect();
    Ok(merge(&parsed, &[]))
}

fn write_targets(md: &ModuleDir, name: &str, targets: &[Option<RelDir>]) -> io::Result<()> {
    let mut text = String::new();
    for t in targets {
        text.push_str(t.as_ref().map_or(WHOLE_MODULE, RelDir::as_str));
        text.push('\n');
    }
    state::write(&md.path(name), text.as_bytes())
}

/// The union of two target sets, in one canonical form: `[None]` when either holds the full
/// module (or more than [`MAX_DIR_PUSHES`] dirs remain), else the dirs not inside another,
/// each once, sorted by component.
fn merge(a: &[Option<RelDir>], b: &[Option<RelDir>]) -> Vec<Option<RelDir>> {
    let mut dirs = Vec::new();
    for t in a.iter().chain(b) {
        match t {
            None => return vec![None],
            Some(d) => dirs.push(d.clone()),
        }
    }
    dirs.sort_by(|x, y| x.components().cmp(y.components()));
    let mut keep: Vec<RelDir> = Vec::new();
    for d in dirs {
        if keep.last().is_some_and(|k| d.is_within(k)) {
            continue;
        }
        keep.push(d);
    }
    if keep.len() > MAX_DIR_PUSHES {
        return vec![None];
    }
    keep.into_iter().map(Some).collect()
}

/// `mirrorpush --registry R push --json <module> [dir]`, read back from its JSON Lines.
fn push_once(master: &Path, registry: &Path, module: &str, dir: Option<&str>) -> Push {
    let target = dir.unwrap_or(WHOLE_MODULE).to_owned();
    let mut cmd = Command::new(master);
    cmd.arg("--registry")
        .arg(registry)
        .args(["push", "--json", module])
        .args(dir);
    child::scrubbed(&mut cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let failed = |error: String| Push {
        target: target.clone(),
        exit: None,
        mirrors: 0,
        ok: 0,
        failed: 0,
        summary: None,
        error: Some(error),
    };
    let mut running = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run {}: {e}", master.display())),
    };
    let out = running.stdout.take();
    let summary = std::thread::spawn(move || out.and_then(read_summary));
    let stderr = child::read_capped(running.stderr.take(), 64 * 1024);
    let status = match child::wait_bounded(running, PUSH_WALL_CLOCK, Duration::ZERO) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return failed(format!("waiting for mirrorpush: {e}")),
        None => return failed("mirrorpush did not end within 6h and was killed".into()),
    };
    let summary = summary.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let count = |key: &str| {
        summary
            .as_ref()
            .and_then(|s| s.get(key))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let error = stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .map(|l| crate::request::escape_bytes(l.as_bytes()));
    Push {
        target,
        exit: status.code(),
        mirrors: count("selected"),
        ok: count("ok"),
        failed: count("failed"),
        summary,
        error,
    }
}

/// The `summary` object of mirrorpush's JSON Lines: its last line. Read to the end however
/// much the mirrors made it print (the pipe must not fill, and the summary comes last), one
/// line at a time, each line past [`MAX_JSON_LINE`] skipped unparsed.
fn read_summary(out: impl Read) -> Option<serde_json::Value> {
    let mut found = None;
    let mut reader = BufReader::new(out);
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) => break,
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (part, ends) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !overlong && line.len() + part.len() <= MAX_JSON_LINE {
            line.extend_from_slice(part);
        } else {
            overlong = true;
            line.clear();
        }
        let used = ends.unwrap_or(chunk.len());
        reader.consume(used);
        if ends.is_some() {
            if !overlong {
                if let Some(s) = summary_of(&line) {
                    found = Some(s);
                }
            }
            line.clear();
            overlong = false;
        }
    }
    if !overlong {
        if let Some(s) = summary_of(&line) {
            found = Some(s);
        }
    }
    found
}

fn summary_of(line: &[u8]) -> Option<serde_json::Value> {
    let mut v = serde_json::from_slice::<serde_json::Value>(line).ok()?;
    v.get_mut("summary").map(serde_json::Value::take)
}

/// For `check`: the downstream registry passes `mirrorpush check`.
pub fn check(cfg: &Config, m: &Module) -> Result<(), String> {
    let Some(registry) = &m.downstream else {
        return Ok(());
    };
    let master = master_binary(cfg);
    if !master.is_file() {
        return Err(format!(
            "module '{}' is a hub (downstream) but {} is missing: install the mirrorpush package, or set `mirrorpush` in the config",
            m.name,
            master.display()
        ));
    }
    let mut cmd = Command::new(&master);
    cmd.arg("--registry").arg(registry).arg("check");
    let out = child::scrubbed(&mut cmd)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", master.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let said: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("problem:") || l.starts_with("error:"))
        .map(|l| crate::request::escape_bytes(l.as_bytes()))
        .collect();
    Err(format!(
        "module '{}': downstream registry {} fails `mirrorpush check`: {}",
        m.name,
        registry.display(),
        if said.is_empty() {
            format!("exit {}", out.status.code().unwrap_or(-1))
        } else {
            said.join("; ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(names: &[&str]) -> Vec<Option<RelDir>> {
        names.iter().filter_map(|n| parse_target(n)).collect()
    }

    fn md() -> (tempfile::TempDir, ModuleDir) {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        (tmp, md)
    }

    #[test]
    fn targets_merge_into_one_canonical_set() {
        assert_eq!(merge(&t(&["b", "a/x"]), &t(&["a", "b"])), t(&["a", "b"]));
        assert_eq!(merge(&t(&["a"]), &t(&["(all)"])), t(&["(all)"]));
        assert_eq!(merge(&[], &[]), t(&[]));
        let nine: Vec<String> = (0..=MAX_DIR_PUSHES).map(|i| format!("d{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert_eq!(merge(&t(&nine), &[]), t(&["(all)"]));
        // A damaged line is dropped, never pushed.
        assert_eq!(t(&["../x", "a//b", "ok"]), t(&["ok"]));
    }

    /// Issue 16 item 2: pushers queue their targets; only one waits; the one pushing takes
    /// everything queued.
    #[test]
    fn queued_targets_are_taken_once_and_together() {
        let (_t, md) = md();
        queue(&md, &t(&["a"])).unwrap();
        queue(&md, &t(&["b/c"])).unwrap();
        queue(&md, &t(&["a", "b"])).unwrap();
        assert_eq!(
            take(&md, state::DOWNSTREAM_PENDING).unwrap(),
            t(&["a", "b"])
        );
        assert!(take(&md, state::DOWNSTREAM_PENDING).unwrap().is_empty());
        // The first pusher's turn comes at once; a second waits (here: would block, so it is
        // tried on a thread that is released when the first lets go); a third leaves.
        let first = wait_turn(&md, false).unwrap().expect("first pusher pushes");
        let md2 = md.clone();
        let second = std::thread::spawn(move || wait_turn(&md2, false).unwrap().is_some());
        // Wait until the second holds the waiter's lock.
        let probe = md.open_rw(state::DOWNSTREAM_WAIT).unwrap();
        while probe.try_lock().is_ok() {
            probe.unlock().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            wait_turn(&md, false).unwrap().is_none(),
            "a third pusher waited"
        );
        // One whose targets could not be queued waits anyway, after the waiter.
        let md3 = md.clone();
        let must = std::thread::spawn(move || wait_turn(&md3, true).unwrap().is_some());
        drop(first);
        assert!(second.join().unwrap(), "the waiting pusher got its turn");
        assert!(
            must.join().unwrap(),
            "a pusher with unqueued targets got its turn"
        );
    }

    /// Issue 16 item 3: intended targets survive a runner killed after its transfer and are
    /// passed on after the next batch, with what that batch changed; the record is cleared
    /// only once they are queued.
    #[test]
    fn intended_targets_outlive_a_killed_runner() {
        let (_t, md) = md();
        // Batch 1 records its targets, then its runner is killed (no hand-over).
        assert!(record_intended(&md, &t(&["updates"])).unwrap().is_empty());
        // Batch 2 (the redone batch) finds them.
        let left = record_intended(&md, &t(&["releases"])).unwrap();
        assert_eq!(left, t(&["updates"]));
        // It changed nothing itself: the killed batch's targets are still pushed.
        assert_eq!(hand_over(&md, &[], &left).unwrap(), t(&["updates"]));
        assert!(read_targets(&md, state::DOWNSTREAM_INTENDED)
            .unwrap()
            .is_empty());
        assert_eq!(
            read_targets(&md, state::DOWNSTREAM_PENDING).unwrap(),
            t(&["updates"])
        );
        // A runner killed after the hand-over, before it started a pusher: the next hand-over
        // returns the queue, so a pusher starts for it.
        assert!(record_intended(&md, &t(&["x"])).unwrap().is_empty());
        assert_eq!(hand_over(&md, &[], &[]).unwrap(), t(&["updates"]));
        assert_eq!(
            hand_over(&md, &t(&["y"]), &[]).unwrap(),
            t(&["updates", "y"])
        );
    }

    /// A local user (or a compromised account) racing the state dir: the pushers' files are
    /// never followed through a symlink, a FIFO never blocks them, a hard link is replaced
    /// rather than written through, and damaged lines are dropped.
    #[test]
    fn planted_downstream_files_are_neither_followed_nor_trusted() {
        let (tmp, md) = md();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, md.path(state::DOWNSTREAM_PENDING)).unwrap();
        assert!(queue(&md, &t(&["a"])).is_err());
        assert!(take(&md, state::DOWNSTREAM_PENDING).is_err());
        std::fs::remove_file(md.path(state::DOWNSTREAM_PENDING)).unwrap();
        let _ = std::fs::remove_file(md.path(state::DOWNSTREAM_QUEUE_LOCK));
        std::os::unix::fs::symlink(&victim, md.path(state::DOWNSTREAM_QUEUE_LOCK)).unwrap();
        assert!(queue(&md, &t(&["a"])).is_err());
        std::fs::remove_file(md.path(state::DOWNSTREAM_QUEUE_LOCK)).unwrap();
        std::os::unix::fs::symlink(&victim, md.path(state::DOWNSTREAM_WAIT)).unwrap();
        assert!(wait_turn(&md, false).is_err());
        std::fs::remove_file(md.path(state::DOWNSTREAM_WAIT)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");

        let fifo = std::ffi::CString::new(
            md.path(state::DOWNSTREAM_INTENDED)
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(record_intended(&md, &t(&["a"])).is_err(), "a FIFO was read");
        std::fs::remove_file(md.path(state::DOWNSTREAM_INTENDED)).unwrap();

        std::fs::hard_link(&victim, md.path(state::DOWNSTREAM_PENDING)).unwrap();
        queue(&md, &t(&["a"])).unwrap();
        // Its lines are read like any queue's (each a valid target, or dropped); the linked
        // file itself is never written.
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
        assert_eq!(
            take(&md, state::DOWNSTREAM_PENDING).unwrap(),
            t(&["a", "keep"])
        );

        std::fs::write(
            md.path(state::DOWNSTREAM_PENDING),
            "../../etc\n/abs\n-rf\na\\b\nok\x01\n\u{1b}[31m\nreal\n",
        )
        .unwrap();
        assert_eq!(take(&md, state::DOWNSTREAM_PENDING).unwrap(), t(&["real"]));
    }

    /// Issue 16 item 9: the summary is the last line however much comes before it, and a line
    /// too long to parse is skipped without being held whole.
    #[test]
    fn the_summary_is_found_after_any_amount_of_output() {
        let summary = br#"{"summary":{"selected":16,"ok":0,"failed":16}}"#;
        let mut out = Vec::new();
        let junk = format!(
            "{{\"mirror\":\"m\",\"output\":\"{}\"}}\n",
            "\\\\u0001".repeat(16 * 1024)
        );
        while out.len() < 17 * 1024 * 1024 {
            out.extend_from_slice(junk.as_bytes());
        }
        // An early summary-like line is replaced by the last one.
        out.extend_from_slice(b"{\"summary\":{\"selected\":1}}\n");
        out.extend_from_slice(&vec![b'x'; MAX_JSON_LINE + 10]);
        out.push(b'\n');
        out.extend_from_slice(summary);
        out.push(b'\n');
        let s = read_summary(&out[..]).expect("summary found");
        assert_eq!(
            (s["selected"].as_u64(), s["failed"].as_u64()),
            (Some(16), Some(16))
        );
        // Without a final newline too; an overlong last line yields the one before it.
        let s = read_summary(&summary[..]).unwrap();
        assert_eq!(s["failed"], 16);
        let mut tail = summary.to_vec();
        tail.push(b'\n');
        tail.extend_from_slice(&vec![b'{'; MAX_JSON_LINE + 1]);
        assert_eq!(read_summary(&tail[..]).unwrap()["failed"], 16);
    }
}
