//! The runner: the one executor of a module's syncs. It holds the module lock, drains the queue
//! batch by batch (each batch executed by [`super::sync`]), records every batch's result for
//! waiters and status, and unlocks when nothing is pending. It runs detached from any SSH
//! session (hidden verb `__run`), or in the foreground for a local `sync` (a systemd unit would
//! kill a detached child with its cgroup).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cli::RUN_VERB;
use super::config::{Config, Module, SAFE_PATH};
use super::downstream;
use super::log;
use super::queue::{BatchResult, ModuleDir, ModuleLock};
use super::rsync::{self, PGID_FILE};
use super::status::{self, RunRecord};
use super::sync;

/// The handler binary to start runners with. After a package upgrade replaced the binary
/// while this process ran, `/proc/self/exe` names a deleted file (`... (deleted)`): the new
/// binary at the same path is used then, so requests queued across an upgrade still run.
pub fn self_exe() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    let Ok(link) = std::fs::read_link(&proc_exe) else {
        return proc_exe;
    };
    match link.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        None => link,
        Some(path) => {
            let replaced = PathBuf::from(OsStr::from_bytes(path));
            if replaced.is_file() {
                replaced
            } else {
                // Removed, not replaced: the running image can still be executed.
                proc_exe
            }
        }
    }
}

/// Starts `<handler> --config <cfg> __run <module>`, detached.
pub fn spawn_detached(config_path: &Path, module: &str) -> io::Result<()> {
    let config = std::path::absolute(config_path)?;
    let mut cmd = Command::new(self_exe());
    cmd.arg("--config").arg(config).arg(RUN_VERB).arg(module);
    // Not waited for: the requester goes on and the runner is reparented when it exits.
    detach(&mut cmd).spawn().map(drop)
}

/// Sets `cmd` up to run in its own session with a scrubbed environment, /dev/null for stdio
/// and no other fds, so sshd neither waits for it nor kills it when the session ends.
pub fn detach(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
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
    cmd
}

/// The hidden `__run <module>` verb. Exits quietly when another runner holds the lock: that
/// runner re-reads `pending` before it lets go, so our request is not lost.
pub fn run_detached(cfg: &Config, module: &str) -> i32 {
    let Some(m) = cfg.modules.get(module) else {
        return super::EXIT_NOPERM;
    };
    if sync::running_as_root() {
        return super::EXIT_NOPERM;
    }
    let md = match ModuleDir::create(&cfg.state_dir, module) {
        Ok(md) => md,
        Err(_) => return super::EXIT_TEMPFAIL,
    };
    match md.try_lock() {
        Ok(Some(lock)) => drain(cfg, m, &md, lock),
        Ok(None) => super::EXIT_OK,
        Err(e) => {
            log_event(cfg, m, "lock-error", &e.to_string());
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
                    log_event(cfg, m, "queue-error", &e.to_string());
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
    rsync::kill_leftover(&md.path(PGID_FILE), &cfg.rsync);
    let batch = md.take()?;
    if batch.is_empty() {
        return Ok(None);
    }
    let record = sync::execute(cfg, m, md, &batch);
    log_run(cfg, m, &record);
    if let Err(e) = status::write(md, &record) {
        log_event(cfg, m, "status-error", &e.to_string());
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
    if let Some(targets) = downstream::targets(m, &record) {
        downstream::spawn(cfg, m, &targets);
    }
    Ok(Some(record))
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
    log_event(
        cfg,
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

/// One line in handler.log about the module (not about a request).
pub fn log_event(cfg: &Config, m: &Module, verdict: &str, detail: &str) {
    let line = format!(
        "{} module={} verdict={verdict} detail=\"{}\"\n",
        log::now(),
        m.name,
        log::field(detail.as_bytes())
    );
    // Nobody to tell if this fails: the run's status.json still records the result.
    let _ = log::append(&cfg.state_dir, &line);
}
