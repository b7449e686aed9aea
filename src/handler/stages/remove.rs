//! Remove: what leaves the mirror, by fd inside dest, never through a symlink: the entries that
//! left the file list (after every transfer pass), or a pushed dir that is gone upstream.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::Path;

use super::{own_paths, Context};
use crate::handler::destdir;
use crate::handler::last_run::{RunKind, TargetRun};
use crate::handler::rsync::Changes;
use crate::handler::state;
use crate::request::RelDir;

/// After a good file-list transfer: removes the entries the planner listed.
pub(crate) fn listed(ctx: &Context, transferred: TargetRun) -> TargetRun {
    let mut run = transferred;
    match delete_listed(
        &ctx.dest,
        &ctx.md.path(state::LIST_DELETE),
        &own_paths(ctx.m),
    ) {
        Ok(n) => run.changes.deleted += n,
        Err(e) => {
            run.ok = false;
            run.result = format!("removing entries that left the list: {e}");
        }
    }
    run
}

/// Removes the entries the planner listed (children before parents); returns how many were
/// removed.
fn delete_listed(dest: &OwnedFd, list: &Path, own: &[Vec<u8>]) -> io::Result<u64> {
    let mut removed = 0;
    for path in BufReader::new(File::open(list)?).split(0) {
        let path = path?;
        if own.contains(&path) {
            continue;
        }
        removed += destdir::remove_path(dest, &path)?;
    }
    Ok(removed)
}

/// A pushed dir that no longer exists upstream is removed here too, with the empty parents
/// this run created for it.
pub(crate) fn gone_upstream(
    ctx: &Context,
    d: &RelDir,
    created: &[String],
    mut changes: Changes,
) -> TargetRun {
    let failed = |result: String, rsync_exit, changes| {
        TargetRun::failed(d.as_str(), RunKind::Removed, rsync_exit, result, changes)
    };
    // The same cap as any run's deletions: an upstream that lost a mount must not empty us.
    let would = destdir::count_path(&ctx.dest, d.as_str().as_bytes(), ctx.m.max_delete);
    if let Ok(n) = would {
        if n > ctx.m.max_delete {
            return failed(
                format!(
                    "the dir is gone upstream, but removing it would delete more than max_delete ({}) entries: nothing deleted",
                    ctx.m.max_delete
                ),
                Some(23),
                changes,
            );
        }
    }
    let removed = destdir::remove_path(&ctx.dest, d.as_str().as_bytes());
    destdir::remove_created(&ctx.dest, created);
    let created_leaf = created.last().is_some_and(|c| c == d.as_str());
    match removed {
        Ok(n) => {
            // The leaf this run created itself is not mirror content.
            let n = n - u64::from(created_leaf && n > 0);
            changes.deleted += n;
            TargetRun {
                target: d.to_string(),
                kind: RunKind::Removed,
                ok: true,
                rsync_exit: None,
                result: format!("the dir is gone upstream: removed here ({n} entries)"),
                changes,
                rsync_command: None,
            }
        }
        Err(e) => failed(
            format!("the dir is gone upstream, but removing it here failed: {e}"),
            None,
            changes,
        ),
    }
}
