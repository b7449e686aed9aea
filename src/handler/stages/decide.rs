//! Decide: what one target of a batch gets, in one place.
//!
//! A module without a file list always gets a plain rsync. With one, against the last list this
//! mirror applied (the baseline): an unchanged list is a null run; a changed one a file-list run
//! of the planned entries. Lists that cannot be trusted (truncated, hostile paths, an entry
//! below a symlink, duplicates, a version above 3, a stored baseline that no longer parses) fall
//! back to a plain rsync, which repairs the mirror whatever the list said, and an invalid list
//! never becomes the baseline. A plan that would delete more than `max_delete` entries is
//! refused: nothing is transferred or deleted and the run fails with the reason.

use std::collections::HashSet;

use super::{event, Context, Decision, Event, ListFetch};
use crate::filelist;
use crate::filelist::plan::{self, ErrorClass, PlanError, PlanRequest};
use crate::handler::destdir;
use crate::handler::list_identity::{self, Identity};
use crate::handler::state;
use crate::request::RelDir;

/// Decides one target. `plain_asked`: a local `sync --full`, a plain rsync whatever the list.
pub(crate) fn target(
    ctx: &Context,
    dir: Option<&RelDir>,
    list: &ListFetch,
    plain_asked: bool,
    events: &mut Vec<Event>,
) -> Decision {
    match (list, plain_asked) {
        (ListFetch::NotConfigured, _) => Decision::plain(false, None),
        (ListFetch::Failed(why), _) => Decision::plain(false, Some(why.clone())),
        // `sync --full`: a plain rsync, whose good end still moves the baseline.
        (ListFetch::Fetched, true) => Decision::plain(true, None),
        (ListFetch::Fetched, false) => by_plan(ctx, dir, events),
    }
}

fn by_plan(ctx: &Context, dir: Option<&RelDir>, events: &mut Vec<Event>) -> Decision {
    let baseline = ctx.md.path(state::LIST_BASELINE);
    if !baseline.exists() {
        // No baseline yet: a plain rsync, after which the fetched list describes the mirror.
        return Decision::plain(true, Some("no file-list baseline yet".into()));
    }
    // The same two files a comparison or an adoption found identical: null, neither is read.
    if list_identity::known_same(ctx.md) {
        return Decision::Null;
    }
    let read = (
        Identity::of(ctx.md, state::LIST_FETCHED),
        Identity::of(ctx.md, state::LIST_BASELINE),
    );
    let limits = plan::PlanLimits {
        max_entries: ctx.m.max_list_entries,
    };
    let planned = plan::plan_limited(
        &PlanRequest {
            baseline: &baseline,
            fetched: &ctx.md.path(state::LIST_FETCHED),
            scope: dir,
            max_delete: ctx.m.max_delete,
            skip_restricted: true,
            transfer_out: &ctx.md.path(state::LIST_TRANSFER),
            delete_out: &ctx.md.path(state::LIST_DELETE),
        },
        &limits,
    );
    match planned {
        Ok(p) if p.unchanged => {
            if let (Some(fetched), Some(baseline)) = &read {
                list_identity::remember(ctx.md, fetched, Some(baseline));
            }
            events.push(event(
                "filelist-compared",
                "the fetched list is a new file with the baseline's bytes: null (later runs know it without reading it)",
            ));
            Decision::Null
        }
        Ok(p) => match removal_size(ctx, p.delete) {
            Ok(()) => Decision::Listed {
                transfer: p.transfer,
            },
            Err(why) => {
                events.push(event("filelist-refused", why.clone()));
                Decision::Refused(why)
            }
        },
        Err(e) => match e.class() {
            ErrorClass::Fallback => {
                events.push(event("filelist-invalid", e.to_string()));
                Decision::Plain {
                    adopt: true,
                    note: Some(e.to_string()),
                    forget_baseline: matches!(e, PlanError::InvalidBaseline { .. }),
                }
            }
            ErrorClass::Refused | ErrorClass::Temporary => {
                events.push(event("filelist-refused", e.to_string()));
                Decision::Refused(e.to_string())
            }
        },
    }
}

/// What the plan's removals would remove on disk, counted before anything is transferred or
/// deleted: removing one entry removes its whole subtree, which the list may never have named
/// (a dir whose files the upstream's generator skipped, a first plain run that carried more
/// than the list). Past `max_delete` the plan is refused and nothing is deleted.
fn removal_size(ctx: &Context, listed: u64) -> Result<(), String> {
    if listed == 0 {
        return Ok(());
    }
    let max = ctx.m.max_delete;
    let list = ctx.md.path(state::LIST_DELETE);
    let paths = std::fs::read(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let paths: HashSet<&[u8]> = paths.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    let mut total = 0u64;
    for path in &paths {
        // A subtree is counted once, at its topmost listed entry.
        let mut up = filelist::parent(path);
        let mut nested = false;
        while let Some(p) = up {
            if paths.contains(p) {
                nested = true;
                break;
            }
            up = filelist::parent(p);
        }
        if nested {
            continue;
        }
        total += destdir::count_path(&ctx.dest, path, max.saturating_sub(total))
            .map_err(|e| format!("counting what the file list removes: {e}"))?;
        if total > max {
            return Err(format!(
                "the file list would remove {listed} entries, more than max_delete ({max}) entries on disk with what lies below them; nothing was deleted"
            ));
        }
    }
    Ok(())
}
