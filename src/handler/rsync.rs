//! Running rsync: exact argv (no shell), scrubbed environment, started inside the opened
//! destination directory, its own process group (killed whole on timeout, and by a guard process
//! if the runner itself is killed), version floor, and what the run changed.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::Module;
use super::queue::{read_state_file, write_atomic};

/// rsync 3.5.0 fixes 33 CVEs of earlier versions, among them a destination symlink race.
pub const MIN_VERSION: (u32, u32, u32) = (3, 5, 0);
/// rsync's own I/O timeout (`--timeout`), in seconds.
const IO_TIMEOUT_SECS: u64 = 600;
const CONNECT_TIMEOUT_SECS: u64 = 60;
/// How long rsync gets between SIGTERM and SIGKILL after the wall-clock timeout.
const TERM_GRACE: Duration = Duration::from_secs(10);
const VERSION_CACHE: &str = "rsync-version.json";
/// Per module: the process group of a running rsync, so the next runner can kill leftovers.
pub const PGID_FILE: &str = "rsync.pgid";
/// Itemized lines copied into rsync.log per run; the rest are only counted.
const LOGGED_ITEMS: u64 = 10_000;

/// The mirror's modes, whatever the upstream serves: directories 0755, files 0644 (0755 when
/// executable upstream), never setuid, setgid or sticky, never group- or world-writable. With
/// `-rlpt` instead of `-a`, owners, groups, devices and special files are not taken either.
pub const CHMOD: &str = "--chmod=D755,Fu=rwX,Fgo=rX,Fugo-st";

/// One rsync invocation, from config and validated input only.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// `SOURCE/` or `SOURCE/<dir>/`; the destination is always `.` (the opened directory).
    pub source: String,
    /// `--delete-delay` and `--max-delete` (not in the first pass of a two-stage run).
    pub delete: bool,
    /// Anchored paths (relative to the transfer root) rsync must neither write nor delete.
    pub protect: Vec<String>,
    /// Patterns held back (the first pass of a two-stage run).
    pub exclude: Vec<String>,
    /// Transfer exactly these entries (NUL-separated, relative to the transfer root), no
    /// recursion: a file-list run.
    pub files_from: Option<PathBuf>,
}

