//! Per-module state and the queue protocol: one sync per module, no trigger lost, none run twice
//! in parallel, nothing stale after kill -9, and a way for a waiting requester to learn the
//! result of the run that covered its request.
//!
//! Layout under `<state_dir>/<module>/` (named in [`super::state`], every file opened without
//! following symlinks):
//! - `lock`: flock held by the one runner; the kernel drops it when the runner dies.
//! - `queue.lock`: short exclusive flock around every change to the files below.
//! - `seq`: the last request sequence number handed out (fixed width, rewritten in place).
//! - `pending`: JSON lines, one per request not yet taken by a runner.
//! - `inflight`: the batch the current runner took; a runner killed mid-sync leaves it behind
//!   and the next runner merges it into its own batch.
//! - `results`: the outcome of the last [`RESULTS_KEPT`] batches, each with the highest request
//!   number it covered. A batch takes everything pending, so a request numbered `n` is covered
//!   by the first recorded batch whose number is at least `n`.
//!
//! Requesters append to `pending` first and only then try the module lock; a runner drains
//! `pending` until empty, unlocks, and looks again. So a request is either seen by the runner
//! holding the lock, or its requester gets the lock itself.
//!
//! An append that fails (disk full, quota) truncates `pending` back to its previous length, and
//! the next append cuts off any torn tail a crash left, so an acknowledged request always sits
//! on a line of its own: a reader never loses it to a torn neighbour.

use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::{self, read_state_file, ModuleDir};
use crate::request::RelDir;

/// How the whole module (as opposed to one dir of it) is named in status, logs and records.
pub(crate) const WHOLE_MODULE: &str = "(all)";
/// Past this size `pending` is collapsed into one full-sync request, which covers them all.
pub const MAX_PENDING_BYTES: u64 = 256 * 1024;
/// More distinct dirs than this in one batch run as one full sync instead.
pub const MAX_DISTINCT_DIRS: usize = 64;
/// Batch results kept for waiters.
pub const RESULTS_KEPT: usize = 64;
const SEQ_WIDTH: usize = 20;

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Sequence number within the module (0 in records written before numbers existed).
    #[serde(default)]
    pub seq: u64,
    pub at: String,
    /// `None` is a full-module sync.
    pub dir: Option<String>,
    pub from: String,
    pub key: String,
    /// Local `sync --full`: a plain rsync even where the module has a file list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain: bool,
}

impl Queued {
    pub fn target(&self) -> String {
        self.dir.clone().unwrap_or_else(|| WHOLE_MODULE.to_owned())
    }
}

/// How one batch ended, as waiters read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The highest request number in the batch: it covers every request up to this one.
    pub seq: u64,
    pub ok: bool,
    pub result: String,
    pub rsync_exit: Option<i32>,
    pub end: String,
}

