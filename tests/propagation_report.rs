//! The HTML report in a real browser: Debian's chromium (headless) renders the page written by
//! `mirrorpush report --html`; the rendered DOM has the plot (one verified and one synced curve
//! per push) and the tables, mirror-provided text stays text, and the page makes no network
//! request (chromium's own net log, checked against a control page that does make one).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use mirrorpush::history::{History, MirrorRow, PushRow};
use serde_json::Value;

const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// Deterministic "random" numbers (xorshift), so the page and its screenshot are the same each run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Three pushes to 40 mirrors: most verify within a minute, a few lag, a few never do.
fn history_with_pushes(path: &Path, hostile_port: u16) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pushes = Vec::new();
    for p in 0..3i64 {
        let started = 1_796_000_000_000 + p * 86_400_000;
        let push = PushRow {
            id: 0,
            module: "fedora".into(),
            dir: (p == 1).then(|| "updates/41".to_owned()),
            serial: Some(format!("20261130{p:02}")),
            started,
            ended: Some(started + 40_000),
            who: "release@master".into(),
            outcome: Some("ok".into()),
        };
        let mut rows = Vec::new();
        for m in 0..40u64 {
            let name = match m {
                0 => format!("<img src=\"http://127.0.0.1:{hostile_port}/pwn.png\">"),
                1 => "evil\u{1b}[31m\u{202e}gpj.exe".to_owned(),
                _ => format!("mirror{m:02}.example.net"),
            };
            let synced = 2_000 + rng.next() % (20_000 + 10_000 * p as u64);
            let lag = synced + 1_000 + rng.next() % 30_000 + if m % 9 == 0 { 60_000 } else { 0 };
            let never = m % 13 == 5;
            rows.push(MirrorRow {
                mirror: name,
                transport: if m % 5 == 0 { "bus" } else { "ssh" }.into(),
                answer: Some(if m % 4 == 0 { "accepted" } else { "synced" }.into()),
                ok: Some(true),
                synced: (m % 4 != 0).then_some(started + synced as i64),
                verified: (!never).then_some(started + lag as i64),
                state: Some(if never { "stale" } else { "verified" }.into()),
                error_class: never.then(|| "stale".into()),
                ..MirrorRow::default()
            });
        }
        pushes.push((push, rows));
    }
    History::open(path)
        .unwrap()
        .insert_finished(&pushes)
        .unwrap();
}

/// Runs headless chromium on `page` in its own process group, with stdout to a file (its helper
/// processes must not hold a pipe of ours open), and stops the whole group by its id afterwards.
fn chromium(dir: &Path, args: &[&str], page: &Path) -> (String, PathBuf) {
    use std::os::unix::process::CommandExt;
    let n = format!(
        "{}{}",
        page.file_stem().unwrap().to_string_lossy(),
        args.len()
    );
    let netlog = dir.join(format!("netlog-{n}.json"));
    let stdout = dir.join(format!("chromium-{n}.out"));
    let stderr = dir.join(format!("chromium-{n}.err"));
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium runs (scripts/install-deps.sh installs it)");
    let pgid = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: kill(2) of the process group we created for chromium.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium: {status:?}\n{err}"
    );
    (std::fs::read_to_string(&stdout).unwrap(), netlog)
}

/// URLs the page itself asked for: requests in chromium's net log with a page initiator (the
/// browser's own background requests have none, "not an origin").
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .unwrap();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| e["params"]["initiator"].as_str() != Some("not an origin"))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_html_report_renders_in_chromium_with_plot_and_tables_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A closed port: a load from it fails at once, and still shows in the net log.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let history = dir.path().join("history.db");
    history_with_pushes(&history, port);
    let page = dir.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(dir.path().join("absent.toml"))
        .arg("--history")
        .arg(&history)
        .args(["report", "--last", "3", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("push 3: 37 of 40 verified within"), "{text}");

    let (dom, netlog) = chromium(dir.path(), &["--dump-dom"], &page);
    // The plot: an svg with one verified and one synced curve per push, axes labelled.
    assert_eq!(dom.matches("<svg").count(), 1, "{dom}");
    assert_eq!(dom.matches("<polyline class=\"verified\"").count(), 3);
    assert_eq!(dom.matches("<polyline class=\"synced\"").count(), 3);
    assert!(dom.contains("time since the push") && dom.contains("100%"));
    // The tables: one per push, 40 rows each, under the plot.
    assert_eq!(dom.matches("<table class=\"mirrors\"").count(), 3);
    assert_eq!(dom.matches("<tr class=").count(), 120);
    assert!(dom.find("<svg").unwrap() < dom.find("<table").unwrap());
    assert!(dom.contains("37 of 40 verified within"));
    // Mirror-provided text is text: no element was made from it, nothing runs.
    assert!(!dom.contains("<img") && !dom.contains("<script"), "{dom}");
    assert!(dom.contains("&lt;img src="));
    assert!(!dom.contains('\u{1b}') && !dom.contains('\u{202e}'));
    // No request left the page (the hostile name's image would have been one).
    assert_eq!(page_requests(&netlog), Vec::<String>::new());

    // The check sees a request when a page makes one.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        format!("<!DOCTYPE html><p>x</p><img src=\"http://127.0.0.1:{port}/x.png\">"),
    )
    .unwrap();
    let (_, control_log) = chromium(dir.path(), &["--dump-dom"], &control);
    let seen = page_requests(&control_log);
    assert!(
        seen.iter()
            .any(|u| u.contains(&format!("127.0.0.1:{port}/x.png"))),
        "{seen:?}"
    );

    // The screenshot: a PNG of the page at 1000 px wide.
    let png = dir.path().join("report.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(dir.path(), &[&shot, "--window-size=1000,1500"], &page);
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1000);
    assert!(bytes.len() > 20_000, "a blank page compresses to less");
    // `MIRRORPUSH_REPORT_PNG=docs/propagation-report.png cargo test --test propagation_report`
    // refreshes the screenshot in the docs.
    if let Some(dest) = std::env::var_os("MIRRORPUSH_REPORT_PNG") {
        std::fs::copy(&png, dest).unwrap();
    }
}
