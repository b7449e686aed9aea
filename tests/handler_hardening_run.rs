//! Hardening of the run stages (issue: deletions past max_delete, empty trees from dir pushes),
//! through the real lab: sshd forcing the handler for the lab account, a real rsync daemon.

mod common;

use std::fs;

use common::{lab, publish_list, ssh, status_json, write_config};

const LIST: &str = "fullfiletimelist-fedora";

/// Rewrites the upstream's list without the entries below `dir/` (the dir itself stays listed),
/// as a generator that skipped them (unreadable, dangling symlinks, `.nfs*`) would.
fn drop_listed_below(lab: &mirrorpush_lab::Lab, dir: &str) {
    let path = lab.upstream_dir("fedora").join(LIST);
    let text = fs::read_to_string(&path).unwrap();
    let below = format!("\t{dir}/");
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(&below)).collect();
    fs::write(&path, kept.join("\n") + "\n").unwrap();
}

#[test]
fn max_delete_bounds_what_a_list_removal_removes_on_disk() {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    fs::create_dir(up.join("big")).unwrap();
    for i in 0..50 {
        fs::write(up.join(format!("big/f{i}")), b"x").unwrap();
    }
    publish_list(&lab);
    drop_listed_below(&lab, "big");
    write_config(
        &lab,
        &format!("filelist = \"{LIST}\"\nmax_delete = 5"),
        None,
    );
    // First run: plain (no baseline yet), which carries big/ whole, then adopts the list.
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    let big = lab.mirrors[0].dest("fedora").join("big");
    assert_eq!(fs::read_dir(&big).unwrap().count(), 50);

    // The next list drops big: one listed entry, 51 on disk.
    fs::remove_dir_all(up.join("big")).unwrap();
    publish_list(&lab);
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("more than max_delete (5)"), "{err}");
    assert_eq!(fs::read_dir(&big).unwrap().count(), 50, "nothing deleted");
    let s = status_json(&lab);
    let run = &s["modules"][0]["last_run"];
    assert_eq!(run["ok"], false);
    assert_eq!(run["runs"][0]["deleted"], 0);
    assert!(
        run["result"]
            .as_str()
            .unwrap()
            .contains("nothing was deleted"),
        "{s}"
    );
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=filelist-refused"), "{log}");
}

#[test]
fn a_file_list_dir_push_for_a_dir_that_exists_nowhere_creates_nothing() {
    let lab = lab("wait");
    publish_list(&lab);
    write_config(&lab, &format!("filelist = \"{LIST}\""), None);
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    // The list changes elsewhere, so a dir push is planned rather than null.
    let up = lab.upstream_dir("fedora");
    fs::write(up.join("changed-elsewhere"), b"new").unwrap();
    publish_list(&lab);
    let dest = lab.mirrors[0].dest("fedora");
    for n in 0..3 {
        let (code, out, err) = ssh(&lab, &format!("sync fedora junk{n}/a/b/c/d"));
        assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
        assert!(!dest.join(format!("junk{n}")).exists(), "junk{n} created");
    }
}
