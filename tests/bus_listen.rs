//! `mirrorpush-listen` through the lab's own RabbitMQ broker and real lab mirrors: signed
//! triggers and acks, refusals, a Fedora-shaped hint from the real fedora-messaging client,
//! and faults (broker restart, kill -9 of the listener, a burst of 10,000 triggers).
//!
//! One broker serves the whole file (it takes seconds to boot); each test has its own lab,
//! queue and topic prefix. The broker-restart test takes the broker for itself.

mod bus_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use bus_common::{publish, run, write_script, AckQueue, BusLab, LONG};
use mirrorpush::bus::envelope::{self, AckResult, Envelope};
use mirrorpush_lab::broker::{self, BrokerOptions};
use mirrorpush_lab::keygen;
use ssh_key::PrivateKey;

/// Readers: tests that use the broker; the writer: the test that restarts it.
static BROKER_USE: RwLock<()> = RwLock::new(());

fn shared_broker() -> &'static std::sync::Mutex<Option<broker::Broker>> {
    broker::shared(BrokerOptions::default()).expect("the lab's broker starts")
}

/// The broker's URL, and a guard that keeps the restart test away.
fn broker_url() -> (String, RwLockReadGuard<'static, ()>) {
    let guard = BROKER_USE.read().unwrap_or_else(|p| p.into_inner());
    let url = shared_broker()
        .lock()
        .unwrap()
        .as_ref()
        .expect("broker running")
        .url();
    (url, guard)
}

fn bodies(envs: &[Envelope]) -> Vec<(String, Vec<u8>)> {
    envs.iter()
        .map(|e| {
            let id = envelope::Trigger::parse(&e.payload)
                .map(|t| t.id.to_string())
                .unwrap_or_default();
            (id, e.to_json().into_bytes())
        })
        .collect()
}

#[test]
fn a_signed_trigger_syncs_the_mirror_and_a_signed_ack_comes_back() {
    let (url, _g) = broker_url();
    let b = BusLab::new("wait", &["fedora"]);
    let acks = AckQueue::new(&url, &b.ack_topic(), &format!("acks.{}", b.lab.user));
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &[], ""));
    let (code, out, err) = b.listen_cmd(&config, &["check"], b"");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("broker: connected"), "{out}");
    let listener = b.start_listener(&config);
    listener.wait_connected(1);

    fs::write(
        b.lab.upstream_dir("fedora").join("updates/new.rpm"),
        "new\n",
    )
    .unwrap();
    let (t, env) = b.trigger("sync fedora updates", SystemTime::now());
    publish(&url, &b.sync_topic("fedora"), &bodies(&[env])).unwrap();
    b.wait(&listener, "the mirror to sync", || {
        b.lab.mirrors[0]
            .dest("fedora")
            .join("updates/new.rpm")
            .exists()
    });
    let got = acks.take(1, &b.ack_pub, LONG);
    assert_eq!(got.len(), 1, "{}", listener.log());
    let ack = &got[0];
    assert_eq!(ack.id, t.id);
    assert_eq!(ack.mirror.as_str(), "mirror1.lab");
    assert_eq!(ack.request, t.request);
    // A wait-mode module: the hand-off waits for the run that covers it, so the ack reports
    // the sync itself (a detach module's ack says `accepted` at once: tests/bus_push.rs).
    assert_eq!(ack.result, AckResult::Synced, "{ack:?}");
    b.wait(&listener, "the status to count it", || {
        let s = b.status_json(&config);
        s["accepted"] == 1 && s["acks_published"] == 1
    });
    assert_eq!(b.status_json(&config)["broker"], "connected");
    assert_eq!(b.handler_requests().len(), 1);
}

