//! What a hostile upstream, a local user, a full disk and a root admin could do to a mirror, and
//! why they no longer can. Each test goes through the real lab (sshd, the handler as the
//! mirror's unprivileged account, rsync from a real daemon).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lab, local, ssh, wrapper, write_config, LONG};
use mirrorpush_lab::{Lab, LabOptions};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// Every path under `dir`, with its metadata, for "nothing was created" checks.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.uid()));
        }
    }
    out.sort();
    out
}

#[test]
fn the_upstream_cannot_choose_modes_owners_or_special_files() {
    let lab = lab("detach");
    let up = lab.upstream_dir("fedora");
    fs::copy("/usr/bin/id", up.join("suid-id")).unwrap();
    chmod(&up.join("suid-id"), 0o4755);
    fs::write(up.join("sgid"), "x").unwrap();
    chmod(&up.join("sgid"), 0o2755);
    fs::write(up.join("world-writable"), "x").unwrap();
    chmod(&up.join("world-writable"), 0o666);
    fs::write(up.join("private"), "x").unwrap();
    chmod(&up.join("private"), 0o600);
    fs::create_dir(up.join("open")).unwrap();
    chmod(&up.join("open"), 0o777);
    fs::create_dir(up.join("sticky")).unwrap();
    chmod(&up.join("sticky"), 0o1777);
    let fifo = std::ffi::CString::new(up.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    if is_root() {
        // A device node: /dev/null's numbers, served by the upstream.
        let dev =
            std::ffi::CString::new(up.join("devnull").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod(2) with a valid path, a char-device mode and a device number.
        let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(made, 0);
    }

    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    let dest = lab.mirrors[0].dest("fedora");
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)
        && dest.join("sticky").exists()));
    let v = common::status_json(&lab);
    assert_eq!(v["modules"][0]["last_run"]["ok"], true, "{v}");

    // The mirror's modes: no setuid/setgid/sticky bit, nothing group- or world-writable.
    assert_eq!(mode(&dest.join("suid-id")), 0o755);
    assert_eq!(mode(&dest.join("sgid")), 0o755);
    assert_eq!(mode(&dest.join("world-writable")), 0o644);
    assert_eq!(mode(&dest.join("private")), 0o644);
    assert_eq!(mode(&dest.join("open")), 0o755);
    assert_eq!(mode(&dest.join("sticky")), 0o755);
    // No FIFOs, sockets or devices.
    assert!(fs::symlink_metadata(dest.join("fifo")).is_err());
    assert!(fs::symlink_metadata(dest.join("devnull")).is_err());
    // Everything belongs to the mirror account, whoever owned it upstream.
    for (path, _, uid) in snapshot(&dest) {
        assert_eq!(uid, lab.uid, "{}", path.display());
    }
    // And a dir push normalises too.
    chmod(&up.join("releases/41"), 0o777);
    let (code, out, err) = local(&lab, &["sync", "fedora", "releases"]);
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    assert_eq!(mode(&dest.join("releases/41")), 0o755);
}

#[test]
fn a_dir_swapped_for_a_symlink_during_the_run_cannot_redirect_the_sync() {
    let lab = lab("detach");
    let w = wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let dest = lab.mirrors[0].dest("fedora");
    let outside = lab.root.join("outside");
    lab.create_dir_for_account(&outside).unwrap();
    fs::write(outside.join("precious"), "must survive").unwrap();
    fs::write(lab.upstream_dir("fedora").join("updates/new.rpm"), "new\n").unwrap();

    let (code, out, err) = ssh(&lab, "sync fedora updates");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    // rsync has started and waits at the gate: the handler checked and opened dest/updates.
    assert!(lab.wait_until(LONG, || w.started.exists()));
    fs::rename(dest.join("updates"), dest.join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("updates")).unwrap();
    fs::write(&w.gate, "").unwrap();
    assert!(lab.wait_until(LONG, || common::queue_idle(&lab)
        && !w.path.with_file_name("active").exists()));

    // rsync wrote into the directory that was checked, wherever it is now; nothing outside
    // dest was written or deleted (the run's --delete found "precious" no business of its).
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "the sync wrote outside dest"
    );
    assert_eq!(
        fs::read_to_string(outside.join("precious")).unwrap(),
        "must survive"
    );
    assert!(dest.join("moved/new.rpm").exists());
    assert!(dest.join("moved/41/x86_64/repodata/repomd.xml").exists());
}

