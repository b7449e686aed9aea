//! Signed envelopes without a broker: OpenSSH interoperability both ways, `mirrorpush-listen
//! --stdin` and its exit codes, and a mail alias piping into it, delivered by Debian's real
//! exim4 (`exim4 -odi`, no daemon, the lab's own config).

mod bus_common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use bus_common::{run, sign_trigger, BusLab, LONG, ORIGIN};
use mirrorpush::bus::envelope::{self, Envelope, MessageId, Name, Trigger};
use mirrorpush::request::Request;
use mirrorpush_lab::keygen;
use ssh_key::PrivateKey;

fn envelope_json(payload: &str, signature: &str) -> Vec<u8> {
    serde_json::json!({"payload": payload, "signature": signature})
        .to_string()
        .into_bytes()
}

#[test]
fn an_envelope_signed_by_ssh_keygen_is_accepted_and_syncs_the_mirror() {
    let b = BusLab::new("detach", &["fedora"]);
    let config = b.write_listen_config(&b.listen_toml(None, &[], ""));
    fs::write(b.lab.upstream_dir("fedora").join("new.rpm"), "fresh\n").unwrap();
    let t = Trigger {
        request: Request::new("fedora", None).unwrap(),
        id: MessageId::random().unwrap(),
        issued: envelope::parse_time(&envelope::format_time(SystemTime::now())).unwrap(),
        origin: Name::parse(ORIGIN).unwrap(),
        serial: None,
    };
    let payload_file = b.lab.root.join("payload");
    fs::write(&payload_file, t.render()).unwrap();
    let mut sign = Command::new("ssh-keygen");
    sign.args(["-Y", "sign", "-n", "mirrorpush-trigger", "-f"])
        .arg(&b.master_key_path)
        .arg(&payload_file)
        .stdin(Stdio::null());
    let (code, _, err) = run(sign);
    assert_eq!(code, 0, "{err}");
    let sig = fs::read_to_string(payload_file.with_extension("sig")).unwrap();
    let body = envelope_json(&t.render(), &sig);

    let (code, out, err) = b.listen_cmd(&config, &["--stdin"], &body);
    assert_eq!(code, 0, "{out}{err}");
    // A detach module: `accepted` at once, and the runner it started syncs.
    assert_eq!(out.trim(), "accepted", "{err}");
    assert!(b.lab.wait_until(LONG, || b.lab.in_sync(0, "fedora")));
    assert!(
        err.contains(&format!("accepted id={} origin={ORIGIN}", t.id)),
        "{err}"
    );

    // The same envelope again is a replay: refused, nothing runs.
    let (code, _, err) = b.listen_cmd(&config, &["--stdin"], &body);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("refused reason=replay"), "{err}");
    assert_eq!(b.handler_requests().len(), 1);
    let s = b.status_json(&config);
    assert_eq!(s["accepted"], 1);
    assert_eq!(s["refused"]["replay"], 1);
}

