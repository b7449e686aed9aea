//! What the bus tests share: a lab mirror with a master key, allowed_signers and an ack key,
//! a real `mirrorpush-listen` process run as the lab account, and a publisher / ack collector
//! on the lab's broker.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mirrorpush::bus::amqp::{BrokerConfig, Client, Outgoing};
use mirrorpush::bus::envelope::{self, Envelope, MessageId, Name, Trigger};
use mirrorpush::request::Request;
use mirrorpush_lab::{keygen, Lab, LabOptions};
use ssh_key::{PrivateKey, PublicKey};

pub const LONG: Duration = Duration::from_secs(90);
pub const ORIGIN: &str = "master.lab";

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A lab mirror set up for the bus.
pub struct BusLab {
    pub lab: Lab,
    pub master_key_path: PathBuf,
    pub master_key: PrivateKey,
    pub allowed_signers: PathBuf,
    pub ack_key_path: PathBuf,
    pub ack_pub: PublicKey,
    pub state_dir: PathBuf,
    /// Topic prefix unique to this lab, so that tests sharing a broker never see each
    /// other's messages.
    pub prefix: String,
}

impl BusLab {
    pub fn new(mode: &str, modules: &[&str]) -> BusLab {
        let lab = Lab::start(LabOptions {
            mirrors: 1,
            modules: modules.iter().map(|m| m.to_string()).collect(),
            handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
            mode: mode.into(),
            ..Default::default()
        })
        .expect("lab starts");
        let master_key_path = lab.root.join("master_key");
        keygen(&master_key_path).unwrap();
        let master_key = PrivateKey::read_openssh_file(&master_key_path).unwrap();
        let allowed_signers = lab.root.join("allowed_signers");
        let master_pub = fs::read_to_string(master_key_path.with_extension("pub")).unwrap();
        fs::write(
            &allowed_signers,
            format!(
                "# the lab's master\n{ORIGIN} namespaces=\"mirrorpush-trigger\" {}\n",
                master_pub.trim()
            ),
        )
        .unwrap();
        let listen_dir = lab.root.join("listen");
        lab.create_dir_for_account(&listen_dir).unwrap();
        let ack_key_path = listen_dir.join("id_ed25519");
        keygen(&ack_key_path).unwrap();
        lab.give_to_account(&ack_key_path).unwrap();
        let ack_pub = PublicKey::read_openssh_file(ack_key_path.with_extension("pub")).unwrap();
        let state_dir = listen_dir.join("state");
        let prefix = format!("org.{}.", lab.user.replace('.', "_"));
        BusLab {
            lab,
            master_key_path,
            master_key,
            allowed_signers,
            ack_key_path,
            ack_pub,
            state_dir,
            prefix,
        }
    }

    pub fn sync_topic(&self, module: &str) -> String {
        format!("{}mirrorpush.sync.{module}", self.prefix)
    }

    pub fn ack_topic(&self) -> String {
        format!("{}mirrorpush.synced", self.prefix)
    }

    pub fn queue(&self) -> String {
        format!("mirrorpush.{}", self.lab.user)
    }

    /// listen.toml for this mirror: a signed trigger for `modules` (all when empty), acks, and
    /// `extra` appended (more `[[trigger]]`s).
    pub fn listen_toml(&self, broker_url: Option<&str>, modules: &[&str], extra: &str) -> String {
        let mut s = format!(
            "handler = {:?}\nhandler_config = {:?}\nmirror = \"mirror1.lab\"\nstate_dir = {:?}\nmax_age = \"10m\"\n",
            env!("CARGO_BIN_EXE_mirrorpush-handler"),
            self.lab.mirrors[0].handler_config.display().to_string(),
            self.state_dir.display().to_string(),
        );
        if let Some(url) = broker_url {
            let _ = write!(
                s,
                "\n[broker]\nurl = {url:?}\nexchange = \"amq.topic\"\nqueue = {:?}\n",
                self.queue()
            );
        }
        let _ = write!(
            s,
            "\n[[trigger]]\ntopic = \"{}mirrorpush.sync.#\"\nallowed_signers = {:?}\n",
            self.prefix,
            self.allowed_signers.display().to_string()
        );
        if !modules.is_empty() {
            let _ = writeln!(s, "modules = {modules:?}");
        }
        s.push_str(extra);
        if broker_url.is_some() {
            let _ = write!(
                s,
                "\n[ack]\ntopic = {:?}\nsigning_key = {:?}\n",
                self.ack_topic(),
                self.ack_key_path.display().to_string()
            );
        }
        s
    }

