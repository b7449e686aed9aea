//! The listener's state dir: the one module that names its files.
//!
//! - `lock`: flock(2) held while the other files are read and changed, so the daemon and a
//!   `--stdin` run (a mail delivery) never interleave.
//! - `seen`: accepted trigger ids, one `<id> <expiry, epoch seconds>` line each, appended.
//!   An id is remembered until its trigger could no longer pass the age check (issued +
//!   `max_age` + the minute of allowed clock skew), so a replay is always caught; when `max_seen`
//!   live ids are remembered, new triggers are refused rather than old ids forgotten early.
//! - `status.json`: counters of accepted and refused triggers, by reason.
//! - `hints.json`: hints recorded and not yet synced (survives restarts).
//!
//! Every file is opened without following a symlink and only when it is a regular file (a
//! FIFO cannot block a reader), new files are created exclusively (mode 0640), and a state
//! dir that is a symlink is refused: whoever can plant links there can only make the
//! listener fail, never make it write elsewhere, even when an admin runs it as root.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufRead as _, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::AtomicFile;

const LOCK: &str = "lock";
const SEEN: &str = "seen";
const STATUS: &str = "status.json";
const HINTS: &str = "hints.json";

pub fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Most bytes read from `status.json` or `hints.json`; `seen` is bounded by `max_seen`.
const READ_LIMIT: u64 = 4 * 1024 * 1024;

/// Creates the state dir (mode 0750) if missing; refuses one that is a symlink, and one that is
/// not private to the account (see [`crate::private_dir`]: whoever could write there could
/// forget the triggers already seen, and replay one).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dir)?;
            if meta.file_type().is_symlink() {
                Err(io::Error::other("is a symlink: name the real directory"))
            } else {
                let uid = rustix::process::geteuid().as_raw();
                crate::private_dir::check(dir, &meta, uid).map_err(io::Error::other)
            }
        }
        Err(e) => Err(e),
    }
}

/// The exit code and message for an [`ensure_dir`] failure: a state dir that is not private is
/// the admin's to fix (77); anything else may pass (75).
pub fn dir_failure(dir: &Path, e: &io::Error) -> (i32, String) {
    if crate::private_dir::is_not_private(e) {
        (super::EXIT_NOPERM, format!("refused: {e}"))
    } else {
        (
            super::EXIT_TEMPFAIL,
            format!("state dir {}: {e}", dir.display()),
        )
    }
}

/// Opens an existing state file without following a symlink, and only a regular file.
fn open_regular(path: &Path, options: &mut fs::OpenOptions) -> io::Result<fs::File> {
    let f = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .mode(0o640)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// A whole small state file (bounded), without following a symlink; `None` when missing or
/// unreadable.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let f = open_regular(path, fs::OpenOptions::new().read(true)).ok()?;
    let mut bytes = Vec::new();
    f.take(READ_LIMIT).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The state dir's lock, held until dropped.
pub struct Locked {
    _file: fs::File,
}

pub fn lock(dir: &Path) -> io::Result<Locked> {
    let file = open_regular(
        &dir.join(LOCK),
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
    )?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(Locked { _file: file })
}

/// Replaces `path` by the crate's atomic writer, so a reader sees the old or the new file whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path, 0o640)?;
    f.write_all(bytes)?;
    f.commit(true)
}

/// The remembered ids. Call [`Seen::refresh`] under the lock before deciding, so ids another
/// process (a `--stdin` run) recorded are seen too.
pub struct Seen {
    path: PathBuf,
    ids: HashMap<String, u64>,
    max: usize,
    /// How far the file was read, and which file (compaction replaces it).
    offset: u64,
    inode: u64,
}

impl Seen {
    pub fn open(dir: &Path, max: usize) -> io::Result<Seen> {
        let mut s = Seen {
            path: dir.join(SEEN),
            ids: HashMap::new(),
            max,
            offset: 0,
            inode: 0,
        };
        s.refresh()?;
        Ok(s)
    }

