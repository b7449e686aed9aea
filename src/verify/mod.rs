//! `mirrorpush verify`: proof from outside that mirrors carry a push (README, "Propagation").
//!
//! For every mirror of a recorded push that has a `url`, fetch the file its `verify` setting
//! names from its public tree and compare it with the master's value recorded when the push
//! started. Work flows one way: the history gives the push and its mirrors ([`plan`]), fetches
//! run concurrently and bounded ([`fetch`]), each result becomes a state ([`judge`]), the round's
//! states are written back to the history in one transaction, and the caller prints them.
//! A mirror's own answer never makes it verified: only what it serves does.

pub mod fetch;
pub mod proof;
pub mod spec;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fanout::json;
use crate::fanout::registry::Registry;
use crate::fanout::report::short_duration;
use crate::history::{now_ms, Checked, History, MirrorRow, PushRow};
use fetch::{FetchError, FetchLimits};
use proof::Match;
use spec::ProofSpec;

pub const EXIT_VERIFIED: i32 = 0;
pub const EXIT_NOT_VERIFIED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// `--until` when not given: one look, or a watch.
pub const DEFAULT_UNTIL: Duration = Duration::from_secs(120);
pub const DEFAULT_UNTIL_WATCH: Duration = Duration::from_secs(3600);
/// `push --verify`'s default bound.
pub const DEFAULT_UNTIL_PUSH: Duration = Duration::from_secs(600);
/// Per-mirror backoff of `--watch`: the first recheck after this, doubling up to the maximum.
const FIRST_RECHECK: Duration = Duration::from_secs(1);
const MAX_RECHECK: Duration = Duration::from_secs(30);

/// What to verify, from the command line.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    pub push: Option<i64>,
    pub module: Option<String>,
    pub watch: bool,
    pub until: Option<Duration>,
    pub json: bool,
    pub mirrors: Vec<String>,
    pub tags: Vec<String>,
}

/// One mirror's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyState {
    Verified,
    Stale,
    Pending,
    Error,
}

impl VerifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyState::Verified => "verified",
            VerifyState::Stale => "stale",
            VerifyState::Pending => "pending",
            VerifyState::Error => "error",
        }
    }
}

/// One mirror to check.
#[derive(Debug, Clone)]
struct MirrorCheck {
    name: String,
    url: String,
    proof: ProofSpec,
    /// The master's value recorded with the push, or why there is none.
    expected: Result<String, String>,
    limits: FetchLimits,
    row: MirrorRow,
}

/// What is known of one target after a look.
#[derive(Debug, Clone)]
struct Look {
    state: VerifyState,
    class: Option<String>,
    detail: String,
    /// When it first matched (ms since the epoch).
    verified_at: Option<i64>,
    served: Option<String>,
}

/// One `verify --json` line.
#[derive(Serialize)]
struct JsonMirror<'a> {
    mirror: &'a str,
    push: i64,
    state: VerifyState,
    error_class: Option<&'a str>,
    verified_after_ms: Option<i64>,
    detail: &'a str,
}

#[derive(Serialize, Default, Debug, Clone, PartialEq)]
pub struct VerifySummary {
    pub push: i64,
    pub selected: usize,
    pub verified: usize,
    pub stale: usize,
    pub pending: usize,
    pub errors: usize,
    /// From the push's start to the last mirror verified.
    pub verified_within_ms: Option<i64>,
}

/// `mirrorpush verify`.
pub async fn command(registry: &Registry, history: &Path, args: VerifyArgs) -> i32 {
    let h = match History::open(history) {
        Ok(h) => h,
        Err(e) => return usage(&e.to_string()),
    };
    let id = match args.push {
        Some(id) => id,
        None => match h.latest(args.module.as_deref()) {
            Ok(Some(id)) => id,
            Ok(None) => {
                let of = args
                    .module
                    .as_deref()
                    .map_or(String::new(), |m| format!(" of module {m}"));
                return usage(&format!("no push{of} recorded in {}", history.display()));
            }
            Err(e) => return usage(&e.to_string()),
        },
    };
    let until = args.until.unwrap_or(if args.watch {
        DEFAULT_UNTIL_WATCH
    } else {
        DEFAULT_UNTIL
    });
    run(registry, h, id, &args, until).await
}

