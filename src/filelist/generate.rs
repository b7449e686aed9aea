//! `mirrorpush filelist`: writes a tree's list with the entries, fields and skip rules of
//! Fedora's `create-filelist`, so mirrors running quick-fedora-mirror can read it too.
//!
//! What is listed, for every entry below the tree's top (the top itself is not listed):
//! - mtime: the later of mtime and ctime of the entry itself (lstat), computed as Fedora's
//!   Python computes it (`int(max(st_mtime, st_ctime))` over float seconds), so both generators
//!   agree to the second; size: the lstat size.
//! - type `l` for a symlink (never followed, also when it points to a dir), `d` for a dir, `f`
//!   for anything else; suffix `-` when the entry is not world-readable, else `*` when a dir
//!   above it is not.
//!
//! What is skipped: the list itself and its temporary files; anything named `.~tmp~` (rsync's
//! partial dir) or starting with `.nfs` (NFS silly-renames), with everything below; entries that
//! are not group-readable (for a symlink: its target), with everything below; dangling symlinks
//! (noted on stderr); names the format cannot carry (a tab or newline) and over-long paths
//! (noted on stderr).
//!
//! Entries are written in [`cmp_paths`] order (a sorted depth-first walk), which makes lists
//! diff well and lets `--changed` replace one dir's run of entries while copying the rest of
//! the previous list line for line. An unchanged list is not rewritten, so its mtime stays and
//! a mirror's check of it costs the upstream one stat.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

use super::format::{self, Access, Algo, EntryRef, Item, Kind, Reader, Writer};
use super::{cmp_paths, is_within, AtomicFile};
use crate::request::escape_bytes;

pub const EXIT_OK: i32 = 0;
/// The scan or the write failed (an unreadable dir below the top, a full disk).
pub const EXIT_FAILED: i32 = 1;
/// Bad input: the tree, the output or an option; nothing was written.
pub const EXIT_USAGE: i32 = 2;

/// The list's default name under the tree: `fullfiletimelist-<basename of the tree>`.
pub const LIST_PREFIX: &str = "fullfiletimelist-";

const S_IRGRP: u32 = 0o040;
const S_IROTH: u32 = 0o004;

/// What to do, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tree: PathBuf,
    /// Default: `<tree>/fullfiletimelist-<basename of tree>`.
    pub output: Option<PathBuf>,
    /// File names whose SHA1 goes into `[Checksums SHA1]`, at any depth (Fedora: `repomd.xml`).
    pub checksum_names: Vec<Vec<u8>>,
    /// Dirs (relative to the tree) to rescan; the previous list is kept everywhere else.
    pub changed: Vec<Vec<u8>>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub output: PathBuf,
    /// False when the list's content did not change and the file was left alone.
    pub written: bool,
    pub entries: u64,
    /// False when `--changed` was given but the whole tree was scanned (see the notes).
    pub incremental: bool,
}

/// Why a run failed: the exit code and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenError {
    pub code: i32,
    pub message: String,
}

fn usage(message: String) -> GenError {
    GenError {
        code: EXIT_USAGE,
        message,
    }
}

fn failed(message: String) -> GenError {
    GenError {
        code: EXIT_FAILED,
        message,
    }
}

fn show(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// `mirrorpush filelist`: runs and prints notes and the error line to stderr; the exit code.
pub fn main(opts: &Options) -> i32 {
    let mut stderr = io::stderr().lock();
    match run(opts, &mut stderr) {
        Ok(_) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(stderr, "error: {}", e.message);
            e.code
        }
    }
}

