//! `verify` against hostile mirrors' web servers (a real HTTP client against real sockets):
//! huge files, slow drips, redirect loops, redirects elsewhere, HTML where a trace was expected,
//! terminal escapes in what they serve. Every fetch is bounded; every output is escaped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mirrorpush::history::{History, NewMirror, NewPush};
use serde_json::Value;

const TRACE: &str = "project/trace/m";

/// Answers each request by the first path component; runs until the test process ends.
fn hostile_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, port));
        }
    });
    port
}

fn serve(mut s: TcpStream, port: u16) {
    let mut line = String::new();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let kind = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let ok = |body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let redirect = |to: &str| {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let reply: Vec<u8> = match kind {
        "good" => ok(b"Archive serial: 42\n"),
        "escape" => ok(b"Archive serial: 4\x1b]0;pwned\x07\x1b[2J\xe2\x80\xae1\n"),
        "html" => ok(b"<html><body>\x1b[31mNot a trace</body></html>"),
        "missing" => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
        "loop" => redirect(&format!("http://127.0.0.1:{port}/loop/{}", path.len())),
        "elsewhere" => redirect("file:///etc/passwd"),
        "huge" => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b'A'; 65536];
            for _ in 0..16384 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
            return;
        }
        "drip" => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
            );
            for _ in 0..100000 {
                if s.write_all(b"A").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            return;
        }
        _ => b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec(),
    };
    let _ = s.write_all(&reply);
}

fn run(registry: &Path, history: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .arg("--history")
        .arg(history)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn hostile_web_servers_are_bounded_classified_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let port = hostile_server();
    let kinds = [
        "good",
        "escape",
        "html",
        "missing",
        "loop",
        "elsewhere",
        "huge",
        "drip",
    ];
    let mut registry = String::from("[defaults]\nconnect_timeout = \"2s\"\ntimeout = \"3s\"\n");
    for k in kinds {
        registry.push_str(&format!(
            "\n[[mirror]]\nname = \"{k}\"\nmodules = [\"fedora\"]\nurl = \"http://127.0.0.1:{port}/{k}/\"\nverify = \"trace:{TRACE}\"\n"
        ));
    }
    let registry_path = dir.path().join("mirrors.toml");
    std::fs::write(&registry_path, registry).unwrap();
    // The push as the master recorded it: every mirror answered synced, master serial 42.
    let history = dir.path().join("history.db");
    let mut h = History::open(&history).unwrap();
    let id = h
        .begin_push(&NewPush {
            module: "fedora".into(),
            started_ms: mirrorpush::history::now_ms(),
            who: "test".into(),
            serial: Some("42".into()),
            proofs: vec![(format!("trace:{TRACE}"), Ok("42".into()))],
            mirrors: kinds
                .iter()
                .map(|k| NewMirror {
                    name: (*k).into(),
                    transport: "ssh".into(),
                    proof: Some(format!("trace:{TRACE}")),
                })
                .collect(),
            ..NewPush::default()
        })
        .unwrap();
    for k in kinds {
        h.record_answer(
            id,
            &mirrorpush::history::Answered {
                mirror: k.into(),
                ok: true,
                answer: Some("synced".into()),
                answered_ms: mirrorpush::history::now_ms(),
                ..Default::default()
            },
        )
        .unwrap();
    }
    drop(h);

    let started = Instant::now();
    let out = run(&registry_path, &history, &["verify", "--json"]);
    // Bounded by the mirrors' 3 s timeout, not by the drip or the gigabyte.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(!text.contains('\u{202e}'), "{text:?}");
    let mut by: std::collections::HashMap<String, Value> = Default::default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(name) = v["mirror"].as_str() {
            by.insert(name.to_owned(), v);
        }
    }
    let class = |k: &str| by[k]["error_class"].as_str().unwrap_or("-").to_owned();
    let state = |k: &str| by[k]["state"].as_str().unwrap().to_owned();
    assert_eq!(state("good"), "verified", "{text}");
    assert_eq!(
        (state("escape"), class("escape")),
        ("stale".into(), "stale".into())
    );
    assert_eq!(
        (state("html"), class("html")),
        ("stale".into(), "stale".into())
    );
    assert_eq!(class("missing"), "http-404");
    assert_eq!(class("loop"), "redirects");
    assert_eq!(class("elsewhere"), "redirects", "{text}");
    assert_eq!(class("huge"), "too-large");
    assert_eq!(class("drip"), "timeout");
    // What a mirror served comes back to a JSON reader exactly.
    assert!(by["escape"]["detail"]
        .as_str()
        .unwrap()
        .contains("\u{1b}]0;pwned"));

    // The human output shows the same, escaped.
    let out = run(
        &registry_path,
        &history,
        &["verify", "--mirror", "escape", "--mirror", "html"],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{text:?}"
    );
    assert!(text.contains("\\u{1b}]0;pwned"), "{text}");
    assert!(text.contains("push 1: 0 of 2 verified"), "{text}");
}
