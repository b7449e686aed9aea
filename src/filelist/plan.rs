//! The handler's side of file-list sync: given the last list applied successfully (the
//! baseline) and the list just fetched from upstream, what to transfer and what to delete.
//!
//! Lists can be huge (Fedora's hold 12 million entries), so the planner never holds a list.
//!
//! **Sorted lists: a merge.** `mirrorpush filelist` writes `[Files]` in [`cmp_paths`] order (a
//! depth-first walk with sorted dirs: a dir, then everything below it, then its next sibling).
//! Two lists in that order are planned by merging them as two streams, one pass over each,
//! in memory that does not grow with the list: the entry being looked at in each, the dirs
//! above it, and the paths to delete (at most `max_delete` of them). The order also makes the
//! structural checks local: a path listed twice is two equal neighbours, and an entry's parent
//! is the innermost listed dir still open above it.
//!
//! **Any other order: an index, capped.** A list that is not in that order (Fedora's
//! `create-filelist` walks with `scandir`, which yields names in the filesystem's directory
//! order) is noticed at its first entry out of order; the merge's outputs are dropped and the
//! plan is made again by the index planner: the baseline as a sorted array of (path hash,
//! fingerprint of type, size and mtime) with a seen-bit per entry, the fetched list streamed
//! against it, then the baseline again for the entries that left. That costs about 40 bytes per
//! entry, so it is bounded by the entry cap ([`PlanLimits::max_entries`]; beyond it a list is
//! refused with [`PlanError::TooManyEntries`], class `Fallback`: a plain rsync). The hashes are
//! keyed with a random key per run (SipHash, as std's `RandomState`), so a hostile list cannot
//! craft collisions; an accidental one (odds about n²/2⁶⁵) makes the planner refuse the list,
//! which costs one plain rsync.
//!
//! **The null check** compares the two files' sizes, then their bytes, before anything is
//! parsed: an unchanged list costs one read of each file and no parsing. A changed list of the
//! same size is read again from the top by the plan, but only its identical prefix was read
//! before; a changed list of another size (nearly every real change) is not compared at all.
//!
//! Beyond what the reader refuses, a fetched list is invalid when a path appears twice or when
//! an entry's parent is not listed as a directory (a child of a symlink or of a file is how a
//! list would try to reach outside the tree through a link): every list the generator writes
//! has each entry's parent listed as a directory.
//!
//! Both output files hold NUL-terminated paths relative to the module top, for
//! `rsync --from0 --files-from=F`; a third, where asked for, the type letter of each entry to
//! transfer. They are written under temporary names and renamed into place only when the whole
//! plan succeeded: after an error none exists.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::format::{Access, Algo, EntryRef, Item, Kind, ListError, Reader, Writer};
use super::{cmp_paths, is_within, parent, AtomicFile};
use crate::request::{escape_bytes, RelDir};

/// The default entry cap: most entries a list may hold (Fedora's largest module holds about
/// 12 million). It bounds what an unsorted list costs the index planner (about 40 bytes per
/// entry, 2 GB at the cap); a sorted list costs the same small memory at any size.
pub const MAX_ENTRIES: u64 = 50_000_000;

/// The limits a plan runs under (the handler's admin-settable ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most entries either list may hold; beyond it: [`PlanError::TooManyEntries`].
    pub max_entries: u64,
}

impl Default for PlanLimits {
    fn default() -> PlanLimits {
        PlanLimits {
            max_entries: MAX_ENTRIES,
        }
    }
}

/// What to plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The last list applied successfully. Must exist (no baseline: run a plain rsync).
    pub baseline: &'a Path,
    /// The list just fetched from upstream.
    pub fetched: &'a Path,
    /// A dir push: only entries equal to or below this dir count, on both sides.
    pub scope: Option<&'a RelDir>,
    /// More deletions than this and the plan is refused.
    pub max_delete: u64,
    /// Ignore entries marked `*` or `-` on both sides, as quick-fedora-mirror does by default
    /// (public mirrors cannot read them upstream). They are still validated.
    pub skip_restricted: bool,
    /// Where to write the paths to transfer.
    pub transfer_out: &'a Path,
    /// Where to write the paths to delete, children before their parents.
    pub delete_out: &'a Path,
    /// Where to write each transferred entry's type, one letter per entry (`f`, `d`, `l`) in the
    /// order of the transfer list: putting an entry of another type in place removes what the
    /// mirror holds there (rsync's `--force` removes a whole dir), which the handler counts
    /// against `max_delete` before anything moves.
    pub kinds_out: Option<&'a Path>,
}

/// What the run has to do. On success both output files exist (empty when there is nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The fetched list is byte for byte the baseline: a null sync, nothing to run.
    pub unchanged: bool,
    /// Entries to transfer: new, or differing in type, size or mtime (dirs included).
    pub transfer: u64,
    /// Entries to delete: in the baseline (within the scope) but not in the fetched list.
    pub delete: u64,
    /// Entries of the fetched list within the scope (0 when unchanged: it is not read).
    pub entries: u64,
}

/// How the runner should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The fetched list (or the stored baseline) cannot be trusted: log it and run a plain
    /// rsync instead. An invalid fetched list must not become the baseline.
    Fallback,
    /// The plan is refused (too many deletions): nothing is transferred or deleted, the run
    /// fails with this message.
    Refused,
    /// Local trouble (reading or writing the state dir): a temporary failure.
    Temporary,
}

/// A planning error; its `Display` is one line.
#[derive(Debug)]
pub enum PlanError {
    /// The fetched list is malformed or hostile.
    InvalidList { list: PathBuf, reason: String },
    /// The stored baseline is missing a part or does not parse (it should not happen: only
    /// valid lists become baselines, but disks fail).
    InvalidBaseline { list: PathBuf, reason: String },
    /// More deletions than `max_delete`.
    TooManyDeletions { delete: u64, max_delete: u64 },
    /// A list (fetched or baseline) holds more entries than [`PlanLimits::max_entries`]: it is
    /// not planned (a plain rsync instead) and does not become a baseline.
    TooManyEntries { list: PathBuf, max_entries: u64 },
    /// Reading or writing a file failed.
    Io { path: PathBuf, error: io::Error },
}

impl PlanError {
    pub fn class(&self) -> ErrorClass {
        match self {
            PlanError::InvalidList { .. }
            | PlanError::InvalidBaseline { .. }
            | PlanError::TooManyEntries { .. } => ErrorClass::Fallback,
            PlanError::TooManyDeletions { .. } => ErrorClass::Refused,
            PlanError::Io { .. } => ErrorClass::Temporary,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::InvalidList { list, reason } => {
                write!(f, "invalid file list {}: {reason}", show(list))
            }
            PlanError::InvalidBaseline { list, reason } => {
                write!(f, "invalid baseline {}: {reason}", show(list))
            }
            PlanError::TooManyDeletions { delete, max_delete } => write!(
                f,
                "the file list would delete {delete} entries, more than max_delete ({max_delete}); nothing was deleted"
            ),
            PlanError::TooManyEntries { list, max_entries } => write!(
                f,
                "file list {} holds more than {max_entries} entries (the entry cap); not planned",
                show(list)
            ),
            PlanError::Io { path, error } => write!(f, "{}: {error}", show(path)),
        }
    }
}

