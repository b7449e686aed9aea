//! The report as one self-contained HTML page: inline CSS and an inline SVG plot, no script, no
//! `src`, no external `href`, no `url()`, so it opens anywhere, offline, and loads nothing. The plot
//! shows, for each push, the share of its mirrors synced (dashed) and verified (solid) against
//! the time since the push started; the per-mirror tables follow. Every string from the history
//! (mirror names come from the registry, classes and answers from mirrors) is escaped.

use std::fmt::Write as _;

use super::{summary_text, time_text, PushReport};
use crate::fanout::report::short_duration;

const W: f64 = 760.0;
const H: f64 = 380.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 50.0;
/// Distinguishable in colour and in grey.
const COLOURS: &[&str] = &[
    "#1b6ca8", "#d1495b", "#2e8b57", "#8d5fd3", "#e0a100", "#00798c", "#6b4226", "#525252",
];

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            // Controls (and the bidi overrides) are shown as code points, never passed through.
            c if c.is_control() || crate::fanout::json::needs_escape(c) => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    s
}

/// A "nice" axis end at or above `ms`, and its tick step.
fn axis(ms: i64) -> (i64, i64) {
    let steps: &[i64] = &[
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
        86_400_000,
    ];
    let ms = ms.max(1);
    for &step in steps {
        if ms <= step * 6 {
            let end = (ms + step - 1) / step * step;
            return (end, step);
        }
    }
    let step = 86_400_000 * (ms / (86_400_000 * 6) + 1);
    ((ms + step - 1) / step * step, step)
}

/// The points of a step curve: the share of `total` mirrors done by each time in `times`.
fn steps(
    times: &[i64],
    total: usize,
    x: &dyn Fn(i64) -> f64,
    y: &dyn Fn(f64) -> f64,
    end: i64,
) -> String {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut pts = format!("{:.1},{:.1}", x(0), y(0.0));
    for (i, t) in sorted.iter().enumerate() {
        let before = i as f64 / total as f64;
        let after = (i + 1) as f64 / total as f64;
        let _ = write!(
            pts,
            " {:.1},{:.1} {:.1},{:.1}",
            x(*t),
            y(before),
            x(*t),
            y(after)
        );
    }
    let last = sorted.len() as f64 / total.max(1) as f64;
    let _ = write!(pts, " {:.1},{:.1}", x(end), y(last));
    pts
}

/// The whole page for one or more pushes (oldest first).
pub fn page(reports: &[PushReport]) -> String {
    let title = match reports {
        [one] => format!("mirrorpush: propagation of push {}", one.push.id),
        many => format!("mirrorpush: propagation of the last {} pushes", many.len()),
    };
    let mut s = String::with_capacity(16_384);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        CSS,
        escape(&title)
    );
    s.push_str(&plot(reports));
    s.push_str("<ul class=\"legend\">\n");
    for (i, r) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            s,
            "<li><span class=\"key\" style=\"border-color: {colour}\"></span>push {} ({}{}, {}): {}</li>",
            r.push.id,
            escape(&r.push.module),
            r.push.dir.as_deref().map_or(String::new(), |d| format!(" {}", escape(d))),
            escape(&time_text(r.push.started)),
            escape(&summary_text(&r.summary))
        );
    }
    s.push_str(
        "</ul>\n<p class=\"note\">Solid: share of the push's mirrors verified from outside \
                (their public tree serves the push's proof). Dashed: share that answered synced. \
                Time is counted from the start of the push.</p>\n",
    );
    for r in reports.iter().rev() {
        s.push_str(&table(r));
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn plot(reports: &[PushReport]) -> String {
    let end_ms = reports
        .iter()
        .flat_map(|r| r.mirrors.iter())
        .flat_map(|m| [m.synced_after_ms, m.verified_after_ms])
        .flatten()
        .max()
        .unwrap_or(1_000);
    let (end, step) = axis(end_ms);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = move |ms: i64| LEFT + pw * (ms as f64 / end as f64);
    let y = move |share: f64| TOP + ph * (1.0 - share);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"plot\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-labelledby=\"plot-title\">\n\
         <title id=\"plot-title\">Share of mirrors synced and verified against time since the push</title>\n"
    );
    // Grid and axes.
    for pct in [0, 25, 50, 75, 100] {
        let yy = y(pct as f64 / 100.0);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{pct}%</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let mut t = 0;
    while t <= end {
        let xx = x(t);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 16.0,
            if t == 0 {
                "0".to_owned()
            } else {
                short_duration(t as u64)
            }
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since the push</text>\
         <text class=\"label\" transform=\"rotate(-90)\" x=\"{:.1}\" y=\"14\" text-anchor=\"middle\">share of mirrors</text>",
        LEFT + pw / 2.0,
        H - 8.0,
        -(TOP + ph / 2.0)
    );
    for (i, r) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let total = r.mirrors.len().max(1);
        let synced: Vec<i64> = r.mirrors.iter().filter_map(|m| m.synced_after_ms).collect();
        let verified: Vec<i64> = r
            .mirrors
            .iter()
            .filter_map(|m| m.verified_after_ms)
            .collect();
        let _ = writeln!(
            s,
            "<polyline class=\"synced\" data-push=\"{id}\" stroke=\"{colour}\" points=\"{}\"/>\n\
             <polyline class=\"verified\" data-push=\"{id}\" stroke=\"{colour}\" points=\"{}\"/>",
            steps(&synced, total, &x, &y, end),
            steps(&verified, total, &x, &y, end),
            id = r.push.id
        );
    }
    s.push_str("</svg>\n");
    s
}

