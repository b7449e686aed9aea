//! Mirror-side handler: the forced command that turns a validated `sync` request into a run of
//! the module's runner. Synchronous and small: no tokio, no russh, no clap.
//!
//! - [`cli`]: argv. [`config`]: handler.toml. [`queue`]: lock, pending, coalescing, results.
//! - [`runner`]: the one executor, draining the queue; [`sync`]: one batch; [`listsync`]: its
//!   file-list runs; [`rsync`]: argv,
//!   version floor, timeout, what changed; [`destdir`]: the mirror tree by fd; [`trace`]:
//!   trace files; [`wait`]: waiting for the run that covers a request.
//! - [`downstream`]: a hub passing pushes on. [`status`]: last-run records and `status`.
//!   [`log`]: `handler.log`. [`check`]: `check`.

pub mod authorized_key;
pub mod check;
pub mod child;
pub mod cli;
pub mod config;
pub mod destdir;
pub mod downstream;
pub mod listsync;
pub mod log;
pub mod pattern;
pub mod queue;
pub mod rsync;
pub mod runner;
pub mod status;
pub mod sync;
pub mod trace;
pub mod wait;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use cli::Verb;
use config::{Config, Mode};
use log::Client;
use queue::{Entry, ModuleDir, ModuleLock};
use wait::Waiter;

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
        (Verb::Forced, Some(raw)) => request(&inv, raw.as_bytes(), true, false),
        (Verb::Forced, None) => {
            let f = fail(
                EXIT_USAGE,
                "no command given (interactive logins and subsystems are refused)",
            );
            refuse_and_log(&inv, b"", &f, true)
        }
        // Under a forced command the request must come from the client's command only.
        (_, Some(raw)) => {
            let f = fail(
                EXIT_CONFIG,
                "the forced command must not name a verb (remove it from authorized_keys)",
            );
            refuse_and_log(&inv, raw.as_bytes(), &f, true)
        }
        (Verb::Sync { raw, full }, None) => request(&inv, raw, false, *full),
        (Verb::Status { json }, None) => status_cmd(&inv, *json),
        (Verb::Check, None) => check::run(&inv),
        (Verb::AuthorizedKey { from, key_file }, None) => {
            authorized_key::run(&inv.config, inv.key.as_deref(), from.as_deref(), key_file)
        }
        (Verb::Help, None) => {
            say(cli::USAGE);
            EXIT_OK
        }
        (Verb::Version, None) => {
            say(&format!("mirrorpush-handler {}", env!("CARGO_PKG_VERSION")));
            EXIT_OK
        }
        (Verb::Run(module), None) => match config::load(&inv.config) {
            Ok(cfg) => runner::run_detached(&cfg, module),
            Err(_) => EXIT_CONFIG,
        },
        (Verb::Downstream { module, targets }, None) => match config::load(&inv.config) {
            Ok(_) if sync::running_as_root() => EXIT_NOPERM,
            Ok(cfg) => downstream::run(&cfg, module, targets),
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

fn state_failure(state_dir: &std::path::Path, e: &std::io::Error, remote: bool) -> Failure {
    if remote {
        fail(
            EXIT_TEMPFAIL,
            "temporary failure: mirror state not writable",
        )
    } else {
        fail(
            EXIT_TEMPFAIL,
            format!("state dir {}: {e}", state_dir.display()),
        )
    }
}

/// Refuses before a request could be admitted, and logs it: with the config's state dir, or
/// when the config is broken, the state dir it names (or the default), so that a push refused
/// for a config error still leaves its line for the admin. As root nothing is written.
fn refuse_and_log(inv: &cli::Invocation, raw: &[u8], f: &Failure, remote: bool) -> i32 {
    if sync::running_as_root() {
        return report(f);
    }
    let (state_dir, reason) = match config::load(&inv.config) {
        Ok(cfg) => (cfg.state_dir, f.message.clone()),
        Err(e) => (config::state_dir_hint(&inv.config), e.0),
    };
    if state_dir.is_dir() {
        let client = Client::from_env(inv.key.as_deref());
        let line = log::request_line(&client, "refused", raw, &reason);
        if let Err(e) = log::append(&state_dir, &line) {
            if f.code != EXIT_CONFIG {
                return report(&state_failure(&state_dir, &e, remote));
            }
        }
    }
    report(f)
}

/// A `sync` request from the client or a local caller.
fn request(inv: &cli::Invocation, raw: &[u8], remote: bool, plain: bool) -> i32 {
    let cfg = match load_config(inv, remote) {
        Ok(c) => c,
        Err(f) => return refuse_and_log(inv, raw, &f, remote),
    };
    if sync::running_as_root() {
        // Before anything is written: state files made by root would lock the account out.
        let module =
            Request::parse(raw).map_or_else(|_| "<module>".to_owned(), |r| r.module.to_string());
        return report(&fail(EXIT_NOPERM, sync::root_refusal(&module)));
    }
    if let Err(e) = queue::ensure_dir(&cfg.state_dir) {
        return report(&state_failure(&cfg.state_dir, &e, remote));
    }
    let client = Client::from_env(inv.key.as_deref());
    let outcome = admit(&cfg, raw, &client, remote, plain);
    let (verdict, reason) = match &outcome {
        Ok(a) if !remote => ("accepted-local", a.note()),
        Ok(a) if a.lock.is_none() && a.mode == Mode::Detach => ("queued", a.note()),
        Ok(a) if a.mode == Mode::Wait => ("accepted-wait", a.note()),
        Ok(a) => ("accepted", a.note()),
        Err(f) => ("refused", f.message.clone()),
    };
    if let Err(e) = log::append(
        &cfg.state_dir,
        &log::request_line(&client, verdict, raw, &reason),
    ) {
        return report(&state_failure(&cfg.state_dir, &e, remote));
    }
    match outcome {
        Err(f) => report(&f),
        Ok(a) => respond(&cfg, a, remote),
    }
}

/// A request that was recorded.
struct Admitted {
    module: String,
    seq: u64,
    /// The module lock, when no runner held it: the request is ours to start.
    lock: Option<ModuleLock>,
    mode: Mode,
    /// The module's last run failed: said in detach answers so the master sees it.
    last_failure: Option<String>,
}

impl Admitted {
    fn note(&self) -> String {
        format!("seq {}", self.seq)
    }

    fn suffix(&self) -> String {
        self.last_failure
            .as_ref()
            .map(|f| format!(" (last run failed: {f})"))
            .unwrap_or_default()
    }
}

/// Validates a request and records it; never spawns anything to refuse.
fn admit(
    cfg: &Config,
    raw: &[u8],
    client: &Client,
    remote: bool,
    plain: bool,
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
        if let Err(e) = destdir::check_dir(&m.dest, dir) {
            return Err(if e.is_refusal() {
                fail(EXIT_NOPERM, format!("dir '{dir}' refused: {e}"))
            } else if remote {
                fail(EXIT_TEMPFAIL, "temporary failure: cannot check the dir")
            } else {
                fail(EXIT_TEMPFAIL, format!("cannot check dir '{dir}': {e}"))
            });
        }
    }
    rsync::check_version(&cfg.rsync, &cfg.state_dir, true).map_err(|e| fail(EXIT_CONFIG, e))?;
    let md = ModuleDir::create(&cfg.state_dir, req.module.as_str())
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let entry = Entry {
        seq: 0,
        at: log::now(),
        dir: req.dir.as_ref().map(ToString::to_string),
        from: client.ip.clone(),
        key: client.key.clone(),
        plain,
    };
    // Append first, then try the lock: see queue.rs for why this order loses nothing.
    let seq = md
        .append(&entry)
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let lock = md
        .try_lock()
        .map_err(|e| state_failure(&cfg.state_dir, &e, remote))?;
    let last_failure = status::read(&md)
        .filter(|r| !r.ok)
        .map(|r| r.failure_summary());
    Ok(Admitted {
        module: req.module.as_str().to_owned(),
        seq,
        lock,
        mode: m.mode,
        last_failure,
    })
}

