//! Verification from outside, end to end: real sshd mirrors forcing the handler push-sync from
//! the lab's rsync upstream; their public trees are served by Debian's nginx and by an rsync
//! daemon; `mirrorpush verify` fetches the proofs and records them in the history.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mirrorpush::history::History;
use mirrorpush_lab::web::{Nginx, Site};
use mirrorpush_lab::{Lab, LabOptions};
use serde_json::Value;

const OLD_SERIAL: &str = "2026113000";
const NEW_SERIAL: &str = "2026113001";
const REPOMD: &str = "updates/41/x86_64/repodata/repomd.xml";

fn mirrorpush(registry: &Path, history: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .arg("--history")
        .arg(history)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("mirrorpush runs")
}

fn dump(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `verify --json`'s mirror objects by name, and its summary.
fn verify_json(out: &Output) -> (std::collections::HashMap<String, Value>, Value) {
    let mut mirrors = std::collections::HashMap::new();
    let mut summary = Value::Null;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(s) = v.get("summary") {
            summary = s.clone();
        } else {
            mirrors.insert(v["mirror"].as_str().unwrap().to_owned(), v);
        }
    }
    (mirrors, summary)
}

fn write_trace(tree: &Path, name: &str, serial: &str) {
    let dir = tree.join("project/trace");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(name),
        format!("Mon Nov 30 10:00:00 UTC 2026\nDate: Mon, 30 Nov 2026 10:00:00 +0000\nArchive serial: {serial}\n"),
    )
    .unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A TCP server that accepts connections and never answers: a web server that hangs.
/// The thread is left running when the test ends (the test process exits).
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            if held.len() > 16 {
                break;
            }
        }
        // Read nothing, answer nothing; the sockets close when the thread ends.
        let mut buf = [0u8; 1];
        for mut s in held {
            let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
            let _ = s.read(&mut buf);
        }
    });
    port
}