impl std::error::Error for PlanError {}

fn show(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape_bytes(path.as_os_str().as_bytes())
}

/// Which list an error is about.
#[derive(Clone, Copy)]
enum Side {
    Fetched,
    Baseline,
}

fn invalid(side: Side, list: &Path, reason: String) -> PlanError {
    let list = list.to_owned();
    match side {
        Side::Fetched => PlanError::InvalidList { list, reason },
        Side::Baseline => PlanError::InvalidBaseline { list, reason },
    }
}

fn list_error(side: Side, list: &Path, e: ListError) -> PlanError {
    match e {
        ListError::Io(error) => PlanError::Io {
            path: list.to_owned(),
            error,
        },
        e => invalid(side, list, e.to_string()),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> PlanError + '_ {
    move |error| PlanError::Io {
        path: path.to_owned(),
        error,
    }
}

fn open(path: &Path) -> Result<BufReader<File>, PlanError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(io_error(path))
}

/// Keyed hashes of paths and of (type, size, mtime).
struct Keys(RandomState);

impl Keys {
    fn new() -> Keys {
        Keys(RandomState::new())
    }

    fn path(&self, path: &[u8]) -> u64 {
        let mut h = self.0.build_hasher();
        h.write(path);
        h.finish()
    }

    fn fingerprint(&self, e: &EntryRef<'_>) -> u64 {
        let mut h = self.0.build_hasher();
        h.write_u8(e.kind.letter());
        h.write_u64(e.size);
        h.write_i64(e.mtime);
        h.finish()
    }
}

/// Whether an entry takes part in the diff.
fn counts(e: &EntryRef<'_>, scope: Option<&RelDir>, skip_restricted: bool) -> bool {
    scope.is_none_or(|d| is_within(e.path, d.as_str().as_bytes()))
        && !(skip_restricted && e.access != Access::Public)
}

/// The baseline's entries within the scope, as (path hash, fingerprint) in list order, with
/// an index by hash and a seen-bit each.
///
/// Lookups first try the row after the last one found: lists of the same generator come in
/// the same order, so nearly every lookup is a sequential read. Otherwise the index (row
/// numbers sorted by hash, with a directory of where each run of leading hash bits starts;
/// hashes are uniform, so a run holds about two rows) costs about two cache misses, where a
/// binary search over a million rows costs twenty.
struct Table {
    rows: Vec<(u64, u64)>,
    index: Vec<u32>,
    /// `starts[b]`: the first index slot whose row's hash has top `bits` bits of at least `b`.
    starts: Vec<u32>,
    bits: u32,
    seen: Vec<u64>,
    cursor: usize,
}

impl Table {
    /// Fails on a duplicate hash (a path listed twice, or a collision).
    fn build(rows: Vec<(u64, u64)>) -> Result<Table, ()> {
        // Sorted as (hash, row) pairs: sorting row numbers by their rows' hashes would chase
        // a pointer per comparison.
        let mut pairs: Vec<(u64, u32)> = rows.iter().zip(0u32..).map(|(r, i)| (r.0, i)).collect();
        pairs.sort_unstable();
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(());
        }
        let index: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let hash = |slot: usize| pairs[slot].0;
        // About two rows per run; at least one bit so the shift below stays under 64.
        let bits = (usize::BITS - (rows.len() / 2).leading_zeros()).clamp(1, 32);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut slot = 0;
        for b in 0..=(1u64 << bits) {
            while slot < index.len() && hash(slot) >> (64 - bits) < b {
                slot += 1;
            }
            starts.push(slot as u32);
        }
        drop(pairs);
        let seen = vec![0u64; rows.len().div_ceil(64)];
        Ok(Table {
            rows,
            index,
            starts,
            bits,
            seen,
            cursor: 0,
        })
    }

    /// The row of a path hash.
    fn find(&mut self, h: u64) -> Option<usize> {
        if self.rows.get(self.cursor).is_some_and(|r| r.0 == h) {
            self.cursor += 1;
            return Some(self.cursor - 1);
        }
        let b = (h >> (64 - self.bits)) as usize;
        let run = &self.index[self.starts[b] as usize..self.starts[b + 1] as usize];
        let at = run.partition_point(|&i| self.rows[i as usize].0 < h);
        let row = *run.get(at)? as usize;
        (self.rows[row].0 == h).then(|| {
            self.cursor = row + 1;
            row
        })
    }

    fn mark(&mut self, i: usize) {
        self.seen[i / 64] |= 1 << (i % 64);
    }

    fn is_seen(&self, i: usize) -> bool {
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    fn unseen(&self) -> u64 {
        self.rows.len() as u64
            - self
                .seen
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>()
    }
}

/// Kind codes packed into the low bits of a path hash, for the structural checks.
fn code(kind: Kind) -> u64 {
    match kind {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
    }
}

const HIGH: u64 = !3;

/// What the structural checks of a list need: every entry's (hash, kind) and every parent's
/// hash. Run after the list was read, they find duplicates and entries whose parent is not a
/// listed dir without holding any path.
struct Structure {
    entries: Vec<u64>,
    parents: Vec<u64>,
    last_parent: Vec<u8>,
    last_parent_hash: u64,
}

impl Structure {
    fn new() -> Structure {
        Structure {
            entries: Vec::new(),
            parents: Vec::new(),
            last_parent: Vec::new(),
            last_parent_hash: 0,
        }
    }

    fn add(&mut self, keys: &Keys, h: u64, e: &EntryRef<'_>) {
        self.entries.push((h & HIGH) | code(e.kind));
        if let Some(p) = parent(e.path) {
            // Lists are mostly grouped by dir: hash each parent once per run of siblings.
            if p != self.last_parent.as_slice() {
                self.last_parent.clear();
                self.last_parent.extend_from_slice(p);
                self.last_parent_hash = keys.path(p) & HIGH;
                self.parents.push(self.last_parent_hash);
            }
        }
    }

    /// The first problem: a duplicated hash, or a parent hash with no dir entry.
    fn check(mut self) -> Result<(), Flaw> {
        self.entries.sort_unstable();
        if let Some(w) = self.entries.windows(2).find(|w| w[0] & HIGH == w[1] & HIGH) {
            return Err(Flaw::Duplicate(w[0] & HIGH));
        }
        self.parents.sort_unstable();
        self.parents.dedup();
        let mut i = 0;
        for &p in &self.parents {
            while i < self.entries.len() && self.entries[i] & HIGH < p {
                i += 1;
            }
            match self.entries.get(i) {
                Some(&x) if x & HIGH == p && x & 3 == code(Kind::Dir) => {}
                _ => return Err(Flaw::Parent(p)),
            }
        }
        Ok(())
    }
}

