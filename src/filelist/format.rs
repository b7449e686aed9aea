//! The list format, read and written in this one place (like the request grammar), so that the
//! generator can never write a list the handler would refuse.
//!
//! ```text
//! [Version]
//! 2
//!
//! [Files]
//! <mtime>\t<type>\t<size>\t<path>
//! ...
//!
//! [Checksums SHA1]
//! <hex digest>\t<path>
//!
//! [End]
//! ```
//! This is Fedora's `fullfiletimelist` as its `create-filelist` writes it and quick-fedora-mirror
//! reads it, so lists interoperate both ways:
//! - mtime: integer seconds, the later of the entry's own mtime and ctime (negative before 1970).
//! - type: `f`, `d` or `l`, optionally followed by `*` (inside a dir that is not world-readable)
//!   or `-` (not world-readable itself; this wins over `*`).
//! - size: the entry's own size in bytes (a symlink's is the length of its target).
//! - path: relative to the module top, any bytes but NUL, tab and newline; no empty, `.` or `..`
//!   component, so never absolute and never a leading `./`.
//! - `[Checksums <ALGO>]` sections (SHA1, MD5, SHA256, SHA512; Fedora's generator writes all four)
//!   hold lowercase hex digests; any of them may be empty.
//!
//! The reader is strict: the first line is `[Version]`, then a version of 1 to 3; `[Files]` comes
//! once, before any checksum section; a blank line ends a section, so after one only blank lines
//! or a section header may follow; the last line is `[End]` (its absence means a truncated
//! download), and nothing follows it. Entries may come in any order. Every error names the line.
//! Lines are bounded, so hostile input cannot make the reader buffer without limit.

use std::fmt;
use std::io::{self, BufRead, Write};

use crate::request::escape_bytes;

/// The version this crate writes: Fedora's generator writes 2 although its type suffixes are
/// what version 3 names, so that old readers keep working; the same reasoning applies here.
pub const WRITE_VERSION: u32 = 2;
/// The highest version a reader accepts (quick-fedora-mirror's limit too).
pub const MAX_VERSION: u32 = 3;
/// Longest path accepted, in bytes (Linux's PATH_MAX less its NUL).
pub const MAX_PATH_LEN: usize = 4095;
/// Longest path component accepted, in bytes (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;
/// Longest line accepted: a maximal path, a 128-digit checksum or the numeric fields, and slack.
pub const MAX_LINE_LEN: usize = MAX_PATH_LEN + 256;

/// What an entry is. Anything that is neither a dir nor a symlink is listed as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    pub fn letter(self) -> u8 {
        match self {
            Kind::File => b'f',
            Kind::Dir => b'd',
            Kind::Symlink => b'l',
        }
    }

    fn from_letter(b: u8) -> Option<Kind> {
        match b {
            b'f' => Some(Kind::File),
            b'd' => Some(Kind::Dir),
            b'l' => Some(Kind::Symlink),
            _ => None,
        }
    }
}

/// The type's suffix: who may read the entry upstream. Public mirrors cannot fetch what is not
/// world-readable, which is why quick-fedora-mirror skips marked entries unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// No suffix.
    Public,
    /// `*`: world-readable itself, but inside a dir that is not.
    InRestrictedDir,
    /// `-`: not world-readable itself.
    NotWorldReadable,
}

impl Access {
    fn suffix(self) -> Option<u8> {
        match self {
            Access::Public => None,
            Access::InRestrictedDir => Some(b'*'),
            Access::NotWorldReadable => Some(b'-'),
        }
    }
}

/// One `[Files]` line, borrowing its path (from the reader's line buffer or the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub mtime: i64,
    pub kind: Kind,
    pub access: Access,
    pub size: u64,
    /// Relative path as raw bytes: file names need not be UTF-8.
    pub path: &'a [u8],
}

impl EntryRef<'_> {
    pub fn to_owned(&self) -> Entry {
        Entry {
            mtime: self.mtime,
            kind: self.kind,
            access: self.access,
            size: self.size,
            path: self.path.to_vec(),
        }
    }
}

/// An owned [`EntryRef`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub mtime: i64,
    pub kind: Kind,
    pub access: Access,
    pub size: u64,
    pub path: Vec<u8>,
}

impl Entry {
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            mtime: self.mtime,
            kind: self.kind,
            access: self.access,
            size: self.size,
            path: &self.path,
        }
    }
}

/// The digest algorithms a `[Checksums <ALGO>]` section may name (Fedora's generator's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha1,
    Md5,
    Sha256,
    Sha512,
}

impl Algo {
    pub const ALL: [Algo; 4] = [Algo::Sha1, Algo::Md5, Algo::Sha256, Algo::Sha512];

    /// The name in the section header.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha1 => "SHA1",
            Algo::Md5 => "MD5",
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }

    /// Digest length in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algo::Sha1 => 40,
            Algo::Md5 => 32,
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One checksum line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumRef<'a> {
    pub algo: Algo,
    /// Lowercase hex, [`Algo::hex_len`] digits.
    pub hex: &'a [u8],
    pub path: &'a [u8],
}

/// What the reader yields, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Entry(EntryRef<'a>),
    Checksum(ChecksumRef<'a>),
}

