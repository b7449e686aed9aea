//! File-list runs: the upstream publishes one list per module (Fedora's `fullfiletimelist`);
//! a run fetches that one file and, against the last list it applied (the baseline), transfers
//! only the entries that changed and removes those that left. An unchanged list is a null run:
//! the upstream stats one file instead of walking the whole tree.
//!
//! Policy for lists that cannot be trusted (truncated, hostile paths, an entry below a symlink,
//! duplicates, a version above 3, a stored baseline that no longer parses): the run is logged
//! and falls back to a plain rsync, which repairs the mirror whatever the list said; an invalid
//! list never becomes the baseline. A plan that would delete more than `max_delete` entries is
//! refused: nothing is transferred or deleted and the run fails with the reason. The baseline
//! moves only after a good run, so a failed or killed run is simply redone by the next trigger.
//!
//! State under `<state_dir>/<module>/`: `filelist.fetched` (the last fetch, kept as the basis of
//! the next one), `filelist.baseline`, and the plan's `filelist.transfer` / `filelist.delete`.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::OwnedFd;

use super::config::{Config, Module};
use super::destdir;
use super::pattern;
use super::queue::{ModuleDir, FULL_SYNC};
use super::rsync::{self, Changes, Invocation, Outcome, RunPlace, PGID_FILE};
use super::runner::log_event;
use super::status::{Kind, TargetRun};
use super::sync::{self, Prepared};
use crate::filelist::plan::{self, ErrorClass, PlanRequest};
use crate::request::RelDir;

pub const FETCHED: &str = "filelist.fetched";
pub const BASELINE: &str = "filelist.baseline";
const TRANSFER: &str = "filelist.transfer";
const DELETE: &str = "filelist.delete";
/// The transfer list rewritten for rsync (relative to the transfer root, own files left out):
/// the first pass, and the entries `last` holds back for the second.
const TRANSFER_RSYNC: &str = "filelist.transfer.rsync";
const TRANSFER_LAST: &str = "filelist.transfer.last";

/// Fetches the module's list into the state dir. Err: why not (the run then is plain).
pub fn fetch(cfg: &Config, m: &Module, md: &ModuleDir, p: &Prepared) -> Result<(), String> {
    let list = m.filelist.as_ref().ok_or("no file list configured")?;
    let fetched = md.path(FETCHED);
    let baseline = md.path(BASELINE);
    if !fetched.exists() && baseline.exists() {
        // The last applied list is the best basis for rsync's delta.
        let _ = fs::copy(&baseline, &fetched);
    }
    let state = rustix::fs::open(
        &md.dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("state dir: {e}"))?;
    let pgid_file = md.path(PGID_FILE);
    let place = RunPlace {
        cwd: &state,
        log: &p.log,
        pgid_file: &pgid_file,
    };
    let source = format!("{}{list}", m.source);
    let (outcome, _) = rsync::run(
        &cfg.rsync,
        &rsync::fetch_args(m, &source, FETCHED),
        &place,
        m.timeout,
    );
    match outcome {
        Outcome::Success => Ok(()),
        o => Err(format!("cannot fetch {source}: {}", o.describe())),
    }
}

/// Makes the fetched list the baseline after a good plain run of the whole module (a list that
/// does not validate is not adopted).
pub fn adopt(cfg: &Config, m: &Module, md: &ModuleDir, p: &Prepared) {
    let baseline = md.path(BASELINE);
    match plan::write_baseline(&baseline, &md.path(FETCHED), None, &baseline) {
        Ok(()) => publish_list(cfg, m, md, p),
        Err(e) => log_event(cfg, m, "filelist-invalid", &e.to_string()),
    }
}

/// A plain rsync of the target; after a good one of the whole module the fetched list becomes
/// the baseline (`sync --full`, no baseline yet, an untrusted list).
pub fn plain_then_adopt(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    p: &Prepared,
    dir: Option<&RelDir>,
) -> TargetRun {
    let run = sync::plain_target(cfg, m, md, p, dir);
    if run.ok && dir.is_none() {
        adopt(cfg, m, md, p);
    }
    run
}