enum Flaw {
    Duplicate(u64),
    Parent(u64),
}

/// Reads the list again to put a path and line on a structural flaw (the checks only had
/// hashes). Only runs when a list is being refused.
fn explain(keys: &Keys, list: &Path, flaw: Flaw) -> Result<String, PlanError> {
    let mut reader = Reader::new(open(list)?);
    // Duplicate: the first line of the path. Parent: the first child, and the entries that
    // could be its parent (same hash), whichever comes first in the list.
    let mut first: Option<(u64, Vec<u8>)> = None;
    let mut holders: Vec<(Vec<u8>, Kind)> = Vec::new();
    while let Some(record) = reader
        .next_record()
        .map_err(|e| list_error(Side::Fetched, list, e))?
    {
        let Item::Entry(e) = record.item else {
            continue;
        };
        let line = record.number;
        match flaw {
            Flaw::Duplicate(d) => {
                if keys.path(e.path) & HIGH != d {
                    continue;
                }
                match &first {
                    None => first = Some((line, e.path.to_vec())),
                    Some((at, path)) if path == e.path => {
                        return Ok(format!(
                            "line {line}: '{}' is listed twice (first on line {at})",
                            escape_bytes(e.path)
                        ))
                    }
                    Some(_) => {}
                }
            }
            Flaw::Parent(p) => {
                if keys.path(e.path) & HIGH == p {
                    holders.push((e.path.to_vec(), e.kind));
                }
                if first.is_none() && parent(e.path).is_some_and(|q| keys.path(q) & HIGH == p) {
                    first = Some((line, e.path.to_vec()));
                }
            }
        }
    }
    if let (Flaw::Parent(_), Some((line, child))) = (&flaw, &first) {
        let par = parent(child).unwrap_or_default();
        let what = match holders.iter().find(|(path, _)| path == par) {
            Some((_, Kind::Symlink)) => "which the list gives as a symlink",
            Some((_, Kind::File)) => "which the list gives as a file",
            _ => "which the list does not hold",
        };
        return Ok(format!(
            "line {line}: '{}' is inside '{}', {what}",
            escape_bytes(child),
            escape_bytes(par)
        ));
    }
    // Two different paths with the same hash (or the file changed while we read it).
    Ok("two entries share a hash; not trusting the list this time".into())
}

/// Reads a whole fetched list and applies every check the planner applies (the reader's, then
/// duplicates and parents). For a run without a baseline, before its list becomes one.
/// Returns the number of entries. Under the default [`PlanLimits`].
pub fn validate(list: &Path) -> Result<u64, PlanError> {
    validate_limited(list, &PlanLimits::default())
}

/// [`validate`] under `limits`. A list in list order is checked in one pass in small memory;
/// any other order by the index (see the module docs).
pub fn validate_limited(list: &Path, limits: &PlanLimits) -> Result<u64, PlanError> {
    match validate_sorted(list, limits)? {
        Some(count) => Ok(count),
        None => validate_indexed(list, limits),
    }
}

fn validate_indexed(list: &Path, limits: &PlanLimits) -> Result<u64, PlanError> {
    let keys = Keys::new();
    let mut structure = Structure::new();
    let mut reader = Reader::new(open(list)?);
    let mut count = 0u64;
    while let Some(item) = reader
        .next_item()
        .map_err(|e| list_error(Side::Fetched, list, e))?
    {
        if let Item::Entry(e) = item {
            count += 1;
            check_count(count, list, limits)?;
            structure.add(&keys, keys.path(e.path), &e);
        }
    }
    if let Err(flaw) = structure.check() {
        return Err(invalid(Side::Fetched, list, explain(&keys, list, flaw)?));
    }
    Ok(count)
}

fn check_count(count: u64, list: &Path, limits: &PlanLimits) -> Result<(), PlanError> {
    if count > limits.max_entries {
        return Err(PlanError::TooManyEntries {
            list: list.to_owned(),
            max_entries: limits.max_entries,
        });
    }
    Ok(())
}

/// Whether two files have the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool, PlanError> {
    let (ma, mb) = (
        fs::metadata(a).map_err(io_error(a))?,
        fs::metadata(b).map_err(io_error(b))?,
    );
    if ma.len() != mb.len() {
        return Ok(false);
    }
    // Large reads straight from the files: at 12 million entries this is 2.6 GB to compare.
    let (mut ra, mut rb) = (
        File::open(a).map_err(io_error(a))?,
        File::open(b).map_err(io_error(b))?,
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut ra, &mut ba).map_err(io_error(a))?;
        let m = read_full(&mut rb, &mut bb).map_err(io_error(b))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Plans the run (see the module docs) under the default [`PlanLimits`]. Errors are classified by
/// [`PlanError::class`].
pub fn plan(req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
    plan_limited(req, &PlanLimits::default())
}

/// [`plan`] under `limits` (the handler's `max_list_entries`).
pub fn plan_limited(req: &PlanRequest<'_>, limits: &PlanLimits) -> Result<Plan, PlanError> {
    // Outputs of an earlier run must never be mistaken for this one's.
    for out in [req.transfer_out, req.delete_out]
        .into_iter()
        .chain(req.kinds_out)
    {
        match fs::remove_file(out) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(out)(e)),
            _ => {}
        }
    }
    if same_bytes(req.baseline, req.fetched)? {
        let (transfer_file, delete_file) = outputs(req)?;
        commit_outputs(req, transfer_file, delete_file, std::iter::empty::<&[u8]>())?;
        return Ok(Plan {
            unchanged: true,
            transfer: 0,
            delete: 0,
            entries: 0,
        });
    }
    match plan_sorted(req, limits)? {
        Some(plan) => Ok(plan),
        None => plan_indexed(req, limits),
    }
}

/// The transfer list being written, with the types of its entries where asked for.
struct TransferOut {
    paths: AtomicFile,
    kinds: Option<AtomicFile>,
}

impl TransferOut {
    fn push(&mut self, req: &PlanRequest<'_>, path: &[u8], kind: Kind) -> Result<(), PlanError> {
        let write_err = io_error(req.transfer_out);
        self.paths.write_all(path).map_err(&write_err)?;
        self.paths.write_all(b"\0").map_err(&write_err)?;
        if let (Some(kinds), Some(out)) = (&mut self.kinds, req.kinds_out) {
            kinds.write_all(&[kind.letter()]).map_err(io_error(out))?;
        }
        Ok(())
    }
}