/// An item with its line, as [`Reader::next_record`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub item: Item<'a>,
    /// The line as read, without its newline.
    pub line: &'a [u8],
    /// Its line number, from 1.
    pub number: u64,
}

/// Why a list was refused. Line numbers start at 1.
#[derive(Debug)]
pub enum ListError {
    /// Reading failed: not the list's fault.
    Io(io::Error),
    /// The list is malformed or hostile at this line.
    Format { line: u64, problem: Problem },
}

impl ListError {
    pub fn is_io(&self) -> bool {
        matches!(self, ListError::Io(_))
    }
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Io(e) => write!(f, "read error: {e}"),
            ListError::Format { line, problem } => write!(f, "line {line}: {problem}"),
        }
    }
}

impl std::error::Error for ListError {}

impl From<io::Error> for ListError {
    fn from(e: io::Error) -> Self {
        ListError::Io(e)
    }
}

/// What is wrong with a list. Raw bytes from the list are kept escaped, ready for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The first line is not `[Version]`.
    NoVersion,
    /// The version line is not a number.
    BadVersion(String),
    /// A version this reader does not know (above [`MAX_VERSION`], or 0).
    UnsupportedVersion(u64),
    UnknownSection(String),
    /// A section that may come once came again.
    RepeatedSection(String),
    /// A section out of order (e.g. a checksum section before `[Files]`).
    MisplacedSection(String),
    /// `[End]` came without a `[Files]` section.
    NoFiles,
    /// A non-blank line after a blank line, before the next section header.
    OutsideSection,
    /// A `[Files]` line without exactly 4 tab-separated fields (or a checksum line without 2).
    FieldCount {
        expected: usize,
        found: usize,
    },
    BadMtime(String),
    BadType(String),
    BadSize(String),
    BadDigest(String),
    BadPath {
        path: String,
        why: PathProblem,
    },
    LineTooLong,
    /// Something after `[End]`.
    AfterEnd,
    /// No `[End]` line: the list was cut short (an incomplete download).
    Truncated,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoVersion => write!(f, "the list must start with '[Version]'"),
            Problem::BadVersion(v) => write!(f, "version '{v}' is not a number"),
            Problem::UnsupportedVersion(v) => {
                write!(f, "version {v} is not supported (1 to {MAX_VERSION} are)")
            }
            Problem::UnknownSection(s) => write!(f, "unknown section '{s}'"),
            Problem::RepeatedSection(s) => write!(f, "section '{s}' appears twice"),
            Problem::MisplacedSection(s) => write!(f, "section '{s}' is out of place"),
            Problem::NoFiles => write!(f, "'[End]' before any '[Files]' section"),
            Problem::OutsideSection => {
                write!(f, "a line after a blank line that is not a section header")
            }
            Problem::FieldCount { expected, found } => {
                write!(f, "{found} tab-separated fields, expected {expected}")
            }
            Problem::BadMtime(s) => write!(f, "mtime '{s}' is not an integer"),
            Problem::BadType(s) => write!(f, "type '{s}' is not f, d or l with an optional * or -"),
            Problem::BadSize(s) => write!(f, "size '{s}' is not a non-negative integer"),
            Problem::BadDigest(s) => {
                write!(f, "checksum '{s}' is not lowercase hex of the right length")
            }
            Problem::BadPath { path, why } => write!(f, "path '{path}' {why}"),
            Problem::LineTooLong => write!(f, "line longer than {MAX_LINE_LEN} bytes"),
            Problem::AfterEnd => write!(f, "data after '[End]'"),
            Problem::Truncated => write!(
                f,
                "no '[End]' line: the list is incomplete (truncated download?)"
            ),
        }
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Absolute,
    EmptyComponent,
    DotComponent,
    DotDotComponent,
    Nul,
    /// A tab or newline, which the format cannot carry.
    Separator,
    TooLong,
    NameTooLong,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "is empty",
            PathProblem::Absolute => "is absolute",
            PathProblem::EmptyComponent => "has an empty component",
            PathProblem::DotComponent => "has a '.' component",
            PathProblem::DotDotComponent => "has a '..' component",
            PathProblem::Nul => "holds a NUL byte",
            PathProblem::Separator => "holds a tab or newline",
            PathProblem::TooLong => "is too long",
            PathProblem::NameTooLong => "has a component longer than 255 bytes",
        })
    }
}

/// Checks a relative path as the format requires (see the module docs). Every line of a list
/// goes through here, so the bytes are searched with `memchr` rather than looked at one by one;
/// the first problem in the path wins, as a byte-by-byte scan would find it.
pub fn check_path(path: &[u8]) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path[0] == b'/' {
        return Err(PathProblem::Absolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathProblem::TooLong);
    }
    let bad = memchr::memchr3(0, b'\t', b'\n', path);
    let clean = &path[..bad.unwrap_or(path.len())];
    let mut start = 0;
    for i in memchr::memchr_iter(b'/', clean) {
        check_component(&path[start..i])?;
        start = i + 1;
    }
    match bad {
        Some(i) if path[i] == 0 => Err(PathProblem::Nul),
        Some(_) => Err(PathProblem::Separator),
        None => check_component(&path[start..]),
    }
}

