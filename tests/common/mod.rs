//! Helpers shared by the handler integration tests (all of them go through the real lab).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mirrorpush_lab::{Lab, LabOptions};

pub const LONG: Duration = Duration::from_secs(60);

pub fn lab(mode: &str) -> Lab {
    Lab::start(LabOptions {
        mirrors: 1,
        modules: vec!["fedora".into()],
        handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
        mode: mode.into(),
        ..Default::default()
    })
    .expect("lab starts")
}

/// Exit code, stdout, stderr of a finished command. sshd runs the forced command through the
/// user's shell, whose rc files may print noise on this machine (pyenv); that is dropped.
pub fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("command runs");
    let stderr: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("<non-UTF-8 stderr>")
        .lines()
        .filter(|l| !l.starts_with("pyenv: "))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr.join("\n").trim().to_owned(),
    )
}

pub fn ssh(lab: &Lab, command: &str) -> (i32, String, String) {
    run(lab.ssh(0, command))
}

/// The handler run locally (admin mode) against mirror 0's config, as the mirror account
/// (`runuser -u <account> -- mirrorpush-handler ...`, as the README tells admins).
pub fn local(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let mut cmd = lab.command_as_account(env!("CARGO_BIN_EXE_mirrorpush-handler"));
    cmd.arg("--config")
        .arg(&lab.mirrors[0].handler_config)
        .args(args)
        .env_remove("SSH_ORIGINAL_COMMAND")
        .env_remove("SSH_CONNECTION");
    run(cmd)
}

pub fn module_state(lab: &Lab) -> PathBuf {
    lab.mirrors[0].state_dir.join("fedora")
}

fn nonempty(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
}

/// Nothing pending and nothing in flight for the module.
pub fn queue_idle(lab: &Lab) -> bool {
    let s = module_state(lab);
    !nonempty(&s.join("pending")) && !s.join("inflight").exists()
}

/// Mirror 0's config with `extra` keys in the module table and rsync replaced by `rsync`.
pub fn write_config(lab: &Lab, extra: &str, rsync: Option<&Path>) {
    let mut text = lab.handler_toml(0, extra);
    if let Some(r) = rsync {
        let default = format!("rsync = {:?}", lab.rsync_bin.display().to_string());
        assert!(text.contains(&default));
        text = text.replace(&default, &format!("rsync = {:?}", r.display().to_string()));
    }
    lab.write_handler_config(0, &text).expect("config written");
}

/// A wrapper around the real rsync (sshd scrubs nothing here, the handler does: so every path is
/// baked in). Each sync run: waits until `gate` exists, records an overlap if another run is
/// active (mkdir is atomic), counts the run, then runs the real rsync.
pub struct Wrapper {
    pub path: PathBuf,
    pub gate: PathBuf,
    pub started: PathBuf,
    pub overlap: PathBuf,
    pub runs: PathBuf,
}

pub fn wrapper(lab: &Lab, gate_open: bool) -> Wrapper {
    let dir = lab.root.join("wrapper");
    lab.create_dir_for_account(&dir).unwrap();
    let w = Wrapper {
        path: dir.join("rsync-wrapper"),
        gate: dir.join("gate"),
        started: dir.join("started"),
        overlap: dir.join("overlap"),
        runs: dir.join("runs"),
    };
    if gate_open {
        std::fs::write(&w.gate, "").unwrap();
    }
    let script = format!(
        "#!/bin/sh\n\
         case \"$1\" in --version) exec {rsync} --version;; esac\n\
         if ! mkdir {mark} 2>/dev/null; then echo overlap >> {overlap}; fi\n\
         echo run >> {runs}\n\
         touch {started}\n\
         while [ ! -e {gate} ]; do sleep 0.05; done\n\
         {rsync} \"$@\"; rc=$?\n\
         rmdir {mark}\n\
         exit $rc\n",
        rsync = lab.rsync_bin.display(),
        mark = dir.join("active").display(),
        overlap = w.overlap.display(),
        runs = w.runs.display(),
        started = w.started.display(),
        gate = w.gate.display(),
    );
    std::fs::write(&w.path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&w.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

/// Mirror 0's `status --json`, run as the mirror account.
pub fn status_json(lab: &Lab) -> serde_json::Value {
    status_json_of(lab, 0)
}

/// Mirror `i`'s `status --json`, run as the mirror account.
pub fn status_json_of(lab: &Lab, i: usize) -> serde_json::Value {
    let mut cmd = lab.command_as_account(env!("CARGO_BIN_EXE_mirrorpush-handler"));
    cmd.arg("--config")
        .arg(&lab.mirrors[i].handler_config)
        .args(["status", "--json"]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The pid of the detached runner serving `config`, if one is running.
pub fn runner_pid(config: &Path) -> Option<i32> {
    let config = config.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        (args.contains(&&b"__run"[..]) && args.contains(&config)).then_some(pid)
    })
}

/// Whether a live (not zombie) process runs whose command line names the lab dir and
/// `needle` (e.g. `__run`, `__downstream`, a mirror's config).
pub fn lab_process_running(lab: &Lab, needle: &[u8]) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        let has = |w: &[u8]| cmd.windows(w.len()).any(|x| x == w);
        let root = lab.root.as_os_str().as_encoded_bytes();
        !zombie && has(root) && has(needle)
    })
}

/// Writes the upstream's file list of `fedora` with the real generator (`mirrorpush filelist`).
pub fn publish_list(lab: &Lab) {
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("filelist")
        .arg(lab.upstream_dir("fedora"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mirrorpush --registry REGISTRY push ARGS...`: asserts it succeeded, returns its stdout.
pub fn master_push(registry: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .arg("push")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