#[test]
fn a_push_is_verified_from_outside_and_a_frozen_web_root_is_stale() {
    let mut lab = Lab::start(LabOptions {
        mirrors: 3,
        modules: vec!["fedora".into()],
        handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
        mode: "detach".into(),
        ..Default::default()
    })
    .expect("lab starts");
    let upstream = lab.upstream_dir("fedora");
    // The old publish: what the frozen mirror's web root keeps serving.
    write_trace(&upstream, "master", OLD_SERIAL);
    let frozen = lab.root.join("frozen-www");
    copy_tree(&upstream, &frozen);
    write_trace(&frozen, "mirror3", OLD_SERIAL);
    // The new publish.
    write_trace(&upstream, "master", NEW_SERIAL);
    std::fs::write(upstream.join(REPOMD), "<repomd rev=\"8\"/>\n").unwrap();

    // Every mirror writes its own trace; mirror3 syncs in wait mode, so it answers synced.
    for i in 0..3 {
        let name = &lab.mirrors[i].name;
        let mut text = lab.handler_toml(i, &format!("trace = \"project/trace/{name}\""));
        if i == 2 {
            text = text.replace("mode = \"detach\"", "mode = \"wait\"");
        }
        lab.write_handler_config(i, &text).unwrap();
    }
    // Public trees: mirror1 and mirror3 by nginx (mirror3's web root is the frozen copy),
    // mirror2 by an rsync daemon.
    let sites = [
        Site {
            prefix: "mirror1".into(),
            root: lab.mirrors[0].dest("fedora"),
        },
        Site {
            prefix: "mirror3".into(),
            root: frozen.clone(),
        },
    ];
    let owner = Some((lab.uid, lab.gid)).filter(|_| unsafe { libc::geteuid() } == 0);
    let mut nginx = Nginx::start(&lab.root.join("nginx"), &sites, owner).expect("nginx starts");
    let dest2 = lab.mirrors[1].dest("fedora");
    let rsync_port = lab
        .serve("mirror2-public", &[("fedora".to_owned(), dest2)])
        .unwrap();
    let silent_port = silent_server();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut registry = lab
        .registry_toml("")
        .split("\n[[mirror]]")
        .next()
        .unwrap()
        .to_owned();
    registry.push_str(&format!(
        "\n[verify]\ntree = {:?}\n",
        upstream.display().to_string()
    ));
    let entry = |i: usize, extra: String| {
        format!(
            "\n[[mirror]]\nname = {:?}\nhost = \"127.0.0.1\"\nport = {}\nmodules = [\"fedora\"]\n{extra}\n",
            lab.mirrors[i].name, lab.mirrors[i].port
        )
    };
    registry.push_str(&entry(
        0,
        format!(
            "url = {:?}\nverify = \"trace:project/trace/mirror1\"",
            nginx.url("mirror1")
        ),
    ));
    registry.push_str(&entry(
        1,
        format!(
            "url = {{ fedora = \"rsync://127.0.0.1:{rsync_port}/fedora/\" }}\nverify = \"file:{REPOMD}\""
        ),
    ));
    registry.push_str(&entry(
        2,
        format!(
            "url = \"http://127.0.0.1:{}/mirror3/\"\nverify = \"trace:project/trace/mirror3\"",
            nginx.port
        ),
    ));
    // A mirror whose SSH port is closed (the push fails) and whose web server hangs.
    registry.push_str(&format!(
        "\n[[mirror]]\nname = \"hanging\"\nhost = \"127.0.0.1\"\nport = {closed_port}\nmodules = [\"fedora\"]\n\
         connect_timeout = \"1s\"\ntimeout = \"2s\"\nurl = \"http://127.0.0.1:{silent_port}/{{module}}\"\n\
         verify = \"file:{REPOMD}\"\n"
    ));
    let registry_path = lab.root.join("verify-mirrors.toml");
    std::fs::write(&registry_path, &registry).unwrap();
    let history = lab.root.join("verify-history.db");

    let out = mirrorpush(&registry_path, &history, &["push", "fedora"]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().last(), Some("push 1"), "{}", dump(&out));

    // Watch until the detached syncs land; the frozen mirror and the hanging one never match.
    let started = Instant::now();
    let out = mirrorpush(
        &registry_path,
        &history,
        &["verify", "--watch", "--until", "15s", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let (mirrors, summary) = verify_json(&out);
    assert_eq!(mirrors["mirror1"]["state"], "verified", "{}", dump(&out));
    assert_eq!(mirrors["mirror2"]["state"], "verified", "{}", dump(&out));
    assert!(mirrors["mirror1"]["verified_after_ms"].as_i64().is_some());
    assert_eq!(mirrors["mirror3"]["state"], "stale", "{}", dump(&out));
    assert_eq!(mirrors["mirror3"]["error_class"], "stale");
    assert_eq!(mirrors["hanging"]["state"], "error");
    assert_eq!(
        mirrors["hanging"]["error_class"],
        "timeout",
        "{}",
        dump(&out)
    );
    assert_eq!(summary["push"], 1);
    assert_eq!(summary["selected"], 4);
    assert_eq!(summary["verified"], 2);
    assert_eq!(summary["stale"], 1);
    assert_eq!(summary["errors"], 1);
    // --until bounds the whole watch (the hanging mirror and the stale one included).
    assert!(started.elapsed() < Duration::from_secs(60));

    // The history holds what was proven, and when.
    let h = History::open(&history).unwrap();
    let push = h.push(1).unwrap().unwrap();
    assert_eq!(push.serial.as_deref(), Some(NEW_SERIAL));
    assert_eq!(push.outcome.as_deref(), Some("failed"));
    let rows = h.mirrors(1).unwrap();
    let row = |n: &str| rows.iter().find(|r| r.mirror == n).unwrap().clone();
    assert_eq!(row("mirror1").verified_serial.as_deref(), Some(NEW_SERIAL));
    assert!(row("mirror2").verified.is_some());
    assert_eq!(row("mirror3").answer.as_deref(), Some("synced"));
    assert_eq!(row("mirror3").verified, None);
    assert_eq!(row("mirror3").state.as_deref(), Some("stale"));
    assert_eq!(row("hanging").ok, Some(false));
    assert_eq!(row("mirror1").transport, "ssh");
    drop(h);

    // The report says the same.
    let out = mirrorpush(&registry_path, &history, &["report", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["verified"], 2);
    let stragglers = last["summary"]["stragglers"].as_array().unwrap();
    assert!(stragglers.iter().any(|s| s == "mirror3"), "{last}");

    // A dead web server is an error class, at once, not a hang.
    nginx.stop();
    let started = Instant::now();
    let out = mirrorpush(
        &registry_path,
        &history,
        &[
            "verify", "--mirror", "mirror3", "--mirror", "mirror1", "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let (mirrors, _) = verify_json(&out);
    assert_eq!(
        mirrors["mirror3"]["error_class"],
        "connect",
        "{}",
        dump(&out)
    );
    // Verified once stays verified: the first proof is history.
    assert_eq!(mirrors["mirror1"]["state"], "verified");
    assert!(started.elapsed() < Duration::from_secs(30));
}