fn check_component(c: &[u8]) -> Result<(), PathProblem> {
    match c {
        b"" => Err(PathProblem::EmptyComponent),
        b"." => Err(PathProblem::DotComponent),
        b".." => Err(PathProblem::DotDotComponent),
        c if c.len() > MAX_NAME_LEN => Err(PathProblem::NameTooLong),
        _ => Ok(()),
    }
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the first line.
    Start,
    /// After `[Version]`: the number comes next.
    VersionNumber,
    /// After the number: a blank line or a header.
    AfterVersion,
    Files,
    Checksums(Algo),
    /// After a blank line: more blank lines or a header.
    Between,
    /// `[End]` was read: only end of input may follow.
    End,
    /// End of input after `[End]`, or an error was returned: nothing more is read.
    Done,
}

/// Bytes the reader buffers: several lines at once, and more than the longest line.
const BUF_LEN: usize = 1 << 18;

/// A streaming, validating reader over any `BufRead`. Memory use is one buffer of
/// [`BUF_LEN`] bytes: lines are parsed where they lie in it, never copied (a 12-million-line
/// list must cost little more than finding its newlines).
pub struct Reader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// The current line is `buf[line_start..line_end]`; unread bytes are `buf[pos..end]`.
    line_start: usize,
    line_end: usize,
    pos: usize,
    end: usize,
    eof: bool,
    line_no: u64,
    state: Section,
    version: Option<u32>,
    seen_files: bool,
    seen_algos: u8,
}

