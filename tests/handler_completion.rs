//! Completion you can trust, through the real lab: wait mode answers when the content is on
//! disk, indices land last, trace files are right, failures show in the next answer.

mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{lab, local, ssh, status_json, write_config, LONG};

#[test]
fn wait_mode_answers_synced_only_when_the_content_is_on_disk() {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    let dest = lab.mirrors[0].dest("fedora");
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");

    // A slow run (bandwidth limit), and ten pushes arriving while it runs: each answers only
    // when a run that covers it has ended, so its content is there when it answers.
    fs::write(up.join("big.iso"), vec![3u8; 600_000]).unwrap();
    write_config(&lab, "rsync_args = [\"--bwlimit=400\"]\n", None);
    std::thread::scope(|s| {
        let first = s.spawn(|| ssh(&lab, "sync fedora"));
        let pgid = common::module_state(&lab).join("rsync.pgid");
        assert!(lab.wait_until(LONG, || pgid.exists()));
        fs::write(up.join("updates/during.rpm"), "pushed during the run\n").unwrap();
        let waiters: Vec<_> = (0..10)
            .map(|i| {
                let lab = &lab;
                s.spawn(move || {
                    let r = ssh(
                        lab,
                        if i % 2 == 0 {
                            "sync fedora updates"
                        } else {
                            "sync fedora"
                        },
                    );
                    // Checked the moment the answer arrives.
                    (
                        r,
                        lab.mirrors[0]
                            .dest("fedora")
                            .join("updates/during.rpm")
                            .exists(),
                    )
                })
            })
            .collect();
        let (code, out, err) = first.join().unwrap();
        assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
        assert_eq!(fs::metadata(dest.join("big.iso")).unwrap().len(), 600_000);
        for w in waiters {
            let ((code, out, err), present) = w.join().unwrap();
            assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
            assert!(present, "answered synced before its content was on disk");
        }
    });
    // One runner executed every batch: the ten waiters were covered by one more run, not ten.
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    let runs = log.matches("verdict=run-ok").count();
    assert!((2..=4).contains(&runs), "{runs} runs\n{log}");
}

#[test]
fn a_master_that_hangs_up_never_cuts_the_sync_short() {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    fs::write(up.join("big.iso"), vec![5u8; 400_000]).unwrap();
    write_config(&lab, "rsync_args = [\"--bwlimit=300\"]\n", None);
    let mut master = lab.ssh(0, "sync fedora");
    master.stdout(std::process::Stdio::null());
    let mut master = master.spawn().unwrap();
    let pgid = common::module_state(&lab).join("rsync.pgid");
    assert!(lab.wait_until(LONG, || pgid.exists()));
    // The master gives up mid-wait (its timeout, Ctrl-C, a network cut).
    master.kill().unwrap();
    master.wait().unwrap();
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)
        && !pgid.exists()
        && lab.in_sync(0, "fedora")));
    let v = status_json(&lab);
    assert_eq!(v["modules"][0]["last_run"]["ok"], true, "{v}");
    // The waiter noticed nobody was left to answer and went away (the runner has ended too).
    let config = lab.mirrors[0]
        .handler_config
        .as_os_str()
        .as_encoded_bytes()
        .to_vec();
    assert!(lab.wait_until(LONG, || !common::lab_process_running(&lab, &config)));
}