#[test]
fn dirs_writable_by_others_or_through_files_are_not_permitted() {
    let lab = lab("detach");
    let (code, out, err) = local(&lab, &["sync", "fedora"]);
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    let dest = lab.mirrors[0].dest("fedora");

    // A component another local user could write (and so swap): refused, not synced.
    chmod(&dest.join("updates"), 0o777);
    let (code, _, err) = ssh(&lab, "sync fedora updates/41");
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("writable by others"), "{err}");
    chmod(&dest.join("updates"), 0o755);

    // A path through a file is not a state-dir problem (75): the request is not permitted.
    let (code, _, err) = ssh(&lab, "sync fedora README/x");
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert!(common::queue_idle(&lab));
    // The state files the handler writes are the account's own, 0640 (rsync.log included).
    let state = common::module_state(&lab);
    for f in ["rsync.log", "status.json", "results"] {
        assert_eq!(mode(&state.join(f)), 0o640, "{f}");
    }
}

#[test]
fn rsync_older_than_3_5_0_is_refused() {
    let lab = lab("detach");
    let fake = lab.root.join("rsync-3.4.1");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'rsync  version 3.4.1  protocol version 32'; exit 0;; esac\nexec {} \"$@\"\n",
            lab.rsync_bin.display()
        ),
    )
    .unwrap();
    chmod(&fake, 0o755);
    write_config(&lab, "", Some(&fake));
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("3.5.0 or newer is required"), "{err}");
    let (code, _, err) = local(&lab, &["check"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("rsync 3.4.1") && err.contains("3.5.0"),
        "{err}"
    );
    assert!(!lab.mirrors[0].dest("fedora").join("README").exists());
}

