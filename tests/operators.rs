//! What a new operator trips over, through the real lab: the key line the handler prints, the
//! messages of a first `check` and a refused key, and stages after a failed mirror.

mod common;

use std::fs;
use std::process::Command;

use common::{lab, run};

/// `mirrorpush-handler authorized-key` prints a line that works when pasted: with a config
/// path holding a space, a `$` and a quote (which the account's shell would otherwise split or
/// expand), the master's push reaches the handler, which reads that very config.
#[test]
fn the_printed_key_line_lets_the_master_push() {
    let lab = lab("wait");
    let m = &lab.mirrors[0];
    let odd = lab.root.join("conf dir $HOME 'q'");
    fs::create_dir(&odd).unwrap();
    let config = odd.join("handler.toml");
    // Only the odd path holds a config: a line that mangled it would fail with exit 78.
    fs::rename(&m.handler_config, &config).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorpush-handler"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--key", "pasted", "authorized-key", "--from", "127.0.0.1"])
        .arg(lab.identity.with_extension("pub"))
        .env_remove("SSH_ORIGINAL_COMMAND");
    let (code, line, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(
        line.starts_with("restrict,from=\"127.0.0.1\",command=\""),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    fs::write(&m.authorized_keys, format!("{line}\n")).unwrap();

    let out = common::master_push(&lab.registry, &["fedora"]);
    assert!(out.contains("synced"), "{out}");
    assert!(lab.in_sync(0, "fedora"));
    let log = fs::read_to_string(m.state_dir.join("handler.log")).unwrap();
    assert!(log.contains("key=\"pasted\""), "{log}");
}

fn push_with(registry: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorpush"));
    cmd.arg("--registry").arg(registry).arg("push").args(args);
    run(cmd)
}

/// A stage-1 mirror that fails (here on its host key: the registry names it `localhost`,
/// which known_hosts does not list) holds back stage 2 with `after_failed_stage = "hold"`,
/// and by default stage 2 starts with a warning that names the failed mirror.
#[test]
fn a_failed_stage_holds_back_or_warns() {
    let lab = mirrorpush_lab::Lab::start(mirrorpush_lab::LabOptions {
        mirrors: 2,
        handler_bin: env!("CARGO_BIN_EXE_mirrorpush-handler").into(),
        ..Default::default()
    })
    .expect("lab starts");
    let staged = lab
        .registry_toml("")
        .replace(
            "name = \"mirror1\"\nhost = \"127.0.0.1\"",
            "name = \"mirror1\"\nhost = \"localhost\"",
        )
        .replace("name = \"mirror2\"\n", "name = \"mirror2\"\nstage = 2\n");
    assert!(staged.contains("localhost") && staged.contains("stage = 2"));
    let hold = lab.root.join("hold.toml");
    fs::write(
        &hold,
        staged.replace(
            "[defaults]\n",
            "[defaults]\nafter_failed_stage = \"hold\"\n",
        ),
    )
    .unwrap();
    let (code, out, err) = push_with(&hold, &["fedora"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("host key"), "{out}");
    let held = out.lines().find(|l| l.starts_with("mirror2")).unwrap();
    assert!(
        held.contains("FAILED") && held.contains("held back") && held.contains("(mirror1)"),
        "{held}"
    );
    assert!(
        out.contains("2 mirror(s): 0 ok, 2 failed (1 held back)"),
        "{out}"
    );
    // Nothing reached mirror2: its handler never ran.
    assert!(!lab.mirrors[1].state_dir.join("handler.log").exists());

    let warn = lab.root.join("warn.toml");
    fs::write(&warn, &staged).unwrap();
    let (code, out, err) = push_with(&warn, &["fedora"]);
    assert_eq!(code, 1, "{out}{err}");
    let line = "warning: stage 2 starts although 1 mirror of stage 1 failed (mirror1)";
    assert!(out.contains(line), "{out}");
    assert!(err.contains(line), "said at once on stderr too: {err}");
    let pushed = out.lines().find(|l| l.starts_with("mirror2")).unwrap();
    assert!(
        pushed.contains("ok") && pushed.contains("accepted"),
        "{pushed}"
    );
}

/// A key line sshd skips (here a typo in an option) leaves the master only "authentication
/// refused": the message names the offered key's fingerprint, as `ssh-keygen -lf` prints it,
/// and its identity file, so the mirror admin can find the line to fix.
#[test]
fn a_refused_key_is_named_by_fingerprint_and_file() {
    let lab = lab("detach");
    let m = &lab.mirrors[0];
    let line = fs::read_to_string(&m.authorized_keys).unwrap();
    fs::write(&m.authorized_keys, line.replacen("command=", "comand=", 1)).unwrap();
    let (code, out, err) = push_with(&lab.registry, &["fedora"]);
    assert_eq!(code, 1, "{out}{err}");
    let keygen = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(lab.identity.with_extension("pub"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&keygen.stdout).into_owned();
    let fingerprint = printed.split_whitespace().nth(1).unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{printed}");
    let failed = out.lines().find(|l| l.starts_with("mirror1")).unwrap();
    assert!(
        failed.contains("authentication refused")
            && failed.contains(fingerprint)
            && failed.contains(&lab.identity.display().to_string())
            && failed.contains("typos"),
        "{failed}"
    );
}

/// A file-list module whose upstream has not published its list yet: `check` says what that
/// means and what to do, instead of rsync's `link_stat ... No such file or directory`.
#[test]
fn check_before_the_upstream_published_its_list_says_what_to_do() {
    let lab = lab("detach");
    common::write_config(&lab, "filelist = \"fullfiletimelist-fedora\"\n", None);
    let (code, out, err) = common::local(&lab, &["check"]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        err.contains("the upstream has not published its list yet")
            && err.contains("mirrorpush filelist")
            && err.contains("without `filelist`"),
        "{err}"
    );
    common::publish_list(&lab);
    let (code, out, err) = common::local(&lab, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every live line of a shipped example is a table header or marked `# EDIT:`: whatever else
/// it offers is commented out, so a copy carries no example value the admin did not choose.
fn live_lines(example: &str) -> Vec<&str> {
    example
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `key = ...  # EDIT: ...` lines get `value`; other lines stay.
fn fill(example: &str, values: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in example.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) if line.contains("# EDIT:") || !line.starts_with('#') => {
                out.push_str(&format!("{key} = {v}\n"))
            }
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

/// The shipped `handler.toml` and `mirrors.toml` work once the values marked `# EDIT:` are
/// filled in: the handler's `check` passes, the master's `check` passes, and a push syncs. (The
/// lab's own paths and account stand in for `/var/lib/mirrorpush`, the known_hosts and the
/// `mirrorpush` user, which a real machine has at their defaults.)
#[test]
fn the_shipped_examples_work_once_filled_in() {
    let lab = lab("detach");
    let m = &lab.mirrors[0];
    let root = env!("CARGO_MANIFEST_DIR");
    let handler = fs::read_to_string(format!("{root}/examples/handler.toml")).unwrap();
    for line in live_lines(&handler) {
        assert!(
            line.contains("# EDIT:") || line.starts_with('['),
            "handler.toml: {line}"
        );
    }
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let config = format!(
        "state_dir = {}\nrsync = {}\n{}",
        q(&m.state_dir),
        q(&lab.rsync_bin),
        fill(
            &handler,
            &[
                ("source", format!("{:?}", lab.rsync_url("fedora"))),
                ("dest", q(&m.dest("fedora"))),
            ],
        )
    );
    assert!(!config.contains("example.org"), "{config}");
    lab.write_handler_config(0, &config).unwrap();
    let (code, out, err) = common::local(&lab, &["check"]);
    assert_eq!(code, 0, "{out}{err}\n{config}");

    let registry = fs::read_to_string(format!("{root}/examples/mirrors.toml")).unwrap();
    for line in live_lines(&registry) {
        assert!(
            line.contains("# EDIT:") || line.starts_with('[') || line.starts_with("identity"),
            "mirrors.toml: {line}"
        );
    }
    let filled = fill(
        &registry,
        &[
            ("identity", q(&lab.identity)),
            (
                "name",
                format!("\"mirror1\"\nhost = \"127.0.0.1\"\nport = {}", m.port),
            ),
        ],
    )
    .replace(
        "[defaults]\n",
        &format!(
            "[defaults]\nuser = {:?}\nknown_hosts = {}\nhistory = {}\n",
            lab.user,
            q(&lab.known_hosts),
            q(&lab.history())
        ),
    );
    let path = lab.root.join("example-mirrors.toml");
    fs::write(&path, &filled).unwrap();
    let mut check = Command::new(env!("CARGO_BIN_EXE_mirrorpush"));
    check.arg("--registry").arg(&path).arg("check");
    let (code, out, err) = run(check);
    assert_eq!(code, 0, "{out}{err}\n{filled}");
    let (code, out, err) = push_with(&path, &["fedora"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accepted"), "{out}");
    assert!(lab.wait_until(common::LONG, || lab.in_sync(0, "fedora")));
}

/// One non-UTF-8 byte in known_hosts (a Latin-1 comment) used to stop every push; now the file
/// is read as bytes, the push goes through, and `check` warns about the line it cannot parse.
#[test]
fn a_latin1_known_hosts_comment_does_not_stop_the_push() {
    let lab = lab("detach");
    let original = fs::read_to_string(&lab.known_hosts).unwrap();
    assert_eq!(original.lines().count(), 1, "{original}");
    // Line 1: the mirror's entry, its comment in Latin-1; line 2: unparsable; line 3: comment.
    let mut bytes = original.trim_end().as_bytes().to_vec();
    bytes.extend_from_slice(b" root@mirr\xf6r\nold.example.net ssh-ed25519 AAAA\n# caf\xe9\n");
    assert!(std::str::from_utf8(&bytes).is_err());
    let known_hosts = lab.root.join("latin1_known_hosts");
    fs::write(&known_hosts, &bytes).unwrap();
    let registry = lab.root.join("latin1.toml");
    let text = lab.registry_toml("").replace(
        &format!("known_hosts = {:?}", lab.known_hosts.display().to_string()),
        &format!("known_hosts = {:?}", known_hosts.display().to_string()),
    );
    assert!(text.contains("latin1_known_hosts"));
    fs::write(&registry, text).unwrap();
    let (code, out, err) = push_with(&registry, &["fedora"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut check = Command::new(env!("CARGO_BIN_EXE_mirrorpush"));
    check.arg("--registry").arg(&registry).arg("check");
    let (code, out, err) = run(check);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warning: ") && out.contains("line(s) 2 cannot be parsed"),
        "{out}"
    );
}

/// A key line pasted from the docs must work: no `command="..."` line in the man page, the
/// README, the docs or the example is wrapped with a backslash (sshd reads one key per line).
#[test]
fn no_documented_key_line_is_wrapped() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![
        format!("{root}/man/mirrorpush-handler.8"),
        format!("{root}/README.md"),
        format!("{root}/authorized_keys.example"),
    ];
    for e in fs::read_dir(format!("{root}/docs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            files.push(path.display().to_string());
        }
    }
    let mut seen = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for line in text.lines().filter(|l| l.contains("restrict,")) {
            if !line.contains("command=") {
                continue;
            }
            seen += 1;
            assert!(
                !line.trim_end().ends_with('\\')
                    && !line.trim_end().ends_with("\\e")
                    && line.matches('"').count() % 2 == 0,
                "{f}: a wrapped key line: {line}"
            );
        }
    }
    assert!(seen >= 3, "{seen} key lines found");
}