/// The held module lock; dropping it unlocks.
pub(crate) struct ModuleLock(#[allow(dead_code)] File);

impl ModuleDir {
    /// Takes the module lock if nobody holds it.
    pub fn try_lock(&self) -> io::Result<Option<ModuleLock>> {
        let f = self.open_rw(state::LOCK)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(ModuleLock(f))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether a runner holds the module lock right now (probed by taking it for an instant).
    pub fn runner_active(&self) -> io::Result<bool> {
        Ok(self.try_lock()?.is_none())
    }

    fn queue_lock(&self) -> io::Result<File> {
        let f = self.open_rw(state::QUEUE_LOCK)?;
        f.lock()?;
        Ok(f)
    }

    /// Records a request and returns its sequence number. Must happen before
    /// [`ModuleDir::try_lock`] (see the module docs). On failure `pending` is as it was.
    pub fn append(&self, entry: &Queued) -> io::Result<u64> {
        let _guard = self.queue_lock()?;
        let seq = self.next_seq()?;
        let mut entry = entry.clone();
        entry.seq = seq;
        let mut f = self.open_rw(state::PENDING)?;
        let len = f.metadata()?.len();
        if len > MAX_PENDING_BYTES {
            // Collapse: one full sync covers every request pending, this one included.
            entry.dir = None;
            write_entries_atomic(&self.path(state::PENDING), &[entry])?;
            return Ok(seq);
        }
        let keep = complete_lines_len(&mut f, len)?;
        if keep != len {
            // A torn tail: an append that failed or was killed, never acknowledged.
            f.set_len(keep)?;
        }
        let mut line = serde_json::to_string(&entry).map_err(io::Error::other)?;
        line.push('\n');
        f.seek(SeekFrom::Start(keep))?;
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
            let _ = f.set_len(keep);
            return Err(e);
        }
        Ok(seq)
    }

    /// Hands out the next request number. The counter is rewritten in place at a fixed width,
    /// so once it exists updating it needs no new disk space.
    fn next_seq(&self) -> io::Result<u64> {
        let f = self.open_rw(state::SEQ)?;
        let mut buf = [0u8; SEQ_WIDTH];
        let n = f.read_at(&mut buf, 0)?;
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        let last = match text.trim().parse::<u64>() {
            Ok(v) => v,
            // Missing or damaged: never hand out a number a waiter may already hold.
            Err(_) => self.highest_known_seq(),
        };
        let next = last + 1;
        f.write_all_at(format!("{next:0SEQ_WIDTH$}\n").as_bytes(), 0)?;
        Ok(next)
    }

    fn highest_known_seq(&self) -> u64 {
        let entries = [self.pending(), self.inflight()]
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.seq);
        let results = self.results().into_iter().map(|r| r.seq);
        entries.chain(results).max().unwrap_or(0)
    }

    /// Takes everything pending (plus a batch left in flight by a killed runner) as the next
    /// batch. Only the lock holder calls this.
    pub fn take(&self) -> io::Result<Vec<Queued>> {
        let _guard = self.queue_lock()?;
        let mut batch = read_entries(&self.path(state::INFLIGHT))?;
        let pending = read_entries(&self.path(state::PENDING))?;
        if pending.is_empty() {
            return Ok(batch);
        }
        batch.extend(pending);
        // inflight first, atomically; then empty pending. A kill in between only duplicates.
        write_entries_atomic(&self.path(state::INFLIGHT), &batch)?;
        self.open_rw(state::PENDING)?.set_len(0)?;
        Ok(batch)
    }

    /// The batch ran: record its result for waiters and forget it.
    pub fn finish(&self, result: &BatchResult) -> io::Result<()> {
        let _guard = self.queue_lock()?;
        let mut results = self.results();
        results.push(result.clone());
        let skip = results.len().saturating_sub(RESULTS_KEPT);
        let mut text = String::new();
        for r in &results[skip..] {
            text.push_str(&serde_json::to_string(r).map_err(io::Error::other)?);
            text.push('\n');
        }
        state::write(&self.path(state::RESULTS), text.as_bytes())?;
        match fs::remove_file(self.path(state::INFLIGHT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Recorded batch results, oldest first.
    pub fn results(&self) -> Vec<BatchResult> {
        let bytes = read_state_file(&self.path(state::RESULTS)).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The result of the run that covered request `seq`, once it has ended.
    pub fn covering(&self, seq: u64) -> Option<BatchResult> {
        self.results().into_iter().find(|r| r.seq >= seq)
    }

    pub fn has_pending(&self) -> bool {
        fs::symlink_metadata(self.path(state::PENDING)).is_ok_and(|m| m.is_file() && m.len() > 0)
    }

    pub fn pending(&self) -> io::Result<Vec<Queued>> {
        read_entries(&self.path(state::PENDING))
    }

    pub fn inflight(&self) -> io::Result<Vec<Queued>> {
        read_entries(&self.path(state::INFLIGHT))
    }
}

/// The length of `f` up to and including its last newline (all of it when it ends in one).
fn complete_lines_len(f: &mut File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.take(len).read_to_end(&mut bytes)?;
    Ok(bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p as u64 + 1))
}

/// Reads JSON lines; a missing file is empty, a torn or invalid line is skipped.
fn read_entries(path: &Path) -> io::Result<Vec<Queued>> {
    let bytes = read_state_file(path)?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<Queued>(l).ok())
        .filter(|e| e.dir.as_deref().is_none_or(|d| RelDir::parse(d).is_ok()))
        .collect())
}

fn write_entries_atomic(path: &Path, entries: &[Queued]) -> io::Result<()> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).map_err(io::Error::other)?);
        text.push('\n');
    }
    state::write(path, text.as_bytes())
}

