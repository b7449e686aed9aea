//! The stranger path: what happens to a request from sshd's exec to the answer, read top-down.
//!
//! 1. **parse**: the one grammar ([`crate::request`]) refuses anything but `sync <module> [dir]`.
//! 2. **admit**: the module is configured, dirs are allowed for it, the dir holds no symlink
//!    under `dest`, rsync is new enough.
//! 3. **enqueue**: the request is appended to the module's queue, then the module lock is tried
//!    (this order loses nothing: see [`super::queue`]).
//! 4. **answer or wait**: `detach` answers at once (`accepted` when this request starts the
//!    runner, `queued` when one runs); `wait` (and every local `sync` but `sync --by-mode` of a
//!    `detach` module) waits for the run that covers the request and answers `synced` or the
//!    failure.
//!
//! Every accepted and refused request leaves one line in `handler.log`, client text escaped.
//! Nothing the client sends reaches rsync's argv but the validated module and dir, and nothing
//! here runs a sync over SSH: the module's runner does, detached, so a master that hangs up never
//! cuts a sync short. A remote client gets terse errors; an admin at the console the full text.

use std::thread::sleep;
use std::time::{Duration, Instant};

use super::cli::Invocation;
use super::config::{self, Config, Mode, Module};
use super::exit::{
    fail, report, say, ExitError, EXIT_CONFIG, EXIT_NOPERM, EXIT_OK, EXIT_SYNC_FAILED,
    EXIT_TEMPFAIL, EXIT_USAGE,
};
use super::log::{self, Requester};
use super::queue::{BatchResult, ModuleLock, Queued};
use super::state::{self, ModuleDir};
use super::{destdir, last_run, rsync, runner};
use crate::request::Request;

/// How often a waiter looks for the result of its run.
const POLL: Duration = Duration::from_millis(100);
/// How often a waiter checks that some runner is alive to cover its request.
const PROBE: Duration = Duration::from_secs(1);
/// Most requests of one module that wait for their run at once (each holds a handler and an
/// sshd process); past it a request is answered `queued` at once, still recorded and run.
pub(crate) const MAX_WAITERS: usize = 32;

/// Who asked, and so how much to tell and whether to write anything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// Through sshd (`SSH_ORIGINAL_COMMAND`): terse errors, detached runner.
    pub(crate) remote: bool,
    /// Running as root: refused before anything is written (state files made by root would
    /// lock the mirror account out).
    pub(crate) root: bool,
    /// Answered by the module's mode, as a push is: a `detach` module answers at once and a
    /// detached runner syncs. Always so for a remote caller; a local one asks with `sync
    /// --by-mode` (the bus listener, whose master wants `accepted` from a detach module at once).
    pub(crate) by_mode: bool,
}

/// A `sync` request from the client (`raw` is `SSH_ORIGINAL_COMMAND`) or a local caller;
/// `plain` is a local `sync --full`. Returns the exit code.
pub(crate) fn request(inv: &Invocation, raw: &[u8], caller: Caller, plain: bool) -> i32 {
    let cfg = match config::load_for(&inv.config, caller.remote) {
        Ok(c) => c,
        Err(f) => return refuse_and_log(inv, raw, &f, caller),
    };
    if caller.root {
        let module =
            Request::parse(raw).map_or_else(|_| "<module>".to_owned(), |r| r.module.to_string());
        return report(&fail(EXIT_NOPERM, root_refusal(&module)));
    }
    if let Err(e) = state::ensure_private_dir(&cfg.state_dir, true) {
        let f = state_failure(&cfg.state_dir, &e, caller.remote);
        if state::is_not_private(&e) {
            // The admin must learn why every push is refused: the line goes to handler.log.
            return refuse_and_log(inv, raw, &f, caller);
        }
        return report(&f);
    }
    let client = Requester::from_env(inv.key.as_deref());
    let outcome = admit(&cfg, raw, &client, caller.remote, plain);
    let (verdict, reason) = match &outcome {
        Ok(a) if !caller.remote => ("accepted-local", a.note()),
        Ok(a) if a.lock.is_none() && a.mode == Mode::Detach => ("queued", a.note()),
        Ok(a) if a.mode == Mode::Wait => ("accepted-wait", a.note()),
        Ok(a) => ("accepted", a.note()),
        Err(f) => ("refused", f.message.clone()),
    };
    if let Err(e) = log::append(
        &cfg.state_dir,
        &log::request_line(&client, verdict, raw, &reason),
    ) {
        return report(&state_failure(&cfg.state_dir, &e, caller.remote));
    }
    match outcome {
        Err(f) => report(&f),
        Ok(a) => respond(&cfg, a, caller),
    }
}

/// The refusal of root, in the words an admin can act on.
pub(crate) fn root_refusal(module: &str) -> String {
    format!(
        "refusing to sync as root: the mirror tree and the state files must stay owned by the mirror account; run it as that account, e.g. `runuser -u mirrorpush -- mirrorpush-handler sync {module}`"
    )
}

