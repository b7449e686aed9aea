//! rsync's include/exclude pattern rules, for sorting a file-list run's entries into the two
//! passes of a two-stage sync. A plain run hands `last` to rsync as `--exclude`; a file-list run
//! cannot (rsync's receiver refuses a `--files-from` name its own excludes match), so the
//! handler splits the list itself, with rsync's rules:
//!
//! - `*` matches within one path component, `**` across components, `?` one character, and
//!   `[...]` a class, as in rsync;
//! - a pattern that starts with `/` is anchored at the transfer root, otherwise it matches the
//!   end of a path (at a component boundary);
//! - a trailing `/` means a directory: it matches any ancestor of an entry (which is a
//!   directory), and the entry itself (possibly a file of that name: landing a file late is
//!   harmless, landing an index early is what two-stage sync prevents);
//! - what lies below a matching directory matches too (rsync does not descend into it): with
//!   Debian's set, `Packages*` also matches the `Packages.diff/` directory, so its patch files
//!   land in the second pass, as they do in a plain run.

/// Whether the entry at `path` (relative to the transfer root) falls under `pattern`.
pub fn matches(pattern: &str, path: &[u8]) -> bool {
    let anchored = pattern.starts_with('/');
    let core = pattern
        .trim_start_matches('/')
        .trim_end_matches('/')
        .as_bytes();
    if core.is_empty() {
        return false;
    }
    // Every prefix of the path that ends at a component boundary: the ancestors, then itself.
    let ends = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .chain(std::iter::once(path.len()));
    // A directory pattern may match the entry itself too (see the module docs), so every
    // pattern applies alike to every prefix.
    ends.into_iter()
        .any(|end| matches_end(core, &path[..end], anchored))
}

/// `core` against the whole of `path` (anchored) or against a tail of it that starts at a
/// component boundary.
fn matches_end(core: &[u8], path: &[u8], anchored: bool) -> bool {
    if anchored {
        return glob(core, path);
    }
    let starts = std::iter::once(0).chain(
        path.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i + 1),
    );
    starts.into_iter().any(|s| glob(core, &path[s..]))
}

/// rsync's wildcard match of a whole string.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            for i in 0..=s.len() {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if s.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob(&p[1..], &s[1..]),
        Some(b'[') => match (class(&p[1..], s.first().copied()), s.first()) {
            (Some((true, used)), Some(_)) => glob(&p[1 + used..], &s[1..]),
            (Some((false, _)), _) | (_, None) => false,
            // An unclosed `[` is a literal.
            (None, Some(&c)) => c == b'[' && glob(&p[1..], &s[1..]),
        },
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// A `[...]` class after its `[`: whether `c` is in it, and how many pattern bytes it used
/// (through the `]`); `None` when the class is not closed.
fn class(p: &[u8], c: Option<u8>) -> Option<(bool, usize)> {
    let negate = matches!(p.first(), Some(b'!' | b'^'));
    let mut i = usize::from(negate);
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            let hit = c.is_some_and(|c| c != b'/') && (hit != negate);
            return Some((hit, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if c.is_some_and(|c| p[i] <= c && c <= p[i + 2]) {
                hit = true;
            }
            i += 3;
        } else {
            if c == Some(p[i]) {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &[&str] = &[
        "Packages*",
        "Sources*",
        "Release*",
        "InRelease",
        "i18n/",
        "dep11/",
        "Contents*",
        "*.diff/Index",
    ];

    fn any(patterns: &[&str], path: &str) -> bool {
        patterns.iter().any(|p| matches(p, path.as_bytes()))
    }

    #[test]
    fn debians_indices_land_last_and_its_packages_do_not() {
        for index in [
            "dists/trixie/main/binary-amd64/Packages.xz",
            "dists/trixie/main/binary-amd64/Packages",
            "dists/trixie/main/source/Sources.gz",
            "dists/trixie/Release",
            "dists/trixie/Release.gpg",
            "dists/trixie/InRelease",
            "dists/trixie/main/i18n/Translation-en.bz2",
            "dists/trixie/main/i18n",
            "dists/trixie/main/dep11/Components-amd64.yml.gz",
            "dists/trixie/main/Contents-amd64.gz",
            "dists/trixie/main/binary-amd64/Packages.diff/Index",
        ] {
            assert!(any(DEBIAN, index), "{index}");
        }
        for package in [
            "pool/main/b/bash/bash_5.2-1_amd64.deb",
            "dists/trixie/ChangeLog",
            "project/trace/master",
            "pool/main/r/release-notes/release-notes_1.0.tar.gz",
        ] {
            assert!(!any(DEBIAN, package), "{package}");
        }
    }

    #[test]
    fn fedoras_repodata_lands_last() {
        assert!(matches(
            "repodata/",
            b"updates/41/x86_64/repodata/repomd.xml"
        ));
        assert!(matches("repodata/", b"updates/41/x86_64/repodata"));
        assert!(!matches(
            "repodata/",
            b"updates/41/x86_64/Packages/r/repodata-1.rpm"
        ));
        assert!(!matches("repodata/", b"updates/41/x86_64/myrepodata/x"));
    }

    #[test]
    fn rsyncs_rules_for_anchors_slashes_and_wildcards() {
        assert!(matches("/dists/", b"dists/a/b"));
        assert!(!matches("/dists/", b"debian/dists/a"));
        assert!(matches("a/b", b"x/a/b"));
        assert!(!matches("a/b", b"x/za/b"));
        assert!(matches("a/**/z", b"a/b/c/z"));
        assert!(!matches("a/*/z", b"a/b/c/z"));
        assert!(matches("a/*/z", b"a/b/z"));
        assert!(matches("file?.[ch]", b"src/file1.c"));
        assert!(!matches("file?.[ch]", b"src/file1.o"));
        assert!(matches("[!a]x", b"bx"));
        assert!(!matches("[!a]x", b"ax"));
        assert!(!matches("", b"x"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_patterns_and_paths_never_panic(p in "[a-z*?\\[\\]!/\\\\-]{0,12}", s in "[a-z/]{0,20}") {
            let _ = matches(&p, s.as_bytes());
        }
    }
}