#[test]
fn envelopes_signed_by_the_library_verify_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    keygen(&key_path).unwrap();
    let key = PrivateKey::read_openssh_file(&key_path).unwrap();
    let public = fs::read_to_string(key_path.with_extension("pub")).unwrap();
    let signers = dir.path().join("allowed_signers");
    fs::write(
        &signers,
        format!(
            "{ORIGIN} namespaces=\"mirrorpush-trigger\" {}\nmirror1.lab namespaces=\"mirrorpush-ack\" {}\n",
            public.trim(),
            public.trim()
        ),
    )
    .unwrap();
    let (t, env) = sign_trigger(&key, "sync fedora updates/41", SystemTime::now());
    let now = SystemTime::now();
    let ack = envelope::Ack::new(
        &t,
        Name::parse("mirror1.lab").unwrap(),
        envelope::AckResult::Synced,
        "synced",
        now,
        now,
    );
    let ack_env = Envelope::sign(ack.render(), envelope::ACK_NAMESPACE, &key).unwrap();
    let verify = |env: &Envelope, principal: &str, ns: &str| {
        let payload = dir.path().join("payload");
        let sig = dir.path().join("payload.sig");
        fs::write(&payload, &env.payload).unwrap();
        fs::write(&sig, &env.signature).unwrap();
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-Y", "verify", "-f"])
            .arg(&signers)
            .args(["-I", principal, "-n", ns, "-s"])
            .arg(&sig)
            .stdin(fs::File::open(&payload).unwrap());
        run(cmd)
    };
    let (code, out, err) = verify(&env, ORIGIN, "mirrorpush-trigger");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "Good \"mirrorpush-trigger\" signature for {ORIGIN}"
        )),
        "{out}"
    );
    let (code, out, err) = verify(&ack_env, "mirror1.lab", "mirrorpush-ack");
    assert_eq!(code, 0, "{out}{err}");
    // OpenSSH refuses what the listener refuses: another namespace, a tampered payload.
    assert_ne!(verify(&env, ORIGIN, "mirrorpush-ack").0, 0);
    let mut tampered = env.clone();
    tampered.payload = tampered.payload.replace("updates/41", "updates/40");
    assert_ne!(verify(&tampered, ORIGIN, "mirrorpush-trigger").0, 0);
}

#[test]
fn stdin_exit_codes_follow_the_contract() {
    let b = BusLab::new("wait", &["fedora"]);
    let config = b.write_listen_config(&b.listen_toml(None, &["fedora"], ""));
    let stdin = |body: &[u8]| b.listen_cmd(&config, &["--stdin"], body);
    let now = SystemTime::now();

    let (code, _, err) = stdin(b"hello, not an envelope\n");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("refused reason=not-json"), "{err}");

    // A payload the grammar refuses, signed by the trusted key: 64, whoever signed it.
    let bad = "mirrorpush-trigger 1\nrequest: sync fedora ../etc\nid: 0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162\n\
               issued: 2026-11-30T10:00:00Z\norigin: master.lab\n";
    let env = Envelope::sign(bad.into(), envelope::TRIGGER_NAMESPACE, &b.master_key).unwrap();
    let (code, _, err) = stdin(env.to_json().as_bytes());
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("refused reason=grammar"), "{err}");

    let other = b.lab.root.join("other_key");
    keygen(&other).unwrap();
    let other = PrivateKey::read_openssh_file(&other).unwrap();
    let (_, forged) = sign_trigger(&other, "sync fedora", now);
    let (code, _, err) = stdin(forged.to_json().as_bytes());
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("refused reason=unknown-signer"), "{err}");

    let (_, mut tampered) = b.trigger("sync fedora updates", now);
    tampered.payload = tampered.payload.replace("updates", "releases");
    let (code, _, err) = stdin(tampered.to_json().as_bytes());
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("refused reason=signature"), "{err}");

    let (_, old) = b.trigger("sync fedora", now - Duration::from_secs(3600));
    let (code, _, err) = stdin(old.to_json().as_bytes());
    assert_eq!(
        (code, err.contains("refused reason=expired")),
        (77, true),
        "{err}"
    );

    let (_, ahead) = b.trigger("sync fedora", now + Duration::from_secs(600));
    let (code, _, err) = stdin(ahead.to_json().as_bytes());
    assert_eq!(
        (code, err.contains("refused reason=future")),
        (77, true),
        "{err}"
    );

    // The signer may push fedora only (modules = ["fedora"]).
    let (_, epel) = b.trigger("sync epel", now);
    let (code, _, err) = stdin(epel.to_json().as_bytes());
    assert_eq!(
        (code, err.contains("refused reason=not-allowed")),
        (77, true),
        "{err}"
    );
    assert!(
        b.handler_requests().is_empty(),
        "nothing may run for a refusal"
    );

    // The handler's own answers: 75 when its state is not writable, 1 when the sync fails.
    let handler_state = &b.lab.mirrors[0].state_dir;
    fs::set_permissions(
        handler_state,
        std::os::unix::fs::PermissionsExt::from_mode(0o500),
    )
    .unwrap();
    let (_, env) = b.trigger("sync fedora", now);
    let (code, _, err) = stdin(env.to_json().as_bytes());
    assert_eq!(code, 75, "{err}");
    fs::set_permissions(
        handler_state,
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    // Retried (as a mail transport would after 75), the same envelope now syncs: a 75 does
    // not remember the id.
    let (code, out, err) = stdin(env.to_json().as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "synced");

    let broken = b.lab.handler_toml(0, "").replace(
        &b.lab.rsync_url("fedora"),
        &format!("rsync://127.0.0.1:{}/no-such-module/", b.lab.rsync_port),
    );
    b.lab.write_handler_config(0, &broken).unwrap();
    let (_, env) = b.trigger("sync fedora", now);
    let (code, _, err) = stdin(env.to_json().as_bytes());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: sync failed"), "{err}");
    let s = b.status_json(&config);
    assert_eq!(s["accepted"], 2);
    assert_eq!(s["failed_runs"], 1);
    for reason in [
        "not-json",
        "grammar",
        "unknown-signer",
        "signature",
        "expired",
        "future",
        "not-allowed",
    ] {
        assert_eq!(s["refused"][reason], 1, "{reason}: {s}");
    }

    // The replay memory full (two ids remembered, max_seen = 2): a new trigger is refused
    // rather than an id forgotten early, and nothing runs.
    let full = b.write_listen_config(&format!(
        "max_seen = 2\n{}",
        b.listen_toml(None, &["fedora"], "")
    ));
    let (_, env) = b.trigger("sync fedora", SystemTime::now());
    let runs = b.handler_requests().len();
    let (code, _, err) = b.listen_cmd(&full, &["--stdin"], env.to_json().as_bytes());
    assert_eq!(
        (code, err.contains("refused reason=memory-full")),
        (77, true),
        "{err}"
    );
    assert_eq!(b.handler_requests().len(), runs);

    // As root (a mail pipe set up without `user = mirrorpush`), it refuses before it reads.
    if rustix::process::geteuid().is_root() {
        let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush-listen"))
            .arg("--config")
            .arg(&config)
            .arg("--stdin")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{err}");
        assert!(err.starts_with("error: refusing to run as root"), "{err}");
    }
}

