//! The simulated bus fleet for `benches/bus.sh`: N bus mirrors in one process, against a real
//! RabbitMQ broker. Each simulated mirror has its own queue bound to the module's trigger topic
//! (so the broker copies every trigger N times, as it would for N listeners) and its own ack key;
//! for each trigger it receives it publishes a signed `accepted` ack, as a listener of a
//! `detach` module does once its handler took the request. The handler itself is not run: what
//! is measured is the master's cost and the broker's, not N syncs.
//!
//! ```text
//! busfleet --url URL --dir DIR --signer PUBKEY [--mirrors N] [--connections C]
//!          [--exchange X] [--topic-prefix P] [--origin NAME] [--signing-key FILE]
//! ```
//! It writes `DIR/mirrors.toml` (a `[bus]` table for `URL`, signing with `--signing-key`, and
//! N `[[mirror]]` tables with `transport = "bus"` and each mirror's `ack_key`), declares the
//! queues, prints `ready` and serves until stdin closes or SIGTERM/SIGINT. A trigger is checked
//! against `--signer` (the master's public key) once per trigger id, not once per queue: the
//! simulation stands for N machines, and their N checks would cost this one process N times.

#[cfg(feature = "master")]
mod fleet {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::io::Read;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use mirrorpush::bus::amqp::{BrokerConfig, Client, Outgoing};
    use mirrorpush::bus::envelope::{
        Ack, AckResult, Envelope, Name, Trigger, ACK_NAMESPACE, TRIGGER_NAMESPACE,
    };
    use ssh_key::private::Ed25519Keypair;
    use ssh_key::{PrivateKey, PublicKey};

    const USAGE: &str = "usage: busfleet --url URL --dir DIR --signer PUBKEY [--mirrors N] \
                         [--connections C] [--exchange X] [--topic-prefix P] [--origin NAME] \
                         [--signing-key FILE]";

    struct Args {
        url: String,
        dir: PathBuf,
        signer: PathBuf,
        signing_key: Option<PathBuf>,
        mirrors: usize,
        connections: usize,
        exchange: String,
        topic_prefix: String,
        origin: String,
    }

