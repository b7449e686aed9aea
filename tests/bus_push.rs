//! The master's bus transport through real parts: the lab's RabbitMQ node, OpenSSH sshd mirrors
//! forcing the handler, and real `mirrorpush-listen` processes, all on loopback.
//!
//! - A mixed fleet: one `mirrorpush push` reaches two SSH mirrors and two bus mirrors; all four
//!   converge, and the report counts the bus mirrors' verified acks as synced.
//! - An ack that does not verify against the mirror's `ack_key` is never counted as synced.
//! - An unconfirmed publish (an exchange the broker does not have; a broker that is not there)
//!   fails the bus mirrors with a clear error, and the SSH mirrors still go through.
//! - `list`, `push --dry-run` and `check` show and check the bus side.

mod bus_common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use bus_common::{Listener, ORIGIN};
use mirrorpush_lab::broker::{self, BrokerOptions};
use mirrorpush_lab::{keygen, Lab, LabOptions};

/// The file's one broker (RabbitMQ boots take 15-40 s here), with its AMQPS listener too.
fn shared_broker() -> &'static std::sync::Mutex<Option<broker::Broker>> {
    broker::shared(BrokerOptions {
        tls: true,
        ..Default::default()
    })
    .expect("the lab broker starts")
}

fn broker_url() -> String {
    let guard = shared_broker().lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref().expect("broker running").url()
}

/// A lab of `mirrors` sshd mirrors in `mode`, the master's signing key, the allowed_signers
/// that trusts it, and a topic prefix of this lab's own (tests share one broker).
struct Fleet {
    lab: Lab,
    master_key: PathBuf,
    allowed_signers: PathBuf,
    prefix: String,
}

impl Fleet {
    fn new(mirrors: usize, mode: &str) -> Fleet {
        let lab = Lab::start(LabOptions {
            mirrors,
            modules: vec!["fedora".into()],
            handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
            mode: mode.into(),
            ..Default::default()
        })
        .expect("lab starts");
        let master_key = lab.root.join("master_key");
        keygen(&master_key).unwrap();
        let master_pub = fs::read_to_string(master_key.with_extension("pub")).unwrap();
        let allowed_signers = lab.root.join("allowed_signers");
        fs::write(
            &allowed_signers,
            format!(
                "{ORIGIN} namespaces=\"mirrorpush-trigger\" {}\n",
                master_pub.trim()
            ),
        )
        .unwrap();
        let prefix = format!("org.{}.", lab.user.replace('.', "_"));
        Fleet {
            lab,
            master_key,
            allowed_signers,
            prefix,
        }
    }

    /// Starts `mirrorpush-listen` for lab mirror `i` as the lab account, with an ack key of its
    /// own; returns it and the ack key's public line.
    fn listener(&self, i: usize, url: &str) -> (Listener, String) {
        self.listener_with(i, url, "")
    }