impl<R: BufRead> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            line_start: 0,
            line_end: 0,
            pos: 0,
            end: 0,
            eof: false,
            line_no: 0,
            state: Section::Start,
            version: None,
            seen_files: false,
            seen_algos: 0,
        }
    }

    /// The list's version, once its `[Version]` section has been read.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The number of the last line read.
    pub fn line_number(&self) -> u64 {
        self.line_no
    }

    /// The next entry or checksum; `None` after `[End]` and the end of input. After an error,
    /// every further call returns `None`: a refused list is refused as a whole.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, ListError> {
        Ok(self.next_record()?.map(|r| r.item))
    }

    /// Like [`Reader::next_item`], with the item's line as read (without its newline), so a
    /// caller that keeps an entry unchanged can copy it without formatting it again, and its
    /// line number.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ListError> {
        match self.advance() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                self.state = Section::Done;
                return Err(e);
            }
        }
        // Field by field (not through methods), so that the error path may set `state` while
        // the line stays borrowed for the success path.
        let line: &[u8] = &self.buf[self.line_start..self.line_end];
        let parsed = match self.state {
            Section::Files => parse_entry(line).map(Item::Entry),
            Section::Checksums(algo) => parse_checksum(algo, line).map(Item::Checksum),
            _ => unreachable!("advance yields items only inside a section"),
        };
        match parsed {
            Ok(item) => Ok(Some(Record {
                item,
                line,
                number: self.line_no,
            })),
            Err(problem) => {
                self.state = Section::Done;
                Err(ListError::Format {
                    line: self.line_no.max(1),
                    problem,
                })
            }
        }
    }

    /// The next `[Files]` entry with its line number, checking (and passing over) the checksum
    /// lines after them: what a planner streams. `None` after `[End]` and the end of input.
    pub fn next_entry(&mut self) -> Result<Option<(EntryRef<'_>, u64)>, ListError> {
        if self.next_entry_line()?.is_none() {
            return Ok(None);
        }
        self.current_entry().map(Some)
    }

    /// Like [`Reader::next_entry`], without parsing the line: it is returned as read (without
    /// its newline), and [`Reader::current_entry`] parses it. A planner that finds the line
    /// byte for byte equal to one it has parsed and checked already need not parse it again.
    pub fn next_entry_line(&mut self) -> Result<Option<&[u8]>, ListError> {
        loop {
            match self.advance() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    self.state = Section::Done;
                    return Err(e);
                }
            }
            let Section::Checksums(algo) = self.state else {
                break;
            };
            if let Err(problem) = parse_checksum(algo, &self.buf[self.line_start..self.line_end]) {
                self.state = Section::Done;
                return Err(self.error(problem));
            }
        }
        Ok(Some(&self.buf[self.line_start..self.line_end]))
    }

    /// The line the last [`Reader::next_entry_line`] returned, parsed, with its line number.
    pub fn current_entry(&mut self) -> Result<(EntryRef<'_>, u64), ListError> {
        let line: &[u8] = &self.buf[self.line_start..self.line_end];
        match parse_entry(line) {
            Ok(e) => Ok((e, self.line_no)),
            Err(problem) => {
                self.state = Section::Done;
                Err(ListError::Format {
                    line: self.line_no.max(1),
                    problem,
                })
            }
        }
    }

    /// Reads lines until one that is an item of the current section (true) or the end (false).
    fn advance(&mut self) -> Result<bool, ListError> {
        loop {
            if self.state == Section::Done {
                return Ok(false);
            }
            if !self.read_line()? {
                return match self.state {
                    Section::End => {
                        self.state = Section::Done;
                        Ok(false)
                    }
                    _ => Err(self.error(Problem::Truncated)),
                };
            }
            let line = &self.buf[self.line_start..self.line_end];
            match self.state {
                Section::Start => {
                    if line != b"[Version]" {
                        return Err(self.error(Problem::NoVersion));
                    }
                    self.state = Section::VersionNumber;
                }
                Section::VersionNumber => {
                    let v = parse_version(line).map_err(|p| self.error(p))?;
                    self.version = Some(v);
                    self.state = Section::AfterVersion;
                }
                Section::End => return Err(self.error(Problem::AfterEnd)),
                Section::Done => return Ok(false),
                Section::AfterVersion
                | Section::Files
                | Section::Checksums(_)
                | Section::Between => {
                    if line.is_empty() {
                        self.state = Section::Between;
                    } else if line[0] == b'[' {
                        self.header()?;
                    } else if self.state == Section::Between || self.state == Section::AfterVersion
                    {
                        return Err(self.error(Problem::OutsideSection));
                    } else {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// A section header line: switch sections, checking order and repetition.
    fn header(&mut self) -> Result<(), ListError> {
        let line = &self.buf[self.line_start..self.line_end];
        let shown = || escape_bytes(line);
        if line == b"[Files]" {
            if self.seen_files {
                return Err(self.error(Problem::RepeatedSection(shown())));
            }
            if self.seen_algos != 0 {
                return Err(self.error(Problem::MisplacedSection(shown())));
            }
            self.seen_files = true;
            self.state = Section::Files;
            return Ok(());
        }
        if line == b"[End]" {
            if !self.seen_files {
                return Err(self.error(Problem::NoFiles));
            }
            self.state = Section::End;
            return Ok(());
        }
        if line == b"[Version]" {
            return Err(self.error(Problem::RepeatedSection(shown())));
        }
        if let Some(name) = line
            .strip_prefix(b"[Checksums ")
            .and_then(|r| r.strip_suffix(b"]"))
        {
            if let Some(algo) = Algo::ALL.into_iter().find(|a| a.name().as_bytes() == name) {
                if self.seen_algos & algo.bit() != 0 {
                    return Err(self.error(Problem::RepeatedSection(shown())));
                }
                if !self.seen_files {
                    return Err(self.error(Problem::MisplacedSection(shown())));
                }
                self.seen_algos |= algo.bit();
                self.state = Section::Checksums(algo);
                return Ok(());
            }
        }
        Err(self.error(Problem::UnknownSection(shown())))
    }

    /// Finds the next line in the buffer (refilling it as needed) without its newline; false
    /// at the end of input. A line over [`MAX_LINE_LEN`] is an error, read no further.
    fn read_line(&mut self) -> Result<bool, ListError> {
        loop {
            let unread = &self.buf[self.pos..self.end];
            let found = memchr::memchr(b'\n', unread);
            let len = found.unwrap_or(unread.len());
            if len > MAX_LINE_LEN {
                self.line_no += 1;
                return Err(self.error(Problem::LineTooLong));
            }
            if found.is_some() || (self.eof && len > 0) {
                self.line_start = self.pos;
                self.line_end = self.pos + len;
                self.pos = (self.pos + len + 1).min(self.end);
                self.line_no += 1;
                return Ok(true);
            }
            if self.eof {
                return Ok(false);
            }
            // No whole line left: keep the partial one, refill behind it.
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
                break;
            }
        }
    }

    fn error(&self, problem: Problem) -> ListError {
        ListError::Format {
            line: self.line_no.max(1),
            problem,
        }
    }
}

fn parse_version(line: &[u8]) -> Result<u32, Problem> {
    let bad = || Problem::BadVersion(escape_bytes(line));
    let v = parse_u64(line).ok_or_else(bad)?;
    if v == 0 || v > MAX_VERSION as u64 {
        return Err(Problem::UnsupportedVersion(v));
    }
    Ok(v as u32)
}

/// Decimal digits only (no sign, no spaces), at most 20 of them, within u64.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// An optional `-` and decimal digits, within i64.
fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.strip_prefix(b"-") {
        Some(digits) => {
            let v = parse_u64(digits)?;
            if v <= i64::MAX as u64 + 1 {
                Some((v as i64).wrapping_neg())
            } else {
                None
            }
        }
        None => i64::try_from(parse_u64(s)?).ok(),
    }
}

fn count_fields(line: &[u8]) -> usize {
    line.iter().filter(|&&b| b == b'\t').count() + 1
}

fn parse_entry(line: &[u8]) -> Result<EntryRef<'_>, Problem> {
    let mut tabs = memchr::memchr_iter(b'\t', line);
    let (Some(t1), Some(t2), Some(t3)) = (tabs.next(), tabs.next(), tabs.next()) else {
        return Err(Problem::FieldCount {
            expected: 4,
            found: count_fields(line),
        });
    };
    let (mtime, kind, size, path) = (
        &line[..t1],
        &line[t1 + 1..t2],
        &line[t2 + 1..t3],
        &line[t3 + 1..],
    );
    if tabs.next().is_some() {
        return Err(Problem::FieldCount {
            expected: 4,
            found: count_fields(line),
        });
    }
    let mtime = parse_i64(mtime).ok_or_else(|| Problem::BadMtime(escape_bytes(mtime)))?;
    let bad_type = || Problem::BadType(escape_bytes(kind));
    let (k, access) = match kind {
        [k] => (Kind::from_letter(*k).ok_or_else(bad_type)?, Access::Public),
        [k, b'*'] => (
            Kind::from_letter(*k).ok_or_else(bad_type)?,
            Access::InRestrictedDir,
        ),
        [k, b'-'] => (
            Kind::from_letter(*k).ok_or_else(bad_type)?,
            Access::NotWorldReadable,
        ),
        _ => return Err(bad_type()),
    };
    let size = parse_u64(size).ok_or_else(|| Problem::BadSize(escape_bytes(size)))?;
    check_path(path).map_err(|why| Problem::BadPath {
        path: escape_bytes(path),
        why,
    })?;
    Ok(EntryRef {
        mtime,
        kind: k,
        access,
        size,
        path,
    })
}

fn parse_checksum(algo: Algo, line: &[u8]) -> Result<ChecksumRef<'_>, Problem> {
    let mut fields = line.splitn(2, |&b| b == b'\t');
    let (Some(hex), Some(path)) = (fields.next(), fields.next()) else {
        return Err(Problem::FieldCount {
            expected: 2,
            found: 1,
        });
    };
    if path.contains(&b'\t') {
        return Err(Problem::FieldCount {
            expected: 2,
            found: count_fields(line),
        });
    }
    if hex.len() != algo.hex_len() || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Problem::BadDigest(escape_bytes(hex)));
    }
    check_path(path).map_err(|why| Problem::BadPath {
        path: escape_bytes(path),
        why,
    })?;
    Ok(ChecksumRef { algo, hex, path })
}

