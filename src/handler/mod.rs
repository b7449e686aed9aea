//! Mirror-side handler: the forced command that turns a validated `sync` request into an rsync
//! run (DESIGN.md sections 2-4, 7). Synchronous and small: no tokio, no russh, no clap.
//!
//! - [`cli`]: argv. [`config`]: handler.toml. [`queue`]: lock, pending, coalescing.
//! - [`rsync`]: argv, version floor, timeout. [`runner`]: draining the queue.
//! - [`status`]: last-run records and `status`. [`log`]: `handler.log`.

pub mod cli;
pub mod config;
pub mod log;
pub mod queue;
pub mod rsync;
pub mod runner;
pub mod status;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use cli::Verb;
use config::{Config, Mode};
use log::Client;
use queue::{Entry, ModuleDir};

use crate::request::Request;

pub const EXIT_OK: i32 = 0;
pub const EXIT_RSYNC_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_TEMPFAIL: i32 = 75;
pub const EXIT_NOPERM: i32 = 77;
pub const EXIT_CONFIG: i32 = 78;

/// An error for the caller: exit code and the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn report(f: &Failure) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {}", f.message);
    f.code
}

/// One answer line on stdout. A client that has hung up (EPIPE) must not turn a request that
/// was handled into a panic, so write errors are ignored: the log and status hold the result.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Entry point: `args` without the program name. Returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let inv = match cli::parse(args) {
        Ok(i) => i,
        Err(usage) => return report(&fail(EXIT_USAGE, usage)),
    };
    let original = std::env::var_os("SSH_ORIGINAL_COMMAND");
    match (&inv.verb, original) {
        (Verb::Forced, Some(raw)) => request(&inv, raw.as_bytes(), true),
        (Verb::Forced, None) => {
            let f = fail(
                EXIT_USAGE,
                "no command given (interactive logins and subsystems are refused)",
            );
            refuse_and_log(&inv, b"", &f, true)
        }
        // Under a forced command the request must come from the client's command only.
        (_, Some(_)) => report(&fail(
            EXIT_CONFIG,
            "the forced command must not name a verb (remove it from authorized_keys)",
        )),
        (Verb::Sync(raw), None) => request(&inv, raw, false),
        (Verb::Status { json }, None) => status_cmd(&inv, *json),
        (Verb::Check, None) => check_cmd(&inv),
        (Verb::Help, None) => {
            say(cli::USAGE);
            EXIT_OK
        }
        (Verb::Run(module), None) => match config::load(&inv.config) {
            Ok(cfg) => runner::run_detached(&cfg, module),
            Err(_) => EXIT_CONFIG,
        },
    }
}

/// Loads the config; a remote client gets a terse message, an admin the full one.
fn load_config(inv: &cli::Invocation, remote: bool) -> Result<Config, Failure> {
    config::load(&inv.config).map_err(|e| {
        if remote {
            fail(
                EXIT_CONFIG,
                "mirror configuration error (the mirror admin can run 'mirrorpush-handler check')",
            )
        } else {
            fail(EXIT_CONFIG, e.0)
        }
    })
}

fn state_failure(cfg: &Config, e: &std::io::Error, remote: bool) -> Failure {
    if remote {
        fail(
            EXIT_TEMPFAIL,
            "temporary failure: mirror state not writable",
        )
    } else {
        fail(
            EXIT_TEMPFAIL,
            format!("state dir {}: {e}", cfg.state_dir.display()),
        )
    }
}

/// Refuses before a request could be parsed; logs it when the config allows.
fn refuse_and_log(inv: &cli::Invocation, raw: &[u8], f: &Failure, remote: bool) -> i32 {
    if let Ok(cfg) = config::load(&inv.config) {
        let client = Client::from_env(inv.key.as_deref());
        let line = log::request_line(&client, "refused", raw, &f.message);
        let logged =
            queue::ensure_dir(&cfg.state_dir).and_then(|()| log::append(&cfg.state_dir, &line));
        if let Err(e) = logged {
            return report(&state_failure(&cfg, &e, remote));
        }
    }
    report(f)
}

