//! The one way the handler starts other programs (rsync, the `mirrorpush` master, its own
//! detached runner and pusher): an exact argv, the scrubbed environment, `/` as working
//! directory, stdin from /dev/null, its own process group, a wall-clock bound after which the
//! whole group is killed, and a guard that kills the group if the handler itself is killed.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::config::SAFE_PATH;
use super::state;

/// The only environment a child ever sees: `PATH`, `LC_ALL=C` and an empty `HOME`.
pub(crate) fn scrubbed(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .env("HOME", "")
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0)
}

/// Makes the child start inside the opened directory `cwd` (no path is resolved again), die
/// with the handler (parent-death signal), and refuse to start when the handler is already gone.
pub(crate) fn in_dir_supervised<'c>(cmd: &'c mut Command, cwd: &OwnedFd) -> &'c mut Command {
    let parent = std::process::id();
    let cwd = cwd.as_raw_fd();
    // SAFETY: only async-signal-safe calls (fchdir, prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fchdir(cwd) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("runner exited"));
            }
            Ok(())
        })
    }
}

/// The handler binary to start runners and pushers with. After a package upgrade replaced the
/// binary while this process ran, `/proc/self/exe` names a deleted file (`... (deleted)`): the
/// new binary at the same path is used then, so requests queued across an upgrade still run.
pub(crate) fn self_exe() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    let Ok(link) = fs::read_link(&proc_exe) else {
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

/// Starts `<handler> --config <config> <args>...` detached: its own session, the scrubbed
/// environment, /dev/null for stdio and no other fds, so sshd neither waits for it nor kills
/// it when the session ends. Not waited for: it is reparented when it exits.
pub(crate) fn spawn_self<S: AsRef<OsStr>>(config: &Path, args: &[S]) -> io::Result<()> {
    let config = std::path::absolute(config)?;
    let mut cmd = Command::new(self_exe());
    cmd.arg("--config").arg(config).args(args);
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
    cmd.spawn().map(drop)
}

/// Reads at most `limit` bytes of a child's pipe on a thread, so the child never blocks on it.
pub(crate) fn read_capped(
    pipe: Option<impl Read + Send + 'static>,
    limit: u64,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(p) = pipe {
            let mut bytes = Vec::new();
            let mut limited = p.take(limit);
            let _ = limited.read_to_end(&mut bytes);
            // Keep reading (and dropping) so the child is not stuck on a full pipe.
            let mut rest = limited.into_inner();
            let _ = std::io::copy(&mut rest, &mut std::io::sink());
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child` (the leader of its own process group) at most `timeout`. After that the
/// group gets SIGTERM, `grace` later SIGKILL (forked members too, whether or not the leader is
/// gone), and `None` is returned once the leader is reaped.
pub(crate) fn wait_bounded(
    child: Child,
    timeout: Duration,
    grace: Duration,
) -> Option<io::Result<ExitStatus>> {
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    // A thread blocks in wait(2) so that the end of the child is seen at once.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => Some(status),
        Err(_) => {
            if !grace.is_zero() {
                // SAFETY: plain kill(2) on the group we created.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                let _ = rx.recv_timeout(grace);
            }
            // SAFETY: as above; the group id cannot be reused while the leader is unreaped or
            // members live.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = rx.recv();
            None
        }
    }
}

/// The first line worth showing from a program's stderr: one starting with `prefix` if any,
/// else the first non-empty one; escaped.
pub(crate) fn first_line(text: &str, prefixes: &[&str]) -> Option<String> {
    let lines = || text.lines().map(str::trim);
    lines()
        .find(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .or_else(|| lines().find(|l| !l.is_empty()))
        .map(|l| crate::request::escape_bytes(l.as_bytes()))
}

/// The process group of a running child, recorded so that the next runner can kill what a
/// killed one left behind ([`kill_leftover`]): `<pgid> <start time>`.
pub(crate) fn record_group(pgid_file: &Path, pgid: i32) {
    // Best effort: the next runner double-checks before it kills anything.
    let _ = crate::atomic::write(
        pgid_file,
        format!("{pgid} {}\n", start_time(pgid).unwrap_or(0)).as_bytes(),
    );
}

/// A forked watcher that kills rsync's whole process group if the runner dies (kill -9): the
/// parent-death signal reaches only rsync's first process, not the receiver it forks.
pub(crate) struct Guard {
    write: Option<OwnedFd>,
    pid: libc::pid_t,
}

impl Guard {
    pub(crate) fn start() -> io::Result<Guard> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let read_fd = read.as_raw_fd();
        // SAFETY: the child only makes async-signal-safe calls (close_range, read, kill,
        // _exit) before it exits, as required after fork in a multi-threaded process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; every fd but the pipe's read end is closed, so the guard holds
            // no lock and no stdio of the runner.
            unsafe { guard_main(read_fd) }
        }
        drop(read);
        Ok(Guard {
            write: Some(write),
            pid,
        })
    }

    pub(crate) fn watch(&self, pgid: i32) {
        if let Some(w) = &self.write {
            let _ = rustix::io::write(w, &pgid.to_le_bytes());
        }
    }

    /// rsync has ended: the guard exits without killing anything.
    pub(crate) fn done(mut self) {
        if let Some(w) = self.write.take() {
            let _ = rustix::io::write(&w, b"D");
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The guard's whole life, in the forked child.
///
/// # Safety
/// Must only be called in a freshly forked child; it never returns.
unsafe fn guard_main(read_fd: i32) -> ! {
    let low = read_fd as u32;
    if low > 0 {
        libc::syscall(libc::SYS_close_range, 0u32, low - 1, 0u32);
    }
    libc::syscall(libc::SYS_close_range, low + 1, u32::MAX, 0u32);
    let mut pgid = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = libc::read(read_fd, pgid[got..].as_mut_ptr().cast(), 4 - got);
        if n > 0 {
            got += n as usize;
        } else if n == 0 || *libc::__errno_location() != libc::EINTR {
            libc::_exit(0);
        }
    }
    let pgid = i32::from_le_bytes(pgid);
    let mut byte = [0u8; 1];
    loop {
        let n = libc::read(read_fd, byte.as_mut_ptr().cast(), 1);
        if n == 1 {
            libc::_exit(0);
        }
        if n == 0 || *libc::__errno_location() != libc::EINTR {
            break;
        }
    }
    // The runner is gone without saying rsync ended.
    if pgid > 1 {
        libc::kill(-pgid, libc::SIGKILL);
    }
    libc::_exit(0)
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks, to tell a reused pid apart.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Kills an rsync a killed runner left behind, before a new run starts, so two rsyncs never
/// write the same tree. Only what this handler wrote is killed: the recorded group leader must
/// still run, with the recorded start time, as `program` (the configured rsync). (Members that
/// outlived their leader were already killed by the runner's guard.) Only the lock holder
/// calls this.
pub(crate) fn kill_leftover(pgid_file: &Path, program: &Path) {
    let Ok(bytes) = state::read_state_file(pgid_file) else {
        return;
    };
    let _ = fs::remove_file(pgid_file);
    let text = String::from_utf8_lossy(&bytes);
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (Some(Some(pgid)), Some(Some(started))) = (it.next(), it.next()) else {
        return;
    };
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 || start_time(pgid) != Some(started) {
        return;
    }
    let exe = fs::read_link(format!("/proc/{pgid}/exe")).ok();
    let ours = fs::canonicalize(program).ok();
    if exe.is_none() || exe != ours {
        return;
    }
    // SAFETY: kill(2) on a process group verified above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && group_alive(pgid) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether any process of group `pgid` still runs. Zombies do not count: they write nothing,
/// and where PID 1 does not reap orphans they would otherwise look alive forever.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}
