//! Hardening of the run stages (issue: deletions past max_delete, empty trees from dir pushes),
//! through the real lab: sshd forcing the handler for the lab account, a real rsync daemon.

mod common;

use std::fs;
use std::path::PathBuf;

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

/// A mirror (wait mode, `max_delete = 5`) whose upstream has `big/` with 50 files and a list
/// naming only `big` itself. The first run is plain (no baseline yet): it carries big/ whole,
/// then adopts the list. Returns the lab, the upstream tree and the mirror's `big`.
fn mirror_with_a_dir_its_list_does_not_look_into() -> (mirrorpush_lab::Lab, PathBuf, PathBuf) {
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
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    let big = lab.mirrors[0].dest("fedora").join("big");
    assert_eq!(fs::read_dir(&big).unwrap().count(), 50);
    (lab, up, big)
}

#[test]
fn max_delete_bounds_what_a_list_removal_removes_on_disk() {
    let (lab, up, big) = mirror_with_a_dir_its_list_does_not_look_into();

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

/// A dir the next list gives as a file: rsync's `--force` would remove the whole tree to put the
/// file in its place, and the transfer passes run without `--max-delete`, so the decide stage
/// counts it. Past max_delete nothing moves; with room for it the dir becomes the file.
#[test]
fn max_delete_bounds_a_dir_that_the_list_turns_into_a_file() {
    let (lab, up, big) = mirror_with_a_dir_its_list_does_not_look_into();

    // Upstream, big becomes a file: one entry to transfer, no entry leaves the list.
    fs::remove_dir_all(up.join("big")).unwrap();
    fs::write(up.join("big"), b"now a file\n").unwrap();
    publish_list(&lab);
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("1 dirs to put files or links in their place, more than max_delete (5)"),
        "{err}"
    );
    assert!(big.is_dir(), "the dir is still a dir");
    assert_eq!(fs::read_dir(&big).unwrap().count(), 50, "nothing deleted");
    let s = status_json(&lab);
    assert_eq!(s["modules"][0]["last_run"]["ok"], false, "{s}");
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=filelist-refused"), "{log}");

    // With room for the 51 entries the same list goes through, and the dir becomes the file.
    write_config(
        &lab,
        &format!("filelist = \"{LIST}\"\nmax_delete = 60"),
        None,
    );
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read(&big).unwrap(), b"now a file\n");
    let s = status_json(&lab);
    assert_eq!(
        s["modules"][0]["last_run"]["runs"][0]["kind"], "filelist",
        "{s}"
    );
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

#[test]
fn waiters_past_the_cap_are_answered_queued_at_once_and_still_run() {
    const CAP: usize = 32; // the handler's cap on waiting requests per module
    const SESSIONS: usize = CAP + 6;
    let lab = lab("wait");
    let w = common::wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let log = lab.mirrors[0].state_dir.join("handler.log");
    let requests = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("verdict=accepted-wait")
            .count()
    };
    // One session after another (each logs its request before it waits), so sshd's own
    // MaxStartups never drops one: all wait on the gated run.
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let mut cmd = lab.ssh(0, &format!("sync fedora d{i}"));
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        sessions.push(cmd.spawn().unwrap());
        assert!(lab.wait_until(common::LONG, || requests() > i));
    }
    // Those past the cap answered at once; the rest still wait.
    assert!(lab.wait_until(common::LONG, || {
        sessions
            .iter_mut()
            .map(|c| c.try_wait().unwrap().is_some())
            .filter(|done| *done)
            .count()
            == SESSIONS - CAP
    }));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("verdict=wait-full").count(),
        SESSIONS - CAP,
        "{text}"
    );
    fs::write(&w.gate, "").unwrap();
    let mut answers = Vec::new();
    for c in sessions {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        answers.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    assert_eq!(
        answers.iter().filter(|a| *a == "queued").count(),
        SESSIONS - CAP
    );
    assert_eq!(answers.iter().filter(|a| *a == "synced").count(), CAP);
    // The queued ones were recorded and ran: every dir is covered by a finished run.
    assert!(lab.wait_until(common::LONG, || common::queue_idle(&lab)));
    let s = status_json(&lab);
    assert_eq!(s["modules"][0]["last_run"]["ok"], true, "{s}");
}

#[test]
fn a_list_whose_entries_are_mostly_missing_upstream_is_never_adopted() {
    let lab = lab("wait");
    publish_list(&lab);
    // 2000 entries that exist nowhere, appended to an honest list.
    let path = lab.upstream_dir("fedora").join(LIST);
    let text = fs::read_to_string(&path).unwrap();
    let mut fake = String::from("1700000000\td\t4096\tzzzz\n");
    for i in 0..2000 {
        fake.push_str(&format!("1700000000\tf\t10\tzzzz/fake-{i:05}\n"));
    }
    let at = text
        .find("\n\n[Checksums")
        .expect("list has a checksums section")
        + 1;
    fs::write(&path, format!("{}{fake}{}", &text[..at], &text[at..])).unwrap();
    write_config(&lab, &format!("filelist = \"{LIST}\""), None);

    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    let state = common::module_state(&lab);
    assert!(
        !state.join("filelist.baseline").exists(),
        "a list naming what the upstream does not have became the baseline"
    );
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=filelist-untrusted"), "{log}");
    assert!(!lab.mirrors[0].dest("fedora").join("zzzz").exists());

    // The honest list is adopted again.
    publish_list(&lab);
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    assert!(state.join("filelist.baseline").exists());
}
