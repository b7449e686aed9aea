//! Golden tests of the handler as a user sees it, through the real lab (sshd forcing the
//! handler, a real `rsync --daemon` upstream): for each scenario, the answer and exit code, the
//! exact argv of every rsync the handler started, the `handler.log` lines it appended, and
//! `status --json` and `status` afterwards. They pin behaviour so a restructuring of the
//! handler cannot change any of it unnoticed.
//!
//! Expected transcripts live in `tests/golden/<scenario>.txt` and are compared as whole strings
//! (the failure message shows the first differing line and the whole new transcript). Only
//! what varies from run to run is normalised (see [`Norm`]): lab paths, ports, times,
//! durations and non-zero byte counts. After an intended change of
//! behaviour, rewrite the files with `MIRRORPUSH_BLESS=1 cargo test --test handler_golden` and
//! review the diff.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{lab, write_config, LONG};
use mirrorpush_lab::Lab;

/// Marks the end of one rsync invocation in the argv record file.
const END: &str = "--end-of-invocation--";

/// A lab whose mirror 0 runs rsync through a wrapper that records each invocation's argv.
struct Golden {
    lab: Lab,
    wrapper: PathBuf,
    argv_file: PathBuf,
    /// Bytes of `handler.log` already reported.
    log_seen: usize,
    transcript: String,
}

impl Golden {
    fn start(mode: &str) -> Golden {
        Golden::with(lab(mode))
    }

    fn with(lab: Lab) -> Golden {
        let dir = lab.root.join("argv");
        lab.create_dir_for_account(&dir).unwrap();
        let argv_file = dir.join("argv");
        let wrapper = dir.join("rsync");
        // Per invocation (`--version` included): the working directory rsync writes into, its
        // stdin, its environment (less what the shell itself adds), one argument per line,
        // then the end marker.
        let script = format!(
            "#!/bin/sh\n\
             {{ echo \"cwd $(pwd -P)\"; echo \"stdin $(readlink /proc/$$/fd/0)\"; \
             env | grep -v -e '^PWD=' -e '^OLDPWD=' -e '^SHLVL=' -e '^_=' | sort | sed 's/^/env /'; \
             for a in \"$@\"; do printf 'arg %s\\n' \"$a\"; done; echo {END}; }} >> {argv}\n\
             case \"$1\" in --version) ;; *) touch {started}; \
             while [ -e {closed} ]; do sleep 0.05; done;; esac\n\
             exec {rsync} \"$@\"\n",
            argv = argv_file.display(),
            started = dir.join("started").display(),
            closed = dir.join("closed").display(),
            rsync = lab.rsync_bin.display(),
        );
        fs::write(&wrapper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        let g = Golden {
            lab,
            wrapper,
            argv_file,
            log_seen: 0,
            transcript: String::new(),
        };
        g.config("");
        g
    }

    /// Mirror 0's config with `extra` module keys, rsync being the recording wrapper.
    fn config(&self, extra: &str) {
        write_config(&self.lab, extra, Some(&self.wrapper));
    }

    fn norm(&self) -> Norm {
        let m = &self.lab.mirrors[0];
        Norm {
            replace: vec![
                (m.state_dir.display().to_string(), "<STATE>".into()),
                (m.dest("fedora").display().to_string(), "<DEST>".into()),
                (m.handler_config.display().to_string(), "<CONFIG>".into()),
                (self.wrapper.display().to_string(), "<RSYNC>".into()),
                (self.lab.root.display().to_string(), "<LAB>".into()),
                (
                    format!("127.0.0.1:{}/", self.lab.rsync_port),
                    "127.0.0.1:<PORT>/".into(),
                ),
            ],
        }
    }

    /// While the gate is closed, every sync rsync waits before it starts (after recording).
    fn close_gate(&self) {
        let dir = self.lab.root.join("argv");
        let _ = fs::remove_file(dir.join("started"));
        fs::write(dir.join("closed"), "").unwrap();
    }

    /// Waits until an rsync waits at the closed gate.
    fn wait_at_gate(&self) {
        let started = self.lab.root.join("argv/started");
        assert!(self.lab.wait_until(LONG, || started.exists()));
    }

    fn open_gate(&self) {
        fs::remove_file(self.lab.root.join("argv/closed")).unwrap();
    }

    /// `status --json` and `status` as they are now, without waiting for anything.
    fn status_now(&mut self, title: &str) {
        let (json, text) = self.statuses();
        let t = &mut self.transcript;
        t.push_str(&format!(
            "=== {title}
--- status --json
{json}
--- status
{text}
"
        ));
    }

    /// A file the handler wrote, normalised (`trace` lines by their key).
    fn file(&mut self, title: &str, path: &Path) {
        let n = self.norm();
        let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
        let text: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| trace_line(i, &n.text(l)))
            .collect();
        self.transcript.push_str(&format!(
            "=== {title}
{}
",
            text.join("\n")
        ));
    }