#[test]
fn a_failing_run_is_an_error_in_wait_mode_and_said_in_the_next_detach_answer() {
    let lab = lab("wait");
    let text = lab
        .handler_toml(0, "")
        .replace(&lab.rsync_url("fedora"), &lab.rsync_url("missing"));
    lab.write_handler_config(0, &text).unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(
        err, "error: sync failed: rsync failed with exit code 5",
        "the master reads rsync's code from this line"
    );
    // The same module in detach mode: the next answer carries the last run's failure.
    lab.write_handler_config(0, &text.replace("mode = \"wait\"", "mode = \"detach\""))
        .unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("accepted (last run failed: rsync code 5 at 20"),
        "{out}"
    );
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)));
    // The upstream is fixed: this push still reports the failure before it, and runs fine.
    let text = lab
        .handler_toml(0, "")
        .replace("mode = \"wait\"", "mode = \"detach\"");
    lab.write_handler_config(0, &text).unwrap();
    let (_, out, _) = ssh(&lab, "sync fedora");
    assert!(out.starts_with("accepted (last run failed"), "{out}");
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)));
    // Once a run succeeds, the answer is plain again.
    let (_, out, _) = ssh(&lab, "sync fedora");
    assert_eq!(out, "accepted");
}

/// A package repository: packages, and an index naming every package.
fn publish(up: &std::path::Path, packages: &[String]) {
    fs::create_dir_all(up.join("repo/Packages")).unwrap();
    fs::create_dir_all(up.join("repo/repodata")).unwrap();
    for p in packages {
        let path = up.join("repo/Packages").join(p);
        if !path.exists() {
            fs::write(path, vec![b'p'; 60_000]).unwrap();
        }
    }
    for e in fs::read_dir(up.join("repo/Packages")).unwrap().flatten() {
        if !packages.contains(&e.file_name().to_string_lossy().into_owned()) {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let index = packages.join("\n") + "\n";
    let tmp = up.join("repo/repodata/.index.tmp");
    fs::write(&tmp, index).unwrap();
    fs::rename(tmp, up.join("repo/repodata/index.xml")).unwrap();
}

#[test]
fn with_last_the_index_never_names_a_package_the_mirror_lacks() {
    two_stage(false);
}

#[test]
fn with_last_and_a_file_list_the_index_still_lands_last() {
    two_stage(true);
}

/// A dir push of a repository whose packages and index change, sampled while it runs; with
/// `filelist`, a file-list run (the changed entries `last` matches go in the second pass).
fn two_stage(filelist: bool) {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    let dest = lab.mirrors[0].dest("fedora");
    let list = if filelist {
        "filelist = \"fullfiletimelist-fedora\"\n"
    } else {
        ""
    };
    let round1: Vec<String> = (0..6).map(|i| format!("old-{i}.rpm")).collect();
    publish(&up, &round1);
    if filelist {
        common::publish_list(&lab);
        // The first file-list run is plain and makes the baseline.
        write_config(&lab, list, None);
        let (code, _, err) = ssh(&lab, "sync fedora");
        assert_eq!(code, 0, "{err}");
    }
    write_config(&lab, &format!("{list}last = [\"repodata/\"]\n"), None);
    let (code, out, err) = ssh(&lab, "sync fedora repo");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");

    // Round 2: three packages replaced, three added; a slow link so the run takes seconds.
    let mut round2: Vec<String> = (3..6).map(|i| format!("old-{i}.rpm")).collect();
    round2.extend((0..6).map(|i| format!("new-{i}.rpm")));
    publish(&up, &round2);
    if filelist {
        common::publish_list(&lab);
    }
    write_config(
        &lab,
        &format!("{list}last = [\"repodata/\"]\nrsync_args = [\"--bwlimit=600\"]\n"),
        None,
    );
    let stop = AtomicBool::new(false);
    let samples = AtomicUsize::new(0);
    let index = dest.join("repo/repodata/index.xml");
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut violations = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(before) = fs::read_to_string(&index) else {
                    continue;
                };
                let missing: Vec<String> = before
                    .lines()
                    .filter(|p| !dest.join("repo/Packages").join(p).exists())
                    .map(str::to_owned)
                    .collect();
                // Only a sample taken while the index stood still counts.
                if fs::read_to_string(&index).is_ok_and(|after| after == before) {
                    samples.fetch_add(1, Ordering::Relaxed);
                    if !missing.is_empty() {
                        violations.push(missing);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            violations
        });
        let (code, out, err) = ssh(&lab, "sync fedora repo");
        stop.store(true, Ordering::Relaxed);
        assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
        let violations = sampler.join().unwrap();
        assert!(
            violations.is_empty(),
            "index named missing packages: {violations:?}"
        );
    });
    assert!(samples.load(Ordering::Relaxed) > 20);
    assert!(lab.in_sync(0, "fedora") || dest.join("repo/Packages/new-5.rpm").exists());
    assert!(
        !dest.join("repo/Packages/old-0.rpm").exists(),
        "deletes ran"
    );
    assert_eq!(
        fs::read_to_string(&index).unwrap(),
        fs::read_to_string(up.join("repo/repodata/index.xml")).unwrap()
    );
    let run = &status_json(&lab)["modules"][0]["last_run"]["runs"][0];
    let kind = if filelist { "filelist" } else { "full" };
    assert_eq!(run["kind"], kind, "{run}");
}