/// The output files, under temporary names until committed.
fn outputs(req: &PlanRequest<'_>) -> Result<(TransferOut, AtomicFile), PlanError> {
    let paths = AtomicFile::create(req.transfer_out, 0o640).map_err(io_error(req.transfer_out))?;
    let kinds = match req.kinds_out {
        Some(out) => Some(AtomicFile::create(out, 0o640).map_err(io_error(out))?),
        None => None,
    };
    let delete_file =
        AtomicFile::create(req.delete_out, 0o640).map_err(io_error(req.delete_out))?;
    Ok((TransferOut { paths, kinds }, delete_file))
}

/// Writes the paths to delete (children before their dir, as given) and puts every output in
/// place.
fn commit_outputs<P: AsRef<[u8]>>(
    req: &PlanRequest<'_>,
    transfer: TransferOut,
    mut delete_file: AtomicFile,
    gone: impl IntoIterator<Item = P>,
) -> Result<(), PlanError> {
    let write_err = io_error(req.delete_out);
    for path in gone {
        delete_file.write_all(path.as_ref()).map_err(&write_err)?;
        delete_file.write_all(b"\0").map_err(&write_err)?;
    }
    transfer
        .paths
        .commit(false)
        .map_err(io_error(req.transfer_out))?;
    if let (Some(kinds), Some(out)) = (transfer.kinds, req.kinds_out) {
        kinds.commit(false).map_err(io_error(out))?;
    }
    delete_file.commit(false).map_err(io_error(req.delete_out))
}

/// The index planner, for lists not in list order (see the module docs).
fn plan_indexed(req: &PlanRequest<'_>, limits: &PlanLimits) -> Result<Plan, PlanError> {
    let (mut transfer_out, delete_file) = outputs(req)?;
    let keys = Keys::new();
    let scope = req.scope;
    let skip = req.skip_restricted;

    // The baseline's entries in scope.
    let mut rows = Vec::new();
    let mut reader = Reader::new(open(req.baseline)?);
    let mut baseline_count = 0u64;
    while let Some(item) = reader
        .next_item()
        .map_err(|e| list_error(Side::Baseline, req.baseline, e))?
    {
        if let Item::Entry(e) = item {
            baseline_count += 1;
            check_count(baseline_count, req.baseline, limits)?;
            if counts(&e, scope, skip) {
                rows.push((keys.path(e.path), keys.fingerprint(&e)));
            }
        }
    }
    let mut table = Table::build(rows).map_err(|()| {
        invalid(
            Side::Baseline,
            req.baseline,
            "two entries share a path (or a hash)".into(),
        )
    })?;

    // The fetched list against it: what to transfer, streamed out; the checks' material.
    let mut structure = Structure::new();
    let mut reader = Reader::new(open(req.fetched)?);
    let (mut transfer, mut entries, mut count) = (0u64, 0u64, 0u64);
    while let Some(item) = reader
        .next_item()
        .map_err(|e| list_error(Side::Fetched, req.fetched, e))?
    {
        let Item::Entry(e) = item else { continue };
        count += 1;
        check_count(count, req.fetched, limits)?;
        let h = keys.path(e.path);
        structure.add(&keys, h, &e);
        if !counts(&e, scope, skip) {
            continue;
        }
        entries += 1;
        let changed = match table.find(h) {
            Some(i) => {
                table.mark(i);
                table.rows[i].1 != keys.fingerprint(&e)
            }
            None => true,
        };
        if changed {
            transfer += 1;
            transfer_out.push(req, e.path, e.kind)?;
        }
    }
    if let Err(flaw) = structure.check() {
        return Err(invalid(
            Side::Fetched,
            req.fetched,
            explain(&keys, req.fetched, flaw)?,
        ));
    }

    let delete = table.unseen();
    if delete > req.max_delete {
        return Err(PlanError::TooManyDeletions {
            delete,
            max_delete: req.max_delete,
        });
    }
    let mut gone: Vec<Vec<u8>> = Vec::new();
    if delete > 0 {
        // The baseline again, for the paths of the entries that left; bounded by max_delete.
        gone.reserve_exact(delete as usize);
        let mut reader = Reader::new(open(req.baseline)?);
        let mut row = 0;
        while let Some(item) = reader
            .next_item()
            .map_err(|e| list_error(Side::Baseline, req.baseline, e))?
        {
            if let Item::Entry(e) = item {
                if counts(&e, scope, skip) {
                    // The same entries in the same order as the first read: row by row.
                    if row >= table.rows.len() {
                        return Err(invalid(
                            Side::Baseline,
                            req.baseline,
                            "changed while it was read".into(),
                        ));
                    }
                    if !table.is_seen(row) {
                        gone.push(e.path.to_vec());
                    }
                    row += 1;
                }
            }
        }
        // List order puts a dir before what it holds; reversed, children come first.
        gone.sort_unstable_by(|a, b| cmp_paths(b, a));
    }
    commit_outputs(req, transfer_out, delete_file, &gone)?;
    Ok(Plan {
        unchanged: false,
        transfer,
        delete,
        entries,
    })
}

/// How a list's order and structure look to a one-pass reader.
enum Step {
    /// In list order and, so far, well formed.
    Ok,
    /// Out of list order, or an entry whose parent is not the innermost listed dir above it
    /// (which in list order is a flaw, but in another order may be a dir listed later): only
    /// the index planner can tell, so it takes over.
    NotSorted,
    /// The same path twice in a row: invalid in any order. The reason, for the error.
    Duplicate(String),
}

/// The one-pass checks of a list in list order: strictly increasing paths, and each entry's
/// parent the innermost listed dir still open above it. Memory: the previous path and the
/// chain of open dirs (each a prefix of the next, so one buffer and their lengths).
struct Walk {
    prev: Vec<u8>,
    prev_line: u64,
    started: bool,
    chain: Vec<u8>,
    open: Vec<usize>,
    count: u64,
}

impl Walk {
    fn new() -> Walk {
        Walk {
            prev: Vec::with_capacity(256),
            prev_line: 0,
            started: false,
            chain: Vec::with_capacity(256),
            open: Vec::new(),
            count: 0,
        }
    }

    fn step(&mut self, e: &EntryRef<'_>, line: u64) -> Step {
        if self.started {
            match cmp_paths(&self.prev, e.path) {
                Ordering::Less => {}
                Ordering::Equal => {
                    return Step::Duplicate(format!(
                        "line {line}: '{}' is listed twice (first on line {})",
                        escape_bytes(e.path),
                        self.prev_line
                    ))
                }
                Ordering::Greater => return Step::NotSorted,
            }
        }
        // Close the dirs this entry is not below; in list order a dir's subtree is contiguous.
        while let Some(&n) = self.open.last() {
            if is_within(e.path, &self.chain[..n]) {
                break;
            }
            self.open.pop();
        }
        let parent_len = parent(e.path).map(<[u8]>::len);
        if parent_len != self.open.last().copied() {
            return Step::NotSorted;
        }
        if e.kind == Kind::Dir {
            self.chain.clear();
            self.chain.extend_from_slice(e.path);
            self.open.push(e.path.len());
        }
        self.prev.clear();
        self.prev.extend_from_slice(e.path);
        self.prev_line = line;
        self.started = true;
        self.count += 1;
        Step::Ok
    }