/// exim4 with a private config in the lab dir, run as the lab account (so the machine's
/// /etc/exim4 is untouched): an alias whose pipe is `mirrorpush-listen --stdin`, as docs/bus.md
/// shows.
fn exim_config(b: &BusLab, listen_config: &std::path::Path) -> std::path::PathBuf {
    let dir = b.lab.root.join("exim");
    b.lab.create_dir_for_account(&dir.join("spool")).unwrap();
    b.lab.create_dir_for_account(&dir.join("log")).unwrap();
    let aliases = dir.join("aliases");
    fs::write(
        &aliases,
        format!(
            "mirrorpush-push: \"|{} --config {} --stdin\"\n",
            env!("CARGO_BIN_EXE_mirrorpush-listen"),
            listen_config.display()
        ),
    )
    .unwrap();
    let conf = dir.join("exim.conf");
    fs::write(
        &conf,
        format!(
            "primary_hostname = lab.invalid\nqualify_domain = lab.invalid\n\
             domainlist local_domains = lab.invalid\nspool_directory = {spool}\n\
             log_file_path = {log}/%slog\nexim_user = {user}\nexim_group = {user}\n\
             keep_environment =\n\
             begin routers\n\
             aliases:\n  driver = redirect\n  domains = +local_domains\n\
             \x20 data = ${{lookup{{$local_part}}lsearch{{{aliases}}}}}\n\
             \x20 pipe_transport = address_pipe\n\
             begin transports\n\
             address_pipe:\n  driver = pipe\n  return_fail_output\n  temp_errors = 75\n",
            spool = dir.join("spool").display(),
            log = dir.join("log").display(),
            user = b.lab.user,
            aliases = aliases.display(),
        ),
    )
    .unwrap();
    conf
}

