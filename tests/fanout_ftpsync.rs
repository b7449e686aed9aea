//! The master against Debian's own ftpsync (the `ftpsync` package, installed by
//! scripts/install-deps.sh) as the forced command of a lab mirror account: a push makes it sync
//! from the lab's rsync daemon and answers `synced`, its trace file appears, a push during its
//! run is reported `queued`, and a wrong archive name is a clean failure naming ftpsync's
//! message. And what the master sends is byte for byte what Debian's own `runmirrors` sends.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mirrorpush_lab::{Lab, LabOptions};
use serde_json::Value;

const FTPSYNC: &str = "/usr/bin/ftpsync";
const RUNMIRRORS: &str = "/usr/bin/runmirrors";
/// ftpsync's MIRRORNAME and TRACEHOST on the lab mirror (else `hostname -f`).
const MIRROR_NAME: &str = "lab-ftpsync";
/// Generous bound for anything the lab does; tests assert outcomes, not speed.
const DEADLINE: Duration = Duration::from_secs(120);

fn lab(mirrors: usize) -> Lab {
    assert!(
        Path::new(FTPSYNC).exists() && Path::new(RUNMIRRORS).exists(),
        "Debian's ftpsync is not installed: run scripts/install-deps.sh"
    );
    Lab::start(LabOptions {
        mirrors,
        modules: vec!["debian".into()],
        handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
        ..Default::default()
    })
    .expect("lab starts")
}

/// Makes mirror `i`'s account run `command` as its forced command instead of the handler, as a
/// Debian mirror admin sets up ftpsync (its README: `command="~/bin/ftpsync"` plus the
/// no-forwarding options, which `restrict` covers).
fn force(lab: &Lab, i: usize, command: &str) {
    let key = fs::read_to_string(lab.identity.with_extension("pub")).unwrap();
    fs::write(
        &lab.mirrors[i].authorized_keys,
        format!("restrict,command=\"{command}\" {}\n", key.trim()),
    )
    .unwrap();
}

