//! Shared by the sync benchmarks (`examples/sync-bench.rs`, `examples/tiers-bench.rs`):
//! the CPU an `rsync --daemon` spends on its clients, a command run as the lab account with
//! its wall time and rusage, and the comparison of a mirror's tree with the upstream's.

#![allow(dead_code)] // each example uses part of it

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// The CPU of a process and every process it forks from now on: a cgroup-v1 `cpuacct` group
/// of its own (`cpuacct.usage`, ns, counts children while they run and after they exit), or,
/// without one, `/proc/<pid>/stat` cutime+cstime (clock ticks, children it has reaped only).
pub struct CpuMeter {
    pid: u32,
    group: Option<PathBuf>,
}

impl CpuMeter {
    /// Starts metering `pid` (e.g. an `rsync --daemon`; it must have no client yet).
    pub fn new(name: &str, pid: u32) -> CpuMeter {
        let group =
            Path::new(CPUACCT).join(format!("mirrorpush-bench-{}-{name}", std::process::id()));
        let group = fs::create_dir(&group)
            .and_then(|()| fs::write(group.join("cgroup.procs"), pid.to_string()))
            .map(|()| group.clone())
            .map_err(|e| {
                let _ = fs::remove_dir(&group);
                eprintln!(
                    "note: no cpuacct group for {name} ({e}): falling back to /proc/{pid}/stat"
                );
            })
            .ok();
        CpuMeter { pid, group }
    }

    pub fn method(&self) -> String {
        match &self.group {
            Some(g) => format!("cgroup v1 {}/cpuacct.usage (ns)", g.display()),
            None => format!("/proc/{}/stat cutime+cstime (clock ticks)", self.pid),
        }
    }

    /// CPU seconds so far.
    pub fn seconds(&self) -> f64 {
        match &self.group {
            Some(g) => fs::read_to_string(g.join("cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(f64::NAN, |ns| ns as f64 / 1e9),
            None => {
                let stat =
                    fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
                let after = stat.rsplit(')').next().unwrap_or("");
                let f: Vec<&str> = after.split_whitespace().collect();
                // Fields 16 and 17 of stat(5), counted from the state (field 3) here.
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
                (ticks(13) + ticks(14)) as f64 / hz
            }
        }
    }

    /// Waits until the metered process has no child left (its clients are done), at most
    /// `timeout`; returns whether it has none.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.children() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(10));
        }
    }

    fn children(&self) -> usize {
        match &self.group {
            Some(g) => fs::read_to_string(g.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.trim() != self.pid.to_string())
                .count(),
            None => children_of(self.pid),
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        if let Some(g) = &self.group {
            // Anything still in the group goes back to the root group; then the group goes.
            for pid in fs::read_to_string(g.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = fs::write(Path::new(CPUACCT).join("cgroup.procs"), pid);
            }
            for _ in 0..50 {
                if fs::remove_dir(g).is_ok() {
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Processes whose parent is `pid` (a /proc scan: this kernel has no `children` file).
fn children_of(pid: u32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
        })
        .filter(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .count()
}

/// Wall time, user and system CPU (of the command and every descendant it waited for) and
/// the exit code of one finished command.
pub struct Measured {
    pub wall: f64,
    pub user: f64,
    pub sys: f64,
    pub code: i32,
}

/// Runs `cmd` to its end, stdout and stderr appended to `log`.
pub fn measure(mut cmd: Command, log: &Path) -> io::Result<Measured> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child's pid, and the
    // Child is not waited on again.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Measured {
        wall,
        user: secs(ru.ru_utime),
        sys: secs(ru.ru_stime),
        code,
    })
}

/// Runs `cmd` to its end; an error names it when it fails.
pub fn run(mut cmd: Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Lines of an rsync daemon's log that record a client run (`rsync on fedora/... from ...`).
pub fn served(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(" rsync on ").nth(1))
        .map(|l| l.split(" from ").next().unwrap_or("").to_owned())
        .collect()
}

/// Relative path -> (kind, size, content or link target).
pub type Snapshot = BTreeMap<Vec<u8>, (char, u64, Vec<u8>)>;

/// Path -> (kind, size, content or link target) of a tree, the entries named in `skip` left
/// out (relative paths).
pub fn snapshot(root: &Path, skip: &[&str]) -> io::Result<Snapshot> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .as_os_str()
                .as_bytes()
                .to_vec();
            if skip.iter().any(|s| s.as_bytes() == rel.as_slice()) {
                continue;
            }
            let md = fs::symlink_metadata(&p)?;
            let v = if md.file_type().is_symlink() {
                ('l', 0, fs::read_link(&p)?.as_os_str().as_bytes().to_vec())
            } else if md.is_dir() {
                stack.push(p);
                ('d', 0, Vec::new())
            } else {
                ('f', md.size(), fs::read(&p)?)
            };
            out.insert(rel, v);
        }
    }
    Ok(out)
}

/// How two trees differ: `None` when they hold the same entries, else a short description.
pub fn tree_difference(a: &Path, b: &Path, skip: &[&str]) -> Option<String> {
    let (x, y) = match (snapshot(a, skip), snapshot(b, skip)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return Some(format!("cannot read: {e}")),
    };
    if x == y {
        return None;
    }
    let only_a = x.keys().filter(|k| !y.contains_key(*k)).count();
    let only_b = y.keys().filter(|k| !x.contains_key(*k)).count();
    let differ: Vec<String> = x
        .iter()
        .filter(|(k, v)| y.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .take(5)
        .collect();
    Some(format!(
        "{} entries only in {}, {} only in {}, differing: {differ:?}",
        only_a,
        a.display(),
        only_b,
        b.display()
    ))
}

/// `status.json` of `module` in a handler's state dir, read directly.
pub fn last_run(state_dir: &Path, module: &str) -> serde_json::Value {
    fs::read(state_dir.join(module).join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Binary `name` of the same build: `target/<profile>/examples/<name>` beside this example.
pub fn example_binary(name: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or_else(|| io::Error::other("cannot locate the examples directory"))?;
    if !path.exists() {
        return Err(io::Error::other(format!("{} missing", path.display())));
    }
    Ok(path)
}
