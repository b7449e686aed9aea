//! Settle: after each target, the file-list baseline moves and the list is published.
//!
//! The baseline (what this mirror carries) moves only after a good run, so a failed or killed
//! run is simply redone by the next trigger: after a good plain rsync of the whole module the
//! fetched list becomes it; after a good file-list run the fetched list's entries inside the
//! target replace the old ones there. Then the baseline is installed into dest as the module's
//! list, last, so mirrors that pull from this one (a hub's leaves) fetch a list that matches
//! its tree, after a dir push too.

use std::fs;

use super::decide::Decision;
use super::{event, shown_in_dest, Context, Event};
use crate::filelist::plan;
use crate::handler::destdir;
use crate::handler::last_run::TargetRun;
use crate::handler::state;
use crate::request::RelDir;

/// Settles one target after its transfer and removals. Err: the list could not be published,
/// which fails the run (a hub's leaves would fetch a stale list and run null forever).
pub(crate) fn target(
    ctx: &Context,
    dir: Option<&RelDir>,
    decision: &Decision,
    run: &TargetRun,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let baseline = ctx.md.path(state::LIST_BASELINE);
    match decision {
        // In case an earlier publish failed: a no-op when the published copy is current.
        Decision::Null => publish_list(ctx, events),
        Decision::Plain {
            adopt,
            forget_baseline,
            ..
        } => {
            if *forget_baseline {
                let _ = fs::remove_file(&baseline);
            }
            if *adopt && run.ok && dir.is_none() {
                return move_baseline(ctx, None, false, events);
            }
            Ok(())
        }
        Decision::Listed { .. } if run.ok => move_baseline(ctx, dir, true, events),
        Decision::Listed { .. } | Decision::Refused(_) => Ok(()),
    }
}

/// The fetched list (for a dir push: its entries inside the dir) becomes the baseline and is
/// published; a list that does not validate is not adopted. After a file-list run
/// (`stale_on_error`) the old baseline no longer describes the tree then: it is dropped, and
/// the next run is a plain rsync that makes a new one.
fn move_baseline(
    ctx: &Context,
    dir: Option<&RelDir>,
    stale_on_error: bool,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let baseline = ctx.md.path(state::LIST_BASELINE);
    match plan::write_baseline(&baseline, &ctx.md.path(state::LIST_FETCHED), dir, &baseline) {
        Ok(()) => publish_list(ctx, events),
        Err(e) => {
            events.push(event("filelist-invalid", e.to_string()));
            if stale_on_error {
                let _ = fs::remove_file(&baseline);
            }
            Ok(())
        }
    }
}

/// Installs the baseline into dest as the module's list. A copy with the same size and time
/// is left alone (the list may be large, and null runs are frequent).
fn publish_list(ctx: &Context, events: &mut Vec<Event>) -> Result<(), String> {
    let Some(list) = &ctx.m.filelist else {
        return Ok(());
    };
    let baseline = ctx.md.path(state::LIST_BASELINE);
    // The copy keeps the baseline's time to the nanosecond; a new baseline has a new one.
    let same = |a: &rustix::fs::Stat, b: &rustix::fs::Stat| {
        a.st_size == b.st_size && a.st_mtime == b.st_mtime && a.st_mtime_nsec == b.st_mtime_nsec
    };
    let current = rustix::fs::statat(
        &ctx.dest,
        list.as_str(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    if let (Ok(have), Ok(want)) = (current, rustix::fs::stat(&baseline)) {
        if same(&have, &want) {
            return Ok(());
        }
    }
    destdir::install_file_at(&ctx.dest, list, &baseline).map_err(|e| {
        let why = format!(
            "cannot publish the file list {}: {e}",
            shown_in_dest(ctx.m, list)
        );
        events.push(event("filelist-publish-error", why.clone()));
        why
    })
}