/// Writes a file the lab account owns (its HOME holds ftpsync's config dirs).
fn write_as_account(lab: &Lab, path: &Path, text: &str) {
    lab.create_dir_for_account(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    lab.give_to_account(path).unwrap();
}

/// ftpsync's config for `archive` (None: the main `ftpsync.conf`), syncing mirror 0's dest from
/// the lab's rsync daemon. `extra` adds lines (e.g. a bandwidth limit).
fn ftpsync_conf(lab: &Lab, archive: Option<&str>, extra: &str) {
    let name = match archive {
        Some(a) => format!("ftpsync-{a}.conf"),
        None => "ftpsync.conf".into(),
    };
    let conf = format!(
        "# ftpsync.conf for the mirrorpush lab\n\
         MIRRORNAME={MIRROR_NAME}\nTRACEHOST={MIRROR_NAME}\n\
         TO={to}\nRSYNC={rsync}\nRSYNC_HOST=127.0.0.1\nRSYNC_PATH=debian\n\
         RSYNC_EXTRA=\"--port={port}\"\nMAILTO={user}\nLOGDIR={home}/.local/log/ftpsync\n{extra}\n",
        to = lab.mirrors[0].dest("debian").display(),
        rsync = lab.rsync_bin.display(),
        port = lab.rsync_port,
        user = lab.user,
        home = lab.home.display(),
    );
    write_as_account(lab, &lab.home.join(".config/ftpsync").join(name), &conf);
}

fn registry(lab: &Lab, mirror: usize, archive: Option<&str>, extra: &str) -> PathBuf {
    let archive = archive.map_or(String::new(), |a| format!("archive = {a:?}\n"));
    let text = format!(
        "[defaults]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\ntimeout = \"5m\"\nhistory = {:?}\n\n\
         [[mirror]]\nname = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\nmodules = [\"debian\"]\n\
         protocol = \"ftpsync\"\n{archive}{extra}\n",
        lab.user,
        lab.identity.display().to_string(),
        lab.known_hosts.display().to_string(),
        lab.history().display().to_string(),
        lab.mirrors[mirror].port,
    );
    let path = lab.root.join(format!("ftpsync-mirrors-{mirror}.toml"));
    fs::write(&path, text).unwrap();
    path
}

fn push(registry: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorpush"));
    cmd.arg("--registry")
        .arg(registry)
        .args(["push", "--json"])
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    cmd
}

/// The one mirror object of a `push --json`.
fn result(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout
        .lines()
        .next()
        .unwrap_or_else(|| panic!("{}", dump(out)));
    serde_json::from_str(first).unwrap()
}

fn dump(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// ftpsync's own log on the mirror, for failure messages.
fn ftpsync_log(lab: &Lab) -> String {
    let dir = lab.home.join(".local/log/ftpsync");
    let mut text = String::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        text += &format!("== {}\n", entry.path().display());
        text += &fs::read_to_string(entry.path()).unwrap_or_default();
    }
    text
}

#[test]
fn real_ftpsync_syncs_answers_synced_and_queues_a_push_during_its_run() {
    let lab = lab(1);
    force(&lab, 0, FTPSYNC);
    // An archive serial upstream, which ftpsync copies into its trace file; and a file big
    // enough that a bandwidth-limited run lasts while a second push arrives.
    let upstream = lab.upstream_dir("debian");
    fs::create_dir_all(upstream.join("project/trace")).unwrap();
    fs::write(
        upstream.join("project/trace/master"),
        "Mon Nov 25 10:00:00 UTC 2026\nArchive serial: 2026112501\n",
    )
    .unwrap();
    let mut big = fs::File::create(upstream.join("pool-big.iso")).unwrap();
    big.write_all(&vec![7u8; 1 << 20]).unwrap();
    drop(big);
    ftpsync_conf(&lab, Some("debian"), "RSYNC_BW=256");
    let reg = registry(&lab, 0, Some("debian"), "");
    let dest = lab.mirrors[0].dest("debian");
    let trace = dest.join("project/trace").join(MIRROR_NAME);
    let lock = dest.join(format!("Archive-Update-in-Progress-{MIRROR_NAME}"));

    // Push A runs the whole sync in the foreground; push B arrives while it runs.
    let first = push(&reg, &["debian"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        lab.wait_until(DEADLINE, || lock.exists()),
        "ftpsync never took its lock: {}",
        ftpsync_log(&lab)
    );
    let second = push(&reg, &["debian", "dists/trixie"]).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", dump(&second));
    let b = result(&second);
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["answer"], "queued", "{b}");
    assert_eq!(b["exit_status"], 1, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("Unable to start rsync, lock file still exists"),
        "{b}"
    );
    // ftpsync has no dir sync: the dir push went out as runmirrors' full push, and says so.
    assert_eq!(b["request"], " sync:archive:debian sync:all");
    assert!(b["note"].as_str().unwrap().contains("full sync"), "{b}");

    let first = first.wait_with_output().unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}\n{}",
        dump(&first),
        ftpsync_log(&lab)
    );
    let a = result(&first);
    assert_eq!(a["answer"], "synced", "{a}");
    assert_eq!(a["exit_status"], 0);
    assert_eq!(a["protocol"], "ftpsync");
    // Synced means there: the files, and ftpsync's trace with the upstream's archive serial.
    for file in [
        "README",
        "pool-big.iso",
        "updates/41/x86_64/repodata/repomd.xml",
    ] {
        assert_eq!(
            fs::read(dest.join(file)).unwrap(),
            fs::read(upstream.join(file)).unwrap(),
            "{file}"
        );
    }
    let text = fs::read_to_string(&trace).unwrap_or_default();
    for field in [
        "Archive serial: 2026112501",
        "Creator: ftpsync",
        &format!("Running on host: {MIRROR_NAME}"),
        "Trigger: ssh",
        "Upstream-mirror: 127.0.0.1",
    ] {
        assert!(text.contains(field), "{field:?} not in trace:\n{text}");
    }
    // The queued push was covered: the running ftpsync found Archive-Update-Required again
    // and ran its first pass once more (and its second after it), and its lock is gone.
    let log = ftpsync_log(&lab);
    assert!(log.matches("Running stage1:").count() >= 2, "{log}");
    assert!(!lock.exists());
}