fn state_failure(state_dir: &std::path::Path, e: &std::io::Error, remote: bool) -> ExitError {
    if state::is_not_private(e) {
        // As a dest that others can write in is refused naming the dir, so is the state dir.
        return fail(
            EXIT_NOPERM,
            format!("refused: the state dir is not private: {e}"),
        );
    }
    if remote {
        fail(
            EXIT_TEMPFAIL,
            "temporary failure: mirror state not writable",
        )
    } else {
        fail(
            EXIT_TEMPFAIL,
            format!("state dir {}: {e}", state_dir.display()),
        )
    }
}

/// Refuses before a request could be admitted, and logs it: with the config's state dir, or
/// when the config is broken, the state dir it names (or the default), so that a push refused
/// for a config error still leaves its line for the admin. As root nothing is written.
pub(crate) fn refuse_and_log(inv: &Invocation, raw: &[u8], f: &ExitError, caller: Caller) -> i32 {
    if caller.root {
        return report(f);
    }
    let (state_dir, reason) = match config::load(&inv.config) {
        Ok(cfg) => (cfg.state_dir, f.message.clone()),
        Err(e) => (config::state_dir_hint(&inv.config), e.0),
    };
    if state_dir.is_dir() {
        let client = Requester::from_env(inv.key.as_deref());
        let line = log::request_line(&client, "refused", raw, &reason);
        if let Err(e) = log::append(&state_dir, &line) {
            if f.code != EXIT_CONFIG {
                return report(&state_failure(&state_dir, &e, caller.remote));
            }
        }
    }
    report(f)
}

/// A request that was recorded.
struct Admitted {
    module: String,
    seq: u64,
    /// The module lock, when no runner held it: the request is ours to start.
    lock: Option<ModuleLock>,
    mode: Mode,
    /// The module's last run failed: said in detach answers so the master sees it.
    last_failure: Option<String>,
}

impl Admitted {
    fn note(&self) -> String {
        format!("seq {}", self.seq)
    }

    fn suffix(&self) -> String {
        self.last_failure
            .as_ref()
            .map(|f| format!(" (last run failed: {f})"))
            .unwrap_or_default()
    }
}

/// Validates a request and records it; never spawns anything to refuse.
fn admit(
    cfg: &Config,
    raw: &[u8],
    client: &Requester,
    remote: bool,
    plain: bool,
) -> Result<Admitted, ExitError> {
    let req =
        Request::parse(raw).map_err(|e| fail(EXIT_USAGE, format!("malformed request: {e}")))?;
    let m = cfg
        .modules
        .get(req.module.as_str())
        .ok_or_else(|| fail(EXIT_NOPERM, format!("unknown module '{}'", req.module)))?;
    if let Some(dir) = &req.dir {
        if !m.allow_dirs {
            return Err(fail(
                EXIT_NOPERM,
                format!("module '{}' does not accept dir syncs", req.module),
            ));
        }
        if let Err(e) = destdir::check_dir(&m.dest, dir) {
            return Err(if e.is_refusal() {
                fail(EXIT_NOPERM, format!("dir '{dir}' refused: {e}"))
            } else if remote {
                fail(EXIT_TEMPFAIL, "temporary failure: cannot check the dir")
            } else {
                fail(EXIT_TEMPFAIL, format!("cannot check dir '{dir}': {e}"))
            });
        }
    }
    rsync::check_version(&cfg.rsync, &cfg.state_dir, true).map_err(|e| fail(EXIT_CONFIG, e))?;
    let md = ModuleDir::create(&cfg.state_dir, req.module.as_str())
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let entry = Queued {
        seq: 0,
        at: log::now(),
        dir: req.dir.as_ref().map(ToString::to_string),
        from: client.ip.clone(),
        key: client.key.clone(),
        plain,
    };
    // Append first, then try the lock: see queue.rs for why this order loses nothing.
    let seq = md
        .append(&entry)
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let lock = md
        .try_lock()
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let last_failure = last_run::read(&md)
        .filter(|r| !r.ok)
        .map(|r| r.failure_summary());
    Ok(Admitted {
        module: req.module.as_str().to_owned(),
        seq,
        lock,
        mode: m.mode,
        last_failure,
    })
}

