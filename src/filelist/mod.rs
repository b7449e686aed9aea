//! File lists: one file per module that lists every entry with its time and size, so that a
//! mirror fetches that one small file and, when it changed, transfers only what changed
//! instead of making the upstream walk the whole tree.
//!
//! - [`format`]: the list format (Fedora's `fullfiletimelist`), its strict streaming reader
//!   and its writer: the one place both sides use.
//! - [`generate`]: `mirrorpush filelist`, which writes a tree's list (master only).
//! - [`plan`]: the handler's side: what to transfer and delete between two lists, and the next
//!   baseline after a good run.

pub mod format;
#[cfg(feature = "master")]
pub mod generate;
pub mod plan;

use std::cmp::Ordering;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The order lists are written in: component by component, bytewise within a component, which
/// is what a depth-first walk with sorted directories yields. A directory's subtree follows it
/// directly (`a`, `a/b`, `a.b`; bytewise order would put `a.b` between `a` and `a/b`), so a
/// subtree is one contiguous run that can be replaced while streaming.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    match mismatch(a, b) {
        // Names never hold '/' or NUL, so mapping '/' below every other byte orders components.
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// The first index where `a` and `b` differ (within the shorter), eight bytes at a time: paths
/// in a list share long prefixes, and a planner compares millions of them.
fn mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            // Little-endian: the lowest differing byte is the first.
            return Some(i + ((x ^ y).trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..n).find(|&j| a[j] != b[j])
}

fn rank(b: u8) -> u16 {
    if b == b'/' {
        0
    } else {
        u16::from(b) + 1
    }
}

/// True when `path` is `dir` or lies below it (`a/b` is within `a`, `ab` is not).
pub fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.len() >= dir.len()
        && path.starts_with(dir)
        && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// The parent of a relative path, `None` at the top.
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

/// A file written under a temporary name next to its destination and renamed over it only on
/// [`AtomicFile::commit`], so readers see the old file or the new one, never half of one.
/// Dropped uncommitted, it removes the temporary file.
pub(crate) struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// The temporary name: hidden, per process, and recognisable (see [`AtomicFile::is_temp_name`]).
    pub(crate) fn temp_path(path: &Path) -> PathBuf {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
    }

    /// Whether `name` is a temporary name of a file called `final_name`.
    #[cfg(feature = "master")]
    pub(crate) fn is_temp_name(name: &[u8], final_name: &[u8]) -> bool {
        name.strip_prefix(b".")
            .and_then(|r| r.strip_prefix(final_name))
            .and_then(|r| r.strip_prefix(b"."))
            .and_then(|r| r.strip_suffix(b".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit))
    }

    pub(crate) fn create(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let tmp = Self::temp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    #[cfg(feature = "master")]
    pub(crate) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes, optionally fsyncs, and renames over the destination.
    pub(crate) fn commit(mut self, sync: bool) -> io::Result<()> {
        let out = self.out.take().expect("not committed twice");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        if sync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&self.tmp, &self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("open").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().expect("open").write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("open").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_are_contiguous_in_list_order() {
        let mut v: Vec<&[u8]> = vec![b"a.b", b"a/b", b"a", b"a/b/c", b"ab", b"a-", b"a/a"];
        v.sort_by(|x, y| cmp_paths(x, y));
        assert_eq!(
            v,
            vec![&b"a"[..], b"a/a", b"a/b", b"a/b/c", b"a-", b"a.b", b"ab"]
        );
    }

    #[test]
    fn the_word_wise_mismatch_agrees_with_a_byte_wise_one() {
        let paths: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"abcdefgh",
            b"abcdefghi",
            b"abcdefgh/",
            b"abcdefgh/i",
            b"abcdefgh.i",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnopr",
            b"abcdefghijklmnop",
            b"pub/fedora/linux/releases/40/Everything/x86_64/os/Packages/a/a.rpm",
            b"pub/fedora/linux/releases/40/Everything/x86_64/os/Packages/a/b.rpm",
            b"pub/fedora/linux/releases/40/Everything/x86_64/os/Packages/a",
        ];
        for a in &paths {
            for b in &paths {
                let want = a.iter().zip(b.iter()).position(|(x, y)| x != y);
                assert_eq!(mismatch(a, b), want, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn within_respects_component_boundaries() {
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(!is_within(b"a", b"a/b"));
        assert_eq!(parent(b"a/b/c"), Some(&b"a/b"[..]));
        assert_eq!(parent(b"a"), None);
    }

    #[test]
    #[cfg(feature = "master")]
    fn temp_names_are_recognised() {
        let t = AtomicFile::temp_path(Path::new("/x/list"));
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(AtomicFile::is_temp_name(name.as_bytes(), b"list"));
        assert!(!AtomicFile::is_temp_name(b".list..tmp", b"list"));
        assert!(!AtomicFile::is_temp_name(b"list", b"list"));
    }
}