    /// Reads what was appended since the last read (all of it if the file was replaced).
    pub fn refresh(&mut self) -> io::Result<()> {
        let mut f = match open_regular(&self.path, fs::OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ids.clear();
                self.offset = 0;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        if meta.ino() != self.inode || meta.len() < self.offset {
            self.ids.clear();
            self.offset = 0;
            self.inode = meta.ino();
        }
        f.seek(io::SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        // Only whole lines: a line being appended right now is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        for line in io::Cursor::new(&text[..whole]).lines() {
            let line = line?;
            if let Some((id, exp)) = line.split_once(' ') {
                if let Ok(exp) = exp.parse() {
                    self.ids.insert(id.to_owned(), exp);
                }
            }
        }
        self.offset += whole as u64;
        Ok(())
    }

    pub fn contains(&self, id: &str, now: SystemTime) -> bool {
        self.ids.get(id).is_some_and(|&exp| exp >= epoch(now))
    }

    /// Live ids remembered.
    pub fn live(&self, now: SystemTime) -> usize {
        let now = epoch(now);
        self.ids.values().filter(|&&exp| exp >= now).count()
    }

    /// How many more ids may be remembered now (count once per batch: this walks them all).
    pub fn room(&self, now: SystemTime) -> usize {
        self.max.saturating_sub(self.live(now))
    }

    /// Appends ids (with their expiry); compacts the file when most of it has expired.
    pub fn record(&mut self, new: &[(String, u64)], now: SystemTime) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for (id, exp) in new {
            text.push_str(&format!("{id} {exp}\n"));
        }
        let mut f = open_regular(&self.path, fs::OpenOptions::new().create(true).append(true))?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        drop(f);
        self.refresh()?;
        let live = self.live(now);
        if self.ids.len() > 1024 && self.ids.len() > 2 * live {
            self.compact(now)?;
        }
        Ok(())
    }

    fn compact(&mut self, now: SystemTime) -> io::Result<()> {
        let now = epoch(now);
        self.ids.retain(|_, exp| *exp >= now);
        let mut text = String::new();
        for (id, exp) in &self.ids {
            text.push_str(&format!("{id} {exp}\n"));
        }
        write_atomic(&self.path, text.as_bytes())?;
        let meta = fs::metadata(&self.path)?;
        self.inode = meta.ino();
        self.offset = meta.len();
        Ok(())
    }
}

/// What `mirrorpush-listen status` shows: counters since the state dir was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Signed triggers handed to the handler.
    pub accepted: u64,
    /// Refusals by reason (`signature`, `unknown-signer`, `not-allowed`, `expired`, `future`,
    /// `replay`, `grammar`, `not-json`, `malformed`, `too-large`, `unrouted`, `memory-full`,
    /// `undecodable`,
    /// `handler-64`, `handler-77`).
    pub refused: BTreeMap<String, u64>,
    /// Hint messages recorded.
    pub hints: u64,
    /// Handler runs started (one may cover many triggers).
    pub handoffs: u64,
    /// Hand-offs that ended in a failed sync.
    pub failed_runs: u64,
    pub acks_published: u64,
    pub acks_failed: u64,
}