/// The argv after the program name.
pub fn args(module: &Module, inv: &Invocation) -> Vec<OsString> {
    let mut a: Vec<String> = Vec::new();
    a.push(
        if inv.files_from.is_some() {
            "-lpt"
        } else {
            "-rlpt"
        }
        .into(),
    );
    a.push(CHMOD.into());
    a.extend(
        [
            "--safe-links",
            "--delay-updates",
            "--itemize-changes",
            "--stats",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.push(format!("--timeout={IO_TIMEOUT_SECS}"));
    if module.is_daemon_source() {
        a.push(format!("--contimeout={CONNECT_TIMEOUT_SECS}"));
    }
    if inv.delete {
        a.push("--delete-delay".into());
        a.push(format!("--max-delete={}", module.max_delete));
    }
    // Ours first: the first matching filter rule wins, so an admin's include cannot undo them.
    for p in &inv.protect {
        a.push(format!("--filter=P /{p}"));
        a.push(format!("--exclude=/{p}"));
    }
    for p in &inv.exclude {
        a.push(format!("--exclude={p}"));
    }
    if let Some(list) = &inv.files_from {
        a.push(format!("--files-from={}", list.display()));
        a.push("--from0".into());
        // An entry gone upstream since the list was written is picked up by the next list.
        a.push("--ignore-missing-args".into());
        // A directory replaced upstream by a file or link is replaced here too.
        a.push("--force".into());
    }
    a.extend(module.rsync_args.iter().cloned());
    a.push("--".into());
    a.push(inv.source.clone());
    a.push(".".into());
    a.into_iter().map(OsString::from).collect()
}

/// The argv that fetches one file (a module's file list) from `source` into `dest_name` in the
/// working directory: times kept, so an unchanged list costs the upstream one stat, and the
/// previous fetch is the basis, so only a changed list's delta travels.
pub fn fetch_args(module: &Module, source: &str, dest_name: &str) -> Vec<OsString> {
    let mut a: Vec<String> = vec!["-t".into(), "--stats".into()];
    a.push(format!("--timeout={IO_TIMEOUT_SECS}"));
    if module.is_daemon_source() {
        a.push(format!("--contimeout={CONNECT_TIMEOUT_SECS}"));
    }
    a.extend(module.rsync_args.iter().cloned());
    a.push("--".into());
    a.push(source.to_owned());
    a.push(dest_name.to_owned());
    a.into_iter().map(OsString::from).collect()
}

/// Parses `rsync  version 3.5.0  protocol version 32`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let first = text.lines().next()?;
    let mut words = first.split_whitespace();
    words.find(|w| *w == "version")?;
    let v = words.next()?;
    let mut nums = v.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((
        nums.next()??,
        nums.next().flatten().unwrap_or(0),
        nums.next().flatten().unwrap_or(0),
    ))
}

#[derive(Serialize, Deserialize, PartialEq)]
struct CacheKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

#[derive(Serialize, Deserialize)]
struct Cache {
    key: CacheKey,
    version: (u32, u32, u32),
}

/// Finds rsync's version, from the cache in `state_dir` when the binary is unchanged. With
/// `write_cache` false (root's read-only `check`) nothing is written.
pub fn version(
    rsync: &Path,
    state_dir: &Path,
    write_cache: bool,
) -> Result<(u32, u32, u32), String> {
    let meta = fs::metadata(rsync).map_err(|e| format!("rsync {}: {e}", rsync.display()))?;
    let key = CacheKey {
        path: rsync.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    };
    let cache_path = state_dir.join(VERSION_CACHE);
    if let Some(c) = read_state_file(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
    {
        if c.key == key {
            return Ok(c.version);
        }
    }
    let mut cmd = Command::new(rsync);
    cmd.arg("--version");
    let out = super::child::scrubbed(&mut cmd)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rsync.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| format!("cannot read the version of {}", rsync.display()))?;
    if write_cache {
        if let Ok(bytes) = serde_json::to_vec(&Cache { key, version }) {
            // A cache we cannot write only costs speed.
            let _ = write_atomic(&cache_path, &bytes);
        }
    }
    Ok(version)
}

/// Ok with the version, or a message saying what was found and what is required.
pub fn check_version(
    rsync: &Path,
    state_dir: &Path,
    write_cache: bool,
) -> Result<(u32, u32, u32), String> {
    let v = version(rsync, state_dir, write_cache)?;
    if v < MIN_VERSION {
        let (a, b, c) = v;
        let (x, y, z) = MIN_VERSION;
        return Err(format!(
            "rsync {a}.{b}.{c} at {} is too old: {x}.{y}.{z} or newer is required (older versions have CVEs a hostile upstream or a local user can exploit)",
            rsync.display()
        ));
    }
    Ok(v)
}

/// How one rsync run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed(i32),
    Signalled(i32),
    TimedOut(Duration),
    NotStarted(String),
}

impl Outcome {
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Success => Some(0),
            Outcome::Failed(c) => Some(*c),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Success => "ok".to_owned(),
            Outcome::Failed(c) => format!("rsync failed with exit code {c}"),
            Outcome::Signalled(s) => format!("rsync was killed by signal {s}"),
            Outcome::TimedOut(d) => format!(
                "rsync timed out after {} and was killed",
                humantime::format_duration(*d)
            ),
            Outcome::NotStarted(e) => format!("rsync could not start: {e}"),
        }
    }
}

/// What a run changed, read from rsync's itemized changes and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Entries created or updated (files, dirs, symlinks; attribute-only updates not counted).
    pub transferred: u64,
    pub deleted: u64,
    pub bytes_received: u64,
}