    fn parse_args() -> Result<Args, String> {
        let mut a = Args {
            url: String::new(),
            dir: PathBuf::new(),
            signer: PathBuf::new(),
            signing_key: None,
            mirrors: 1000,
            connections: 4,
            exchange: "amq.topic".into(),
            topic_prefix: String::new(),
            origin: "bench-master".into(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value; {USAGE}"));
            match flag.as_str() {
                "--url" => a.url = value()?,
                "--dir" => a.dir = value()?.into(),
                "--signer" => a.signer = value()?.into(),
                "--signing-key" => a.signing_key = Some(value()?.into()),
                "--mirrors" => {
                    a.mirrors = value()?.parse().map_err(|e| format!("--mirrors: {e}"))?
                }
                "--connections" => {
                    a.connections = value()?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?
                }
                "--exchange" => a.exchange = value()?,
                "--topic-prefix" => a.topic_prefix = value()?,
                "--origin" => a.origin = value()?,
                _ => return Err(USAGE.into()),
            }
        }
        if a.url.is_empty() || a.dir.as_os_str().is_empty() || a.signer.as_os_str().is_empty() {
            return Err(USAGE.into());
        }
        a.connections = a.connections.clamp(1, a.mirrors.max(1));
        Ok(a)
    }

    /// One simulated mirror: its name and the key its acks are signed with.
    struct SimMirror {
        name: Name,
        key: PrivateKey,
    }

    /// Deterministic keys (the bench needs no secrecy, and 10,000 keys from a seed are quick).
    fn sim_mirror(i: usize) -> Result<SimMirror, String> {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        seed[8..16].copy_from_slice(b"busfleet");
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let name = Name::parse(&format!("sim-{i:05}")).map_err(|e| e.to_string())?;
        Ok(SimMirror { name, key })
    }

    fn registry(a: &Args, mirrors: &[SimMirror]) -> Result<String, String> {
        let mut s = format!(
            "[defaults]\nconnect_timeout = \"60s\"\ntimeout = \"5m\"\nhistory = {:?}\n\n[bus]\n",
            a.dir.join("history.db").display().to_string()
        );
        let _ = writeln!(s, "url = {:?}", a.url);
        let _ = writeln!(s, "exchange = {:?}", a.exchange);
        let _ = writeln!(s, "topic_prefix = {:?}", a.topic_prefix);
        let _ = writeln!(s, "origin = {:?}", a.origin);
        if let Some(k) = &a.signing_key {
            let _ = writeln!(s, "signing_key = {:?}", k.display().to_string());
        }
        for m in mirrors {
            let ack_key = m.key.public_key().to_openssh().map_err(|e| e.to_string())?;
            let _ = write!(
                s,
                "\n[[mirror]]\nname = \"{}\"\ntransport = \"bus\"\nmodules = [\"fedora\"]\nack_key = {ack_key:?}\n",
                m.name.as_str()
            );
        }
        Ok(s)
    }

    /// Triggers seen, by id: checked once, then shared by every simulated mirror.
    type Seen = Mutex<HashMap<String, Option<Arc<Trigger>>>>;

    fn open(body: &[u8], signer: &PublicKey, seen: &Seen) -> Option<Arc<Trigger>> {
        let env = Envelope::from_json(body).ok()?;
        let trigger = Trigger::parse(&env.payload).ok()?;
        let id = trigger.id.as_str().to_owned();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry(id)
            .or_insert_with(|| {
                env.verify_key(TRIGGER_NAMESPACE, signer)
                    .ok()
                    .map(|()| Arc::new(trigger))
            })
            .clone()
    }

    pub async fn run() -> Result<(), String> {
        let a = parse_args()?;
        let signer = PublicKey::read_openssh_file(&a.signer)
            .map_err(|e| format!("{}: {e}", a.signer.display()))?;
        let mirrors: Vec<SimMirror> = (0..a.mirrors).map(sim_mirror).collect::<Result<_, _>>()?;
        std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
        std::fs::write(a.dir.join("mirrors.toml"), registry(&a, &mirrors)?)
            .map_err(|e| format!("mirrors.toml: {e}"))?;

        let cfg = BrokerConfig {
            url: a.url.clone(),
            ca: None,
            cert: None,
            key: None,
        };
        let mut clients = Vec::with_capacity(a.connections);
        for c in 0..a.connections {
            let client = Client::connect(&cfg, &format!("busfleet {c}"))
                .await
                .map_err(|e| e.to_string())?;
            clients.push(Arc::new(client));
        }
        let topic = format!("{}mirrorpush.sync.fedora", a.topic_prefix);
        let ack_topic = format!("{}mirrorpush.synced", a.topic_prefix);
        let seen: Arc<Seen> = Arc::default();
        let signer = Arc::new(signer);
        let acks = Arc::new(AtomicU64::new(0));
        // Queues are declared over every connection at once, one at a time on each: a channel
        // takes one synchronous method at a time (concurrent declares on one channel make the
        // client close it). Each mirror then waits on its own.
        let mut shares: Vec<Vec<SimMirror>> = (0..clients.len()).map(|_| Vec::new()).collect();
        for (i, m) in mirrors.into_iter().enumerate() {
            shares[i % clients.len()].push(m);
        }
        let mut declared = tokio::task::JoinSet::new();
        for (client, share) in clients.iter().zip(shares) {
            let client = client.clone();
            let (exchange, topic) = (a.exchange.clone(), topic.clone());
            declared.spawn(async move {
                let mut ready = Vec::with_capacity(share.len());
                for m in share {
                    let queue = format!("busfleet.{}", m.name.as_str());
                    let consumer = client
                        .listen_private(&queue, &exchange, &topic)
                        .await
                        .map_err(|e| e.to_string())?;
                    ready.push((m, consumer, client.clone()));
                }
                Ok::<_, String>(ready)
            });
        }
        let mut ready = Vec::new();
        while let Some(joined) = declared.join_next().await {
            ready.extend(joined.map_err(|e| e.to_string())??);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (m, mut consumer, client) in ready {
            let (seen, signer, acks) = (seen.clone(), signer.clone(), acks.clone());
            let (exchange, ack_topic) = (a.exchange.clone(), ack_topic.clone());
            tasks.spawn(async move {
                while let Some(d) = consumer.recv().await {
                    let Some(trigger) = open(&d.body, &signer, &seen) else {
                        continue;
                    };
                    let now = SystemTime::now();
                    let ack = Ack::new(
                        &trigger,
                        m.name.clone(),
                        AckResult::Accepted,
                        "simulated",
                        now,
                        now,
                    );
                    let Ok(env) = Envelope::sign(ack.render(), ACK_NAMESPACE, &m.key) else {
                        continue;
                    };
                    let msg = Outgoing {
                        body: env.to_json().into_bytes(),
                        message_id: trigger.id.to_string(),
                        sent_at: now,
                    };
                    if client.publish(&exchange, &ack_topic, &msg).await.is_ok() {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        println!("MIRRORS={}", a.mirrors);
        println!("REGISTRY={}", a.dir.join("mirrors.toml").display());
        println!("FLEET_PID={}", std::process::id());
        println!("ready");
        wait_for_stop().await;
        eprintln!("busfleet: {} acks published", acks.load(Ordering::Relaxed));
        tasks.abort_all();
        Ok(())
    }

    /// Until stdin closes (the bench's FIFO) or SIGTERM/SIGINT.
    async fn wait_for_stop() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = rx.await;
                    return;
                }
            };
        tokio::select! {
            _ = rx => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

#[cfg(feature = "master")]
fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("busfleet: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(fleet::run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busfleet: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(feature = "master"))]
fn main() {
    eprintln!("busfleet needs the master feature");
    std::process::exit(2);
}
