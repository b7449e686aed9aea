//! The master's commands (README, "Using mirrorpush"). Each returns the process exit code:
//! 0 all good, 1 some mirror failed (or a check found a problem), 2 usage or config error.
//! Completion warnings (a mirror that only accepted where later stages depend on it) are
//! printed but do not change the exit code: the push itself went through.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;

use super::bus_push::{self, BusPush};
use super::json;
use super::known_hosts::KnownHosts;
use super::protocol::{Exec, Protocol};
use super::registry::{Bus, Mirror, Registry};
use super::report::Reporter;
use super::scheduler;
use super::select::{self, Choice, Selector};
use super::session;
use super::transport::Target;
use crate::history::recorder::Recorder;
use crate::request::{ModuleName, Request};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// `mirrorpush list`: every mirror, selected or not (with the reason). Connects to nobody.
pub fn list(registry: &Path, module: Option<&str>, tags: &[String], json: bool) -> i32 {
    let registry = match load(registry) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let module = match module.map(ModuleName::parse).transpose() {
        Ok(m) => m,
        Err(e) => return usage(&format!("module name {e}")),
    };
    let selector = Selector {
        module: module.clone(),
        mirrors: vec![],
        tags: tags.to_vec(),
    };
    let choices = match selector.apply(&registry) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let request = module.map(|m| Request {
        module: m,
        dir: None,
    });
    print_choices(&choices, request.as_ref(), registry.bus.as_ref(), json);
    EXIT_OK
}

/// What to push, from the command line.
pub struct PushArgs {
    pub module: String,
    pub dir: Option<String>,
    pub mirrors: Vec<String>,
    pub tags: Vec<String>,
    pub concurrency: Option<usize>,
    pub dry_run: bool,
    pub json: bool,
    /// `--history`, overriding the registry's.
    pub history: Option<PathBuf>,
    /// `--verify`, with its `--until`.
    pub verify: bool,
    pub until: Option<Duration>,
}

/// `mirrorpush push`. With `dry_run`, prints the plan and connects to nobody.
pub async fn push(registry: &Path, args: PushArgs) -> i32 {
    let registry = match load(registry) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // The one grammar renders the request, so we can never send what a handler would refuse.
    let request = match Request::new(&args.module, args.dir.as_deref().map(typed_dir)) {
        Ok(r) => r,
        Err(e) => return usage(&format!("invalid request: {e}")),
    };
    let selector = Selector {
        module: Some(request.module.clone()),
        mirrors: args.mirrors.clone(),
        tags: args.tags.clone(),
    };
    let choices = match selector.apply(&registry) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if args.dry_run {
        print_choices(&choices, Some(&request), registry.bus.as_ref(), args.json);
        return EXIT_OK;
    }
    let selected: Vec<&Mirror> = choices
        .iter()
        .filter(|c| c.skipped.is_none())
        .map(|c| c.mirror)
        .collect();
    if selected.is_empty() {
        return usage(&select::why_none(
            &registry,
            &request.module,
            &request.to_string(),
        ));
    }
    let Prepared { targets, bus } = match prepare(&selected, &request, registry.bus.as_ref()) {
        Ok(t) => t,
        Err(e) => return usage(&e.to_string()),
    };
    let progress = std::io::stderr().is_terminal();
    let sessions = targets.iter().filter(|t| t.holds_connection()).count();
    let history = history_path(&registry, args.history.as_deref());
    let recorder = Recorder::start(&history, &registry.verify, &request, &selected);
    let reporter = Reporter::new(args.json, progress, targets.len()).record_to(recorder);
    let concurrency = fd_bounded(
        args.concurrency
            .unwrap_or(registry.concurrency)
            .min(sessions.max(1)),
    );
    let stop = async {
        // If the handler cannot be installed, never stop early rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let summary = scheduler::run(
        targets,
        concurrency,
        registry.after_failed_stage,
        reporter,
        stop,
    )
    .await;
    if let Some(bus) = bus {
        bus.finish().await;
    }
    let code = if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.all_ok() {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    match (args.verify, summary.push) {
        (true, Some(id)) if !summary.interrupted => {
            verify_after_push(&registry, &history, id, args.json, args.until, code).await
        }
        (true, None) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: --verify: this push was not recorded in the history, so it cannot be verified"
            );
            EXIT_FAILED
        }
        _ => code,
    }
}

