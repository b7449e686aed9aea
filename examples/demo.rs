//! The built-in local demo: an upstream `rsync --daemon` and three mirrors, each a real `sshd` on
//! loopback forcing `mirrorpush-handler`, driven by the real `mirrorpush` master.
//!
//! Run it with `scripts/demo.sh` (installs what is missing, builds, runs this).

use mirrorpush::lab::{sibling_binary, Lab, LabOptions};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const MODULE: &str = "fedora";
const MIRRORS: usize = 3;
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let master = sibling_binary("mirrorpush").map_err(|e| e.to_string())?;
    let handler = sibling_binary("mirrorpush-handler").map_err(|e| e.to_string())?;

    step("Starting the lab: an upstream rsync daemon and three mirrors behind real sshd");
    let lab = Lab::start(LabOptions {
        mirrors: MIRRORS,
        modules: vec![MODULE.into()],
        handler_bin: handler.clone(),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the lab: {e}"))?;
    println!("lab dir:   {}", lab.root.display());
    println!("upstream:  {}", lab.rsync_url(MODULE));
    for m in &lab.mirrors {
        println!(
            "{}:   sshd on 127.0.0.1:{}, forced command: {} --config {}",
            m.name,
            m.port,
            handler.display(),
            m.handler_config.display()
        );
    }
    println!("registry:  {}", lab.registry.display());

    step("mirrorpush list: who is registered and what each would be sent (connects to nobody)");
    master_cmd(&master, &lab, &["list", "--module", MODULE])?;

    step("mirrorpush push fedora: every mirror syncs the whole module");
    master_cmd(&master, &lab, &["push", MODULE])?;
    wait_all_in_sync(&lab)?;

    step("Upstream publishes an update under updates/41; push only that dir");
    let upstream = lab.upstream_dir(MODULE);
    let new_package = "updates/41/x86_64/Packages/n/nginx-1.26.rpm";
    write(&upstream.join(new_package), "nginx payload\n")?;
    // A different size, not only different bytes: rsync's quick check compares size and mtime,
    // and the demo rewrites this file within the same second as the first sync.
    write(
        &upstream.join("updates/41/x86_64/repodata/repomd.xml"),
        "<repomd rev=\"8\" packages=\"2\"/>\n",
    )?;
    master_cmd(&master, &lab, &["push", "--dry-run", MODULE, "updates/41"])?;
    master_cmd(&master, &lab, &["push", MODULE, "updates/41"])?;
    wait_all_in_sync(&lab)?;
    wait_all_settled(&lab, &handler)?;
    for m in &lab.mirrors {
        println!(
            "{}: has {new_package}: {}",
            m.name,
            m.dest(MODULE).join(new_package).exists()
        );
    }

    step("Each mirror's handler status (what ran, for whom, with what result)");
    for m in &lab.mirrors {
        println!("--- {}", m.name);
        let status = Command::new(&handler)
            .arg("--config")
            .arg(&m.handler_config)
            .arg("status")
            .status()
            .map_err(|e| format!("cannot run {}: {e}", handler.display()))?;
        if !status.success() {
            return Err(format!("status on {} failed: {status}", m.name));
        }
    }

    step("Stopping every process the lab started");
    let root = lab.root.clone();
    drop(lab);
    println!("lab dir removed: {}", !root.exists());
    println!(
        "\nDone. The same lab backs the integration tests (scripts/test.sh) and the benchmarks."
    );
    Ok(())
}

fn step(title: &str) {
    println!("\n==> {title}");
}

fn master_cmd(master: &Path, lab: &Lab, args: &[&str]) -> Result<(), String> {
    println!("$ mirrorpush {}", args.join(" "));
    let status = Command::new(master)
        .arg("--registry")
        .arg(&lab.registry)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", master.display()))?;
    if !status.success() {
        return Err(format!("mirrorpush {} failed: {status}", args.join(" ")));
    }
    Ok(())
}

/// Detach mode answers at once and syncs in the background: wait for every mirror to match upstream.
fn wait_all_in_sync(lab: &Lab) -> Result<(), String> {
    let start = Instant::now();
    let all = || (0..lab.mirrors.len()).all(|i| lab.in_sync(i, MODULE));
    if !lab.wait_until(SYNC_TIMEOUT, all) {
        return Err("mirrors did not match upstream within 60 s".into());
    }
    println!(
        "all {} mirrors match upstream {} ms after the push returned",
        lab.mirrors.len(),
        start.elapsed().as_millis()
    );
    Ok(())
}

/// The tree can match upstream a moment before the runner records its result: wait for every
/// handler to report nothing in flight or pending, so the status shown next is final.
fn wait_all_settled(lab: &Lab, handler: &Path) -> Result<(), String> {
    let settled = |config: &Path| -> bool {
        let Ok(out) = Command::new(handler)
            .arg("--config")
            .arg(config)
            .args(["status", "--json"])
            .output()
        else {
            return false;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        let modules = json["modules"].as_array().cloned().unwrap_or_default();
        !modules.is_empty()
            && modules.iter().all(|m| {
                m["in_flight"].as_array().is_some_and(Vec::is_empty)
                    && m["pending"].as_array().is_some_and(Vec::is_empty)
            })
    };
    let all = || lab.mirrors.iter().all(|m| settled(&m.handler_config));
    if !lab.wait_until(SYNC_TIMEOUT, all) {
        return Err("handlers still busy after 60 s".into());
    }
    Ok(())
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, content).map_err(|e| format!("{}: {e}", path.display()))
}
