//! The last run's record (`<state_dir>/<module>/status.json`): what each target of a batch got
//! and how it ended. Written by the runner, read by `status`, answers and a hub's pusher.

use serde::{Deserialize, Serialize};

use super::rsync::Changes;
use super::state::{self, read_state_file, ModuleDir};

/// Most requests, pushers and keys a record lists (the rest are counted).
pub(crate) const LISTED: usize = 100;

/// How a target was synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A plain rsync of the module or dir (named `full` in status and logs).
    #[serde(rename = "full")]
    Plain,
    /// The file list changed: only the entries that changed were transferred or removed.
    Filelist,
    /// The file list was unchanged: nothing else ran.
    Null,
    /// The dir is gone upstream: it was removed here.
    Removed,
    /// Nothing ran (refused before rsync started).
    None,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Plain => "full",
            RunKind::Filelist => "filelist",
            RunKind::Null => "null",
            RunKind::Removed => "removed",
            RunKind::None => "none",
        }
    }
}

/// One target (the module or a dir) within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRun {
    /// `(all)` or the dir.
    pub target: String,
    pub kind: RunKind,
    pub ok: bool,
    pub rsync_exit: Option<i32>,
    pub result: String,
    #[serde(flatten)]
    pub changes: Changes,
    /// The last rsync this target ran, shell-quoted, to rerun it by hand as the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsync_command: Option<String>,
}

impl TargetRun {
    /// A target whose rsync passes (and removals) all succeeded.
    pub(crate) fn succeeded(target: &str, kind: RunKind, changes: Changes) -> TargetRun {
        TargetRun {
            target: target.to_owned(),
            kind,
            ok: true,
            rsync_exit: Some(0),
            result: "ok".into(),
            changes,
            rsync_command: None,
        }
    }

    /// A target that failed; `rsync_exit` is rsync's code where it ran to one.
    pub(crate) fn failed(
        target: &str,
        kind: RunKind,
        rsync_exit: Option<i32>,
        result: String,
        changes: Changes,
    ) -> TargetRun {
        TargetRun {
            target: target.to_owned(),
            kind,
            ok: false,
            rsync_exit,
            result,
            changes,
            rsync_command: None,
        }
    }

    /// Refused before rsync started.
    pub(crate) fn refused(target: &str, why: String) -> TargetRun {
        TargetRun::failed(target, RunKind::None, None, why, Changes::default())
    }

    /// The file list was unchanged: nothing else ran.
    pub(crate) fn null(target: &str) -> TargetRun {
        TargetRun {
            target: target.to_owned(),
            kind: RunKind::Null,
            ok: true,
            rsync_exit: None,
            result: "ok: the file list is unchanged".into(),
            changes: Changes::default(),
            rsync_command: None,
        }
    }

    /// Records the command line of the last rsync the target ran.
    pub(crate) fn ran(mut self, command: Option<String>) -> TargetRun {
        self.rsync_command = command;
        self
    }

    /// A run that fell back to a plain rsync says why in its result.
    pub(crate) fn with_note(mut self, note: &str) -> TargetRun {
        if self.ok {
            self.result = format!("ok (plain rsync: {note})");
        }
        self
    }
}

/// One run of a batch: what was asked, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    /// The batch's requests, `(all)` or a dir, in arrival order (at most [`LISTED`]).
    pub requests: Vec<String>,
    /// How many requests the batch held.
    pub requests_total: usize,
    pub pushers: Vec<String>,
    pub keys: Vec<String>,
    pub runs: Vec<TargetRun>,
    pub ok: bool,
    /// The first failing rsync exit code, else 0 (null if rsync never ran to an exit code).
    pub rsync_exit: Option<i32>,
    pub result: String,
    /// Totals over the runs.
    #[serde(flatten)]
    pub changes: Changes,
    /// A trace (or lastsync) file was written after this run.
    pub trace_written: bool,
}

impl RunRecord {
    /// For an answer: `rsync code 5 at <end>`, or the result text when rsync had no exit code.
    pub fn failure_summary(&self) -> String {
        match self.rsync_exit {
            Some(code) if code != 0 => format!("rsync code {code} at {}", self.end),
            _ => format!("{} at {}", self.result, self.end),
        }
    }
}

pub fn read(md: &ModuleDir) -> Option<RunRecord> {
    let bytes = read_state_file(&md.path(state::STATUS)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(md: &ModuleDir, r: &RunRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    state::write(&md.path(state::STATUS), &bytes)
}
