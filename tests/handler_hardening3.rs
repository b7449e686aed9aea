//! Hardening, round 3 (config, rsync and the hub's pusher): what a hostile upstream or a
//! stalled downstream could do to a mirror, through the real lab (sshd forcing the handler for
//! the mirror's unprivileged account, rsync from a real daemon).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{lab, ssh, status_json, write_config, LONG};
use mirrorpush_lab::{Lab, LabOptions};

const HANDLER: &str = env!("CARGO_BIN_EXE_mirrorpush-handler");
const LIST_CONFIG: &str = "filelist = \"fullfiletimelist-fedora\"\n";

fn synced(lab: &Lab, request: &str) {
    let (code, out, err) = ssh(lab, request);
    assert_eq!((code, out.as_str()), (0, "synced"), "{request}: {err}");
}

fn last_run(lab: &Lab) -> serde_json::Value {
    status_json(lab)["modules"][0]["last_run"].clone()
}

/// Gives the upstream daemon a message of the day (rsync re-reads its config per connection).
fn set_motd(lab: &Lab, text: &str) {
    let dir = lab.root.join("upstream");
    let motd = dir.join("motd");
    fs::write(&motd, text).unwrap();
    let conf = dir.join("rsyncd.conf");
    let old = fs::read_to_string(&conf).unwrap();
    fs::write(&conf, format!("motd file = {}\n{old}", motd.display())).unwrap();
}

/// Issue 16 item 2: an upstream whose MOTD reads like rsync's itemized changes made every run
/// of an unchanged tree "change" something (and so start a hub's downstream push).
#[test]
fn an_upstream_motd_cannot_fake_a_change() {
    let lab = lab("wait");
    set_motd(
        &lab,
        ">f+++++++++ not/really/changed\n*deleting   not/really/deleted\ncd+++++++++ fake/\n",
    );
    synced(&lab, "sync fedora");
    let first = last_run(&lab);
    assert!(first["transferred"].as_u64().unwrap() > 0, "{first}");
    // rsync.log reads as rsync's own itemized output: no marker, and no MOTD in it.
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("fedora/rsync.log")).unwrap();
    assert!(log.lines().any(|l| l.starts_with(">f+++++++++ ")), "{log}");
    assert!(!log.contains('|') && !log.contains("not/really"), "{log}");

    // Nothing changed upstream: nothing changed here, whatever the MOTD says.
    synced(&lab, "sync fedora");
    let second = last_run(&lab);
    assert_eq!(
        (second["transferred"].as_u64(), second["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{second}"
    );
}

/// Issue 16 item 7: `rsync_args` is an allowlist; options that write or read outside dest
/// (which the old denylist let through) are refused with the config's file, line and option.
#[test]
fn rsync_args_outside_the_allowlist_are_refused_with_the_config_line() {
    let lab = lab("wait");
    for (arg, shown, why) in [
        (
            "--temp-dir=/tmp",
            "'--temp-dir' is not allowed",
            "write outside dest",
        ),
        (
            "-T/tmp",
            "'-T' (in '-T/tmp') is not allowed",
            "write outside dest",
        ),
        (
            "--backup-dir=/tmp/b",
            "'--backup-dir' is not allowed",
            "write outside dest",
        ),
        (
            "--partial-dir=/tmp/p",
            "'--partial-dir' is not allowed",
            "write outside dest",
        ),
        (
            "--compare-dest=/etc",
            "'--compare-dest' is not allowed",
            "read files outside dest",
        ),
        (
            "--copy-dest=/etc",
            "'--copy-dest' is not allowed",
            "read files outside dest",
        ),
        (
            "--link-dest=/etc",
            "'--link-dest' is not allowed",
            "read files outside dest",
        ),
        (
            "--filter=merge /etc/passwd",
            "'--filter=merge /etc/passwd'",
            "no merge",
        ),
    ] {
        write_config(
            &lab,
            &format!("rsync_args = [\n  \"--bwlimit=40M\",\n  {arg:?},\n]\n"),
            None,
        );
        let text = fs::read_to_string(&lab.mirrors[0].handler_config).unwrap();
        let line = text.lines().position(|l| l.contains(arg)).unwrap() + 1;
        // The client learns only that the config is broken; the admin's check says where.
        let (code, out, err) = ssh(&lab, "sync fedora");
        assert_eq!(code, 78, "{arg}: {out} {err}");
        let (code, _, err) = common::local(&lab, &["check"]);
        assert_eq!(code, 78, "{arg}: {err}");
        let expected = format!(
            "error: {} line {line}: 'rsync_args' in [modules.fedora]: {shown}",
            lab.mirrors[0].handler_config.display()
        );
        assert!(
            err.starts_with(&expected) && err.contains(why),
            "{arg}:\n{err}\nexpected: {expected}"
        );
    }
    // What admins use still loads and syncs.
    write_config(
        &lab,
        "rsync_args = [\"--bwlimit=40M\", \"-H\", \"--exclude=*.iso\", \"--no-motd\", \"--timeout=120\"]\n",
        None,
    );
    synced(&lab, "sync fedora");
    assert!(lab.in_sync(0, "fedora"));
}

/// Issue 16 item 5 (the fetch): a list larger than `max_list_size` is not fetched, and the run
/// is a plain rsync that brings the new content, never a null run against the last list.
#[test]
fn a_list_over_max_list_size_is_not_fetched_and_the_run_is_plain() {
    let lab = lab("wait");
    let state = lab.mirrors[0].state_dir.join("fedora");
    write_config(&lab, LIST_CONFIG, None);
    common::publish_list(&lab);
    // A baseline from a list that fits.
    synced(&lab, "sync fedora");
    synced(&lab, "sync fedora");
    assert_eq!(last_run(&lab)["runs"][0]["kind"], "null");
    let baseline = fs::read(state.join("filelist.baseline")).unwrap();

    // The list grows past the bound (here: 100 bytes) with new content.
    let fresh = lab.upstream_dir("fedora").join("updates/fresh.rpm");
    fs::write(&fresh, "fresh\n").unwrap();
    common::publish_list(&lab);
    write_config(&lab, &format!("{LIST_CONFIG}max_list_size = 100\n"), None);
    synced(&lab, "sync fedora");
    let run = last_run(&lab);
    let r = &run["runs"][0];
    assert_eq!(r["kind"], "full", "{run}");
    assert!(
        r["result"]
            .as_str()
            .unwrap()
            .contains("larger than max_list_size (100 bytes)"),
        "{run}"
    );
    assert!(lab.in_sync_except(0, "fedora", Path::new("fullfiletimelist-fedora")));
    assert!(lab.mirrors[0]
        .dest("fedora")
        .join("updates/fresh.rpm")
        .exists());
    // The oversized list was neither fetched nor adopted.
    assert_eq!(fs::read(state.join("filelist.baseline")).unwrap(), baseline);
    let fetched = fs::read(state.join("filelist.fetched")).unwrap();
    assert!(
        fetched.len()
            < fs::metadata(lab.upstream_dir("fedora").join("fullfiletimelist-fedora"))
                .unwrap()
                .len() as usize
    );
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("verdict=filelist-fetch-failed"), "{log}");
}