/// Where the writer is, so that it can only produce what the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    Files,
    Checksums(Algo),
}

/// Writes a list in Fedora's layout. Everything it accepts parses back to the same items;
/// what the format cannot carry (a path with a tab, say) is refused with `InvalidInput`.
pub struct Writer<W: Write> {
    out: W,
    state: WState,
    algos: u8,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Writes the header through `[Files]`.
    pub fn new(mut out: W) -> io::Result<Self> {
        write!(out, "[Version]\n{WRITE_VERSION}\n\n[Files]\n")?;
        Ok(Writer {
            out,
            state: WState::Files,
            algos: 0,
            buf: Vec::with_capacity(256),
        })
    }

    pub fn entry(&mut self, e: &EntryRef<'_>) -> io::Result<()> {
        if self.state != WState::Files {
            return Err(invalid("entries must come before checksums"));
        }
        check_path(e.path).map_err(|why| invalid(&format!("path {why}")))?;
        self.buf.clear();
        push_i64(&mut self.buf, e.mtime);
        self.buf.push(b'\t');
        self.buf.push(e.kind.letter());
        if let Some(s) = e.access.suffix() {
            self.buf.push(s);
        }
        self.buf.push(b'\t');
        push_u64(&mut self.buf, e.size);
        self.buf.push(b'\t');
        self.buf.extend_from_slice(e.path);
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)
    }

    /// Copies a `[Files]` line exactly as a [`Reader`] returned it (which validated it).
    pub(crate) fn entry_line(&mut self, line: &[u8]) -> io::Result<()> {
        debug_assert!(parse_entry(line).is_ok());
        if self.state != WState::Files {
            return Err(invalid("entries must come before checksums"));
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    /// Starts a `[Checksums <ALGO>]` section (each at most once).
    pub fn checksum_section(&mut self, algo: Algo) -> io::Result<()> {
        if self.algos & algo.bit() != 0 {
            return Err(invalid("checksum section written twice"));
        }
        self.algos |= algo.bit();
        self.state = WState::Checksums(algo);
        write!(self.out, "\n[Checksums {}]\n", algo.name())
    }

    /// A line of the current checksum section; `hex` is the lowercase hex digest.
    pub fn checksum(&mut self, hex: &[u8], path: &[u8]) -> io::Result<()> {
        let WState::Checksums(algo) = self.state else {
            return Err(invalid("checksum outside a checksum section"));
        };
        if hex.len() != algo.hex_len()
            || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid("checksum is not lowercase hex of the right length"));
        }
        check_path(path).map_err(|why| invalid(&format!("path {why}")))?;
        self.out.write_all(hex)?;
        self.out.write_all(b"\t")?;
        self.out.write_all(path)?;
        self.out.write_all(b"\n")
    }

    /// Writes `[End]` and flushes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"\n[End]\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// An owned checksum line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algo: Algo,
    pub hex: Vec<u8>,
    pub path: Vec<u8>,
}

/// A whole list in memory, for tests and small lists; large ones should stream with [`Reader`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List {
    pub entries: Vec<Entry>,
    pub checksums: Vec<Checksum>,
}

