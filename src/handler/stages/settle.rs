//! Settle: after each target, the file-list baseline moves and the list is published.
//!
//! The baseline (what this mirror carries) moves only after a good run, so a failed or killed
//! run is simply redone by the next trigger: after a good plain rsync of the whole module the
//! fetched list becomes it; after a good file-list run the fetched list's entries inside the
//! target replace the old ones there. Then the baseline is installed into dest as the module's
//! list, last, so mirrors that pull from this one (a hub's leaves) fetch a list that matches
//! its tree, after a dir push too.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{event, shown_in_dest, Context, Decision, Event};
use crate::filelist::plan;
use crate::handler::destdir;
use crate::handler::last_run::TargetRun;
use crate::handler::list_identity::{self, Identity};
use crate::handler::pattern;
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
                let fetched = ctx.md.path(state::LIST_FETCHED);
                if let Some(why) = mostly_missing(ctx, listed_paths(&fetched)) {
                    events.push(event("filelist-untrusted", why));
                    return Ok(());
                }
                return move_baseline(ctx, None, false, events);
            }
            Ok(())
        }
        Decision::Listed { .. } if run.ok => {
            let planned = ctx.md.path(state::LIST_TRANSFER);
            if let Some(why) = mostly_missing(ctx, nul_separated(&planned)) {
                // The old baseline no longer describes the tree either: the next run is plain.
                events.push(event("filelist-untrusted", why));
                let _ = fs::remove_file(&baseline);
                return Ok(());
            }
            move_baseline(ctx, dir, true, events)
        }
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
    let fetched = Identity::of(ctx.md, state::LIST_FETCHED);
    match plan::write_baseline(&baseline, &ctx.md.path(state::LIST_FETCHED), dir, &baseline) {
        Ok(()) => {
            // The whole module's baseline is now the fetched list byte for byte: the next run
            // of an unchanged upstream is null without reading either.
            if let (None, Some(fetched)) = (dir, &fetched) {
                list_identity::remember(ctx.md, fetched, None);
            }
            publish_list(ctx, events)
        }
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

/// Entries sampled on disk before a list is adopted.
const SAMPLE: usize = 1000;
/// Fewer entries than this are not judged: a small list proves little either way.
const SAMPLE_MIN: usize = 100;

/// Why a list must not be adopted: most of the entries the run should have brought (a sample
/// of up to [`SAMPLE`], spread over the list) are not on disk after it. rsync's
/// `--ignore-missing-args` skips entries the upstream does not have, and a plain run never
/// looks at the list: a list naming millions of entries that exist nowhere would otherwise
/// become the baseline and cost every later run.
fn mostly_missing(ctx: &Context, paths: io::Result<Vec<Vec<u8>>>) -> Option<String> {
    // What the admin's own `--exclude`s keep off this mirror is not missing upstream.
    let excluded: Vec<&str> = ctx
        .m
        .rsync_args
        .iter()
        .filter_map(|a| a.strip_prefix("--exclude="))
        .collect();
    let paths: Vec<Vec<u8>> = paths
        .ok()?
        .into_iter()
        .filter(|p| !excluded.iter().any(|x| pattern::matches(x, p)))
        .collect();
    if paths.len() < SAMPLE_MIN {
        return None;
    }
    let missing = paths
        .iter()
        .filter(|p| {
            rustix::fs::statat(
                &ctx.dest,
                std::ffi::OsStr::from_bytes(p),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_err()
        })
        .count();
    (missing * 2 > paths.len()).then(|| {
        format!(
            "{missing} of {} sampled entries of the file list are not on this mirror after the run (missing upstream): the list is not adopted",
            paths.len()
        )
    })
}

/// Every n-th of the paths in a NUL-separated list (the planner's transfer list), so that at
/// most [`SAMPLE`] are kept however long the list is.
fn nul_separated(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let len = fs::metadata(path)?.len();
    sampled(BufReader::new(File::open(path)?).split(0), len)
}

/// The paths of the `[Files]` entries of a file list (plain `f`, `d` and `l` entries only: the
/// ones a public mirror can read), sampled as [`nul_separated`].
fn listed_paths(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let len = fs::metadata(path)?.len();
    let mut in_files = false;
    let entries = BufReader::new(File::open(path)?)
        .split(b'\n')
        .filter_map(move |line| {
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if line.starts_with(b"[") {
                in_files = line == b"[Files]";
                return None;
            }
            let mut fields = line.splitn(4, |&b| b == b'\t');
            let (_, kind, _, name) = (fields.next(), fields.next()?, fields.next(), fields.next()?);
            (in_files && matches!(kind, b"f" | b"d" | b"l")).then(|| Ok(name.to_vec()))
        });
    sampled(entries, len)
}

/// Keeps about [`SAMPLE`] items spread evenly, judging the stride from the file's length.
fn sampled(items: impl Iterator<Item = io::Result<Vec<u8>>>, len: u64) -> io::Result<Vec<Vec<u8>>> {
    // ~60 bytes per list line: a stride that keeps about SAMPLE entries of a long list.
    let stride = usize::try_from(len / (60 * SAMPLE as u64))
        .unwrap_or(usize::MAX)
        .max(1);
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        if i % stride == 0 && !item.is_empty() {
            out.push(item);
        }
    }
    Ok(out)
}
