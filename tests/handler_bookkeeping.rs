//! A run whose content landed but whose bookkeeping failed (the trace, lastsync or the published
//! file list could not be written) is a failed run, everywhere a person looks: status, the next
//! answer, wait mode's exit code; the error names the file. And a dest that `check` refuses is
//! refused by a run before anything is transferred.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{lab, local, ssh, status_json, write_config, LONG};

#[test]
fn a_trace_that_cannot_be_written_fails_the_run_and_names_the_file() {
    let lab = lab("detach");
    write_config(&lab, r#"trace = "project/trace/mirror.test""#, None);
    let dest = lab.mirrors[0].dest("fedora");
    let trace_dir = dest.join("project/trace");
    let trace = trace_dir.join("mirror.test");
    // A non-empty dir where the trace goes (rsync protects the trace's path, so it stays): the
    // content lands, the trace cannot be renamed into place.
    for d in [dest.join("project"), trace_dir.clone(), trace.clone()] {
        lab.create_dir_for_account(&d).unwrap();
    }
    std::fs::write(trace.join("in-the-way"), b"x").unwrap();

    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)
        && status_json(&lab)["modules"][0]["last_run"].is_object()));
    let want = format!("cannot write {}: Is a directory", trace.display());
    let s = status_json(&lab);
    let run = &s["modules"][0]["last_run"];
    assert_eq!(run["ok"], false, "{s}");
    assert!(run["result"].as_str().unwrap().contains(&want), "{s}");
    assert_eq!(run["trace_written"], false);
    let log = std::fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=trace-error"), "{log}");
    assert!(log.contains("verdict=run-failed"), "{log}");

    // The next answer says the last run failed, and why.
    let (code, out, _) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0);
    assert!(out.contains(&format!("(last run failed: {want}")), "{out}");
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)));

    // Fixed: the next run is ok and writes the trace.
    std::fs::remove_dir_all(&trace).unwrap();
    let (code, _, err) = local(&lab, &["sync", "fedora"]);
    assert_eq!(code, 0, "{err}");
    assert!(trace.is_file());
}

#[test]
fn a_list_that_cannot_be_published_fails_the_run() {
    let lab = lab("wait");
    common::publish_list(&lab);
    write_config(&lab, r#"filelist = "fullfiletimelist-fedora""#, None);
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    // Upstream changes; the published copy's place is taken by a dir the account cannot replace.
    let up = lab.upstream_dir("fedora");
    std::fs::write(up.join("new-file"), b"new").unwrap();
    common::publish_list(&lab);
    let dest = lab.mirrors[0].dest("fedora");
    let published = dest.join("fullfiletimelist-fedora");
    std::fs::remove_file(&published).unwrap();
    lab.create_dir_for_account(&published).unwrap();
    std::fs::write(published.join("in-the-way"), b"x").unwrap();

    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out} {err}");
    let want = format!("cannot publish the file list {}", published.display());
    assert!(err.contains(&want), "{err}");
    let s = status_json(&lab);
    assert_eq!(s["modules"][0]["last_run"]["ok"], false, "{s}");
    let log = std::fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=filelist-publish-error"), "{log}");
    assert!(log.contains(&want), "{log}");
}

#[test]
fn a_dest_the_account_cannot_write_is_refused_before_anything_is_transferred() {
    let lab = lab("wait");
    let dest = lab.mirrors[0].dest("fedora");
    // Root-owned and 0755, as a newcomer's `mkdir` leaves it: safe, but not the account's.
    for e in std::fs::read_dir(&dest).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    if !mirrorpush_lab::is_root() {
        // Without root the lab account is the current user: the case cannot be built.
        return;
    }
    std::os::unix::fs::chown(&dest, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains(&format!(
            "dest {} is not writable by this account",
            dest.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)));
}