impl Counters {
    pub fn refuse(&mut self, reason: &str) {
        *self.refused.entry(reason.to_owned()).or_default() += 1;
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    fn add(&mut self, d: &Counters) {
        self.accepted += d.accepted;
        for (k, v) in &d.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        self.hints += d.hints;
        self.handoffs += d.handoffs;
        self.failed_runs += d.failed_runs;
        self.acks_published += d.acks_published;
        self.acks_failed += d.acks_failed;
    }
}

/// The file behind `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusFile {
    #[serde(flatten)]
    pub counters: Counters,
    /// The daemon's connection: `connected`, `reconnecting`, or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

pub fn read_status(dir: &Path) -> StatusFile {
    read_small(&dir.join(STATUS))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `delta` to the counters on disk (under the lock) and records the broker state.
pub fn add_status(dir: &Path, delta: &Counters, broker: Option<&str>) -> io::Result<()> {
    let _l = lock(dir)?;
    let mut s = read_status(dir);
    s.counters.add(delta);
    if let Some(b) = broker {
        s.broker = Some(b.to_owned());
    }
    s.updated = Some(crate::bus::envelope::format_time(SystemTime::now()));
    let bytes = serde_json::to_vec_pretty(&s).map_err(io::Error::other)?;
    write_atomic(&dir.join(STATUS), &bytes)
}

/// A hint recorded and not yet synced to the listener's satisfaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHint {
    /// The `[[trigger]]`'s line in listen.toml: which hint this is.
    pub trigger_line: usize,
    /// The request to hand over (`sync <module> [dir]`).
    pub request: String,
    /// The last message for it (epoch seconds): the run waits until `settle` after this.
    pub last_message: u64,
    /// When the first hand-off for this hint happened; with `expect_change`, retries end at
    /// this plus `expect_change`.
    #[serde(default)]
    pub first_handoff: Option<u64>,
    /// Hand-offs so far (retries after null runs).
    #[serde(default)]
    pub attempts: u32,
    /// Not before (epoch seconds): the next hand-off.
    #[serde(default)]
    pub next_try: u64,
}

pub fn read_hints(dir: &Path) -> Vec<PendingHint> {
    read_small(&dir.join(HINTS))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn write_hints(dir: &Path, hints: &[PendingHint]) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(hints).map_err(io::Error::other)?;
    write_atomic(&dir.join(HINTS), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn seen_ids_persist_expire_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = Seen::open(dir.path(), 3).unwrap();
        s.record(&[("a".into(), 1_000_100), ("b".into(), 999_000)], now)
            .unwrap();
        assert!(s.contains("a", now));
        assert!(
            !s.contains("b", now),
            "expired ids are not replays: the age check refuses them"
        );
        assert_eq!(s.room(now), 2);
        // Another process (a --stdin run) appends; a refresh sees it.
        let mut other = Seen::open(dir.path(), 3).unwrap();
        other.record(&[("c".into(), 1_000_100)], now).unwrap();
        s.refresh().unwrap();
        assert!(s.contains("c", now));
        assert_eq!(Seen::open(dir.path(), 3).unwrap().live(now), 2);
    }

    #[test]
    fn planted_links_and_fifos_are_never_followed() {
        use std::os::unix::fs::{symlink, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ensure_dir(&state).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o750
        );
        // A state dir others can write in is refused, the way the handler refuses its own.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o770)).unwrap();
        let e = ensure_dir(&state).unwrap_err();
        assert_eq!(dir_failure(&state, &e).0, 77, "{e}");
        assert!(e.to_string().contains("writable by others"), "{e}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o750)).unwrap();
        ensure_dir(&state).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        // A link where the temp file of status.json goes, and links for lock and seen.
        let tmp = format!(".{STATUS}.{}.tmp", std::process::id());
        symlink(&victim, state.join(tmp)).unwrap();
        add_status(&state, &Counters::default(), Some("connected")).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(fs::symlink_metadata(state.join("status.json"))
            .unwrap()
            .is_file());
        assert_eq!(
            fs::metadata(state.join("status.json"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        for name in [LOCK, SEEN] {
            let other = tempfile::tempdir().unwrap();
            symlink(&victim, other.path().join(name)).unwrap();
            let failed = match name {
                LOCK => lock(other.path()).is_err(),
                _ => Seen::open(other.path(), 10).is_err(),
            };
            assert!(failed, "{name} followed a symlink");
        }
        // A FIFO as status.json: read as missing, not waited on forever.
        fs::remove_file(state.join("status.json")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            state.join("status.json"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(read_status(&state).counters, Counters::default());
        // A state dir that is a symlink is refused.
        let link = dir.path().join("link");
        symlink(&state, &link).unwrap();
        assert!(ensure_dir(&link).is_err());
    }

    #[test]
    fn counters_add_up_across_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Counters {
            accepted: 2,
            ..Default::default()
        };
        d.refuse("replay");
        add_status(dir.path(), &d, Some("connected")).unwrap();
        add_status(dir.path(), &d, None).unwrap();
        let s = read_status(dir.path());
        assert_eq!(s.counters.accepted, 4);
        assert_eq!(s.counters.refused["replay"], 2);
        assert_eq!(s.broker.as_deref(), Some("connected"));
    }
}