/// A `sync` request from the client or a local caller.
fn request(inv: &cli::Invocation, raw: &[u8], remote: bool) -> i32 {
    let cfg = match load_config(inv, remote) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    if let Err(e) = queue::ensure_dir(&cfg.state_dir) {
        return report(&state_failure(&cfg, &e, remote));
    }
    let client = Client::from_env(inv.key.as_deref());
    // Local mode (timers, admins) always syncs in the foreground: under a systemd unit a
    // detached runner would be killed with the unit's cgroup as soon as we exit.
    let outcome = admit(&cfg, raw, &client, remote, !remote);
    let (verdict, reason) = match &outcome {
        Ok(a) => (a.verdict(), String::new()),
        Err(f) => ("refused", f.message.clone()),
    };
    if let Err(e) = log::append(
        &cfg.state_dir,
        &log::request_line(&client, verdict, raw, &reason),
    ) {
        return report(&state_failure(&cfg, &e, remote));
    }
    match outcome {
        Err(f) => report(&f),
        Ok(Admitted::Queued) => {
            say("queued");
            EXIT_OK
        }
        Ok(Admitted::Detach { module }) => match runner::spawn_detached(&cfg.path, &module) {
            Ok(()) => {
                say("accepted");
                EXIT_OK
            }
            // The request stays pending; the next trigger's runner will take it.
            Err(e) => report(&fail(
                EXIT_TEMPFAIL,
                if remote {
                    "temporary failure: cannot start the sync".to_owned()
                } else {
                    format!("cannot start the runner: {e}")
                },
            )),
        },
        Ok(Admitted::Wait { module, lock }) => wait_run(&cfg, &module, lock, remote, false),
        Ok(Admitted::Foreground { module, lock }) => wait_run(&cfg, &module, lock, remote, true),
    }
}

enum Admitted {
    Queued,
    Detach {
        module: String,
    },
    Wait {
        module: String,
        lock: queue::ModuleLock,
    },
    /// Local mode: run our batch and everything that queues up meanwhile, then exit.
    Foreground {
        module: String,
        lock: queue::ModuleLock,
    },
}

impl Admitted {
    fn verdict(&self) -> &'static str {
        match self {
            Admitted::Queued => "queued",
            Admitted::Detach { .. } => "accepted",
            Admitted::Wait { .. } | Admitted::Foreground { .. } => "accepted-wait",
        }
    }
}

/// Validates a request and records it; never spawns anything to refuse.
fn admit(
    cfg: &Config,
    raw: &[u8],
    client: &Client,
    remote: bool,
    foreground: bool,
) -> Result<Admitted, Failure> {
    let req =
        Request::parse(raw).map_err(|e| fail(EXIT_USAGE, format!("malformed request: {e}")))?;
    let m = cfg
        .modules
        .get(req.module.as_str())
        .ok_or_else(|| fail(EXIT_NOPERM, format!("unknown module '{}'", req.module)))?;
    if let Some(dir) = &req.dir {
        if !m.allow_dirs {
            return Err(fail(
                EXIT_NOPERM,
                format!("module '{}' does not accept dir syncs", req.module),
            ));
        }
        match rsync::symlink_under(&m.dest, dir) {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(fail(
                    EXIT_NOPERM,
                    format!("dir '{dir}' passes through a symlink on this mirror"),
                ))
            }
            Err(e) => return Err(state_failure(cfg, &e, remote)),
        }
    }
    rsync::check_version(&cfg.rsync, &cfg.state_dir).map_err(|e| fail(EXIT_CONFIG, e))?;
    let md = ModuleDir::create(&cfg.state_dir, req.module.as_str())
        .map_err(|e| state_failure(cfg, &e, remote))?;
    let entry = Entry {
        at: log::now(),
        dir: req.dir.as_ref().map(ToString::to_string),
        from: client.ip.clone(),
        key: client.key.clone(),
    };
    // Append first, then try the lock: see queue.rs for why this order loses nothing.
    md.append(&entry)
        .map_err(|e| state_failure(cfg, &e, remote))?;
    let lock = md.try_lock().map_err(|e| state_failure(cfg, &e, remote))?;
    let module = req.module.as_str().to_owned();
    Ok(match (lock, m.mode) {
        (None, _) => Admitted::Queued,
        (Some(lock), _) if foreground => Admitted::Foreground { module, lock },
        // Let go before spawning: the runner takes the lock itself.
        (Some(_), Mode::Detach) => Admitted::Detach { module },
        (Some(lock), Mode::Wait) => Admitted::Wait { module, lock },
    })
}