    /// Takes over `other`'s position after both walked the same line: what the checks look at
    /// (the previous path and the dirs open above it) depends only on that line's path and
    /// type. `line` is the line's number here, `count` grows by `lines` (the lines this walk
    /// passed over unstepped).
    fn follow(&mut self, other: &Walk, line: u64, lines: u64) {
        self.prev.clone_from(&other.prev);
        self.chain.clone_from(&other.chain);
        self.open.clone_from(&other.open);
        self.started = other.started;
        self.prev_line = line;
        self.count += lines;
    }
}

/// One list being merged: its reader and its checks.
struct Stream {
    reader: Reader<BufReader<File>>,
    walk: Walk,
    side: Side,
}

/// What reading the next entry of a stream found.
enum Next<'a> {
    Entry(EntryRef<'a>),
    End,
    NotSorted,
}

impl Stream {
    fn open(path: &Path, side: Side) -> Result<Stream, PlanError> {
        Ok(Stream {
            reader: Reader::new(open(path)?),
            walk: Walk::new(),
            side,
        })
    }

    /// The next entry (checksum lines are checked and passed over), checked.
    fn next(&mut self, path: &Path, limits: &PlanLimits) -> Result<Next<'_>, PlanError> {
        if self.next_line(path)?.is_none() {
            return Ok(Next::End);
        }
        self.current(path, limits)
    }

    /// The next entry's line, unparsed; [`Stream::current`] parses and checks it.
    fn next_line(&mut self, path: &Path) -> Result<Option<&[u8]>, PlanError> {
        self.reader
            .next_entry_line()
            .map_err(|e| list_error(self.side, path, e))
    }

    /// The line [`Stream::next_line`] returned, parsed and checked.
    fn current(&mut self, path: &Path, limits: &PlanLimits) -> Result<Next<'_>, PlanError> {
        let (e, line) = self
            .reader
            .current_entry()
            .map_err(|e| list_error(self.side, path, e))?;
        match self.walk.step(&e, line) {
            Step::Ok => {}
            Step::NotSorted => return Ok(Next::NotSorted),
            Step::Duplicate(reason) => return Err(invalid(self.side, path, reason)),
        }
        check_count(self.walk.count, path, limits)?;
        Ok(Next::Entry(e))
    }
}

/// [`validate`] in one pass; `None` when the list is not in list order.
fn validate_sorted(list: &Path, limits: &PlanLimits) -> Result<Option<u64>, PlanError> {
    let mut stream = Stream::open(list, Side::Fetched)?;
    loop {
        match stream.next(list, limits)? {
            Next::Entry(_) => {}
            Next::End => return Ok(Some(stream.walk.count)),
            Next::NotSorted => return Ok(None),
        }
    }
}

/// The merge planner (see the module docs); `None` when either list is not in list order
/// (nothing is left behind: the outputs are dropped uncommitted).
fn plan_sorted(req: &PlanRequest<'_>, limits: &PlanLimits) -> Result<Option<Plan>, PlanError> {
    let (mut transfer_out, delete_file) = outputs(req)?;
    let (scope, skip) = (req.scope, req.skip_restricted);
    let mut base = Stream::open(req.baseline, Side::Baseline)?;
    let mut fetched = Stream::open(req.fetched, Side::Fetched)?;
    let (mut transfer, mut entries, mut delete) = (0u64, 0u64, 0u64);
    // Paths to delete, in list order (parents first); bounded by max_delete.
    let mut gone: Vec<Vec<u8>> = Vec::new();
    let mut note_gone = |path: &[u8]| {
        delete += 1;
        if delete <= req.max_delete {
            gone.push(path.to_vec());
        }
    };
    let mut a = base.next(req.baseline, limits)?;
    let mut b = fetched.next(req.fetched, limits)?;
    loop {
        // Which side(s) the smaller path is on.
        let (take_a, take_b) = match (&a, &b) {
            (Next::NotSorted, _) | (_, Next::NotSorted) => return Ok(None),
            (Next::End, Next::End) => break,
            (Next::Entry(_), Next::End) => (true, false),
            (Next::End, Next::Entry(_)) => (false, true),
            (Next::Entry(x), Next::Entry(y)) => match cmp_paths(x.path, y.path) {
                Ordering::Less => (true, false),
                Ordering::Greater => (false, true),
                Ordering::Equal => (true, true),
            },
        };
        let old = match &a {
            Next::Entry(x) if take_a && counts(x, scope, skip) => Some(x),
            _ => None,
        };
        if let Next::Entry(y) = &b {
            if take_b && counts(y, scope, skip) {
                entries += 1;
                let same =
                    old.is_some_and(|x| x.kind == y.kind && x.size == y.size && x.mtime == y.mtime);
                if !same {
                    transfer += 1;
                    transfer_out.push(req, y.path, y.kind)?;
                }
            } else if let Some(x) = old {
                // Listed on both sides, but no longer counted (now restricted): it leaves.
                note_gone(x.path);
            }
        } else if let Some(x) = old {
            note_gone(x.path);
        }
        // The same path with the same type on both sides leaves both walks in the same state:
        // the lines that follow byte for byte alike can be passed over together.
        let in_step = take_a
            && take_b
            && matches!((&a, &b), (Next::Entry(x), Next::Entry(y)) if x.kind == y.kind);
        if in_step {
            (a, b) = next_pair(&mut base, &mut fetched, req, limits, &mut entries)?;
        } else {
            if take_a {
                a = base.next(req.baseline, limits)?;
            }
            if take_b {
                b = fetched.next(req.fetched, limits)?;
            }
        }
    }
    if delete > req.max_delete {
        return Err(PlanError::TooManyDeletions {
            delete,
            max_delete: req.max_delete,
        });
    }
    // List order puts a dir before what it holds; reversed, children come first.
    commit_outputs(req, transfer_out, delete_file, gone.iter().rev())?;
    Ok(Some(Plan {
        unchanged: false,
        transfer,
        delete,
        entries,
    }))
}