impl Changes {
    pub fn add(&mut self, o: Changes) {
        self.transferred += o.transferred;
        self.deleted += o.deleted;
        self.bytes_received += o.bytes_received;
    }

    pub fn changed_anything(&self) -> bool {
        self.transferred + self.deleted > 0
    }

    /// Counts one line of rsync's stdout.
    fn count(&mut self, line: &str) -> LineKind {
        if line.starts_with("*deleting ") {
            self.deleted += 1;
            return LineKind::Item;
        }
        if let Some(n) = line.strip_prefix("Total bytes received: ") {
            self.bytes_received = n.trim().replace(',', "").parse().unwrap_or(0);
            return LineKind::Other;
        }
        let b = line.as_bytes();
        // `%i %n`: an 11-character code (YXcstpoguax), a space, the name.
        let itemized = b.len() > 12
            && b[11] == b' '
            && b"<>ch.".contains(&b[0])
            && b"fdLDS".contains(&b[1])
            && b[2..11].iter().all(|c| b"cstpoguaxT.+ ?n".contains(c));
        if !itemized {
            return LineKind::Other;
        }
        // `.` is an attribute-only update (a directory's time): not a change of content.
        if b[0] != b'.' {
            self.transferred += 1;
        }
        LineKind::Item
    }
}

enum LineKind {
    Item,
    Other,
}

/// Where rsync runs and where its records go.
pub struct RunPlace<'a> {
    /// rsync's working directory: the checked destination directory.
    pub cwd: &'a OwnedFd,
    /// rsync.log (truncated per batch by the caller).
    pub log: &'a File,
    pub pgid_file: &'a Path,
}

/// Runs rsync once: stderr to the log, stdout parsed for what changed (and copied to the log,
/// itemized lines up to [`LOGGED_ITEMS`], so a first sync of millions of files cannot fill the
/// disk with its log).
pub fn run(
    rsync: &Path,
    args: &[OsString],
    place: &RunPlace,
    timeout: Duration,
) -> (Outcome, Changes) {
    let err = match place.log.try_clone() {
        Ok(e) => e,
        Err(e) => return (Outcome::NotStarted(e.to_string()), Changes::default()),
    };
    let guard = match Guard::start() {
        Ok(g) => g,
        Err(e) => {
            return (
                Outcome::NotStarted(format!("guard: {e}")),
                Changes::default(),
            )
        }
    };
    let parent = std::process::id();
    let cwd = place.cwd.as_raw_fd();
    let mut cmd = Command::new(rsync);
    cmd.args(args);
    // Own group: the timeout (or the guard) kills rsync and the children it forks together.
    super::child::scrubbed(&mut cmd)
        .stdout(Stdio::piped())
        .stderr(err);
    // SAFETY: only async-signal-safe calls (fchdir, prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Into the checked directory itself: no path is resolved again.
            if libc::fchdir(cwd) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the runner dies, rsync must not run on unsupervised.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("runner exited"));
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            guard.done();
            return (Outcome::NotStarted(e.to_string()), Changes::default());
        }
    };
    let pgid = child.id() as i32;
    guard.watch(pgid);
    // Best effort: the next runner double-checks and kills what a killed runner left.
    let _ = write_atomic(
        place.pgid_file,
        format!("{pgid} {}\n", start_time(pgid).unwrap_or(0)).as_bytes(),
    );
    let reader = child.stdout.take().map(|out| {
        let mut log = place.log.try_clone().ok();
        std::thread::spawn(move || read_output(out, log.as_mut()))
    });
    // A thread blocks in wait(2) so that the end of rsync is seen at once.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done.recv_timeout(timeout) {
        Ok(status) => Some(status),
        Err(_) => {
            kill_group(pgid, &done);
            None
        }
    };
    let changes = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    guard.done();
    let _ = fs::remove_file(place.pgid_file);
    let outcome = match status {
        None => Outcome::TimedOut(timeout),
        Some(Ok(st)) => match (st.code(), st.signal()) {
            (Some(0), _) => Outcome::Success,
            (Some(c), _) => Outcome::Failed(c),
            (None, Some(s)) => Outcome::Signalled(s),
            (None, None) => Outcome::NotStarted("unknown exit status".into()),
        },
        Some(Err(e)) => Outcome::NotStarted(format!("waiting for rsync: {e}")),
    };
    (outcome, changes)
}

