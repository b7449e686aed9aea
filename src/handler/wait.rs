//! Waiting for the run that covers a request: wait mode (a master that must know the content is
//! in place before its next stage) and local `sync` (timers, admins). A waiter runs no sync of
//! its own over SSH: the module's runner does, detached, so a master that hangs up never cuts a
//! sync short. The waiter only reads the batch results and makes sure a runner is alive.

use std::thread::sleep;
use std::time::{Duration, Instant};

use super::config::{Config, Module};
use super::queue::{BatchResult, ModuleDir};
use super::runner;
use super::{fail, report, say, EXIT_OK, EXIT_RSYNC_FAILED, EXIT_TEMPFAIL};

const POLL: Duration = Duration::from_millis(100);
/// How often a waiter checks that some runner is alive to cover its request.
const PROBE: Duration = Duration::from_secs(1);

/// Who waits: a remote master (its runner is detached), or a local caller (which runs the
/// batches itself when no runner is active, since a unit's cgroup would kill a detached one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    Remote,
    Local,
}

/// Waits until request `seq` of module `m` is covered by an ended run, and answers with it.
pub fn until_covered(cfg: &Config, m: &Module, md: &ModuleDir, seq: u64, who: Waiter) -> i32 {
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
            if let Err(e) = ensure_runner(cfg, m, md, who) {
                return report(&fail(EXIT_TEMPFAIL, e));
            }
            continue;
        }
        sleep(POLL);
    }
}

/// A runner killed mid-batch (or one that never started) would leave our request stranded:
/// start one when none holds the lock.
fn ensure_runner(cfg: &Config, m: &Module, md: &ModuleDir, who: Waiter) -> Result<(), String> {
    match who {
        Waiter::Remote => match md.runner_active() {
            Ok(true) => Ok(()),
            Ok(false) => runner::spawn_detached(&cfg.path, m.name.as_str())
                .map_err(|_| "temporary failure: cannot start the sync".to_owned()),
            Err(_) => Err("temporary failure: mirror state not writable".to_owned()),
        },
        Waiter::Local => match md.try_lock() {
            Ok(Some(lock)) => {
                runner::drain(cfg, m, md, lock);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(format!("state dir {}: {e}", md.dir.display())),
        },
    }
}

/// `synced`, or the run's failure.
pub fn answer(r: &BatchResult) -> i32 {
    if r.ok {
        say("synced");
        EXIT_OK
    } else {
        report(&fail(
            EXIT_RSYNC_FAILED,
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
