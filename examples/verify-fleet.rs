//! Benchmark support for `benches/verify.sh` (development only):
//!
//! - `verify-fleet serve N DIR`: N simulated mirrors' web servers (one process, N loopback
//!   ports, each serving the module's trace file over HTTP/1.1), a registry naming them
//!   (`DIR/mirrors.toml`, `url` and `verify = "trace:..."` per mirror) and a history holding one
//!   push to all of them (`DIR/history.db`, every mirror answered synced, master serial 42).
//!   Prints `ready` and serves until stdin closes.
//! - `verify-fleet history DB PUSHES MIRRORS`: writes PUSHES finished pushes to MIRRORS mirrors
//!   each into DB through the history module (as `push` and `verify` would have recorded them),
//!   and prints how long that took and the database's size.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use mirrorpush::history::{now_ms, Answered, History, MirrorRow, NewMirror, NewPush, PushRow};

const TRACE: &str = "project/trace/mirror";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", n, dir] => serve(n.parse().expect("N"), Path::new(dir)),
        ["history", db, pushes, mirrors] => history(
            Path::new(db),
            pushes.parse().expect("PUSHES"),
            mirrors.parse().expect("MIRRORS"),
        ),
        _ => {
            eprintln!("usage: verify-fleet serve N DIR | verify-fleet history DB PUSHES MIRRORS");
            std::process::exit(2);
        }
    }
}

fn serve(n: usize, dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ports: Vec<u16> = rt.block_on(async {
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(answer(sock));
                }
            });
        }
        ports
    });
    let mut registry = String::from(
        "[defaults]\nconnect_timeout = \"10s\"\ntimeout = \"30s\"\nconcurrency = 64\n",
    );
    for (i, port) in ports.iter().enumerate() {
        registry.push_str(&format!(
            "\n[[mirror]]\nname = \"m{i:04}\"\nhost = \"127.0.0.1\"\nmodules = [\"fedora\"]\n\
             url = \"http://127.0.0.1:{port}/{{module}}/\"\nverify = \"trace:{TRACE}\"\n"
        ));
    }
    std::fs::write(dir.join("mirrors.toml"), registry).unwrap();
    let mut h = History::open(&dir.join("history.db")).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("m{i:04}")).collect();
    let id = h
        .begin_push(&NewPush {
            module: "fedora".into(),
            started_ms: now_ms(),
            who: "bench".into(),
            serial: Some("42".into()),
            proofs: vec![(format!("trace:{TRACE}"), Ok("42".into()))],
            mirrors: names
                .iter()
                .map(|m| NewMirror {
                    name: m.clone(),
                    transport: "ssh".into(),
                    proof: Some(format!("trace:{TRACE}")),
                })
                .collect(),
            ..NewPush::default()
        })
        .unwrap();
    for m in &names {
        h.record_answer(
            id,
            &Answered {
                mirror: m.clone(),
                ok: true,
                answer: Some("synced".into()),
                answered_ms: now_ms(),
                ..Answered::default()
            },
        )
        .unwrap();
    }
    drop(h);
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// One request, one answer: the trace file (a real one is about this size), then close.
async fn answer(mut sock: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => got += k,
        }
        if got == buf.len() {
            return;
        }
    }
    let body = "Mon Nov 30 10:00:00 UTC 2026\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n\
                Date-Started: Mon, 30 Nov 2026 09:59:00 +0000\nArchive serial: 42\n\
                Creator: mirrorpush 0.1.0\nRunning on host: mirror.example.net\n";
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn history(db: &Path, pushes: usize, mirrors: usize) {
    let started = Instant::now();
    let mut h = History::open(db).unwrap();
    let t0: i64 = 1_790_000_000_000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let names: Vec<String> = (0..mirrors)
        .map(|i| format!("mirror{i:04}.example.net"))
        .collect();
    let batch = 50;
    let mut p = 0;
    while p < pushes {
        let mut chunk = Vec::with_capacity(batch);
        for q in p..(p + batch).min(pushes) {
            let start = t0 + q as i64 * 600_000;
            let push = PushRow {
                id: 0,
                module: if q % 3 == 0 { "epel" } else { "fedora" }.into(),
                dir: None,
                serial: Some(format!("{}", 2026000000 + q)),
                started: start,
                ended: Some(start + 60_000),
                who: "release@master".into(),
                outcome: Some("ok".into()),
            };
            let rows: Vec<MirrorRow> = names
                .iter()
                .map(|m| {
                    let synced = start + (next() % 60_000) as i64;
                    let verified = (next() % 50 != 0).then(|| synced + (next() % 120_000) as i64);
                    MirrorRow {
                        mirror: m.clone(),
                        transport: "ssh".into(),
                        answer: Some("synced".into()),
                        ok: Some(true),
                        answered: Some(synced),
                        synced: Some(synced),
                        verified,
                        verified_serial: verified.map(|_| format!("{}", 2026000000 + q)),
                        proof: Some(format!("trace:{TRACE}")),
                        state: Some(
                            if verified.is_some() {
                                "verified"
                            } else {
                                "stale"
                            }
                            .into(),
                        ),
                        error_class: verified.is_none().then(|| "stale".into()),
                        checked: Some(synced + 130_000),
                        ..MirrorRow::default()
                    }
                })
                .collect();
            chunk.push((push, rows));
        }
        h.insert_finished(&chunk).unwrap();
        p += batch;
    }
    drop(h);
    let size: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "pushes={pushes} mirrors={mirrors} rows={} seconds={:.1} bytes={size}",
        pushes * mirrors,
        started.elapsed().as_secs_f64()
    );
}
