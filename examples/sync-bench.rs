//! File-list sync against plain rsync, end to end, for `benches/sync.sh`: one tree served by
//! a real `rsync --daemon` on loopback (started by the lab), two mirrors of it synced by the
//! real `mirrorpush-handler`, run locally as the lab's unprivileged account
//! (`mirrorpush-handler --config CFG sync fedora`, as a mirror admin or the fallback timer runs
//! it): one module plain, one with `filelist = "fullfiletimelist-fedora"`.
//!
//! ```text
//! sync-bench TREE FILES OUTDIR ROUNDS [--changed SUBDIR CHANGES]
//! ```
//! FILES labels the results (the tree's size as built). TREE holds its list (`TREE/fullfiletimelist-fedora`, current: `benches/sync.sh` writes it
//! untimed). Both mirrors get a first full copy (untimed), then:
//! - `null-<files>`: one untimed warm-up run each, then ROUNDS rounds of one run each with
//!   nothing changed upstream;
//! - `changed-<files>` (with `--changed`): the same, each round after a publish of CHANGES
//!   changes in SUBDIR (`filelist-tree --touch`) and the list rewritten with `--changed`
//!   (both untimed); both mirrors then carry the same publish.
//!
//! The two take turns at going first. For each run: the handler's wall time and CPU (with its
//! rsync), the CPU the daemon's children spent on it (its cgroup-v1 `cpuacct` group, read once
//! the daemon has no child left), the daemon's log lines for it, and the handler's record of
//! the run. The plain module excludes the list (`--exclude=/fullfiletimelist-fedora`), so its
//! figures are those of the tree alone. Appends to `OUTDIR/raw.tsv`:
//! `scenario files mode run wall_s mirror_user_s mirror_sys_s upstream_cpu_s served kind
//! transferred deleted bytes_received rc`; details to `OUTDIR/sync-<files>.log`.

use mirrorpush_lab::bench;

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use bench::CpuMeter;
use mirrorpush_lab::{sibling_binary, Lab, LabOptions};

const LIST: &str = "fullfiletimelist-fedora";
const MODES: [&str; 2] = ["plain", "filelist"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync-bench: {e}");
            ExitCode::from(1)
        }
    }
}