fn table(r: &PushReport) -> String {
    let ms = |v: Option<i64>| v.map_or("-".to_owned(), |v| short_duration(v as u64));
    let p = &r.push;
    let mut s = format!(
        "<h2>Push {} &mdash; {}{}</h2>\n<p>Started {} by {}; {}.</p>\n\
         <table class=\"mirrors\" data-push=\"{}\">\n<thead><tr><th>mirror</th><th>transport</th>\
         <th>answer</th><th>synced after</th><th>verified after</th><th>lag</th><th>state</th>\
         <th>error class</th></tr></thead>\n<tbody>\n",
        p.id,
        escape(&p.module),
        p.dir
            .as_deref()
            .map_or(String::new(), |d| format!(" {}", escape(d))),
        escape(&time_text(p.started)),
        escape(&p.who),
        match (&p.outcome, p.ended) {
            (Some(o), Some(e)) => format!(
                "{} after {}",
                escape(o),
                short_duration((e - p.started).max(0) as u64)
            ),
            _ => "never ended (killed?)".to_owned(),
        },
        p.id
    );
    for m in &r.mirrors {
        let class = if m.verified_after_ms.is_some() {
            "ok"
        } else {
            "behind"
        };
        let _ = writeln!(
            s,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.mirror),
            escape(&m.transport),
            escape(m.answer.as_deref().unwrap_or("-")),
            ms(m.synced_after_ms),
            ms(m.verified_after_ms),
            ms(m.lag_ms),
            escape(m.state.as_deref().unwrap_or("-")),
            escape(m.error_class.as_deref().unwrap_or("-")),
        );
    }
    let _ = write!(
        s,
        "</tbody>\n</table>\n<p class=\"summary\">{}</p>\n",
        escape(&summary_text(&r.summary))
    );
    s
}

const CSS: &str = "body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; }
h2 { font-size: 1.1em; margin-top: 2em; }
svg.plot { max-width: 100%; height: auto; border: 1px solid #ddd; }
svg .grid { stroke: #e4e4e4; stroke-width: 1; }
svg .tick, svg .label { font-size: 12px; fill: #444; }
svg polyline { fill: none; stroke-width: 2.5; }
svg polyline.synced { stroke-dasharray: 6 4; stroke-width: 1.5; }
ul.legend { list-style: none; padding: 0; }
ul.legend .key { display: inline-block; width: 2em; border-top: 3px solid; margin-right: 0.5em; vertical-align: middle; }
table.mirrors { border-collapse: collapse; font-size: 0.9em; }
table.mirrors th, table.mirrors td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
table.mirrors td:nth-child(n+4):nth-child(-n+6) { text-align: right; font-variant-numeric: tabular-nums; }
tr.behind td { background: #fff4e5; }
p.note { color: #555; font-size: 0.9em; }
";

#[cfg(test)]
mod tests {
    use super::super::{from_rows, tests::sample};
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_mirror_text() {
        let (p, mut rows) = sample(4, 3, 2);
        rows[0].mirror = "<img src=x onerror=alert(1)>\u{1b}[31m".into();
        rows[2].error_class = Some("\"><script>x</script>".into());
        let r = from_rows(p, &rows);
        let page = page(&[r]);
        for bad in [
            "<script", "<img", "\u{1b}", "url(", "src=\"", "href", "@import",
        ] {
            assert!(!page.contains(bad), "{bad} in the page");
        }
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;\\u{1b}[31m"));
        assert_eq!(page.matches("<polyline").count(), 2);
        assert_eq!(page.matches("<tr class=").count(), 3);
    }

    #[test]
    fn step_curves_and_axes() {
        assert_eq!(axis(9_000), (10_000, 2_000));
        assert_eq!(axis(1), (100, 100));
        assert_eq!(axis(59_000), (60_000, 10_000));
        let x = |ms: i64| ms as f64 / 10.0;
        let y = |share: f64| 100.0 * (1.0 - share);
        assert_eq!(
            steps(&[20, 10], 2, &x, &y, 40),
            "0.0,100.0 1.0,100.0 1.0,50.0 2.0,50.0 2.0,0.0 4.0,0.0"
        );
    }
}
