//! Hubs: after a run that changed something, pass the push on to this mirror's own downstream
//! mirrors with the `mirrorpush` master, as Debian's ftpsync does with `HUB=true` (runmirrors).
//!
//! The runner records the batch's result first (waiters have their answer), then starts a
//! detached pusher (hidden verb `__downstream`), so a slow or failing downstream never delays
//! this mirror's own answer nor its next sync. Pushers of one module take turns on a lock; each
//! records its result in `downstream.json` and the log. A run that changed nothing pushes
//! nothing, which also ends any cycle a misconfiguration creates (A downstream of B and B of A).

use std::io::{BufRead, BufReader, Read};
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

/// The hidden `__downstream <module> <target>...` verb: pushes and records the result.
pub fn run(cfg: &Config, module: &str, targets: &[String]) -> i32 {
    let Some(m) = cfg.modules.get(module) else {
        return EXIT_NOPERM;
    };
    let Some(registry) = &m.downstream else {
        return EXIT_CONFIG;
    };
    let md = ModuleDir::new(&cfg.state_dir, module);
    // One pusher at a time per module: a later one waits for the earlier to end.
    let lock = match md
        .open_rw(state::DOWNSTREAM_LOCK)
        .and_then(|f| f.lock().map(|()| f))
    {
        Ok(f) => f,
        Err(e) => {
            log::event(&cfg.state_dir, m, "downstream-error", &e.to_string());
            return EXIT_TEMPFAIL;
        }
    };
    let start = log::now();
    let clock = Instant::now();
    let master = master_binary(cfg);
    let pushes: Vec<Push> = targets
        .iter()
        .map(|t| {
            let dir = (t != WHOLE_MODULE).then_some(t.as_str());
            push_once(&master, registry, module, dir)
        })
        .collect();
    let record = PushRecord {
        start,
        end: log::now(),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        registry: registry.clone(),
        ok: pushes.iter().all(|p| p.exit == Some(0)),
        pushes,
    };
    drop(lock);
    let (mirrors, ok, failed) = record.totals();
    let errors: Vec<&str> = record
        .pushes
        .iter()
        .filter_map(|p| p.error.as_deref())
        .collect();
    log::event(
        &cfg.state_dir,
        m,
        if record.ok {
            "downstream-ok"
        } else {
            "downstream-failed"
        },
        &format!(
            "pushed {} to {} ({} push(es), {mirrors} mirror(s): {ok} ok, {failed} failed) in {:.1}s{}{}",
            targets.join(", "),
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
    if record.ok {
        EXIT_OK
    } else {
        EXIT_SYNC_FAILED
    }
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

/// The `summary` object of mirrorpush's JSON Lines (its last line).
fn read_summary(out: impl Read) -> Option<serde_json::Value> {
    let mut found = None;
    for line in BufReader::new(out.take(16 * 1024 * 1024)).lines() {
        let Ok(line) = line else { break };
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(s) = v.get_mut("summary") {
                found = Some(s.take());
            }
        }
    }
    found
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