/// A small tmpfs (root only). Mounted before the lab starts: the lab's sshd runs in a private
/// mount namespace that sees only the mounts that existed when it started.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let base = tempfile::tempdir().unwrap();
        chmod(base.path(), 0o755);
        let dir = base.path().join("state");
        fs::create_dir(&dir).unwrap();
        let st = Command::new("mount")
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
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` until writes fail; the filler is removed to free it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let block = [0u8; 512];
    while f.write_all(&block).is_ok() {}
    for _ in 0..64 {
        let _ = f.write_all(&[0u8; 1]);
    }
    path
}

#[test]
fn a_queued_request_survives_a_full_disk() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs for the state dir needs root");
        return;
    }
    let tmpfs = Tmpfs::mount("64k");
    let lab = lab("detach");
    lab.give_to_account(&tmpfs.0).unwrap();
    let w = wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let old = format!(
        "state_dir = {:?}",
        lab.mirrors[0].state_dir.display().to_string()
    );
    let text = fs::read_to_string(&lab.mirrors[0].handler_config).unwrap();
    assert!(text.contains(&old));
    let state_dir = tmpfs.0.clone();
    let text = text.replace(
        &old,
        &format!("state_dir = {:?}", state_dir.display().to_string()),
    );
    lab.write_handler_config(0, &text).unwrap();
    // A run holds the module lock, so what follows is queued.
    let (code, out, err) = ssh(&lab, "sync fedora releases");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    assert!(lab.wait_until(LONG, || w.started.exists()));
    // Queue requests until the next one must start a new page of `pending`: then its write
    // into the full filesystem is partial, the torn line that used to swallow the next request.
    let a = "sync fedora releases/41/Everything/x86_64/os/Packages/b/bash-and-friends";
    let pending = state_dir.join("fedora/pending");
    let idle = || {
        fs::metadata(&pending).is_ok_and(|m| m.len() == 0)
            && !state_dir.join("fedora/inflight").exists()
    };
    let room = || 4096 - fs::metadata(&pending).map_or(0, |m| m.len()) % 4096;
    let mut i = 0;
    while room() >= 150 {
        let (code, out, err) = ssh(&lab, &format!("sync fedora development/d{i}"));
        assert_eq!((code, out.as_str()), (0, "queued"), "{err}");
        i += 1;
        assert!(i < 200);
    }
    let filler = fill(&state_dir);

    let (code, _, err) = ssh(&lab, a);
    assert_eq!(
        code, 75,
        "request A must fail while the disk is full: {err}"
    );
    fs::remove_file(&filler).unwrap();
    let late = lab.upstream_dir("fedora").join("updates/late.rpm");
    fs::write(&late, "queued after a disk-full error\n").unwrap();
    let (code, out, err) = ssh(&lab, "sync fedora updates");
    assert_eq!((code, out.as_str()), (0, "queued"), "{err}");

    fs::write(&w.gate, "").unwrap();
    let dest = lab.mirrors[0].dest("fedora");
    assert!(
        lab.wait_until(LONG, || idle() && dest.join("updates/late.rpm").exists()),
        "request B, answered 'queued', never ran"
    );
}

#[test]
fn root_is_refused_and_status_and_check_as_root_create_nothing() {
    if !is_root() {
        eprintln!("skipped: this test is about running as root");
        return;
    }
    let lab = lab("detach");
    let handler = env!("CARGO_BIN_EXE_mirrorpush-handler");
    let config = &lab.mirrors[0].handler_config;
    let state = &lab.mirrors[0].state_dir;
    let before = snapshot(state);
    let out = Command::new(handler)
        .arg("--config")
        .arg(config)
        .args(["sync", "fedora"])
        .env_remove("SSH_ORIGINAL_COMMAND")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to sync as root") && err.contains("runuser -u"),
        "{err}"
    );
    // The same over a forced command run as root.
    let out = Command::new(handler)
        .arg("--config")
        .arg(config)
        .env("SSH_ORIGINAL_COMMAND", "sync fedora")
        .env("SSH_CONNECTION", "127.0.0.1 4000 127.0.0.1 22")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    for args in [&["status"][..], &["status", "--json"], &["check"]] {
        let out = Command::new(handler)
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("SSH_ORIGINAL_COMMAND")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        snapshot(state),
        before,
        "root created or changed state files"
    );
    assert!(!lab.mirrors[0].dest("fedora").join("README").exists());
}

#[test]
fn planted_state_files_are_neither_followed_nor_trusted() {
    let lab = lab("detach");
    let state = common::module_state(&lab);
    lab.create_dir_for_account(&state).unwrap();
    // A symlink at rsync.log: the run must not write through it.
    let victim = lab.root.join("victim");
    fs::write(&victim, "untouched").unwrap();
    lab.give_to_account(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("rsync.log")).unwrap();
    // A pgid the handler did not write: an unrelated process of the same account.
    let mut bystander = lab.command_as_account("/bin/sleep");
    bystander.arg("120").process_group(0);
    use std::os::unix::process::CommandExt;
    let mut bystander = bystander.spawn().unwrap();
    let pid = bystander.id() as i32;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    fs::write(state.join("rsync.pgid"), format!("{pid} {start}\n")).unwrap();
    lab.give_to_account(&state.join("rsync.pgid")).unwrap();

    let (code, _, err) = local(&lab, &["sync", "fedora"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rsync.log"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a process group named by a planted rsync.pgid was killed"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    fs::remove_file(state.join("rsync.log")).unwrap();
    let (code, out, err) = local(&lab, &["sync", "fedora"]);
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
}

#[test]
fn queued_requests_survive_an_upgrade_of_the_binary_during_the_run() {
    // The handler runs from a copy that this test replaces mid-run, as a package upgrade does.
    let bin_dir = tempfile::Builder::new()
        .prefix("mirrorpush-bin-")
        .tempdir()
        .unwrap();
    chmod(bin_dir.path(), 0o755);
    let handler = bin_dir.path().join("mirrorpush-handler");
    fs::copy(env!("CARGO_BIN_EXE_mirrorpush-handler"), &handler).unwrap();
    let lab = Lab::start(LabOptions {
        handler_bin: handler.clone(),
        mode: "wait".into(),
        ..Default::default()
    })
    .unwrap();
    let w = wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let late = lab.upstream_dir("fedora").join("updates/late.rpm");

    std::thread::scope(|s| {
        let first = s.spawn(|| ssh(&lab, "sync fedora releases"));
        assert!(lab.wait_until(LONG, || w.started.exists()));
        fs::write(&late, "pushed during the run\n").unwrap();
        let second = s.spawn(|| ssh(&lab, "sync fedora updates"));
        assert!(lab.wait_until(LONG, || {
            common::status_json(&lab)["modules"][0]["pending"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        }));
        // The upgrade: the running binary's file is replaced by a new one...
        fs::remove_file(&handler).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_mirrorpush-handler"), &handler).unwrap();
        // ...and the runner dies: the waiters, started from the old binary, must start a new
        // runner, from the new file at the same path.
        let pid = common::runner_pid(&lab.mirrors[0].handler_config).expect("runner runs");
        // SAFETY: kill(2) on the runner found by its command line.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert!(
            lab.wait_until(LONG, || common::runner_pid(&lab.mirrors[0].handler_config)
                .is_some_and(|p| p != pid))
        );
        fs::write(&w.gate, "").unwrap();
        for h in [first, second] {
            let (code, out, err) = h.join().unwrap();
            assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
        }
    });
    assert!(lab.mirrors[0]
        .dest("fedora")
        .join("updates/late.rpm")
        .exists());
    assert!(common::queue_idle(&lab));
}

#[test]
fn more_than_64_distinct_dirs_run_as_one_full_sync() {
    let lab = lab("detach");
    let w = wrapper(&lab, false);
    write_config(&lab, "", Some(&w.path));
    let (code, _, err) = ssh(&lab, "sync fedora README-first");
    assert_eq!(code, 0, "{err}");
    assert!(lab.wait_until(LONG, || w.started.exists()));
    std::thread::scope(|s| {
        for t in 0..6 {
            let lab = &lab;
            s.spawn(move || {
                for i in (t..100).step_by(6) {
                    let (code, out, err) = ssh(lab, &format!("sync fedora releases/d{i}"));
                    assert_eq!((code, out.as_str()), (0, "queued"), "{err}");
                }
            });
        }
    });
    fs::write(&w.gate, "").unwrap();
    assert!(lab.wait_until(LONG, || lab.in_sync(0, "fedora")
        && common::queue_idle(&lab)));
    // The first run, then one full sync for the 100 dirs: not 100 rsyncs.
    let runs = fs::read_to_string(&w.runs).unwrap().lines().count();
    assert_eq!(runs, 2, "{runs} rsync runs");
    let v = common::status_json(&lab);
    let last = &v["modules"][0]["last_run"];
    assert_eq!(last["runs"][0]["target"], "(all)", "{last}");
    assert_eq!(last["requests_total"], 100);
}

#[test]
fn check_tests_what_a_sync_needs() {
    let lab = lab("detach");
    let (code, out, err) = local(&lab, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: 1 module(s) [fedora]"), "{out}");

    // A typo in the upstream module: the push would fail with rsync code 5.
    let text = lab
        .handler_toml(0, "")
        .replace(&lab.rsync_url("fedora"), &lab.rsync_url("fedroa"));
    lab.write_handler_config(0, &text).unwrap();
    let (code, _, err) = local(&lab, &["check"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("upstream rsync://") && err.contains("Unknown module 'fedroa'"),
        "{err}"
    );

    // A dest the account cannot write: the sync would fail with rsync code 23.
    write_config(&lab, "", None);
    let dest = lab.mirrors[0].dest("fedora");
    if is_root() {
        std::os::unix::fs::chown(&dest, Some(0), Some(0)).unwrap();
        let (code, _, err) = local(&lab, &["check"]);
        assert_eq!(code, 78, "{err}");
        assert!(err.contains("is not writable by this account"), "{err}");
        lab.give_to_account(&dest).unwrap();
    }

    // A config error refuses a push, and the refusal is still logged for the admin.
    write_config(&lab, "colour = \"blue\"\n", None);
    let (code, _, _) = ssh(&lab, "sync fedora");
    assert_eq!(code, 78);
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    let last = log.lines().last().unwrap_or("");
    assert!(
        last.contains("verdict=refused request=\"sync fedora\"")
            && last.contains("unknown key 'colour'"),
        "{log}"
    );
}