/// The next entry of each stream, when both just walked the same path with the same type,
/// passing over the lines the two lists share byte for byte first: most lines of a changed list
/// are unchanged, and such a line is a no-op for the plan (listed on both sides, same type, size
/// and time). The baseline's copy of each is parsed and checked as always; the fetched copy, the
/// same bytes met in the same walk state, would pass the same checks with the same result, so it
/// is only counted, and the fetched walk takes over the baseline's state at the first line that
/// differs.
fn next_pair<'a, 'b>(
    base: &'a mut Stream,
    fetched: &'b mut Stream,
    req: &PlanRequest<'_>,
    limits: &PlanLimits,
    entries: &mut u64,
) -> Result<(Next<'a>, Next<'b>), PlanError> {
    let mut passed = 0u64;
    let (more_a, more_b) = loop {
        let (x, y) = (
            base.next_line(req.baseline)?,
            fetched.next_line(req.fetched)?,
        );
        match (x, y) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => break (x.is_some(), y.is_some()),
        }
        match base.current(req.baseline, limits)? {
            Next::Entry(x) => {
                if counts(&x, req.scope, req.skip_restricted) {
                    *entries += 1;
                }
            }
            // Out of order: the index planner takes over whatever the fetched side holds.
            _ => return Ok((Next::NotSorted, Next::End)),
        }
        passed += 1;
        check_count(fetched.walk.count + passed, req.fetched, limits)?;
    };
    if passed > 0 {
        let line = fetched.reader.line_number() - u64::from(more_b);
        fetched.walk.follow(&base.walk, line, passed);
    }
    let a = if more_a {
        base.current(req.baseline, limits)?
    } else {
        Next::End
    };
    let b = if more_b {
        fetched.current(req.fetched, limits)?
    } else {
        Next::End
    };
    Ok((a, b))
}

/// Writes the baseline for the next run after a good one, by temporary file and rename (and
/// fsync: it is the state the next plan trusts). `out` may be `old` itself.
/// - A full run (`scope` None): the fetched list, byte for byte; `old` is not read.
/// - A dir push: the fetched list's entries within the dir plus `old`'s outside it. When the
///   two lists agree outside the dir this is again the fetched list byte for byte, so the next
///   push of an unchanged upstream is a null sync. `old` must be a valid list (an error of
///   class `Fallback` otherwise: remove the baseline, so the next run is a plain rsync that
///   makes a new one).
///
/// The fetched list is validated like [`validate`] in both cases: only valid lists become
/// baselines.
pub fn write_baseline(
    old: &Path,
    fetched: &Path,
    scope: Option<&RelDir>,
    out: &Path,
) -> Result<(), PlanError> {
    write_baseline_limited(old, fetched, scope, out, &PlanLimits::default())
}

/// [`write_baseline`] under `limits`.
pub fn write_baseline_limited(
    old: &Path,
    fetched: &Path,
    scope: Option<&RelDir>,
    out: &Path,
    limits: &PlanLimits,
) -> Result<(), PlanError> {
    validate_limited(fetched, limits)?;
    let Some(scope) = scope else {
        return copy_file(fetched, out);
    };
    let dir = scope.as_str().as_bytes();
    let keys = Keys::new();
    let outside = |list: &Path, side: Side| -> Result<(u64, u64), PlanError> {
        // A multiset digest of the lines outside the dir: the sum of their keyed hashes.
        let mut reader = Reader::new(open(list)?);
        let (mut sum, mut n) = (0u64, 0u64);
        while let Some(r) = reader
            .next_record()
            .map_err(|e| list_error(side, list, e))?
        {
            let line = r.line;
            let (path, tag) = match r.item {
                Item::Entry(e) => (e.path, 0u8),
                Item::Checksum(c) => (c.path, 1 + c.algo as u8),
            };
            if !is_within(path, dir) {
                let mut h = keys.0.build_hasher();
                h.write_u8(tag);
                h.write(line);
                sum = sum.wrapping_add(h.finish());
                n += 1;
            }
        }
        Ok((sum, n))
    };
    if outside(fetched, Side::Fetched)? == outside(old, Side::Baseline)? {
        return copy_file(fetched, out);
    }

    // They differ outside the dir: old's entries outside it, with fetched's inside it written
    // where the dir's subtree stands in list order (a subtree is contiguous: everything after
    // it compares greater than the dir), so the next baseline stays in list order and the next
    // plan streams rather than indexes.
    let mut file = AtomicFile::create(out, 0o640).map_err(io_error(out))?;
    let mut w = Writer::new(&mut file).map_err(io_error(out))?;
    let mut sums: Vec<(Algo, Vec<u8>)> = Vec::new();
    let mut inside_written = false;
    let mut reader = Reader::new(open(old)?);
    while let Some(r) = reader
        .next_record()
        .map_err(|e| list_error(Side::Baseline, old, e))?
    {
        let line = r.line;
        match r.item {
            Item::Entry(e) if !is_within(e.path, dir) => {
                if !inside_written && cmp_paths(e.path, dir) == std::cmp::Ordering::Greater {
                    copy_inside(fetched, dir, &mut w, &mut sums, out)?;
                    inside_written = true;
                }
                w.entry_line(line).map_err(io_error(out))?;
            }
            Item::Checksum(c) if !is_within(c.path, dir) => {
                sums.push((c.algo, line.to_vec()));
            }
            _ => {}
        }
    }
    if !inside_written {
        copy_inside(fetched, dir, &mut w, &mut sums, out)?;
    }
    for algo in Algo::ALL {
        let lines: Vec<&Vec<u8>> = sums.iter().filter(|s| s.0 == algo).map(|s| &s.1).collect();
        if lines.is_empty() && algo != Algo::Sha1 {
            continue;
        }
        w.checksum_section(algo).map_err(io_error(out))?;
        for line in lines {
            let (hex, path) = line.split_at(algo.hex_len());
            w.checksum(hex, &path[1..]).map_err(io_error(out))?;
        }
    }
    w.finish().map_err(io_error(out))?;
    file.commit(true).map_err(io_error(out))
}

