//! The master against the test lab: real sshd mirrors forcing the handler, a real rsync upstream.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mirrorpush_lab::{Lab, LabOptions};
use serde_json::Value;

/// Generous bound for anything the lab does; tests assert completion, not speed.
const DEADLINE: Duration = Duration::from_secs(60);

fn handler_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler"))
}

fn lab(mirrors: usize, mode: &str) -> Lab {
    Lab::start(LabOptions {
        mirrors,
        handler_bin: handler_bin(),
        mode: mode.into(),
        ..Default::default()
    })
    .expect("lab starts")
}

fn mirrorpush(registry: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("mirrorpush runs")
}

/// `[defaults]` for the lab with the given timeouts.
fn defaults(lab: &Lab, connect_timeout: &str, timeout: &str) -> String {
    format!(
        "[defaults]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\nconnect_timeout = {connect_timeout:?}\ntimeout = {timeout:?}\nhistory = {:?}\n",
        lab.user,
        lab.identity.display().to_string(),
        lab.known_hosts.display().to_string(),
        lab.history().display().to_string()
    )
}

fn entry(name: &str, port: u16, extra: &str) -> String {
    format!("\n[[mirror]]\nname = {name:?}\nhost = \"127.0.0.1\"\nport = {port}\nmodules = [\"fedora\"]\n{extra}\n")
}

