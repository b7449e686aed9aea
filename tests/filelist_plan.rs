//! The handler's planner: what a changed list transfers and deletes, dir scope, the deletion
//! cap, every class of hostile list (refused, nothing written), and the next baseline.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use mirrorpush::filelist::cmp_paths;
use mirrorpush::filelist::format::{read_all, Access, Algo, Entry, Kind, Writer};
use mirrorpush::filelist::plan::{
    plan, validate, write_baseline, ErrorClass, Plan, PlanError, PlanRequest,
};
use mirrorpush::request::RelDir;

struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        Dir { _tmp: tmp, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn plan(&self, scope: Option<&str>, max_delete: u64) -> Result<Plan, PlanError> {
        self.plan_with(scope, max_delete, false)
    }

    fn plan_with(
        &self,
        scope: Option<&str>,
        max_delete: u64,
        skip_restricted: bool,
    ) -> Result<Plan, PlanError> {
        let scope = scope.map(|s| RelDir::parse(s).unwrap());
        plan(&PlanRequest {
            baseline: &self.path("baseline"),
            fetched: &self.path("fetched"),
            scope: scope.as_ref(),
            max_delete,
            skip_restricted,
            transfer_out: &self.path("transfer"),
            delete_out: &self.path("delete"),
            kinds_out: None,
        })
    }

    /// The NUL-separated paths of an output file.
    fn out(&self, name: &str) -> Vec<String> {
        let bytes = fs::read(self.path(name)).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\0"));
        bytes
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    fn outputs_absent(&self) -> bool {
        let names: Vec<String> = fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        !names
            .iter()
            .any(|n| n.starts_with("transfer") || n.starts_with("delete") || n.contains(".tmp"))
    }
}

fn e(path: &str, kind: char, size: u64, mtime: i64) -> Entry {
    let (kind, access) = match kind {
        'f' => (Kind::File, Access::Public),
        'd' => (Kind::Dir, Access::Public),
        'l' => (Kind::Symlink, Access::Public),
        'F' => (Kind::File, Access::InRestrictedDir),
        'D' => (Kind::Dir, Access::NotWorldReadable),
        _ => unreachable!(),
    };
    Entry {
        mtime,
        kind,
        access,
        size,
        path: path.as_bytes().to_vec(),
    }
}

fn write_list(path: &Path, entries: &[Entry]) {
    let mut w = Writer::new(Vec::new()).unwrap();
    for entry in entries {
        w.entry(&entry.as_ref()).unwrap();
    }
    w.checksum_section(Algo::Sha1).unwrap();
    fs::write(path, w.finish().unwrap()).unwrap();
}

fn base() -> Vec<Entry> {
    vec![
        e("a", 'd', 4096, 10),
        e("a/x", 'f', 1, 10),
        e("a/y", 'f', 5, 10),
        e("a/sub", 'd', 4096, 10),
        e("a/sub/z", 'f', 1, 10),
        e("a/sub/deeper", 'd', 4096, 10),
        e("a/sub/deeper/w", 'f', 1, 10),
        e("ab", 'f', 1, 10),
        e("b", 'f', 3, 10),
        e("c", 'd', 4096, 10),
        e("c/k", 'f', 9, 10),
        e("c/ln", 'l', 1, 10),
    ]
}

#[test]
fn an_identical_list_is_a_null_sync() {
    let d = Dir::new();
    write_list(&d.path("baseline"), &base());
    write_list(&d.path("fetched"), &base());
    let p = d.plan(None, 0).unwrap();
    assert_eq!(
        p,
        Plan {
            unchanged: true,
            transfer: 0,
            delete: 0,
            entries: 0
        }
    );
    assert_eq!(d.out("transfer"), Vec::<String>::new());
    assert_eq!(d.out("delete"), Vec::<String>::new());
}

#[test]
fn transfers_new_and_changed_entries_and_deletes_children_first() {
    let d = Dir::new();
    write_list(&d.path("baseline"), &base());
    // In another order than the baseline: any order is fine.
    let fetched = vec![
        e("n", 'f', 1, 20),         // new
        e("c/ln", 'l', 2, 10),      // symlink retargeted: new size
        e("c/k", 'f', 9, 10),       // unchanged
        e("c", 'd', 4096, 10),      // unchanged
        e("b", 'd', 4096, 20),      // file replaced by a dir
        e("b/new", 'f', 1, 20),     // new inside it
        e("ab", 'f', 1, 10),        // unchanged
        e("a/y", 'f', 5, 11),       // same size, new mtime
        e("a/x", 'f', 2, 10),       // new size, same mtime
        e("a", 'd', 4096, 20),      // its mtime moved (an entry left)
        e("a/sub2", 'd', 4096, 20), // an empty dir added
    ];
    write_list(&d.path("fetched"), &fetched);
    let p = d.plan(None, 100).unwrap();
    assert!(!p.unchanged);
    assert_eq!((p.transfer, p.delete, p.entries), (8, 4, 11));
    let mut transfer = d.out("transfer");
    transfer.sort();
    assert_eq!(
        transfer,
        ["a", "a/sub2", "a/x", "a/y", "b", "b/new", "c/ln", "n"]
    );
    // Children before parents, so a dir is empty by the time it is removed.
    assert_eq!(
        d.out("delete"),
        ["a/sub/z", "a/sub/deeper/w", "a/sub/deeper", "a/sub"]
    );
    // A dir replaced by a file: the old children go, the path is transferred.
    let fetched2 = vec![e("a", 'f', 7, 30)];
    write_list(&d.path("fetched"), &fetched2);
    // 11 entries leave: one more than allowed is refused.
    let err = d.plan(None, 10).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Refused, "{err}");
    let p = d.plan(None, 11).unwrap();
    assert_eq!((p.transfer, p.delete), (1, 11));
    assert_eq!(d.out("transfer"), ["a"]);
    let del = d.out("delete");
    assert_eq!(del.len(), 11);
    assert!(!del.contains(&"a".to_string()));
    let pos = |p: &str| del.iter().position(|x| x == p).unwrap();
    assert!(pos("a/sub/deeper/w") < pos("a/sub/deeper"));
    assert!(pos("a/sub/deeper") < pos("a/sub"));
    assert!(pos("c/k") < pos("c"));
}