/// One target (the module, or a dir of it) of a file-list run.
pub fn target(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    p: &Prepared,
    dir: Option<&RelDir>,
) -> TargetRun {
    let baseline = md.path(BASELINE);
    if !baseline.exists() {
        // No baseline yet: a plain rsync, after which the fetched list describes the mirror.
        return with_note(
            plain_then_adopt(cfg, m, md, p, dir),
            "no file-list baseline yet",
        );
    }
    let (transfer_out, delete_out) = (md.path(TRANSFER), md.path(DELETE));
    let planned = plan::plan(&PlanRequest {
        baseline: &baseline,
        fetched: &md.path(FETCHED),
        scope: dir,
        max_delete: m.max_delete,
        skip_restricted: true,
        transfer_out: &transfer_out,
        delete_out: &delete_out,
    });
    let name = dir.map_or(FULL_SYNC, RelDir::as_str);
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => match e.class() {
            ErrorClass::Fallback => {
                log_event(cfg, m, "filelist-invalid", &e.to_string());
                if matches!(e, plan::PlanError::InvalidBaseline { .. }) {
                    let _ = fs::remove_file(&baseline);
                }
                return with_note(plain_then_adopt(cfg, m, md, p, dir), &e.to_string());
            }
            ErrorClass::Refused | ErrorClass::Temporary => {
                log_event(cfg, m, "filelist-refused", &e.to_string());
                return TargetRun {
                    target: name.to_owned(),
                    kind: Kind::Filelist,
                    ok: false,
                    rsync_exit: None,
                    result: e.to_string(),
                    changes: Changes::default(),
                };
            }
        },
    };
    if plan.unchanged {
        // In case an earlier publish failed: a no-op when the published copy is current.
        publish_list(cfg, m, md, p);
        return TargetRun {
            target: name.to_owned(),
            kind: Kind::Null,
            ok: true,
            rsync_exit: None,
            result: "ok: the file list is unchanged".into(),
            changes: Changes::default(),
        };
    }
    let run = apply(cfg, m, md, p, dir);
    if run.ok {
        match plan::write_baseline(&baseline, &md.path(FETCHED), dir, &baseline) {
            Ok(()) => publish_list(cfg, m, md, p),
            Err(e) => {
                // The next run then is a plain rsync that makes a new baseline.
                log_event(cfg, m, "filelist-invalid", &e.to_string());
                let _ = fs::remove_file(&baseline);
            }
        }
    }
    run
}

/// Transfers the planned entries (in two passes with `last`) inside the opened transfer root,
/// then removes what left the list.
fn apply(
    cfg: &Config,
    m: &Module,
    md: &ModuleDir,
    p: &Prepared,
    dir: Option<&RelDir>,
) -> TargetRun {
    let name = dir.map_or(FULL_SYNC, RelDir::as_str).to_owned();
    let fail = |result: String, changes: Changes, rsync_exit: Option<i32>| TargetRun {
        target: name.clone(),
        kind: Kind::Filelist,
        ok: false,
        rsync_exit,
        result,
        changes,
    };
    let cwd = match dir {
        None => p.dest.try_clone().map_err(|e| e.to_string()),
        Some(d) => destdir::open_dir(&p.dest, d, true)
            .map(|o| o.fd)
            .map_err(|e| format!("refused: {e}")),
    };
    let cwd = match cwd {
        Ok(fd) => fd,
        Err(e) => return fail(e, Changes::default(), None),
    };
    let own = own_paths(m);
    let (root, prefix) = split_source(&m.source);
    let base: Vec<&str> = prefix
        .split('/')
        .filter(|c| !c.is_empty())
        .chain(dir.into_iter().flat_map(RelDir::components))
        .collect();
    // Two-stage: the entries `last` matches go in a second pass of their own (rsync's receiver
    // refuses a --files-from name its own --exclude matches, so the list is split here).
    let passes = [md.path(TRANSFER_RSYNC), md.path(TRANSFER_LAST)];
    let counts = match rewrite_for_rsync(
        &md.path(TRANSFER),
        (&passes[0], &passes[1]),
        &Rewrite {
            dir,
            base: &base.join("/"),
            own: &own,
            last: &m.last,
        },
    ) {
        Ok(n) => n,
        Err(e) => return fail(format!("file list: {e}"), Changes::default(), None),
    };
    let mut changes = Changes::default();
    let pgid_file = md.path(PGID_FILE);
    let place = RunPlace {
        cwd: &cwd,
        log: &p.log,
        pgid_file: &pgid_file,
    };
    for (list, count) in passes.iter().zip(counts) {
        if count == 0 {
            continue;
        }
        let inv = Invocation {
            source: root.clone(),
            // Deletions are ours, below, after every pass.
            delete: false,
            protect: sync::protected_within(m, dir),
            exclude: Vec::new(),
            files_from: Some(list.clone()),
        };
        let (outcome, c) = rsync::run(&cfg.rsync, &rsync::args(m, &inv), &place, m.timeout);
        changes.add(c);
        if outcome != Outcome::Success {
            return fail(outcome.describe(), changes, outcome.exit_code());
        }
    }
    match delete_listed(&p.dest, &md.path(DELETE), &own) {
        Ok(n) => changes.deleted += n,
        Err(e) => {
            return fail(
                format!("removing entries that left the list: {e}"),
                changes,
                Some(0),
            )
        }
    }
    TargetRun {
        target: name,
        kind: Kind::Filelist,
        ok: true,
        rsync_exit: Some(0),
        result: "ok".into(),
        changes,
    }
}