struct Bench {
    lab: Lab,
    tree: PathBuf,
    out: PathBuf,
    log: PathBuf,
    handler: PathBuf,
    meter: CpuMeter,
    daemon_log: PathBuf,
    files: usize,
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sync-bench TREE FILES OUTDIR ROUNDS [--changed SUBDIR CHANGES]";
    let (tree, files, out, rounds) = match args.get(..4) {
        Some([t, n, o, r]) => (
            PathBuf::from(t),
            n.parse::<usize>().map_err(|_| usage)?,
            PathBuf::from(o),
            r.parse::<usize>().map_err(|_| usage)?,
        ),
        _ => return Err(usage.into()),
    };
    let changed = match args.get(4..) {
        Some([flag, sub, n]) if flag == "--changed" => {
            Some((sub.clone(), n.parse::<usize>().map_err(|_| usage)?))
        }
        Some([]) => None,
        _ => return Err(usage.into()),
    };
    let tree = tree
        .canonicalize()
        .map_err(|e| format!("{}: {e}", tree.display()))?;
    if !tree.join(LIST).exists() {
        return Err(format!("{} has no {LIST}", tree.display()));
    }
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let listed = count_files(&tree.join(LIST))?;
    let handler = sibling_binary("mirrorpush-handler").map_err(|e| e.to_string())?;
    let mut lab = Lab::start(LabOptions {
        mirrors: 2,
        handler_bin: handler.clone(),
        mode: "wait".into(),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the lab: {e}"))?;
    let port = lab
        .serve("origin", &[("fedora".into(), tree.clone())])
        .map_err(|e| format!("cannot serve the tree: {e}"))?;
    let pid = lab.daemon_pid(port).ok_or("no pid for the origin daemon")?;
    let meter = CpuMeter::new("origin", pid);
    let origin = format!("rsync://127.0.0.1:{port}/fedora/");
    let keys = [
        format!("rsync_args = [\"--exclude=/{LIST}\"]\n"),
        format!("filelist = {LIST:?}\n"),
    ];
    for (i, extra) in keys.iter().enumerate() {
        let text = lab
            .handler_toml(i, extra)
            .replace(&lab.rsync_url("fedora"), &origin);
        lab.write_handler_config(i, &text)
            .map_err(|e| e.to_string())?;
    }
    let b = Bench {
        daemon_log: lab.root.join("origin").join("rsyncd.log"),
        lab,
        log: out.join(format!("sync-{files}.log")),
        tree,
        out,
        handler,
        meter,
        files,
    };
    b.note(&format!(
        "tree {} ({listed} files in its list), origin {origin} (daemon pid {pid}), upstream CPU: {}, lab {} account {}, load {}",
        b.tree.display(),
        b.meter.method(),
        b.lab.root.display(),
        b.lab.user,
        bench::loadavg()
    ));
    for (i, mode) in MODES.iter().enumerate() {
        b.note(&format!(
            "{mode}: {}\n{}",
            b.lab.mirrors[i].handler_config.display(),
            fs::read_to_string(&b.lab.mirrors[i].handler_config).unwrap_or_default()
        ));
    }

    // First copies: a plain rsync for both (the file-list module has no baseline yet).
    for (i, mode) in MODES.iter().enumerate() {
        b.sync("initial", i, mode, "initial")?;
    }
    b.check_trees("after the first copies")?;

    let scen = format!("null-{files}");
    b.rounds(&scen, rounds, || Ok(()))?;
    b.check_trees(&scen)?;

    if let Some((sub, n)) = changed {
        let scen = format!("changed-{files}");
        let touch = bench::example_binary("filelist-tree").map_err(|e| e.to_string())?;
        let master = sibling_binary("mirrorpush").map_err(|e| e.to_string())?;
        let publish = || -> Result<(), String> {
            let mut t = Command::new(&touch);
            t.arg("--touch").arg(b.tree.join(&sub)).arg(n.to_string());
            bench::run(t).map_err(|e| e.to_string())?;
            let mut g = Command::new(&master);
            g.args(["filelist", "--checksum", "repomd.xml", "--output"])
                .arg(b.tree.join(LIST))
                .arg("--changed")
                .arg(&sub)
                .arg(&b.tree);
            bench::run(g).map_err(|e| e.to_string())
        };
        b.rounds(&scen, rounds, publish)?;
        b.check_trees(&scen)?;
    }
    b.note(&format!("load at the end: {}", bench::loadavg()));
    Ok(())
}

impl Bench {
    fn note(&self, text: &str) {
        eprintln!("{text}");
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(f, "{text}");
        }
    }

    /// An untimed warm-up round, then `rounds` rounds, each after `before` (untimed).
    fn rounds(
        &self,
        scen: &str,
        rounds: usize,
        before: impl Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        for r in 0..=rounds {
            before()?;
            let label = if r == 0 {
                "warmup".to_owned()
            } else {
                r.to_string()
            };
            let order: Vec<usize> = if r % 2 == 1 { vec![0, 1] } else { vec![1, 0] };
            for i in order {
                self.sync(scen, i, MODES[i], &label)?;
            }
        }
        Ok(())
    }

    /// One measured `mirrorpush-handler sync fedora` of mirror `i`, as the lab account.
    fn sync(&self, scen: &str, i: usize, mode: &str, run: &str) -> Result<(), String> {
        if !self.meter.wait_idle(Duration::from_secs(60)) {
            return Err("the origin daemon still has clients before a run".into());
        }
        let served_before = bench::served(&self.daemon_log).len();
        let cpu_before = self.meter.seconds();
        let mut cmd = self.lab.command_as_account(&self.handler);
        cmd.arg("--config")
            .arg(&self.lab.mirrors[i].handler_config)
            .args(["sync", "fedora"])
            .env_remove("SSH_ORIGINAL_COMMAND")
            .env_remove("SSH_CONNECTION");
        let m = bench::measure(cmd, &self.out.join(format!("handler-{}.out", self.files)))
            .map_err(|e| format!("cannot run the handler: {e}"))?;
        if !self.meter.wait_idle(Duration::from_secs(60)) {
            return Err("the origin daemon still has clients 60 s after the run".into());
        }
        let cpu = self.meter.seconds() - cpu_before;
        let served: Vec<String> = bench::served(&self.daemon_log)
            .into_iter()
            .skip(served_before)
            .collect();
        let rec = bench::last_run(&self.lab.mirrors[i].state_dir, "fedora");
        let target = &rec["runs"][0];
        let kind = target["kind"].as_str().unwrap_or("?");
        let line = format!(
            "{scen} {} {mode} {run} {:.6} {:.6} {:.6} {:.6} {} {kind} {} {} {} {}\n",
            self.files,
            m.wall,
            m.user,
            m.sys,
            cpu,
            served.len(),
            rec["transferred"],
            rec["deleted"],
            rec["bytes_received"],
            m.code
        );
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("raw.tsv"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| e.to_string())?;
        let mut detail = line.trim_end().to_owned();
        let _ = write!(
            detail,
            "\n    served: {served:?}\n    handler: {} ms, ok {}, result {}",
            rec["duration_ms"], rec["ok"], target["result"]
        );
        self.note(&detail);
        if m.code != 0 {
            return Err(format!(
                "{mode} sync exited {}: see handler-{}.out",
                m.code, self.files
            ));
        }
        Ok(())
    }

    /// Both mirrors carry the tree (the plain one without the list it excludes).
    fn check_trees(&self, when: &str) -> Result<(), String> {
        for (i, mode) in MODES.iter().enumerate() {
            let skip: &[&str] = if i == 0 { &[LIST] } else { &[] };
            if let Some(d) =
                bench::tree_difference(&self.tree, &self.lab.mirrors[i].dest("fedora"), skip)
            {
                return Err(format!("{mode} mirror differs from the tree {when}: {d}"));
            }
        }
        self.note(&format!("{when}: both mirrors equal the tree"));
        Ok(())
    }
}

/// Entries in a list's `[Files]` section.
fn count_files(list: &Path) -> Result<usize, String> {
    let text = fs::read_to_string(list).map_err(|e| format!("{}: {e}", list.display()))?;
    Ok(text
        .lines()
        .skip_while(|l| *l != "[Files]")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.split('\t').nth(1).is_some_and(|t| t.starts_with('f')))
        .count())
}