    /// Runs `request` over ssh and returns its answer, without waiting for the run.
    fn ssh_answer(&self, request: &str) -> String {
        let (code, out, err) = common::ssh(&self.lab, request);
        let n = self.norm();
        format!(
            "ssh {request:?}\nexit: {code}\nstdout: {}\nstderr: {}\n",
            n.text(&out),
            n.text(&err)
        )
    }

    /// Runs `request` over ssh, waits until the module's runner (if any) has finished, and
    /// appends the whole scenario step to the transcript.
    fn ssh(&mut self, title: &str, request: &str) {
        let r = common::ssh(&self.lab, request);
        self.step(title, &format!("ssh {request:?}"), r);
    }

    /// As [`Golden::ssh`], for the handler run locally as the account (`sync`, `check`).
    fn local(&mut self, title: &str, args: &[&str]) {
        let r = common::local(&self.lab, args);
        self.step(title, &format!("local {}", args.join(" ")), r);
    }

    fn step(&mut self, title: &str, what: &str, (code, out, err): (i32, String, String)) {
        let n = self.norm();
        let answer = format!(
            "{what}\nexit: {code}\nstdout: {}\nstderr: {}\n",
            n.text(&out),
            n.text(&err)
        );
        self.record(title, &[answer]);
    }

    /// Waits until the module's runner (and a hub's downstream push) has finished, then appends
    /// the answers, the rsyncs started, the new log lines and the status to the transcript.
    fn record(&mut self, title: &str, answers: &[String]) {
        let config = self.lab.mirrors[0].handler_config.clone();
        assert!(
            self.lab
                .wait_until(LONG, || common::runner_pid(&config).is_none()
                    && common::queue_idle(&self.lab)
                    && !common::lab_process_running(&self.lab, b"__downstream")),
            "{title}: the runner did not finish"
        );
        let n = self.norm();
        let argv = fs::read_to_string(&self.argv_file).unwrap_or_default();
        let _ = fs::remove_file(&self.argv_file);
        let log = fs::read_to_string(self.lab.mirrors[0].state_dir.join("handler.log"))
            .unwrap_or_default();
        let new_log = log[self.log_seen..].to_owned();
        self.log_seen = log.len();
        let (json, text) = self.statuses();

        let t = &mut self.transcript;
        t.push_str(&format!("=== {title}\n"));
        for a in answers {
            t.push_str(a);
        }
        t.push_str("--- rsync argv\n");
        for inv in argv.split_terminator(&format!("{END}\n")) {
            let mut args = Vec::new();
            for l in inv.lines() {
                match l.strip_prefix("arg ") {
                    Some(a) => args.push(n.text(a)),
                    None => t.push_str(&format!("  {}\n", n.text(l))),
                }
            }
            t.push_str(&format!("rsync {}\n", args.join(" ")));
        }
        t.push_str("--- handler.log\n");
        for line in new_log.lines() {
            t.push_str(&n.log_line(line));
            t.push('\n');
        }
        t.push_str("--- status --json\n");
        t.push_str(&json);
        t.push('\n');
        t.push_str("--- status\n");
        t.push_str(&text);
        t.push('\n');
    }

