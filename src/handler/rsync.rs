//! Running rsync: exact argv (no shell), scrubbed environment, own process group, wall-clock
//! timeout, version floor, and the symlink check for dir syncs.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{Module, SAFE_PATH};
use super::queue::write_atomic;
use crate::request::RelDir;

/// rsync before 3.4.0 has client-side CVEs exploitable by a hostile upstream.
pub const MIN_VERSION: (u32, u32, u32) = (3, 4, 0);
/// rsync's own I/O timeout (`--timeout`), in seconds.
const IO_TIMEOUT_SECS: u64 = 600;
const CONNECT_TIMEOUT_SECS: u64 = 60;
/// How long rsync gets between SIGTERM and SIGKILL after the wall-clock timeout.
const TERM_GRACE: Duration = Duration::from_secs(10);
const VERSION_CACHE: &str = "rsync-version.json";
/// Per module: the process group of a running rsync, so the next runner can kill leftovers.
pub const PGID_FILE: &str = "rsync.pgid";

/// The argv after the program name. Source and dest come only from config and the validated dir.
pub fn args(module: &Module, dir: Option<&RelDir>) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "-a",
        "--delete-delay",
        "--delay-updates",
        "--safe-links",
        "--mkpath",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    a.push(format!("--timeout={IO_TIMEOUT_SECS}").into());
    if module.is_daemon_source() {
        a.push(format!("--contimeout={CONNECT_TIMEOUT_SECS}").into());
    }
    a.extend(module.rsync_args.iter().map(OsString::from));
    a.push("--".into());
    let mut dest: OsString = module.dest.clone().into();
    match dir {
        None => {
            a.push(module.source.clone().into());
            dest.push("/");
        }
        Some(d) => {
            a.push(format!("{}{d}/", module.source).into());
            dest.push(format!("/{d}/"));
        }
    }
    a.push(dest);
    a
}