/// `push --verify`: `verify --watch` of the push just made; exit 1 if either failed.
async fn verify_after_push(
    registry: &Registry,
    history: &Path,
    id: i64,
    json: bool,
    until: Option<Duration>,
    push_code: i32,
) -> i32 {
    let h = match crate::history::History::open(history) {
        Ok(h) => h,
        Err(e) => return usage(&e.to_string()),
    };
    let args = crate::verify::VerifyArgs {
        push: Some(id),
        watch: true,
        json,
        ..Default::default()
    };
    let until = until.unwrap_or(crate::verify::DEFAULT_UNTIL_PUSH);
    let verified = crate::verify::run(registry, h, id, &args, until).await;
    if push_code == EXIT_OK && verified == crate::verify::EXIT_VERIFIED {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The history database: `--history`, else the registry's `[defaults] history`.
pub fn history_path(registry: &Registry, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| registry.history.clone(), Path::to_path_buf)
}

/// `mirrorpush verify`.
pub async fn verify(
    registry_path: &Path,
    history: Option<&Path>,
    args: crate::verify::VerifyArgs,
) -> i32 {
    let registry = match load(registry_path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let path = history_path(&registry, history);
    crate::verify::command(&registry, &path, args).await
}

/// `mirrorpush report`: reads only the history; the registry is read for its `history` setting
/// when `--history` is not given (and may be absent then: the default path is used).
pub fn report(
    registry_path: &Path,
    history: Option<&Path>,
    args: &crate::propagation::ReportArgs,
) -> i32 {
    let path = match history {
        Some(p) => p.to_path_buf(),
        None if !registry_path.exists() => PathBuf::from(super::registry::DEFAULT_HISTORY),
        None => match load(registry_path) {
            Ok(r) => r.history,
            Err(code) => return code,
        },
    };
    crate::propagation::command(&path, args)
}

/// A dir as typed on the master's command line: a shell completes `updates/41` to `updates/41/`,
/// so exactly one trailing `/` is dropped. Nothing else is repaired, and the request sent never
/// ends with `/` (the grammar refuses `updates/41//` and `/`).
fn typed_dir(dir: &str) -> &str {
    dir.strip_suffix('/').unwrap_or(dir)
}

/// Fds the master needs besides its sessions: stdio, the runtime's own, key and log files.
const SPARE_FDS: usize = 64;

/// Raises the open-file limit for `concurrency` sessions; where the hard limit does not allow
/// that, runs fewer at once (and says so) rather than let sessions fail with "Too many open
/// files".
fn fd_bounded(concurrency: usize) -> usize {
    let limit = crate::rlimit::raise_open_files((concurrency + SPARE_FDS) as u64);
    let fitting = sessions_within(limit, concurrency);
    if fitting < concurrency {
        tracing::warn!(
            concurrency,
            open_file_limit = limit,
            "the open-file limit allows only {fitting} sessions at once; raise it (ulimit -n, LimitNOFILE=) for more"
        );
    }
    fitting
}

/// How many of `concurrency` sessions fit under an open-file limit, keeping [`SPARE_FDS`]; at
/// least one, so a push always makes progress.
fn sessions_within(limit: u64, concurrency: usize) -> usize {
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(SPARE_FDS);
    concurrency.min(room).max(1)
}

/// What a push runs: a target per selected mirror, and the bus publish its bus mirrors share.
struct Prepared {
    targets: Vec<Target>,
    bus: Option<Arc<BusPush>>,
}

/// Loads each identity and known_hosts file once, and the bus signing key; an unreadable one is
/// a config error that names the file and the mirror, found before any connection is made.
fn prepare(selected: &[&Mirror], request: &Request, bus: Option<&Bus>) -> Result<Prepared, String> {
    let mut keys: HashMap<PathBuf, Arc<PrivateKey>> = HashMap::new();
    let mut known: HashMap<PathBuf, Arc<KnownHosts>> = HashMap::new();
    let mut targets = Vec::with_capacity(selected.len());
    // A bus mirror's completion matters where the registry says wait = true, or where a later
    // stage of this push follows it.
    let on_bus: Vec<(&Mirror, bool)> = selected
        .iter()
        .filter(|m| m.transport.is_bus())
        .map(|m| {
            let later = selected.iter().any(|o| o.stage > m.stage);
            (*m, m.expects_synced() || later)
        })
        .collect();
    let mut shared = None;
    if let (Some(bus), false) = (bus, on_bus.is_empty()) {
        let key = bus_push::load_signing_key(&bus.signing_key)?;
        let (bus_targets, push) = bus_push::targets(bus, key, request, &on_bus)?;
        targets.extend(bus_targets.into_iter().map(Target::Bus));
        shared = Some(push);
    }
    for m in selected.iter().filter(|m| !m.transport.is_bus()) {
        let key = match &m.identity {
            None => None,
            Some(path) => Some(match keys.get(path) {
                Some(k) => k.clone(),
                None => {
                    let k = Arc::new(load_key(path, &m.name)?);
                    keys.insert(path.clone(), k.clone());
                    k
                }
            }),
        };
        let kh = match known.get(&m.known_hosts) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(load_known_hosts(&m.known_hosts, &m.name)?);
                known.insert(m.known_hosts.clone(), k.clone());
                k
            }
        };
        targets.push(Target::Ssh(session::SshTarget::new(
            (*m).clone(),
            request.clone(),
            kh,
            key,
        )));
    }
    Ok(Prepared {
        targets,
        bus: shared,
    })
}

