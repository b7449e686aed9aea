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
