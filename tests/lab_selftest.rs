//! The lab itself: real sshd forcing the configured command, real rsync daemon serving upstream.
//! A stand-in forced command (a shell script) keeps this test independent of the handler.

use mirrorpush_lab::{Lab, LabOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A stand-in forced command: an executable shell script.
fn forced_command(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn lab_serves_upstream_and_forces_the_command_over_real_sshd() {
    let scripts = tempfile::tempdir().unwrap();
    let echo = forced_command(
        scripts.path(),
        "echo-request",
        "#!/bin/sh\nprintf 'got:%s' \"$SSH_ORIGINAL_COMMAND\"\n",
    );
    let lab = Lab::start(LabOptions {
        mirrors: 2,
        handler_bin: echo,
        ..Default::default()
    })
    .unwrap();

    for i in 0..2 {
        let out = lab.ssh(i, "sync fedora; id").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The forced command ran instead of the client's command, which arrives only as data.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got:sync fedora; id");
    }

    let dest = lab.mirrors[0].dest("fedora");
    let status = Command::new(&lab.rsync_bin)
        .args(["-a", "--"])
        .arg(lab.rsync_url("fedora"))
        .arg(format!("{}/", dest.display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(lab.in_sync(0, "fedora"));
    assert!(!lab.in_sync(1, "fedora"));

    let registry = std::fs::read_to_string(&lab.registry).unwrap();
    assert!(registry.contains(&format!("port = {}", lab.mirrors[1].port)));
    let known_hosts = std::fs::read_to_string(&lab.known_hosts).unwrap();
    assert_eq!(known_hosts.lines().count(), 2);
}

#[test]
fn lab_stops_every_process_it_started() {
    // A forced command that leaves a detached process behind, as the handler's runner does.
    let scripts = tempfile::tempdir().unwrap();
    let sleeper = forced_command(
        scripts.path(),
        "sleeper",
        "#!/bin/sh\nsetsid sleep 300 \"$2\" </dev/null >/dev/null 2>&1 &\necho started\n",
    );
    let lab = Lab::start(LabOptions {
        handler_bin: sleeper,
        ..Default::default()
    })
    .unwrap();
    let out = lab.ssh(0, "sync fedora").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "started");
    let root = lab.root.clone();
    let running = |pattern: &std::path::Path| {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(pattern.as_os_str())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(
        lab.wait_until(std::time::Duration::from_secs(10), || !running(&root)
            .is_empty())
    );
    let port = lab.mirrors[0].port;
    let user = lab.user.clone();
    let created = unsafe { libc::geteuid() } == 0;
    drop(lab);
    assert!(!root.exists());
    if created {
        let known = Command::new("id").arg(&user).output().unwrap();
        assert!(!known.status.success(), "account {user} left behind");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(running(&root), "", "processes left behind");
}

#[test]
fn handlers_run_with_read_only_system_dirs_when_root() {
    let scripts = tempfile::tempdir().unwrap();
    let probe = forced_command(scripts.path(), "probe", "#!/bin/sh\nif touch /etc/mirrorpush-lab-probe 2>/dev/null; then rm -f /etc/mirrorpush-lab-probe; echo writable; else echo read-only; fi\n\
         touch \"$(dirname \"$2\")/state/lab-writable\" && echo lab-ok\nid -un\n");
    let lab = Lab::start(LabOptions {
        handler_bin: probe,
        ..Default::default()
    })
    .unwrap();
    let out = lab.ssh(0, "sync fedora").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root {
        // As root the mirrors log in as the lab's own unprivileged account, never as root.
        assert_eq!(text, format!("read-only\nlab-ok\n{}\n", lab.user));
        assert!(lab.user.starts_with("mpl-"), "{}", lab.user);
        assert_ne!(lab.uid, 0);
    } else {
        // Without root there is no mount namespace, and /etc is not ours to write anyway.
        assert!(text.contains("lab-ok\n"), "{text}");
    }
    assert!(lab.mirrors[0].state_dir.join("lab-writable").exists());
}