/// Delivers one mail with `exim4 -odi`; returns exim's log lines (an exim that runs a private
/// config without root writes them to stderr).
fn send_mail(b: &BusLab, conf: &std::path::Path, body: &str) -> String {
    use std::io::Write as _;
    let mut cmd = b.lab.command_as_account("/usr/sbin/exim4");
    cmd.arg("-C")
        .arg(conf)
        .args(["-odi", "mirrorpush-push@lab.invalid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("exim4 runs");
    let mail = format!(
        "From: master@example.org\nTo: mirrorpush-push@lab.invalid\nSubject: push fedora\n\n\
         A new compose is out.\n\n{body}\n-- \nThe release team {{ }}\n"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(mail.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exim4: {log}");
    log
}

#[test]
fn a_mail_to_the_alias_triggers_the_sync_and_a_forged_or_unsigned_one_does_not() {
    let b = BusLab::new("detach", &["fedora"]);
    let config = b.write_listen_config(&b.listen_toml(None, &[], ""));
    let conf = exim_config(&b, &config);
    let fresh = b.lab.upstream_dir("fedora").join("updates/fresh.rpm");
    fs::write(&fresh, "new\n").unwrap();
    let arrived = || {
        b.lab.mirrors[0]
            .dest("fedora")
            .join("updates/fresh.rpm")
            .exists()
    };

    let other = b.lab.root.join("other_key");
    keygen(&other).unwrap();
    let (_, forged) = sign_trigger(
        &PrivateKey::read_openssh_file(&other).unwrap(),
        "sync fedora",
        SystemTime::now(),
    );
    let (_, unsigned) = b.trigger("sync fedora", SystemTime::now());
    let unsigned = serde_json::json!({"payload": unsigned.payload}).to_string();
    for body in [forged.to_json().as_str(), "sync fedora, please", &unsigned] {
        let log = send_mail(&b, &conf, body);
        // The pipe exited 77 or 64: a permanent failure, bounced, not delivered.
        assert!(log.contains(" ** |"), "{log}");
        assert!(!log.contains(" => |"), "{log}");
    }
    assert!(!arrived());
    assert!(b.handler_requests().is_empty());
    let s = b.status_json(&config);
    assert_eq!(s["refused"]["unknown-signer"], 1, "{s}");
    assert_eq!(s["refused"]["not-json"], 2, "{s}");

    let (_, signed) = b.trigger("sync fedora updates", SystemTime::now());
    let log = send_mail(&b, &conf, &signed.to_json());
    assert!(log.contains(" => |"), "{log}");
    assert!(b.lab.wait_until(LONG, arrived));
    assert_eq!(b.status_json(&config)["accepted"], 1);
}

#[test]
fn the_man_page_formats_cleanly_and_covers_every_mode_and_exit_code() {
    use std::io::Write as _;
    let page = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/mirrorpush-listen.1"
    ))
    .unwrap();
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rLL=200n"])
        .env("GROFF_NO_SGR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff runs (groff-base)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
    // Plain text: drop the overstrike bold that grotty writes without SGR.
    let raw: Vec<char> = String::from_utf8_lossy(&out.stdout).chars().collect();
    let mut text = String::new();
    let mut i = 0;
    while i < raw.len() {
        if i + 2 < raw.len() && raw[i + 1] == '\u{8}' {
            i += 2;
            continue;
        }
        text.push(raw[i]);
        i += 1;
    }
    let text = text.replace(['\u{2010}', '\u{2212}'], "-");
    for needle in [
        "--stdin",
        "status",
        "--json",
        "check",
        "--config",
        "max_age",
        "allowed_signers",
        "expect_change",
        "settle",
        "EXIT STATUS",
        "mirrorpush-trigger",
        "mirrorpush-ack",
    ] {
        assert!(text.contains(needle), "man page lacks {needle}");
    }
    for code in ["0", "1", "64", "75", "77", "78"] {
        assert!(
            text.lines()
                .any(|l| l.trim() == code || l.trim_start().starts_with(&format!("{code} "))),
            "man page lacks exit code {code}"
        );
    }
}