#[test]
fn a_wrong_archive_is_a_clean_failure_naming_ftpsyncs_message() {
    let lab = lab(1);
    force(&lab, 0, FTPSYNC);
    ftpsync_conf(&lab, Some("debian"), "");
    let reg = registry(&lab, 0, Some("debain"), "");
    let out = push(&reg, &["debian"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let m = result(&out);
    assert_eq!(m["ok"], false);
    assert_eq!(m["exit_status"], 78);
    assert!(m["answer"].is_null());
    let error = m["error"].as_str().unwrap();
    assert!(
        error.contains("Can't read config file ftpsync-debain.conf!"),
        "{error}"
    );
    assert!(error.contains("ftpsync configuration error"), "{error}");
    // Nothing was synced.
    assert!(!lab.mirrors[0].dest("debian").join("README").exists());

    // The human report says the same in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(&reg)
        .args(["push", "debian"])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("ftp ")
            && l.contains("FAILED")
            && l.contains("Can't read config file ftpsync-debain.conf!")),
        "{text}"
    );
}

/// The real `runmirrors` pushes a lab mirror whose forced command records what it was sent;
/// then the master pushes the same mirror as an ftpsync mirror. Same bytes, with an archive
/// (`runmirrors -a debian`) and without one (plain `runmirrors`).
#[test]
fn the_master_sends_byte_for_byte_what_runmirrors_sends() {
    let lab = lab(1);
    let dir = lab.root.join("recorder");
    lab.create_dir_for_account(&dir).unwrap();
    let recorder = dir.join("record");
    fs::write(
        &recorder,
        format!(
            "#!/bin/sh\nprintf '%s' \"$SSH_ORIGINAL_COMMAND\" > {d}/got.tmp && mv {d}/got.tmp {d}/got\n",
            d = dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&recorder, fs::Permissions::from_mode(0o755)).unwrap();
    force(&lab, 0, &recorder.display().to_string());
    let got = dir.join("got");
    let take = |what: &str| -> Vec<u8> {
        assert!(
            lab.wait_until(DEADLINE, || got.exists()),
            "{what}: nothing recorded"
        );
        let bytes = fs::read(&got).unwrap();
        fs::remove_file(&got).unwrap();
        bytes
    };

    // runmirrors' own set-up: its config and mirror list under ~/.config/ftpsync of the
    // account that runs it (here a temp HOME), one mirror of type `all` with its ssh options.
    let home = tempfile::tempdir().unwrap();
    let conf_dir = home.path().join(".config/ftpsync");
    fs::create_dir_all(&conf_dir).unwrap();
    let ssh_opts = format!(
        "-F /dev/null -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o LogLevel=ERROR",
        lab.known_hosts.display()
    );
    for (name, archive) in [("runmirrors", None), ("runmirrors-debian", Some("debian"))] {
        fs::write(
            conf_dir.join(format!("{name}.conf")),
            format!(
                "KEYFILE={}\nSSH_OPTS=\"{ssh_opts}\"\nBASEDIR={}\nMAILTO=root\n",
                lab.identity.display(),
                home.path().display()
            ),
        )
        .unwrap();
        fs::write(
            conf_dir.join(format!("{name}.mirror")),
            format!(
                "all lab 127.0.0.1 {} -p {}\n",
                lab.user, lab.mirrors[0].port
            ),
        )
        .unwrap();

        let mut cmd = Command::new(RUNMIRRORS);
        if let Some(a) = archive {
            cmd.args(["-a", a]);
        }
        let out = cmd
            .env("HOME", home.path())
            .env("LOGNAME", "root")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "runmirrors: {}", dump(&out));
        let from_runmirrors = take("runmirrors");

        let reg = registry(&lab, 0, archive, "");
        let out = push(&reg, &["debian"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
        let from_master = take("mirrorpush");
        assert_eq!(
            String::from_utf8_lossy(&from_master),
            String::from_utf8_lossy(&from_runmirrors),
            "archive {archive:?}"
        );
        let expected = format!(" sync:archive:{} sync:all", archive.unwrap_or(""));
        assert_eq!(from_master, expected.as_bytes());
        // The recorder exits 0, which for an ftpsync mirror means synced.
        assert_eq!(result(&out)["answer"], "synced");
    }
}
