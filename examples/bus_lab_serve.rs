//! Starts the lab for `benches/bus.sh` and keeps it up: a RabbitMQ node of its own and N sshd
//! mirrors in wait mode (a listener acks once the run covering the trigger ended, so both
//! transports answer `synced`), each also followed by a real `mirrorpush-listen` (as the lab account,
//! with its own ack key), so that one push can reach the same N mirrors over SSH or over the
//! bus. With N = 0 only the broker (and the master's key) is started, for `busfleet`.
//!
//! ```text
//! bus_lab_serve N
//! ```
//! Prints `BROKER_URL`, `BROKER_PID`, `MASTER_KEY` (private; `.pub` beside it), `REGISTRY_SSH`
//! and `REGISTRY_BUS` (N > 0), `TOPIC_PREFIX`, then `ready`; holds until stdin closes or
//! SIGTERM/SIGINT, then stops every listener, the lab and the broker by pid.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Child, Stdio};

use mirrorpush_lab::broker::{Broker, BrokerOptions};
use mirrorpush_lab::{keygen, sibling_binary, Lab, LabOptions};

const ORIGIN: &str = "bench-master";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus_lab_serve: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let n: usize = std::env::args()
        .nth(1)
        .ok_or("usage: bus_lab_serve N")?
        .parse()
        .map_err(|e| format!("N: {e}"))?;
    let handler = sibling_binary("mirrorpush-handler").map_err(|e| e.to_string())?;
    let listen = sibling_binary("mirrorpush-listen").map_err(|e| e.to_string())?;
    mirrorpush::rlimit::raise_open_files(u64::MAX);
    let broker = Broker::start(BrokerOptions::default()).map_err(|e| format!("broker: {e}"))?;
    let url = broker.url();
    let lab = Lab::start(LabOptions {
        mirrors: n,
        modules: vec!["fedora".into()],
        handler_bin: handler.clone(),
        mode: "wait".into(),
        ..Default::default()
    })
    .map_err(|e| format!("lab: {e}"))?;
    let e = |e: std::io::Error| e.to_string();
    let master_key = lab.root.join("master_key");
    keygen(&master_key).map_err(e)?;
    let master_pub = std::fs::read_to_string(master_key.with_extension("pub")).map_err(e)?;
    let signers = lab.root.join("allowed_signers");
    std::fs::write(&signers, format!("{ORIGIN} {}\n", master_pub.trim())).map_err(e)?;
    let prefix = "org.bench.";
    let mut listeners: Vec<Child> = Vec::new();
    let mut bus_mirrors = String::new();
    for (i, m) in lab.mirrors.iter().enumerate() {
        let dir = lab.root.join(format!("listen{i}"));
        lab.create_dir_for_account(&dir).map_err(e)?;
        let ack_key = dir.join("id_ed25519");
        keygen(&ack_key).map_err(e)?;
        lab.give_to_account(&ack_key).map_err(e)?;
        let ack_pub = std::fs::read_to_string(ack_key.with_extension("pub")).map_err(e)?;
        let config = dir.join("listen.toml");
        std::fs::write(
            &config,
            format!(
                "handler = {:?}\nhandler_config = {:?}\nmirror = \"bus-{i}\"\nstate_dir = {:?}\n\n\
                 [broker]\nurl = {url:?}\nqueue = \"mirrorpush.bench.{i}\"\n\n\
                 [[trigger]]\ntopic = \"{prefix}mirrorpush.sync.#\"\nallowed_signers = {:?}\n\n\
                 [ack]\ntopic = \"{prefix}mirrorpush.synced\"\nsigning_key = {:?}\n",
                handler.display().to_string(),
                m.handler_config.display().to_string(),
                dir.join("state").display().to_string(),
                signers.display().to_string(),
                ack_key.display().to_string(),
            ),
        )
        .map_err(e)?;
        let log = std::fs::File::create(dir.join("listen.log")).map_err(e)?;
        let child = lab
            .command_as_account(&listen)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("listener {i}: {e}"))?;
        listeners.push(child);
        let _ = write!(
            bus_mirrors,
            "\n[[mirror]]\nname = \"bus-{i}\"\ntransport = \"bus\"\nmodules = [\"fedora\"]\nack_key = {:?}\n",
            ack_pub.trim()
        );
    }
    let bus_table = format!(
        "\n[bus]\nurl = {url:?}\ntopic_prefix = {prefix:?}\norigin = \"{ORIGIN}\"\nsigning_key = {:?}\n",
        master_key.display().to_string()
    );
    let registry_bus = lab.root.join("bus.toml");
    std::fs::write(
        &registry_bus,
        format!(
            "[defaults]\nconnect_timeout = \"60s\"\ntimeout = \"5m\"\nhistory = {:?}\n{bus_table}{bus_mirrors}",
            lab.history().display().to_string()
        ),
    )
    .map_err(e)?;
    // Wait for every listener to have bound its queue: a trigger before that would be lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for i in 0..n {
        let log = lab.root.join(format!("listen{i}/listen.log"));
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("mirrorpush-listen: connected ")
        {
            if std::time::Instant::now() > deadline {
                return Err(format!("listener {i} did not connect: {}", log.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "BROKER_URL={url}");
    let _ = writeln!(out, "BROKER_PID={}", broker.pid().unwrap_or(0));
    let _ = writeln!(out, "MASTER_KEY={}", master_key.display());
    let _ = writeln!(out, "TOPIC_PREFIX={prefix}");
    let _ = writeln!(out, "REGISTRY_SSH={}", lab.registry.display());
    let _ = writeln!(out, "REGISTRY_BUS={}", registry_bus.display());
    let _ = writeln!(out, "LAB_DIR={}", lab.root.display());
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    // Until stdin closes (the bench's FIFO); SIGTERM ends the process, and the lab's and the
    // broker's own clean-up of stale processes covers that path.
    let mut buf = [0u8; 256];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut buf), Ok(k) if k > 0) {}
    for mut c in listeners {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(lab);
    drop(broker);
    Ok(())
}