    /// Mirror 0's `status --json` (pretty, normalised) and `status`, or their error.
    fn statuses(&self) -> (String, String) {
        let n = self.norm();
        let (jcode, json, jerr) = common::local(&self.lab, &["status", "--json"]);
        let json = match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(v) => serde_json::to_string_pretty(&n.json(v)).unwrap(),
            Err(_) => format!("exit {jcode}: {}{}", n.text(&json), n.text(&jerr)),
        };
        let (tcode, text, terr) = common::local(&self.lab, &["status"]);
        let text = if tcode == 0 {
            n.status_text(&text)
        } else {
            format!("exit {tcode}: {}{}", n.text(&text), n.text(&terr))
        };
        (json, text)
    }

    /// Compares the transcript with `tests/golden/<name>.txt` (or writes it when blessing).
    fn finish(self, name: &str) {
        check(name, &self.transcript);
    }
}

/// Compares `actual` with `tests/golden/<name>.txt` (after writing it, when blessing).
fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("MIRRORPUSH_BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with MIRRORPUSH_BLESS=1)", path.display()));
    compare(&path, &expected, actual);
}

/// Whole-string comparison with a readable failure: the first differing line, then the new text.
fn compare(path: &Path, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let i = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    panic!(
        "{} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\n--- whole actual transcript:\n{actual}",
        path.display(),
        i + 1,
        e.get(i),
        a.get(i),
    );
}

/// rsync's `--out-format` starts with a marker drawn per run (32 hex digits and `|`).
trait RunMarkers {
    fn replace_run_markers(self) -> String;
}

impl RunMarkers for String {
    fn replace_run_markers(self) -> String {
        const KEY: &str = "--out-format=";
        let mut out = String::with_capacity(self.len());
        let mut rest = self.as_str();
        while let Some(i) = rest.find(KEY) {
            let (head, tail) = rest.split_at(i + KEY.len());
            out.push_str(head);
            let hex = tail.len() > 32
                && tail.as_bytes()[..32].iter().all(u8::is_ascii_hexdigit)
                && tail.as_bytes()[32] == b'|';
            rest = if hex {
                out.push_str("<MARKER>");
                &tail[32..]
            } else {
                tail
            };
        }
        out.push_str(rest);
        out
    }
}

/// What varies from run to run, replaced by placeholders; everything else stays as it is.
struct Norm {
    /// Literal strings (lab paths, the daemon's port) and their placeholders, longest first.
    replace: Vec<(String, String)>,
}

impl Norm {
    fn text(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (from, to) in &self.replace {
            s = s.replace(from, to);
        }
        // `check` names the installed rsync's version: the machine's, not the handler's.
        if let Some(i) = s.find(", rsync ") {
            let from = i + ", rsync ".len();
            if let Some(len) = s[from..].find(" at ") {
                s.replace_range(from..from + len, "<RSYNC VERSION>");
            }
        }
        durations(&times(&s)).replace_run_markers()
    }

    /// A `handler.log` line: times, the client's port and non-zero byte counts.
    fn log_line(&self, line: &str) -> String {
        let mut line = self.text(line);
        if let Some(i) = line.find("client=\"127.0.0.1 ") {
            let from = i + "client=\"127.0.0.1 ".len();
            if let Some(len) = line[from..].find('"') {
                line.replace_range(from..from + len, "<PORT>");
            }
        }
        bytes_received(&line)
    }

