//! Tiered networks through the real lab: a hub passes the push on to its own downstream mirrors,
//! which pull from the hub; nothing new stops at the hub; a cycle ends.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::LONG;
use mirrorpush_lab::{Lab, LabOptions};

const HANDLER: &str = env!("CARGO_BIN_EXE_mirrorpush-handler");

fn start(mirrors: usize, mode: &str) -> Lab {
    Lab::start(LabOptions {
        mirrors,
        handler_bin: HANDLER.into(),
        mode: mode.into(),
        ..Default::default()
    })
    .unwrap()
}

/// Mirror `from`'s downstream registry of mirrors `to` (see `Lab::downstream_registry`).
fn downstream_registry(lab: &Lab, from: usize, to: &[usize]) -> PathBuf {
    lab.downstream_registry(from, to, "1m").unwrap()
}

/// A master registry naming only mirror `i`.
fn master_registry(lab: &Lab, i: usize) -> PathBuf {
    let text = lab.registry_toml("");
    let (head, _) = text.split_once("\n[[mirror]]").unwrap();
    let m = &lab.mirrors[i];
    let path = lab.root.join(format!("master-{}.toml", m.name));
    fs::write(
        &path,
        format!(
            "{head}\n[[mirror]]\nname = {:?}\nhost = \"127.0.0.1\"\nport = {}\nmodules = [\"fedora\"]\n",
            m.name, m.port
        ),
    )
    .unwrap();
    path
}

fn push(registry: &Path) -> String {
    common::master_push(registry, &["fedora"])
}

/// Client runs a daemon served for `module`, from its log.
fn served(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .matches("rsync on fedora/ from")
        .count()
}

/// Neither a runner nor a downstream pusher of the lab is running, and nothing is queued.
fn quiet(lab: &Lab) -> bool {
    let busy = common::lab_process_running(lab, b"__run")
        || common::lab_process_running(lab, b"__downstream");
    !busy
        && lab.mirrors.iter().all(|m| {
            let s = m.state_dir.join("fedora");
            fs::metadata(s.join("pending")).map_or(true, |p| p.len() == 0)
                && !s.join("inflight").exists()
        })
}

fn runs(lab: &Lab, i: usize) -> usize {
    fs::read_to_string(lab.mirrors[i].state_dir.join("handler.log"))
        .unwrap_or_default()
        .matches("verdict=run-ok")
        .count()
}

#[test]
fn a_hub_passes_the_push_to_leaves_that_pull_from_it() {
    let mut lab = start(3, "wait");
    let hub_tree = lab.mirrors[0].dest("fedora");
    let hub_port = lab.serve("hub", &[("fedora".into(), hub_tree)]).unwrap();
    let hub_log = lab.root.join("hub").join("rsyncd.log");
    let registry = downstream_registry(&lab, 0, &[1, 2]);
    lab.write_handler_config(
        0,
        &lab.handler_toml(
            0,
            &format!("downstream = {:?}\n", registry.display().to_string()),
        ),
    )
    .unwrap();
    let from_hub = format!("rsync://127.0.0.1:{hub_port}/fedora/");
    for i in [1, 2] {
        let text = lab
            .handler_toml(i, "")
            .replace(&lab.rsync_url("fedora"), &from_hub);
        lab.write_handler_config(i, &text).unwrap();
    }
    let master = master_registry(&lab, 0);

    // One push to the hub brings the origin's content to the leaves.
    let out = push(&master);
    assert!(out.contains("synced"), "{out}");
    assert!(
        lab.wait_until(LONG, || lab.in_sync(1, "fedora")
            && lab.in_sync(2, "fedora")
            && quiet(&lab)),
        "leaves not in sync"
    );
    // The origin served the hub once; the leaves pulled from the hub.
    assert_eq!(served(&lab.upstream_log()), 1);
    assert_eq!(served(&hub_log), 2);
    let hub = common::status_json_of(&lab, 0);
    let d = &hub["modules"][0]["downstream"];
    assert_eq!(d["ok"], true, "{hub}");
    assert_eq!(d["pushes"][0]["mirrors"], 2, "{hub}");
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=downstream-ok"), "{log}");
    assert_eq!(
        common::status_json_of(&lab, 1)["modules"][0]["last_run"]["keys"][0],
        "mirror1"
    );

    // Nothing new: the push reaches the hub and stops there.
    let before = d["start"].clone();
    let out = push(&master);
    assert!(out.contains("synced"), "{out}");
    assert!(lab.wait_until(LONG, || quiet(&lab)));
    std::thread::sleep(Duration::from_millis(500));
    assert!(quiet(&lab));
    assert_eq!(served(&lab.upstream_log()), 2);
    assert_eq!(
        served(&hub_log),
        2,
        "a push with nothing new went past the hub"
    );
    assert_eq!(
        common::status_json_of(&lab, 0)["modules"][0]["downstream"]["start"],
        before
    );
    let last = &common::status_json_of(&lab, 0)["modules"][0]["last_run"];
    assert_eq!(last["transferred"], 0, "{last}");

    // New content upstream: it travels on again, as a dir push where the push named a dir.
    fs::write(
        lab.upstream_dir("fedora").join("updates/fresh.rpm"),
        "fresh\n",
    )
    .unwrap();
    common::master_push(&master, &["fedora", "updates"]);
    assert!(lab.wait_until(LONG, || lab.in_sync(1, "fedora")
        && lab.in_sync(2, "fedora")
        && quiet(&lab)));
    let leaf = common::status_json_of(&lab, 1);
    assert_eq!(
        leaf["modules"][0]["last_run"]["requests"][0], "updates",
        "{leaf}"
    );
}

