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
use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use super::{event, own_paths, Context, Decision, Event, ListFetch};
use crate::filelist;
use crate::filelist::format::Kind;
use crate::filelist::plan::{self, ErrorClass, Plan, PlanError, PlanRequest};
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
            kinds_out: Some(&ctx.md.path(state::LIST_TRANSFER_KINDS)),
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
        Ok(p) => match removal_size(ctx, &p) {
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

/// What the plan would remove on disk, counted before anything is transferred or deleted.
/// Past `max_delete` the plan is refused and nothing is deleted. Counted:
/// - each entry that left the list, with what lies below it on disk, which the list may never
///   have named (a dir whose files the upstream's generator skipped, a first plain run that
///   carried more than the list);
/// - each dir here that the list now gives as a file or a symlink, with all it holds: rsync's
///   `--force` removes it to put the new entry in its place.
///
/// A subtree is counted once, at its topmost path.
fn removal_size(ctx: &Context, plan: &Plan) -> Result<(), String> {
    let max = ctx.m.max_delete;
    let refused = |what: String| {
        format!(
            "the file list would remove {what}, more than max_delete ({max}) entries on disk with what lies below them; nothing was deleted"
        )
    };
    let mut tops: HashSet<Vec<u8>> = HashSet::new();
    if plan.delete > 0 {
        let list = ctx.md.path(state::LIST_DELETE);
        let paths = std::fs::read(&list).map_err(|e| format!("{}: {e}", list.display()))?;
        tops.extend(
            paths
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    let replaced = replaced_dirs(ctx, plan, max)
        .map_err(|e| format!("reading the plan's transfer list: {e}"))?;
    let replaced_count = replaced.len() as u64;
    if replaced_count > max {
        return Err(refused(format!(
            "more than {max} dirs to put files or links in their place"
        )));
    }
    tops.extend(replaced);
    if tops.is_empty() {
        return Ok(());
    }
    let mut total = 0u64;
    for path in &tops {
        let mut up = filelist::parent(path);
        let mut nested = false;
        while let Some(p) = up {
            if tops.contains(p) {
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
            let what = match (plan.delete, replaced_count) {
                (d, 0) => format!("{d} entries"),
                (0, r) => format!("{r} dirs to put files or links in their place"),
                (d, r) => format!("{d} entries and {r} dirs to put files or links in their place"),
            };
            return Err(refused(what));
        }
    }
    Ok(())
}

/// The entries to transfer that are dirs here but files or symlinks in the list; no more than
/// `max + 1` of them (each removes at least itself), so what is held stays bounded.
fn replaced_dirs(ctx: &Context, plan: &Plan, max: u64) -> std::io::Result<Vec<Vec<u8>>> {
    let mut found = Vec::new();
    if plan.transfer == 0 {
        return Ok(found);
    }
    let own = own_paths(ctx.m);
    let paths = BufReader::new(File::open(ctx.md.path(state::LIST_TRANSFER))?).split(0);
    let kinds = BufReader::new(File::open(ctx.md.path(state::LIST_TRANSFER_KINDS))?).bytes();
    for (path, kind) in paths.zip(kinds) {
        let (path, kind) = (path?, kind?);
        if kind != Kind::Dir.letter()
            && !own.contains(&path)
            && destdir::is_dir_at(&ctx.dest, &path)
        {
            found.push(path);
            if found.len() as u64 > max {
                break;
            }
        }
    }
    Ok(found)
}
