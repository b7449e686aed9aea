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
/// A file-list module synced twice: a baseline, and the null run that proves it.
fn list_baseline(lab: &Lab) {
    write_config(lab, LIST_CONFIG, None);
    common::publish_list(lab);
    synced(lab, "sync fedora");
    synced(lab, "sync fedora");
    assert_eq!(last_run(lab)["runs"][0]["kind"], "null");
}

/// New content upstream (`updates/fresh.rpm`) and a list published for it, then a sync under
/// the module's list settings plus `bound`.
fn fresh_content_under(lab: &Lab, bound: &str) {
    let fresh = lab.upstream_dir("fedora").join("updates/fresh.rpm");
    fs::write(&fresh, "fresh\n").unwrap();
    common::publish_list(lab);
    write_config(lab, &format!("{LIST_CONFIG}{bound}\n"), None);
    synced(lab, "sync fedora");
}

/// The last run was a plain rsync, and its result says `why`.
fn plain_because(lab: &Lab, why: &str) {
    let run = last_run(lab);
    let r = &run["runs"][0];
    assert_eq!(r["kind"], "full", "{run}");
    assert!(r["result"].as_str().unwrap().contains(why), "{run}");
}

/// `max_list_entries` bounds what planning a list may cost: past it the list is not planned and
/// the run is a plain rsync that says why.
#[test]
fn a_list_over_max_list_entries_is_not_planned_and_the_run_is_plain() {
    let lab = lab("wait");
    list_baseline(&lab);
    fresh_content_under(&lab, "max_list_entries = 3");
    plain_because(&lab, "more than 3 entries (the entry cap)");
    assert!(lab.mirrors[0]
        .dest("fedora")
        .join("updates/fresh.rpm")
        .exists());
}