/// Reads a whole list (see [`List`]).
pub fn read_all<R: BufRead>(r: R) -> Result<List, ListError> {
    let mut reader = Reader::new(r);
    let mut list = List::default();
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Entry(e) => list.entries.push(e.to_owned()),
            Item::Checksum(c) => list.checksums.push(Checksum {
                algo: c.algo,
                hex: c.hex.to_vec(),
                path: c.path.to_vec(),
            }),
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<(Vec<Entry>, Vec<Checksum>), ListError> {
        read_all(text).map(|l| (l.entries, l.checksums))
    }

    fn problem(text: &[u8]) -> (u64, Problem) {
        match parse(text) {
            Ok(_) => panic!("accepted: {:.200}", String::from_utf8_lossy(text)),
            Err(ListError::Format { line, problem }) => (line, problem),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    /// A well-formed list around the given `[Files]` lines.
    fn list(files: &str) -> Vec<u8> {
        format!("[Version]\n2\n\n[Files]\n{files}\n[Checksums SHA1]\n\n[End]\n").into_bytes()
    }

    const FEDORA_SAMPLE: &str = "[Version]\n2\n\n[Files]\n\
        1767700953\tf\t282\tlinux/extras/README\n\
        1366880149\td\t4096\tlinux/extras\n\
        1182178200\td-\t4096\tlinux/core\n\
        1182178201\tf*\t12\tlinux/core/x\n\
        1182178202\tl\t7\tlinux/latest\n\
        \n[Checksums SHA1]\n\
        da39a3ee5e6b4b0d3255bfef95601890afd80709\tlinux/extras/README\n\
        \n[Checksums MD5]\n\
        \n[Checksums SHA256]\n\
        \n[Checksums SHA512]\n\
        \n[End]\n";

    #[test]
    fn reads_what_fedora_writes() {
        let (entries, sums) = parse(FEDORA_SAMPLE.as_bytes()).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[0],
            Entry {
                mtime: 1767700953,
                kind: Kind::File,
                access: Access::Public,
                size: 282,
                path: b"linux/extras/README".to_vec()
            }
        );
        assert_eq!(entries[2].access, Access::NotWorldReadable);
        assert_eq!(entries[2].kind, Kind::Dir);
        assert_eq!(entries[3].access, Access::InRestrictedDir);
        assert_eq!(entries[4].kind, Kind::Symlink);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[0].algo, Algo::Sha1);
        assert_eq!(sums[0].path, b"linux/extras/README");
    }

    #[test]
    fn accepts_versions_one_to_three_and_no_checksums() {
        for v in 1..=3 {
            let text = format!("[Version]\n{v}\n\n[Files]\n1\tf\t0\ta\n\n[End]\n");
            let mut r = Reader::new(text.as_bytes());
            while r.next_item().unwrap().is_some() {}
            assert_eq!(r.version(), Some(v));
        }
        // [End] without a final newline is complete; an empty [Files] is a list of nothing.
        parse(b"[Version]\n2\n\n[Files]\n\n[End]").unwrap();
        // Several blank lines between sections.
        parse(b"[Version]\n2\n\n\n[Files]\n1\tf\t0\ta\n\n\n[End]\n").unwrap();
        // Negative mtimes (before 1970) exist.
        let (e, _) = parse(&list("-5\tf\t0\told")).unwrap();
        assert_eq!(e[0].mtime, -5);
    }

    #[test]
    fn refuses_bad_sections_and_versions() {
        assert_eq!(problem(b""), (1, Problem::Truncated));
        assert_eq!(problem(b"[Files]\n"), (1, Problem::NoVersion));
        assert_eq!(problem(b"\n[Version]\n2\n"), (1, Problem::NoVersion));
        assert_eq!(
            problem(b"[Version]\n4\n\n[Files]\n\n[End]\n"),
            (2, Problem::UnsupportedVersion(4))
        );
        assert_eq!(
            problem(b"[Version]\n0\n\n[Files]\n\n[End]\n"),
            (2, Problem::UnsupportedVersion(0))
        );
        assert_eq!(
            problem(b"[Version]\ntwo\n\n[Files]\n\n[End]\n"),
            (2, Problem::BadVersion("two".into()))
        );
        assert_eq!(
            problem(b"[Version]\n99999999999999999999999\n"),
            (2, Problem::BadVersion("99999999999999999999999".into()))
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Stuff]\n"),
            (4, Problem::UnknownSection("[Stuff]".into()))
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Checksums CRC]\n"),
            (4, Problem::UnknownSection("[Checksums CRC]".into()))
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Files]\n\n[Files]\n"),
            (6, Problem::RepeatedSection("[Files]".into()))
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Checksums SHA1]\n\n[Files]\n"),
            (4, Problem::MisplacedSection("[Checksums SHA1]".into()))
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Files]\n\n[Checksums MD5]\n\n[Checksums MD5]\n"),
            (8, Problem::RepeatedSection("[Checksums MD5]".into()))
        );
        assert_eq!(problem(b"[Version]\n2\n\n[End]\n"), (4, Problem::NoFiles));
        assert_eq!(
            problem(b"[Version]\n2\n\n[Files]\n1\tf\t0\ta\n\n1\tf\t0\tb\n\n[End]\n"),
            (7, Problem::OutsideSection)
        );
        assert_eq!(
            problem(b"[Version]\n2\n1\tf\t0\ta\n"),
            (3, Problem::OutsideSection)
        );
    }

    #[test]
    fn a_missing_end_is_a_truncated_list() {
        let full = list("1\tf\t0\ta\n2\tf\t0\tb");
        let end = full.len() - "[End]\n".len();
        for cut in [end, end + 3, 20, full.len() - 20] {
            let (_, p) = problem(&full[..cut]);
            assert!(
                matches!(
                    p,
                    Problem::Truncated | Problem::UnknownSection(_) | Problem::FieldCount { .. }
                ),
                "cut at {cut}: {p:?}"
            );
        }
        assert_eq!(problem(&full[..end]).1, Problem::Truncated);
        assert_eq!(
            problem(b"[Version]\n2\n\n[Files]\n\n[End]\nmore\n"),
            (7, Problem::AfterEnd)
        );
        assert_eq!(
            problem(b"[Version]\n2\n\n[Files]\n\n[End]\n\n"),
            (7, Problem::AfterEnd)
        );
    }

    #[test]
    fn refuses_bad_fields() {
        let cases: Vec<(&str, Problem)> = vec![
            (
                "1\tf\t0",
                Problem::FieldCount {
                    expected: 4,
                    found: 3,
                },
            ),
            (
                "1\tf\t0\ta\tb",
                Problem::FieldCount {
                    expected: 4,
                    found: 5,
                },
            ),
            (
                "1 f 0 a",
                Problem::FieldCount {
                    expected: 4,
                    found: 1,
                },
            ),
            ("x\tf\t0\ta", Problem::BadMtime("x".into())),
            ("\tf\t0\ta", Problem::BadMtime("".into())),
            ("+1\tf\t0\ta", Problem::BadMtime("+1".into())),
            (" 1\tf\t0\ta", Problem::BadMtime(" 1".into())),
            (
                "99999999999999999999\tf\t0\ta",
                Problem::BadMtime("99999999999999999999".into()),
            ),
            ("1\tx\t0\ta", Problem::BadType("x".into())),
            ("1\tf+\t0\ta", Problem::BadType("f+".into())),
            ("1\tf*-\t0\ta", Problem::BadType("f*-".into())),
            ("1\t\t0\ta", Problem::BadType("".into())),
            ("1\tf\t-1\ta", Problem::BadSize("-1".into())),
            ("1\tf\t1.5\ta", Problem::BadSize("1.5".into())),
            (
                "1\tf\t99999999999999999999\ta",
                Problem::BadSize("99999999999999999999".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(problem(&list(line)), (5, want), "{line:?}");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        let cases: Vec<(&[u8], PathProblem)> = vec![
            (b"/etc/passwd", PathProblem::Absolute),
            (b"", PathProblem::Empty),
            (b"..", PathProblem::DotDotComponent),
            (b"a/../../b", PathProblem::DotDotComponent),
            (b"a/..", PathProblem::DotDotComponent),
            (b".", PathProblem::DotComponent),
            (b"./a", PathProblem::DotComponent),
            (b"a/./b", PathProblem::DotComponent),
            (b"a//b", PathProblem::EmptyComponent),
            (b"a/", PathProblem::EmptyComponent),
            (b"a\0b", PathProblem::Nul),
        ];
        for (path, why) in cases {
            let mut text = list("");
            let at = text.windows(8).position(|w| w == b"[Files]\n").unwrap() + 8;
            let mut line = b"1\tf\t0\t".to_vec();
            line.extend_from_slice(path);
            line.push(b'\n');
            text.splice(at..at, line);
            let (n, p) = problem(&text);
            assert_eq!(n, 5);
            assert_eq!(
                p,
                Problem::BadPath {
                    path: escape_bytes(path),
                    why
                },
                "{path:?}"
            );
        }
        let long = "a/".repeat(MAX_PATH_LEN / 2 + 1) + "b";
        assert!(matches!(
            problem(&list(&format!("1\tf\t0\t{long}"))).1,
            Problem::BadPath {
                why: PathProblem::TooLong,
                ..
            }
        ));
        let name = "n".repeat(256);
        assert!(matches!(
            problem(&list(&format!("1\tf\t0\t{name}"))).1,
            Problem::BadPath {
                why: PathProblem::NameTooLong,
                ..
            }
        ));
        let huge = vec![b'a'; MAX_LINE_LEN * 3];
        let mut text = b"[Version]\n2\n\n[Files]\n".to_vec();
        text.extend_from_slice(&huge);
        assert_eq!(problem(&text), (5, Problem::LineTooLong));
    }

    #[test]
    fn non_utf8_names_are_fine() {
        let mut text = b"[Version]\n2\n\n[Files]\n1\tf\t0\tcaf\xe9/\xff\xfe\n\n[End]\n".to_vec();
        let (e, _) = parse(&text).unwrap();
        assert_eq!(e[0].path, b"caf\xe9/\xff\xfe");
        text.truncate(0);
    }

    #[test]
    fn refuses_bad_checksums() {
        let text =
            |line: &str| format!("[Version]\n2\n\n[Files]\n\n[Checksums SHA1]\n{line}\n\n[End]\n");
        let sha = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        parse(text(&format!("{sha}\ta/repomd.xml")).as_bytes()).unwrap();
        for bad in [
            format!("{}\ta", sha.to_uppercase()),
            format!("{}\ta", &sha[1..]),
            "xyz\ta".into(),
        ] {
            assert!(
                matches!(problem(text(&bad).as_bytes()).1, Problem::BadDigest(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            problem(text(sha).as_bytes()).1,
            Problem::FieldCount { expected: 2, .. }
        ));
        assert!(matches!(
            problem(text(&format!("{sha}\t../x")).as_bytes()).1,
            Problem::BadPath { .. }
        ));
    }

    #[test]
    fn errors_stop_the_reader_and_are_one_line() {
        let text = list("1\tf\t0\t/abs\n1\tf\t0\tok");
        let mut r = Reader::new(&text[..]);
        let e = r.next_item().unwrap_err();
        assert!(!e.to_string().contains('\n'));
        assert_eq!(e.to_string(), "line 5: path '/abs' is absolute");
        assert!(r.next_item().unwrap().is_none());
        let e = problem(b"[Version]\n2\n\n[Files]\n1\tf\t0\ta\nb\n\x1b[31m\n");
        assert!(!format!("{}", e.1).contains('\x1b'));
    }

    #[test]
    fn writer_produces_fedoras_layout() {
        let mut w = Writer::new(Vec::new()).unwrap();
        let e = Entry {
            mtime: 1700000000,
            kind: Kind::Dir,
            access: Access::NotWorldReadable,
            size: 4096,
            path: b"a".to_vec(),
        };
        w.entry(&e.as_ref()).unwrap();
        w.entry(&EntryRef {
            mtime: -3,
            kind: Kind::File,
            access: Access::InRestrictedDir,
            size: 0,
            path: b"a/x",
        })
        .unwrap();
        w.checksum_section(Algo::Sha1).unwrap();
        w.checksum(b"da39a3ee5e6b4b0d3255bfef95601890afd80709", b"a/x")
            .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[Version]\n2\n\n[Files]\n1700000000\td-\t4096\ta\n-3\tf*\t0\ta/x\n\n\
             [Checksums SHA1]\nda39a3ee5e6b4b0d3255bfef95601890afd80709\ta/x\n\n[End]\n"
        );
    }

    #[test]
    fn writer_refuses_what_the_reader_would() {
        let mut w = Writer::new(Vec::new()).unwrap();
        for path in [&b"a\tb"[..], b"a\nb", b"/a", b"a/../b", b""] {
            let e = EntryRef {
                mtime: 0,
                kind: Kind::File,
                access: Access::Public,
                size: 0,
                path,
            };
            assert_eq!(w.entry(&e).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        assert!(w.checksum(b"00", b"a").is_err());
        w.checksum_section(Algo::Md5).unwrap();
        assert!(w.checksum_section(Algo::Md5).is_err());
        assert!(w.checksum(b"00", b"a").is_err());
        let e = EntryRef {
            mtime: 0,
            kind: Kind::File,
            access: Access::Public,
            size: 0,
            path: b"a",
        };
        assert!(w.entry(&e).is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = Vec<u8>> {
            // Any bytes a file name may hold except the separators the format cannot carry.
            proptest::collection::vec(any::<u8>(), 1..12).prop_filter_map("not a name", |mut v| {
                v.retain(|&b| !matches!(b, 0 | b'/' | b'\t' | b'\n'));
                (!v.is_empty() && v != b"." && v != b"..").then_some(v)
            })
        }

        fn entry() -> impl Strategy<Value = Entry> {
            (
                any::<i64>(),
                prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Symlink)],
                prop_oneof![
                    Just(Access::Public),
                    Just(Access::InRestrictedDir),
                    Just(Access::NotWorldReadable)
                ],
                any::<u64>(),
                proptest::collection::vec(name(), 1..5),
            )
                .prop_map(|(mtime, kind, access, size, parts)| Entry {
                    mtime,
                    kind,
                    access,
                    size,
                    path: parts.join(&b'/'),
                })
        }

        proptest! {
            #[test]
            fn written_lists_read_back_the_same(
                entries in proptest::collection::vec(entry(), 0..40),
                sums in proptest::collection::vec((proptest::collection::vec(0u8..16, 40), name()), 0..5),
            ) {
                let mut w = Writer::new(Vec::new()).unwrap();
                for e in &entries {
                    w.entry(&e.as_ref()).unwrap();
                }
                w.checksum_section(Algo::Sha1).unwrap();
                let hexed: Vec<(Vec<u8>, Vec<u8>)> = sums
                    .iter()
                    .map(|(d, p)| (d.iter().map(|n| b"0123456789abcdef"[*n as usize]).collect(), p.clone()))
                    .collect();
                for (hex, path) in &hexed {
                    w.checksum(hex, path).unwrap();
                }
                let bytes = w.finish().unwrap();
                let back = read_all(&bytes[..]).unwrap();
                prop_assert_eq!(back.entries, entries);
                let want: Vec<Checksum> = hexed
                    .into_iter()
                    .map(|(hex, path)| Checksum { algo: Algo::Sha1, hex, path })
                    .collect();
                prop_assert_eq!(back.checksums, want);
            }

            #[test]
            fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = read_all(&raw[..]);
            }

            #[test]
            fn near_miss_lists_never_panic(body in "[0-9a-z\\-*./\t\n\\[\\] ]{0,200}") {
                let text = format!("[Version]\n2\n\n[Files]\n{body}");
                let _ = read_all(text.as_bytes());
                let text = format!("[Version]\n2\n\n[Files]\n{body}\n\n[End]\n");
                if let Ok(list) = read_all(text.as_bytes()) {
                    for e in list.entries {
                        prop_assert!(check_path(&e.path).is_ok());
                    }
                }
            }
        }
    }
}
