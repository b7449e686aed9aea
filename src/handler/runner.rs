//! The runner: holds a module's lock, drains its queue batch by batch, runs rsync, records
//! status. It runs detached (hidden verb `__run`) or, in wait mode, in the requester itself.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::cli::RUN_VERB;
use super::config::{Config, Module, SAFE_PATH};
use super::log;
use super::queue::{coalesce, Entry, ModuleDir, ModuleLock, FULL_SYNC};
use super::rsync::{self, PGID_FILE};
use super::status::{self, RunRecord, TargetRun};

pub const RSYNC_LOG: &str = "rsync.log";

/// Starts `current_exe --config <cfg> __run <module>` in its own session with /dev/null for
/// stdio and no other fds, so sshd neither waits for it nor kills it when the session ends.
pub fn spawn_detached(config_path: &Path, module: &str) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let config = std::path::absolute(config_path)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(config)
        .arg(RUN_VERB)
        .arg(module)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid, syscall and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // std opens its own fds close-on-exec, but fds inherited from sshd or a caller may
            // not be: mark every fd above stderr close-on-exec (CLOSE_RANGE_CLOEXEC = 4).
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) != 0 {
                for fd in 3..1024 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    // Not waited for: the requester exits at once and the runner is reparented.
    cmd.spawn().map(drop)
}

/// The hidden `__run <module>` verb. Exits quietly when another runner holds the lock: that
/// runner re-reads `pending` before it lets go, so our request is not lost.
pub fn run_detached(cfg: &Config, module: &str) -> i32 {
    let Some(m) = cfg.modules.get(module) else {
        return super::EXIT_NOPERM;
    };
    let md = match ModuleDir::create(&cfg.state_dir, module) {
        Ok(md) => md,
        Err(_) => return super::EXIT_TEMPFAIL,
    };
    match md.try_lock() {
        Ok(Some(lock)) => drain(cfg, m, &md, lock),
        Ok(None) => super::EXIT_OK,
        Err(e) => {
            runner_log(cfg, m, "lock-error", &e.to_string());
            super::EXIT_TEMPFAIL
        }
    }
}

/// Runs batches until nothing is pending, then unlocks and looks once more (closing the race
/// with a requester whose try-lock failed just before we let go).
pub fn drain(cfg: &Config, m: &Module, md: &ModuleDir, lock: ModuleLock) -> i32 {
    let mut lock = lock;
    loop {
        loop {
            match run_next(cfg, m, md) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    runner_log(cfg, m, "queue-error", &e.to_string());
                    return super::EXIT_TEMPFAIL;
                }
            }
        }
        drop(lock);
        if !md.has_pending() {
            return super::EXIT_OK;
        }
        match md.try_lock() {
            Ok(Some(l)) => lock = l,
            // Someone else holds it now and will see what is pending.
            _ => return super::EXIT_OK,
        }
    }
}

/// Takes and runs one batch; `None` when there was nothing to do. Caller holds the lock.
pub fn run_next(cfg: &Config, m: &Module, md: &ModuleDir) -> io::Result<Option<RunRecord>> {
    // A runner killed with -9 may have left rsync behind: it must be gone before we start one.
    rsync::kill_leftover(&md.path(PGID_FILE));
    let batch = md.take()?;
    if batch.is_empty() {
        return Ok(None);
    }
    let record = run_batch(cfg, m, md, &batch);
    if let Err(e) = status::write(md, &record) {
        runner_log(cfg, m, "status-error", &e.to_string());
    }
    md.finish()?;
    Ok(Some(record))
}

fn run_batch(cfg: &Config, m: &Module, md: &ModuleDir, batch: &[Entry]) -> RunRecord {
    let started = Instant::now();
    let start = log::now();
    let mut runs = Vec::new();
    match preflight(cfg, m, md) {
        Err(msg) => runs.push(TargetRun {
            target: FULL_SYNC.into(),
            rsync_exit: None,
            result: msg,
        }),
        Ok(log_file) => {
            for target in coalesce(batch) {
                let name = target
                    .as_ref()
                    .map_or_else(|| FULL_SYNC.to_owned(), |d| d.to_string());
                // Checked again here: the tree may have changed since the request was accepted.
                let refused = match &target {
                    Some(d) => match rsync::symlink_under(&m.dest, d) {
                        Ok(None) => None,
                        Ok(Some(_)) => Some("refused: the dir passes through a symlink".to_owned()),
                        Err(e) => Some(format!("refused: cannot check the dir: {e}")),
                    },
                    None => None,
                };
                let (rsync_exit, result) = match refused {
                    Some(r) => (None, r),
                    None => {
                        let args: Vec<OsString> = rsync::args(m, target.as_ref());
                        let o = rsync::run(
                            &cfg.rsync,
                            &args,
                            &log_file,
                            &md.path(PGID_FILE),
                            m.timeout,
                        );
                        (o.exit_code(), o.describe())
                    }
                };
                let ok = rsync_exit == Some(0);
                runs.push(TargetRun {
                    target: name,
                    rsync_exit,
                    result: if ok { "ok".into() } else { result },
                });
            }
        }
    }
    let failed: Vec<&TargetRun> = runs.iter().filter(|r| r.rsync_exit != Some(0)).collect();
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
            .collect()
    };
    let record = RunRecord {
        start,
        end: log::now(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        requests: batch.iter().map(Entry::target).collect(),
        pushers: uniq(|e| &e.from),
        keys: uniq(|e| &e.key),
        ok: failed.is_empty(),
        rsync_exit: failed.first().map_or(Some(0), |f| f.rsync_exit),
        runs,
        result,
    };
    let targets: Vec<&str> = record.runs.iter().map(|r| r.target.as_str()).collect();
    runner_log(
        cfg,
        m,
        if record.ok { "run-ok" } else { "run-failed" },
        &format!(
            "{} request(s), ran {}: {}",
            record.requests.len(),
            targets.join(", "),
            record.result
        ),
    );
    record
}

/// What must hold before any rsync starts; on success the (truncated) rsync log to write to.
fn preflight(cfg: &Config, m: &Module, md: &ModuleDir) -> Result<File, String> {
    if !m.dest.is_dir() {
        return Err(format!(
            "dest {} is not an existing directory",
            m.dest.display()
        ));
    }
    rsync::check_version(&cfg.rsync, &cfg.state_dir)?;
    File::create(md.path(RSYNC_LOG)).map_err(|e| format!("cannot write rsync.log: {e}"))
}

fn runner_log(cfg: &Config, m: &Module, verdict: &str, detail: &str) {
    let line = format!(
        "{} module={} verdict={verdict} detail=\"{}\"\n",
        log::now(),
        m.name,
        crate::request::escape_bytes(detail.as_bytes())
    );
    // Nobody to tell if this fails: the run's status.json still records the result.
    let _ = log::append(&cfg.state_dir, &line);
}