#[test]
fn a_downstream_cycle_ends_after_a_bounded_number_of_runs() {
    let lab = start(2, "wait");
    let to_b = downstream_registry(&lab, 0, &[1]);
    let to_a = downstream_registry(&lab, 1, &[0]);
    for (i, reg) in [(0, &to_b), (1, &to_a)] {
        lab.write_handler_config(
            i,
            &lab.handler_toml(
                i,
                &format!("downstream = {:?}\n", reg.display().to_string()),
            ),
        )
        .unwrap();
    }
    push(&master_registry(&lab, 0));
    // A changed, so it pushed B; B changed, so it pushed A; A had nothing new: the end.
    assert!(lab.wait_until(LONG, || lab.in_sync(1, "fedora")
        && runs(&lab, 0) >= 2
        && quiet(&lab)));
    std::thread::sleep(Duration::from_secs(2));
    assert!(quiet(&lab));
    assert_eq!((runs(&lab, 0), runs(&lab, 1)), (2, 1));
}

#[test]
fn check_validates_the_downstream_registry() {
    let lab = start(2, "detach");
    let registry = downstream_registry(&lab, 0, &[1]);
    let check = |lab: &Lab| {
        let mut cmd = lab.command_as_account(HANDLER);
        cmd.arg("--config")
            .arg(&lab.mirrors[0].handler_config)
            .arg("check");
        common::run(cmd)
    };
    lab.write_handler_config(
        0,
        &lab.handler_toml(
            0,
            &format!("downstream = {:?}\n", registry.display().to_string()),
        ),
    )
    .unwrap();
    let (code, out, err) = check(&lab);
    assert_eq!(code, 0, "{out} {err}");
    // A downstream mirror without a known host key: the hub's check says so.
    fs::write(registry.with_file_name("known_hosts"), "").unwrap();
    let (code, _, err) = check(&lab);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("downstream registry") && err.contains("host key"),
        "{err}"
    );
}

