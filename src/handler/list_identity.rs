//! The null check that reads neither list: the identity of the fetched list last known to be
//! byte for byte the baseline.
//!
//! A list of Fedora's size is 1.4 GB, and a null run is the common case, so comparing the
//! fetched list with the baseline on every run costs seconds of CPU. rsync (`-t`, quick check)
//! leaves the fetched file untouched when the upstream's list did not change, and replaces it
//! by rename (a new inode) when it fetches a new one. So once a run has found the fetched list
//! identical to the baseline (or adopted it as the baseline, byte for byte), it records both
//! files' identity — device, inode, size, mtime and ctime with their nanoseconds — in
//! [`state::LIST_SAME`], and a later run whose two files still have exactly that identity is
//! null without reading either.
//!
//! Why that is safe: anything that changes a file's content changes its ctime (which no
//! caller of `utimensat` can set), and a file replaced by rename is another inode; the record
//! is only written after the two files' identity was checked unchanged across the comparison
//! or copy that proved them equal. A record that does not match (a new fetch, a rewritten
//! baseline, a record from another file, an unreadable or planted one) only means the lists
//! are compared as before, and a record seen not to match is removed, so that it cannot match
//! a later file that happens to reuse the inode.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use super::state::{self, ModuleDir};

/// What the record may hold at most: two short lines.
const RECORD_LIMIT: u64 = 512;

/// One file's identity, from `lstat` (a regular file only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity(String);

impl Identity {
    /// The identity of the state file `name`; `None` when it is missing or not a regular file.
    pub(crate) fn of(md: &ModuleDir, name: &str) -> Option<Identity> {
        let m = fs::symlink_metadata(md.path(name)).ok()?;
        if !m.file_type().is_file() {
            return None;
        }
        Some(Identity(format!(
            "dev={} ino={} size={} mtime={}.{:09} ctime={}.{:09}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )))
    }
}

/// The record's text for a fetched list and a baseline.
fn record_text(fetched: &Identity, baseline: &Identity) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "fetched {}", fetched.0);
    let _ = writeln!(s, "baseline {}", baseline.0);
    s
}

/// Whether the fetched list and the baseline are the two files last recorded as identical.
/// Anything else (no record, an unreadable one, either file changed) is `false`, and a record
/// that does not match is removed.
pub(crate) fn known_same(md: &ModuleDir) -> bool {
    let path = md.path(state::LIST_SAME);
    let mut recorded = Vec::new();
    match state::open_state_file(&path) {
        Ok(Some(f)) => {
            if f.take(RECORD_LIMIT).read_to_end(&mut recorded).is_err() {
                recorded.clear();
            }
        }
        Ok(None) => return false,
        Err(_) => {}
    }
    let now = match (
        Identity::of(md, state::LIST_FETCHED),
        Identity::of(md, state::LIST_BASELINE),
    ) {
        (Some(f), Some(b)) => Some(record_text(&f, &b)),
        _ => None,
    };
    if now.is_some_and(|t| !recorded.is_empty() && t.as_bytes() == recorded) {
        return true;
    }
    let _ = fs::remove_file(&path);
    false
}

/// Records that the fetched list and the baseline are byte for byte the same file content,
/// as found by a comparison or a copy that read the fetched list while it had the identity
/// `fetched` (and the baseline `baseline`, when the baseline was read rather than written).
/// Nothing is recorded when either changed since (or a file is missing): the next run then
/// compares.
pub(crate) fn remember(md: &ModuleDir, fetched: &Identity, baseline: Option<&Identity>) {
    let (Some(f), Some(b)) = (
        Identity::of(md, state::LIST_FETCHED),
        Identity::of(md, state::LIST_BASELINE),
    ) else {
        return;
    };
    if &f != fetched || baseline.is_some_and(|was| *was != b) {
        return;
    }
    let _ = state::write(&md.path(state::LIST_SAME), record_text(&f, &b).as_bytes());
}