/// Verifies push `id` (also `push --verify`): prints the result, returns the exit code.
pub async fn run(
    registry: &Registry,
    mut history: History,
    id: i64,
    args: &VerifyArgs,
    until: Duration,
) -> i32 {
    let deadline = Instant::now() + until;
    let (push, targets, left_out) = match plan(registry, &history, id, args) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    if targets.is_empty() {
        return usage(&format!(
            "no mirror of push {id} can be verified: {}",
            if left_out.is_empty() {
                "none selected".to_owned()
            } else {
                left_out.join("; ")
            }
        ));
    }
    let progress = std::io::stderr().is_terminal();
    let mut looks: HashMap<String, Look> = HashMap::new();
    let mut due: HashMap<String, (Instant, Duration)> = targets
        .iter()
        .map(|t| (t.name.clone(), (Instant::now(), FIRST_RECHECK)))
        .collect();
    let concurrency = registry.concurrency.max(1);
    loop {
        let now = Instant::now();
        let round: Vec<&MirrorCheck> = targets
            .iter()
            .filter(|t| due.get(&t.name).is_some_and(|(at, _)| *at <= now))
            .collect();
        let checks = look_all(
            &round,
            concurrency,
            deadline,
            &mut looks,
            progress,
            &targets,
        )
        .await;
        if let Err(e) = history.record_checks(id, &checks) {
            warn(&format!("{e}; this round is not recorded"));
        }
        for c in &checks {
            let Some((at, backoff)) = due.get_mut(&c.mirror) else {
                continue;
            };
            if c.state == VerifyState::Verified.as_str() {
                due.remove(&c.mirror);
            } else {
                *at = Instant::now() + *backoff;
                *backoff = (*backoff * 2).min(MAX_RECHECK);
            }
        }
        let all_verified = targets.iter().all(|t| {
            looks
                .get(&t.name)
                .is_some_and(|l| l.state == VerifyState::Verified)
        });
        if !args.watch || all_verified || Instant::now() >= deadline {
            break;
        }
        let next = due.values().map(|(at, _)| *at).min().unwrap_or(deadline);
        tokio::time::sleep_until(next.min(deadline)).await;
        if Instant::now() >= deadline {
            break;
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    let summary = print(&push, &targets, &looks, &left_out, args.json);
    if summary.verified == summary.selected {
        EXIT_VERIFIED
    } else {
        EXIT_NOT_VERIFIED
    }
}

/// The push, the mirrors to check, and the ones left out with the reason.
fn plan(
    registry: &Registry,
    history: &History,
    id: i64,
    args: &VerifyArgs,
) -> Result<(PushRow, Vec<MirrorCheck>, Vec<String>), String> {
    let fail = |e: crate::history::HistoryError| e.to_string();
    let push = history
        .push(id)
        .map_err(fail)?
        .ok_or_else(|| format!("no push {id} in {}", history.path().display()))?;
    let rows = history.mirrors(id).map_err(fail)?;
    let proofs = history.proofs(id).map_err(fail)?;
    for name in &args.mirrors {
        if !rows.iter().any(|r| &r.mirror == name) {
            return Err(format!("mirror {name:?} was not part of push {id}"));
        }
    }
    let filtered = !args.mirrors.is_empty() || !args.tags.is_empty();
    let by_name: HashMap<&str, &crate::fanout::registry::Mirror> = registry
        .mirrors
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let mut targets = Vec::new();
    let mut left_out = Vec::new();
    for row in rows {
        let entry = by_name.get(row.mirror.as_str()).copied();
        let picked = !filtered
            || args.mirrors.contains(&row.mirror)
            || entry.is_some_and(|m| m.tags.iter().any(|t| args.tags.contains(t)));
        if !picked {
            continue;
        }
        let Some(m) = entry else {
            left_out.push(format!("{} is no longer in the registry", row.mirror));
            continue;
        };
        let Some(url) = m.url.as_ref().and_then(|u| u.for_module(&push.module)) else {
            left_out.push(format!("{} has no url for module {}", m.name, push.module));
            continue;
        };
        let Some(proof) = row.proof.as_deref().and_then(|p| ProofSpec::parse(p).ok()) else {
            left_out.push(format!(
                "{} had no verify setting when the push started",
                m.name
            ));
            continue;
        };
        let expected = proofs
            .get(&proof.to_string())
            .cloned()
            .unwrap_or_else(|| Err("the master's value was not recorded".into()));
        targets.push(MirrorCheck {
            name: m.name.clone(),
            url,
            proof,
            expected,
            limits: FetchLimits {
                connect_timeout: m.connect_timeout,
                timeout: m.timeout,
            },
            row,
        });
    }
    Ok((push, targets, left_out))
}

/// Looks at every target of a round, at most `concurrency` at once, until `deadline`.
async fn look_all(
    round: &[&MirrorCheck],
    concurrency: usize,
    deadline: Instant,
    looks: &mut HashMap<String, Look>,
    progress: bool,
    all: &[MirrorCheck],
) -> Vec<Checked> {
    let mut checks = Vec::with_capacity(round.len());
    let mut queue = round.iter();
    let mut set = JoinSet::new();
    let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        while set.len() < concurrency {
            let Some(t) = queue.next() else { break };
            let t = (*t).clone();
            let name = t.name.clone();
            let id = set
                .spawn(async move {
                    let got = match (&t.row.verified, &t.expected) {
                        // Verified once is verified: no need to fetch again.
                        (Some(_), _) => None,
                        (None, Err(_)) => None,
                        (None, Ok(_)) => {
                            Some(fetch::fetch(&t.url, t.proof.mirror_path(), t.limits).await)
                        }
                    };
                    (t, got, now_ms())
                })
                .id();
            in_flight.insert(id, name);
        }
        draw(progress, all, looks, in_flight.len(), deadline);
        let joined = tokio::select! {
            j = set.join_next_with_id() => j,
            () = tokio::time::sleep_until(deadline) => {
                set.abort_all();
                // A mirror still being fetched at the deadline keeps its last state, or is
                // reported as timed out if it had none.
                for (_, name) in in_flight.drain() {
                    looks.entry(name.clone()).or_insert_with(|| Look {
                        state: VerifyState::Error,
                        class: Some("timeout".into()),
                        detail: "still fetching at the deadline (--until)".into(),
                        verified_at: None,
                        served: None,
                    });
                    if let Some(l) = looks.get(&name) {
                        checks.push(checked(&name, l, now_ms()));
                    }
                }
                break;
            }
        };
        match joined {
            None => break,
            Some(Ok((id, (t, got, at)))) => {
                in_flight.remove(&id);
                let look = judge(&t, got, at);
                checks.push(checked(&t.name, &look, at));
                looks.insert(t.name.clone(), look);
            }
            Some(Err(e)) => {
                if let Some(name) = in_flight.remove(&e.id()) {
                    let look = Look {
                        state: VerifyState::Error,
                        class: Some("internal".into()),
                        detail: format!("the check failed: {e}"),
                        verified_at: None,
                        served: None,
                    };
                    checks.push(checked(&name, &look, now_ms()));
                    looks.insert(name, look);
                }
            }
        }
    }
    checks
}

fn checked(name: &str, l: &Look, at: i64) -> Checked {
    Checked {
        mirror: name.to_owned(),
        state: l.state.as_str().to_owned(),
        error_class: l.class.clone(),
        checked_ms: at,
        verified_serial: (l.state == VerifyState::Verified)
            .then(|| l.served.clone())
            .flatten(),
    }
}

/// What a look means for a mirror, given what it answered to the push.
fn judge(t: &MirrorCheck, got: Option<Result<Vec<u8>, FetchError>>, at: i64) -> Look {
    let look = |state, class: Option<&str>, detail: String| Look {
        state,
        class: class.map(str::to_owned),
        detail,
        verified_at: None,
        served: None,
    };
    if let Some(v) = t.row.verified {
        return Look {
            verified_at: Some(v),
            served: t.row.verified_serial.clone(),
            ..look(VerifyState::Verified, None, "verified earlier".into())
        };
    }
    let expected = match &t.expected {
        Ok(v) => v,
        Err(e) => {
            return look(
                VerifyState::Error,
                Some("no-master-value"),
                format!("the master's value was not recorded with the push: {e}"),
            )
        }
    };
    let served = match got {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return look(VerifyState::Error, Some(&e.class), e.detail),
        None => return look(VerifyState::Error, Some("internal"), "not fetched".into()),
    };
    match proof::compare(&t.proof, expected, &served) {
        Match::Same(v) => Look {
            verified_at: Some(at),
            served: Some(v),
            ..look(VerifyState::Verified, None, String::new())
        },
        Match::Other(what) => {
            let push_class = t
                .row
                .error_class
                .clone()
                .filter(|_| t.row.ok == Some(false));
            if let Some(class) = push_class {
                look(
                    VerifyState::Error,
                    Some(&class),
                    format!("the push failed; {what}"),
                )
            } else if t.row.answer.as_deref() == Some("synced") {
                look(
                    VerifyState::Stale,
                    Some("stale"),
                    format!("answered synced but {what}"),
                )
            } else {
                look(VerifyState::Pending, None, format!("not yet: {what}"))
            }
        }
    }
}

/// The progress line on a terminal: counts, fetches in flight, time left.
fn draw(
    progress: bool,
    all: &[MirrorCheck],
    looks: &HashMap<String, Look>,
    in_flight: usize,
    deadline: Instant,
) {
    if !progress {
        return;
    }
    let count = |s: VerifyState| looks.values().filter(|l| l.state == s).count();
    let left = deadline.saturating_duration_since(Instant::now());
    eprint!(
        "\r\x1b[K{}/{} verified, {} stale, {} pending, {} errors, {} fetching, {} left",
        count(VerifyState::Verified),
        all.len(),
        count(VerifyState::Stale),
        count(VerifyState::Pending),
        count(VerifyState::Error),
        in_flight,
        short_duration(left.as_millis() as u64)
    );
}

/// Prints every target's state and the summary; returns the summary.
fn print(
    push: &PushRow,
    targets: &[MirrorCheck],
    looks: &HashMap<String, Look>,
    left_out: &[String],
    as_json: bool,
) -> VerifySummary {
    let mut s = VerifySummary {
        push: push.id,
        selected: targets.len(),
        ..VerifySummary::default()
    };
    let mut out = std::io::stdout().lock();
    let width = targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in targets {
        let l = looks.get(&t.name).cloned().unwrap_or(Look {
            state: VerifyState::Pending,
            class: None,
            detail: "not looked at before the deadline".into(),
            verified_at: None,
            served: None,
        });
        match l.state {
            VerifyState::Verified => s.verified += 1,
            VerifyState::Stale => s.stale += 1,
            VerifyState::Pending => s.pending += 1,
            VerifyState::Error => s.errors += 1,
        }
        let after = l.verified_at.map(|v| (v - push.started).max(0));
        if let Some(a) = after {
            s.verified_within_ms = Some(s.verified_within_ms.map_or(a, |w| w.max(a)));
        }
        if as_json {
            let v = JsonMirror {
                mirror: &t.name,
                push: push.id,
                state: l.state,
                error_class: l.class.as_deref(),
                verified_after_ms: after,
                detail: &l.detail,
            };
            let _ = writeln!(out, "{}", json::line(&v));
        } else {
            let when = after.map_or("-".to_owned(), |a| short_duration(a as u64));
            let class = l.class.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "{:width$}  {:8}  {:>7}  {:14}  {}",
                shown(&t.name),
                l.state.as_str(),
                when,
                shown(class),
                shown(&l.detail)
            );
        }
    }
    if as_json {
        let _ = writeln!(out, "{}", json::line(&serde_json::json!({ "summary": s })));
    } else {
        for l in left_out {
            let _ = writeln!(out, "not checked: {}", shown(l));
        }
        let _ = writeln!(out, "{}", summary_line(&s));
    }
    let _ = out.flush();
    s
}