#[test]
fn trace_files_follow_good_full_runs_only_and_survive_deletes() {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    let dest = lab.mirrors[0].dest("fedora");
    fs::create_dir_all(up.join("project/trace")).unwrap();
    fs::write(
        up.join("project/trace/master"),
        "Tue Nov 24 08:00:00 UTC 2026\nDate: Tue, 24 Nov 2026 08:00:00 +0000\nArchive serial: 2026112401\n",
    )
    .unwrap();
    // An upstream file at our trace's path must neither replace ours nor be deleted by rsync.
    fs::write(
        up.join("project/trace/mirror1.example.net"),
        "upstream's own\n",
    )
    .unwrap();
    write_config(
        &lab,
        "trace = \"project/trace/mirror1.example.net\"\nlastsync = \"lastsync\"\n",
        None,
    );
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    let trace_path = dest.join("project/trace/mirror1.example.net");
    let trace = fs::read_to_string(&trace_path).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    // First line: `date -u` in the POSIX locale.
    let first: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(first.len(), 6, "{}", lines[0]);
    assert_eq!(first[4], "UTC");
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in\n{trace}"))
            .to_owned()
    };
    assert!(field("Date").ends_with("+0000"));
    assert!(field("Date-Started").ends_with("+0000"));
    assert_eq!(field("Archive serial"), "2026112401");
    assert!(field("Creator").starts_with("mirrorpush "));
    assert!(!field("Running on host").is_empty());
    assert_eq!(field("Upstream-mirror"), "127.0.0.1");
    assert_eq!(field("Trigger"), "ssh");
    assert!(
        field("Total bytes received in rsync")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    field("Total time spent in rsync").parse::<u64>().unwrap();
    let lastsync: u64 = fs::read_to_string(dest.join("lastsync"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(lastsync >= before);
    let v = status_json(&lab);
    assert_eq!(v["modules"][0]["last_run"]["trace_written"], true);

    // A dir run leaves the trace alone.
    let (code, _, err) = ssh(&lab, "sync fedora updates");
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(&trace_path).unwrap(), trace);

    // So does a failed run.
    let text = fs::read_to_string(&lab.mirrors[0].handler_config)
        .unwrap()
        .replace(&lab.rsync_url("fedora"), &lab.rsync_url("missing"));
    lab.write_handler_config(0, &text).unwrap();
    assert_eq!(ssh(&lab, "sync fedora").0, 1);
    assert_eq!(fs::read_to_string(&trace_path).unwrap(), trace);

    // The next good run deletes what left upstream, never the trace files.
    write_config(
        &lab,
        "trace = \"project/trace/mirror1.example.net\"\nlastsync = \"lastsync\"\n",
        None,
    );
    fs::remove_file(up.join("project/trace/mirror1.example.net")).unwrap();
    fs::remove_dir_all(up.join("development")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _, err) = local(&lab, &["sync", "fedora"]);
    assert_eq!(code, 0, "{err}");
    assert!(!dest.join("development").exists());
    let again = fs::read_to_string(&trace_path).unwrap();
    assert_ne!(again, trace, "a good full run rewrites the trace");
    assert!(again.contains("Trigger: cron"), "{again}");
    assert!(dest.join("lastsync").exists());
}

#[test]
fn a_dir_push_for_a_dir_gone_upstream_removes_it_here() {
    let lab = lab("wait");
    let up = lab.upstream_dir("fedora");
    let dest = lab.mirrors[0].dest("fedora");
    assert_eq!(ssh(&lab, "sync fedora").0, 0);
    assert!(dest.join("updates/41/x86_64/Packages").exists());
    fs::remove_dir_all(up.join("updates/41")).unwrap();
    // Removing it would delete more than max_delete entries: refused, nothing deleted.
    write_config(&lab, "max_delete = 3\n", None);
    let (code, _, err) = ssh(&lab, "sync fedora updates/41");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("max_delete"), "{err}");
    assert!(dest
        .join("updates/41/x86_64/Packages/o/openssl-3.2.rpm")
        .exists());
    write_config(&lab, "", None);
    let (code, out, err) = ssh(&lab, "sync fedora updates/41");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    assert!(!dest.join("updates/41").exists());
    assert!(dest.join("updates").exists());
    let v = status_json(&lab);
    let run = &v["modules"][0]["last_run"]["runs"][0];
    assert_eq!(run["kind"], "removed", "{v}");
    assert!(run["deleted"].as_u64().unwrap() >= 5, "{v}");
    // A dir that never existed on either side: nothing to remove, nothing left behind.
    let (code, out, err) = ssh(&lab, "sync fedora never/was/here");
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    assert!(!dest.join("never").exists());
    assert!(lab.in_sync(0, "fedora"));
}