/// The first symlink among `dest/a`, `dest/a/b`, ... for dir `a/b/...`; missing parts are fine
/// (rsync's `--mkpath` creates them).
pub fn symlink_under(dest: &Path, dir: &RelDir) -> io::Result<Option<PathBuf>> {
    let mut p = dest.to_path_buf();
    for c in dir.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Ok(Some(p)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Parses `rsync  version 3.4.1  protocol version 32`.
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

/// Finds rsync's version, from the cache in `state_dir` when the binary is unchanged.
pub fn version(rsync: &Path, state_dir: &Path) -> Result<(u32, u32, u32), String> {
    let meta = fs::metadata(rsync).map_err(|e| format!("rsync {}: {e}", rsync.display()))?;
    let key = CacheKey {
        path: rsync.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    };
    let cache_path = state_dir.join(VERSION_CACHE);
    if let Some(c) = fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
    {
        if c.key == key {
            return Ok(c.version);
        }
    }
    let out = Command::new(rsync)
        .arg("--version")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rsync.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| format!("cannot read the version of {}", rsync.display()))?;
    if let Ok(bytes) = serde_json::to_vec(&Cache { key, version }) {
        // A cache we cannot write only costs speed.
        let _ = write_atomic(&cache_path, &bytes);
    }
    Ok(version)
}

/// Ok with the version, or a message saying what was found and what is required.
pub fn check_version(rsync: &Path, state_dir: &Path) -> Result<(u32, u32, u32), String> {
    let v = version(rsync, state_dir)?;
    if v < MIN_VERSION {
        let (a, b, c) = v;
        let (x, y, z) = MIN_VERSION;
        return Err(format!(
            "rsync {a}.{b}.{c} at {} is too old: {x}.{y}.{z} or newer is required (older clients are open to CVEs from a hostile upstream)",
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

/// Runs rsync once; its stdout and stderr go to `log` (the caller truncates it per batch).
pub fn run(
    rsync: &Path,
    args: &[OsString],
    log: &File,
    pgid_file: &Path,
    timeout: Duration,
) -> Outcome {
    let (out, err) = match (log.try_clone(), log.try_clone()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return Outcome::NotStarted(e.to_string()),
    };
    let parent = std::process::id();
    let mut cmd = Command::new(rsync);
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .env("HOME", "")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own group: the timeout kills rsync and the children it forks together.
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // If the runner is killed (kill -9), rsync must not run on unsupervised.
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
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    let pgid = child.id() as i32;
    // Best effort: without it a killed runner's leftovers are only stopped by PDEATHSIG.
    let _ = write_atomic(
        pgid_file,
        format!("{pgid} {}\n", start_time(pgid).unwrap_or(0)).as_bytes(),
    );
    // A thread blocks in wait(2) so that the end of rsync is seen at once (a polling loop
    // held the module lock up to one poll interval longer, answering pushes "queued").
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done.recv_timeout(timeout) {
        Ok(status) => status,
        Err(_) => {
            kill_group(pgid, &done);
            let _ = fs::remove_file(pgid_file);
            return Outcome::TimedOut(timeout);
        }
    };
    let _ = fs::remove_file(pgid_file);
    match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(0), _) => Outcome::Success,
            (Some(c), _) => Outcome::Failed(c),
            (None, Some(s)) => Outcome::Signalled(s),
            (None, None) => Outcome::NotStarted("unknown exit status".into()),
        },
        Err(e) => Outcome::NotStarted(format!("waiting for rsync: {e}")),
    }
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

/// Kills what is left of an rsync whose runner was killed, before a new run starts, so two
/// rsyncs never write the same tree. Only the lock holder calls this.
pub fn kill_leftover(pgid_file: &Path) {
    let Ok(text) = fs::read_to_string(pgid_file) else {
        return;
    };
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (Some(Some(pgid)), Some(Some(started))) = (it.next(), it.next()) else {
        let _ = fs::remove_file(pgid_file);
        return;
    };
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // A live process with that pid must be the same one (same start time); if the leader is
    // gone, the kernel does not hand its pid out while group members remain, so -pgid is ours.
    match start_time(pgid) {
        Some(t) if t != started => {
            let _ = fs::remove_file(pgid_file);
            return;
        }
        _ => {}
    }
    // SAFETY: kill(2) on a process group verified above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only tests for existence.
    while Instant::now() < until && unsafe { libc::kill(-pgid, 0) } == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(pgid_file);
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
        }
    }

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn argv_is_exact() {
        let m = module("rsync://up/m/");
        assert_eq!(
            strs(args(&m, None)),
            [
                "-a",
                "--delete-delay",
                "--delay-updates",
                "--safe-links",
                "--mkpath",
                "--timeout=600",
                "--contimeout=60",
                "--bwlimit=1M",
                "--",
                "rsync://up/m/",
                "/srv/m/"
            ]
        );
        let d = RelDir::parse("a/b").unwrap();
        let a = strs(args(&module("/up/m/"), Some(&d)));
        assert!(!a.iter().any(|x| x.starts_with("--contimeout")));
        assert_eq!(a[a.len() - 2..], ["/up/m/a/b/", "/srv/m/a/b/"]);
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
    }

    #[test]
    fn finds_symlinks_under_dest() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/b/l")).unwrap();
        let d = |s| RelDir::parse(s).unwrap();
        assert_eq!(symlink_under(t.path(), &d("a/b")).unwrap(), None);
        assert_eq!(symlink_under(t.path(), &d("a/missing/x")).unwrap(), None);
        assert_eq!(
            symlink_under(t.path(), &d("a/b/l/x")).unwrap(),
            Some(t.path().join("a/b/l"))
        );
    }

    #[test]
    fn timeout_kills_and_reports() {
        let t = tempfile::tempdir().unwrap();
        let o = run(
            Path::new("/bin/sleep"),
            &["30".into()],
            &File::create(t.path().join("log")).unwrap(),
            &t.path().join("pgid"),
            Duration::from_millis(300),
        );
        assert_eq!(o, Outcome::TimedOut(Duration::from_millis(300)));
        assert!(!t.path().join("pgid").exists());
    }
}