#[test]
fn only_the_access_mark_changing_is_no_transfer() {
    let d = Dir::new();
    write_list(&d.path("baseline"), &base());
    let mut fetched = base();
    fetched[1] = e("a/x", 'F', 1, 10);
    write_list(&d.path("fetched"), &fetched);
    let p = d.plan(None, 0).unwrap();
    assert_eq!((p.unchanged, p.transfer, p.delete), (false, 0, 0));
}

#[test]
fn a_dir_scope_counts_only_entries_at_or_below_it() {
    let d = Dir::new();
    write_list(&d.path("baseline"), &base());
    let fetched = vec![
        e("a", 'd', 4096, 20),
        e("a/x", 'f', 2, 10),
        e("a/y", 'f', 5, 10),
        e("ab", 'f', 2, 10), // outside "a" although it starts with "a"
        e("b", 'f', 4, 10),  // outside
        e("n", 'f', 1, 10),  // outside, new
    ];
    write_list(&d.path("fetched"), &fetched);
    let p = d.plan(Some("a"), 100).unwrap();
    assert_eq!((p.transfer, p.delete, p.entries), (2, 4, 3));
    let mut t = d.out("transfer");
    t.sort();
    assert_eq!(t, ["a", "a/x"]);
    assert_eq!(
        d.out("delete"),
        ["a/sub/z", "a/sub/deeper/w", "a/sub/deeper", "a/sub"]
    );
    // A deeper scope; c/k and c removed outside it do not count.
    let p = d.plan(Some("a/sub"), 100).unwrap();
    assert_eq!((p.transfer, p.delete, p.entries), (0, 4, 0));
    // The scope itself removed upstream: it goes, and nothing else.
    let p = d.plan(Some("c/k"), 1).unwrap();
    assert_eq!((p.transfer, p.delete, p.entries), (0, 1, 0));
    assert_eq!(d.out("delete"), ["c/k"]);
    // A scope in neither list: nothing to do.
    let p = d.plan(Some("zz"), 0).unwrap();
    assert_eq!((p.transfer, p.delete, p.entries), (0, 0, 0));
}

