//! The handler through real sshd: what it accepts, what it refuses, and with which exit code.

mod common;

use common::{lab, local, ssh, write_config, LONG};

#[test]
fn dir_sync_moves_only_that_dir_then_full_sync_matches_upstream() {
    let lab = lab("detach");
    let dest = lab.mirrors[0].dest("fedora");
    let (code, out, err) = ssh(&lab, "sync fedora releases/41");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    let bash = dest.join("releases/41/Everything/x86_64/os/Packages/b/bash-5.2.rpm");
    assert!(lab.wait_until(LONG, || bash.exists() && common::queue_idle(&lab)));
    assert!(!dest.join("README").exists());
    assert!(!dest.join("updates").exists());
    assert!(!dest.join("development").exists());

    let (code, out, err) = ssh(&lab, "sync fedora");
    assert_eq!((code, out.as_str()), (0, "accepted"), "{err}");
    assert!(lab.wait_until(LONG, || lab.in_sync(0, "fedora")));

    // The handler log names both requests with the client's address and the key label.
    let log = std::fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.contains("client=\"127.0.0.1 "), "{log}");
    assert!(
        log.contains("key=\"lab\" verdict=accepted request=\"sync fedora releases/41\""),
        "{log}"
    );
}

#[test]
fn unknown_module_dirs_not_allowed_and_symlinks_are_not_permitted() {
    let lab = lab("detach");
    let (code, _, err) = ssh(&lab, "sync nosuch");
    assert_eq!(code, 77, "{err}");
    assert_eq!(err, "error: unknown module 'nosuch'");

    let dest = lab.mirrors[0].dest("fedora");
    let elsewhere = lab.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("updates")).unwrap();
    for req in ["sync fedora updates", "sync fedora updates/41/x86_64"] {
        let (code, _, err) = ssh(&lab, req);
        assert_eq!(code, 77, "{req}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("symlink"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    write_config(&lab, "allow_dirs = false\n", None);
    let (code, _, err) = ssh(&lab, "sync fedora releases");
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("does not accept dir syncs"), "{err}");
    // Nothing was queued by the refusals.
    assert!(common::queue_idle(&lab));
}

