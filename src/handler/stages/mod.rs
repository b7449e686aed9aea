//! The stages of one run, in the order the runner calls them for each target of a batch (the
//! whole module, or a dir of it):
//!
//! - [`transfer::fetch_list`]: once per batch, a module with a file list fetches it;
//! - [`decide`]: what the target gets: `null` (the list is unchanged), a file-list run with its
//!   plan, a plain rsync (adopting the fetched list afterwards, or not), or a refusal;
//! - [`transfer`]: the rsync passes (two with `last`), inside the opened destination;
//! - [`remove`]: the entries that left the list, or a pushed dir that is gone upstream;
//! - [`settle`]: the baseline moves and the list is published in dest for downstream mirrors;
//! - [`record`]: after every target, the run's record and the trace files.
//!
//! Data flows one way: each stage takes the [`Context`] and what the earlier stages returned,
//! and returns a value; what is worth a log line comes back as [`Event`]s, which the runner
//! writes. No stage imports another stage or the runner. The settle stage runs per target,
//! since an earlier target's baseline feeds a later target's decision.

pub(crate) mod decide;
pub(crate) mod record;
pub(crate) mod remove;
pub(crate) mod settle;
pub(crate) mod transfer;

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use super::config::{Config, Module};
use super::destdir;
use super::queue::WHOLE_MODULE;
use super::rsync;
use super::state::{self, ModuleDir};
use crate::request::RelDir;

/// Where a file under dest is, for an error message: `<dest>/<rel>`.
pub(crate) fn shown_in_dest(m: &Module, rel: &RelDir) -> String {
    m.dest.join(rel.as_str()).display().to_string()
}

/// What every stage of a batch shares: the config, the module, its state dir, the opened
/// destination (every write into the tree goes through this fd) and the batch's rsync log.
pub(crate) struct Context<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) m: &'a Module,
    pub(crate) md: &'a ModuleDir,
    pub(crate) dest: OwnedFd,
    pub(crate) log: File,
}

impl<'a> Context<'a> {
    /// What must hold before any rsync starts: rsync new enough, dest opened (and checked),
    /// the rsync log truncated for this batch.
    pub(crate) fn open(cfg: &'a Config, m: &'a Module, md: &'a ModuleDir) -> Result<Self, String> {
        rsync::check_version(&cfg.rsync, &cfg.state_dir, true)?;
        let dest = destdir::open_dest(&m.dest).map_err(|e| format!("dest: {e}"))?;
        // What `check` refuses, a run refuses too, before it transfers anything: content that
        // lands where the trace, lastsync and the published list cannot would look synced.
        rustix::fs::accessat(&dest, ".", rustix::fs::Access::WRITE_OK, rustix::fs::AtFlags::EACCESS)
            .map_err(|e| {
                format!(
                    "dest {} is not writable by this account: {} (`mirrorpush-handler check` says what to fix)",
                    m.dest.display(),
                    std::io::Error::from(e)
                )
            })?;
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(md.path(state::RSYNC_LOG))
            .map_err(|e| format!("cannot write {}: {e}", state::RSYNC_LOG))?;
        Ok(Context {
            cfg,
            m,
            md,
            dest,
            log,
        })
    }
}

/// Something a stage did that belongs in `handler.log` (`verdict=<verdict> detail="..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) verdict: &'static str,
    pub(crate) detail: String,
}

pub(crate) fn event(verdict: &'static str, detail: impl Into<String>) -> Event {
    Event {
        verdict,
        detail: detail.into(),
    }
}

// The values that flow from one stage to the next live here, so that no stage imports another.

/// The module's file list for this batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListFetch {
    /// The module has no file list.
    NotConfigured,
    /// Fetched into the state dir.
    Fetched,
    /// Not fetched, and why: the batch runs plain.
    Failed(String),
}

/// What a target gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The list is unchanged since the last good run: nothing else runs.
    Null,
    /// Transfer the planned entries and remove those that left the list (the plan is in the
    /// state dir).
    Listed {
        /// Entries to transfer: without any, nothing is opened or created under dest.
        transfer: u64,
    },
    /// A plain rsync of the target.
    Plain {
        /// After a good one of the whole module the fetched list becomes the baseline.
        adopt: bool,
        /// Why a module with a file list runs plain, said in the run's result.
        note: Option<String>,
        /// The stored baseline no longer parses: drop it.
        forget_baseline: bool,
    },
    /// Refused before anything ran (a file-list run that may not go ahead).
    Refused(String),
}

impl Decision {
    pub(crate) fn plain(adopt: bool, note: Option<String>) -> Decision {
        Decision::Plain {
            adopt,
            note,
            forget_baseline: false,
        }
    }
}

/// How a target is named in status and logs: `(all)` or the dir.
pub(crate) fn target_name(dir: Option<&RelDir>) -> &str {
    dir.map_or(WHOLE_MODULE, RelDir::as_str)
}

/// Paths under dest that only the handler writes (trace, lastsync, the published list): never
/// transferred or removed by a list.
pub(crate) fn own_paths(m: &Module) -> Vec<Vec<u8>> {
    m.own_files()
        .into_iter()
        .chain(m.filelist.iter())
        .map(|p| p.as_str().as_bytes().to_vec())
        .collect()
}
