//! Per-module state and the queue protocol (DESIGN.md section 4: one sync per module, no trigger
//! lost, none run twice in parallel, nothing stale after kill -9).
//!
//! Layout under `<state_dir>/<module>/`:
//! - `lock`: flock held by the one runner; the kernel drops it when the runner dies.
//! - `queue.lock`: short exclusive flock around every change to `pending`/`inflight`.
//! - `pending`: JSON lines, one per request not yet taken by a runner.
//! - `inflight`: the batch the current runner took; a runner killed mid-sync leaves it behind and
//!   the next runner merges it into its own batch.
//!
//! Requesters append to `pending` first and only then try the module lock; a runner drains
//! `pending` until empty, unlocks, and looks again. So a request is either seen by the runner
//! holding the lock, or its requester gets the lock itself.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::RelDir;

/// How a full-module sync is named in status, logs and the runner's records.
pub const FULL_SYNC: &str = "(all)";

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at: String,
    /// `None` is a full-module sync.
    pub dir: Option<String>,
    pub from: String,
    pub key: String,
}

impl Entry {
    pub fn target(&self) -> String {
        self.dir.clone().unwrap_or_else(|| FULL_SYNC.to_owned())
    }
}

/// Creates a directory (0750) and its parents when missing.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// The state directory of one module.
#[derive(Debug, Clone)]
pub struct ModuleDir {
    pub dir: PathBuf,
}

/// The held module lock; dropping it unlocks.
pub struct ModuleLock(#[allow(dead_code)] File);

impl ModuleDir {
    pub fn new(state_dir: &Path, module: &str) -> ModuleDir {
        ModuleDir {
            dir: state_dir.join(module),
        }
    }

    pub fn create(state_dir: &Path, module: &str) -> io::Result<ModuleDir> {
        let md = ModuleDir::new(state_dir, module);
        ensure_dir(&md.dir)?;
        Ok(md)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn open_rw(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(self.path(name))
    }

    /// Takes the module lock if nobody holds it.
    pub fn try_lock(&self) -> io::Result<Option<ModuleLock>> {
        let f = self.open_rw("lock")?;
        match f.try_lock() {
            Ok(()) => Ok(Some(ModuleLock(f))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn queue_lock(&self) -> io::Result<File> {
        let f = self.open_rw("queue.lock")?;
        f.lock()?;
        Ok(f)
    }

    /// Records a request. Must happen before [`ModuleDir::try_lock`] (see the module docs).
    pub fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_string(entry).map_err(io::Error::other)?;
        line.push('\n');
        let _guard = self.queue_lock()?;
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(self.path("pending"))?;
        f.write_all(line.as_bytes())
    }

    /// Takes everything pending (plus a batch left in flight by a killed runner) as the next batch.
    /// Only the lock holder calls this.
    pub fn take(&self) -> io::Result<Vec<Entry>> {
        let _guard = self.queue_lock()?;
        let mut batch = read_entries(&self.path("inflight"))?;
        let pending = read_entries(&self.path("pending"))?;
        if pending.is_empty() {
            return Ok(batch);
        }
        batch.extend(pending);
        // inflight first, atomically; then empty pending. A kill in between only duplicates.
        write_entries_atomic(&self.path("inflight"), &batch)?;
        File::create(self.path("pending"))?;
        Ok(batch)
    }

    /// The batch ran (or was recorded as failed): forget it.
    pub fn finish(&self) -> io::Result<()> {
        let _guard = self.queue_lock()?;
        match fs::remove_file(self.path("inflight")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn has_pending(&self) -> bool {
        fs::metadata(self.path("pending")).is_ok_and(|m| m.len() > 0)
    }

    pub fn pending(&self) -> io::Result<Vec<Entry>> {
        read_entries(&self.path("pending"))
    }

    pub fn inflight(&self) -> io::Result<Vec<Entry>> {
        read_entries(&self.path("inflight"))
    }
}

/// Reads JSON lines; a missing file is empty, a torn or invalid line is skipped.
fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_string(&mut text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        .filter(|e| e.dir.as_deref().is_none_or(|d| RelDir::parse(d).is_ok()))
        .collect())
}

fn write_entries_atomic(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).map_err(io::Error::other)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes via a temp file and rename, so readers see the old or the new file, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Per-process temp name: concurrent writers (e.g. of the rsync version cache) never share one.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// What a batch means: `[None]` for a full sync (it swallows every dir), else the dirs that are
/// not inside another requested dir, sorted, each once.
pub fn coalesce(batch: &[Entry]) -> Vec<Option<RelDir>> {
    let mut dirs = Vec::new();
    for e in batch {
        match e.dir.as_deref().map(RelDir::parse) {
            None => return vec![None],
            Some(Ok(d)) => dirs.push(d),
            Some(Err(_)) => {} // read_entries already dropped these
        }
    }
    dirs.sort();
    dirs.dedup();
    let keep: Vec<RelDir> = dirs
        .iter()
        .filter(|d| !dirs.iter().any(|o| o != *d && d.is_within(o)))
        .cloned()
        .collect();
    keep.into_iter().map(Some).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(dir: Option<&str>) -> Entry {
        Entry {
            at: "t".into(),
            dir: dir.map(str::to_owned),
            from: "local".into(),
            key: "-".into(),
        }
    }

    fn names(v: Vec<Option<RelDir>>) -> Vec<String> {
        v.into_iter()
            .map(|d| d.map_or("(all)".to_owned(), |d| d.to_string()))
            .collect()
    }

    #[test]
    fn full_sync_swallows_dirs() {
        let b = [e(Some("a")), e(None), e(Some("b/c"))];
        assert_eq!(names(coalesce(&b)), ["(all)"]);
    }

    #[test]
    fn nested_and_duplicate_dirs_collapse() {
        let b = [
            e(Some("a/b/c")),
            e(Some("ab")),
            e(Some("a")),
            e(Some("x/y")),
            e(Some("x/y")),
            e(Some("a/b")),
        ];
        assert_eq!(names(coalesce(&b)), ["a", "ab", "x/y"]);
        assert!(coalesce(&[]).is_empty());
    }

    #[test]
    fn append_take_finish_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        md.append(&e(Some("a"))).unwrap();
        md.append(&e(None)).unwrap();
        assert!(md.has_pending());
        let batch = md.take().unwrap();
        assert_eq!(batch.len(), 2);
        assert!(!md.has_pending());
        // A runner killed here leaves inflight; the next take merges it with new requests.
        md.append(&e(Some("b"))).unwrap();
        assert_eq!(md.take().unwrap().len(), 3);
        md.finish().unwrap();
        assert!(md.take().unwrap().is_empty());
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        let held = md.try_lock().unwrap();
        assert!(held.is_some());
        assert!(md.try_lock().unwrap().is_none());
        drop(held);
        assert!(md.try_lock().unwrap().is_some());
    }
}