/// Wait mode: run one batch (ours and whatever was pending) in the foreground and report it;
/// anything that arrives meanwhile goes to a detached runner.
/// With `foreground` (local mode) the rest is drained here too instead of by a detached runner.
fn wait_run(
    cfg: &Config,
    module: &str,
    lock: queue::ModuleLock,
    remote: bool,
    foreground: bool,
) -> i32 {
    let (Some(m), md) = (
        cfg.modules.get(module),
        ModuleDir::new(&cfg.state_dir, module),
    ) else {
        return report(&fail(EXIT_NOPERM, format!("unknown module '{module}'")));
    };
    let result = runner::run_next(cfg, m, &md);
    if foreground {
        // Later batches are other people's requests: their results go to status and the log.
        let _ = runner::drain(cfg, m, &md, lock);
    } else {
        drop(lock);
    }
    if !foreground && md.has_pending() {
        if let Err(e) = runner::spawn_detached(&cfg.path, module) {
            let _ = log::append(
                &cfg.state_dir,
                &format!(
                    "{} module={module} verdict=spawn-error detail=\"{}\"\n",
                    log::now(),
                    crate::request::escape_bytes(e.to_string().as_bytes())
                ),
            );
        }
    }
    match result {
        Ok(Some(r)) if r.ok => {
            say("done");
            EXIT_OK
        }
        Ok(Some(r)) => report(&fail(
            EXIT_RSYNC_FAILED,
            format!("sync failed: {}", r.result),
        )),
        // Another runner took our entry between our append and our lock: it is being handled.
        Ok(None) => {
            say("queued");
            EXIT_OK
        }
        Err(e) => report(&state_failure(cfg, &e, remote)),
    }
}

fn status_cmd(inv: &cli::Invocation, json: bool) -> i32 {
    let cfg = match load_config(inv, false) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    let all: Vec<status::ModuleStatus> = cfg
        .modules
        .keys()
        .map(|name| {
            let md = ModuleDir::new(&cfg.state_dir, name);
            status::ModuleStatus {
                module: name.clone(),
                last_run: status::read(&md),
                in_flight: md.inflight().unwrap_or_default(),
                pending: md.pending().unwrap_or_default(),
            }
        })
        .collect();
    if json {
        say(&status::render_json(&all));
    } else {
        say(status::render_text(&all).trim_end_matches('\n'));
    }
    EXIT_OK
}

fn check_cmd(inv: &cli::Invocation) -> i32 {
    let cfg = match load_config(inv, false) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    let probe = cfg.state_dir.join(".check");
    let writable = queue::ensure_dir(&cfg.state_dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        return report(&state_failure(&cfg, &e, false));
    }
    for m in cfg.modules.values() {
        if !m.dest.is_dir() {
            return report(&fail(
                EXIT_CONFIG,
                format!(
                    "{}: dest {} of module '{}' is not an existing directory",
                    cfg.path.display(),
                    m.dest.display(),
                    m.name
                ),
            ));
        }
    }
    let (a, b, c) = match rsync::check_version(&cfg.rsync, &cfg.state_dir) {
        Ok(v) => v,
        Err(e) => return report(&fail(EXIT_CONFIG, e)),
    };
    let names: Vec<&str> = cfg.modules.keys().map(String::as_str).collect();
    say(&format!(
        "ok: {} module(s) [{}], rsync {a}.{b}.{c} at {}, state dir {}",
        names.len(),
        names.join(", "),
        cfg.rsync.display(),
        cfg.state_dir.display()
    ));
    EXIT_OK
}
