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
/// Other lines of rsync's stdout copied per run: its statistics need about 20; the rest can
/// only be messages the upstream sends, which must not fill the disk either.
const LOGGED_OTHER: u64 = 1_000;

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

/// rsync's argv (after the program name) and how to read what that run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    args: Vec<OsString>,
    /// What `--out-format` puts before each itemized change of this run. Only lines that
    /// start with it are counted: rsync's stdout also carries text the upstream chooses (its
    /// MOTD, messages its sender prints), which could otherwise fake a change.
    marker: Option<String>,
    /// A one-file fetch bounded by `--max-size`: the file's name as rsync names it when it
    /// skips it (the source's last component) and the bound, so a file rsync skipped as too
    /// large is a failed fetch, not an unchanged one.
    bounded: Option<(String, u64)>,
}

impl Argv {
    /// The arguments after the program name.
    pub(crate) fn words(&self) -> &[OsString] {
        &self.args
    }
}

/// The argv of a transfer pass, with a fresh marker.
pub fn args(module: &Module, job: &Pass) -> Argv {
    args_with_marker(module, job, &new_marker())
}

/// An unguessable marker per run: 128 random bits, hex, and a `|`.
fn new_marker() -> String {
    let mut bytes = [0u8; 16];
    let filled = fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        // No /dev/urandom: the kernel's getrandom(2) directly.
        // SAFETY: writes at most `bytes.len()` bytes into `bytes`.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if usize::try_from(n).ok() != Some(bytes.len()) {
            // Still unique per run; guessable only by someone who knows the time and our pid.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            bytes[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
            bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
    }
    let mut m: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    m.push('|');
    m
}

fn args_with_marker(module: &Module, job: &Pass, marker: &str) -> Argv {
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
        ["--safe-links", "--delay-updates"]
            .iter()
            .map(|s| s.to_string()),
    );
    // `--itemize-changes` is `--out-format=%i %n%L`: the same lines, behind this run's marker.
    a.push(format!("--out-format={marker}%i %n%L"));
    a.push("--stats".into());
    a.push(format!("--timeout={IO_TIMEOUT_SECS}"));
    if module.is_daemon_source() {
        a.push(format!("--contimeout={CONNECT_TIMEOUT_SECS}"));
        // The daemon's message of the day is the upstream's text: not for the log's reader
        // to mistake for a change.
        a.push("--no-motd".into());
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
    Argv {
        args: a.into_iter().map(OsString::from).collect(),
        marker: Some(marker.to_owned()),
        bounded: None,
    }
}

/// The argv that fetches one file (a module's file list) from `source` into `dest_name` in the
/// working directory: times kept, so an unchanged list costs the upstream one stat, and the
/// previous fetch is the basis, so only a changed list's delta travels. A list larger than
/// `max_list_size` is not fetched (`--max-size`; rsync reports the skip, `--info=skip1`, and
/// [`run`] makes it a failed fetch). Only the admin's connection options apply.
pub fn fetch_args(module: &Module, source: &str, dest_name: &str) -> Argv {
    let mut a: Vec<String> = vec!["-t".into(), "--stats".into(), "--info=skip1".into()];
    a.push(format!("--timeout={IO_TIMEOUT_SECS}"));
    if module.is_daemon_source() {
        a.push(format!("--contimeout={CONNECT_TIMEOUT_SECS}"));
        a.push("--no-motd".into());
    }
    a.extend(super::config::fetch_options(&module.rsync_args));
    // Last: no option before it can raise the bound.
    a.push(format!("--max-size={}", module.max_list_size));
    a.push("--".into());
    a.push(source.to_owned());
    a.push(dest_name.to_owned());
    Argv {
        args: a.into_iter().map(OsString::from).collect(),
        marker: None,
        bounded: Some((source_name(source).to_owned(), module.max_list_size)),
    }
}

