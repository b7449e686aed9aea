//! Transfer: the rsync runs of a batch, each started inside the opened destination directory
//! (or the opened dir of a dir push), never at a path looked up again.
//!
//! - [`fetch_list`]: the module's file list into the state dir, with the previous fetch as the
//!   basis, so only a changed list's delta travels and an unchanged one costs the upstream a stat;
//! - [`plain`]: a plain rsync of the module or a dir, in two passes with `last` (everything but
//!   `last` without deleting, then everything with deletes);
//! - [`listed`]: the planned entries only, with `--files-from` (two passes with `last`); the
//!   deletions are the remove stage's.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{own_paths, target_name, Context, ListFetch};
use crate::handler::destdir;
use crate::handler::last_run::{RunKind, TargetRun};
use crate::handler::pattern;
use crate::handler::rsync::{self, Changes, Pass, RsyncExit, RunPlace};
use crate::handler::state;
use crate::request::RelDir;

/// Most of a run's log read back to classify a failure.
const LOG_TAIL: u64 = 256 * 1024;

/// Fetches the module's list into the state dir, when it has one.
pub(crate) fn fetch_list(ctx: &Context) -> ListFetch {
    let Some(list) = ctx.m.filelist.as_ref() else {
        return ListFetch::NotConfigured;
    };
    let (md, m) = (ctx.md, ctx.m);
    let fetched = md.path(state::LIST_FETCHED);
    let baseline = md.path(state::LIST_BASELINE);
    if !fetched.exists() && baseline.exists() {
        // The last applied list is the best basis for rsync's delta.
        let _ = fs::copy(&baseline, &fetched);
    }
    let state_fd = match rustix::fs::open(
        &md.dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return ListFetch::Failed(format!("state dir: {e}")),
    };
    let pgid_file = md.path(state::RSYNC_PGID);
    let place = RunPlace {
        cwd: &state_fd,
        log: &ctx.log,
        pgid_file: &pgid_file,
    };
    let source = format!("{}{list}", m.source);
    let (exit, _) = rsync::run(
        &ctx.cfg.rsync,
        &rsync::fetch_args(m, &source, state::LIST_FETCHED),
        &place,
        m.timeout,
    );
    match exit {
        RsyncExit::Success => ListFetch::Fetched,
        e => ListFetch::Failed(format!("cannot fetch {source}: {}", e.describe())),
    }
}

/// What a plain transfer left for the remove stage.
pub(crate) enum Plain {
    /// The transfer ended (well or not): its record.
    Ended(TargetRun),
    /// The pushed dir does not exist upstream (rsync said so): the remove stage removes it
    /// here too, with the empty parents this run created for it.
    GoneUpstream {
        dir: RelDir,
        created: Vec<String>,
        changes: Changes,
    },
}

/// A plain rsync of the module or one dir, in one or two passes.
pub(crate) fn plain(ctx: &Context, dir: Option<&RelDir>) -> Plain {
    let (m, name) = (ctx.m, target_name(dir));
    let (cwd, created) = match dir {
        None => match ctx.dest.try_clone() {
            Ok(fd) => (fd, Vec::new()),
            Err(e) => return Plain::Ended(TargetRun::refused(name, format!("dest: {e}"))),
        },
        // Checked again here: the tree may have changed since the request was accepted.
        Some(d) => match destdir::open_dir(&ctx.dest, d, true) {
            Ok(o) => (o.fd, o.created),
            Err(e) => return Plain::Ended(TargetRun::refused(name, format!("refused: {e}"))),
        },
    };
    let source = match dir {
        None => m.source.clone(),
        Some(d) => format!("{}{d}/", m.source),
    };
    // Two-stage: everything but `last` without deleting, then everything with deletes.
    let passes: Vec<(bool, Vec<String>)> = if m.last.is_empty() {
        vec![(true, Vec::new())]
    } else {
        vec![(false, m.last.clone()), (true, Vec::new())]
    };
    let pgid_file = ctx.md.path(state::RSYNC_PGID);
    let place = RunPlace {
        cwd: &cwd,
        log: &ctx.log,
        pgid_file: &pgid_file,
    };
    let mut changes = Changes::default();
    let mut command = None;
    for (delete, exclude) in passes {
        let pass = Pass {
            source: source.clone(),
            delete,
            protect: protected_within(m, dir),
            exclude,
            files_from: None,
        };
        let offset = ctx.log.metadata().map_or(0, |meta| meta.len());
        let args = rsync::args(m, &pass);
        command = Some(rerun(ctx, dir, &args));
        let (exit, c) = rsync::run(&ctx.cfg.rsync, &args, &place, m.timeout);
        changes.add(c);
        if exit == RsyncExit::Success {
            continue;
        }
        if let (Some(d), RsyncExit::Failed(23)) = (dir, &exit) {
            if gone_upstream(&log_since(&ctx.log, offset), d) {
                return Plain::GoneUpstream {
                    dir: d.clone(),
                    created,
                    changes,
                };
            }
        }
        return Plain::Ended(
            TargetRun::failed(
                name,
                RunKind::Plain,
                exit.exit_code(),
                exit.describe(),
                changes,
            )
            .ran(command),
        );
    }
    Plain::Ended(TargetRun::succeeded(name, RunKind::Plain, changes).ran(command))
}