#[test]
fn stage_two_starts_after_stage_one_has_synced() {
    let lab = mirrorpush_lab::Lab::start(mirrorpush_lab::LabOptions {
        mirrors: 2,
        handler_bin: env!("CARGO_BIN_EXE_mirrorpush-handler").into(),
        mode: "wait".into(),
        ..Default::default()
    })
    .unwrap();
    // Stage 1: a hub in wait mode with a slow link; stage 2: a leaf in detach mode.
    fs::write(
        lab.upstream_dir("fedora").join("big.iso"),
        vec![9u8; 300_000],
    )
    .unwrap();
    lab.write_handler_config(
        0,
        &lab.handler_toml(0, "rsync_args = [\"--bwlimit=300\"]\n"),
    )
    .unwrap();
    lab.write_handler_config(
        1,
        &lab.handler_toml(1, "")
            .replace("mode = \"wait\"", "mode = \"detach\""),
    )
    .unwrap();
    let registry = lab.root.join("staged.toml");
    fs::write(
        &registry,
        lab.registry_toml("")
            .replace("name = \"mirror2\"\n", "name = \"mirror2\"\nstage = 2\n"),
    )
    .unwrap();
    let text = common::master_push(&registry, &["--json", "fedora"]);
    assert!(text.contains("\"mirror\":\"mirror1\""), "{text}");
    // When stage 2's request reached its mirror, stage 1's run had ended (content on disk).
    let hub_end = common::status_json_of(&lab, 0)["modules"][0]["last_run"]["end"]
        .as_str()
        .unwrap()
        .to_owned();
    let leaf_log = fs::read_to_string(lab.mirrors[1].state_dir.join("handler.log")).unwrap();
    let leaf_request = leaf_log
        .lines()
        .find(|l| l.contains("verdict=accepted"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        leaf_request >= hub_end,
        "leaf asked at {leaf_request}, hub synced at {hub_end}"
    );
    assert_eq!(
        fs::metadata(lab.mirrors[0].dest("fedora").join("big.iso"))
            .unwrap()
            .len(),
        300_000
    );
}