#[test]
fn refusals_run_nothing_and_log_a_line_each() {
    let (url, _g) = broker_url();
    let b = BusLab::new("detach", &["fedora", "epel"]);
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &["fedora"], ""));
    let listener = b.start_listener(&config);
    listener.wait_connected(1);
    let now = SystemTime::now();
    let topic = b.sync_topic("fedora");

    let (_, mut tampered) = b.trigger("sync fedora updates", now);
    tampered.payload = tampered.payload.replace("updates", "releases");
    let other = b.lab.root.join("other_key");
    keygen(&other).unwrap();
    let other = PrivateKey::read_openssh_file(&other).unwrap();
    let (_, stranger) = bus_common::sign_trigger(&other, "sync fedora", now);
    let (_, epel) = b.trigger("sync epel", now);
    let (_, expired) = b.trigger("sync fedora", now - Duration::from_secs(3600));
    let (_, future) = b.trigger("sync fedora", now + Duration::from_secs(600));
    let bad_grammar = "mirrorpush-trigger 1\nrequest: sync fedora /etc\n\
        id: 0b7c6f0e-2f4e-4c8a-9a53-1d2e3f405162\nissued: 2026-11-30T10:00:00Z\norigin: master.lab\n";
    let grammar = Envelope::sign(
        bad_grammar.into(),
        envelope::TRIGGER_NAMESPACE,
        &b.master_key,
    )
    .unwrap();
    let mut sent = bodies(&[tampered, stranger, epel, expired, future, grammar]);
    sent.push(("not-json".into(), b"this is not JSON".to_vec()));
    // Over the listener's limit (64 KiB), under the broker's (1 MiB): refused unread.
    sent.push(("big".into(), vec![b'{'; 100 * 1024]));
    publish(&url, &topic, &sent).unwrap();

    // 100 MB: the broker refuses it (max_message_size), so no consumer ever holds it.
    let huge = vec![b' '; 100 * 1024 * 1024];
    let e = publish(&url, &topic, &[("huge".into(), huge)]).unwrap_err();
    assert!(
        e.contains("larger than") || e.contains("PRECONDITION"),
        "{e}"
    );

    // One good trigger, then the same again: a replay.
    let (good, env) = b.trigger("sync fedora", SystemTime::now());
    publish(&url, &topic, &bodies(std::slice::from_ref(&env))).unwrap();
    b.wait(&listener, "the good trigger", || {
        listener.count(&format!("accepted id={}", good.id)) == 1
    });
    publish(&url, &topic, &bodies(&[env])).unwrap();

    let reasons = [
        "signature",
        "unknown-signer",
        "not-allowed",
        "expired",
        "future",
        "grammar",
        "not-json",
        "too-large",
        "replay",
    ];
    b.wait(&listener, "a refusal of each kind", || {
        reasons
            .iter()
            .all(|r| listener.count(&format!("refused reason={r} ")) == 1)
    });
    let s = b.status_json(&config);
    for r in reasons {
        assert_eq!(s["refused"][r], 1, "{r}: {s}");
    }
    assert_eq!(s["accepted"], 1, "{s}");
    // Nothing but the good trigger reached the handler.
    assert_eq!(b.handler_requests().len(), 1, "{:?}", b.handler_requests());
    // Refused text is escaped: no raw newline from a payload reaches the log.
    assert!(listener
        .log()
        .lines()
        .all(|l| l.starts_with("mirrorpush-listen: ")));
}

fn bus_python() -> PathBuf {
    let venv = std::env::var_os("MIRRORPUSH_BUS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bus-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: scripts/install-deps.sh installs fedora-messaging there",
        python.display()
    );
    python
}

/// Publishes a bodhi-shaped message with the real fedora-messaging client.
fn fedora_messaging_publish(b: &BusLab, url: &str, topic: &str, body: &serde_json::Value) {
    let conf = b.lab.root.join("fedora-messaging.toml");
    fs::write(
        &conf,
        format!(
            "amqp_url = {url:?}\npublish_exchange = \"amq.topic\"\ntopic_prefix = \"org.fedoraproject.prod\"\n\
             passive_declares = true\n[client_properties]\napp = \"bodhi (mirrorpush lab)\"\n"
        ),
    )
    .unwrap();
    let script = "import json, sys\n\
                  from fedora_messaging import api, message\n\
                  msg = message.Message(topic=sys.argv[1], body=json.loads(sys.argv[2]))\n\
                  api.publish(msg)\n";
    let mut cmd = Command::new(bus_python());
    cmd.arg("-c")
        .arg(script)
        .arg(topic)
        .arg(body.to_string())
        .env("FEDORA_MESSAGING_CONF", &conf);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "fedora-messaging publish failed: {out}{err}");
}