/// Writes the list; notes (skipped entries, a fallback to a full scan) go to `notes`, one line
/// each. On error the previous list is untouched and no temporary file is left.
pub fn run(opts: &Options, notes: &mut dyn Write) -> Result<Report, GenError> {
    let tree = &opts.tree;
    let meta = fs::metadata(tree).map_err(|e| usage(format!("tree '{}': {e}", show(tree))))?;
    if !meta.is_dir() {
        return Err(usage(format!("tree '{}' is not a directory", show(tree))));
    }
    let root = fs::canonicalize(tree).map_err(|e| usage(format!("tree '{}': {e}", show(tree))))?;
    fs::read_dir(&root).map_err(|e| usage(format!("tree '{}': {e}", show(tree))))?;

    for name in &opts.checksum_names {
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(usage(format!(
                "--checksum '{}' must be a file name, without '/'",
                escape_bytes(name)
            )));
        }
    }
    for dir in &opts.changed {
        if let Err(why) = format::check_path(dir) {
            return Err(usage(format!(
                "--changed '{}' {why}: give a path relative to the tree, without '.' or '..'",
                escape_bytes(dir)
            )));
        }
    }

    let output = match &opts.output {
        Some(o) => o.clone(),
        None => {
            let base = tree
                .file_name()
                .or_else(|| root.file_name())
                .ok_or_else(|| {
                    usage(format!(
                        "tree '{}' has no name to name its list after: give --output",
                        show(tree)
                    ))
                })?;
            let mut name = LIST_PREFIX.as_bytes().to_vec();
            name.extend_from_slice(base.as_bytes());
            root.join(OsStr::from_bytes(&name))
        }
    };
    let out_name = output
        .file_name()
        .ok_or_else(|| usage(format!("--output '{}' names no file", show(&output))))?
        .as_bytes()
        .to_vec();
    if output.is_dir() {
        return Err(usage(format!("output '{}' is a directory", show(&output))));
    }
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let out_dir = fs::canonicalize(&out_dir)
        .map_err(|e| usage(format!("output directory '{}': {e}", show(&out_dir))))?;
    // The list's own path inside the tree, to skip it (and its temporary files) when scanning.
    let own = out_dir.strip_prefix(&root).ok().map(|rel| OwnList {
        dir: rel.as_os_str().as_bytes().to_vec(),
        name: out_name.clone(),
    });
    let output = out_dir.join(OsStr::from_bytes(&out_name));

    let scanner = Scanner {
        root: root.clone(),
        own,
        checksum_names: &opts.checksum_names,
    };
    let create = || {
        AtomicFile::create(&output, 0o644).map_err(|e| {
            usage(format!(
                "cannot write the list in '{}': {e}",
                show(&out_dir)
            ))
        })
    };

    let mut incremental = false;
    let mut done = None;
    if !opts.changed.is_empty() {
        match scanner.incremental(create()?, &output, &opts.changed, notes)? {
            Ok(finished) => {
                incremental = true;
                done = Some(finished);
            }
            Err(reason) => {
                let _ = writeln!(notes, "note: {reason}; scanning the whole tree instead");
            }
        }
    }
    let (sink, entries) = match done {
        Some(d) => d,
        None => scanner.full(create()?, &output, notes)?,
    };
    let written = sink.finish(&output)?;
    Ok(Report {
        output,
        written,
        entries,
        incremental,
    })
}

/// The list's own location within the tree: never listed, nor its temporary files.
struct OwnList {
    /// Its dir relative to the tree (empty at the top).
    dir: Vec<u8>,
    name: Vec<u8>,
}

/// What the walk found for one name.
struct Found {
    mtime: i64,
    kind: Kind,
    access: Access,
    size: u64,
    /// A real dir (not a symlink to one): walk into it.
    descend: bool,
    /// Not world-readable: everything below is restricted.
    closed: bool,
    /// The entry is a regular file (or a symlink to one) named for `--checksum`.
    checksum: bool,
}

/// A SHA1 line: path and hex digest.
type Sum = (Vec<u8>, Vec<u8>);

/// A dir to scan.
struct Job {
    dir: PathBuf,
    rel: Vec<u8>,
    /// Some dir above is not world-readable.
    restricted: bool,
}