/// `push 12: 8 of 10 verified within 3m12s; 1 stale, 1 pending, 0 errors`.
pub fn summary_line(s: &VerifySummary) -> String {
    let within = s
        .verified_within_ms
        .filter(|_| s.verified > 0)
        .map_or(String::new(), |w| {
            format!(" within {}", short_duration(w as u64))
        });
    format!(
        "push {}: {} of {} verified{within}; {} stale, {} pending, {} errors",
        s.push, s.verified, s.selected, s.stale, s.pending, s.errors
    )
}

/// Text a mirror may have chosen, made safe for a terminal: controls, DEL, C1 and
/// bidirectional overrides become `\u{..}` escapes, and at most 200 characters are kept.
pub fn shown(text: &str) -> String {
    let mut s = String::with_capacity(text.len().min(200));
    for (i, c) in text.chars().enumerate() {
        if i == 200 {
            s.push('…');
            break;
        }
        if c.is_control() || json::needs_escape(c) {
            s.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            s.push(c);
        }
    }
    s
}

fn usage(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {}", shown(message));
    EXIT_USAGE
}

fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {}", shown(message));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(answer: Option<&str>, ok: Option<bool>, class: Option<&str>) -> MirrorCheck {
        MirrorCheck {
            name: "m1".into(),
            url: "http://127.0.0.1:1/fedora/".into(),
            proof: ProofSpec::parse("trace:project/trace/m1").unwrap(),
            expected: Ok("42".into()),
            limits: FetchLimits {
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            },
            row: MirrorRow {
                mirror: "m1".into(),
                answer: answer.map(str::to_owned),
                ok,
                error_class: class.map(str::to_owned),
                ..MirrorRow::default()
            },
        }
    }

    #[test]
    fn self_reports_never_verify() {
        let old = Some(Ok(b"Archive serial: 41\n".to_vec()));
        let new = Some(Ok(b"Archive serial: 42\n".to_vec()));
        let l = judge(&target(Some("synced"), Some(true), None), old.clone(), 5);
        assert_eq!(
            (l.state, l.class.as_deref()),
            (VerifyState::Stale, Some("stale"))
        );
        let l = judge(&target(Some("accepted"), Some(true), None), old.clone(), 5);
        assert_eq!(l.state, VerifyState::Pending);
        let l = judge(&target(None, Some(false), Some("push-connect")), old, 5);
        assert_eq!(
            (l.state, l.class.as_deref()),
            (VerifyState::Error, Some("push-connect"))
        );
        // What it serves decides, whatever it answered.
        let l = judge(&target(None, Some(false), Some("push-connect")), new, 5);
        assert_eq!((l.state, l.verified_at), (VerifyState::Verified, Some(5)));
        let html = Some(Ok(b"<html>\x1b[31m</html>".to_vec()));
        let l = judge(&target(Some("synced"), Some(true), None), html, 5);
        assert_eq!(l.state, VerifyState::Stale);
        let err = Some(Err(FetchError {
            class: "http-404".into(),
            detail: "HTTP status 404".into(),
        }));
        let l = judge(&target(Some("synced"), Some(true), None), err, 5);
        assert_eq!(
            (l.state, l.class.as_deref()),
            (VerifyState::Error, Some("http-404"))
        );
    }

    #[test]
    fn shown_text_cannot_drive_a_terminal() {
        let s = shown("a\x1b]0;x\x07b\u{202e}c\u{9b}d\n");
        assert!(
            !s.chars().any(|c| c.is_control() || json::needs_escape(c)),
            "{s}"
        );
        assert_eq!(s, "a\\u{1b}]0;x\\u{7}b\\u{202e}c\\u{9b}d\\u{a}");
        assert_eq!(shown(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn summary_line_says_how_many_and_how_fast() {
        let s = VerifySummary {
            push: 3,
            selected: 10,
            verified: 8,
            stale: 1,
            pending: 1,
            errors: 0,
            verified_within_ms: Some(192_000),
        };
        assert_eq!(
            summary_line(&s),
            "push 3: 8 of 10 verified within 3m12s; 1 stale, 1 pending, 0 errors"
        );
    }
}