    pub fn write_listen_config(&self, text: &str) -> PathBuf {
        let path = self.lab.root.join("listen.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// A signed trigger for `request`, issued at `issued`.
    pub fn trigger(&self, request: &str, issued: SystemTime) -> (Trigger, Envelope) {
        sign_trigger(&self.master_key, request, issued)
    }

    /// Starts `mirrorpush-listen --config <config>` as the lab account, stderr to a log file.
    pub fn start_listener(&self, config: &Path) -> Listener {
        let log = self.lab.root.join(format!(
            "listen-{}.log",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = self
            .lab
            .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-listen"));
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("listener starts");
        Listener { child, log }
    }

    /// `mirrorpush-listen ARGS` as the lab account: (exit code, stdout, stderr).
    pub fn listen_cmd(&self, config: &Path, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
        use std::io::Write as _;
        let mut cmd = self
            .lab
            .command_as_account(env!("CARGO_BIN_EXE_mirrorpush-listen"));
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn status_json(&self, config: &Path) -> serde_json::Value {
        let (code, out, err) = self.listen_cmd(config, &["status", "--json"], b"");
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// The handler's request log lines for local runs (each hand-off is one).
    pub fn handler_requests(&self) -> Vec<String> {
        fs::read_to_string(self.lab.mirrors[0].state_dir.join("handler.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("verdict=accepted-local"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `cond` holds; panics with `what` and the listener's log otherwise.
    pub fn wait(&self, listener: &Listener, what: &str, mut cond: impl FnMut() -> bool) {
        if !self.lab.wait_until(LONG, &mut cond) {
            panic!(
                "timed out waiting for {what}; listener log:\n{}",
                listener.log()
            );
        }
    }
}

pub fn sign_trigger(key: &PrivateKey, request: &str, issued: SystemTime) -> (Trigger, Envelope) {
    let request = Request::parse(request.as_bytes()).unwrap();
    let t = Trigger {
        request,
        id: MessageId::random().unwrap(),
        issued: envelope::parse_time(&envelope::format_time(issued)).unwrap(),
        origin: Name::parse(ORIGIN).unwrap(),
        serial: None,
    };
    let env = Envelope::sign(t.render(), envelope::TRIGGER_NAMESPACE, key).unwrap();
    (t, env)
}

/// A running listener, killed by pid when dropped.
pub struct Listener {
    pub child: Child,
    pub log: PathBuf,
}

impl Listener {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn wait_connected(&self, connections: usize) {
        let deadline = Instant::now() + LONG;
        while self.count("mirrorpush-listen: connected ") < connections {
            if let Ok(Some(status)) = self.child_try_wait() {
                panic!("listener exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "listener never connected:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_try_wait(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // try_wait needs &mut; /proc tells whether it still runs.
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if state.starts_with('Z') {
            return Ok(Some(std::os::unix::process::ExitStatusExt::from_raw(0)));
        }
        Ok(None)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd stops it; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// The listener's peak resident memory (VmHWM) in kB.
    pub fn vm_hwm_kb(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes each body to `routing_key` on `amq.topic` with confirms, through the library's
/// client; retries a publish that fails (the broker may be restarting) until `deadline`.
pub fn publish(url: &str, routing_key: &str, bodies: &[(String, Vec<u8>)]) -> Result<(), String> {
    let cfg = BrokerConfig {
        url: url.to_owned(),
        ca: None,
        cert: None,
        key: None,
    };
    block_on(async {
        let client = Client::connect(&cfg, "test publisher")
            .await
            .map_err(|e| e.to_string())?;
        let client = std::sync::Arc::new(client);
        let mut result = Ok(());
        // A window of confirms in flight at a time, as a publisher under flow control would.
        for chunk in bodies.chunks(500) {
            let mut set = tokio::task::JoinSet::new();
            for (id, body) in chunk {
                let msg = Outgoing {
                    body: body.clone(),
                    message_id: id.clone(),
                    sent_at: SystemTime::now(),
                };
                let (c, key) = (client.clone(), routing_key.to_owned());
                set.spawn(async move { c.publish("amq.topic", &key, &msg).await });
            }
            while let Some(r) = set.join_next().await {
                if let Ok(Err(e)) = r {
                    result = Err(e.to_string());
                }
            }
            result.clone()?;
        }
        result
    })
}

/// A queue of the test's own bound to the ack topic: acks published after it was made stay
/// there until read.
pub struct AckQueue {
    pub url: String,
    pub queue: String,
}

impl AckQueue {
    pub fn new(url: &str, topic: &str, name: &str) -> AckQueue {
        let cfg = BrokerConfig {
            url: url.to_owned(),
            ca: None,
            cert: None,
            key: None,
        };
        block_on(async {
            let c = Client::connect(&cfg, "test acks").await.unwrap();
            c.declare_queue(name, "amq.topic", &[topic.to_owned()])
                .await
                .unwrap();
            c.close().await;
        });
        AckQueue {
            url: url.to_owned(),
            queue: name.to_owned(),
        }
    }

    /// Reads up to `n` acks (waiting at most `timeout`), verified against `key`.
    pub fn take(&self, n: usize, key: &PublicKey, timeout: Duration) -> Vec<envelope::Ack> {
        let cfg = BrokerConfig {
            url: self.url.clone(),
            ca: None,
            cert: None,
            key: None,
        };
        block_on(async {
            let c = Client::connect(&cfg, "test acks").await.unwrap();
            let mut consumer = c.consume(&self.queue, 1000).await.unwrap();
            let mut out = Vec::new();
            let deadline = tokio::time::Instant::now() + timeout;
            while out.len() < n {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Some(d)) => {
                        let env = Envelope::from_json(&d.body).unwrap();
                        out.push(envelope::open_ack(&env, key).expect("ack verifies"));
                        c.ack(d.tag).await.unwrap();
                    }
                    _ => break,
                }
            }
            c.close().await;
            out
        })
    }
}

/// An executable script at `path`.
pub fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `cmd`'s (exit code, stdout, stderr).
pub fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
