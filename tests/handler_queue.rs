//! Queueing, coalescing, detach/wait modes and crash recovery, through real sshd and rsync.

mod common;

use common::{lab, runner_pid, ssh, status_json, wrapper, write_config, LONG};

#[test]
fn detach_answers_at_once_and_a_trigger_during_a_sync_is_queued_not_lost() {
    let lab = lab("detach");
    let w = wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let dest = lab.mirrors[0].dest("fedora");

    // The gate holds rsync back, so "accepted" provably came before the sync finished.
    let (code, out, err) = ssh(&lab, "sync fedora releases");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    assert!(lab.wait_until(LONG, || w.started.exists()));
    assert!(!dest.join("releases/41").exists());

    let late = lab.upstream_dir("fedora").join("updates/late.rpm");
    std::fs::write(&late, "written after the first sync started\n").unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora updates");
    assert_eq!((code, out.as_str()), (0, "queued"), "{err}");
    let v = status_json(&lab);
    assert_eq!(v["modules"][0]["pending"][0]["dir"], "updates");
    assert_eq!(v["modules"][0]["in_flight"][0]["dir"], "releases");

    std::fs::write(&w.gate, "").unwrap();
    assert!(lab.wait_until(LONG, || {
        dest.join("updates/late.rpm").exists() && common::queue_idle(&lab)
    }));
    assert!(dest
        .join("releases/41/Everything/x86_64/os/repodata/repomd.xml")
        .exists());
    assert!(!w.overlap.exists());
    let log = std::fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(
        log.contains("verdict=queued request=\"sync fedora updates\""),
        "{log}"
    );
}

#[test]
fn many_concurrent_triggers_end_in_sync_without_overlapping_rsyncs() {
    let lab = lab("detach");
    let w = wrapper(&lab, true);
    write_config(&lab, "", Some(&w.path));
    std::fs::write(lab.upstream_dir("fedora").join("new-file"), "fresh\n").unwrap();
    let requests = [
        "sync fedora",
        "sync fedora updates",
        "sync fedora releases/41",
        "sync fedora development/rawhide",
    ];
    let answers: Vec<(i32, String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || ssh(lab, requests[i % requests.len()]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, out, err) in &answers {
        assert_eq!(*code, 0, "{err}");
        assert!(out == "accepted" || out == "queued", "{out}");
    }
    let active = w.path.with_file_name("active");
    assert!(lab.wait_until(LONG, || {
        lab.in_sync(0, "fedora") && common::queue_idle(&lab) && !active.exists()
    }));
    assert!(!w.overlap.exists(), "two rsyncs ran at once");
    let runs = std::fs::read_to_string(&w.runs).unwrap().lines().count();
    assert!((1..=20).contains(&runs), "{runs} runs");
    assert_eq!(status_json(&lab)["modules"][0]["last_run"]["ok"], true);
}

#[test]
fn kill_9_of_the_runner_mid_sync_loses_nothing_and_blocks_nothing() {
    let lab = lab("detach");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(lab.upstream_dir("fedora").join("big.iso"), &big).unwrap();
    write_config(&lab, "rsync_args = [\"--bwlimit=100\"]\n", None);
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");

    let pgid_file = common::module_state(&lab).join("rsync.pgid");
    assert!(lab.wait_until(LONG, || pgid_file.exists()));
    let pgid: i32 = std::fs::read_to_string(&pgid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let config = &lab.mirrors[0].handler_config;
    let pid = runner_pid(config).expect("runner is running");
    // SAFETY: kill(2) on the runner we just found by its command line.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(lab.wait_until(LONG, || runner_pid(config).is_none()));
    // The runner's guard kills rsync's whole group, the forked receiver too, at once: not at
    // the next trigger, nor after rsync's own I/O timeout.
    assert!(lab.wait_until(LONG, || !mirrorpush_lab::group_alive(pgid)));
    // The killed batch is still recorded as in flight, not lost.
    assert_eq!(
        status_json(&lab)["modules"][0]["in_flight"][0]["dir"],
        serde_json::Value::Null
    );

    write_config(&lab, "", None);
    let (code, out, err) = ssh(&lab, "sync fedora updates");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    // Only the merged full sync of the killed batch brings big.iso: the new request is a dir.
    assert!(lab.wait_until(LONG, || lab.in_sync(0, "fedora")
        && common::queue_idle(&lab)));
    // The old rsync's group must be gone (zombies aside: this machine's PID 1 may not reap).
    assert!(!mirrorpush_lab::group_alive(pgid));
    let v = status_json(&lab);
    let requests = v["modules"][0]["last_run"]["requests"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        requests.contains(&"(all)".into()) && requests.contains(&"updates".into()),
        "{requests:?}"
    );
}

#[test]
fn wait_mode_reports_the_run_result() {
    let lab = lab("wait");
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    assert!(lab.in_sync(0, "fedora"));

    // An upstream module that does not exist: rsync runs and fails.
    let text = lab
        .handler_toml(0, "")
        .replace(&lab.rsync_url("fedora"), &lab.rsync_url("missing"));
    lab.write_handler_config(0, &text).unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.starts_with("error: sync failed: rsync failed with exit code "),
        "{err}"
    );
    let v = status_json(&lab);
    assert_eq!(v["modules"][0]["last_run"]["ok"], false);
    assert_ne!(v["modules"][0]["last_run"]["rsync_exit"], 0);

    // The wall-clock timeout kills a slow rsync and says so.
    std::fs::write(
        lab.upstream_dir("fedora").join("big.iso"),
        vec![7u8; 2_000_000],
    )
    .unwrap();
    write_config(
        &lab,
        "rsync_args = [\"--bwlimit=100\"]\ntimeout = \"1s\"\n",
        None,
    );
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
}
