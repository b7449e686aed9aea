//! `mirrorpush filelist` against hand-made trees: every skip rule and type suffix, `--changed`
//! against a full scan, an unchanged list left alone, and bad input refused with exit 2.
//! Modes are set explicitly, so the tests hold when run as root (the generator reads modes; it
//! does not rely on permission checks).

#![cfg(feature = "master")]

use std::fs::{self, File};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use mirrorpush::filelist::format::{read_all, Access, Entry, Kind, List};
use mirrorpush::filelist::generate::{self, Options, Report};

fn tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("mod");
    fs::create_dir(&t).unwrap();
    fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
    (tmp, t)
}

fn file(path: &Path, content: &str, mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn run(opts: &Options) -> (Report, String) {
    let mut notes = Vec::new();
    let report = generate::run(opts, &mut notes).unwrap_or_else(|e| panic!("{}", e.message));
    (report, String::from_utf8(notes).unwrap())
}

fn opts(tree: &Path) -> Options {
    Options {
        tree: tree.to_owned(),
        ..Default::default()
    }
}

fn list_of(tree: &Path) -> PathBuf {
    tree.join(format!(
        "fullfiletimelist-{}",
        tree.file_name().unwrap().to_str().unwrap()
    ))
}

fn read(path: &Path) -> List {
    read_all(&fs::read(path).unwrap()[..]).unwrap()
}

fn get<'a>(list: &'a List, path: &str) -> Option<&'a Entry> {
    list.entries.iter().find(|e| e.path == path.as_bytes())
}