/// The last component of an rsync source (`rsync://h/m/a/list`, `h::m/list`, `/up/list`).
fn source_name(source: &str) -> &str {
    let last = source.rsplit('/').next().unwrap_or(source);
    last.rsplit("::").next().unwrap_or(last)
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
    /// rsync ended well but left the bounded file out: it is larger than the bound.
    TooLarge(String, u64),
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
            RsyncExit::TooLarge(name, limit) => {
                format!("{name} is larger than max_list_size ({limit} bytes) and was not fetched")
            }
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

    /// Counts one line of rsync's stdout. Changes are only read from lines behind this run's
    /// `marker` (its itemized changes, `line` already stripped of it when `marked`).
    fn count(&mut self, line: &str, marked: bool) -> LineKind {
        if !marked {
            if let Some(n) = line.strip_prefix("Total bytes received: ") {
                self.bytes_received = n.trim().replace(',', "").parse().unwrap_or(0);
            }
            return LineKind::Other;
        }
        if line.starts_with("*deleting ") {
            self.deleted += 1;
            return LineKind::Item;
        }
        let b = line.as_bytes();
        // `%i %n`: an 11-character code (YXcstpoguax), a space, the name.
        let itemized = b.len() > 12
            && b[11] == b' '
            && b"<>ch.".contains(&b[0])
            && b"fdLDS".contains(&b[1])
            && b[2..11].iter().all(|c| b"cstpoguaxT.+ ?n".contains(c));
        if !itemized {
            return LineKind::Item;
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
    argv: &Argv,
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
    cmd.args(&argv.args);
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
        let marker = argv.marker.clone();
        let bounded = argv.bounded.as_ref().map(|(name, _)| name.clone());
        std::thread::spawn(move || {
            read_output(out, log.as_mut(), marker.as_deref(), bounded.as_deref())
        })
    });
    let status = child::wait_bounded(running, timeout, TERM_GRACE);
    let (changes, skipped) = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    guard.done();
    let _ = fs::remove_file(place.pgid_file);
    let exit = match status {
        None => RsyncExit::TimedOut(timeout),
        Some(Ok(st)) => match (st.code(), st.signal()) {
            (Some(0), _) => match (&argv.bounded, skipped) {
                (Some((name, limit)), true) => RsyncExit::TooLarge(name.clone(), *limit),
                _ => RsyncExit::Success,
            },
            (Some(c), _) => RsyncExit::Failed(c),
            (None, Some(s)) => RsyncExit::Signalled(s),
            (None, None) => RsyncExit::NotStarted("unknown exit status".into()),
        },
        Some(Err(e)) => RsyncExit::NotStarted(format!("waiting for rsync: {e}")),
    };
    (exit, changes)
}

