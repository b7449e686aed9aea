//! The built-in local demo: an upstream `rsync --daemon` and three mirrors, each a real `sshd` on
//! loopback forcing `mirrorpush-handler`, driven by the real `mirrorpush` master.
//!
//! Run it with `scripts/demo.sh` (installs what is missing, builds, runs this).

use mirrorpush_lab::{sibling_binary, Lab, LabOptions};
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
    println!(
        "account:   {} (unprivileged; sshd's Match User block as in the README)",
        lab.user
    );
    // mirror1 is a stage-1 mirror that answers when synced; the others follow in stage 2.
    // Every mirror syncs by file list, lands indices last and keeps a Debian-style trace.
    for (i, m) in lab.mirrors.iter().enumerate() {
        let keys = format!(
            "filelist = \"fullfiletimelist-{MODULE}\"\nlast = [\"repodata/\"]\ntrace = \"project/trace/{}.example.net\"\n",
            m.name
        );
        let mut text = lab.handler_toml(i, &keys);
        if i == 0 {
            text = text.replace("mode = \"detach\"", "mode = \"wait\"");
        }
        lab.write_handler_config(i, &text)
            .map_err(|e| format!("cannot write {}: {e}", m.handler_config.display()))?;
        // The forced command as sshd hands it to the account's shell: quoted for it.
        let forced = shell_words::join([
            handler.display().to_string(),
            "--config".into(),
            m.handler_config.display().to_string(),
        ]);
        println!(
            "{}:   sshd on 127.0.0.1:{}, forced command: {forced}{}",
            m.name,
            m.port,
            if i == 0 { "  (mode = \"wait\")" } else { "" }
        );
    }
    let registry = lab
        .registry_toml("")
        .replace("name = \"mirror1\"\n", "name = \"mirror1\"\nwait = true\n")
        .replace("name = \"mirror2\"\n", "name = \"mirror2\"\nstage = 2\n")
        .replace("name = \"mirror3\"\n", "name = \"mirror3\"\nstage = 2\n");
    std::fs::write(&lab.registry, registry).map_err(|e| e.to_string())?;
    println!("registry:  {}", lab.registry.display());

    let upstream = lab.upstream_dir(MODULE);
    let tree = upstream.display().to_string();
    step("The publish step: write the module's file list, then look at the registry");
    master_cmd(&master, &lab, &["filelist", &tree])?;
    master_cmd(&master, &lab, &["list", "--module", MODULE])?;

    step("mirrorpush push fedora: stage 1 answers when synced, then stage 2 starts");
    master_cmd(&master, &lab, &["push", MODULE])?;
    wait_all_in_sync(&lab)?;

    step("Nothing new upstream: each mirror fetches the list, sees it unchanged, and stops");
    master_cmd(&master, &lab, &["push", MODULE])?;
    wait_all_settled(&lab, &handler)?;
    show_last_runs(&lab, &handler)?;

    step("Upstream publishes an update under updates/41: list that dir again, push only it");
    let new_package = "updates/41/x86_64/Packages/n/nginx-1.26.rpm";
    write(&upstream.join(new_package), "nginx payload\n")?;
    // A different size, not only different bytes: the list (like rsync's quick check) compares
    // size and time, and the demo rewrites this file within the same second as the first sync.
    write(
        &upstream.join("updates/41/x86_64/repodata/repomd.xml"),
        "<repomd rev=\"8\" packages=\"2\"/>\n",
    )?;
    master_cmd(
        &master,
        &lab,
        &["filelist", "--changed", "updates/41", &tree],
    )?;
    master_cmd(&master, &lab, &["push", "--dry-run", MODULE, "updates/41/"])?;
    master_cmd(&master, &lab, &["push", MODULE, "updates/41/"])?;
    wait_all_in_sync(&lab)?;
    wait_all_settled(&lab, &handler)?;
    for m in &lab.mirrors {
        println!(
            "{}: has {new_package}: {}",
            m.name,
            m.dest(MODULE).join(new_package).exists()
        );
    }

    step("Each mirror's handler status (what ran, for whom, what it moved)");
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

    step("mirror1's trace file, as Debian's mirror checker reads it");
    let trace = lab.mirrors[0]
        .dest(MODULE)
        .join("project/trace/mirror1.example.net");
    print!(
        "{}",
        std::fs::read_to_string(&trace).map_err(|e| format!("{}: {e}", trace.display()))?
    );

    step("Stopping every process the lab started");
    let root = lab.root.clone();
    drop(lab);
    println!("lab dir removed: {}", !root.exists());
    println!(
        "\nDone. The same lab backs the integration tests (scripts/test.sh) and the benchmarks."
    );
    Ok(())
}

/// One line per mirror: the kind of its last run (`null`, `filelist`, `full`) and what it moved.
fn show_last_runs(lab: &Lab, handler: &Path) -> Result<(), String> {
    for m in &lab.mirrors {
        let out = Command::new(handler)
            .arg("--config")
            .arg(&m.handler_config)
            .args(["status", "--json"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", handler.display()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("status: {e}"))?;
        for r in v["modules"][0]["last_run"]["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            println!(
                "{}: last run {} {}: {} transferred, {} deleted, {} bytes received",
                m.name, r["kind"], r["target"], r["transferred"], r["deleted"], r["bytes_received"]
            );
        }
    }
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

/// Detach mode answers at once and syncs in the background: wait for every mirror to match
/// upstream.
fn wait_all_in_sync(lab: &Lab) -> Result<(), String> {
    let start = Instant::now();
    // Each mirror's own trace file is the only difference allowed.
    let all = || {
        (0..lab.mirrors.len()).all(|i| lab.in_sync_except(i, MODULE, Path::new("project/trace")))
    };
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