fn paths(list: &List) -> Vec<String> {
    list.entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

fn kind_access(list: &List, path: &str) -> (Kind, Access) {
    let e = get(list, path).unwrap_or_else(|| panic!("{path} not listed in {:?}", paths(list)));
    (e.kind, e.access)
}

#[test]
fn lists_files_dirs_and_symlinks_with_lstat_fields() {
    let (_tmp, t) = tree();
    file(&t.join("a/b/f"), "hello\n", 0o644);
    dir(&t.join("a/sub"), 0o755);
    symlink("b/f", t.join("a/ln")).unwrap();
    symlink("sub", t.join("a/dirlink")).unwrap();
    file(&t.join("a/sub/inside"), "x", 0o644);
    // An mtime ahead of the ctime is listed as such; one behind it gives way to the ctime.
    let future = SystemTime::now() + Duration::from_secs(100_000);
    file(&t.join("future"), "", 0o644);
    File::options()
        .write(true)
        .open(t.join("future"))
        .unwrap()
        .set_modified(future)
        .unwrap();
    file(&t.join("past"), "", 0o644);
    File::options()
        .write(true)
        .open(t.join("past"))
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
        .unwrap();

    let (report, notes) = run(&opts(&t));
    assert!(report.written);
    assert_eq!(notes, "");
    assert_eq!(
        report.output,
        fs::canonicalize(&t).unwrap().join("fullfiletimelist-mod")
    );
    let list = read(&report.output);
    assert_eq!(report.entries, list.entries.len() as u64);
    // Sorted depth first: a dir's subtree follows it.
    assert_eq!(
        paths(&list),
        [
            "a",
            "a/b",
            "a/b/f",
            "a/dirlink",
            "a/ln",
            "a/sub",
            "a/sub/inside",
            "future",
            "past"
        ]
    );
    let f = get(&list, "a/b/f").unwrap();
    assert_eq!((f.kind, f.access, f.size), (Kind::File, Access::Public, 6));
    let m = fs::symlink_metadata(t.join("a/b/f")).unwrap();
    assert_eq!(f.mtime, m.mtime().max(m.ctime()));
    let d = get(&list, "a/b").unwrap();
    assert_eq!(
        (d.kind, d.size),
        (Kind::Dir, fs::metadata(t.join("a/b")).unwrap().size())
    );
    let l = get(&list, "a/ln").unwrap();
    assert_eq!((l.kind, l.size), (Kind::Symlink, 3));
    // A symlink to a dir is a link, not followed: nothing is listed below it.
    assert_eq!(
        kind_access(&list, "a/dirlink"),
        (Kind::Symlink, Access::Public)
    );
    assert!(!paths(&list).iter().any(|p| p.starts_with("a/dirlink/")));
    let fut = future
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(get(&list, "future").unwrap().mtime, fut);
    let past = fs::symlink_metadata(t.join("past")).unwrap();
    assert_eq!(get(&list, "past").unwrap().mtime, past.ctime());
    assert!(list.checksums.is_empty());
}

#[test]
fn skip_rules_match_fedoras_generator() {
    let (_tmp, t) = tree();
    file(&t.join("keep"), "k", 0o644);
    // rsync's partial dirs and NFS silly-renames, at the top and deeper, with what is below.
    file(&t.join(".~tmp~/partial"), "p", 0o644);
    file(&t.join("d/.~tmp~/partial"), "p", 0o644);
    file(&t.join(".nfs000123"), "", 0o644);
    file(&t.join("d/.nfsabc"), "", 0o644);
    file(&t.join("d/.nfsdir/x"), "", 0o644);
    file(&t.join("d/name.nfs-1"), "", 0o644); // merely containing ".nfs": listed
                                              // Not group-readable: skipped, and a dir's whole subtree with it.
    file(&t.join("d/private"), "", 0o604);
    dir(&t.join("d/privdir"), 0o705);
    file(&t.join("d/privdir/inside"), "", 0o644);
    // Dangling symlinks are skipped (noted); so is a link to a target that is not
    // group-readable, whose own mode (lrwxrwxrwx) does not matter.
    symlink("nowhere", t.join("d/dangling")).unwrap();
    symlink("private", t.join("d/to-private")).unwrap();
    symlink("keep", t.join("d/to-missing-keep")).unwrap(); // relative to d/: dangling
    symlink("../keep", t.join("d/to-keep")).unwrap();
    // The list itself and its temporary files are skipped at the top, not elsewhere.
    file(&t.join(".fullfiletimelist-mod.123.tmp"), "", 0o644);
    file(&t.join("d/fullfiletimelist-mod"), "", 0o644);
    // Names the format cannot carry are skipped with a note.
    file(&t.join("d/tab\there"), "", 0o644);

    let (report, notes) = run(&opts(&t));
    let list = read(&report.output);
    assert_eq!(
        paths(&list),
        [
            "d",
            "d/fullfiletimelist-mod",
            "d/name.nfs-1",
            "d/to-keep",
            "keep"
        ]
    );
    let mut noted: Vec<&str> = notes.lines().collect();
    noted.sort();
    assert_eq!(
        noted,
        [
            "note: skipped 'd/dangling': dangling symlink",
            "note: skipped 'd/tab\\x09here': a name with a tab or newline cannot be listed",
            "note: skipped 'd/to-missing-keep': dangling symlink",
        ]
    );
    // A second run lists the list file as little as the first did.
    let (again, _) = run(&opts(&t));
    assert!(!again.written);
}

#[test]
fn type_suffixes_mark_what_is_not_world_readable() {
    let (_tmp, t) = tree();
    file(&t.join("open"), "", 0o644);
    file(&t.join("group-only"), "", 0o640);
    dir(&t.join("closed"), 0o750);
    file(&t.join("closed/f"), "", 0o644);
    file(&t.join("closed/g"), "", 0o640);
    dir(&t.join("closed/sub"), 0o755);
    file(&t.join("closed/sub/deep"), "", 0o644);
    symlink("f", t.join("closed/ln")).unwrap();
    dir(&t.join("closed/sub/closed2"), 0o750);
    file(&t.join("closed/sub/closed2/x"), "", 0o644);

    let (report, _) = run(&opts(&t));
    let list = read(&report.output);
    use Access::*;
    assert_eq!(kind_access(&list, "open"), (Kind::File, Public));
    assert_eq!(
        kind_access(&list, "group-only"),
        (Kind::File, NotWorldReadable)
    );
    assert_eq!(kind_access(&list, "closed"), (Kind::Dir, NotWorldReadable));
    assert_eq!(
        kind_access(&list, "closed/f"),
        (Kind::File, InRestrictedDir)
    );
    // `-` wins over `*`.
    assert_eq!(
        kind_access(&list, "closed/g"),
        (Kind::File, NotWorldReadable)
    );
    assert_eq!(
        kind_access(&list, "closed/sub"),
        (Kind::Dir, InRestrictedDir)
    );
    assert_eq!(
        kind_access(&list, "closed/sub/deep"),
        (Kind::File, InRestrictedDir)
    );
    // A symlink's own mode is always world-readable.
    assert_eq!(
        kind_access(&list, "closed/ln"),
        (Kind::Symlink, InRestrictedDir)
    );
    assert_eq!(
        kind_access(&list, "closed/sub/closed2"),
        (Kind::Dir, NotWorldReadable)
    );
    assert_eq!(
        kind_access(&list, "closed/sub/closed2/x"),
        (Kind::File, InRestrictedDir)
    );
    let text = String::from_utf8(fs::read(&report.output).unwrap()).unwrap();
    assert!(text.contains("\td-\t"), "{text}");
    assert!(text.contains("\tf*\t0\tclosed/f\n"), "{text}");
    assert!(text.contains("\tf-\t0\tclosed/g\n"), "{text}");
}

#[test]
fn checksums_cover_every_file_with_the_name() {
    let (_tmp, t) = tree();
    file(&t.join("repodata/repomd.xml"), "hello\n", 0o644);
    file(&t.join("a/b/repodata/repomd.xml"), "", 0o644);
    file(&t.join("other.xml"), "x", 0o644);
    symlink("repodata/repomd.xml", t.join("repomd.xml")).unwrap();
    dir(&t.join("c/repomd.xml"), 0o755); // a dir of that name has no checksum

    let mut o = opts(&t);
    o.checksum_names = vec![b"repomd.xml".to_vec()];
    let (report, _) = run(&o);
    let list = read(&report.output);
    let sums: Vec<(String, String)> = list
        .checksums
        .iter()
        .map(|c| {
            (
                String::from_utf8(c.path.clone()).unwrap(),
                String::from_utf8(c.hex.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sums,
        [
            (
                "a/b/repodata/repomd.xml".into(),
                "da39a3ee5e6b4b0d3255bfef95601890afd80709".into()
            ),
            (
                "repodata/repomd.xml".into(),
                "f572d396fae9206628714fb2ce00f72e94f2258f".into()
            ),
            (
                "repomd.xml".into(),
                "f572d396fae9206628714fb2ce00f72e94f2258f".into()
            ),
        ]
    );
    // Without --checksum the section is there and empty, as Fedora writes it.
    let (report, _) = run(&opts(&t));
    let text = String::from_utf8(fs::read(&report.output).unwrap()).unwrap();
    assert!(text.ends_with("\n\n[Checksums SHA1]\n\n[End]\n"), "{text}");
}

#[test]
fn an_unchanged_list_is_left_alone() {
    let (_tmp, t) = tree();
    file(&t.join("a/f"), "1", 0o644);
    let (first, _) = run(&opts(&t));
    assert!(first.written);
    let old_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    File::options()
        .write(true)
        .open(&first.output)
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    let before = fs::metadata(&first.output).unwrap();
    let (second, _) = run(&opts(&t));
    assert!(!second.written);
    let after = fs::metadata(&second.output).unwrap();
    assert_eq!(after.modified().unwrap(), old_time);
    assert_eq!(after.ino(), before.ino());
    assert_eq!(leftovers(&t), Vec::<String>::new());
    // A change is written, by rename (a new inode), world-readable.
    file(&t.join("a/g"), "2", 0o644);
    let (third, _) = run(&opts(&t));
    assert!(third.written);
    let meta = fs::metadata(&third.output).unwrap();
    assert_ne!(meta.ino(), before.ino());
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
}

#[test]
fn a_list_rewritten_within_the_same_second_gets_a_later_mtime() {
    // Mirrors fetch the list with rsync's quick check (size, mtime in seconds): a change of
    // the same size written within the same second must still differ in mtime.
    let (_tmp, t) = tree();
    file(&t.join("a/f"), "1", 0o644);
    let (first, _) = run(&opts(&t));
    let future = SystemTime::now() + Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&first.output)
        .unwrap()
        .set_modified(future)
        .unwrap();
    let before = fs::metadata(&first.output).unwrap();
    // Another name as long: the list changes, its size does not.
    fs::rename(t.join("a/f"), t.join("a/g")).unwrap();
    let (second, _) = run(&opts(&t));
    assert!(second.written);
    let after = fs::metadata(&second.output).unwrap();
    assert_eq!(
        after.len(),
        before.len(),
        "the change keeps the list's size"
    );
    assert_eq!(after.mtime(), before.mtime() + 1);
}

/// Temporary files left in a dir.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Builds the tree `--changed` tests start from.
fn publish_tree(t: &Path) {
    file(&t.join("keep/k1"), "k1", 0o644);
    file(&t.join("keep/sub/k2"), "k2", 0o644);
    file(&t.join("pub/x1"), "x1", 0o644);
    file(&t.join("pub/x2"), "x2", 0o644);
    file(&t.join("pub/old/o1"), "o1", 0o644);
    file(&t.join("pub/old/o2/deep"), "d", 0o644);
    file(&t.join("pub/swap"), "s", 0o644);
    file(&t.join("pub/dir2file/y"), "y", 0o644);
    file(&t.join("pub.txt"), "sorts after pub/", 0o644);
    file(&t.join("pub2/z"), "z", 0o644);
    file(&t.join("zz/repodata/repomd.xml"), "r", 0o644);
}

fn changed(t: &Path, dirs: &[&str]) -> (Report, String) {
    let mut o = opts(t);
    o.checksum_names = vec![b"repomd.xml".to_vec()];
    o.changed = dirs.iter().map(|d| d.as_bytes().to_vec()).collect();
    run(&o)
}

/// Asserts that a full scan now would write exactly the list `--changed` wrote.
fn assert_same_as_full_scan(t: &Path) {
    let before = fs::read(list_of(t)).unwrap();
    let mut o = opts(t);
    o.checksum_names = vec![b"repomd.xml".to_vec()];
    let (full, _) = run(&o);
    let after = fs::read(list_of(t)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
    assert!(!full.written, "a full scan found a difference");
}

#[test]
fn changed_dir_gives_the_same_list_as_a_full_scan() {
    let (_tmp, t) = tree();
    publish_tree(&t);
    changed(&t, &[]); // a first, full list
                      // A publish below pub/: new, grown, removed subtree, file <-> dir, symlink, empty dir.
    file(&t.join("pub/new"), "n", 0o644);
    file(&t.join("pub/x1"), "x1 grown", 0o644);
    fs::remove_dir_all(t.join("pub/old")).unwrap();
    fs::remove_file(t.join("pub/swap")).unwrap();
    file(&t.join("pub/swap/inner"), "i", 0o644);
    fs::remove_dir_all(t.join("pub/dir2file")).unwrap();
    file(&t.join("pub/dir2file"), "now a file", 0o644);
    symlink("x2", t.join("pub/ln")).unwrap();
    dir(&t.join("pub/empty"), 0o755);
    file(&t.join("pub/repodata/repomd.xml"), "new repo", 0o644);
    let (report, notes) = changed(&t, &["pub"]);
    assert!(report.incremental, "{notes}");
    assert!(report.written);
    let list = read(&report.output);
    assert!(get(&list, "pub/old/o2/deep").is_none());
    assert_eq!(kind_access(&list, "pub/swap"), (Kind::Dir, Access::Public));
    assert_eq!(
        kind_access(&list, "pub/dir2file"),
        (Kind::File, Access::Public)
    );
    assert!(get(&list, "pub/dir2file/y").is_none());
    assert_eq!(list.checksums.len(), 2);
    assert_same_as_full_scan(&t);
}

#[test]
fn changed_handles_new_removed_and_nested_dirs() {
    let (_tmp, t) = tree();
    publish_tree(&t);
    changed(&t, &[]);
    // A dir created with new parents: the parents' entries (and mtimes) come along.
    file(&t.join("keep/new/deeper/f"), "f", 0o644);
    // A changed dir that was removed as a whole, and one whose parent was.
    fs::remove_dir_all(t.join("pub2")).unwrap();
    fs::remove_dir_all(t.join("pub/old")).unwrap();
    // Overlapping dirs: the outer one covers the inner.
    file(&t.join("zz/repodata/repomd.xml"), "changed", 0o644);
    file(&t.join("zz/repodata/other"), "o", 0o644);
    let (report, notes) = changed(
        &t,
        &["keep/new/deeper", "pub2", "pub/old/o2", "zz/repodata", "zz"],
    );
    assert!(report.incremental, "{notes}");
    assert_same_as_full_scan(&t);

    // A dir that became a symlink, and a path under it.
    fs::remove_dir_all(t.join("keep/sub")).unwrap();
    symlink("..", t.join("keep/sub")).unwrap();
    let (report, _) = changed(&t, &["keep/sub/k2"]);
    assert!(report.incremental);
    assert_eq!(
        kind_access(&read(&report.output), "keep/sub"),
        (Kind::Symlink, Access::Public)
    );
    assert_same_as_full_scan(&t);

    // Nothing changed where we looked: the list is left alone.
    let (report, _) = changed(&t, &["keep"]);
    assert!(report.incremental && !report.written);
}

#[test]
fn changed_without_a_usable_previous_list_scans_everything() {
    let (_tmp, t) = tree();
    publish_tree(&t);
    let (report, notes) = changed(&t, &["pub"]);
    assert!(!report.incremental);
    assert!(
        notes.starts_with("note: no previous list to update"),
        "{notes}"
    );
    assert_eq!(notes.lines().count(), 1);
    assert_same_as_full_scan(&t);

    // Truncated (no [End]): refused, and a full scan writes a good list.
    let text = fs::read(list_of(&t)).unwrap();
    fs::write(list_of(&t), &text[..text.len() - 6]).unwrap();
    let (report, notes) = changed(&t, &["pub"]);
    assert!(!report.incremental && report.written);
    assert!(
        notes.contains("the previous list does not parse (line ") && notes.contains("[End]"),
        "{notes}"
    );
    assert_same_as_full_scan(&t);

    // Out of order (e.g. written by another generator): a full scan too.
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    lines.swap(4, 5);
    fs::write(list_of(&t), lines.join(&b'\n')).unwrap();
    let (report, notes) = changed(&t, &["pub"]);
    assert!(!report.incremental);
    assert!(notes.contains("not in list order"), "{notes}");
    assert_same_as_full_scan(&t);
    assert_eq!(leftovers(&t), Vec::<String>::new());
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("filelist")
        .args(args)
        .env_remove("MIRRORPUSH_REGISTRY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_writes_the_list_and_ignores_the_registry() {
    let (_tmp, t) = tree();
    file(&t.join("f"), "", 0o644);
    let ts = t.to_str().unwrap();
    // --registry is a global flag of the master; a missing registry does not matter here.
    let (code, out, err) = cli(&["--registry", "/nonexistent/mirrors.toml", ts]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    assert_eq!(paths(&read(&list_of(&t))), ["f"]);
    let other = t.parent().unwrap().join("elsewhere.list");
    let (code, _, err) = cli(&["--output", other.to_str().unwrap(), "--checksum", "f", ts]);
    assert_eq!((code, err.as_str()), (0, ""));
    let list = read(&other);
    // Written outside the tree, the tree's own list is an entry like any other.
    assert_eq!(paths(&list), ["f", "fullfiletimelist-mod"]);
    assert_eq!(list.checksums.len(), 1);
}

#[test]
fn cli_refuses_bad_input_with_one_line_and_exit_2() {
    let (tmp, t) = tree();
    file(&t.join("sub/f"), "", 0o644);
    let ts = t.to_str().unwrap();
    assert_eq!(cli(&[ts]).0, 0);
    let list = list_of(&t);
    let old_time = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
    File::options()
        .write(true)
        .open(&list)
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    let old = fs::read(&list).unwrap();
    file(&t.join("sub/g"), "", 0o644); // a run that went through would rewrite the list
    let missing = tmp.path().join("missing");
    let a_file = t.join("sub/f");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![missing.to_str().unwrap()], "error: tree '"),
        (vec![a_file.to_str().unwrap()], "is not a directory"),
        (
            vec!["--changed", "../x", ts],
            "error: --changed '../x' has a '..' component",
        ),
        (
            vec!["--changed", "/etc", ts],
            "error: --changed '/etc' is absolute",
        ),
        (vec!["--changed", "a//b", ts], "has an empty component"),
        (vec!["--changed", "./sub", ts], "has a '.' component"),
        (vec!["--changed", "sub/", ts], "has an empty component"),
        (vec!["--changed", "", ts], "is empty"),
        (vec!["--checksum", "a/b", ts], "must be a file name"),
        (
            vec!["--output", "/nonexistent-dir/list", ts],
            "error: output directory '",
        ),
        (
            vec!["--output", tmp.path().to_str().unwrap(), ts],
            "is a directory",
        ),
        (
            vec!["--output", "/proc/version", ts],
            "error: cannot write the list in '/proc'",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(fs::read(&list).unwrap(), old, "{args:?}");
        assert_eq!(fs::metadata(&list).unwrap().modified().unwrap(), old_time);
        assert_eq!(leftovers(&t), Vec::<String>::new());
    }
    // Usage errors from the argument parser exit 2 as well.
    assert_eq!(cli(&[]).0, 2);
}