/// A scanned dir: its listed children in name order, and the notes scanning it produced.
struct DirScan {
    children: Vec<Child>,
    notes: Vec<u8>,
    restricted: bool,
}

struct Child {
    name: Vec<u8>,
    found: Found,
    /// Hex SHA1, for `--checksum` names.
    sum: Option<Vec<u8>>,
}

/// Scans dirs on a few threads, ahead of the walk that emits them in order. The walk queues a
/// dir's subdirs as soon as it reads the dir, first subdir on top of a stack, so the threads
/// take dirs in about the order the walk needs them; the walk scans a dir itself when no
/// thread has taken it yet. Scanned dirs not yet emitted are capped, which bounds memory
/// however far the threads could run ahead.
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a job is queued, a result taken, or the pool stops.
    work: Condvar,
    /// Signalled when a result is ready.
    ready: Condvar,
}

struct PoolState {
    next_id: u64,
    queued: Vec<(u64, Job)>,
    done: HashMap<u64, Result<DirScan, GenError>>,
    stop: bool,
}

/// Most scanned dirs held before threads wait for the walk to catch up.
const MAX_AHEAD: usize = 4096;

impl Pool {
    fn new() -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                next_id: 0,
                queued: Vec::new(),
                done: HashMap::new(),
                stop: false,
            }),
            work: Condvar::new(),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panicking thread cannot leave the state half-changed: every change is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues jobs (the first on top); their ids, in the same order.
    fn submit(&self, jobs: Vec<Job>) -> Vec<u64> {
        let mut st = self.lock();
        let first = st.next_id;
        st.next_id += jobs.len() as u64;
        let ids: Vec<u64> = (first..st.next_id).collect();
        for (id, job) in ids.iter().zip(jobs).rev() {
            st.queued.push((*id, job));
        }
        drop(st);
        self.work.notify_all();
        ids
    }

    /// The scan of job `id`: done by a thread, or done here if no thread has taken it yet.
    fn obtain(&self, id: u64, scanner: &Scanner<'_>) -> Result<DirScan, GenError> {
        let mut st = self.lock();
        loop {
            if let Some(result) = st.done.remove(&id) {
                drop(st);
                self.work.notify_all();
                return result;
            }
            if let Some(at) = st.queued.iter().rposition(|(j, _)| *j == id) {
                let (_, job) = st.queued.remove(at);
                drop(st);
                return scanner.scan_dir(&job);
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A worker thread's loop.
    fn work(&self, scanner: &Scanner<'_>) {
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            if st.done.len() < MAX_AHEAD {
                if let Some((id, job)) = st.queued.pop() {
                    drop(st);
                    let result = scanner.scan_dir(&job);
                    st = self.lock();
                    st.done.insert(id, result);
                    self.ready.notify_all();
                    continue;
                }
            }
            st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }
}

struct Scanner<'a> {
    root: PathBuf,
    own: Option<OwnList>,
    checksum_names: &'a [Vec<u8>],
}

impl Scanner<'_> {
    /// Scans the whole tree into `file`.
    fn full(
        &self,
        file: AtomicFile,
        output: &Path,
        notes: &mut dyn Write,
    ) -> Result<(Sink, u64), GenError> {
        let mut w = self.writer(file, output)?;
        let mut sums = Vec::new();
        let mut count = 0u64;
        self.walk(&self.root, b"", false, notes, &mut |e, sum| {
            count += 1;
            if let Some(s) = sum {
                sums.push(s);
            }
            w.entry(&e)
        })?;
        let sink = finish_list(w, sums, output)?;
        Ok((sink, count))
    }

    fn writer(&self, file: AtomicFile, output: &Path) -> Result<Writer<Sink>, GenError> {
        Writer::new(Sink::new(file, output)).map_err(|e| write_failed(output, e))
    }

    /// Walks `dir` (at `rel` under the tree) depth first, children sorted, calling `emit` for
    /// every listed entry before its own children. The stat calls, which are most of the cost,
    /// run on a few threads ahead of the walk (see [`Pool`]); `emit` and the notes see entries
    /// in list order, on this thread.
    fn walk(
        &self,
        dir: &Path,
        rel: &[u8],
        restricted: bool,
        notes: &mut dyn Write,
        emit: &mut dyn FnMut(EntryRef<'_>, Option<Sum>) -> io::Result<()>,
    ) -> Result<(), GenError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let pool = Pool::new();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| pool.work(self));
            }
            let top = pool.submit(vec![Job {
                dir: dir.to_owned(),
                rel: rel.to_vec(),
                restricted,
            }]);
            let result = self.consume(&pool, top[0], dir, rel, notes, emit);
            pool.stop();
            result
        })
    }

    /// Emits one scanned dir's children and, depth first, what lies below them.
    fn consume(
        &self,
        pool: &Pool,
        id: u64,
        dir: &Path,
        rel: &[u8],
        notes: &mut dyn Write,
        emit: &mut dyn FnMut(EntryRef<'_>, Option<Sum>) -> io::Result<()>,
    ) -> Result<(), GenError> {
        let scan = pool.obtain(id, self)?;
        let _ = notes.write_all(&scan.notes);
        let base = rel.len();
        let child_path = |name: &[u8]| {
            let mut p = Vec::with_capacity(base + 1 + name.len());
            p.extend_from_slice(rel);
            if base > 0 {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        // Queue the subdirs at once, so the workers can scan them while we emit.
        let mut subdirs = Vec::new();
        let mut jobs = Vec::new();
        for c in scan.children.iter().filter(|c| c.found.descend) {
            let sub = dir.join(OsStr::from_bytes(&c.name));
            jobs.push(Job {
                dir: sub.clone(),
                rel: child_path(&c.name),
                restricted: scan.restricted || c.found.closed,
            });
            subdirs.push(sub);
        }
        let mut subdirs = pool.submit(jobs).into_iter().zip(subdirs);
        let mut path = rel.to_vec();
        for child in scan.children {
            path.truncate(base);
            if base > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(&child.name);
            let f = &child.found;
            let entry = EntryRef {
                mtime: f.mtime,
                kind: f.kind,
                access: f.access,
                size: f.size,
                path: &path,
            };
            let sum = child.sum.map(|hex| (path.clone(), hex));
            emit(entry, sum).map_err(|e| failed(format!("cannot write the list: {e}")))?;
            if f.descend {
                let (id, sub) = subdirs.next().expect("one job per subdir");
                self.consume(pool, id, &sub, &path, notes, emit)?;
            }
        }
        Ok(())
    }

    /// Reads one dir and classifies its children (the work a [`Pool`] thread does).
    fn scan_dir(&self, job: &Job) -> Result<DirScan, GenError> {
        let dir = &job.dir;
        let mut scan = DirScan {
            children: Vec::new(),
            notes: Vec::new(),
            restricted: job.restricted,
        };
        let read = match fs::read_dir(dir) {
            Ok(r) => r,
            // Removed while we walked: whatever it held is gone too.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(failed(format!("cannot read '{}': {e}", show(dir)))),
        };
        let mut entries = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| failed(format!("cannot read '{}': {e}", show(dir))))?;
            // The name once: `file_name()` allocates, so not in the sort's comparisons.
            entries.push((entry.file_name().into_vec(), entry));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rel = job.rel.clone();
        let base = rel.len();
        for (name, entry) in entries {
            rel.truncate(base);
            if base > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let lstat = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(failed(format!(
                        "cannot stat '{}': {e}",
                        show(&entry.path())
                    )))
                }
            };
            let Some(found) =
                self.classify(dir, &rel, &name, &lstat, job.restricted, &mut scan.notes)?
            else {
                continue;
            };
            let sum = if found.checksum {
                Some(sha1_hex(&dir.join(OsStr::from_bytes(&name)))?)
            } else {
                None
            };
            scan.children.push(Child { name, found, sum });
        }
        Ok(scan)
    }

    /// Applies the skip rules to `name` in `dir`; `None` when it is not listed (nor anything
    /// below it).
    fn classify(
        &self,
        dir: &Path,
        rel: &[u8],
        name: &[u8],
        lstat: &Metadata,
        restricted: bool,
        notes: &mut dyn Write,
    ) -> Result<Option<Found>, GenError> {
        if name == b".~tmp~" || name.starts_with(b".nfs") || self.is_own(rel, name) {
            return Ok(None);
        }
        if name.contains(&b'\t') || name.contains(&b'\n') {
            let _ = writeln!(
                notes,
                "note: skipped '{}': a name with a tab or newline cannot be listed",
                escape_bytes(rel)
            );
            return Ok(None);
        }
        if rel.len() > format::MAX_PATH_LEN || name.len() > format::MAX_NAME_LEN {
            let _ = writeln!(
                notes,
                "note: skipped '{}': path too long",
                escape_bytes(rel)
            );
            return Ok(None);
        }
        let is_link = lstat.file_type().is_symlink();
        // Readability is judged on what a client would get: a symlink's target. A symlink
        // whose target cannot be stat'ed would only give clients an error: skipped.
        let target = if is_link {
            match fs::metadata(dir.join(OsStr::from_bytes(name))) {
                Ok(m) => Some(m),
                Err(_) => {
                    let _ = writeln!(
                        notes,
                        "note: skipped '{}': dangling symlink",
                        escape_bytes(rel)
                    );
                    return Ok(None);
                }
            }
        } else {
            None
        };
        let mode = target.as_ref().unwrap_or(lstat).permissions().mode();
        if mode & S_IRGRP == 0 {
            return Ok(None);
        }
        let world = lstat.permissions().mode() & S_IROTH != 0;
        let kind = if is_link {
            Kind::Symlink
        } else if lstat.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let access = if !world {
            Access::NotWorldReadable
        } else if restricted {
            Access::InRestrictedDir
        } else {
            Access::Public
        };
        let checksum = self.checksum_names.iter().any(|n| n == name)
            && target.as_ref().unwrap_or(lstat).file_type().is_file();
        Ok(Some(Found {
            mtime: fedora_mtime(lstat),
            kind,
            access,
            size: lstat.size(),
            descend: kind == Kind::Dir,
            closed: !world,
            checksum,
        }))
    }

    fn is_own(&self, rel: &[u8], name: &[u8]) -> bool {
        let Some(own) = &self.own else {
            return false;
        };
        let dir = &rel[..rel.len() - name.len()];
        let dir = dir.strip_suffix(b"/").unwrap_or(dir);
        dir == own.dir.as_slice()
            && (name == own.name.as_slice() || AtomicFile::is_temp_name(name, &own.name))
    }

    /// Rescans the `changed` dirs and copies the previous list elsewhere. `Ok(Err(reason))` when
    /// the previous list cannot serve (missing, unparsable, not in list order): the caller
    /// scans the whole tree instead.
    fn incremental(
        &self,
        file: AtomicFile,
        output: &Path,
        changed: &[Vec<u8>],
        notes: &mut dyn Write,
    ) -> Result<Result<(Sink, u64), String>, GenError> {
        let old = match File::open(output) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("no previous list to update ({e})"))),
        };
        let patches = self.patches(changed, notes)?;
        let mut w = self.writer(file, output)?;
        let mut reader = Reader::new(BufReader::with_capacity(1 << 16, old));
        let mut prev: Vec<u8> = Vec::new();
        let mut next = 0; // the first patch not yet written
        let mut count = 0u64;
        let mut old_sums: Vec<Sum> = Vec::new();
        let io_err = |e: io::Error| write_failed(output, e);
        loop {
            let item = match reader.next_record() {
                Ok(i) => i,
                Err(e) => return Ok(Err(format!("the previous list does not parse ({e})"))),
            };
            match item.map(|r| (r.item, r.line, r.number)) {
                Some((Item::Entry(e), line, number)) => {
                    if !prev.is_empty() && cmp_paths(&prev, e.path).is_ge() {
                        return Ok(Err(format!(
                            "the previous list is not in list order at line {number}"
                        )));
                    }
                    prev.clear();
                    prev.extend_from_slice(e.path);
                    let prev = &prev[..];
                    // Write every patch that sorts before this entry.
                    let mut replaced = false;
                    while let Some(p) = patches.get(next) {
                        match p.place(prev) {
                            Place::Before => {
                                count += p.write(&mut w).map_err(io_err)?;
                                next += 1;
                            }
                            Place::Covers => {
                                replaced = true;
                                break;
                            }
                            Place::Replaces => {
                                count += p.write(&mut w).map_err(io_err)?;
                                next += 1;
                                replaced = true;
                                break;
                            }
                            Place::After => break,
                        }
                    }
                    if !replaced {
                        w.entry_line(line).map_err(io_err)?;
                        count += 1;
                    }
                }
                Some((Item::Checksum(c), _, _)) => {
                    let kept = c.algo == Algo::Sha1
                        && !patches.iter().any(|p| p.covers(c.path))
                        && self
                            .checksum_names
                            .iter()
                            .any(|n| c.path.rsplit(|&b| b == b'/').next() == Some(&n[..]));
                    if kept {
                        old_sums.push((c.path.to_vec(), c.hex.to_vec()));
                    }
                }
                None => break,
            }
        }
        for p in &patches[next..] {
            count += p.write(&mut w).map_err(io_err)?;
        }
        let mut sums = old_sums;
        for p in &patches {
            if let Patch::Range { sums: s, .. } = p {
                sums.extend(s.iter().cloned());
            }
        }
        sums.sort_by(|a, b| cmp_paths(&a.0, &b.0));
        sums.dedup_by(|a, b| a.0 == b.0);
        let sink = finish_list(w, sums, output)?;
        Ok(Ok((sink, count)))
    }

    /// What `--changed` rescans: for each dir, the dir's fresh subtree (a range), and fresh
    /// entries for its ancestors (whose mtimes change when an entry is added or removed). When
    /// an ancestor is gone, is no longer a dir or is now skipped, the range starts there
    /// instead, so the result equals a full scan after changes below the named dirs.
    fn patches(&self, changed: &[Vec<u8>], notes: &mut dyn Write) -> Result<Vec<Patch>, GenError> {
        let mut patches = Vec::new();
        for dir in changed {
            let parts: Vec<&[u8]> = dir.split(|&b| b == b'/').collect();
            let mut restricted = false;
            let mut root_len = parts.len();
            let mut points = Vec::new();
            for depth in 1..parts.len() {
                let rel = parts[..depth].join(&b'/');
                let path = self.root.join(OsStr::from_bytes(&rel));
                let found = match fs::symlink_metadata(&path) {
                    Ok(lstat) => self.classify(
                        parent_dir(&path),
                        &rel,
                        parts[depth - 1],
                        &lstat,
                        restricted,
                        notes,
                    )?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(failed(format!("cannot stat '{}': {e}", show(&path)))),
                };
                match found {
                    Some(f) if f.descend => {
                        points.push(Patch::Point {
                            entry: fresh(&rel, &f),
                        });
                        restricted |= f.closed;
                    }
                    _ => {
                        root_len = depth;
                        break;
                    }
                }
            }
            let rel = parts[..root_len].join(&b'/');
            patches.extend(points);
            patches.push(self.range(rel, restricted, notes)?);
        }
        // List order; a range swallows what lies within it, and a path is patched once.
        patches.sort_by(|a, b| cmp_paths(a.key(), b.key()).then(a.is_point().cmp(&b.is_point())));
        let mut kept: Vec<Patch> = Vec::with_capacity(patches.len());
        for p in patches {
            if let Some(last) = kept.iter().rev().find(|k| !k.is_point()) {
                if last.covers(p.key()) {
                    continue;
                }
            }
            if let Some(last) = kept.last() {
                if last.key() == p.key() {
                    continue;
                }
            }
            kept.push(p);
        }
        Ok(kept)
    }

    /// The fresh entries at and below `rel`.
    fn range(
        &self,
        rel: Vec<u8>,
        restricted: bool,
        notes: &mut dyn Write,
    ) -> Result<Patch, GenError> {
        let path = self.root.join(OsStr::from_bytes(&rel));
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(&rel).to_vec();
        let mut entries = Vec::new();
        let mut sums = Vec::new();
        let lstat = match fs::symlink_metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(format!("cannot stat '{}': {e}", show(&path)))),
        };
        if let Some(lstat) = lstat {
            if let Some(f) =
                self.classify(parent_dir(&path), &rel, &name, &lstat, restricted, notes)?
            {
                if f.checksum {
                    sums.push((rel.clone(), sha1_hex(&path)?));
                }
                entries.push(fresh(&rel, &f));
                if f.descend {
                    self.walk(&path, &rel, restricted || f.closed, notes, &mut |e, s| {
                        entries.push(e.to_owned());
                        if let Some(s) = s {
                            sums.push(s);
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(Patch::Range {
            root: rel,
            entries,
            sums,
        })
    }
}

/// The dir holding `path` (which is below the tree's top, so it has one).
fn parent_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

fn fresh(rel: &[u8], f: &Found) -> format::Entry {
    format::Entry {
        mtime: f.mtime,
        kind: f.kind,
        access: f.access,
        size: f.size,
        path: rel.to_vec(),
    }
}

/// A replacement for part of the previous list.
enum Patch {
    /// One entry (an ancestor of a changed dir), inserted or replacing the old one.
    Point { entry: format::Entry },
    /// A subtree: every old entry at or below `root` gives way to `entries`.
    Range {
        root: Vec<u8>,
        entries: Vec<format::Entry>,
        sums: Vec<Sum>,
    },
}

/// Where a patch goes relative to an old entry.
enum Place {
    /// Before it: write the patch now.
    Before,
    /// The old entry lies inside the patched range: drop it, keep the patch for later ones.
    Covers,
    /// The patch is the new version of exactly this entry.
    Replaces,
    /// After it: keep the old entry.
    After,
}

impl Patch {
    fn key(&self) -> &[u8] {
        match self {
            Patch::Point { entry } => &entry.path,
            Patch::Range { root, .. } => root,
        }
    }

    fn is_point(&self) -> bool {
        matches!(self, Patch::Point { .. })
    }

    fn covers(&self, path: &[u8]) -> bool {
        match self {
            Patch::Point { .. } => false,
            Patch::Range { root, .. } => is_within(path, root),
        }
    }

    fn place(&self, old: &[u8]) -> Place {
        match self {
            Patch::Point { entry } => match cmp_paths(&entry.path, old) {
                std::cmp::Ordering::Less => Place::Before,
                std::cmp::Ordering::Equal => Place::Replaces,
                std::cmp::Ordering::Greater => Place::After,
            },
            Patch::Range { root, .. } => {
                if is_within(old, root) {
                    Place::Covers
                } else if cmp_paths(root, old).is_lt() {
                    Place::Before
                } else {
                    Place::After
                }
            }
        }
    }

    /// Writes the patch's entries; how many.
    fn write(&self, w: &mut Writer<Sink>) -> io::Result<u64> {
        match self {
            Patch::Point { entry } => {
                w.entry(&entry.as_ref())?;
                Ok(1)
            }
            Patch::Range { entries, .. } => {
                for e in entries {
                    w.entry(&e.as_ref())?;
                }
                Ok(entries.len() as u64)
            }
        }
    }
}

fn finish_list(mut w: Writer<Sink>, sums: Vec<Sum>, output: &Path) -> Result<Sink, GenError> {
    let err = |e| write_failed(output, e);
    // Written even when empty, as Fedora's generator does: readers may expect the section.
    w.checksum_section(Algo::Sha1).map_err(err)?;
    for (path, hex) in &sums {
        w.checksum(hex, path).map_err(err)?;
    }
    w.finish().map_err(err)
}

fn write_failed(output: &Path, e: io::Error) -> GenError {
    failed(format!("cannot write '{}': {e}", show(output)))
}

/// `int(max(st_mtime, st_ctime))` as Fedora's Python computes it: each time as a float
/// (`sec + nsec * 1e-9`, which can round up to the next second), truncated toward zero.
fn fedora_mtime(m: &Metadata) -> i64 {
    let mtime = m.mtime() as f64 + m.mtime_nsec() as f64 * 1e-9;
    let ctime = m.ctime() as f64 + m.ctime_nsec() as f64 * 1e-9;
    mtime.max(ctime) as i64
}

fn sha1_hex(path: &Path) -> Result<Vec<u8>, GenError> {
    let err = |e: io::Error| {
        failed(format!(
            "cannot read '{}' for its checksum: {e}",
            show(path)
        ))
    };
    let mut f = File::open(path).map_err(err)?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .collect())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The temporary list file, compared byte for byte with the previous list while it is written,
/// so an unchanged list is recognised without a second pass.
struct Sink {
    file: AtomicFile,
    old: Option<File>,
    /// Output not yet written: lines arrive one by one, the file and the comparison take
    /// them a chunk at a time.
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

/// How much output the sink gathers before writing and comparing it.
const SINK_CHUNK: usize = 1 << 18;

impl Sink {
    fn new(file: AtomicFile, previous: &Path) -> Sink {
        Sink {
            file,
            old: File::open(previous).ok(),
            pending: Vec::with_capacity(SINK_CHUNK + format::MAX_LINE_LEN + 1),
            scratch: Vec::new(),
        }
    }

    /// Writes what is pending and compares it with the same stretch of the previous list.
    fn drain(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        if let Some(old) = self.old.as_mut() {
            self.scratch.resize(self.pending.len(), 0);
            if old.read_exact(&mut self.scratch).is_err() || self.scratch != self.pending {
                self.old = None;
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// Renames the new list into place unless it equals the previous one; whether it did.
    fn finish(mut self, output: &Path) -> Result<bool, GenError> {
        self.drain().map_err(|e| write_failed(output, e))?;
        let same = match self.old.as_mut() {
            Some(old) => matches!(old.read(&mut [0u8; 1]), Ok(0)),
            None => false,
        };
        if same {
            // Dropping the file removes the temporary copy; the old list keeps its mtime.
            return Ok(false);
        }
        // Mirrors fetch the list with rsync's quick check (size and mtime to the second): a
        // list rewritten in the same second as the one it replaces, at the same size (a file
        // of the same size changed), would look unchanged to them and never be fetched.
        if let Some(after) = fs::symlink_metadata(output)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|previous| later_second(previous, SystemTime::now()))
        {
            self.file
                .set_modified(after)
                .map_err(|e| write_failed(output, e))?;
        }
        // No fsync: a list torn by a crash lacks its [End] line, which readers refuse and
        // `--changed` answers with a full scan; the next run rewrites it.
        self.file
            .commit(false)
            .map_err(|e| write_failed(output, e))?;
        Ok(true)
    }
}

/// The first whole second after `previous`, when `now` is not already past it.
fn later_second(previous: SystemTime, now: SystemTime) -> Option<SystemTime> {
    let secs = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i128,
        Err(e) => -(e.duration().as_secs() as i128) - 1,
    };
    let next = secs(previous) + 1;
    (secs(now) < next)
        .then(|| u64::try_from(next).ok())
        .flatten()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= SINK_CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.file.flush()
    }
}