#[test]
fn every_class_of_bad_input_is_refused_as_malformed_and_logged_escaped() {
    let lab = lab("detach");
    let long = format!("sync fedora {}", vec!["abcdefgh"; 120].join("/"));
    let text: Vec<&str> = vec![
        // shell metacharacters
        "sync fedora; touch /tmp/mirrorpush-pwned",
        "sync fedora && id",
        "sync fedora $(id)",
        "sync fedora `id`",
        "sync fedora | cat",
        "sync fedora > x",
        // options
        "sync fedora -e",
        "sync -e fedora",
        "sync fedora --rsh=sh",
        "sync fedora -rf",
        // traversal and absolute paths
        "sync fedora ..",
        "sync fedora releases/../../etc",
        "sync fedora ./releases",
        "sync fedora /etc",
        "sync /srv",
        "sync fedora releases/",
        // globs
        "sync fedora *",
        "sync fedora rel?ases",
        "sync fedora [r]eleases",
        "sync fedora {a,b}",
        // remote syntax
        "sync fedora host:path",
        "sync fedora root@host:x",
        "sync fedora rsync://evil/x",
        "sync evil::fedora",
        // wrong words, spacing, verbs
        "sync",
        "sync fedora a b",
        "sync  fedora",
        " sync fedora",
        "sync fedora ",
        "SYNC fedora",
        "rsync fedora",
        "status",
        "check",
        "__run fedora",
        "'sync' fedora",
        // a quote that would close the logged value and forge fields after it
        "sync fedora\" verdict=accepted key=\"trusted-master",
        &long,
    ];
    let raw: Vec<&[u8]> = vec![
        b"sync fedora\nsync fedora",
        b"sync fedora\ta",
        b"sync fedora \x1b[2J",
        b"sync fedora caf\xc3\xa9",
        b"sync fedora \xff\xfe",
        b"sync fedora\r",
    ];
    let mut requests = 0;
    for req in &text {
        let (code, out, err) = ssh(&lab, req);
        assert_eq!(code, 64, "{req:?}: {out} {err}");
        assert!(out.is_empty(), "{req:?}: {out}");
        assert!(
            err.starts_with("error: malformed request"),
            "{req:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1);
        requests += 1;
    }
    for req in &raw {
        let (code, _, err) = common::run(lab.ssh_raw(0, req));
        assert_eq!(code, 64, "{req:?}: {err}");
        requests += 1;
    }
    // No command at all: sshd runs the forced command without SSH_ORIGINAL_COMMAND.
    let (code, _, err) = ssh(&lab, "");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no command given"), "{err}");
    requests += 1;

    assert!(!std::path::Path::new("/tmp/mirrorpush-pwned").exists());
    assert!(!lab.mirrors[0].dest("fedora").join("README").exists());
    let log = std::fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    // One line per request: client text can neither split nor forge a line.
    assert_eq!(log.lines().count(), requests, "{log}");
    assert!(log.lines().all(|l| l.contains("verdict=refused")), "{log}");
    // Every quote in the log is the handler's own: one logfmt field can never become two.
    assert!(log.lines().all(|l| l.matches('"').count() == 8), "{log}");
    assert!(
        log.contains("request=\"sync fedora\\x22 verdict=accepted key=\\x22trusted-master\""),
        "{log}"
    );
    assert!(
        log.contains("request=\"sync fedora\\x0async fedora\""),
        "{log}"
    );
    assert!(
        log.contains("request=\"sync fedora caf\\xc3\\xa9\""),
        "{log}"
    );
    assert!(log.is_ascii());
}

#[test]
fn status_and_check_report_the_last_run() {
    let lab = lab("detach");
    let (code, out, err) = local(&lab, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fedora:\n  last run:  never"), "{out}");

    let (code, out, err) = local(&lab, &["check"]);
    assert_eq!(code, 0, "{err}");

    // Local mode (timers, admins) waits for its sync even for a detach module (running it in
    // the foreground when no runner is active), with the same grammar as over SSH.
    let (code, out2, err) = local(&lab, &["sync", "fedora", "development"]);
    assert_eq!((code, out2.as_str()), (0, "synced"), "{err}");
    let dest = lab.mirrors[0].dest("fedora");
    assert!(dest.join("development/rawhide/COMPOSE_ID").exists());
    assert_eq!(local(&lab, &["sync", "fedora", "../etc"]).0, 64);
    assert_eq!(local(&lab, &["sync", "nosuch"]).0, 77);
    assert!(out.starts_with("ok: 1 module(s) [fedora], rsync "), "{out}");

    assert_eq!(ssh(&lab, "sync fedora updates").0, 0);
    assert!(lab.wait_until(LONG, || {
        local(&lab, &["status"]).1.contains("requests:  updates")
    }));
    let (_, text, _) = local(&lab, &["status"]);
    assert!(text.contains("result:    ok"), "{text}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(text.contains("pushers:   127.0.0.1"), "{text}");
    assert!(text.contains("keys:      lab"), "{text}");
    assert!(text.contains("pending:   -"), "{text}");

    let (code, json, err) = local(&lab, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m = &v["modules"][0];
    assert_eq!(m["module"], "fedora");
    assert_eq!(m["last_run"]["ok"], true);
    assert_eq!(m["last_run"]["rsync_exit"], 0);
    assert_eq!(m["last_run"]["requests"][0], "updates");
    assert_eq!(m["last_run"]["pushers"][0], "127.0.0.1");
    assert_eq!(m["pending"].as_array().unwrap().len(), 0);

    // A verb in the forced command is a config error; a client cannot reach status at all.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorpush-handler"));
    cmd.args(["--config"])
        .arg(&lab.mirrors[0].handler_config)
        .arg("status")
        .env("SSH_ORIGINAL_COMMAND", "sync fedora");
    assert_eq!(common::run(cmd).0, 78);

    // Config errors name file, line and key.
    write_config(&lab, "colour = \"blue\"\n", None);
    let (code, _, err) = local(&lab, &["check"]);
    assert_eq!(code, 78);
    assert!(
        err.contains("unknown key 'colour' in [modules.fedora]"),
        "{err}"
    );
    assert!(err.contains(" line "), "{err}");
    // The remote client is told less.
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 78);
    assert!(
        !err.contains(&lab.mirrors[0].handler_config.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_client_that_hung_up_before_the_answer_gets_no_panic() {
    // The master gave up (its timeout) while a wait-mode sync ran: sshd's pipe to the client is
    // gone when the handler finally answers. The sync must still count, and the exit be clean.
    let lab = lab("wait");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = lab
        .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-handler"))
        .arg("--config")
        .arg(&lab.mirrors[0].handler_config)
        .env("SSH_CONNECTION", "127.0.0.1 40000 127.0.0.1 22")
        .env("SSH_ORIGINAL_COMMAND", "sync fedora")
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The waiter saw nobody left to answer; the runner, detached, still brings the content.
    assert!(lab.wait_until(LONG, || lab.in_sync(0, "fedora")
        && common::queue_idle(&lab)));

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = lab
        .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-handler"))
        .arg("--config")
        .arg(&lab.mirrors[0].handler_config)
        .arg("status")
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn both_binaries_print_the_same_version() {
    let version = |bin: &str, flag: &str| {
        let out = std::process::Command::new(bin).arg(flag).output().unwrap();
        assert!(out.status.success(), "{bin} {flag}");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (name, v) = text.split_once(' ').unwrap();
        (name.to_owned(), v.to_owned())
    };
    let handler = env!("CARGO_BIN_EXE_mirrorpush-handler");
    let master = env!("CARGO_BIN_EXE_mirrorpush");
    assert_eq!(version(handler, "--version").0, "mirrorpush-handler");
    assert_eq!(version(handler, "--version"), version(handler, "-V"));
    assert_eq!(
        version(handler, "--version").1,
        version(master, "--version").1
    );
    assert_eq!(version(master, "--version").1, env!("CARGO_PKG_VERSION"));
}