fn load_key(path: &Path, mirror: &str) -> Result<PrivateKey, String> {
    // Read it ourselves first so "unreadable" and "not a key" are told apart.
    std::fs::read(path).map_err(|e| {
        format!(
            "identity {} (mirror {mirror}): cannot read: {e}",
            path.display()
        )
    })?;
    russh::keys::load_secret_key(path, None).map_err(|e| {
        format!(
            "identity {} (mirror {mirror}): not a usable private key ({e}); \
             encrypted keys must be used through ssh-agent (leave `identity` unset)",
            path.display()
        )
    })
}

fn load_known_hosts(path: &Path, mirror: &str) -> Result<KnownHosts, String> {
    KnownHosts::load(path).map_err(|e| {
        format!(
            "known_hosts {} (mirror {mirror}): cannot read: {e}",
            path.display()
        )
    })
}

/// `mirrorpush check`: the registry parses, and for every enabled mirror the identity and
/// known_hosts files are readable and known_hosts lists the host (problems: exit 1). It also
/// warns about mirrors whose completion matters but is not reported (see [`completion_warnings`];
/// warnings alone exit 0). Connects to nobody.
pub fn check(registry_path: &Path) -> i32 {
    let registry = match load(registry_path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    // Warnings about the files themselves, once per file.
    let mut notes = Vec::new();
    let mut skipped_warned: Vec<PathBuf> = Vec::new();
    let enabled: Vec<&Mirror> = registry.mirrors.iter().filter(|m| m.enabled).collect();
    for m in &enabled {
        if m.modules.is_empty() {
            problems.push(format!(
                "mirror {}: carries no modules, so no push will reach it",
                m.name
            ));
        }
        if m.transport.is_bus() {
            continue;
        }
        match &m.identity {
            Some(path) => {
                if let Err(e) = load_key(path, &m.name) {
                    problems.push(e);
                }
            }
            None if std::env::var_os("SSH_AUTH_SOCK").is_none() => problems.push(format!(
                "mirror {}: no identity set and SSH_AUTH_SOCK is not set (no ssh-agent)",
                m.name
            )),
            None => {}
        }
        match load_known_hosts(&m.known_hosts, &m.name) {
            Ok(kh) => {
                if !kh.skipped.is_empty() && !skipped_warned.contains(&m.known_hosts) {
                    skipped_warned.push(m.known_hosts.clone());
                    let lines: Vec<String> = kh.skipped.iter().map(usize::to_string).collect();
                    notes.push(format!(
                        "{}: line(s) {} cannot be parsed and are skipped (as OpenSSH skips them)",
                        m.known_hosts.display(),
                        lines.join(", ")
                    ));
                }
                if !kh.knows(&m.host, m.port) {
                    problems.push(format!(
                        "mirror {}: no host key for {} in {} (add it with `ssh-keyscan -p {} {}` after checking it)",
                        m.name,
                        super::known_hosts::host_port_name(&m.host, m.port),
                        m.known_hosts.display(),
                        m.port,
                        m.host
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    let mut warnings = notes;
    warnings.extend(completion_warnings(&enabled));
    if let Some(bus) = &registry.bus {
        let (p, w) = check_bus(bus, &enabled);
        problems.extend(p);
        warnings.extend(w);
    }
    problems.dedup();
    let mut out = std::io::stdout().lock();
    for p in &problems {
        let _ = writeln!(out, "problem: {p}");
    }
    for w in &warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "{}: {} mirror(s), {} enabled, {} problem(s), {} warning(s)",
        registry.path.display(),
        registry.mirrors.len(),
        enabled.len(),
        problems.len(),
        warnings.len()
    );
    if problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The `[bus]` part of `check`: the signing key loads, the broker takes a connection (with the
/// URL's credentials and the TLS files), and warnings for bus mirrors whose acks cannot be
/// verified or whose stages the bus cannot keep apart. Returns (problems, warnings).
fn check_bus(bus: &Bus, enabled: &[&Mirror]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = bus_push::load_signing_key(&bus.signing_key) {
        problems.push(e);
    }
    let connected = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(bus_push::check_broker(bus)));
    if let Err(e) = connected {
        problems.push(format!("[bus] broker {}: {e}", bus.url_shown()));
    }
    let on_bus: Vec<&&Mirror> = enabled.iter().filter(|m| m.transport.is_bus()).collect();
    for m in &on_bus {
        if m.transport == (super::registry::Transport::Bus { ack_key: None }) {
            warnings.push(format!(
                "mirror {}: bus mirror without ack_key: its acks cannot be verified, so a push \
                 reports it \"unreported\" and never waits for it",
                m.name
            ));
        }
        // One trigger reaches every bus mirror of a module at once: the first of their stages.
        for module in &m.modules {
            let first = on_bus
                .iter()
                .filter(|o| o.carries(module))
                .map(|o| o.stage)
                .min()
                .unwrap_or(m.stage);
            if first < m.stage {
                warnings.push(format!(
                    "mirror {} (stage {}): bus mirrors of module {module} all get its trigger \
                     when stage {first} starts (one publish reaches every listener); give \
                     bus mirrors of one module one stage",
                    m.name, m.stage
                ));
                break;
            }
        }
    }
    (problems, warnings)
}

/// Mirrors in a stage that has later stages for one of their modules, which do not report
/// completion: a later stage may pull from them before they have the content. A mirror reports
/// completion when the registry says `wait = true` (its handler runs the module in wait mode)
/// or its protocol syncs in the foreground (ftpsync).
pub fn completion_warnings(enabled: &[&Mirror]) -> Vec<String> {
    let mut warnings = Vec::new();
    for m in enabled {
        if m.expects_synced() {
            continue;
        }
        for module in &m.modules {
            let later: Vec<&str> = enabled
                .iter()
                .filter(|o| o.stage > m.stage && o.carries(module))
                .map(|o| o.name.as_str())
                .collect();
            if let Some(first) = later.first() {
                let more = match later.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                };
                warnings.push(format!(
                    "mirror {} (stage {}) has later stages for module {module} ({first}{more}) \
                     but does not report completion: set wait = true once its handler runs \
                     {module} in wait mode, or those stages may pull before it has the content",
                    m.name, m.stage
                ));
                break;
            }
        }
    }
    warnings
}

fn load(path: &Path) -> Result<Registry, i32> {
    Registry::load(path).map_err(|e| usage(&e.to_string()))
}

/// A one-line `error:` on stderr (never a panic, even if stderr is a closed pipe); exit 2.
fn usage(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    EXIT_USAGE
}

/// The plan, for `list` and `push --dry-run`: selected mirrors with the exact request, then
/// those left out with the reason.
fn print_choices(choices: &[Choice<'_>], request: Option<&Request>, bus: Option<&Bus>, json: bool) {
    let mut out = std::io::stdout().lock();
    // A bus mirror is sent the request on its module's topic; the registry guarantees a [bus].
    let topic = |m: &Mirror, module: &ModuleName| -> Option<String> {
        bus.filter(|_| m.transport.is_bus())
            .map(|b| b.routing_key(module))
    };
    let topics_for = |m: &Mirror| -> Vec<String> {
        match request {
            Some(r) => topic(m, &r.module).into_iter().collect(),
            None => m.modules.iter().filter_map(|x| topic(m, x)).collect(),
        }
    };
    // The payload a bus push signs: the same for every bus mirror, made once.
    let payload = match (request, bus) {
        (Some(r), Some(b))
            if choices
                .iter()
                .any(|c| c.skipped.is_none() && c.mirror.transport.is_bus()) =>
        {
            Some(bus_push::sample_payload(b, r).unwrap_or_else(|e| format!("(cannot render: {e})")))
        }
        _ => None,
    };
    // Exactly what each mirror would be sent; without a module, the full push of each module.
    let commands_for = |m: &Mirror| -> Vec<Exec> {
        match request {
            Some(r) => vec![m.protocol.command(r)],
            None => m
                .modules
                .iter()
                .map(|module| {
                    m.protocol.command(&Request {
                        module: module.clone(),
                        dir: None,
                    })
                })
                .collect(),
        }
    };
    let shown = |m: &Mirror| -> String {
        commands_for(m)
            .iter()
            .map(|c| {
                // ftpsync's command starts with a space (as runmirrors sends it): quote it.
                let mut text = match m.protocol {
                    Protocol::Mirrorpush => c.text.clone(),
                    Protocol::Ftpsync { .. } => format!("ftpsync {:?}", c.text),
                };
                if let Some(note) = &c.note {
                    text.push_str(&format!(" ({note})"));
                }
                text
            })
            .zip(
                topics_for(m)
                    .into_iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(text, topic)| match topic {
                Some(t) => format!("{text} on topic {t}"),
                None => text,
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Where a mirror is: its address, or the bus.
    let place = |m: &Mirror| -> String {
        if m.transport.is_bus() {
            "(bus)".to_owned()
        } else {
            m.address()
        }
    };
    if json {
        for c in choices {
            let m = c.mirror;
            let selected = c.skipped.is_none();
            let commands = commands_for(m);
            let bus_mirror = m.transport.is_bus();
            let v = serde_json::json!({
                "mirror": m.name,
                "host": (!bus_mirror).then_some(&m.host), "port": (!bus_mirror).then_some(m.port),
                "user": (!bus_mirror).then_some(&m.user), "transport": m.transport.name(),
                "stage": m.stage, "tags": m.tags, "enabled": m.enabled,
                "modules": m.modules.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
                "protocol": m.protocol.name(), "wait": m.wait,
                "selected": selected, "reason": c.skipped,
                "request": selected.then(|| commands.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ")),
                "requests": selected.then(|| commands.iter().map(|c| c.text.as_str()).collect::<Vec<_>>()),
                "note": selected.then(|| commands.iter().find_map(|c| c.note.clone())).flatten(),
                "topics": (selected && bus_mirror).then(|| topics_for(m)),
                "payload": (selected && bus_mirror).then_some(payload.as_deref()).flatten(),
            });
            let _ = writeln!(out, "{}", json::line(&v));
        }
        return;
    }
    let selected: Vec<&Choice> = choices.iter().filter(|c| c.skipped.is_none()).collect();
    let width =
        |f: &dyn Fn(&Mirror) -> usize| selected.iter().map(|c| f(c.mirror)).max().unwrap_or(0);
    let (wn, wa, wu) = (
        width(&|m| m.name.len()),
        width(&|m| place(m).len()),
        width(&|m| m.user.len()),
    );
    for c in &selected {
        let m = c.mirror;
        let tags = if m.tags.is_empty() {
            "-".to_owned()
        } else {
            m.tags.join(",")
        };
        let _ = writeln!(
            out,
            "{:wn$}  {:wa$}  {:wu$}  stage {}  tags {}  {}",
            m.name,
            place(m),
            m.user,
            m.stage,
            tags,
            shown(m)
        );
    }
    if let (Some(b), Some(payload)) = (bus, &payload) {
        let _ = writeln!(
            out,
            "bus: one trigger for every bus mirror above, signed as {} and published to {} \
             (exchange {}); acks on {}. Payload (a push makes its own id and time):",
            b.origin,
            b.url_shown(),
            b.exchange,
            b.ack_topic
        );
        for line in payload.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    for c in choices.iter().filter(|c| c.skipped.is_some()) {
        let _ = writeln!(
            out,
            "not selected: {} ({})",
            c.mirror.name,
            c.skipped.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "{} mirror(s) selected, {} not selected",
        selected.len(),
        choices.len() - selected.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_slash_typed_on_the_command_line_is_dropped() {
        assert_eq!(typed_dir("updates/41/"), "updates/41");
        assert_eq!(typed_dir("updates/41"), "updates/41");
        // Only one: the grammar still refuses what remains.
        assert_eq!(typed_dir("updates/41//"), "updates/41/");
        assert!(Request::new("fedora", Some(typed_dir("updates/41//"))).is_err());
        assert!(Request::new("fedora", Some(typed_dir("/"))).is_err());
        let r = Request::new("fedora", Some(typed_dir("updates/41/"))).unwrap();
        assert_eq!(r.to_string(), "sync fedora updates/41");
    }

    #[test]
    fn check_warns_about_stages_that_do_not_report_completion() {
        let r = Registry::parse(
            Path::new("m.toml"),
            r#"
[[mirror]]
name = "hub"
modules = ["fedora", "debian"]
[[mirror]]
name = "waiting-hub"
modules = ["fedora"]
wait = true
[[mirror]]
name = "ftp"
modules = ["debian"]
protocol = "ftpsync"
[[mirror]]
name = "leaf1"
modules = ["fedora"]
stage = 2
[[mirror]]
name = "leaf2"
modules = ["fedora", "debian"]
stage = 2
[[mirror]]
name = "other"
modules = ["ubuntu"]
"#,
        )
        .unwrap();
        let enabled: Vec<&Mirror> = r.mirrors.iter().collect();
        let w = completion_warnings(&enabled);
        // Only "hub": waiting-hub says wait = true, ftpsync syncs in the foreground, the
        // leaves are the last stage, "other" has no later stage for its module.
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "mirror hub (stage 1) has later stages for module fedora (leaf1 and 1 more)"
            ),
            "{}",
            w[0]
        );
        assert!(w[0].contains("wait = true"), "{}", w[0]);
    }

    #[test]
    fn sessions_fit_the_open_file_limit() {
        assert_eq!(sessions_within(1024, 64), 64);
        assert_eq!(sessions_within(300, 600), 236);
        assert_eq!(sessions_within(10, 600), 1);
        assert_eq!(sessions_within(u64::MAX, 5000), 5000);
    }
}