/// Writes `fetched`'s entries within `dir` and gathers its checksum lines within it.
fn copy_inside<W: Write>(
    fetched: &Path,
    dir: &[u8],
    w: &mut Writer<W>,
    sums: &mut Vec<(Algo, Vec<u8>)>,
    out: &Path,
) -> Result<(), PlanError> {
    let mut reader = Reader::new(open(fetched)?);
    while let Some(r) = reader
        .next_record()
        .map_err(|e| list_error(Side::Fetched, fetched, e))?
    {
        match r.item {
            Item::Entry(e) if is_within(e.path, dir) => {
                w.entry_line(r.line).map_err(io_error(out))?;
            }
            Item::Checksum(c) if is_within(c.path, dir) => {
                sums.push((c.algo, r.line.to_vec()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), PlanError> {
    let mut file = AtomicFile::create(to, 0o640).map_err(io_error(to))?;
    let mut src = open(from)?;
    loop {
        let buf = src.fill_buf().map_err(io_error(from))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        file.write_all(buf).map_err(io_error(to))?;
        src.consume(n);
    }
    // The copy is the upstream's list byte for byte: it keeps its time too, so the list a
    // mirror publishes in its tree is the upstream's file exactly (size and time) and a plain
    // rsync of the tree finds nothing to change in it.
    let modified = src
        .get_ref()
        .metadata()
        .and_then(|m| m.modified())
        .map_err(io_error(from))?;
    file.set_modified(modified).map_err(io_error(to))?;
    file.commit(true).map_err(io_error(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filelist::format::{Access, Entry, Writer};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn e(path: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry {
            mtime,
            kind,
            access: Access::Public,
            size,
            path: path.as_bytes().to_vec(),
        }
    }

    fn write(path: &Path, entries: &[Entry]) {
        let mut w = Writer::new(Vec::new()).unwrap();
        for x in entries {
            w.entry(&x.as_ref()).unwrap();
        }
        w.checksum_section(Algo::Sha1).unwrap();
        fs::write(path, w.finish().unwrap()).unwrap();
    }

    fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
        v.sort_by(|a, b| cmp_paths(&a.path, &b.path));
        v
    }

    /// A plan and the bytes of its transfer and delete lists.
    type PlanWithLists = (Plan, Vec<u8>, Vec<u8>);

    /// A baseline and a fetched list in a temp dir, planned by either planner.
    struct Case {
        dir: tempfile::TempDir,
    }

    impl Case {
        fn new(base: &[Entry], fetched: &[Entry]) -> Case {
            let dir = tempfile::tempdir().unwrap();
            write(&dir.path().join("baseline"), base);
            write(&dir.path().join("fetched"), fetched);
            Case { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn run(
            &self,
            how: fn(&PlanRequest<'_>, &PlanLimits) -> Result<Option<Plan>, PlanError>,
            scope: Option<&str>,
            limits: &PlanLimits,
        ) -> Result<Option<PlanWithLists>, PlanError> {
            let scope = scope.map(|s| RelDir::parse(s).unwrap());
            let (t, d, k) = (
                self.path("transfer"),
                self.path("delete"),
                self.path("kinds"),
            );
            let plan = how(
                &PlanRequest {
                    baseline: &self.path("baseline"),
                    fetched: &self.path("fetched"),
                    scope: scope.as_ref(),
                    max_delete: 1000,
                    skip_restricted: false,
                    transfer_out: &t,
                    delete_out: &d,
                    kinds_out: Some(&k),
                },
                limits,
            )?;
            Ok(plan.map(|p| (p, fs::read(&t).unwrap(), fs::read(&d).unwrap())))
        }

        fn merged(&self, scope: Option<&str>) -> Option<PlanWithLists> {
            self.run(plan_sorted, scope, &PlanLimits::default())
                .unwrap()
        }

        fn indexed(&self, scope: Option<&str>) -> PlanWithLists {
            self.run(
                |r, l| plan_indexed(r, l).map(Some),
                scope,
                &PlanLimits::default(),
            )
            .unwrap()
            .unwrap()
        }
    }

    fn tree() -> Vec<Entry> {
        sorted(vec![
            e("a", Kind::Dir, 4096, 1),
            e("a/x", Kind::File, 1, 1),
            e("a/y", Kind::File, 2, 1),
            e("a/sub", Kind::Dir, 4096, 1),
            e("a/sub/z", Kind::File, 3, 1),
            e("a.b", Kind::File, 4, 1),
            e("ab", Kind::Dir, 4096, 1),
            e("ab/l", Kind::Symlink, 5, 1),
            e("c", Kind::File, 6, 1),
        ])
    }

    #[test]
    fn sorted_lists_are_merged_and_agree_with_the_index() {
        let mut next = tree();
        next.retain(|x| x.path != b"a/sub/z" && x.path != b"a/sub");
        next.push(e("a/new", Kind::File, 9, 2));
        next.push(e("ab/m", Kind::File, 1, 2));
        next[1].mtime = 5; // a (dir) changed
        let next = sorted(next);
        let case = Case::new(&tree(), &next);
        let (plan, transfer, delete) = case.merged(None).expect("in list order: merged");
        assert_eq!(
            plan,
            Plan {
                unchanged: false,
                transfer: 3,
                delete: 2,
                entries: next.len() as u64
            }
        );
        assert_eq!(transfer, b"a/new\0a/x\0ab/m\0");
        // Children before their parents.
        assert_eq!(delete, b"a/sub/z\0a/sub\0");
        assert_eq!(case.indexed(None), (plan, transfer, delete));
    }

    #[test]
    fn a_list_out_of_order_goes_to_the_index() {
        let mut shuffled = tree();
        shuffled.swap(1, 2);
        for (base, fetched) in [(tree(), shuffled.clone()), (shuffled.clone(), tree())] {
            let case = Case::new(&base, &fetched);
            assert!(case.merged(None).is_none());
            assert!(!case.path("transfer").exists() && !case.path("delete").exists());
            let (plan, ..) = case.indexed(None);
            assert_eq!((plan.transfer, plan.delete), (0, 0));
        }
        // The index is what `plan` falls back to; a dir listed after its children is fine.
        let mut children_first = tree();
        children_first.rotate_left(1);
        let case = Case::new(&tree(), &children_first);
        assert!(case.merged(None).is_none());
        let p = case.run(
            |r, l| plan_limited(r, l).map(Some),
            None,
            &PlanLimits::default(),
        );
        assert_eq!(p.unwrap().unwrap().0.transfer, 0);
    }

    #[test]
    fn a_dir_scope_and_type_changes_in_a_merge() {
        let mut next = tree();
        // a/x: file -> dir (with a child); ab/l: symlink -> file; c outside the scope changes.
        next.retain(|x| x.path != b"a/x");
        next.push(e("a/x", Kind::Dir, 4096, 1));
        next.push(e("a/x/in", Kind::File, 1, 1));
        for x in next.iter_mut() {
            if x.path == b"ab/l" {
                x.kind = Kind::File;
            }
            if x.path == b"c" {
                x.size = 99;
            }
        }
        let next = sorted(next);
        let case = Case::new(&tree(), &next);
        let (p, t, d) = case.merged(Some("a")).unwrap();
        assert_eq!((p.transfer, p.delete, p.entries), (2, 0, 6));
        assert_eq!(t, b"a/x\0a/x/in\0");
        assert!(d.is_empty());
        assert_eq!(case.indexed(Some("a")), (p, t, d));
        let kinds = || fs::read(case.path("kinds")).unwrap();
        assert_eq!(
            kinds(),
            b"df",
            "indexed: one type letter per transferred entry"
        );
        case.merged(Some("a")).unwrap();
        assert_eq!(kinds(), b"df", "merged: the same");
        let (p, t, _) = case.merged(Some("ab")).unwrap();
        assert_eq!((p.transfer, p.entries), (1, 2));
        assert_eq!(t, b"ab/l\0");
        assert_eq!(kinds(), b"f");
        let (p, t, _) = case.merged(None).unwrap();
        assert_eq!(p.transfer, 4);
        assert_eq!(t, b"a/x\0a/x/in\0ab/l\0c\0");
    }

    #[test]
    fn identical_lists_are_unchanged_without_planning() {
        let case = Case::new(&tree(), &tree());
        let p = case
            .run(
                |r, l| plan_limited(r, l).map(Some),
                None,
                &PlanLimits::default(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            (
                Plan {
                    unchanged: true,
                    transfer: 0,
                    delete: 0,
                    entries: 0
                },
                Vec::new(),
                Vec::new()
            )
        );
        // The merge of two identical lists (as when only blank lines differ) plans nothing.
        let (p, t, d) = case.merged(None).unwrap();
        assert_eq!((p.transfer, p.delete, p.entries), (0, 0, 9));
        assert!(t.is_empty() && d.is_empty());
    }

    #[test]
    fn the_entry_cap_refuses_either_list_on_either_path() {
        let mut bigger = tree();
        bigger.push(e("d", Kind::File, 1, 1));
        let cap = PlanLimits {
            max_entries: tree().len() as u64,
        };
        for (base, fetched, which) in [
            (tree(), bigger.clone(), "fetched"),
            (bigger.clone(), tree(), "baseline"),
        ] {
            let case = Case::new(&base, &fetched);
            for how in [
                plan_sorted as fn(&PlanRequest<'_>, &PlanLimits) -> _,
                |r: &PlanRequest<'_>, l: &PlanLimits| plan_indexed(r, l).map(Some),
            ] {
                let err = case.run(how, None, &cap).unwrap_err();
                assert!(
                    matches!(&err, PlanError::TooManyEntries { list, max_entries: 9 }
                        if list.ends_with(which)),
                    "{err}"
                );
                assert_eq!(err.class(), ErrorClass::Fallback);
                assert!(err.to_string().contains("more than 9 entries"), "{err}");
                assert!(!case.path("transfer").exists());
            }
            // At the cap exactly, both pass.
            let at = PlanLimits {
                max_entries: bigger.len() as u64,
            };
            assert!(case.run(plan_sorted, None, &at).unwrap().is_some());
        }
        let case = Case::new(&tree(), &bigger);
        let fetched = case.path("fetched");
        assert!(matches!(
            validate_limited(&fetched, &cap),
            Err(PlanError::TooManyEntries { .. })
        ));
        assert_eq!(
            validate_limited(&fetched, &PlanLimits::default()).unwrap(),
            10
        );
        assert!(matches!(
            validate_indexed(&fetched, &cap),
            Err(PlanError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn flaws_in_a_sorted_list_are_named_as_the_index_names_them() {
        let mut dup = tree();
        dup.insert(4, e("a/x", Kind::Dir, 1, 1));
        let case = Case::new(&tree(), &dup);
        let err = case
            .run(plan_sorted, None, &PlanLimits::default())
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fallback);
        assert!(
            err.to_string()
                .ends_with("line 9: 'a/x' is listed twice (first on line 8)"),
            "{err}"
        );
        // A child of a symlink: the merge hands over, the index explains.
        let mut bad = tree();
        bad.push(e("ab/l/passwd", Kind::File, 1, 1));
        let case = Case::new(&tree(), &sorted(bad));
        assert!(case.merged(None).is_none());
        let err = case
            .run(
                |r, l| plan_limited(r, l).map(Some),
                None,
                &PlanLimits::default(),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("'ab/l/passwd' is inside 'ab/l', which the list gives as a symlink"),
            "{err}"
        );
        let err = validate(&case.path("fetched")).unwrap_err();
        assert!(err.to_string().contains("gives as a symlink"), "{err}");
    }

    fn entry_strategy() -> impl Strategy<Value = Vec<Entry>> {
        // Small trees over a few names, so that the two lists share many paths.
        let name = prop_oneof![Just("a"), Just("b"), Just("a.b"), Just("a-"), Just("c")];
        proptest::collection::vec(
            (
                proptest::collection::vec(name, 1..4),
                0u8..3,
                0u64..3,
                0i64..3,
            ),
            0..30,
        )
        .prop_map(|raw| {
            let mut out: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            for (parts, kind, size, mtime) in raw {
                // Every ancestor a dir, as a valid list has.
                for depth in 1..parts.len() {
                    let p = parts[..depth].join("/");
                    out.insert(p.clone().into_bytes(), e(&p, Kind::Dir, 0, 0));
                }
                let p = parts.join("/");
                let kind = [Kind::File, Kind::Dir, Kind::Symlink][kind as usize];
                out.entry(p.clone().into_bytes())
                    .or_insert_with(|| e(&p, kind, size, mtime));
            }
            // Non-dirs with children are made dirs.
            let keys: Vec<Vec<u8>> = out.keys().cloned().collect();
            for k in &keys {
                if keys.iter().any(|c| is_within(c, k) && c != k) {
                    out.get_mut(k).unwrap().kind = Kind::Dir;
                }
            }
            sorted(out.into_values().collect())
        })
    }

    proptest! {
        #[test]
        fn the_merge_and_the_index_plan_alike(
            base in entry_strategy(),
            fetched in entry_strategy(),
            scope in prop_oneof![Just(None), Just(Some("a")), Just(Some("b/a"))],
        ) {
            let case = Case::new(&base, &fetched);
            let merged = case.merged(scope).expect("in list order");
            prop_assert_eq!(merged, case.indexed(scope));
        }
    }

    proptest! {
        #[test]
        fn find_locates_every_hash_and_only_those(
            mut keys in proptest::collection::vec(any::<u64>(), 0..300),
            extra in proptest::collection::vec(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()], 0..20),
        ) {
            keys.sort_unstable();
            keys.dedup();
            // Rows in another order than by hash, as a list's order is.
            keys.reverse();
            let mut table = Table::build(keys.iter().map(|&k| (k, k ^ 1)).collect()).unwrap();
            for (i, &k) in keys.iter().enumerate().rev() {
                prop_assert_eq!(table.find(k), Some(i));
            }
            for (i, &k) in keys.iter().enumerate() {
                prop_assert_eq!(table.find(k), Some(i));
            }
            for k in extra {
                prop_assert_eq!(table.find(k).is_some(), keys.contains(&k));
            }
        }
    }

    #[test]
    fn find_handles_clustered_hashes() {
        // Hashes are uniform in practice; the search must not depend on it.
        let keys: Vec<u64> = (0..1000).map(|i| u64::MAX - 5000 + i * 3).collect();
        let mut table = Table::build(keys.iter().map(|&k| (k, 0)).collect()).unwrap();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(table.find(k), Some(i));
            assert_eq!(table.find(k + 1), None);
        }
        assert_eq!(table.find(0), None);
        assert!(Table::build(vec![(1, 0), (1, 1)]).is_err());
    }
}