/// Processes of the lab running the hidden `__downstream` verb (not zombies).
fn pushers(lab: &Lab) -> usize {
    let root = lab.root.as_os_str().as_encoded_bytes().to_vec();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            let has = |w: &[u8]| cmd.windows(w.len()).any(|x| x == w);
            !zombie && has(&root) && has(b"__downstream")
        })
        .count()
}

fn log_count(lab: &Lab, i: usize, needle: &str) -> usize {
    fs::read_to_string(lab.mirrors[i].state_dir.join("handler.log"))
        .unwrap_or_default()
        .matches(needle)
        .count()
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

/// Issue 16 item 2: with one stalled leaf, 8 pushes to the hub left 9 `__downstream`
/// processes, each later running a full round. Now one pushes, one waits, the rest hand their
/// targets over and leave; once the leaf answers, everything queued goes out in one more round.
#[test]
fn a_stalled_leaf_holds_at_most_two_pushers_and_the_queue_goes_out_in_one_round() {
    let lab = Lab::start(LabOptions {
        mirrors: 2,
        handler_bin: HANDLER.into(),
        mode: "wait".into(),
        ..Default::default()
    })
    .unwrap();
    let registry = lab.downstream_registry(0, &[1], "10m").unwrap();
    lab.write_handler_config(
        0,
        &lab.handler_toml(
            0,
            &format!("downstream = {:?}\n", registry.display().to_string()),
        ),
    )
    .unwrap();
    // The leaf's rsync waits at a gate: the hub's first downstream push stalls there.
    let gate = common::wrapper(&lab, false);
    let leaf = lab.handler_toml(1, "").replace(
        &format!("rsync = {:?}", lab.rsync_bin.display().to_string()),
        &format!("rsync = {:?}", gate.path.display().to_string()),
    );
    lab.write_handler_config(1, &leaf).unwrap();
    let master = master_registry(&lab, 0);

    for round in 0..8 {
        // Something new each time, so each of the hub's runs changes something.
        fs::write(
            lab.upstream_dir("fedora").join(format!("new-{round}")),
            format!("{round}\n"),
        )
        .unwrap();
        let out = common::master_push(&master, &["fedora"]);
        assert!(out.contains("synced"), "{out}");
    }
    assert_eq!(log_count(&lab, 0, "verdict=run-ok"), 8);
    assert!(
        lab.wait_until(LONG, || gate.started.exists()),
        "the leaf never started"
    );
    assert!(
        lab.wait_until(Duration::from_secs(30), || pushers(&lab) <= 2),
        "{} pushers alive",
        pushers(&lab)
    );
    // The later pushes' targets wait in the queue, merged into one.
    let queued = lab.mirrors[0].state_dir.join("fedora/downstream.pending");
    assert_eq!(fs::read_to_string(&queued).unwrap(), "(all)\n");

    fs::write(&gate.gate, "").unwrap();
    assert!(lab.wait_until(LONG, || pushers(&lab) == 0
        && lab.in_sync(1, "fedora")
        && !queued.exists()));
    // The stalled round, then one round for everything queued meanwhile.
    assert_eq!(log_count(&lab, 0, "verdict=downstream-ok"), 2);
    let d = &status_json(&lab)["modules"][0]["downstream"];
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["pushes"][0]["mirrors"], 1, "{d}");
}