#[test]
fn a_list_over_max_list_size_is_not_fetched_and_the_run_is_plain() {
    let lab = lab("wait");
    let state = lab.mirrors[0].state_dir.join("fedora");
    // A baseline from a list that fits.
    list_baseline(&lab);
    let baseline = fs::read(state.join("filelist.baseline")).unwrap();

    // The list grows past the bound (here: 100 bytes) with new content.
    fresh_content_under(&lab, "max_list_size = 100");
    plain_because(&lab, "larger than max_list_size (100 bytes)");
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

/// Names a file list can carry that are hostile to logs and parsers: control characters, an
/// escape sequence, a backslash, a carriage return, DEL, bytes that are not UTF-8. (Tabs and
/// newlines cannot be listed; the generator skips them, and only plain runs carry them.)
const ODD_NAMES: &[&[u8]] = &[
    b"back\\slash.rpm",
    b"ctl\x01.rpm",
    b"esc\x1b[31mred.rpm",
    b"cr\rname.rpm",
    b"del\x7f.rpm",
    b"raw\xff\xfe.rpm",
    b"tab\tname.rpm",
    b"nl\nname.rpm",
];

fn odd(dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// The attacker's seat: names with control characters and backslashes in a file list travel
/// by list (added, then removed), reach no log raw, and leave the next run a null run.
#[test]
fn control_characters_and_backslashes_in_list_paths_travel_and_never_reach_a_log_raw() {
    let lab = lab("wait");
    write_config(&lab, LIST_CONFIG, None);
    common::publish_list(&lab);
    synced(&lab, "sync fedora");
    let up = lab.upstream_dir("fedora").join("updates/odd");
    fs::create_dir(&up).unwrap();
    for n in ODD_NAMES {
        fs::write(odd(&up, n), n).unwrap();
    }
    common::publish_list(&lab);
    synced(&lab, "sync fedora");
    let run = last_run(&lab);
    assert_eq!(run["runs"][0]["kind"], "filelist", "{run}");
    // Every listable name arrived by list (the dir and 6 files); tab and newline did not.
    assert_eq!(run["runs"][0]["transferred"], 7, "{run}");
    let here = lab.mirrors[0].dest("fedora").join("updates/odd");
    for n in &ODD_NAMES[..6] {
        assert_eq!(fs::read(odd(&here, n)).unwrap(), *n);
    }
    // A plain run carries the two names no list can hold; the list-based runs leave them be.
    let (code, _, err) = common::local(&lab, &["sync", "--full", "fedora"]);
    assert_eq!(code, 0, "{err}");
    assert!(lab.in_sync(0, "fedora"));

    // Removed upstream: removed here by the list, the unlistable ones by the next plain run.
    for n in &ODD_NAMES[..3] {
        fs::remove_file(odd(&up, n)).unwrap();
    }
    common::publish_list(&lab);
    synced(&lab, "sync fedora updates");
    let run = last_run(&lab);
    assert_eq!(
        (
            run["runs"][0]["kind"].as_str(),
            run["runs"][0]["deleted"].as_u64()
        ),
        (Some("filelist"), Some(3)),
        "{run}"
    );
    assert!(lab.in_sync(0, "fedora"));
    synced(&lab, "sync fedora");
    assert_eq!(last_run(&lab)["runs"][0]["kind"], "null");

    // No log holds a raw control character (rsync escapes names as \#ooo, the handler as \xNN).
    for log in ["handler.log", "fedora/rsync.log"] {
        let bytes = fs::read(lab.mirrors[0].state_dir.join(log)).unwrap();
        let raw = bytes
            .iter()
            .position(|&b| (b < 0x20 && b != b'\n') || b == 0x7f);
        assert!(raw.is_none(), "{log}: raw byte at {raw:?}");
    }
}

struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            base.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dir = base.path().join("state");
        fs::create_dir(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0750"))
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(dir, base)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` until writes fail; remove the returned file to free it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    while f.write_all(&[0u8; 512]).is_ok() {}
    while f.write_all(&[0u8; 1]).is_ok() {}
    path
}

/// The attacker's seat: the state dir fills up while a file-list run fetches its list. The run
/// loses nothing (the list is not adopted half-written, the mirror is not left behind), and
/// once there is room again the next runs converge and end in a null run.
#[test]
fn a_full_state_dir_during_a_file_list_run_loses_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs for the state dir needs root");
        return;
    }
    let tmpfs = Tmpfs::mount("1m");
    let lab = lab("detach");
    lab.give_to_account(&tmpfs.0).unwrap();
    let gate = common::wrapper(&lab, true);
    write_config(&lab, LIST_CONFIG, Some(&gate.path));
    let old = format!(
        "state_dir = {:?}",
        lab.mirrors[0].state_dir.display().to_string()
    );
    let text = fs::read_to_string(&lab.mirrors[0].handler_config).unwrap();
    let state = tmpfs.0.clone();
    lab.write_handler_config(
        0,
        &text.replace(
            &old,
            &format!("state_dir = {:?}", state.display().to_string()),
        ),
    )
    .unwrap();
    let status = || {
        let mut cmd = lab.command_as_account(HANDLER);
        cmd.arg("--config")
            .arg(&lab.mirrors[0].handler_config)
            .args(["status", "--json"]);
        let (_, out, _) = common::run(cmd);
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_default()
    };
    let idle = || {
        fs::metadata(state.join("fedora/pending")).is_ok_and(|m| m.len() == 0)
            && !state.join("fedora/inflight").exists()
            && !common::lab_process_running(&lab, b"__run")
    };
    let sync_and_wait = |what: &str| {
        let (code, out, err) = ssh(&lab, "sync fedora");
        assert_eq!(code, 0, "{what}: {out} {err}");
        assert!(lab.wait_until(LONG, idle), "{what}: never idle");
    };
    common::publish_list(&lab);
    sync_and_wait("first");
    sync_and_wait("null");
    assert_eq!(
        status()["modules"][0]["last_run"]["runs"][0]["kind"],
        "null"
    );

    // New content; the run's first rsync (the list fetch) waits at the gate while the disk
    // fills.
    fs::write(
        lab.upstream_dir("fedora").join("updates/late.rpm"),
        "late\n",
    )
    .unwrap();
    common::publish_list(&lab);
    fs::remove_file(&gate.gate).unwrap();
    let _ = fs::remove_file(&gate.started);
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    assert!(lab.wait_until(LONG, || gate.started.exists()));
    let filler = fill(&state);
    fs::write(&gate.gate, "").unwrap();
    assert!(lab.wait_until(LONG, || !common::lab_process_running(&lab, b"__run")));
    let baseline = fs::read(state.join("fedora/filelist.baseline")).unwrap();
    assert!(
        !baseline.windows(8).any(|w| w == b"late.rpm"),
        "a list fetched into a full disk was adopted"
    );

    // Room again: the next trigger converges, and the one after is a null run.
    fs::remove_file(&filler).unwrap();
    sync_and_wait("after");
    assert!(lab.in_sync(0, "fedora"), "the mirror did not converge");
    sync_and_wait("null again");
    let last = status()["modules"][0]["last_run"].clone();
    assert_eq!(last["runs"][0]["kind"], "null", "{last}");
}

/// ENOSPC on `dest` in the middle of a file-list transfer: the run fails and says so, the
/// baseline stays (the list is not adopted for content that never arrived), and once there is
/// room the next trigger converges and the one after is null.
#[test]
fn a_full_dest_during_a_file_list_run_loses_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs for dest needs root");
        return;
    }
    // Mounted before the lab, whose sshd runs in a private mount namespace.
    let tmpfs = Tmpfs::mount("1m");
    let lab = lab("wait");
    lab.give_to_account(&tmpfs.0).unwrap();
    let dest = tmpfs.0.clone();
    let old = format!(
        "dest = {:?}",
        lab.mirrors[0].dest("fedora").display().to_string()
    );
    let text = lab.handler_toml(0, LIST_CONFIG);
    assert!(text.contains(&old));
    lab.write_handler_config(
        0,
        &text.replace(&old, &format!("dest = {:?}", dest.display().to_string())),
    )
    .unwrap();
    let up = lab.upstream_dir("fedora");
    let converged = || mirrorpush_lab::trees_equal(&up, &dest);
    common::publish_list(&lab);
    synced(&lab, "sync fedora");
    synced(&lab, "sync fedora");
    assert_eq!(last_run(&lab)["runs"][0]["kind"], "null");
    assert!(converged());
    let state = lab.mirrors[0].state_dir.join("fedora");
    let baseline = fs::read(state.join("filelist.baseline")).unwrap();

    // More than the disk holds arrives upstream, with a small file beside it.
    fs::write(up.join("updates/huge.iso"), vec![7u8; 2 << 20]).unwrap();
    fs::write(up.join("updates/small.rpm"), b"small\n").unwrap();
    common::publish_list(&lab);
    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "the run cannot have succeeded: {out} {err}");
    let run = last_run(&lab);
    assert_eq!(run["ok"], false, "{run}");
    assert_eq!(run["runs"][0]["kind"], "filelist", "{run}");
    // rsync's "error in file IO" (No space left on device).
    assert_eq!(run["runs"][0]["rsync_exit"], 11, "{run}");
    assert_eq!(
        fs::read(state.join("filelist.baseline")).unwrap(),
        baseline,
        "a list whose content did not arrive was adopted"
    );

    // Room again (the same tmpfs, grown): the next trigger converges, the one after is null.
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success(), "remount");
    synced(&lab, "sync fedora");
    assert!(converged(), "the mirror did not converge");
    synced(&lab, "sync fedora");
    assert_eq!(last_run(&lab)["runs"][0]["kind"], "null");
}

/// A state dir another local user can write in would let them forge the queue, the baseline or
/// a run's plan between two stages (a baseline naming the upstream's list byte for byte makes
/// every later run null; a delete list swapped after the count bypasses max_delete). The
/// handler refuses it (77) before it reads or writes anything there, says why in handler.log,
/// and `check` names it.
#[test]
fn a_state_dir_others_can_write_in_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let lab = lab("wait");
    synced(&lab, "sync fedora");
    let top = lab.mirrors[0].state_dir.clone();
    let module = top.join("fedora");
    let check = || {
        let mut cmd = lab.command_as_account(HANDLER);
        cmd.arg("--config")
            .arg(&lab.mirrors[0].handler_config)
            .arg("check");
        common::run(cmd)
    };
    for (dir, mode) in [(&module, 0o770), (&module, 0o757), (&top, 0o777)] {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
        let (code, out, err) = ssh(&lab, "sync fedora");
        assert_eq!(code, 77, "{} {mode:o}: {out} {err}", dir.display());
        assert!(err.contains("the state dir is not private"), "{err}");
        assert!(err.contains(&format!("(mode {mode:o})")), "{err}");
        let log = fs::read_to_string(top.join("handler.log")).unwrap();
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.contains("writable by others than this mirror's account"),
            "{last}"
        );
        if dir == &top {
            let (code, out, err) = check();
            assert_ne!(code, 0, "{out}");
            assert!(err.contains("writable by others"), "{out} {err}");
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).unwrap();
    }
    synced(&lab, "sync fedora");
}
