//! Starts the shared test lab ([`mirrorpush_lab::Lab`]) with N mirrors in detach mode and keeps
//! it up for a benchmark script: prints `KEY=VALUE` lines (lab dir, registry, identity,
//! known_hosts, user, a parallel-ssh hosts file), then `ready`, and holds until stdin closes or
//! SIGTERM/SIGINT/SIGHUP arrives; then it drops the lab, which stops every process it started.
//!
//! ```text
//! lab_serve N [HANDLER_BIN]   # default handler: mirrorpush-handler next to this example's dir
//! ```

use mirrorpush_lab::{sibling_binary, Lab, LabOptions};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab_serve: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mirrors: usize = args
        .next()
        .ok_or("usage: lab_serve N [HANDLER_BIN]")?
        .parse()
        .map_err(|e| format!("N: {e}"))?;
    let handler_bin = match args.next() {
        Some(p) => PathBuf::from(p),
        None => sibling_binary("mirrorpush-handler").map_err(|e| e.to_string())?,
    };
    let handler_bin = handler_bin
        .canonicalize()
        .map_err(|e| format!("{}: {e}", handler_bin.display()))?;

    // Block the stop signals before anything starts so that one arriving during start-up is
    // not lost: a thread waits for them below. (std's Command resets the mask in children.)
    let signals = stop_signals();
    // SAFETY: pthread_sigmask with a valid, initialised signal set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    let (tx, stop) = mpsc::channel::<&'static str>();
    let tx_sig = tx.clone();
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: sigwait with the set blocked above and a valid out pointer.
        unsafe { libc::sigwait(&signals, &mut sig) };
        let _ = tx_sig.send("signal");
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send("stdin closed");
    });

    // Many mirrors: many sshd listeners and sessions in this process tree.
    mirrorpush::rlimit::raise_open_files(u64::MAX);
    let lab = Lab::start(LabOptions {
        mirrors,
        modules: vec!["fedora".into()],
        handler_bin,
        mode: "detach".into(),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the lab: {e}"))?;

    let hosts = lab.root.join("pssh_hosts");
    let mut text = String::new();
    for m in &lab.mirrors {
        let _ = writeln!(text, "127.0.0.1:{}", m.port);
    }
    std::fs::write(&hosts, text).map_err(|e| format!("{}: {e}", hosts.display()))?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LAB_DIR={}", lab.root.display());
    let _ = writeln!(out, "REGISTRY={}", lab.registry.display());
    let _ = writeln!(out, "IDENTITY={}", lab.identity.display());
    let _ = writeln!(out, "KNOWN_HOSTS={}", lab.known_hosts.display());
    let _ = writeln!(out, "LAB_USER={}", lab.user);
    let _ = writeln!(out, "PSSH_HOSTS={}", hosts.display());
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    let why = stop.recv().unwrap_or("channel closed");
    eprintln!("lab_serve: {why}: stopping the lab");
    drop(lab);
    Ok(())
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a zeroed sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}