/// What a batch means: `[None]` for a full sync (it swallows every dir, and so do more than
/// [`MAX_DISTINCT_DIRS`] dirs), else the dirs that are not inside another requested dir, each
/// once, sorted by component. O(n log n) in the batch size.
pub fn coalesce(batch: &[Queued]) -> Vec<Option<RelDir>> {
    let mut dirs = Vec::with_capacity(batch.len());
    for e in batch {
        match e.dir.as_deref().map(RelDir::parse) {
            None => return vec![None],
            Some(Ok(d)) => dirs.push(d),
            Some(Err(_)) => {} // read_entries already dropped these
        }
    }
    // Component order puts every dir right after its ancestors (`a`, `a/b`, `a-c`), so one
    // pass that compares with the last kept dir drops everything nested.
    dirs.sort_by(|a, b| a.components().cmp(b.components()));
    let mut keep: Vec<RelDir> = Vec::new();
    for d in dirs {
        if keep.last().is_some_and(|k| d.is_within(k)) {
            continue;
        }
        keep.push(d);
        if keep.len() > MAX_DISTINCT_DIRS {
            return vec![None];
        }
    }
    keep.into_iter().map(Some).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn e(dir: Option<&str>) -> Queued {
        Queued {
            seq: 0,
            at: "t".into(),
            dir: dir.map(str::to_owned),
            from: "local".into(),
            key: "-".into(),
            plain: false,
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
            e(Some("a-c/x")),
            e(Some("a")),
            e(Some("x/y")),
            e(Some("x/y")),
            e(Some("a/b")),
        ];
        assert_eq!(names(coalesce(&b)), ["a", "a-c/x", "ab", "x/y"]);
        assert!(coalesce(&[]).is_empty());
    }

    #[test]
    fn too_many_distinct_dirs_become_one_full_sync() {
        let many: Vec<Queued> = (0..40_000).map(|i| e(Some(&format!("d{i}/x")))).collect();
        assert_eq!(names(coalesce(&many)), ["(all)"]);
        let few: Vec<Queued> = (0..MAX_DISTINCT_DIRS)
            .map(|i| e(Some(&format!("d{i}"))))
            .collect();
        assert_eq!(coalesce(&few).len(), MAX_DISTINCT_DIRS);
    }

    proptest::proptest! {
        #[test]
        fn coalescing_matches_the_obvious_quadratic_rule(
            raw in proptest::collection::vec("[ab]{1,2}(/[ab-]{1,2}){0,3}", 0..30)
        ) {
            let batch: Vec<Queued> = raw.iter().map(|d| e(Some(d))).collect();
            let mut dirs: Vec<RelDir> = raw.iter().filter_map(|d| RelDir::parse(d).ok()).collect();
            dirs.sort();
            dirs.dedup();
            let mut expected: Vec<String> = dirs
                .iter()
                .filter(|d| !dirs.iter().any(|o| o != *d && d.is_within(o)))
                .map(ToString::to_string)
                .collect();
            expected.sort();
            let mut got = names(coalesce(&batch));
            got.sort();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn append_take_finish_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        assert_eq!(md.append(&e(Some("a"))).unwrap(), 1);
        assert_eq!(md.append(&e(None)).unwrap(), 2);
        assert!(md.has_pending());
        let batch = md.take().unwrap();
        assert_eq!(batch.len(), 2);
        assert!(!md.has_pending());
        // A runner killed here leaves inflight; the next take merges it with new requests.
        assert_eq!(md.append(&e(Some("b"))).unwrap(), 3);
        let batch = md.take().unwrap();
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(md.covering(1).is_none());
        let r = BatchResult {
            seq: 3,
            ok: true,
            result: "ok".into(),
            rsync_exit: Some(0),
            end: "t".into(),
        };
        md.finish(&r).unwrap();
        assert!(md.take().unwrap().is_empty());
        assert_eq!(md.covering(2), Some(r.clone()));
        assert_eq!(md.covering(4), None);
    }

    #[test]
    fn a_torn_tail_never_swallows_the_next_request() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        md.append(&e(Some("a"))).unwrap();
        // What a failed or killed append leaves: half a record, no newline.
        let mut f = OpenOptions::new()
            .append(true)
            .open(md.path("pending"))
            .unwrap();
        f.write_all(br#"{"seq":9,"at":"t","dir":"to"#).unwrap();
        md.append(&e(Some("b"))).unwrap();
        let dirs: Vec<String> = md.pending().unwrap().iter().map(Queued::target).collect();
        assert_eq!(dirs, ["a", "b"]);
    }

    #[test]
    fn an_overflowing_queue_collapses_into_one_full_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        let long = "d".repeat(120);
        let mut last = 0;
        while md.path("pending").metadata().map_or(0, |m| m.len()) <= MAX_PENDING_BYTES {
            last = md.append(&e(Some(&format!("{long}/{last}")))).unwrap();
        }
        let seq = md.append(&e(Some("x"))).unwrap();
        assert_eq!(seq, last + 1);
        let pending = md.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].dir.clone(), pending[0].seq), (None, seq));
    }

    #[test]
    fn state_files_are_never_opened_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        let target = tmp.path().join("victim");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, md.path("pending")).unwrap();
        assert!(md.append(&e(None)).is_err());
        assert!(md.pending().is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        std::os::unix::fs::symlink(&target, md.path("status.json")).unwrap();
        state::write(&md.path("status.json"), b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let md = ModuleDir::create(tmp.path(), "m").unwrap();
        let held = md.try_lock().unwrap();
        assert!(held.is_some());
        assert!(md.try_lock().unwrap().is_none());
        assert!(md.runner_active().unwrap());
        drop(held);
        assert!(!md.runner_active().unwrap());
        assert!(md.try_lock().unwrap().is_some());
    }
}