#[test]
fn restricted_entries_can_be_skipped_on_both_sides() {
    let d = Dir::new();
    let mut baseline = base();
    baseline.push(e("p", 'D', 4096, 10));
    baseline.push(e("p/old", 'F', 1, 10));
    write_list(&d.path("baseline"), &baseline);
    let mut fetched = base();
    fetched.push(e("p", 'D', 4096, 11));
    fetched.push(e("p/new", 'F', 1, 10));
    write_list(&d.path("fetched"), &fetched);
    let p = d.plan_with(None, 10, true).unwrap();
    assert_eq!((p.transfer, p.delete), (0, 0));
    let p = d.plan_with(None, 10, false).unwrap();
    assert_eq!((p.transfer, p.delete), (2, 1));
}

#[test]
fn too_many_deletions_refuse_the_plan_and_write_nothing() {
    let d = Dir::new();
    write_list(&d.path("baseline"), &base());
    write_list(&d.path("fetched"), &base()[..7]); // 5 entries gone
                                                  // Outputs of an earlier run are removed, not left to be mistaken for this one's.
    fs::write(d.path("transfer"), "stale\0").unwrap();
    fs::write(d.path("delete"), "stale\0").unwrap();
    let err = d.plan(None, 4).unwrap_err();
    assert!(matches!(
        err,
        PlanError::TooManyDeletions {
            delete: 5,
            max_delete: 4
        }
    ));
    assert_eq!(err.class(), ErrorClass::Refused);
    assert_eq!(
        err.to_string(),
        "the file list would delete 5 entries, more than max_delete (4); nothing was deleted"
    );
    assert!(d.outputs_absent());
    assert_eq!(d.plan(None, 5).unwrap().delete, 5);
}

/// A well-formed list around raw `[Files]` lines.
fn raw_list(lines: &[&[u8]]) -> Vec<u8> {
    let mut text = b"[Version]\n2\n\n[Files]\n1\td\t4096\tok\n".to_vec();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    text.extend_from_slice(b"\n[Checksums SHA1]\n\n[End]\n");
    text
}

#[test]
fn hostile_lists_are_refused_and_nothing_usable_is_written() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute",
            raw_list(&[b"1\tf\t1\t/etc/passwd"]),
            "line 6: path '/etc/passwd' is absolute",
        ),
        (
            "dotdot",
            raw_list(&[b"1\tf\t1\tok/../../x"]),
            "line 6: path 'ok/../../x' has a '..' component",
        ),
        (
            "dot",
            raw_list(&[b"1\tf\t1\tok/./x"]),
            "has a '.' component",
        ),
        (
            "leading ./",
            raw_list(&[b"1\tf\t1\t./ok"]),
            "has a '.' component",
        ),
        (
            "empty component",
            raw_list(&[b"1\tf\t1\tok//x"]),
            "has an empty component",
        ),
        ("NUL", raw_list(&[b"1\tf\t1\tok/x\0y"]), "holds a NUL byte"),
        (
            "field count",
            raw_list(&[b"1\tf\t1"]),
            "line 6: 3 tab-separated fields, expected 4",
        ),
        (
            "field count 5",
            raw_list(&[b"1\tf\t1\tok/a\tb"]),
            "5 tab-separated fields",
        ),
        (
            "mtime",
            raw_list(&[b"yesterday\tf\t1\tok/x"]),
            "mtime 'yesterday' is not an integer",
        ),
        (
            "size",
            raw_list(&[b"1\tf\tbig\tok/x"]),
            "size 'big' is not a non-negative integer",
        ),
        ("type", raw_list(&[b"1\tp\t1\tok/x"]), "type 'p'"),
        (
            "missing [End]",
            b"[Version]\n2\n\n[Files]\n1\td\t4096\tok\n1\tf\t1\tok/x\n".to_vec(),
            "no '[End]' line",
        ),
        (
            "version 4",
            b"[Version]\n4\n\n[Files]\n\n[End]\n".to_vec(),
            "version 4 is not supported",
        ),
        (
            "version text",
            b"[Version]\nv2\n\n[Files]\n\n[End]\n".to_vec(),
            "version 'v2' is not a number",
        ),
        (
            "child of a symlink",
            raw_list(&[b"1\tl\t4\tok/ln", b"1\tf\t1\tok/ln/passwd"]),
            "line 7: 'ok/ln/passwd' is inside 'ok/ln', which the list gives as a symlink",
        ),
        (
            "child of a symlink listed first",
            raw_list(&[b"1\tf\t1\tok/ln/passwd", b"1\tl\t4\tok/ln"]),
            "line 6: 'ok/ln/passwd' is inside 'ok/ln', which the list gives as a symlink",
        ),
        (
            "child of a file",
            raw_list(&[b"1\tf\t4\tok/f", b"1\td\t1\tok/f/d"]),
            "'ok/f/d' is inside 'ok/f', which the list gives as a file",
        ),
        (
            "parent missing",
            raw_list(&[b"1\tf\t1\tnope/x"]),
            "line 6: 'nope/x' is inside 'nope', which the list does not hold",
        ),
        (
            "duplicate",
            raw_list(&[b"1\tf\t1\tok/x", b"2\tf\t1\tok/y", b"3\tf\t1\tok/x"]),
            "line 8: 'ok/x' is listed twice (first on line 6)",
        ),
        (
            "duplicate of another type",
            raw_list(&[b"1\tf\t1\tok/x", b"1\td\t1\tok/x"]),
            "line 7: 'ok/x' is listed twice (first on line 6)",
        ),
    ];
    for (name, text, want) in cases {
        let d = Dir::new();
        write_list(&d.path("baseline"), &[e("ok", 'd', 4096, 1)]);
        fs::write(d.path("fetched"), &text).unwrap();
        let err = d.plan(None, 1000).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, PlanError::InvalidList { .. }),
            "{name}: {msg}"
        );
        assert_eq!(err.class(), ErrorClass::Fallback, "{name}");
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(msg.starts_with("invalid file list "), "{name}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{name}: {msg}");
        assert!(d.outputs_absent(), "{name}");
        let err = validate(&d.path("fetched")).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fallback, "{name}");
        assert!(err.to_string().contains(want), "{name}: {err}");
        // A baseline is never made from it.
        let err = write_baseline(
            &d.path("baseline"),
            &d.path("fetched"),
            None,
            &d.path("next"),
        );
        assert_eq!(err.unwrap_err().class(), ErrorClass::Fallback, "{name}");
        assert!(!d.path("next").exists());
    }
}

