//! The state directory: every file the handler keeps there is named here, and opened here
//! without following symlinks. What each file means belongs to the module that reads and
//! writes it (named beside each constant); files are replaced only through the crate's one
//! atomic writer.
//!
//! `<state_dir>/`: [`LOG`], [`VERSION_CACHE`], and one directory per module holding the rest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::private_dir;

/// `handler.log`: one line per request and per run ([`super::log`]).
pub(crate) const LOG: &str = "handler.log";
/// The rsync binary's version, keyed by its inode and mtime ([`super::rsync`]).
pub(crate) const VERSION_CACHE: &str = "rsync-version.json";

// Per module, the queue protocol ([`super::queue`]).
/// flock held by the one runner; the kernel drops it when the runner dies.
pub(crate) const LOCK: &str = "lock";
/// Short exclusive flock around every change to the queue files.
pub(crate) const QUEUE_LOCK: &str = "queue.lock";
/// The last request sequence number handed out.
pub(crate) const SEQ: &str = "seq";
/// JSON lines, one per request not yet taken by a runner.
pub(crate) const PENDING: &str = "pending";
/// The batch the current runner took.
pub(crate) const INFLIGHT: &str = "inflight";
/// The outcome of the last batches, for waiters.
pub(crate) const RESULTS: &str = "results";

/// flock'ed by a request that waits for its run (wait mode), one file per slot
/// ([`super::serve`]): a counting lock that bounds the waiting processes.
pub(crate) fn waiter_slot(i: usize) -> String {
    format!("waiter.{i}")
}

// Per module, a run ([`super::runner`] and its stages).
/// The last run's record ([`super::status`]).
pub(crate) const STATUS: &str = "status.json";
/// rsync's stderr and itemized changes of the last batch.
pub(crate) const RSYNC_LOG: &str = "rsync.log";
/// The process group of a running rsync, so the next runner can kill leftovers.
pub(crate) const RSYNC_PGID: &str = "rsync.pgid";
/// The last fetch of the module's file list, kept as the basis of the next fetch.
pub(crate) const LIST_FETCHED: &str = "filelist.fetched";
/// The last list applied: what this mirror carries.
pub(crate) const LIST_BASELINE: &str = "filelist.baseline";
/// The identity of the fetched list and the baseline last found byte-identical
/// ([`super::list_identity`]).
pub(crate) const LIST_SAME: &str = "filelist.same";
/// The planner's output: entries to transfer, entries to remove (NUL-separated).
pub(crate) const LIST_TRANSFER: &str = "filelist.transfer";
pub(crate) const LIST_DELETE: &str = "filelist.delete";
/// The type letter of each entry to transfer, in the transfer list's order.
pub(crate) const LIST_TRANSFER_KINDS: &str = "filelist.transfer.kinds";
/// The transfer list rewritten for rsync: the first pass, and what `last` holds back.
pub(crate) const LIST_TRANSFER_RSYNC: &str = "filelist.transfer.rsync";
pub(crate) const LIST_TRANSFER_LAST: &str = "filelist.transfer.last";

// Per module, a hub's pushes ([`super::downstream`]).
/// The last downstream push's record.
pub(crate) const DOWNSTREAM: &str = "downstream.json";
/// flock: held by the one pusher that pushes.
pub(crate) const DOWNSTREAM_LOCK: &str = "downstream.lock";
/// flock: held by the one pusher waiting for [`DOWNSTREAM_LOCK`].
pub(crate) const DOWNSTREAM_WAIT: &str = "downstream.wait";
/// Short exclusive flock around every change to the two target files below.
pub(crate) const DOWNSTREAM_QUEUE_LOCK: &str = "downstream.queue.lock";
/// The targets queued for the pushers, one per line.
pub(crate) const DOWNSTREAM_PENDING: &str = "downstream.pending";
/// The targets of a batch, recorded before its transfer and queued after it.
pub(crate) const DOWNSTREAM_INTENDED: &str = "downstream.intended";

/// Most bytes read from a state file: far above what the queue's bounds allow.
const READ_LIMIT: u64 = 4 * 1024 * 1024;

/// Creates a directory (0750) and its parents when missing.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Creates `dir` (0750, with its parents) when missing and checks that it is private
/// ([`check_private_dir`]).
pub(crate) fn ensure_private_dir(dir: &Path, follow: bool) -> io::Result<()> {
    ensure_dir(dir)?;
    check_private_dir(dir, follow)
}

/// Whether the existing `dir` is private: see [`crate::private_dir`]. The top state dir may be
/// reached through a symlink (the admin's path); a module's may not.
pub(crate) fn check_private_dir(dir: &Path, follow: bool) -> io::Result<()> {
    let meta = if follow {
        fs::metadata(dir)?
    } else {
        fs::symlink_metadata(dir)?
    };
    if meta.file_type().is_symlink() {
        return Err(io::Error::other(private_dir::NotPrivate(format!(
            "{} is a symlink",
            dir.display()
        ))));
    }
    private_dir::check(dir, &meta, rustix::process::geteuid().as_raw()).map_err(io::Error::other)
}

pub(crate) use crate::private_dir::is_not_private;

/// Opens a state file for reading without following a symlink; `None` when missing.
pub(crate) fn open_state_file(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a state file (bounded), without following a symlink; empty when missing.
pub(crate) fn read_state_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(f) = open_state_file(path)? {
        f.take(READ_LIMIT).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// The state directory of one module.
#[derive(Debug, Clone)]
pub(crate) struct ModuleDir {
    pub(crate) dir: PathBuf,
}

impl ModuleDir {
    pub(crate) fn new(state_dir: &Path, module: &str) -> ModuleDir {
        ModuleDir {
            dir: state_dir.join(module),
        }
    }

    pub(crate) fn create(state_dir: &Path, module: &str) -> io::Result<ModuleDir> {
        let md = ModuleDir::new(state_dir, module);
        ensure_private_dir(&md.dir, false)?;
        Ok(md)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opens (creating) a state file read-write, never through a symlink.
    pub(crate) fn open_rw(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(name))
    }
}

/// Replaces a state file whole (temp file and rename, fsynced).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic::write(path, bytes)
}
