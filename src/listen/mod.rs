//! `mirrorpush-listen`: the mirror's bus listener (feature `bus`).
//!
//! ```text
//! mirrorpush-listen [--config F]              the daemon: consume, check, hand over, ack
//! mirrorpush-listen [--config F] --stdin      one signed envelope from stdin (a mail pipe)
//! mirrorpush-listen [--config F] status [--json]
//! mirrorpush-listen [--config F] check
//! ```
//! Signed triggers pass [`gate`] (envelope, grammar, signature, signer, module, age) and the
//! replay memory in [`state`], then go to the handler as a local run ([`handoff`]); the handler
//! keeps the queue. Nothing here runs rsync or touches the mirror tree.
//!
//! Exit codes: 0 done; 1 a wait-mode sync ran and failed (`--stdin`); 64 not an envelope or
//! the request fails the grammar; 75 try again later; 77 not trusted or not permitted; 78
//! config error.

pub mod config;
pub mod daemon;
pub mod gate;
pub mod handoff;
pub mod state;

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ssh_key::PrivateKey;

use crate::bus::envelope::{Envelope, MAX_TEXT_LEN};
use crate::request::escape_bytes;
use config::ListenConfig;
use gate::{Gate, Refusal};
use handoff::{Handler, HandoffAnswer};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_TEMPFAIL: i32 = 75;
pub const EXIT_NOPERM: i32 = 77;
pub const EXIT_CONFIG: i32 = 78;

const USAGE: &str =
    "usage: mirrorpush-listen [--config FILE] [--stdin | status [--json] | check | --version]";

#[derive(Debug, PartialEq, Eq)]
enum ListenVerb {
    Daemon,
    Stdin,
    Status { json: bool },
    Check,
    Version,
    Help,
}

fn parse_args(args: &[OsString]) -> Result<(PathBuf, ListenVerb), String> {
    let mut config = PathBuf::from(config::DEFAULT_CONFIG);
    let mut verb = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let set = |v: &mut Option<ListenVerb>, new: ListenVerb| match v {
            None => {
                *v = Some(new);
                Ok(())
            }
            Some(_) => Err(USAGE.to_owned()),
        };
        match a.to_str() {
            Some("--config") => {
                config = it.next().map(PathBuf::from).ok_or(USAGE)?;
            }
            Some("--stdin") => set(&mut verb, ListenVerb::Stdin)?,
            Some("status") => set(&mut verb, ListenVerb::Status { json: false })?,
            Some("--json") => json = true,
            Some("check") => set(&mut verb, ListenVerb::Check)?,
            Some("--version") => set(&mut verb, ListenVerb::Version)?,
            Some("--help" | "-h") => set(&mut verb, ListenVerb::Help)?,
            _ => return Err(USAGE.to_owned()),
        }
    }
    let verb = match (verb, json) {
        (Some(ListenVerb::Status { .. }), json) => ListenVerb::Status { json },
        (_, true) => return Err(USAGE.to_owned()),
        (Some(v), false) => v,
        (None, false) => ListenVerb::Daemon,
    };
    Ok((config, verb))
}

/// One line on stderr (the journal under systemd). Free text is passed through [`quoted`].
pub(crate) fn log(line: &str) {
    eprintln!("mirrorpush-listen: {line}");
}

/// `"text"` with anything but printable ASCII (and `"`, `\`) escaped: no log injection.
pub(crate) fn quoted(s: &str) -> String {
    format!("\"{}\"", escape_bytes(s.as_bytes()).replace('"', "\\x22"))
}

fn fail(code: i32, message: &str) -> i32 {
    eprintln!("error: {message}");
    code
}