#[test]
fn a_broken_baseline_falls_back_and_missing_files_are_temporary() {
    let d = Dir::new();
    write_list(&d.path("fetched"), &base());
    fs::write(d.path("baseline"), b"[Version]\n2\n\n[Files]\n1\tf\t1\tx\n").unwrap();
    let err = d.plan(None, 100).unwrap_err();
    assert!(matches!(err, PlanError::InvalidBaseline { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Fallback);
    assert!(err.to_string().starts_with("invalid baseline "), "{err}");
    assert!(d.outputs_absent());

    fs::remove_file(d.path("baseline")).unwrap();
    let err = d.plan(None, 100).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Temporary, "{err}");
    assert!(d.outputs_absent());
    write_list(&d.path("baseline"), &base());
    fs::remove_file(d.path("fetched")).unwrap();
    let err = d.plan(None, 100).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Temporary, "{err}");
    assert!(d.outputs_absent());
    let err = validate(&d.path("fetched")).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Temporary, "{err}");
    // An output dir that cannot be written.
    write_list(&d.path("fetched"), &base()[..3]);
    let err = plan(&PlanRequest {
        baseline: &d.path("baseline"),
        fetched: &d.path("fetched"),
        scope: None,
        max_delete: 100,
        skip_restricted: false,
        transfer_out: &d.path("missing-dir/transfer"),
        delete_out: &d.path("delete"),
        kinds_out: None,
    })
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Temporary, "{err}");
    assert!(d.outputs_absent());
}