/// Paths under dest that only the handler writes: never transferred or removed by a list.
fn own_paths(m: &Module) -> Vec<Vec<u8>> {
    m.own_files()
        .into_iter()
        .chain(m.filelist.iter())
        .map(|p| p.as_str().as_bytes().to_vec())
        .collect()
}

/// An rsync source split into the daemon module's root and the path below it:
/// `rsync://h/fedora/linux/` is (`rsync://h/fedora/`, `linux`). A local path is its own root.
///
/// File-list transfers name the source root and mark, in each listed path, where the part
/// written under the destination starts (`linux/updates/./41/x.rpm`): rsync's daemon loses
/// nested `--files-from` entries when the source itself points below a module's root.
pub fn split_source(source: &str) -> (String, String) {
    let (head, rest) = if let Some(after) = source.strip_prefix("rsync://") {
        match after.split_once('/') {
            Some((authority, rest)) => match rest.split_once('/') {
                Some((module, below)) => (format!("rsync://{authority}/{module}/"), below),
                None => (format!("rsync://{authority}/{rest}/"), ""),
            },
            None => (format!("{source}/"), ""),
        }
    } else if let Some((host, rest)) = source.split_once("::") {
        match rest.split_once('/') {
            Some((module, below)) => (format!("{host}::{module}/"), below),
            None => (format!("{host}::{rest}/"), ""),
        }
    } else {
        return (source.to_owned(), String::new());
    };
    (head, rest.trim_matches('/').to_owned())
}

/// How to rewrite the planner's transfer list for rsync.
struct Rewrite<'a> {
    /// The transfer root within the module (a dir push), or the module itself.
    dir: Option<&'a RelDir>,
    /// The source's path below its module root, and the dir: each path becomes `base/./rel`.
    base: &'a str,
    /// The handler's own files, left out.
    own: &'a [Vec<u8>],
    /// Two-stage patterns: matching entries go to the second list.
    last: &'a [String],
}

/// Copies the planner's NUL-separated transfer list for rsync: paths made relative to the
/// transfer root and prefixed with `base/./`, the root itself and the handler's own files left
/// out, split into the first pass and the `last` pass. Returns how many paths each holds.
fn rewrite_for_rsync(
    from: &std::path::Path,
    to: (&std::path::Path, &std::path::Path),
    how: &Rewrite<'_>,
) -> io::Result<[u64; 2]> {
    let mut outs = [
        BufWriter::new(File::create(to.0)?),
        BufWriter::new(File::create(to.1)?),
    ];
    let mut counts = [0u64; 2];
    for path in BufReader::new(File::open(from)?).split(0) {
        let path = path?;
        if how.own.contains(&path) {
            continue;
        }
        let rel = match how.dir {
            None => &path[..],
            Some(d) => match path.strip_prefix(d.as_str().as_bytes()) {
                Some(r) => match r.strip_prefix(b"/") {
                    Some(r) => r,
                    None => continue, // the root itself (or not inside: the planner's scope)
                },
                None => continue,
            },
        };
        let pass = usize::from(how.last.iter().any(|p| pattern::matches(p, rel)));
        let out = &mut outs[pass];
        if !how.base.is_empty() {
            out.write_all(how.base.as_bytes())?;
            out.write_all(b"/./")?;
        }
        out.write_all(rel)?;
        out.write_all(b"\0")?;
        counts[pass] += 1;
    }
    for out in &mut outs {
        out.flush()?;
    }
    Ok(counts)
}