/// Starts or waits for the run that covers an admitted request, and answers.
fn respond(cfg: &Config, a: Admitted, remote: bool) -> i32 {
    let (Some(m), md) = (
        cfg.modules.get(&a.module),
        ModuleDir::new(&cfg.state_dir, &a.module),
    ) else {
        return report(&fail(EXIT_NOPERM, format!("unknown module '{}'", a.module)));
    };
    if !remote {
        if let Some(lock) = a.lock {
            runner::drain(cfg, m, &md, lock);
        }
        return match md.covering(a.seq) {
            Some(r) => wait::answer(&r),
            None => wait::until_covered(cfg, m, &md, a.seq, Waiter::Local),
        };
    }
    let suffix = a.suffix();
    let started = match a.lock {
        None => None,
        Some(lock) => {
            // Let go before spawning: the runner takes the lock itself.
            drop(lock);
            Some(runner::spawn_detached(&cfg.path, &a.module))
        }
    };
    if let Some(Err(e)) = &started {
        runner::log_event(cfg, m, "spawn-error", &e.to_string());
        // The request stays pending; the next trigger's runner will take it.
        return report(&fail(
            EXIT_TEMPFAIL,
            "temporary failure: cannot start the sync",
        ));
    }
    match (a.mode, started) {
        (Mode::Wait, _) => wait::until_covered(cfg, m, &md, a.seq, Waiter::Remote),
        (Mode::Detach, Some(_)) => {
            say(&format!("accepted{suffix}"));
            EXIT_OK
        }
        (Mode::Detach, None) => {
            say(&format!("queued{suffix}"));
            EXIT_OK
        }
    }
}

fn status_cmd(inv: &cli::Invocation, json: bool) -> i32 {
    let cfg = match load_config(inv, false) {
        Ok(c) => c,
        Err(f) => return report(&f),
    };
    // Reads only: as root (or as anyone) `status` creates nothing.
    let all: Vec<status::ModuleStatus> = cfg
        .modules
        .keys()
        .map(|name| {
            let md = ModuleDir::new(&cfg.state_dir, name);
            status::ModuleStatus {
                module: name.clone(),
                last_run: status::read(&md),
                downstream: downstream::read(&md),
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