pub fn main(args: &[OsString]) -> i32 {
    let (config_path, verb) = match parse_args(args) {
        Ok(v) => v,
        Err(usage) => return fail(EXIT_USAGE, &usage),
    };
    match verb {
        ListenVerb::Help => {
            println!("{USAGE}");
            EXIT_OK
        }
        ListenVerb::Version => {
            println!("mirrorpush-listen {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        ListenVerb::Status { json } => status(&config_path, json),
        ListenVerb::Check => check(&config_path),
        ListenVerb::Stdin => stdin(&config_path),
        ListenVerb::Daemon => daemon(&config_path),
    }
}

/// Config, gate and ack key: what every mode but `status` needs.
fn load(path: &Path) -> Result<(ListenConfig, Gate, Option<PrivateKey>, Vec<String>), String> {
    let cfg = config::load(path).map_err(|e| e.0)?;
    let (gate, warnings) = Gate::new(&cfg)?;
    let ack_key = match &cfg.ack {
        None => None,
        Some(a) => Some(PrivateKey::read_openssh_file(&a.signing_key).map_err(|e| {
            format!(
                "{}: cannot read the ack signing key (an OpenSSH private key without passphrase): {e}",
                a.signing_key.display()
            )
        })?),
    };
    Ok((cfg, gate, ack_key, warnings))
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn daemon(path: &Path) -> i32 {
    if running_as_root() {
        return fail(
            EXIT_NOPERM,
            "refusing to run as root: run mirrorpush-listen as the mirror account",
        );
    }
    let (cfg, gate, ack_key, warnings) = match load(path) {
        Ok(v) => v,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    for w in warnings {
        log(&format!("warning: {w}"));
    }
    match daemon::Daemon::new(cfg, gate, ack_key) {
        Ok(d) => d.run(),
        Err((code, e)) => fail(code, &e),
    }
}

/// `--stdin`: one signed envelope (bare JSON, or in a mail body), checked against every signed
/// `[[trigger]]`, handed over, and answered by exit code.
fn stdin(path: &Path) -> i32 {
    if running_as_root() {
        // As the daemon: the state dir and the handler's files belong to the mirror account
        // (a mail pipe must run as it: docs/bus.md shows `user = mirrorpush`).
        return fail(
            EXIT_NOPERM,
            "refusing to run as root: run mirrorpush-listen --stdin as the mirror account",
        );
    }
    let (cfg, gate, _ack_key, _) = match load(path) {
        Ok(v) => v,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let mut input = Vec::new();
    let limit = (MAX_TEXT_LEN + 1) as u64;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut input) {
        return fail(EXIT_TEMPFAIL, &format!("cannot read stdin: {e}"));
    }
    if let Err(e) = state::ensure_dir(&cfg.state_dir) {
        let (code, why) = state::dir_failure(&cfg.state_dir, &e);
        return fail(code, &why);
    }
    let mut counters = state::Counters::default();
    let code = stdin_inner(&cfg, &gate, &input, &mut counters);
    if let Err(e) = state::add_status(&cfg.state_dir, &counters, None) {
        log(&format!("warning: cannot write status: {e}"));
    }
    code
}

fn stdin_inner(
    cfg: &ListenConfig,
    gate: &Gate,
    input: &[u8],
    counters: &mut state::Counters,
) -> i32 {
    let refuse = |counters: &mut state::Counters, r: Refusal| {
        counters.refuse(r.reason);
        log(&format!(
            "refused reason={} id={} source=stdin detail={}",
            r.reason,
            r.id.as_deref().unwrap_or("-"),
            quoted(&r.detail)
        ));
        fail(r.exit_code(), &format!("{}: {}", r.reason, r.detail))
    };
    let now = SystemTime::now();
    let env = match Envelope::from_text(input) {
        Ok(e) => e,
        Err(e) => return refuse(counters, Refusal::new(e.reason(), e.to_string(), None)),
    };
    let admitted = match gate.check_envelope(&env, None, now) {
        Ok(a) => a,
        Err(r) => return refuse(counters, r),
    };
    let t = &admitted.verified.trigger;
    let id = t.id.to_string();
    {
        let locked = state::lock(&cfg.state_dir)
            .and_then(|l| state::Seen::open(&cfg.state_dir, cfg.max_seen).map(|s| (l, s)));
        let (_l, seen) = match locked {
            Ok(v) => v,
            Err(e) => return fail(EXIT_TEMPFAIL, &format!("state dir: {e}")),
        };
        if seen.contains(&id, now) {
            return refuse(
                counters,
                Refusal::new("replay", "this id was already accepted", Some(id)),
            );
        }
        if seen.room(now) == 0 {
            return refuse(
                counters,
                Refusal::new(
                    "memory-full",
                    "too many ids remembered (max_seen)",
                    Some(id),
                ),
            );
        }
    }
    log(&format!(
        "accepted id={id} origin={} key={} request={} source=stdin",
        t.origin,
        admitted.verified.key,
        quoted(&t.request.to_string())
    ));
    let handler = Handler::new(cfg.handler.as_deref(), &cfg.handler_config);
    let answer = handler.sync(&t.request, true);
    counters.handoffs += 1;
    log(&format!(
        "handoff request={} answer={} detail={}",
        quoted(&t.request.to_string()),
        answer.word(),
        quoted(answer.detail())
    ));
    let code = match &answer {
        HandoffAnswer::Synced(_) | HandoffAnswer::Accepted(_) => EXIT_OK,
        HandoffAnswer::Failed(_) => EXIT_FAILED,
        HandoffAnswer::Refused(code, why) => {
            let reason = if *code == 64 {
                "handler-64"
            } else {
                "handler-77"
            };
            return refuse(counters, Refusal::new(reason, why.clone(), Some(id)));
        }
        HandoffAnswer::Retry(why) => return fail(EXIT_TEMPFAIL, why),
    };
    counters.accepted += 1;
    if code == EXIT_FAILED {
        counters.failed_runs += 1;
    }
    let recorded = state::lock(&cfg.state_dir).and_then(|_l| {
        let mut seen = state::Seen::open(&cfg.state_dir, cfg.max_seen)?;
        seen.record(&[(id, admitted.remember_until)], SystemTime::now())
    });
    if let Err(e) = recorded {
        log(&format!("warning: cannot record the id: {e}"));
    }
    if code == EXIT_FAILED {
        eprintln!("error: sync failed: {}", answer.detail());
    } else {
        println!("{}", answer.detail());
    }
    code
}

fn status(path: &Path, json: bool) -> i32 {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &e.0),
    };
    let s = state::read_status(&cfg.state_dir);
    let hints = state::read_hints(&cfg.state_dir);
    if json {
        let v = serde_json::json!({
            "accepted": s.counters.accepted,
            "refused": s.counters.refused,
            "hints": s.counters.hints,
            "handoffs": s.counters.handoffs,
            "failed_runs": s.counters.failed_runs,
            "acks_published": s.counters.acks_published,
            "acks_failed": s.counters.acks_failed,
            "broker": s.broker,
            "updated": s.updated,
            "pending_hints": hints,
        });
        println!("{v}");
        return EXIT_OK;
    }
    let refused_total: u64 = s.counters.refused.values().sum();
    println!(
        "broker: {}",
        s.broker.as_deref().unwrap_or("(the daemon has not run)")
    );
    println!(
        "accepted: {}  refused: {refused_total}  hints: {}  handoffs: {}  failed runs: {}",
        s.counters.accepted, s.counters.hints, s.counters.handoffs, s.counters.failed_runs
    );
    for (reason, n) in &s.counters.refused {
        println!("  refused {reason}: {n}");
    }
    println!(
        "acks published: {}  not published: {}",
        s.counters.acks_published, s.counters.acks_failed
    );
    for h in hints {
        println!(
            "pending hint: {} (trigger line {}, {} hand-offs so far)",
            h.request, h.trigger_line, h.attempts
        );
    }
    EXIT_OK
}

/// Reads everything, connects to the broker; prints what it found.
fn check(path: &Path) -> i32 {
    let (cfg, _gate, ack_key, warnings) = match load(path) {
        Ok(v) => v,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    println!("config: {} ok", cfg.path.display());
    for w in &warnings {
        println!("warning: {w}");
    }
    for t in &cfg.triggers {
        match &t.kind {
            config::TriggerKind::Signed {
                allowed_signers, ..
            } => println!(
                "trigger {}: signed, allowed_signers {}",
                t.topic,
                allowed_signers.display()
            ),
            config::TriggerKind::Hint { module, dir, .. } => println!(
                "trigger {}: hint for sync {module}{}",
                t.topic,
                dir.as_ref().map_or(String::new(), |d| format!(" {d}"))
            ),
        }
    }
    if let Some(k) = &ack_key {
        println!(
            "ack key: {} {}",
            k.algorithm(),
            k.public_key().fingerprint(ssh_key::HashAlg::Sha256)
        );
    }
    let handler = Handler::new(cfg.handler.as_deref(), &cfg.handler_config);
    if !handler.program.is_file() {
        return fail(
            EXIT_CONFIG,
            &format!("handler {} does not exist", handler.program.display()),
        );
    }
    println!("handler: {}", handler.program.display());
    let Some(broker) = &cfg.broker else {
        println!("broker: none (only --stdin)");
        return EXIT_OK;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_TEMPFAIL, &format!("runtime: {e}")),
    };
    let r = rt.block_on(async {
        let c = crate::bus::amqp::Client::connect(&broker.connection, "mirrorpush-listen check")
            .await?;
        c.close().await;
        Ok::<_, crate::bus::amqp::AmqpError>(())
    });
    match r {
        Ok(()) => {
            println!("broker: connected");
            EXIT_OK
        }
        Err(crate::bus::amqp::AmqpError::Config(e)) => fail(EXIT_CONFIG, &e),
        Err(e) => fail(EXIT_TEMPFAIL, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(PathBuf, ListenVerb), String> {
        parse_args(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn argv() {
        assert_eq!(p(&[]).unwrap().1, ListenVerb::Daemon);
        assert_eq!(
            p(&["--config", "/x", "--stdin"]).unwrap(),
            (PathBuf::from("/x"), ListenVerb::Stdin)
        );
        assert_eq!(
            p(&["status", "--json"]).unwrap().1,
            ListenVerb::Status { json: true }
        );
        assert!(p(&["--stdin", "check"]).is_err());
        assert!(p(&["--json"]).is_err());
        assert!(p(&["sync"]).is_err());
        assert!(p(&["--config"]).is_err());
    }

    #[test]
    fn quoting_escapes_what_could_forge_a_log_line() {
        assert_eq!(quoted("a\"b\nc\\"), "\"a\\x22b\\x0ac\\x5c\"");
    }
}