/// Removes the entries the planner listed (children before parents), by fd, never through a
/// symlink; returns how many were removed.
fn delete_listed(dest: &OwnedFd, list: &std::path::Path, own: &[Vec<u8>]) -> io::Result<u64> {
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

/// After a good run the baseline (what this mirror now carries: for a dir push the fetched
/// entries inside the dir and the old ones outside) is installed into dest as the module's
/// list, last: mirrors that pull from this one (a hub's leaves) fetch a list that matches its
/// tree, after a dir push too. A copy with the same size and time is left alone (the list may
/// be large, and null runs are frequent).
fn publish_list(cfg: &Config, m: &Module, md: &ModuleDir, p: &Prepared) {
    if let Some(list) = &m.filelist {
        let fetched = md.path(BASELINE);
        // The copy keeps the baseline's time to the nanosecond; a new baseline has a new one.
        let same = |a: &rustix::fs::Stat, b: &rustix::fs::Stat| {
            a.st_size == b.st_size && a.st_mtime == b.st_mtime && a.st_mtime_nsec == b.st_mtime_nsec
        };
        let current = rustix::fs::statat(
            &p.dest,
            list.as_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
        if let (Ok(have), Ok(want)) = (current, rustix::fs::stat(&fetched)) {
            if same(&have, &want) {
                return;
            }
        }
        if let Err(e) = destdir::install_file_at(&p.dest, list, &fetched) {
            log_event(cfg, m, "filelist-publish-error", &e.to_string());
        }
    }
}

/// A run that fell back to a plain rsync says why in its result.
pub fn with_note(mut run: TargetRun, note: &str) -> TargetRun {
    if run.ok {
        run.result = format!("ok (plain rsync: {note})");
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_split_at_the_module_root() {
        let s = |x: &str| split_source(x);
        assert_eq!(
            s("rsync://h:873/fedora/"),
            ("rsync://h:873/fedora/".into(), "".into())
        );
        assert_eq!(
            s("rsync://h/fedora-enchilada/linux/"),
            ("rsync://h/fedora-enchilada/".into(), "linux".into())
        );
        assert_eq!(s("h::debian/"), ("h::debian/".into(), "".into()));
        assert_eq!(s("h::debian/a/b/"), ("h::debian/".into(), "a/b".into()));
        assert_eq!(s("/srv/up/"), ("/srv/up/".into(), "".into()));
    }

    #[test]
    fn the_rsync_lists_are_relative_to_the_transfer_root_and_split_by_last() {
        let t = tempfile::tempdir().unwrap();
        let (from, first, second) = (t.path().join("in"), t.path().join("1"), t.path().join("2"));
        fs::write(
            &from,
            b"updates\0updates/41\0updates/41/x.rpm\0updates/41/repodata\0updates/41/repodata/repomd.xml\0lastsync\0",
        )
        .unwrap();
        let d = RelDir::parse("updates").unwrap();
        let own = vec![b"lastsync".to_vec()];
        let last = vec!["repodata/".to_owned()];
        let how = Rewrite {
            dir: Some(&d),
            base: "linux/updates",
            own: &own,
            last: &last,
        };
        assert_eq!(
            rewrite_for_rsync(&from, (&first, &second), &how).unwrap(),
            [2, 2]
        );
        assert_eq!(
            fs::read(&first).unwrap(),
            b"linux/updates/./41\0linux/updates/./41/x.rpm\0".to_vec()
        );
        assert_eq!(
            fs::read(&second).unwrap(),
            b"linux/updates/./41/repodata\0linux/updates/./41/repodata/repomd.xml\0".to_vec()
        );
        fs::write(&from, b"a\0a/b\0lastsync\0").unwrap();
        let how = Rewrite {
            dir: None,
            base: "",
            own: &own,
            last: &[],
        };
        assert_eq!(
            rewrite_for_rsync(&from, (&first, &second), &how).unwrap(),
            [2, 0]
        );
        assert_eq!(fs::read(&first).unwrap(), b"a\0a/b\0".to_vec());
    }
}