fn read_output(out: impl io::Read, mut log: Option<&mut File>) -> Changes {
    let mut changes = Changes::default();
    let mut items = 0u64;
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let keep = match changes.count(text.trim_end_matches('\n')) {
            LineKind::Item => {
                items += 1;
                items <= LOGGED_ITEMS
            }
            LineKind::Other => true,
        };
        if let (true, Some(f)) = (keep, log.as_mut()) {
            let _ = f.write_all(&line);
        }
    }
    if items > LOGGED_ITEMS {
        if let Some(f) = log.as_mut() {
            let _ = writeln!(
                f,
                "({} more itemized changes not logged)",
                items - LOGGED_ITEMS
            );
        }
    }
    changes
}

/// A forked watcher that kills rsync's whole process group if the runner dies (kill -9): the
/// parent-death signal reaches only rsync's first process, not the receiver it forks.
struct Guard {
    write: Option<OwnedFd>,
    pid: libc::pid_t,
}

impl Guard {
    fn start() -> io::Result<Guard> {
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

    fn watch(&self, pgid: i32) {
        if let Some(w) = &self.write {
            let _ = rustix::io::write(w, &pgid.to_le_bytes());
        }
    }

    /// rsync has ended: the guard exits without killing anything.
    fn done(mut self) {
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

/// SIGTERM to the group, then SIGKILL after a grace period; waits until the leader is reaped.
fn kill_group(pgid: i32, done: &mpsc::Receiver<io::Result<std::process::ExitStatus>>) {
    // SAFETY: plain kill(2) on the group we created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let _ = done.recv_timeout(TERM_GRACE);
    // The leader may be gone while forked children live on: kill the group either way.
    // SAFETY: as above; the group id cannot be reused while the leader is unreaped or members live.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = done.recv();
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks, to tell a reused pid apart.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Kills an rsync a killed runner left behind, before a new run starts, so two rsyncs never
/// write the same tree. Only what this handler wrote is killed: the recorded group leader must
/// still run, with the recorded start time, as the configured rsync binary. (Members that
/// outlived their leader were already killed by the runner's guard.) Only the lock holder
/// calls this.
pub fn kill_leftover(pgid_file: &Path, rsync: &Path) {
    let Ok(bytes) = read_state_file(pgid_file) else {
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
    let ours = fs::canonicalize(rsync).ok();
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
pub fn group_alive(pgid: i32) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::config::Mode;
    use super::*;

    fn module(source: &str) -> Module {
        Module {
            name: crate::request::ModuleName::parse("m").unwrap(),
            source: source.into(),
            dest: "/srv/m".into(),
            mode: Mode::Detach,
            allow_dirs: true,
            rsync_args: vec!["--bwlimit=1M".into()],
            timeout: Duration::from_secs(5),
            filelist: None,
            max_delete: 40_000,
            last: vec![],
            trace: None,
            lastsync: None,
            downstream: None,
        }
    }

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn argv_is_exact() {
        let m = module("rsync://up/m/");
        let inv = Invocation {
            source: "rsync://up/m/".into(),
            delete: true,
            protect: vec!["project/trace/me".into()],
            ..Invocation::default()
        };
        assert_eq!(
            strs(args(&m, &inv)),
            [
                "-rlpt",
                CHMOD,
                "--safe-links",
                "--delay-updates",
                "--itemize-changes",
                "--stats",
                "--timeout=600",
                "--contimeout=60",
                "--delete-delay",
                "--max-delete=40000",
                "--filter=P /project/trace/me",
                "--exclude=/project/trace/me",
                "--bwlimit=1M",
                "--",
                "rsync://up/m/",
                "."
            ]
        );
        let first_pass = Invocation {
            source: "/up/m/a/b/".into(),
            exclude: vec!["repodata/".into()],
            ..Invocation::default()
        };
        let a = strs(args(&module("/up/m/"), &first_pass));
        assert!(!a
            .iter()
            .any(|x| x.starts_with("--contimeout") || x.contains("delete")));
        assert!(a.contains(&"--exclude=repodata/".to_owned()));
        assert_eq!(a[a.len() - 2..], ["/up/m/a/b/", "."]);
        let list = Invocation {
            source: "/up/m/".into(),
            files_from: Some("/state/m/transfer".into()),
            ..Invocation::default()
        };
        let a = strs(args(&module("/up/m/"), &list));
        assert_eq!(a[0], "-lpt");
        assert!(a.contains(&"--files-from=/state/m/transfer".to_owned()));
        assert!(a.contains(&"--from0".to_owned()));
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("rsync  version 3.5.0  protocol version 32\n"),
            Some((3, 5, 0))
        );
        assert_eq!(parse_version("rsync  version v3.2.7  protocol"), None);
        assert_eq!(
            parse_version("rsync  version 3.4.1pre1  protocol"),
            Some((3, 4, 1))
        );
        assert_eq!(parse_version("garbage"), None);
        assert!((3, 4, 1) < MIN_VERSION);
    }

    #[test]
    fn counts_what_changed() {
        let mut c = Changes::default();
        for line in [
            ">f+++++++++ new",
            ">f..t...... touched",
            "cL+++++++++ link -> a",
            "cLc.T...... retargeted -> b",
            "cd+++++++++ dir/",
            ".d..t...... dir-time-only/",
            "*deleting   old",
            "cannot delete non-empty directory: x",
            "Total bytes received: 1,234",
            "sent 1 bytes  received 2 bytes",
        ] {
            c.count(line);
        }
        assert_eq!(
            c,
            Changes {
                transferred: 5,
                deleted: 1,
                bytes_received: 1234
            }
        );
        assert!(c.changed_anything());
    }

    /// Runs `program args` in `dir` through [`run`], with a log and pgid file in `state`.
    fn run_in(dir: &Path, state: &Path, program: &str, args: &[&str], limit: Duration) -> Outcome {
        let cwd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let log = File::create(state.join("log")).unwrap();
        let place = RunPlace {
            cwd: &cwd,
            log: &log,
            pgid_file: &state.join("pgid"),
        };
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        run(Path::new(program), &args, &place, limit).0
    }

    #[test]
    fn timeout_kills_and_reports() {
        let t = tempfile::tempdir().unwrap();
        let limit = Duration::from_millis(300);
        let o = run_in(t.path(), t.path(), "/bin/sleep", &["30"], limit);
        assert_eq!(o, Outcome::TimedOut(limit));
        assert!(!t.path().join("pgid").exists());
    }

    #[test]
    fn runs_inside_the_opened_directory() {
        let t = tempfile::tempdir().unwrap();
        let inner = t.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        // The path is swapped while the run starts: it still lands in the opened directory.
        let cwd = rustix::fs::open(
            &inner,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        std::fs::rename(&inner, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/tmp", &inner).unwrap();
        let log = File::create(t.path().join("log")).unwrap();
        let place = RunPlace {
            cwd: &cwd,
            log: &log,
            pgid_file: &t.path().join("pgid"),
        };
        let (o, _) = run(
            Path::new("/usr/bin/touch"),
            &["written-here".into()],
            &place,
            Duration::from_secs(10),
        );
        assert_eq!(o, Outcome::Success);
        assert!(t.path().join("moved/written-here").exists());
        assert!(!Path::new("/tmp/written-here").exists());
        // A plain run through the helper, for the exit code path.
        assert_eq!(
            run_in(
                t.path(),
                t.path(),
                "/bin/false",
                &[],
                Duration::from_secs(10)
            ),
            Outcome::Failed(1)
        );
    }
}
