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

/// The order lists are written in: component by component, bytewise within a component, which
/// is what a depth-first walk with sorted directories yields. A directory's subtree follows it
/// directly (`a`, `a/b`, `a.b`; bytewise order would put `a.b` between `a` and `a/b`), so a
/// subtree is one contiguous run that can be replaced while streaming.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        // Names never hold '/' or NUL, so mapping '/' below every other byte orders components.
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
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

/// Lists are written by temp file and rename, the crate's one atomic writer.
pub(crate) use crate::atomic::AtomicFile;

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
    fn within_respects_component_boundaries() {
        assert!(is_within(b"a/b", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(!is_within(b"a", b"a/b"));
        assert_eq!(parent(b"a/b/c"), Some(&b"a/b"[..]));
        assert_eq!(parent(b"a"), None);
    }
}
