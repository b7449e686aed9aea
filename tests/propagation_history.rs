//! The push history under real pushes: two pushes at once, and a push killed with SIGKILL while
//! a mirror is still syncing, leave a consistent database that the next push and `report` use.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use mirrorpush::history::History;
use mirrorpush_lab::{Lab, LabOptions};

fn lab(mirrors: usize) -> Lab {
    Lab::start(LabOptions {
        mirrors,
        modules: vec!["fedora".into()],
        handler_bin: env!("CARGO_BIN_EXE_mirrorpush-handler").into(),
        mode: "detach".into(),
        ..Default::default()
    })
    .expect("lab starts")
}

fn push(registry: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorpush"));
    cmd.arg("--registry")
        .arg(registry)
        .args(["push", "fedora"])
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("MIRRORPUSH_HISTORY");
    cmd
}

#[test]
fn two_pushes_at_once_are_both_recorded_whole() {
    let lab = lab(2);
    let a = push(&lab.registry).stdout(Stdio::piped()).spawn().unwrap();
    let b = push(&lab.registry).stdout(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let last = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_owned()
    };
    let mut ids = vec![last(&a), last(&b)];
    ids.sort();
    assert_eq!(ids, ["push 1", "push 2"]);
    let h = History::open(&lab.history()).unwrap();
    for id in [1, 2] {
        let p = h.push(id).unwrap().unwrap();
        assert_eq!(p.module, "fedora");
        assert_eq!(p.outcome.as_deref(), Some("ok"));
        assert!(p.ended.is_some_and(|e| e >= p.started));
        let rows = h.mirrors(id).unwrap();
        assert_eq!(rows.len(), 2);
        for r in rows {
            assert_eq!(r.ok, Some(true), "{r:?}");
            assert!(
                matches!(r.answer.as_deref(), Some("accepted" | "queued")),
                "{r:?}"
            );
            assert!(r.answered.is_some());
        }
    }
}

#[test]
fn a_killed_push_leaves_what_it_had_recorded() {
    let lab = lab(2);
    // mirror1 answers only when its sync ends (wait mode), and its rsync waits at a gate.
    let w = common::wrapper(&lab, false);
    let text = lab
        .handler_toml(0, "")
        .replace("mode = \"detach\"", "mode = \"wait\"")
        .replace(
            &format!("rsync = {:?}", lab.rsync_bin.display().to_string()),
            &format!("rsync = {:?}", w.path.display().to_string()),
        );
    lab.write_handler_config(0, &text).unwrap();
    let mut child = push(&lab.registry)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until mirror2 (detach) has answered and been recorded and mirror1 is syncing.
    let recorded = lab.wait_until(common::LONG, || {
        History::open(&lab.history())
            .ok()
            .and_then(|h| h.mirrors(1).ok())
            .is_some_and(|rows| rows.iter().any(|r| r.mirror == "mirror2" && r.ok.is_some()))
            && w.started.exists()
    });
    assert!(recorded, "mirror2's answer was never recorded");
    // SAFETY: kill(2) on the pid of the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(!status.success());

    let h = History::open(&lab.history()).unwrap();
    let p = h.push(1).unwrap().unwrap();
    assert_eq!((p.ended, p.outcome.as_deref()), (None, None));
    let rows = h.mirrors(1).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].mirror.as_str(),
            rows[0].ok,
            rows[0].answer.as_deref()
        ),
        ("mirror1", None, None)
    );
    assert_eq!(rows[1].ok, Some(true));
    drop(h);

    // The next push works on the same database, and the report shows the killed one as such.
    std::fs::write(&w.gate, "").unwrap();
    let out = push(&lab.registry).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("push 2")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(&lab.registry)
        .args(["report", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("never ended"), "{text}");
    assert!(text.contains("0 of 2 verified"), "{text}");
}
