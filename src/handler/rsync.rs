//! Running rsync: exact argv (no shell), scrubbed environment, started inside the opened
//! destination directory, its own process group (killed whole on timeout, and by a guard process
//! if the runner itself is killed), version floor, and what the run changed.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::child;
use super::config::Module;
use super::state::{self, read_state_file};

/// rsync 3.5.0 fixes 33 CVEs of earlier versions, among them a destination symlink race.
pub const MIN_VERSION: (u32, u32, u32) = (3, 5, 0);
/// rsync's own I/O timeout (`--timeout`), in seconds.
const IO_TIMEOUT_SECS: u64 = 600;
const CONNECT_TIMEOUT_SECS: u64 = 60;
/// How long rsync gets between SIGTERM and SIGKILL after the wall-clock timeout.
const TERM_GRACE: Duration = Duration::from_secs(10);
/// Itemized lines copied into rsync.log per run; the rest are only counted.
const LOGGED_ITEMS: u64 = 10_000;

/// The mirror's modes, whatever the upstream serves: directories 0755, files 0644 (0755 when
/// executable upstream), never setuid, setgid or sticky, never group- or world-writable. With
/// `-rlpt` instead of `-a`, owners, groups, devices and special files are not taken either.
pub const CHMOD: &str = "--chmod=D755,Fu=rwX,Fgo=rX,Fugo-st";

/// One rsync invocation, from config and validated input only.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pass {
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
pub fn args(module: &Module, job: &Pass) -> Vec<OsString> {
    let mut a: Vec<String> = Vec::new();
    a.push(
        if job.files_from.is_some() {
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
    if job.delete {
        a.push("--delete-delay".into());
        a.push(format!("--max-delete={}", module.max_delete));
    }
    // Ours first: the first matching filter rule wins, so an admin's include cannot undo them.
    for p in &job.protect {
        a.push(format!("--filter=P /{p}"));
        a.push(format!("--exclude=/{p}"));
    }
    for p in &job.exclude {
        a.push(format!("--exclude={p}"));
    }
    if let Some(list) = &job.files_from {
        a.push(format!("--files-from={}", list.display()));
        a.push("--from0".into());
        // An entry gone upstream since the list was written is picked up by the next list.
        a.push("--ignore-missing-args".into());
        // A directory replaced upstream by a file or link is replaced here too.
        a.push("--force".into());
    }
    a.extend(module.rsync_args.iter().cloned());
    a.push("--".into());
    a.push(job.source.clone());
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
    let cache_path = state_dir.join(state::VERSION_CACHE);
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
    let out = child::scrubbed(&mut cmd)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rsync.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| format!("cannot read the version of {}", rsync.display()))?;
    if write_cache {
        if let Ok(bytes) = serde_json::to_vec(&Cache { key, version }) {
            // A cache we cannot write only costs speed.
            let _ = crate::atomic::write(&cache_path, &bytes);
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
pub enum RsyncExit {
    Success,
    Failed(i32),
    Signalled(i32),
    TimedOut(Duration),
    NotStarted(String),
}

impl RsyncExit {
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            RsyncExit::Success => Some(0),
            RsyncExit::Failed(c) => Some(*c),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RsyncExit::Success => "ok".to_owned(),
            RsyncExit::Failed(c) => format!("rsync failed with exit code {c}"),
            RsyncExit::Signalled(s) => format!("rsync was killed by signal {s}"),
            RsyncExit::TimedOut(d) => format!(
                "rsync timed out after {} and was killed",
                humantime::format_duration(*d)
            ),
            RsyncExit::NotStarted(e) => format!("rsync could not start: {e}"),
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
pub(crate) fn run(
    rsync: &Path,
    args: &[OsString],
    place: &RunPlace,
    timeout: Duration,
) -> (RsyncExit, Changes) {
    let err = match place.log.try_clone() {
        Ok(e) => e,
        Err(e) => return (RsyncExit::NotStarted(e.to_string()), Changes::default()),
    };
    let guard = match child::Guard::start() {
        Ok(g) => g,
        Err(e) => {
            return (
                RsyncExit::NotStarted(format!("guard: {e}")),
                Changes::default(),
            )
        }
    };
    let mut cmd = Command::new(rsync);
    cmd.args(args);
    // Own group: the timeout (or the guard) kills rsync and the children it forks together.
    child::scrubbed(&mut cmd).stdout(Stdio::piped()).stderr(err);
    // Into the checked directory itself; if the runner dies, rsync must not run on unsupervised.
    child::in_dir_supervised(&mut cmd, place.cwd);
    let mut running = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            guard.done();
            return (RsyncExit::NotStarted(e.to_string()), Changes::default());
        }
    };
    let pgid = running.id() as i32;
    guard.watch(pgid);
    child::record_group(place.pgid_file, pgid);
    let reader = running.stdout.take().map(|out| {
        let mut log = place.log.try_clone().ok();
        std::thread::spawn(move || read_output(out, log.as_mut()))
    });
    let status = child::wait_bounded(running, timeout, TERM_GRACE);
    let changes = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    guard.done();
    let _ = fs::remove_file(place.pgid_file);
    let exit = match status {
        None => RsyncExit::TimedOut(timeout),
        Some(Ok(st)) => match (st.code(), st.signal()) {
            (Some(0), _) => RsyncExit::Success,
            (Some(c), _) => RsyncExit::Failed(c),
            (None, Some(s)) => RsyncExit::Signalled(s),
            (None, None) => RsyncExit::NotStarted("unknown exit status".into()),
        },
        Some(Err(e)) => RsyncExit::NotStarted(format!("waiting for rsync: {e}")),
    };
    (exit, changes)
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
        let job = Pass {
            source: "rsync://up/m/".into(),
            delete: true,
            protect: vec!["project/trace/me".into()],
            ..Pass::default()
        };
        assert_eq!(
            strs(args(&m, &job)),
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
        let first_pass = Pass {
            source: "/up/m/a/b/".into(),
            exclude: vec!["repodata/".into()],
            ..Pass::default()
        };
        let a = strs(args(&module("/up/m/"), &first_pass));
        assert!(!a
            .iter()
            .any(|x| x.starts_with("--contimeout") || x.contains("delete")));
        assert!(a.contains(&"--exclude=repodata/".to_owned()));
        assert_eq!(a[a.len() - 2..], ["/up/m/a/b/", "."]);
        let list = Pass {
            source: "/up/m/".into(),
            files_from: Some("/state/m/transfer".into()),
            ..Pass::default()
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
    fn run_in(
        dir: &Path,
        state: &Path,
        program: &str,
        args: &[&str],
        limit: Duration,
    ) -> RsyncExit {
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
        assert_eq!(o, RsyncExit::TimedOut(limit));
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
        assert_eq!(o, RsyncExit::Success);
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
            RsyncExit::Failed(1)
        );
    }
}
