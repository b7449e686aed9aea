//! Mirror-side handler: the forced command that turns a validated `sync` request into a run of
//! the module's runner. Synchronous and small: no tokio, no russh, no clap.
//!
//! `main` (here) turns argv and `SSH_ORIGINAL_COMMAND` into a verb and makes the one root check.
//! The modules below it, highest first: each imports only modules listed after it, so the
//! arrows point down and no module imports one that imports it back (tests/module_layers.rs).
//! - [`serve`]: the stranger path, read top-down: parse → admit → enqueue → answer or wait.
//! - [`status`]: the `status` verb.
//! - [`check`]: the `check` verb.
//! - [`authorized_key`]: the key line an admin adds for a master.
//! - [`runner`]: the one executor: drains the module's queue batch by batch through the stages.
//! - [`downstream`]: a hub passing pushes on (the detached pusher).
//! - [`stages`]: decide → transfer → remove → settle → record; no stage imports another.
//! - [`trace`]: the trace and lastsync files.
//! - [`log`]: the lines of `handler.log`.
//! - [`list_identity`]: the null check by `lstat`.
//! - [`last_run`]: the run records status shows.
//! - [`queue`]: the queue protocol: appends, sequence numbers, batch results for waiters.
//! - [`rsync`]: rsync's argv, version floor, and what a run changed.
//! - [`child`]: the one way to start a program.
//! - [`pattern`]: rsync's pattern rules.
//! - [`destdir`]: the mirror tree by fd.
//! - [`cli`]: the command line, to a verb.
//! - [`config`]: reading and checking `handler.toml`.
//! - [`state`]: every file of the state dir.
//! - [`exit`]: exit codes and answers.

mod authorized_key;
mod check;
mod child;
mod cli;
mod config;
mod destdir;
mod downstream;
mod exit;
mod last_run;
mod list_identity;
mod log;
mod pattern;
mod queue;
mod rsync;
mod runner;
mod serve;
mod stages;
mod state;
mod status;
mod trace;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use cli::Verb;
use exit::{fail, report, say, EXIT_CONFIG, EXIT_NOPERM, EXIT_OK, EXIT_USAGE};
use serve::Caller;

/// Entry point: `args` without the program name. Returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    let inv = match cli::parse(args) {
        Ok(i) => i,
        Err(usage) => return report(&fail(EXIT_USAGE, usage)),
    };
    // The one root check: every verb below that could write decides with it, before it writes.
    let root = rustix::process::geteuid().is_root();
    let remote = Caller {
        remote: true,
        root,
        by_mode: true,
    };
    let local = Caller {
        remote: false,
        root,
        by_mode: false,
    };
    let original = std::env::var_os("SSH_ORIGINAL_COMMAND");
    match (&inv.verb, original) {
        (Verb::Forced, Some(raw)) => serve::request(&inv, raw.as_bytes(), remote, false),
        (Verb::Forced, None) => {
            let f = fail(
                EXIT_USAGE,
                "no command given (interactive logins and subsystems are refused)",
            );
            serve::refuse_and_log(&inv, b"", &f, remote)
        }
        // Under a forced command the request must come from the client's command only.
        (_, Some(raw)) => {
            let f = fail(
                EXIT_CONFIG,
                "the forced command must not name a verb (remove it from authorized_keys)",
            );
            serve::refuse_and_log(&inv, raw.as_bytes(), &f, remote)
        }
        (
            Verb::Sync {
                raw,
                plain,
                by_mode,
            },
            None,
        ) => {
            let caller = Caller {
                by_mode: *by_mode,
                ..local
            };
            serve::request(&inv, raw, caller, *plain)
        }
        (Verb::Status { json }, None) => status::command(&inv, *json),
        (Verb::Check, None) => check::run(&inv, root),
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
        // The hidden verbs the handler starts itself: nobody to answer, so only exit codes.
        (Verb::Run(_) | Verb::Downstream { .. }, None) if root => EXIT_NOPERM,
        (Verb::Run(module), None) => match config::load(&inv.config) {
            Ok(cfg) => runner::run_detached(&cfg, module),
            Err(_) => EXIT_CONFIG,
        },
        (Verb::Downstream { module, targets }, None) => match config::load(&inv.config) {
            Ok(cfg) => downstream::run(&cfg, module, targets),
            Err(_) => EXIT_CONFIG,
        },
    }
}