    /// [`Fleet::listener`] with `broker_keys` added to its `[broker]` table.
    fn listener_with(&self, i: usize, url: &str, broker_keys: &str) -> (Listener, String) {
        let dir = self.lab.root.join(format!("listen{i}"));
        self.lab.create_dir_for_account(&dir).unwrap();
        let ack_key = dir.join("id_ed25519");
        keygen(&ack_key).unwrap();
        self.lab.give_to_account(&ack_key).unwrap();
        let ack_pub = fs::read_to_string(ack_key.with_extension("pub")).unwrap();
        let config = dir.join("listen.toml");
        fs::write(
            &config,
            format!(
                "handler = {:?}\nhandler_config = {:?}\nmirror = \"{}\"\nstate_dir = {:?}\n\n\
                 [broker]\nurl = {url:?}\nqueue = \"mirrorpush.{}.{i}\"\n{broker_keys}\n\n\
                 [[trigger]]\ntopic = \"{}mirrorpush.sync.#\"\nallowed_signers = {:?}\n\n\
                 [ack]\ntopic = \"{}mirrorpush.synced\"\nsigning_key = {:?}\n",
                env!("CARGO_BIN_EXE_mirrorpush-handler"),
                self.lab.mirrors[i].handler_config.display().to_string(),
                self.bus_name(i),
                dir.join("state").display().to_string(),
                self.lab.user,
                self.prefix,
                self.allowed_signers.display().to_string(),
                self.prefix,
                ack_key.display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.join("listen.log");
        let child = self
            .lab
            .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-listen"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("listener starts");
        let listener = Listener { child, log };
        listener.wait_connected(1);
        (listener, ack_pub.trim().to_owned())
    }

    fn bus_name(&self, i: usize) -> String {
        format!("bus{i}.lab")
    }

    /// A registry with `[bus]` (`bus_keys` appended to it), lab mirrors `ssh` over SSH, and a
    /// bus mirror `(i, ack_key)` for each of `bus`; `mirror_keys` go into every `[[mirror]]`.
    fn registry(
        &self,
        url: &str,
        bus_keys: &str,
        ssh: &[usize],
        bus: &[(usize, &str)],
        mirror_keys: &str,
    ) -> PathBuf {
        let mut s = format!(
            "[defaults]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\nconnect_timeout = \"10s\"\ntimeout = \"90s\"\nhistory = {:?}\n\n\
             [bus]\nurl = {url:?}\ntopic_prefix = {:?}\norigin = \"{ORIGIN}\"\nsigning_key = {:?}\n{bus_keys}\n",
            self.lab.user,
            self.lab.identity.display().to_string(),
            self.lab.known_hosts.display().to_string(),
            self.lab.history().display().to_string(),
            self.prefix,
            self.master_key.display().to_string(),
        );
        for &i in ssh {
            let m = &self.lab.mirrors[i];
            let _ = write!(
                s,
                "\n[[mirror]]\nname = {:?}\nhost = \"127.0.0.1\"\nport = {}\nmodules = [\"fedora\"]\n{mirror_keys}\n",
                m.name, m.port
            );
        }
        for &(i, ack_key) in bus {
            let _ = write!(
                s,
                "\n[[mirror]]\nname = \"{}\"\ntransport = \"bus\"\nack_key = {ack_key:?}\nmodules = [\"fedora\"]\n{mirror_keys}\n",
                self.bus_name(i)
            );
        }
        let path = self.lab.root.join(format!(
            "registry-{}.toml",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::write(&path, s).unwrap();
        path
    }

    fn publish_upstream(&self, files: &[(&str, &str)]) {
        let up = self.lab.upstream_dir("fedora");
        for (name, text) in files {
            let p = up.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
    }
}

/// `mirrorpush --registry R ARGS`: exit code, the JSON lines of stdout (or its text), stderr.
fn master(registry: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The per-mirror objects and the summary of a `push --json`.
fn report(stdout: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut mirrors = Vec::new();
    let mut summary = serde_json::Value::Null;
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v.get("summary") {
            Some(s) => summary = s.clone(),
            None => mirrors.push(v),
        }
    }
    mirrors.sort_by_key(|m| m["mirror"].as_str().unwrap_or("").to_owned());
    (mirrors, summary)
}

/// Pushes `registry` (SSH mirror 0 and bus mirror 1): the push fails (exit 1) for the bus
/// mirror only. Returns the bus mirror's error, and the push's stdout and stderr.
fn bus_mirror_fails(fleet: &Fleet, registry: &Path) -> (String, String, String) {
    let (code, out, err) = master(registry, &["push", "--json", "fedora"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let (mirrors, _) = report(&out);
    assert_eq!(by_name(&mirrors, &fleet.lab.mirrors[0].name)["ok"], true);
    let error = by_name(&mirrors, &fleet.bus_name(1))["error"]
        .as_str()
        .unwrap()
        .to_owned();
    (error, out, err)
}

fn by_name<'a>(mirrors: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    mirrors
        .iter()
        .find(|m| m["mirror"] == name)
        .unwrap_or_else(|| panic!("no {name} in {mirrors:?}"))
}

#[test]
fn a_mixed_fleet_converges_and_bus_acks_count_as_synced() {
    let url = broker_url();
    // Wait mode: the SSH mirrors answer synced, the listeners ack synced, once the run ended.
    let fleet = Fleet::new(4, "wait");
    fleet.publish_upstream(&[("a.txt", "one\n"), ("updates/41/b.rpm", "two\n")]);
    let (l2, key2) = fleet.listener(2, &url);
    let (l3, key3) = fleet.listener(3, &url);
    let registry = fleet.registry(&url, "", &[0, 1], &[(2, &key2), (3, &key3)], "wait = true");

    let (code, out, err) = master(&registry, &["push", "--json", "fedora"]);
    let logs = || {
        format!(
            "stderr: {err}\nlistener 2:\n{}\nlistener 3:\n{}",
            l2.log(),
            l3.log()
        )
    };
    assert_eq!(code, 0, "{out}\n{}", logs());
    let (mirrors, summary) = report(&out);
    assert_eq!(mirrors.len(), 4, "{out}");
    for m in &mirrors {
        assert_eq!(m["ok"], true, "{m}\n{}", logs());
        assert_eq!(m["answer"], "synced", "{m}\n{}", logs());
    }
    for i in [0, 1] {
        let m = by_name(&mirrors, &fleet.lab.mirrors[i].name);
        assert_eq!(m["transport"], "ssh", "{m}");
        assert_eq!(m["host"], "127.0.0.1", "{m}");
    }
    for i in [2, 3] {
        let m = by_name(&mirrors, &fleet.bus_name(i));
        assert_eq!(m["transport"], "bus", "{m}");
        assert!(m["host"].is_null() && m["port"].is_null(), "{m}");
        assert_eq!(m["request"], "sync fedora", "{m}");
    }
    assert_eq!(summary["synced"], 4, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    for i in 0..4 {
        assert!(
            fleet.lab.in_sync(i, "fedora"),
            "mirror {i} did not converge\n{}",
            logs()
        );
    }

    // New content, and mirror 3 registered with a key that is not its listener's: its acks no
    // longer verify, so it is never synced in the report, though its listener ran the sync.
    fleet.publish_upstream(&[("updates/41/c.rpm", "three\n")]);
    let other = fleet.lab.root.join("not_the_ack_key");
    keygen(&other).unwrap();
    let wrong = fs::read_to_string(other.with_extension("pub")).unwrap();
    let registry = fleet.registry(
        &url,
        "",
        &[0],
        &[(2, &key2), (3, wrong.trim())],
        "wait = true\ntimeout = \"20s\"",
    );
    let (code, out, err) = master(&registry, &["push", "--json", "fedora", "updates/41"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (mirrors, summary) = report(&out);
    let forged = by_name(&mirrors, &fleet.bus_name(3));
    assert_eq!(forged["answer"], "unreported", "{forged}");
    let message = forged["message"].as_str().unwrap();
    assert!(
        message.contains("did not verify against its ack_key"),
        "{message}"
    );
    assert_eq!(by_name(&mirrors, &fleet.bus_name(2))["answer"], "synced");
    assert_eq!(summary["synced"], 2, "{summary}");
    assert_eq!(summary["unreported"], 1, "{summary}");
    // The listener did run it: the mirror has the content, the master just cannot vouch for it.
    assert!(fleet
        .lab
        .wait_until(bus_common::LONG, || fleet.lab.in_sync(3, "fedora")));
    drop((l2, l3));
}

#[test]
fn an_unconfirmed_publish_fails_the_bus_mirrors_only() {
    let url = broker_url();
    let fleet = Fleet::new(1, "detach");
    fleet.publish_upstream(&[("a.txt", "one\n")]);
    let key = fs::read_to_string(fleet.lab.identity.with_extension("pub")).unwrap();

    // A user the broker lets listen for acks but not publish triggers (its topic permissions
    // allow no routing key to be written): the broker closes the channel instead of confirming.
    let user = format!("{}-nopub", fleet.lab.user);
    let limited = {
        let guard = shared_broker().lock().unwrap_or_else(|p| p.into_inner());
        let b = guard.as_ref().unwrap();
        b.add_user(&user, "pw", [".*", ".*", ".*"], "amq.topic", ["^$", ".*"])
            .expect("rabbitmqctl adds the user");
        b.url_for(&user, "pw")
    };
    let registry = fleet.registry(&limited, "", &[0], &[(1, key.trim())], "");
    let (code, out, err) = master(&registry, &["push", "--json", "fedora"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let (mirrors, summary) = report(&out);
    let ssh = by_name(&mirrors, &fleet.lab.mirrors[0].name);
    assert_eq!(
        (ssh["ok"].as_bool(), ssh["answer"].as_str()),
        (Some(true), Some("accepted")),
        "{ssh}"
    );
    let bus = by_name(&mirrors, &fleet.bus_name(1));
    assert_eq!(bus["ok"], false, "{bus}");
    let error = bus["error"].as_str().unwrap();
    assert!(
        error.contains("the broker did not confirm the trigger")
            && error.contains("mirrorpush.sync.fedora"),
        "{error}"
    );
    assert_eq!(
        (summary["failed"].as_u64(), summary["accepted"].as_u64()),
        (Some(1), Some(1))
    );

    // A confirmed publish that no queue is bound for (no listener of this lab's prefix was
    // ever set up): the broker returns the mandatory trigger, and the bus mirrors fail with
    // what to do, rather than being reported as sent.
    let registry = fleet.registry(&url, "", &[0], &[(1, key.trim())], "");
    let (error, _, _) = bus_mirror_fails(&fleet, &registry);
    assert!(
        error.contains(&format!(
            "no queue is bound to routing key \"{}mirrorpush.sync.fedora\"",
            fleet.prefix
        )) && error.contains("set up these mirrors' mirrorpush-listen")
            && !error.contains('\n'),
        "{error}"
    );

    // An exchange the broker does not have: found when the master binds its ack queue to it,
    // before anything is published.
    let registry = fleet.registry(
        &url,
        "exchange = \"no.such.exchange\"",
        &[0],
        &[(1, key.trim())],
        "",
    );
    let (error, _, _) = bus_mirror_fails(&fleet, &registry);
    assert!(error.contains("\"no.such.exchange\""), "{error}");

    // No broker at all: a port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("amqp://nobody:nothing@127.0.0.1:{closed}/%2F");
    let registry = fleet.registry(&dead, "", &[0], &[(1, key.trim())], "");
    let (error, out, err) = bus_mirror_fails(&fleet, &registry);
    assert!(error.contains("cannot reach the broker"), "{error}");
    // The password never shows.
    assert!(
        !out.contains("nothing") && !err.contains("nothing"),
        "{out}\n{err}"
    );
}

#[test]
fn a_detach_module_is_acked_accepted_at_once() {
    let url = broker_url();
    // Detach mode: the listener hands over as a push does, so the handler answers `accepted`
    // (a detached runner syncs) and the ack says so before the run ends.
    let fleet = Fleet::new(2, "detach");
    fleet.publish_upstream(&[("a.txt", "one\n"), ("updates/b.rpm", "two\n")]);
    let (l1, key1) = fleet.listener(1, &url);
    let registry = fleet.registry(&url, "", &[0], &[(1, &key1)], "");
    let (code, out, err) = master(&registry, &["push", "--json", "fedora"]);
    assert_eq!(code, 0, "{out}\n{err}\n{}", l1.log());
    let (mirrors, summary) = report(&out);
    let bus = by_name(&mirrors, &fleet.bus_name(1));
    assert_eq!(bus["answer"], "accepted", "{bus}\n{}", l1.log());
    assert!(
        bus["message"].as_str().unwrap().starts_with("accepted"),
        "{bus}"
    );
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert!(
        l1.log()
            .contains("handoff request=\"sync fedora\" answer=accepted"),
        "{}",
        l1.log()
    );
    // The detached runner it started does the sync.
    assert!(
        fleet
            .lab
            .wait_until(bus_common::LONG, || fleet.lab.in_sync(1, "fedora")),
        "{}",
        l1.log()
    );
}

#[test]
fn list_dry_run_and_check_show_the_bus_side() {
    let url = broker_url();
    let fleet = Fleet::new(1, "detach");
    let key = fs::read_to_string(fleet.lab.identity.with_extension("pub")).unwrap();
    let registry = fleet.registry(&url, "", &[0], &[(1, key.trim())], "");
    let topic = format!("{}mirrorpush.sync.fedora", fleet.prefix);

    let (code, out, err) = master(&registry, &["push", "--dry-run", "fedora", "updates/41/"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("sync fedora updates/41 on topic {topic}")),
        "{out}"
    );
    assert!(
        out.contains("mirrorpush-trigger 1\n") || out.contains("    mirrorpush-trigger 1"),
        "{out}"
    );
    assert!(out.contains(&format!("origin: {ORIGIN}")), "{out}");
    assert!(!out.contains(&url), "the password is shown: {out}");

    let (code, out, _) = master(&registry, &["list", "--json"]);
    assert_eq!(code, 0);
    let bus: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["transport"] == "bus")
        .expect("a bus mirror in list --json");
    assert_eq!(bus["topics"][0], topic.as_str());
    assert!(bus["host"].is_null());

    // check: the broker takes the connection and the key loads.
    let (code, out, err) = master(&registry, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    // A broker that is not there, and a signing key that is not a key: problems, exit 1.
    let bad = fs::read_to_string(&registry)
        .unwrap()
        .replace(&url, "amqp://u:p@127.0.0.1:1/%2F")
        .replace(
            &fleet.master_key.display().to_string(),
            &fleet.allowed_signers.display().to_string(),
        );
    fs::write(&registry, bad).unwrap();
    let (code, out, _) = master(&registry, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem: [bus] broker amqp://u:***@127.0.0.1:1/%2F"),
        "{out}"
    );
    assert!(out.contains("problem: [bus] signing_key"), "{out}");
}

/// The lab account's copy of a TLS file (the broker's are the test's, mode 0600).
fn account_copy(fleet: &Fleet, from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    fs::copy(from, &to).unwrap();
    fleet.lab.give_to_account(&to).unwrap();
    to
}

#[test]
fn a_push_and_a_listener_run_over_tls_with_client_certificates() {
    // The broker requires a client certificate signed by its CA (verify_peer,
    // fail_if_no_peer_cert), as Fedora's public one does. The master logs in with a password
    // over TLS, the listener by its certificate alone (SASL EXTERNAL, as with Fedora's).
    let (tls, master_url, listen_url) = {
        let guard = shared_broker().lock().unwrap_or_else(|p| p.into_inner());
        let b = guard.as_ref().unwrap();
        let tls = b.tls.clone().expect("the broker listens for AMQPS");
        b.add_user(
            &tls.client_cn,
            "not-used-with-EXTERNAL",
            [".*", ".*", ".*"],
            "amq.topic",
            [".*", ".*"],
        )
        .expect("rabbitmqctl adds the certificate's user");
        let master = b.tls_url_for(&b.user, &b.password).unwrap();
        let listen = b.tls_url_for(&tls.client_cn, "").unwrap();
        (tls, master, listen)
    };
    let fleet = Fleet::new(2, "wait");
    fleet.publish_upstream(&[("a.txt", "one\n"), ("updates/b.rpm", "two\n")]);
    let dir = fleet.lab.root.join("tls");
    fleet.lab.create_dir_for_account(&dir).unwrap();
    let ca = account_copy(&fleet, &tls.ca, &dir);
    let cert = account_copy(&fleet, &tls.client_cert, &dir);
    let key = account_copy(&fleet, &tls.client_key, &dir);
    let files = format!(
        "ca = {:?}\ncert = {:?}\nkey = {:?}",
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    );
    let (l1, key1) = fleet.listener_with(1, &listen_url, &files);
    let registry = fleet.registry(&master_url, &files, &[0], &[(1, &key1)], "wait = true");
    let (code, out, err) = master(&registry, &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = master(&registry, &["push", "--json", "fedora"]);
    assert_eq!(code, 0, "{out}\n{err}\n{}", l1.log());
    let (mirrors, _) = report(&out);
    let bus = by_name(&mirrors, &fleet.bus_name(1));
    assert_eq!(
        (bus["transport"].as_str(), bus["answer"].as_str()),
        (Some("bus"), Some("synced")),
        "{bus}\n{}",
        l1.log()
    );
    assert!(fleet.lab.in_sync(1, "fedora"));
    assert!(l1.log().contains("exchange=\"amq.topic\""), "{}", l1.log());

    // A CA that did not sign the broker's certificate: one line that says so and names the
    // file, from the master and from the listener alike.
    let wrong_dir = fleet.lab.root.join("wrong");
    fleet.lab.create_dir_for_account(&wrong_dir).unwrap();
    let (wrong, _) = broker::make_ca(&wrong_dir, "wrong-ca").unwrap();
    fleet.lab.give_to_account(&wrong).unwrap();
    let wrong_files = files.replace(&ca.display().to_string(), &wrong.display().to_string());
    let registry = fleet.registry(&master_url, &wrong_files, &[], &[(1, &key1)], "");
    let (code, out, err) = master(&registry, &["push", "--json", "fedora"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let (mirrors, _) = report(&out);
    let error = by_name(&mirrors, &fleet.bus_name(1))["error"]
        .as_str()
        .unwrap()
        .to_owned();
    let says_wrong_ca = |e: &str| {
        !e.contains('\n')
            && e.contains("the broker's certificate is not signed by the CA in")
            && e.contains(&wrong.display().to_string())
    };
    assert!(says_wrong_ca(&error), "{error}");
    let config = fleet.lab.root.join("listen1/listen.toml");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace(&ca.display().to_string(), &wrong.display().to_string());
    let wrong_config = fleet.lab.root.join("listen1/wrong.toml");
    fs::write(&wrong_config, text).unwrap();
    let out = fleet
        .lab
        .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-listen"))
        .arg("--config")
        .arg(&wrong_config)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && says_wrong_ca(stderr.trim_end()),
        "{stderr}"
    );
    drop(l1);
}