/// Transfers the planned entries (`planned` of them, in two passes with `last`) inside the
/// opened transfer root.
pub(crate) fn listed(ctx: &Context, dir: Option<&RelDir>, planned: u64) -> TargetRun {
    let (m, md, name) = (ctx.m, ctx.md, target_name(dir));
    let fail = |result: String, changes: Changes, rsync_exit: Option<i32>| {
        TargetRun::failed(name, RunKind::Filelist, rsync_exit, result, changes)
    };
    if planned == 0 {
        // Nothing to transfer (only removals, or a dir push for a dir no list names): create
        // nothing, so a push for a dir that exists nowhere leaves no empty tree behind.
        return TargetRun::succeeded(name, RunKind::Filelist, Changes::default());
    }
    let cwd = match dir {
        None => ctx.dest.try_clone().map_err(|e| e.to_string()),
        Some(d) => destdir::open_dir(&ctx.dest, d, true)
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
    let passes = [
        md.path(state::LIST_TRANSFER_RSYNC),
        md.path(state::LIST_TRANSFER_LAST),
    ];
    let counts = match rewrite_for_rsync(
        &md.path(state::LIST_TRANSFER),
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
    let mut command = None;
    let pgid_file = md.path(state::RSYNC_PGID);
    let place = RunPlace {
        cwd: &cwd,
        log: &ctx.log,
        pgid_file: &pgid_file,
    };
    for (list, count) in passes.iter().zip(counts) {
        if count == 0 {
            continue;
        }
        let pass = Pass {
            source: root.clone(),
            // Deletions are the remove stage's, after every pass.
            delete: false,
            protect: protected_within(m, dir),
            exclude: Vec::new(),
            files_from: Some(list.clone()),
        };
        let args = rsync::args(m, &pass);
        command = Some(rerun(ctx, dir, &args));
        let (exit, c) = rsync::run(&ctx.cfg.rsync, &args, &place, m.timeout);
        changes.add(c);
        if exit != RsyncExit::Success {
            return fail(exit.describe(), changes, exit.exit_code()).ran(command);
        }
    }
    TargetRun::succeeded(name, RunKind::Filelist, changes).ran(command)
}

/// The command line that reruns one rsync pass by hand, as the account: rsync runs inside the
/// opened directory, which for a person is `cd <dest>[/<dir>]`.
fn rerun(ctx: &Context, dir: Option<&RelDir>, argv: &rsync::Argv) -> String {
    let cwd = match dir {
        None => ctx.m.dest.clone(),
        Some(d) => ctx.m.dest.join(d.as_str()),
    };
    let words = std::iter::once(ctx.cfg.rsync.to_string_lossy().into_owned()).chain(
        argv.words()
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    format!(
        "cd {} && {}",
        shell_words::quote(&cwd.to_string_lossy()),
        shell_words::join(words)
    )
}

/// The handler's own files that lie inside the transfer root, as paths relative to it.
pub(crate) fn protected_within(
    m: &crate::handler::config::Module,
    dir: Option<&RelDir>,
) -> Vec<String> {
    m.own_files()
        .into_iter()
        .filter_map(|f| match dir {
            None => Some(f.as_str().to_owned()),
            Some(d) => f
                .as_str()
                .strip_prefix(d.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_owned),
        })
        .collect()
}

/// An rsync source split into the daemon module's root and the path below it:
/// `rsync://h/fedora/linux/` is (`rsync://h/fedora/`, `linux`). A local path is its own root.
///
/// File-list transfers name the source root and mark, in each listed path, where the part
/// written under the destination starts (`linux/updates/./41/x.rpm`): rsync's daemon loses
/// nested `--files-from` entries when the source itself points below a module's root.
pub(crate) fn split_source(source: &str) -> (String, String) {
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
fn rewrite_for_rsync(from: &Path, to: (&Path, &Path), how: &Rewrite<'_>) -> io::Result<[u64; 2]> {
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

/// The tail of rsync.log written since `offset`.
fn log_since(log: &File, offset: u64) -> String {
    let len = log.metadata().map_or(offset, |m| m.len());
    let from = offset.max(len.saturating_sub(LOG_TAIL));
    let mut buf = vec![0u8; usize::try_from(len - from.min(len)).unwrap_or(0)];
    match log.read_exact_at(&mut buf, from) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

/// Whether rsync's sender said the requested dir (or a parent) does not exist upstream:
/// `rsync: [sender] change_dir "<path>" (in <module>) failed: No such file or directory (2)`,
/// or `Not a directory (20)` when it became a file.
fn gone_upstream(log: &str, dir: &RelDir) -> bool {
    log.lines().any(|l| {
        let missing = l.ends_with("failed: No such file or directory (2)")
            || l.ends_with("failed: Not a directory (20)");
        let Some(rest) = l.split("change_dir \"").nth(1) else {
            return false;
        };
        let quoted = rest.split('"').next().unwrap_or("");
        let quoted = quoted.trim_end_matches('/');
        missing && (quoted == dir.as_str() || quoted.ends_with(&format!("/{dir}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_dir_gone_upstream() {
        let d = RelDir::parse("updates/40").unwrap();
        let daemon = "rsync: [sender] change_dir \"updates/40\" (in fedora) failed: No such file or directory (2)\n";
        assert!(gone_upstream(daemon, &d));
        let prefixed = "rsync: [sender] change_dir \"pub/updates/40\" (in fedora) failed: No such file or directory (2)";
        assert!(gone_upstream(prefixed, &d));
        let local =
            "rsync: [sender] change_dir \"/srv/up/updates/40\" failed: Not a directory (20)";
        assert!(gone_upstream(local, &d));
        let other = "rsync: [sender] change_dir \"updates/400\" (in fedora) failed: No such file or directory (2)";
        assert!(!gone_upstream(other, &d));
        let denied =
            "rsync: [sender] change_dir \"updates/40\" (in fedora) failed: Permission denied (13)";
        assert!(!gone_upstream(denied, &d));
    }

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