/// Reads rsync's stdout to the end: counts the changes behind `marker` (and copies those lines
/// to the log without it, up to [`LOGGED_ITEMS`]), copies other lines (statistics, messages)
/// up to [`LOGGED_OTHER`], and tells whether rsync skipped the `bounded` file as too large.
fn read_output(
    out: impl io::Read,
    mut log: Option<&mut File>,
    marker: Option<&str>,
    bounded: Option<&str>,
) -> (Changes, bool) {
    let mut changes = Changes::default();
    let mut skipped = false;
    let (mut items, mut others) = (0u64, 0u64);
    let over = bounded.map(|name| format!("{name} is over max-size"));
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (body, marked) = match marker.and_then(|m| line.strip_prefix(m.as_bytes())) {
            Some(rest) => (rest, true),
            None => (&line[..], false),
        };
        let text = String::from_utf8_lossy(body);
        let text = text.trim_end_matches('\n');
        if over.as_deref() == Some(text) {
            skipped = true;
        }
        let keep = match changes.count(text, marked) {
            LineKind::Item => {
                items += 1;
                items <= LOGGED_ITEMS
            }
            LineKind::Other => {
                others += 1;
                others <= LOGGED_OTHER
            }
        };
        if let (true, Some(f)) = (keep, log.as_mut()) {
            let _ = f.write_all(body);
        }
    }
    if others > LOGGED_OTHER {
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "({} more lines not logged)", others - LOGGED_OTHER);
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
    (changes, skipped)
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
            max_list_size: 3 << 30,
            max_list_entries: 20_000_000,
        }
    }

    fn strs(v: Argv) -> Vec<String> {
        v.args
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    /// An argv of a plain program (no marker, not bounded) for the process tests.
    fn plain(args: &[&str]) -> Argv {
        Argv {
            args: args.iter().map(OsString::from).collect(),
            marker: None,
            bounded: None,
        }
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
            strs(args_with_marker(&m, &job, "0123abcd|")),
            [
                "-rlpt",
                CHMOD,
                "--safe-links",
                "--delay-updates",
                "--out-format=0123abcd|%i %n%L",
                "--stats",
                "--timeout=600",
                "--contimeout=60",
                "--no-motd",
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
            .any(|x| x.starts_with("--contimeout") || x.contains("delete") || x == "--no-motd"));
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
        // Every run has its own marker, 128 random bits.
        let (x, y) = (new_marker(), new_marker());
        assert!(x != y && x.len() == 33 && x.ends_with('|'), "{x} {y}");
        let mut fetch_module = module("rsync://up/m/");
        fetch_module.rsync_args = vec!["--bwlimit=1M".into(), "--exclude=*.iso".into()];
        fetch_module.max_list_size = 1000;
        let f = fetch_args(
            &fetch_module,
            "rsync://up/m/fullfiletimelist-m",
            "filelist.fetched",
        );
        assert_eq!(
            f.bounded,
            Some(("fullfiletimelist-m".to_owned(), 1000)),
            "{f:?}"
        );
        assert_eq!(source_name("h::m/a/list"), "list");
        assert_eq!(source_name("h::list"), "list");
        assert_eq!(source_name("/up/list"), "list");
        assert_eq!(
            strs(f),
            [
                "-t",
                "--stats",
                "--info=skip1",
                "--timeout=600",
                "--contimeout=60",
                "--no-motd",
                "--bwlimit=1M",
                "--max-size=1000",
                "--",
                "rsync://up/m/fullfiletimelist-m",
                "filelist.fetched"
            ]
        );
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
        let out = "M|>f+++++++++ new\n\
                   M|>f..t...... touched\n\
                   M|cL+++++++++ link -> a\n\
                   M|cLc.T...... retargeted -> b\n\
                   M|cd+++++++++ dir/\n\
                   M|.d..t...... dir-time-only/\n\
                   M|*deleting   old\n\
                   cannot delete non-empty directory: x\n\
                   Total bytes received: 1,234\n\
                   sent 1 bytes  received 2 bytes\n";
        let t = tempfile::tempdir().unwrap();
        let mut log = File::create(t.path().join("log")).unwrap();
        let (c, skipped) = read_output(out.as_bytes(), Some(&mut log), Some("M|"), None);
        assert_eq!(
            c,
            Changes {
                transferred: 5,
                deleted: 1,
                bytes_received: 1234
            }
        );
        assert!(c.changed_anything() && !skipped);
        // The log reads as rsync's own itemized output: the marker is not in it.
        let logged = fs::read_to_string(t.path().join("log")).unwrap();
        assert_eq!(logged, out.replace("M|", ""));
    }

    /// Issue 16 item 2: an upstream's MOTD (or any text its sender prints) that looks like an
    /// itemized change counts nothing; only lines behind this run's marker do.
    #[test]
    fn unmarked_lines_that_look_like_changes_count_nothing() {
        let out = ">f+++++++++ not/really/changed\n\
                   *deleting   not/really/deleted\n\
                   cd+++++++++ fake/\n\
                   OTHER|>f+++++++++ another/run/marker\n\
                   Total bytes received: 10\n";
        let (c, _) = read_output(out.as_bytes(), None, Some("b6f1|"), None);
        assert_eq!(
            c,
            Changes {
                transferred: 0,
                deleted: 0,
                bytes_received: 10
            }
        );
        assert!(!c.changed_anything());
    }

    #[test]
    fn a_fetch_rsync_skipped_for_size_is_noticed() {
        let (_, skipped) = read_output(
            &b"fullfiletimelist-m is over max-size\nTotal bytes received: 9\n"[..],
            None,
            None,
            Some("fullfiletimelist-m"),
        );
        assert!(skipped);
        let (_, skipped) = read_output(
            &b"other is over max-size\n"[..],
            None,
            None,
            Some("fullfiletimelist-m"),
        );
        assert!(!skipped);
    }

    #[test]
    fn the_log_keeps_a_bounded_number_of_other_lines() {
        let out = "noise\n".repeat(LOGGED_OTHER as usize + 5);
        let t = tempfile::tempdir().unwrap();
        let mut log = File::create(t.path().join("log")).unwrap();
        read_output(out.as_bytes(), Some(&mut log), Some("M|"), None);
        let logged = fs::read_to_string(t.path().join("log")).unwrap();
        assert_eq!(logged.lines().count(), LOGGED_OTHER as usize + 1);
        assert!(logged.ends_with("(5 more lines not logged)\n"), "{logged}");
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
        run(Path::new(program), &plain(args), &place, limit).0
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
            &plain(&["written-here"]),
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