#[test]
fn a_fedora_hint_published_before_the_list_is_regenerated_still_syncs_by_file_list() {
    let (url, _g) = broker_url();
    let b = BusLab::new("wait", &["fedora"]);
    b.lab
        .write_handler_config(
            0,
            &b.lab
                .handler_toml(0, "filelist = \"fullfiletimelist-fedora\"\n"),
        )
        .unwrap();
    let publish_list = || {
        let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
            .arg("filelist")
            .arg(b.lab.upstream_dir("fedora"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    publish_list();
    // The mirror starts in sync, with the list as its baseline.
    let mut local = b
        .lab
        .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-handler"));
    local
        .arg("--config")
        .arg(&b.lab.mirrors[0].handler_config)
        .args(["sync", "fedora"]);
    let (code, _, err) = run(local);
    assert_eq!(code, 0, "{err}");

    let hint = "\n[[trigger]]\ntopic = \"org.fedoraproject.prod.bodhi.updates.fedora.sync\"\n\
                module = \"fedora\"\nsettle = \"1s\"\nexpect_change = \"2m\"\n";
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &[], hint));
    let listener = b.start_listener(&config);
    listener.wait_connected(1);

    // bodhi announces the repo before it has rewritten the list.
    fedora_messaging_publish(
        &b,
        &url,
        "bodhi.updates.fedora.sync",
        &serde_json::json!({"repo": "f41-updates", "agent": "bodhi"}),
    );
    b.wait(&listener, "a null run after the hint", || {
        listener.count("found nothing new (file list unchanged)") >= 1
    });
    let fresh = b
        .lab
        .upstream_dir("fedora")
        .join("updates/41/x86_64/Packages/f/fresh-1.0.rpm");
    fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    fs::write(&fresh, "fresh package\n").unwrap();
    publish_list();
    b.wait(
        &listener,
        "the retried run to bring the new package",
        || {
            b.lab.mirrors[0]
                .dest("fedora")
                .join("updates/41/x86_64/Packages/f/fresh-1.0.rpm")
                .exists()
        },
    );
    b.wait(&listener, "the retried run to be logged", || {
        listener.log().contains("kinds=filelist")
    });
    b.wait(&listener, "the hint to be done", || {
        b.status_json(&config)["pending_hints"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    assert_eq!(b.status_json(&config)["hints"], 1);
}

#[test]
fn kill_9_between_delivery_and_hand_off_redelivers_and_runs_once() {
    let (url, _g) = broker_url();
    let b = BusLab::new("detach", &["fedora"]);
    // The handler as the listener sees it: the first call stops before the real handler
    // starts (a hand-off not yet made), so the listener can be killed right there.
    let dir = b.lab.root.join("hold");
    b.lab.create_dir_for_account(&dir).unwrap();
    let wrapper = dir.join("handler");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nif [ \"$3\" = sync ] && [ ! -e {open} ]; then touch {called}; exec sleep 600; fi\n\
             exec {real} \"$@\"\n",
            open = dir.join("open").display(),
            called = dir.join("called").display(),
            real = env!("CARGO_BIN_EXE_mirrorpush-handler"),
        ),
    );
    let text = b.listen_toml(Some(&url), &[], "").replace(
        env!("CARGO_BIN_EXE_mirrorpush-handler"),
        &wrapper.display().to_string(),
    );
    let config = b.write_listen_config(&text);
    let mut first = b.start_listener(&config);
    first.wait_connected(1);
    fs::write(b.lab.upstream_dir("fedora").join("late.rpm"), "late\n").unwrap();
    let (t, env) = b.trigger("sync fedora", SystemTime::now());
    publish(&url, &b.sync_topic("fedora"), &bodies(&[env])).unwrap();
    b.wait(&first, "the hand-off to begin", || {
        dir.join("called").exists()
    });
    first.kill9();
    // The held hand-off goes with it (a crash takes the listener's children too).
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmd.starts_with(b"sleep\x00600") {
            let stat = fs::metadata(e.path()).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
            if stat.is_ok_and(|uid| uid == b.lab.uid) {
                let pid: i32 = e.file_name().to_str().unwrap().parse().unwrap();
                // SAFETY: kill(2) on the lab account's sleeping wrapper, found in /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    assert!(b.handler_requests().is_empty(), "the handler never ran");
    assert!(!b.lab.mirrors[0].dest("fedora").join("late.rpm").exists());

    fs::write(dir.join("open"), "").unwrap();
    let second = b.start_listener(&config);
    second.wait_connected(1);
    b.wait(&second, "the redelivered trigger to sync", || {
        b.lab.mirrors[0].dest("fedora").join("late.rpm").exists()
    });
    assert_eq!(second.count(&format!("accepted id={}", t.id)), 1);
    assert!(second.log().contains(" redelivered"), "{}", second.log());
    b.wait(&second, "the id to be remembered", || {
        b.status_json(&config)["accepted"] == 1
    });
    assert_eq!(b.handler_requests().len(), 1, "run once");
}

#[test]
fn a_burst_of_10000_triggers_is_coalesced_into_a_few_runs_with_bounded_memory() {
    let (url, _g) = broker_url();
    let b = BusLab::new("detach", &["fedora"]);
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &[], ""));
    let listener = b.start_listener(&config);
    listener.wait_connected(1);
    const N: usize = 10_000;
    let requests = [
        "sync fedora",
        "sync fedora updates",
        "sync fedora releases/41",
    ];
    let t0 = std::time::Instant::now();
    let envs: Vec<Envelope> = (0..N)
        .map(|i| b.trigger(requests[i % requests.len()], SystemTime::now()).1)
        .collect();
    eprintln!("burst: signed in {:?}", t0.elapsed());
    fs::write(b.lab.upstream_dir("fedora").join("burst.rpm"), "burst\n").unwrap();
    publish(&url, &b.sync_topic("fedora"), &bodies(&envs)).unwrap();
    eprintln!("burst: published by {:?}", t0.elapsed());
    b.wait(&listener, "every trigger to be accepted", || {
        b.status_json(&config)["accepted"] == N as u64
    });
    // Detach mode: the last hand-off answered `accepted`; its runner may still be syncing.
    assert!(b.lab.wait_until(LONG, || b.lab.in_sync(0, "fedora")));
    let runs = b.handler_requests().len();
    // Each batch is at most the prefetch window (2048): at least 5 hand-offs, and coalescing
    // makes it one per batch rather than one per trigger.
    assert!(
        (1..=20).contains(&runs),
        "{runs} hand-offs for {N} triggers"
    );
    let s = b.status_json(&config);
    assert_eq!(s["refused"], serde_json::json!({}), "{s}");
    assert_eq!(s["acks_published"], N as u64, "{s}");
    let hwm = listener.vm_hwm_kb();
    eprintln!("burst: {N} triggers, {runs} hand-offs, listener VmHWM {hwm} kB");
    assert!(hwm < 200 * 1024, "listener peak memory {hwm} kB");
}

#[test]
fn a_broker_restart_while_triggers_are_published_loses_none_and_runs_each_once() {
    let _exclusive = BROKER_USE.write().unwrap_or_else(|p| p.into_inner());
    let url = shared_broker().lock().unwrap().as_ref().unwrap().url();
    let b = BusLab::new("detach", &["fedora"]);
    let acks = AckQueue::new(&url, &b.ack_topic(), &format!("acks.{}", b.lab.user));
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &[], ""));
    let listener = b.start_listener(&config);
    listener.wait_connected(1);
    let topic = b.sync_topic("fedora");
    let envs: Vec<Envelope> = (0..10)
        .map(|_| b.trigger("sync fedora", SystemTime::now()).1)
        .collect();
    publish(&url, &topic, &bodies(&envs[..5])).unwrap();

    shared_broker().lock().unwrap().as_mut().unwrap().stop();
    // Published while the broker is down: the publisher retries until it is back.
    let publisher = std::thread::scope(|s| {
        let h = s.spawn(|| {
            for _ in 0..600 {
                if publish(&url, &topic, &bodies(&envs[5..])).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        });
        std::thread::sleep(Duration::from_secs(1));
        shared_broker()
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .restart()
            .expect("the broker restarts");
        h.join().unwrap()
    });
    assert!(publisher, "the publisher never got through");
    listener.wait_connected(2);
    b.wait(&listener, "all ten accepted", || {
        b.status_json(&config)["accepted"] == 10
    });
    for e in &envs {
        let t = envelope::Trigger::parse(&e.payload).unwrap();
        assert_eq!(
            listener.count(&format!("accepted id={}", t.id)),
            1,
            "{}",
            listener.log()
        );
    }
    let got = acks.take(10, &b.ack_pub, LONG);
    let mut ids: Vec<String> = got.iter().map(|a| a.id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "{}", listener.log());
}

/// A TCP proxy to `port` on loopback that cuts every connection `after` it was accepted: a
/// broker that accepts and then drops. Runs until the test process ends.
fn dropping_proxy(port: u16, after: Duration) -> u16 {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                std::thread::sleep(after);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    local
}

#[test]
fn a_broker_that_accepts_and_drops_sees_the_reconnect_backoff_grow() {
    let (url, _g) = broker_url();
    let port = shared_broker().lock().unwrap().as_ref().unwrap().port;
    let proxy = dropping_proxy(port, Duration::from_millis(1500));
    let b = BusLab::new("detach", &["fedora"]);
    let proxied = url.replace(&format!(":{port}/"), &format!(":{proxy}/"));
    let config = b.write_listen_config(&b.listen_toml(Some(&proxied), &[], ""));
    let listener = b.start_listener(&config);
    // Each session is fully set up (queue declared, consuming) before the proxy cuts it.
    b.wait(&listener, "three sessions cut", || {
        listener.count("; reconnecting in ") >= 3
    });
    assert!(listener.count("mirrorpush-listen: connected ") >= 3);
    let waits: Vec<String> = listener
        .log()
        .lines()
        .filter_map(|l| l.split("; reconnecting in ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        waits[..3],
        ["500ms", "1s", "2s"],
        "a session that is dropped at once must not reset the backoff:\n{}",
        listener.log()
    );
}

/// Publishes with pika (fedora-messaging's AMQP library, in the same venv), which writes
/// properties and header values as given, bytes included: what a broken or hostile publisher
/// could send. `props` is Python for `pika.BasicProperties(...)`'s arguments.
fn pika_publish(url: &str, routing_key: &str, body: &[u8], props: &str) {
    let script = format!(
        "import sys, pika, datetime, decimal\n\
         c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))\n\
         ch = c.channel()\n\
         ch.basic_publish('amq.topic', sys.argv[2], sys.stdin.buffer.read(), pika.BasicProperties({props}))\n\
         c.close()\n"
    );
    let mut child = Command::new(bus_python())
        .arg("-c")
        .arg(script)
        .arg(url)
        .arg(routing_key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pika publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn odd_properties_and_headers_neither_wedge_nor_crash_the_listener() {
    // A publisher that writes what it likes (pika writes bytes as given): every header type,
    // odd properties, and short strings that are not UTF-8 ahead of a good trigger.
    let (url, _g) = broker_url();
    let b = BusLab::new("detach", &["fedora"]);
    let config = b.write_listen_config(&b.listen_toml(Some(&url), &[], ""));
    let listener = b.start_listener(&config);
    listener.wait_connected(1);
    let topic = b.sync_topic("fedora");
    let (_, env) = b.trigger("sync fedora", SystemTime::now());
    let body = env.to_json().into_bytes();
    for props in [
        // Every header type pika writes, nested, and properties of odd shapes.
        "headers={'t': {'n': [1, None, True, b'\\x00\\xff', 'x' * 1000]}, 'd': decimal.Decimal('1.5'), \
         'ts': datetime.datetime(2026, 1, 1), 'big': 2**62, 'neg': -5}, content_type='text/x-odd', \
         content_encoding='gzip', delivery_mode=1, priority=9, correlation_id='c' * 255, \
         reply_to='nowhere', expiration='600000', type='t', user_id=None, app_id='a'",
        "message_id='m' * 255",
        // Not UTF-8 where AMQP says short string.
        "message_id=b'\\xff\\xfe'",
        "headers={'k': b'\\xff'}, content_type=b'\\xc3\\x28'",
    ] {
        pika_publish(&url, &topic, &body, props);
    }
    let (good, env) = b.trigger("sync fedora", SystemTime::now());
    publish(&url, &topic, &bodies(&[env])).unwrap();
    b.wait(&listener, "the good trigger after the odd ones", || {
        listener.count(&format!("accepted id={}", good.id)) == 1
    });
    // The two whose short strings are not UTF-8 stop the AMQP client each time they are
    // delivered; taken one at a time, they are found and discarded unread, and nothing else
    // is lost or run twice.
    b.wait(&listener, "both undecodable messages to be counted", || {
        b.status_json(&config)["refused"]["undecodable"] == 2
    });
    assert!(listener.log().contains(" careful: "), "{}", listener.log());
    // The status is written once the good trigger's batch is done (handed off, ids
    // remembered, acked), a moment after its `accepted` log line.
    b.wait(
        &listener,
        "the status to count both accepted triggers",
        || b.status_json(&config)["accepted"] == 2,
    );
    let s = b.status_json(&config);
    assert_eq!(s["accepted"], 2, "{s}\n{}", listener.log());
    assert_eq!(s["refused"]["replay"], 1, "{s}");
    assert_eq!(b.handler_requests().len(), 2, "{s}");
}