fn with_sums(entries: &[Entry], sums: &[(&str, char)]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new()).unwrap();
    for entry in entries {
        w.entry(&entry.as_ref()).unwrap();
    }
    w.checksum_section(Algo::Sha1).unwrap();
    for (path, digit) in sums {
        let hex = digit.to_string().repeat(40);
        w.checksum(hex.as_bytes(), path.as_bytes()).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn the_next_baseline_takes_the_scope_from_the_fetched_list() {
    let d = Dir::new();
    let old = with_sums(&base(), &[("a/x", '1'), ("c/k", '2')]);
    fs::write(d.path("baseline"), &old).unwrap();

    // A full run: the fetched list, byte for byte.
    let mut fetched = base();
    fetched[2] = e("a/y", 'f', 6, 11);
    let fetched_bytes = with_sums(&fetched, &[("a/x", '3'), ("c/k", '2')]);
    fs::write(d.path("fetched"), &fetched_bytes).unwrap();
    write_baseline(
        &d.path("baseline"),
        &d.path("fetched"),
        None,
        &d.path("next"),
    )
    .unwrap();
    assert_eq!(fs::read(d.path("next")).unwrap(), fetched_bytes);

    // A dir push where nothing changed outside the dir: again the fetched list exactly, so
    // the next push of the same upstream is a null sync.
    let scope = RelDir::parse("a").unwrap();
    write_baseline(
        &d.path("baseline"),
        &d.path("fetched"),
        Some(&scope),
        &d.path("baseline"),
    )
    .unwrap();
    assert_eq!(fs::read(d.path("baseline")).unwrap(), fetched_bytes);
    assert!(d.plan(None, 0).unwrap().unchanged);

    // Upstream changed outside the dir too: inside from the fetched list, outside from the old
    // baseline, so the next full run still sees (and transfers) the outside change.
    fs::write(d.path("baseline"), &old).unwrap();
    let mut fetched = base();
    fetched[2] = e("a/y", 'f', 6, 11); // inside
    fetched[10] = e("c/k", 'f', 10, 11); // outside
    fetched.push(e("c/new", 'f', 1, 1)); // outside
    fs::write(
        d.path("fetched"),
        with_sums(&fetched, &[("a/x", '3'), ("c/k", '4')]),
    )
    .unwrap();
    write_baseline(
        &d.path("baseline"),
        &d.path("fetched"),
        Some(&scope),
        &d.path("baseline"),
    )
    .unwrap();
    let next = read_all(&fs::read(d.path("baseline")).unwrap()[..]).unwrap();
    let by_path: BTreeMap<String, Entry> = next
        .entries
        .iter()
        .map(|x| (String::from_utf8(x.path.clone()).unwrap(), x.clone()))
        .collect();
    assert_eq!(by_path.len(), base().len());
    // The dir's entries stand where its subtree stands in list order (before "ab", which
    // sorts after everything below "a"), so a baseline in list order stays in list order and
    // the next plan streams.
    let order: Vec<&[u8]> = next.entries.iter().map(|x| &x.path[..]).collect();
    let ab = order.iter().position(|p| *p == b"ab").unwrap();
    assert!(order[..ab].iter().all(|p| p.starts_with(b"a")), "{order:?}");
    assert!(
        order[ab..].iter().all(|p| !p.starts_with(b"a/")),
        "{order:?}"
    );
    assert_eq!(
        cmp_paths(b"a/sub/deeper/w", b"ab"),
        std::cmp::Ordering::Less
    );
    assert_eq!(by_path["a/y"], e("a/y", 'f', 6, 11));
    assert_eq!(by_path["c/k"], e("c/k", 'f', 9, 10));
    assert!(!by_path.contains_key("c/new"));
    let sums: BTreeSet<(String, u8)> = next
        .checksums
        .iter()
        .map(|c| (String::from_utf8(c.path.clone()).unwrap(), c.hex[0]))
        .collect();
    assert_eq!(
        sums,
        BTreeSet::from([("a/x".into(), b'3'), ("c/k".into(), b'2')])
    );
    let p = d.plan(None, 0).unwrap();
    assert_eq!((p.transfer, p.delete), (2, 0));
    let mut t = d.out("transfer");
    t.sort();
    assert_eq!(t, ["c/k", "c/new"]);

    // A dir push needs a valid old baseline to keep what lies outside the dir.
    fs::write(d.path("baseline"), b"garbage").unwrap();
    let err = write_baseline(
        &d.path("baseline"),
        &d.path("fetched"),
        Some(&scope),
        &d.path("out"),
    )
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fallback, "{err}");
    assert!(!d.path("out").exists());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A random tree: dirs `a`, `a/b`, `c` always, files from a small set of names with
    /// small sizes and mtimes, so that the two lists overlap, differ and change types.
    fn tree() -> impl Strategy<Value = Vec<Entry>> {
        let names = [
            "a/f1", "a/f2", "a/b/f3", "a/b/f4", "c/f5", "c/f6", "f7", "a/b/f8",
        ];
        proptest::collection::vec((0u8..4, 0u64..3, 0i64..3), names.len()).prop_map(move |v| {
            let mut entries = vec![e("a", 'd', 1, 1), e("a/b", 'd', 1, 1), e("c", 'd', 1, 1)];
            for (name, (pick, size, mtime)) in names.iter().zip(v) {
                match pick {
                    0 => {}
                    1 | 2 => entries.push(e(name, 'f', size, mtime)),
                    _ => entries.push(e(name, 'l', size, mtime)),
                }
            }
            entries
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_plan_turns_the_baseline_into_the_fetched_list(
            old in tree(),
            new in tree(),
            scope in prop_oneof![Just(None), Just(Some("a")), Just(Some("a/b")), Just(Some("c/f5"))],
        ) {
            let d = Dir::new();
            write_list(&d.path("baseline"), &old);
            write_list(&d.path("fetched"), &new);
            let p = d.plan(scope, 1000).unwrap();
            let in_scope = |x: &Entry| scope.is_none_or(|s| {
                let s = s.as_bytes();
                x.path == s || (x.path.starts_with(s) && x.path[s.len()] == b'/')
            });
            let key = |x: &Entry| String::from_utf8(x.path.clone()).unwrap();
            let old_map: BTreeMap<String, &Entry> = old.iter().filter(|x| in_scope(x)).map(|x| (key(x), x)).collect();
            let new_map: BTreeMap<String, &Entry> = new.iter().filter(|x| in_scope(x)).map(|x| (key(x), x)).collect();
            let want_transfer: BTreeSet<String> = new_map
                .iter()
                .filter(|(k, n)| old_map.get(*k).is_none_or(|o| (o.kind, o.size, o.mtime) != (n.kind, n.size, n.mtime)))
                .map(|(k, _)| k.clone())
                .collect();
            let want_delete: BTreeSet<String> = old_map.keys().filter(|k| !new_map.contains_key(*k)).cloned().collect();
            let transfer: BTreeSet<String> = d.out("transfer").into_iter().collect();
            let delete = d.out("delete");
            prop_assert_eq!(&transfer, &want_transfer);
            prop_assert_eq!(delete.iter().cloned().collect::<BTreeSet<_>>(), want_delete);
            prop_assert_eq!(p.transfer, want_transfer.len() as u64);
            prop_assert_eq!(p.delete, delete.len() as u64);
            prop_assert_eq!(p.unchanged, old == new);
            // Children before parents.
            for (i, x) in delete.iter().enumerate() {
                for y in &delete[i + 1..] {
                    prop_assert!(!y.starts_with(&format!("{x}/")), "{} before {}", x, y);
                }
            }
        }
    }
}

/// The planner passes over lines a changed list shares byte for byte with the baseline without
/// parsing them twice: what changed around such lines must still make the list invalid.
#[test]
fn lines_shared_with_the_baseline_are_still_checked_where_the_list_changed_around_them() {
    let (dir, file, rest): (&[u8], &[u8], &[u8]) = (
        b"1\td\t4096\tok/d",
        b"1\tf\t1\tok/d/passwd",
        b"1\tf\t1\tok/z",
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dir now a symlink",
            raw_list(&[b"1\tl\t4\tok/d", file, rest]),
            "line 7: 'ok/d/passwd' is inside 'ok/d', which the list gives as a symlink",
        ),
        (
            "dir now a file",
            raw_list(&[b"1\tf\t4\tok/d", file, rest]),
            "which the list gives as a file",
        ),
        (
            "dir gone",
            raw_list(&[file, rest]),
            "'ok/d/passwd' is inside 'ok/d', which the list does not hold",
        ),
        (
            "duplicate after shared lines",
            raw_list(&[dir, file, file, rest]),
            "line 8: 'ok/d/passwd' is listed twice (first on line 7)",
        ),
    ];
    for (name, text, want) in cases {
        let d = Dir::new();
        fs::write(d.path("baseline"), raw_list(&[dir, file, rest])).unwrap();
        fs::write(d.path("fetched"), &text).unwrap();
        let err = d.plan(None, 1000).unwrap_err();
        assert!(
            matches!(err, PlanError::InvalidList { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert!(d.outputs_absent(), "{name}");
    }
}