#[test]
fn with_file_lists_a_hub_passes_dir_pushes_on_and_leaves_fetch_its_list() {
    let mut lab = start(3, "wait");
    let hub_port = lab
        .serve("hub", &[("fedora".into(), lab.mirrors[0].dest("fedora"))])
        .unwrap();
    let registry = downstream_registry(&lab, 0, &[1, 2]);
    let list = "filelist = \"fullfiletimelist-fedora\"\n";
    lab.write_handler_config(
        0,
        &lab.handler_toml(
            0,
            &format!("{list}downstream = {:?}\n", registry.display().to_string()),
        ),
    )
    .unwrap();
    let from_hub = format!("rsync://127.0.0.1:{hub_port}/fedora/");
    for i in [1, 2] {
        let text = lab
            .handler_toml(i, list)
            .replace(&lab.rsync_url("fedora"), &from_hub);
        lab.write_handler_config(i, &text).unwrap();
    }
    let publish = common::publish_list;
    publish(&lab);
    let master = master_registry(&lab, 0);
    push(&master);
    assert!(lab.wait_until(LONG, || lab.in_sync(1, "fedora")
        && lab.in_sync(2, "fedora")
        && quiet(&lab)));

    // A publish in one dir, pushed as a dir push: hub and leaves move only that dir, by list.
    fs::write(
        lab.upstream_dir("fedora").join("updates/41/fresh.rpm"),
        "fresh\n",
    )
    .unwrap();
    publish(&lab);
    common::master_push(&master, &["fedora", "updates"]);
    for i in [1, 2] {
        let fresh = lab.mirrors[i].dest("fedora").join("updates/41/fresh.rpm");
        assert!(
            lab.wait_until(LONG, || fresh.exists() && quiet(&lab)),
            "leaf {i}"
        );
        let leaf = common::status_json_of(&lab, i);
        let run = &leaf["modules"][0]["last_run"]["runs"][0];
        assert_eq!(
            (run["kind"].as_str(), run["target"].as_str()),
            (Some("filelist"), Some("updates")),
            "{leaf}"
        );
        assert_eq!(run["transferred"], 1, "{leaf}");
    }
    // The hub published what it carries: the leaves' trees and lists match the origin's.
    assert!(lab.in_sync(0, "fedora") && lab.in_sync(1, "fedora") && lab.in_sync(2, "fedora"));
}

/// A hub's runner killed with -9 after its transfer, before it passed the push on: the redone
/// batch changes nothing, and the leaves are pushed all the same.
#[test]
fn a_hub_killed_after_its_transfer_still_pushes_its_leaves() {
    let mut lab = start(2, "wait");
    let hub_tree = lab.mirrors[0].dest("fedora");
    let hub_port = lab.serve("hub", &[("fedora".into(), hub_tree)]).unwrap();
    let registry = downstream_registry(&lab, 0, &[1]);
    // The hub's rsync: the first sync transfers, then hangs until the runner is killed.
    let dir = lab.root.join("hold");
    lab.create_dir_for_account(&dir).unwrap();
    let wrapper = dir.join("rsync");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {rsync} --version;; esac\n\
             {rsync} \"$@\"; rc=$?\n\
             if [ ! -e {held} ]; then touch {held}; while :; do sleep 1; done; fi\n\
             exit $rc\n",
            rsync = lab.rsync_bin.display(),
            held = dir.join("held").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let hub_text = lab
        .handler_toml(
            0,
            &format!("downstream = {:?}\n", registry.display().to_string()),
        )
        .replace(
            &format!("rsync = {:?}", lab.rsync_bin.display().to_string()),
            &format!("rsync = {:?}", wrapper.display().to_string()),
        );
    lab.write_handler_config(0, &hub_text).unwrap();
    let from_hub = format!("rsync://127.0.0.1:{hub_port}/fedora/");
    let leaf = lab
        .handler_toml(1, "")
        .replace(&lab.rsync_url("fedora"), &from_hub);
    lab.write_handler_config(1, &leaf).unwrap();

    let mut session = lab.ssh(0, "sync fedora").spawn().unwrap();
    assert!(lab.wait_until(LONG, || dir.join("held").exists()));
    assert!(lab.in_sync(0, "fedora"), "the transfer happened");
    let runner = common::runner_pid(&lab.mirrors[0].handler_config).expect("a runner");
    // SAFETY: kill(2) on the hub's runner, found by its command line.
    unsafe { libc::kill(runner, libc::SIGKILL) };
    // The waiting session starts a new runner; its batch changes nothing, yet the leaf follows.
    assert!(
        lab.wait_until(LONG, || lab.in_sync(1, "fedora") && quiet(&lab)),
        "the leaf never learnt of the change"
    );
    assert!(session.wait().unwrap().success());
    let hub = common::status_json_of(&lab, 0);
    assert_eq!(hub["modules"][0]["last_run"]["transferred"], 0, "{hub}");
    assert_eq!(hub["modules"][0]["downstream"]["ok"], true, "{hub}");
}