/// Starts or waits for the run that covers an admitted request, and answers.
fn respond(cfg: &Config, a: Admitted, caller: Caller) -> i32 {
    let (Some(m), md) = (
        cfg.modules.get(&a.module),
        ModuleDir::new(&cfg.state_dir, &a.module),
    ) else {
        return report(&fail(EXIT_NOPERM, format!("unknown module '{}'", a.module)));
    };
    // A local caller waits, running the batches itself, unless it asked to be answered by the
    // mode and the module detaches: then it is answered as a push is, below.
    let as_a_push = caller.remote || (caller.by_mode && a.mode == Mode::Detach);
    if !as_a_push {
        if let Some(lock) = a.lock {
            runner::drain(cfg, m, &md, lock);
        }
        return match md.covering(a.seq) {
            Some(r) => answer(&r),
            None => until_covered(cfg, m, &md, a.seq, Waiter::Local),
        };
    }
    let suffix = a.suffix();
    let started = match a.lock {
        None => None,
        Some(lock) => {
            // Let go before spawning: the runner takes the lock itself.
            drop(lock);
            Some(runner::spawn(cfg, m))
        }
    };
    if let Some(Err(e)) = &started {
        log::event(&cfg.state_dir, m, "spawn-error", &e.to_string());
        // The request stays pending; the next trigger's runner will take it.
        return report(&fail(
            EXIT_TEMPFAIL,
            "temporary failure: cannot start the sync",
        ));
    }
    match (a.mode, started) {
        (Mode::Wait, _) => match waiter_slot(&md) {
            Some(_slot) => until_covered(cfg, m, &md, a.seq, Waiter::Remote),
            None => {
                log::event(
                    &cfg.state_dir,
                    m,
                    "wait-full",
                    &format!(
                        "{MAX_WAITERS} requests already wait for their run: seq {} answered queued (it is recorded and runs)",
                        a.seq
                    ),
                );
                say(&format!("queued{suffix}"));
                EXIT_OK
            }
        },
        (Mode::Detach, Some(_)) => {
            say(&format!("accepted{suffix}"));
            EXIT_OK
        }
        (Mode::Detach, None) => {
            say(&format!("queued{suffix}"));
            EXIT_OK
        }
    }
}

/// Who waits: a remote master (its runner is detached), or a local caller (which runs the
/// batches itself when no runner is active, since a unit's cgroup would kill a detached one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    Remote,
    Local,
}

/// One of the module's [`MAX_WAITERS`] wait slots, held until the waiter exits (the kernel
/// drops the flock with the process); `None` when all are taken (or cannot be opened: a waiter
/// must not be refused its answer by a state-dir hiccup, so it then waits without a slot).
fn waiter_slot(md: &ModuleDir) -> Option<Option<std::fs::File>> {
    let mut opened_any = false;
    for i in 0..MAX_WAITERS {
        let Ok(f) = md.open_rw(&state::waiter_slot(i)) else {
            continue;
        };
        opened_any = true;
        if f.try_lock().is_ok() {
            return Some(Some(f));
        }
    }
    (!opened_any).then_some(None)
}

/// Waits until request `seq` of module `m` is covered by an ended run, and answers with it.
/// A waiter runs no sync of its own over SSH: it only reads the batch results and makes sure
/// a runner is alive.
fn until_covered(cfg: &Config, m: &Module, md: &ModuleDir, seq: u64, who: Waiter) -> i32 {
    let mut last_probe = Instant::now();
    loop {
        if let Some(r) = md.covering(seq) {
            return answer(&r);
        }
        if who == Waiter::Remote && client_gone() {
            // Nobody to answer; the sync goes on in the runner and its result is in status.
            return EXIT_OK;
        }
        if last_probe.elapsed() >= PROBE {
            last_probe = Instant::now();
            if let Err(f) = ensure_runner(cfg, m, md, who) {
                return report(&f);
            }
            continue;
        }
        sleep(POLL);
    }
}

/// A runner killed mid-batch (or one that never started) would leave our request stranded:
/// start one when none holds the lock.
fn ensure_runner(cfg: &Config, m: &Module, md: &ModuleDir, who: Waiter) -> Result<(), ExitError> {
    match who {
        Waiter::Remote => match md.runner_active() {
            Ok(true) => Ok(()),
            Ok(false) => runner::spawn(cfg, m)
                .map_err(|_| fail(EXIT_TEMPFAIL, "temporary failure: cannot start the sync")),
            Err(_) => Err(fail(
                EXIT_TEMPFAIL,
                "temporary failure: mirror state not writable",
            )),
        },
        Waiter::Local => match md.try_lock() {
            Ok(Some(lock)) => {
                runner::drain(cfg, m, md, lock);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(fail(
                EXIT_TEMPFAIL,
                format!("state dir {}: {e}", md.dir.display()),
            )),
        },
    }
}

/// `synced`, or the run's failure.
fn answer(r: &BatchResult) -> i32 {
    if r.ok {
        say("synced");
        EXIT_OK
    } else {
        report(&fail(
            EXIT_SYNC_FAILED,
            format!("sync failed: {}", r.result),
        ))
    }
}

/// True when the client can no longer read our answer (sshd closed the session's stdout).
fn client_gone() -> bool {
    let mut fds = [libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    }];
    // SAFETY: poll(2) on one valid pollfd with a zero timeout.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}
