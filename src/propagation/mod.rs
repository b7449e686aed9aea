//! `mirrorpush report`: how far a push got, from the history (README, "Propagation").
//!
//! [`build`] turns one push's rows into a [`PushReport`] (per mirror: transport, answer, synced
//! after, verified after, lag, error class; the summary: "N of M verified within T", lag
//! percentiles, stragglers); [`command`] prints it as text or JSON Lines, or writes the HTML page
//! of [`html`]. Reading only: a report never changes the history.

pub mod html;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fanout::json;
use crate::fanout::report::short_duration;
use crate::history::{History, HistoryError, MirrorRow, PushRow};
use crate::verify::shown;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// What to report, from the command line.
#[derive(Debug, Clone, Default)]
pub struct ReportArgs {
    pub push: Option<i64>,
    pub last: Option<usize>,
    pub module: Option<String>,
    pub json: bool,
    pub html: Option<PathBuf>,
}

/// One mirror's line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MirrorLine {
    pub mirror: String,
    pub push: i64,
    pub transport: String,
    pub answer: Option<String>,
    pub synced_after_ms: Option<i64>,
    pub verified_after_ms: Option<i64>,
    /// How long after the push this mirror was proven to carry it (null: not yet).
    pub lag_ms: Option<i64>,
    pub error_class: Option<String>,
    /// verify's last state (null: never checked).
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Lag {
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub p99: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PropagationSummary {
    pub push: i64,
    pub module: String,
    pub dir: Option<String>,
    pub started: String,
    pub outcome: Option<String>,
    pub mirrors: usize,
    pub synced: usize,
    pub verified: usize,
    /// From the push's start to the last mirror verified.
    pub verified_within_ms: Option<i64>,
    /// Nearest-rank percentiles over every mirror of the push, a mirror not verified counting as
    /// slower than all: null until that share of mirrors is verified.
    pub lag_ms: Lag,
    /// Mirrors not verified, then verified mirrors slower than p90.
    pub stragglers: Vec<String>,
    /// "8 of 10 verified within 3m12s".
    pub line: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushReport {
    pub push: PushRow,
    pub mirrors: Vec<MirrorLine>,
    pub summary: PropagationSummary,
}

/// The report of push `id`.
pub fn build(history: &History, id: i64) -> Result<Option<PushReport>, HistoryError> {
    let Some(push) = history.push(id)? else {
        return Ok(None);
    };
    let rows = history.mirrors(id)?;
    Ok(Some(from_rows(push, &rows)))
}

pub fn from_rows(push: PushRow, rows: &[MirrorRow]) -> PushReport {
    let after = |t: Option<i64>| t.map(|t| (t - push.started).max(0));
    let mirrors: Vec<MirrorLine> = rows
        .iter()
        .map(|r| MirrorLine {
            mirror: r.mirror.clone(),
            push: push.id,
            transport: r.transport.clone(),
            answer: r.answer.clone(),
            synced_after_ms: after(r.synced),
            verified_after_ms: after(r.verified),
            lag_ms: after(r.verified),
            error_class: if r.verified.is_some() {
                None
            } else {
                r.error_class.clone()
            },
            state: r.state.clone(),
        })
        .collect();
    let mut lags: Vec<i64> = mirrors.iter().filter_map(|m| m.lag_ms).collect();
    lags.sort_unstable();
    let n = mirrors.len();
    let rank = |p: f64| -> Option<i64> {
        if n == 0 {
            return None;
        }
        let k = ((p * n as f64).ceil() as usize).max(1);
        lags.get(k - 1).copied()
    };
    let lag = Lag {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
    };
    let mut stragglers: Vec<String> = mirrors
        .iter()
        .filter(|m| m.lag_ms.is_none())
        .map(|m| m.mirror.clone())
        .collect();
    if let Some(p90) = lag.p90 {
        let mut slow: Vec<&MirrorLine> = mirrors
            .iter()
            .filter(|m| m.lag_ms.is_some_and(|l| l > p90))
            .collect();
        slow.sort_by_key(|m| std::cmp::Reverse(m.lag_ms));
        stragglers.extend(slow.into_iter().map(|m| m.mirror.clone()));
    }
    let verified = lags.len();
    let within = lags.last().copied();
    let line = match within {
        Some(t) => format!(
            "{verified} of {n} verified within {}",
            short_duration(t as u64)
        ),
        None => format!("0 of {n} verified"),
    };
    let summary = PropagationSummary {
        push: push.id,
        module: push.module.clone(),
        dir: push.dir.clone(),
        started: time_text(push.started),
        outcome: push.outcome.clone(),
        mirrors: n,
        synced: mirrors
            .iter()
            .filter(|m| m.synced_after_ms.is_some())
            .count(),
        verified,
        verified_within_ms: within,
        lag_ms: lag,
        stragglers,
        line,
    };
    PushReport {
        push,
        mirrors,
        summary,
    }
}

/// `2026-11-30T10:00:00Z` for ms since the epoch.
pub fn time_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `mirrorpush report`.
pub fn command(history_path: &Path, args: &ReportArgs) -> i32 {
    let history = match History::open(history_path) {
        Ok(h) => h,
        Err(e) => return usage(&e.to_string()),
    };
    let ids = match (args.push, args.last) {
        (Some(id), _) => vec![id],
        (None, n) => match history.last(n.unwrap_or(1), args.module.as_deref()) {
            Ok(ids) => ids,
            Err(e) => return usage(&e.to_string()),
        },
    };
    if ids.is_empty() {
        let of = args
            .module
            .as_deref()
            .map_or(String::new(), |m| format!(" of module {m}"));
        return usage(&format!(
            "no push{of} recorded in {}",
            history_path.display()
        ));
    }
    let mut reports = Vec::with_capacity(ids.len());
    for id in ids.iter().rev() {
        match build(&history, *id) {
            Ok(Some(r)) => reports.push(r),
            Ok(None) => return usage(&format!("no push {id} in {}", history_path.display())),
            Err(e) => return usage(&e.to_string()),
        }
    }
    if let Some(file) = &args.html {
        let page = html::page(&reports);
        if let Err(e) = write_file(file, page.as_bytes()) {
            return usage(&format!("cannot write {}: {e}", file.display()));
        }
    }
    let mut out = std::io::stdout().lock();
    for r in &reports {
        let text = if args.json {
            json_lines(r)
        } else if args.html.is_some() {
            format!("push {}: {}\n", r.summary.push, summary_text(&r.summary))
        } else {
            text(r)
        };
        let _ = out.write_all(text.as_bytes());
    }
    let _ = out.flush();
    EXIT_OK
}

/// By the crate's atomic writer, so a reader (a web server) never sees half a page.
fn write_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut f = crate::atomic::AtomicFile::create_following(path, 0o644)?;
    f.write_all(content)?;
    f.commit(false)
}

pub fn json_lines(r: &PushReport) -> String {
    let mut s = String::new();
    for m in &r.mirrors {
        s.push_str(&json::line(m));
        s.push('\n');
    }
    s.push_str(&json::line(&serde_json::json!({ "summary": r.summary })));
    s.push('\n');
    s
}

fn ms_text(ms: Option<i64>) -> String {
    ms.map_or("-".to_owned(), |v| short_duration(v as u64))
}

/// "8 of 10 verified within 3m12s; lag p50 1m02s, p90 2m50s, p99 -; stragglers: a, b".
pub fn summary_text(s: &PropagationSummary) -> String {
    let mut line = format!(
        "{}; lag p50 {}, p90 {}, p99 {}",
        s.line,
        ms_text(s.lag_ms.p50),
        ms_text(s.lag_ms.p90),
        ms_text(s.lag_ms.p99)
    );
    if !s.stragglers.is_empty() {
        let shown_names: Vec<String> = s.stragglers.iter().take(10).map(|n| shown(n)).collect();
        line.push_str(&format!("; stragglers: {}", shown_names.join(", ")));
        if s.stragglers.len() > 10 {
            line.push_str(&format!(" and {} more", s.stragglers.len() - 10));
        }
    }
    line
}

/// The human report of one push.
pub fn text(r: &PushReport) -> String {
    let p = &r.push;
    let mut s = format!(
        "push {}  {}{}  started {} by {}  {}\n",
        p.id,
        p.module,
        p.dir.as_deref().map_or(String::new(), |d| format!(" {d}")),
        time_text(p.started),
        shown(&p.who),
        match (&p.outcome, p.ended) {
            (Some(o), Some(e)) => format!(
                "{o} after {}",
                short_duration((e - p.started).max(0) as u64)
            ),
            _ => "never ended (killed?)".to_owned(),
        }
    );
    let names: Vec<String> = r.mirrors.iter().map(|m| shown(&m.mirror)).collect();
    let w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    s.push_str(&format!(
        "{:w$}  {:9}  {:10}  {:>8}  {:>8}  {:>8}  {}\n",
        "mirror", "transport", "answer", "synced", "verified", "lag", "class"
    ));
    for (m, name) in r.mirrors.iter().zip(&names) {
        s.push_str(&format!(
            "{:w$}  {:9}  {:10}  {:>8}  {:>8}  {:>8}  {}\n",
            name,
            shown(&m.transport),
            m.answer.as_deref().map_or("-".to_owned(), shown),
            ms_text(m.synced_after_ms),
            ms_text(m.verified_after_ms),
            ms_text(m.lag_ms),
            m.error_class.as_deref().map_or("-".to_owned(), shown),
        ));
    }
    s.push_str(&summary_text(&r.summary));
    s.push('\n');
    s
}

fn usage(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {}", shown(message));
    EXIT_USAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: i64, n: usize, verified: usize) -> (PushRow, Vec<MirrorRow>) {
        let push = PushRow {
            id,
            module: "fedora".into(),
            dir: None,
            serial: Some("1".into()),
            started: 1_000_000,
            ended: Some(1_005_000),
            who: "root@master".into(),
            outcome: Some("ok".into()),
        };
        let rows = (0..n)
            .map(|i| MirrorRow {
                mirror: format!("m{i:02}"),
                transport: "ssh".into(),
                answer: Some("synced".into()),
                ok: Some(true),
                synced: Some(1_000_000 + 500 * i as i64),
                verified: (i < verified).then(|| 1_000_000 + 1_000 * (i as i64 + 1)),
                error_class: (i >= verified).then(|| "stale".to_owned()),
                ..MirrorRow::default()
            })
            .collect();
        (push, rows)
    }

    #[test]
    fn percentiles_count_unverified_mirrors_as_slowest() {
        let (p, rows) = sample(7, 10, 9);
        let r = from_rows(p, &rows);
        let s = &r.summary;
        assert_eq!((s.mirrors, s.verified, s.synced), (10, 9, 10));
        assert_eq!(s.verified_within_ms, Some(9_000));
        assert_eq!(
            s.lag_ms,
            Lag {
                p50: Some(5_000),
                p90: Some(9_000),
                p99: None
            }
        );
        assert_eq!(s.stragglers, ["m09"]);
        assert_eq!(s.line, "9 of 10 verified within 9.0s");
        assert_eq!(
            summary_text(s),
            "9 of 10 verified within 9.0s; lag p50 5.0s, p90 9.0s, p99 -; stragglers: m09"
        );
        let m = &r.mirrors[3];
        assert_eq!(
            (m.synced_after_ms, m.verified_after_ms, m.lag_ms),
            (Some(1_500), Some(4_000), Some(4_000))
        );
        assert_eq!(r.mirrors[9].error_class.as_deref(), Some("stale"));
        let v: serde_json::Value =
            serde_json::from_str(json_lines(&r).lines().last().unwrap()).unwrap();
        assert_eq!(v["summary"]["push"], 7);
        assert_eq!(v["summary"]["lag_ms"]["p50"], 5_000);
        assert!(v["summary"]["lag_ms"]["p99"].is_null());
        assert_eq!(v["summary"]["verified_within_ms"], 9_000);
        assert_eq!(v["summary"]["stragglers"][0], "m09");
        let first: serde_json::Value =
            serde_json::from_str(json_lines(&r).lines().next().unwrap()).unwrap();
        for key in [
            "mirror",
            "transport",
            "answer",
            "synced_after_ms",
            "verified_after_ms",
            "lag_ms",
            "error_class",
        ] {
            assert!(first.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn all_verified_has_every_percentile_and_slow_stragglers() {
        let (p, rows) = sample(1, 20, 20);
        let s = from_rows(p, &rows).summary;
        assert_eq!(s.lag_ms.p99, Some(20_000));
        assert_eq!(s.lag_ms.p90, Some(18_000));
        assert_eq!(s.stragglers, ["m19", "m18"]);
        let (p, rows) = sample(2, 0, 0);
        let s = from_rows(p, &rows).summary;
        assert_eq!((s.line.as_str(), s.lag_ms.p50), ("0 of 0 verified", None));
    }
}