    fn json(&self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, x)| {
                        let x = match k.as_str() {
                            k if k.ends_with("_ms") => Value::String("<MS>".into()),
                            "seq" => Value::String("<SEQ>".into()),
                            // The master's own summary, as a hub's push printed it: its format
                            // is the master's (pinned by the master's tests); here its presence.
                            "summary" if x.is_object() => Value::String("<summary object>".into()),
                            "bytes_received" if x != 0 => Value::String("<BYTES>".into()),
                            _ => self.json(x),
                        };
                        (k, x)
                    })
                    .collect(),
            ),
            x => x,
        }
    }

    /// `status` text: times, the `(1m 5s)` duration and non-zero byte counts.
    fn status_text(&self, text: &str) -> String {
        self.text(text)
            .lines()
            .map(|l| {
                let mut l = l.to_owned();
                if l.starts_with("  last run:  <TIME>") {
                    if let Some(i) = l.rfind(" (") {
                        l.truncate(i);
                        l.push_str(" (<DURATION>)");
                    }
                }
                bytes_received(&l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A line of an ftpsync trace file (line `i`), with what varies per run replaced.
fn trace_line(i: usize, l: &str) -> String {
    if i == 0 && !l.contains(": ") {
        return "<DATE -u>".into();
    }
    let Some((k, v)) = l.split_once(": ") else {
        return l.to_owned();
    };
    let v = match k {
        "Date" | "Date-Started" => "<RFC 2822 DATE>".to_owned(),
        "Creator" => v.replace(env!("CARGO_PKG_VERSION"), "<VERSION>"),
        "Running on host" => "<HOST>".to_owned(),
        "Total bytes received in rsync" if v != "0" => "<BYTES>".to_owned(),
        "Total time spent in rsync" => "<SECS>".to_owned(),
        "Average rate" => "<RATE>".to_owned(),
        _ => v.to_owned(),
    };
    format!("{k}: {v}")
}

/// `862 bytes received` becomes `<BYTES> bytes received` (a zero stays: nothing travelled).
fn bytes_received(line: &str) -> String {
    let mut l = line.to_owned();
    if let Some(i) = l.find(" bytes received") {
        let start = l[..i].rfind(' ').map_or(0, |j| j + 1);
        if &l[start..i] != "0" {
            l.replace_range(start..i, "<BYTES>");
        }
    }
    l
}

/// Replaces every duration word (`875ms`, `0.9s`) by `<DURATION>`.
fn durations(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'.';
        if boundary && b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let unit = if s[j..].starts_with("ms") {
                2
            } else if s[j..].starts_with('s') {
                1
            } else {
                0
            };
            let end = j + unit;
            if unit > 0 && b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric()) {
                out.push_str("<DURATION>");
                i = end;
                continue;
            }
            out.push_str(&s[i..j]);
            i = j;
            continue;
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Replaces every RFC 3339 time (`2026-11-30T11:04:27Z`, with optional fraction) by `<TIME>`.
fn times(s: &str) -> String {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let fits = b.len() - i >= shape.len()
            && shape.iter().zip(&b[i..]).all(|(&p, &c)| {
                if p == b'd' {
                    c.is_ascii_digit()
                } else {
                    c == p
                }
            });
        if fits {
            let mut j = i + shape.len();
            if b.get(j) == Some(&b'.') {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            if b.get(j) == Some(&b'Z') {
                j += 1;
            }
            out.push_str("<TIME>");
            i = j;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn golden_plain_and_dir_sync_in_detach_mode() {
    let mut g = Golden::start("detach");
    g.ssh("dir sync", "sync fedora releases/41");
    g.ssh("plain module sync", "sync fedora");
    g.local("check", &["check"]);
    g.finish("plain_and_dir");
}

#[test]
fn golden_queued_requests_and_trace_files_in_detach_mode() {
    let mut g = Golden::start("detach");
    g.config("trace = \"project/trace/mirror1.example.net\"\nlastsync = \"lastsync\"\n");
    g.close_gate();
    let first = g.ssh_answer("sync fedora updates");
    g.wait_at_gate();
    // While the first run waits: a dir and the whole module are queued behind it.
    let second = g.ssh_answer("sync fedora releases");
    let third = g.ssh_answer("sync fedora");
    let fourth = g.ssh_answer("sync fedora releases");
    g.status_now("while the first run waits at the gate");
    g.open_gate();
    g.record(
        "queued requests, run as one batch",
        &[first, second, third, fourth],
    );
    let dest = g.lab.mirrors[0].dest("fedora");
    g.file(
        "trace file",
        &dest.join("project/trace/mirror1.example.net"),
    );
    let lastsync = fs::read_to_string(dest.join("lastsync")).unwrap();
    assert!(lastsync.trim().parse::<u64>().is_ok(), "{lastsync}");
    g.finish("queued_and_trace");
}

#[test]
fn golden_hub_pushes_downstream_after_a_run_that_changed_something() {
    let lab = Lab::start(mirrorpush_lab::LabOptions {
        mirrors: 2,
        modules: vec!["fedora".into()],
        handler_bin: PathBuf::from(env!("CARGO_BIN_EXE_mirrorpush-handler")),
        mode: "wait".into(),
        ..Default::default()
    })
    .expect("lab starts");
    let registry = lab.downstream_registry(0, &[1], "1m").unwrap();
    let mut g = Golden::with(lab);
    g.config(&format!(
        "downstream = {:?}\n",
        registry.display().to_string()
    ));
    g.ssh("hub run that changed something", "sync fedora updates");
    g.ssh("hub run that changed nothing", "sync fedora updates");
    assert!(g.lab.in_sync(1, "fedora") || g.lab.mirrors[1].dest("fedora").join("updates").exists());
    g.finish("hub");
}

#[test]
fn golden_file_list_sync_baseline_changed_null_and_two_stage() {
    let mut g = Golden::start("wait");
    g.config("filelist = \"fullfiletimelist-fedora\"\n");
    common::publish_list(&g.lab);
    g.ssh("file list, no baseline yet", "sync fedora");
    g.ssh("file list unchanged: null run", "sync fedora");
    let up = g.lab.upstream_dir("fedora");
    fs::write(
        up.join("updates/41/x86_64/Packages/o/openssl-3.3.rpm"),
        "new openssl\n",
    )
    .unwrap();
    fs::remove_file(up.join("updates/41/x86_64/Packages/o/openssl-3.2.rpm")).unwrap();
    common::publish_list(&g.lab);
    g.ssh("file list changed", "sync fedora");
    // Sizes differ from the old files', so the change shows even within the same second.
    fs::write(
        up.join("development/rawhide/COMPOSE_ID"),
        "Fedora-Rawhide-20261126.n.10\n",
    )
    .unwrap();
    fs::write(up.join("README"), "upstream readme, longer now\n").unwrap();
    common::publish_list(&g.lab);
    g.ssh("file list changed, dir push", "sync fedora development");
    g.config("filelist = \"fullfiletimelist-fedora\"\nlast = [\"repodata/\"]\n");
    fs::write(
        up.join("updates/41/x86_64/repodata/repomd.xml"),
        "<repomd rev=\"8\">new</repomd>\n",
    )
    .unwrap();
    fs::write(
        up.join("updates/41/x86_64/Packages/o/openssh-9.9.rpm"),
        "openssh\n",
    )
    .unwrap();
    common::publish_list(&g.lab);
    g.ssh(
        "file list changed, two-stage dir push",
        "sync fedora updates",
    );
    g.ssh(
        "file list changed outside the dirs pushed so far",
        "sync fedora",
    );
    g.local("local full sync", &["sync", "--full", "fedora"]);
    g.finish("filelist");
}

#[test]
fn golden_two_stage_and_wait_mode_failure() {
    let mut g = Golden::start("wait");
    g.config("last = [\"repodata/\", \"*.xml\"]\n");
    g.ssh("two-stage module sync", "sync fedora");
    g.ssh("two-stage dir sync", "sync fedora updates/41");
    let text = fs::read_to_string(&g.lab.mirrors[0].handler_config)
        .unwrap()
        .replace(&g.lab.rsync_url("fedora"), &g.lab.rsync_url("missing"));
    g.lab.write_handler_config(0, &text).unwrap();
    g.ssh("failing rsync in wait mode", "sync fedora");
    let detach = text.replace("mode = \"wait\"", "mode = \"detach\"");
    g.lab.write_handler_config(0, &detach).unwrap();
    g.ssh("detach answer after a failure", "sync fedora");
    g.finish("two_stage_and_failure");
}

#[test]
fn golden_refused_requests_and_config_error() {
    let mut g = Golden::start("detach");
    g.ssh("malformed", "sync fedora ../etc");
    g.ssh("malformed: wrong word count", "sync fedora a b");
    g.ssh("no command", "");
    g.ssh("unknown module", "sync nosuch");
    let dest = g.lab.mirrors[0].dest("fedora");
    let elsewhere = g.lab.root.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("updates")).unwrap();
    g.ssh("dir through a symlink", "sync fedora updates/41");
    g.config("allow_dirs = false\n");
    g.ssh("dirs not allowed", "sync fedora releases");
    g.local("local: malformed", &["sync", "fedora", "../etc"]);
    g.local("local: unknown module", &["sync", "nosuch"]);
    g.config("colour = \"blue\"\n");
    g.ssh("config error", "sync fedora");
    g.local("local: config error", &["check"]);
    g.finish("refused");
}

/// `status` and `status --json` of fixed state files (a failed two-target run, a hub's
/// downstream push, a batch in flight and one pending; a module never run): the renderers on
/// their own, with nothing to normalise.
#[test]
fn golden_status_of_fixed_state_files() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let md = state.join("fedora");
    fs::create_dir_all(&md).unwrap();
    fs::create_dir_all(tmp.path().join("dest/fedora")).unwrap();
    fs::create_dir_all(tmp.path().join("dest/idle")).unwrap();
    let config = tmp.path().join("handler.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\
             \n[modules.fedora]\nsource = \"rsync://upstream.example/fedora/\"\ndest = {:?}\n\
             \n[modules.idle]\nsource = \"rsync://upstream.example/idle/\"\ndest = {:?}\n",
            tmp.path().join("dest/fedora"),
            tmp.path().join("dest/idle"),
        ),
    )
    .unwrap();
    fs::write(
        md.join("status.json"),
        r#"{
  "start": "2026-11-30T10:00:00Z",
  "end": "2026-11-30T10:01:05Z",
  "duration_ms": 65432,
  "requests": ["(all)", "updates/41"],
  "requests_total": 3,
  "pushers": ["192.0.2.10", "198.51.100.7"],
  "keys": ["master", "hub"],
  "runs": [
    {"target": "(all)", "kind": "filelist", "ok": true, "rsync_exit": 0, "result": "ok",
     "transferred": 3, "deleted": 1, "bytes_received": 4096},
    {"target": "updates/41", "kind": "full", "ok": false, "rsync_exit": 23,
     "result": "rsync failed with exit code 23", "transferred": 0, "deleted": 0,
     "bytes_received": 0}
  ],
  "ok": false,
  "rsync_exit": 23,
  "result": "rsync failed with exit code 23",
  "transferred": 3,
  "deleted": 1,
  "bytes_received": 4096,
  "trace_written": false
}"#,
    )
    .unwrap();
    fs::write(
        md.join("downstream.json"),
        r#"{"start": "2026-11-30T10:01:06Z", "end": "2026-11-30T10:01:09Z", "duration_ms": 3000,
  "registry": "/etc/mirrorpush/downstream.toml",
  "pushes": [{"target": "(all)", "exit": 1, "mirrors": 3, "ok": 2, "failed": 1,
              "summary": null, "error": "mirror3: connection refused"}],
  "ok": false}"#,
    )
    .unwrap();
    fs::write(
        md.join("inflight"),
        "{\"seq\":7,\"at\":\"2026-11-30T10:02:00Z\",\"dir\":null,\"from\":\"192.0.2.10\",\"key\":\"master\"}\n",
    )
    .unwrap();
    fs::write(
        md.join("pending"),
        "{\"seq\":8,\"at\":\"2026-11-30T10:02:01Z\",\"dir\":\"updates/41\",\"from\":\"192.0.2.10\",\"key\":\"master\"}\n\
         {\"seq\":9,\"at\":\"2026-11-30T10:02:02Z\",\"dir\":null,\"from\":\"local\",\"key\":\"-\",\"plain\":true}\n",
    )
    .unwrap();
    let status = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorpush-handler"));
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("SSH_ORIGINAL_COMMAND")
            .env_remove("SSH_CONNECTION");
        let (code, out, err) = common::run(cmd);
        format!("exit: {code}\nstderr: {err}\n{out}\n")
    };
    let json = status(&["status", "--json"]);
    let (head, body) = json.split_once("\nstderr: \n").unwrap();
    let pretty = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap() + "\n",
        Err(_) => body.to_owned(),
    };
    let transcript = format!(
        "=== status\n{}=== status --json (raw)\n{json}=== status --json (pretty)\n{head}\n{pretty}",
        status(&["status"]),
    );
    check("status_fixed", &transcript);
}