fn write_registry(lab: &Lab, text: &str) -> PathBuf {
    let path = lab.root.join("test-mirrors.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The per-mirror JSON objects (by name) and the summary of a `push --json`.
fn parse_json(out: &Output) -> (HashMap<String, Value>, Vec<String>, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut mirrors = HashMap::new();
    let mut order = Vec::new();
    let mut summary = Value::Null;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {line}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if let Some(s) = v.get("summary") {
            summary = s.clone();
        } else {
            let name = v["mirror"].as_str().unwrap().to_owned();
            order.push(name.clone());
            mirrors.insert(name, v);
        }
    }
    assert!(!summary.is_null(), "no summary in {stdout}");
    (mirrors, order, summary)
}

fn dump(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn full_push_brings_every_mirror_in_sync_and_reports_json() {
    let lab = lab(3, "detach");
    let out = mirrorpush(&lab.registry, &["push", "--json", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (mirrors, _, summary) = parse_json(&out);
    assert_eq!(mirrors.len(), 3);
    for m in &lab.mirrors {
        let v = &mirrors[&m.name];
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["exit_status"], 0);
        assert!(v["error"].is_null());
        assert_eq!(v["host"], "127.0.0.1");
        assert_eq!(v["port"], m.port);
        assert_eq!(v["stage"], 1);
        assert_eq!(v["request"], "sync fedora");
        assert!(v["elapsed_ms"].is_u64());
        // Detach mode: the handler accepted the push, the content is not there yet.
        assert_eq!(v["answer"], "accepted", "{v}");
        assert_eq!(v["protocol"], "mirrorpush");
        // One stage, no `wait = true`: nothing to warn about.
        assert!(v["warning"].is_null(), "{v}");
    }
    assert_eq!(summary["selected"], 3);
    assert_eq!(summary["ok"], 3);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["accepted"], 3);
    assert_eq!(summary["synced"], 0);
    assert!(summary["synced_within_ms"].is_null());
    assert_eq!(
        summary["propagation"],
        "0 of 3 mirror(s) reported synced; 3 accepted without reporting completion"
    );
    for i in 0..3 {
        assert!(
            lab.wait_until(DEADLINE, || lab.in_sync(i, "fedora")),
            "mirror {i} not in sync"
        );
    }

    // The human report: one line per mirror and a summary, no JSON.
    let out = mirrorpush(&lab.registry, &["push", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for m in &lab.mirrors {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&m.name) && l.contains(" ok ")),
            "{text}"
        );
    }
    assert!(text.contains("3 mirror(s): 3 ok, 0 failed"), "{text}");
    assert!(
        text.contains("0 of 3 mirror(s) reported synced; 3 accepted without reporting completion"),
        "{text}"
    );
}

#[test]
fn dir_push_syncs_only_that_dir() {
    let lab = lab(2, "wait");
    // As a shell completes it: the master drops the one trailing slash before rendering.
    let dir = "updates/41/";
    let out = mirrorpush(&lab.registry, &["push", "--json", "fedora", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (mirrors, _, _) = parse_json(&out);
    assert_eq!(mirrors["mirror1"]["request"], "sync fedora updates/41");
    for m in &lab.mirrors {
        let dest = m.dest("fedora");
        assert!(
            lab.wait_until(DEADLINE, || dest
                .join("updates/41/x86_64/repodata/repomd.xml")
                .exists()),
            "{} lacks the dir",
            m.name
        );
        // Only the dir was synced: nothing outside it arrived.
        assert!(!dest.join("README").exists());
        assert!(!dest.join("releases").exists());
    }
}

#[test]
fn stages_run_in_order() {
    let lab = lab(3, "wait");
    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry("late", lab.mirrors[0].port, "stage = 2");
    reg += &entry("early-a", lab.mirrors[1].port, "stage = 1");
    reg += &entry("early-b", lab.mirrors[2].port, "");
    let path = write_registry(&lab, &reg);
    let out = mirrorpush(&path, &["push", "--json", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (mirrors, order, _) = parse_json(&out);
    assert_eq!(order.last().map(String::as_str), Some("late"), "{order:?}");
    let end = |v: &Value| v["started_ms"].as_u64().unwrap() + v["elapsed_ms"].as_u64().unwrap();
    let late_start = mirrors["late"]["started_ms"].as_u64().unwrap();
    for early in ["early-a", "early-b"] {
        assert_eq!(mirrors[early]["stage"], 1);
        assert!(
            end(&mirrors[early]) <= late_start,
            "{early} ended after stage 2 began: {mirrors:?}"
        );
    }
    assert_eq!(mirrors["late"]["stage"], 2);
}

/// A stage with later stages whose mirrors only accept the push (detach mode), and a mirror the
/// registry marks `wait = true` that only accepts: each is flagged, in the report and the JSON,
/// and `check` warned about the unmarked one up front. Warnings do not fail the push.
#[test]
fn mirrors_that_only_accept_where_completion_matters_are_flagged() {
    let lab = lab(3, "detach");
    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry("hub", lab.mirrors[0].port, "");
    reg += &entry("hub-marked", lab.mirrors[1].port, "wait = true");
    reg += &entry("leaf", lab.mirrors[2].port, "stage = 2\nwait = true");
    let path = write_registry(&lab, &reg);

    let out = mirrorpush(&path, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0]
            .starts_with("warning: mirror hub (stage 1) has later stages for module fedora (leaf)"),
        "{text}"
    );
    assert!(text.contains("0 problem(s), 1 warning(s)"), "{text}");

    let out = mirrorpush(&path, &["push", "--json", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (m, _, summary) = parse_json(&out);
    for name in ["hub", "hub-marked"] {
        assert_eq!(m[name]["answer"], "accepted");
        let w = m[name]["warning"].as_str().unwrap_or_default();
        assert!(w.contains("later stages have started"), "{name}: {w}");
    }
    let w = m["leaf"]["warning"].as_str().unwrap_or_default();
    assert!(
        w.contains("the registry expects synced (wait = true)"),
        "{w}"
    );
    assert_eq!(summary["warnings"], 3);
    assert_eq!(summary["failed"], 0);

    let out = mirrorpush(&path, &["push", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: hub (stage 1): answered accepted, not synced"),
        "{text}"
    );
    assert!(
        text.contains("warning: leaf (stage 2): answered accepted"),
        "{text}"
    );
    assert!(
        text.contains("3 mirror(s): 3 ok, 0 failed, 3 warning(s)"),
        "{text}"
    );
}

/// Wait mode: the handler answers `synced` once a run covering the push has ended, so the
/// content is on the mirror when the master reports it, and the propagation line counts it.
#[test]
fn wait_mode_mirrors_answer_synced_and_the_summary_counts_them() {
    let lab = lab(2, "wait");
    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry("hub", lab.mirrors[0].port, "wait = true");
    reg += &entry("leaf", lab.mirrors[1].port, "stage = 2");
    let path = write_registry(&lab, &reg);
    let out = mirrorpush(&path, &["push", "--json", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (m, _, summary) = parse_json(&out);
    for (i, name) in ["hub", "leaf"].iter().enumerate() {
        assert_eq!(m[*name]["answer"], "synced", "{}", m[*name]);
        assert!(m[*name]["warning"].is_null(), "{}", m[*name]);
        // Synced means on disk when the answer came.
        assert!(
            lab.in_sync(i, "fedora"),
            "{name} answered synced before it was"
        );
    }
    assert_eq!(summary["synced"], 2);
    let within = summary["synced_within_ms"].as_u64().unwrap();
    let leaf_end =
        m["leaf"]["started_ms"].as_u64().unwrap() + m["leaf"]["elapsed_ms"].as_u64().unwrap();
    assert_eq!(within, leaf_end);
    assert!(summary["propagation"]
        .as_str()
        .unwrap()
        .starts_with("2 of 2 mirror(s) synced within "));
}

#[test]
fn selection_by_mirror_and_tag() {
    let lab = lab(3, "wait");
    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry("m1", lab.mirrors[0].port, "tags = [\"eu\"]");
    reg += &entry("m2", lab.mirrors[1].port, "tags = [\"us\"]");
    reg += &entry(
        "m3",
        lab.mirrors[2].port,
        "tags = [\"us\"]\nenabled = false",
    );
    let path = write_registry(&lab, &reg);

    let out = mirrorpush(&path, &["push", "--json", "--tag", "us", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (mirrors, _, _) = parse_json(&out);
    // m3 carries the tag but is disabled.
    assert_eq!(mirrors.keys().collect::<Vec<_>>(), ["m2"]);
    assert!(lab.in_sync(1, "fedora"));
    assert!(!lab.in_sync(0, "fedora") && !lab.in_sync(2, "fedora"));

    let out = mirrorpush(&path, &["push", "--json", "--mirror", "m1", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (mirrors, _, _) = parse_json(&out);
    assert_eq!(mirrors.keys().collect::<Vec<_>>(), ["m1"]);
    assert!(lab.in_sync(0, "fedora"));
    assert!(!lab.in_sync(2, "fedora"));

    // A mirror name not in the registry is a usage error, not a push to nobody.
    let out = mirrorpush(&path, &["push", "--mirror", "nope", "fedora"]);
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
    // So is a request the grammar refuses; nothing is sent.
    let out = mirrorpush(&path, &["push", "fedora", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
}

#[test]
fn list_and_dry_run_connect_to_nobody() {
    let lab = lab(2, "wait");
    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry(
        "m1",
        lab.mirrors[0].port,
        "tags = [\"eu\", \"tier1\"]\nstage = 2",
    );
    reg += &entry("m2", lab.mirrors[1].port, "enabled = false");
    reg += "\n[[mirror]]\nname = \"m3\"\nhost = \"127.0.0.1\"\nport = 1\nmodules = [\"debian\"]\n";
    let path = write_registry(&lab, &reg);
    // sshd at LogLevel VERBOSE logs "Connection from ..." for every TCP connection it accepts.
    let connections = || -> usize {
        lab.mirrors
            .iter()
            .map(|m| {
                std::fs::read_to_string(&m.sshd_log)
                    .unwrap_or_default()
                    .matches("Connection from")
                    .count()
            })
            .sum()
    };
    // The lab's own readiness probe may have connected once; wait until that is logged.
    std::thread::sleep(Duration::from_millis(300));
    let before = connections();

    let out = mirrorpush(&path, &["push", "--dry-run", "fedora", "releases/41"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("m1"))
        .expect("m1 listed");
    for part in [
        format!("127.0.0.1:{}", lab.mirrors[0].port).as_str(),
        lab.user.as_str(),
        "stage 2",
        "eu,tier1",
        "sync fedora releases/41",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    assert!(text.contains("not selected: m2 (disabled"), "{text}");
    assert!(
        text.contains("not selected: m3 (does not carry module fedora)"),
        "{text}"
    );

    let out = mirrorpush(&path, &["push", "--dry-run", "--json", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let plan: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(plan[0]["request"], "sync fedora");
    assert_eq!(plan[0]["selected"], true);
    assert_eq!(plan[1]["selected"], false);

    let out = mirrorpush(&path, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("m3") && text.contains("sync debian"),
        "{text}"
    );
    let out = mirrorpush(&path, &["list", "--module", "fedora", "--tag", "eu"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("m1"), "{text}");
    assert!(text.contains("not selected: m3"), "{text}");

    // Nothing reached any sshd.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(connections(), before);
    assert!(!lab.in_sync(0, "fedora"));
    // The probe does see a real push (so the check above can fail).
    let out = mirrorpush(&path, &["push", "fedora"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    assert!(lab.wait_until(DEADLINE, || connections() == before + 1));
}

#[test]
fn check_validates_registry_keys_and_known_hosts() {
    let lab = lab(1, "wait");
    let out = mirrorpush(&lab.registry, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));

    let mut reg = defaults(&lab, "10s", "1m");
    reg += &entry("known", lab.mirrors[0].port, "");
    reg += &entry("unknown", 1, "");
    reg += &entry(
        "nokey",
        lab.mirrors[0].port,
        "identity = \"/nonexistent/id\"",
    );
    let path = write_registry(&lab, &reg);
    let out = mirrorpush(&path, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mirror unknown: no host key for [127.0.0.1]:1"),
        "{text}"
    );
    assert!(
        text.contains("identity /nonexistent/id (mirror nokey): cannot read"),
        "{text}"
    );
    assert!(!text.contains("mirror known:"), "{text}");

    // An unreadable known_hosts is an error at push time too, before any connection.
    let reg = defaults(&lab, "10s", "1m")
        .replace(&lab.known_hosts.display().to_string(), "/nonexistent/kh")
        + &entry("m", lab.mirrors[0].port, "");
    let path = write_registry(&lab, &reg);
    let out = mirrorpush(&path, &["push", "fedora"]);
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("known_hosts /nonexistent/kh"),
        "{}",
        dump(&out)
    );
}

/// Every kind of bad mirror in one push: each fails with its own cause, the healthy one still
/// succeeds, and the push ends within the timeouts.
#[test]
fn faults_are_isolated_in_one_push() {
    let lab = lab(5, "detach");
    let tmp = tempfile::tempdir().unwrap();
    // A big upstream file, so the bandwidth-limited mirror is slower than its timeout.
    let mut big = std::fs::File::create(lab.upstream_dir("fedora").join("big.iso")).unwrap();
    big.write_all(&vec![7u8; 2 << 20]).unwrap();
    drop(big);

    // mirror2 is listed with mirror1's host key: a mismatch.
    let wrong_kh = tmp.path().join("wrong_known_hosts");
    let key0 = lab.mirrors[0]
        .host_key_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &wrong_kh,
        format!("[127.0.0.1]:{} {key0}\n", lab.mirrors[1].port),
    )
    .unwrap();
    // An empty known_hosts: mirror1 is unknown there.
    let empty_kh = tmp.path().join("empty_known_hosts");
    std::fs::write(&empty_kh, "").unwrap();
    // A key no mirror authorizes.
    let stranger = tmp.path().join("stranger");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    // mirror4 does not configure the module: the handler refuses (77).
    let refusing = lab
        .handler_toml(3, "")
        .replace("[modules.fedora]", "[modules.other]");
    lab.write_handler_config(3, &refusing).unwrap();
    // mirror5 holds the session until a bandwidth-limited sync ends: slower than `timeout`.
    let slow = lab
        .handler_toml(4, "rsync_args = [\"--bwlimit=1\"]")
        .replace("mode = \"detach\"", "mode = \"wait\"");
    lab.write_handler_config(4, &slow).unwrap();
    // A port nobody listens on, and a listener that accepts TCP and never speaks.
    let refused_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();

    let mut reg = defaults(&lab, "3s", "8s");
    reg += &entry("healthy", lab.mirrors[0].port, "");
    reg += &entry(
        "wrong-key",
        lab.mirrors[1].port,
        &format!("known_hosts = {:?}", wrong_kh.display().to_string()),
    );
    reg += &entry(
        "unknown-host",
        lab.mirrors[0].port,
        &format!("known_hosts = {:?}", empty_kh.display().to_string()),
    );
    reg += &entry(
        "auth-refused",
        lab.mirrors[2].port,
        &format!("identity = {:?}", stranger.display().to_string()),
    );
    reg += &entry("handler-refusal", lab.mirrors[3].port, "");
    reg += &entry("slow", lab.mirrors[4].port, "");
    reg += &entry("refused-port", refused_port, "retries = 1");
    reg += &entry("silent", silent_port, "");
    let path = write_registry(&lab, &reg);

    let begun = Instant::now();
    let out = mirrorpush(&path, &["push", "--json", "fedora"]);
    let took = begun.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    assert!(took < Duration::from_secs(40), "push took {took:?}");
    let (m, _, summary) = parse_json(&out);
    let error = |name: &str| m[name]["error"].as_str().unwrap_or("").to_owned();

    assert_eq!(m["healthy"]["ok"], true, "{}", m["healthy"]);
    assert!(lab.wait_until(DEADLINE, || lab.in_sync(0, "fedora")));
    for name in ["wrong-key", "unknown-host"] {
        assert_eq!(m[name]["ok"], false);
        assert!(error(name).contains("host key"), "{name}: {}", error(name));
        assert!(m[name]["exit_status"].is_null());
    }
    assert!(
        error("wrong-key").contains("mismatch"),
        "{}",
        error("wrong-key")
    );
    assert!(
        error("unknown-host").contains("unknown host"),
        "{}",
        error("unknown-host")
    );
    assert!(
        error("auth-refused").contains("authentication refused"),
        "{}",
        error("auth-refused")
    );
    assert_eq!(
        m["handler-refusal"]["exit_status"], 77,
        "{}",
        m["handler-refusal"]
    );
    assert!(
        error("handler-refusal").contains("not permitted"),
        "{}",
        error("handler-refusal")
    );
    assert_eq!(m["handler-refusal"]["attempts"], 1);
    assert!(error("slow").contains("timed out"), "{}", error("slow"));
    assert!(m["slow"]["exit_status"].is_null());
    assert!(
        error("refused-port").contains("refused"),
        "{}",
        error("refused-port")
    );
    // Connection-level failures are retried as configured.
    assert_eq!(m["refused-port"]["attempts"], 2);
    assert!(
        error("silent").contains("connect_timeout"),
        "{}",
        error("silent")
    );
    assert_eq!(summary["ok"], 1);
    assert_eq!(summary["failed"], 7);

    // Host key and auth refusals happen before the handler ran: its mirrors saw no request.
    assert!(!lab.in_sync(1, "fedora"));
    assert!(!lab.in_sync(2, "fedora"));
    drop(silent);
}

/// Ctrl-C: no new sessions, open ones closed, the summary so far printed, exit 130.
#[test]
fn ctrl_c_stops_cleanly_with_a_summary() {
    let lab = lab(2, "wait");
    let mut big = std::fs::File::create(lab.upstream_dir("fedora").join("big.iso")).unwrap();
    big.write_all(&vec![7u8; 2 << 20]).unwrap();
    drop(big);
    for i in 0..2 {
        let slow = lab.handler_toml(i, "rsync_args = [\"--bwlimit=1\"]");
        lab.write_handler_config(i, &slow).unwrap();
    }
    let mut reg = defaults(&lab, "10s", "5m");
    reg += &entry("slow1", lab.mirrors[0].port, "");
    reg += &entry("later", lab.mirrors[1].port, "stage = 2");
    let path = write_registry(&lab, &reg);
    let child = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(&path)
        .args(["push", "--json", "fedora"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Wait until the slow session is open (its sshd logged the login), then interrupt.
    let log = lab.mirrors[0].sshd_log.clone();
    assert!(lab.wait_until(DEADLINE, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Accepted publickey")));
    std::thread::sleep(Duration::from_millis(500));
    let begun = Instant::now();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(begun.elapsed() < Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(130), "{}", dump(&out));
    let (m, _, summary) = parse_json(&out);
    assert!(m["slow1"]["error"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    // Stage 2 never started.
    assert!(!m.contains_key("later"));
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["not_started"], 1);
    assert_eq!(summary["failed"], 1);
}
