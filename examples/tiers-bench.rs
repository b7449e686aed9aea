//! Origin load, flat against tiered, for `benches/tiers.sh`: 12 lab mirrors (real sshd forcing
//! the real `mirrorpush-handler`, wait mode) and one origin `rsync --daemon` serving TREE.
//!
//! - flat: the master pushes all 12; each pulls from the origin.
//! - tiered: the master pushes mirrors 1-3 (hubs); each hub pulls from the origin, serves its
//!   tree with its own `rsync --daemon`, and has `downstream` = a registry of its 3 leaves (its
//!   own key and known_hosts, readable by the mirror account; the leaves authorize that key),
//!   which it pushes after a run that changed something; the 9 leaves pull from their hub.
//!
//! Each with file-list sync off (plain rsync) and on (`filelist = "fullfiletimelist-fedora"`
//! on every mirror; the origin publishes its list with `mirrorpush filelist`; a hub installs the
//! list it applied into its tree, so leaves fetch theirs from the hub).
//!
//! ```text
//! tiers-bench TREE FILES OUTDIR ROUNDS CHANGED_DIR CHANGES
//! ```
//! A round: a publish upstream (untimed: `filelist-tree --touch TREE/CHANGED_DIR CHANGES`, a
//! new `marker/round` file, with file lists on the list rewritten with `--changed`), then one
//! `mirrorpush push fedora` from the master. Measured: the time from starting the push until
//! the last mirror carries the round's marker (polled every 10 ms; with `--delay-updates` the
//! marker lands with the rest of the publish), and the CPU of the origin daemon's children
//! (cpuacct cgroup, read once every runner, downstream pusher and daemon child has ended),
//! with the hub daemons' children's CPU beside it. Per configuration: one untimed warm-up round,
//! ROUNDS rounds, then one push with nothing changed (`null`). Appends to `OUTDIR/tiers.tsv`:
//! `topology filelist run files last_s first_s push_s push_rc origin_cpu_s hubs_cpu_s
//! origin_served hubs_served mirror_runs downstream_pushes`; arrival times per mirror to
//! `OUTDIR/arrivals.tsv`; details to `OUTDIR/tiers.log`.

use mirrorpush_lab::bench;

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bench::CpuMeter;
use mirrorpush_lab::{sibling_binary, Lab, LabOptions};

const LIST: &str = "fullfiletimelist-fedora";
const MIRRORS: usize = 12;
const HUBS: usize = 3;
const MARKER: &str = "marker/round";
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiers-bench: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Topology {
    Flat,
    Tiered,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Flat => "flat",
            Topology::Tiered => "tiered",
        }
    }
}

struct Bench {
    lab: Lab,
    tree: PathBuf,
    out: PathBuf,
    files: usize,
    changed_dir: String,
    changes: usize,
    master: PathBuf,
    touch: PathBuf,
    origin_url: String,
    origin: CpuMeter,
    origin_log: PathBuf,
    /// Per hub: its daemon's URL, meter, log, and its downstream registry.
    hubs: Vec<(String, CpuMeter, PathBuf, PathBuf)>,
    flat_registry: PathBuf,
    tiered_registry: PathBuf,
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tiers-bench TREE FILES OUTDIR ROUNDS CHANGED_DIR CHANGES";
    let [tree, files, out, rounds, changed_dir, changes] = args.as_slice() else {
        return Err(usage.into());
    };
    let num = |s: &str| s.parse::<usize>().map_err(|_| usage.to_owned());
    let (files, rounds, changes) = (num(files)?, num(rounds)?, num(changes)?);
    let tree = PathBuf::from(tree)
        .canonicalize()
        .map_err(|e| format!("{tree}: {e}"))?;
    let out = PathBuf::from(out);
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let handler = sibling_binary("mirrorpush-handler").map_err(|e| e.to_string())?;
    // 12 sshd listeners and their sessions in this process tree.
    mirrorpush::rlimit::raise_open_files(u64::MAX);
    let mut lab = Lab::start(LabOptions {
        mirrors: MIRRORS,
        handler_bin: handler.clone(),
        mode: "wait".into(),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the lab: {e}"))?;
    let port = lab
        .serve("origin", &[("fedora".into(), tree.clone())])
        .map_err(|e| format!("cannot serve the tree: {e}"))?;
    let origin = CpuMeter::new(
        "origin",
        lab.daemon_pid(port).ok_or("no pid for the origin")?,
    );
    let mut hubs = Vec::new();
    for h in 0..HUBS {
        let name = format!("hub{}", h + 1);
        let dest = lab.mirrors[h].dest("fedora");
        let port = lab
            .serve(&name, &[("fedora".into(), dest)])
            .map_err(|e| format!("cannot serve {name}'s tree: {e}"))?;
        let meter = CpuMeter::new(&name, lab.daemon_pid(port).ok_or("no pid for a hub")?);
        let leaves: Vec<usize> = (0..HUBS).map(|k| HUBS + h * HUBS + k).collect();
        let registry = lab
            .downstream_registry(h, &leaves, "10m")
            .map_err(|e| e.to_string())?;
        hubs.push((
            format!("rsync://127.0.0.1:{port}/fedora/"),
            meter,
            lab.root.join(&name).join("rsyncd.log"),
            registry,
        ));
    }
    let flat_registry = lab.root.join("master-flat.toml");
    let tiered_registry = lab.root.join("master-tiered.toml");
    let text = lab
        .registry_toml("")
        .replace("timeout = \"2m\"", "timeout = \"10m\"");
    fs::write(&flat_registry, &text).map_err(|e| e.to_string())?;
    let tiered: String = text
        .split("\n[[mirror]]")
        .take(1 + HUBS)
        .collect::<Vec<_>>()
        .join("\n[[mirror]]");
    fs::write(&tiered_registry, tiered).map_err(|e| e.to_string())?;

    let b = Bench {
        origin_url: format!("rsync://127.0.0.1:{port}/fedora/"),
        origin_log: lab.root.join("origin").join("rsyncd.log"),
        master: sibling_binary("mirrorpush").map_err(|e| e.to_string())?,
        touch: bench::example_binary("filelist-tree").map_err(|e| e.to_string())?,
        lab,
        tree,
        out,
        files,
        changed_dir: changed_dir.clone(),
        changes,
        origin,
        hubs,
        flat_registry,
        tiered_registry,
    };
    b.note(&format!(
        "tree {} ({files} files), origin {}, upstream CPU: {}, lab {} ({} mirrors, account {}), load {}",
        b.tree.display(),
        b.origin_url,
        b.origin.method(),
        b.lab.root.display(),
        MIRRORS,
        b.lab.user,
        bench::loadavg()
    ));

    // File lists off: the origin publishes none.
    let _ = fs::remove_file(b.tree.join(LIST));
    b.configure(Topology::Flat, false)?;
    b.note("==> first copies (flat push, untimed)");
    b.round(Topology::Flat, false, "initial")?;
    for filelist in [false, true] {
        if filelist {
            b.generate_list(&[])?;
        }
        for topo in [Topology::Flat, Topology::Tiered] {
            b.configure(topo, filelist)?;
            b.note(&format!(
                "==> {} with file lists {}",
                topo.name(),
                on_off(filelist)
            ));
            b.round(topo, filelist, "warmup")?;
            for r in 1..=rounds {
                b.round(topo, filelist, &r.to_string())?;
            }
            b.round(topo, filelist, "null")?;
            b.check_all(&format!("{} file lists {}", topo.name(), on_off(filelist)))?;
        }
    }
    b.note(&format!("load at the end: {}", bench::loadavg()));
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl Bench {
    fn note(&self, text: &str) {
        eprintln!("{text}");
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("tiers.log"))
        {
            let _ = writeln!(f, "{text}");
        }
    }

    fn append(&self, file: &str, line: &str) -> Result<(), String> {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join(file))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| e.to_string())
    }

    /// Writes every mirror's handler.toml for `topo`, file lists on or off.
    fn configure(&self, topo: Topology, filelist: bool) -> Result<(), String> {
        let fl = if filelist {
            format!("filelist = {LIST:?}\n")
        } else {
            String::new()
        };
        for i in 0..MIRRORS {
            let (source, extra) = match topo {
                Topology::Flat => (self.origin_url.clone(), fl.clone()),
                Topology::Tiered if i < HUBS => (
                    self.origin_url.clone(),
                    format!(
                        "{fl}downstream = {:?}\n",
                        self.hubs[i].3.display().to_string()
                    ),
                ),
                Topology::Tiered => (self.hubs[(i - HUBS) / HUBS].0.clone(), fl.clone()),
            };
            let text = self
                .lab
                .handler_toml(i, &extra)
                .replace(&self.lab.rsync_url("fedora"), &source);
            self.lab
                .write_handler_config(i, &text)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The origin's list: a full scan (`changed` empty) or a rescan of those dirs.
    fn generate_list(&self, changed: &[&str]) -> Result<(), String> {
        let mut g = Command::new(&self.master);
        g.args(["filelist", "--checksum", "repomd.xml", "--output"])
            .arg(self.tree.join(LIST));
        for d in changed {
            g.arg("--changed").arg(d);
        }
        g.arg(&self.tree);
        bench::run(g).map_err(|e| e.to_string())
    }

    /// A publish upstream: the changes, a new marker, the list when file lists are on.
    fn publish(&self, filelist: bool, stamp: &str) -> Result<(), String> {
        let mut t = Command::new(&self.touch);
        t.arg("--touch")
            .arg(self.tree.join(&self.changed_dir))
            .arg(self.changes.to_string());
        bench::run(t).map_err(|e| e.to_string())?;
        let marker = self.tree.join(MARKER);
        fs::create_dir_all(marker.parent().unwrap_or(&self.tree)).map_err(|e| e.to_string())?;
        fs::write(&marker, stamp).map_err(|e| e.to_string())?;
        if filelist {
            self.generate_list(&[&self.changed_dir, "marker"])?;
        }
        Ok(())
    }

    /// One round (see [`Bench::measure_round`]); on failure every mirror's state and log is
    /// copied to `OUTDIR/failed-<topology>-<run>/` before the lab goes.
    fn round(&self, topo: Topology, filelist: bool, run: &str) -> Result<(), String> {
        let r = self.measure_round(topo, filelist, run);
        if let Err(e) = &r {
            let dir = self
                .out
                .join(format!("failed-{}-{}-{run}", topo.name(), on_off(filelist)));
            self.note(&format!("{e}\nstate copied to {}", dir.display()));
            self.dump_state(&dir);
        }
        r
    }

    /// Copies what tells a run's story: each mirror's handler.toml, handler.log, sshd log and
    /// module state files, the daemons' logs, and the processes of the lab still running.
    fn dump_state(&self, dir: &Path) {
        let _ = fs::create_dir_all(dir);
        for m in &self.lab.mirrors {
            let to = dir.join(&m.name);
            let _ = fs::create_dir_all(&to);
            let module = m.state_dir.join("fedora");
            let files = [
                m.handler_config.clone(),
                m.sshd_log.clone(),
                m.state_dir.join("handler.log"),
                module.join("status.json"),
                module.join("downstream.json"),
                module.join("rsync.log"),
                module.join("pending"),
                module.join("inflight"),
                module.join("results"),
            ];
            for f in files {
                if let Some(name) = f.file_name() {
                    let _ = fs::copy(&f, to.join(name));
                }
            }
            if let Ok(entries) = fs::read_dir(&module) {
                let names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                let _ = fs::write(to.join("state-files"), names.join("\n"));
            }
        }
        let _ = fs::copy(&self.origin_log, dir.join("origin-rsyncd.log"));
        for (h, hub) in self.hubs.iter().enumerate() {
            let _ = fs::copy(&hub.2, dir.join(format!("hub{}-rsyncd.log", h + 1)));
        }
        if let Ok(out) = Command::new("ps")
            .args(["-eo", "pid,ppid,etime,stat,args"])
            .output()
        {
            let _ = fs::write(dir.join("ps.txt"), out.stdout);
        }
    }

    /// One round: a publish (not for `null`), one push, the measurements.
    fn measure_round(&self, topo: Topology, filelist: bool, run: &str) -> Result<(), String> {
        self.wait_quiet()?;
        let null = run == "null";
        let stamp = format!(
            "{} {} {run} {}\n",
            topo.name(),
            on_off(filelist),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        if !null {
            self.publish(filelist, &stamp)?;
        }
        let runs_before = self.mirror_runs();
        let downstream_before = self.downstream_starts();
        let origin_served = bench::served(&self.origin_log).len();
        let hubs_served: usize = self.hubs.iter().map(|h| bench::served(&h.2).len()).sum();
        let origin_cpu = self.origin.seconds();
        let hubs_cpu: f64 = self.hubs.iter().map(|h| h.1.seconds()).sum();
        let registry = match topo {
            Topology::Flat => &self.flat_registry,
            Topology::Tiered => &self.tiered_registry,
        };
        let push_out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("push.out"))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut push = Command::new(&self.master)
            .arg("--registry")
            .arg(registry)
            .args(["push", "fedora"])
            .stdin(Stdio::null())
            .stdout(push_out.try_clone().map_err(|e| e.to_string())?)
            .stderr(push_out)
            .spawn()
            .map_err(|e| format!("cannot run mirrorpush: {e}"))?;
        let mut arrived: Vec<Option<f64>> = vec![None; MIRRORS];
        let mut push_done: Option<(f64, i32)> = None;
        loop {
            let now = start.elapsed();
            if !null {
                for (i, a) in arrived.iter_mut().enumerate() {
                    if a.is_none()
                        && fs::read_to_string(self.lab.mirrors[i].dest("fedora").join(MARKER))
                            .is_ok_and(|s| s == stamp)
                    {
                        *a = Some(now.as_secs_f64());
                    }
                }
            }
            if push_done.is_none() {
                if let Some(status) = push.try_wait().map_err(|e| e.to_string())? {
                    push_done = Some((now.as_secs_f64(), status.code().unwrap_or(-1)));
                }
            }
            let all = null || arrived.iter().all(Option::is_some);
            if all && push_done.is_some() {
                break;
            }
            if now > ROUND_TIMEOUT {
                let _ = push.kill();
                let _ = push.wait();
                return Err(format!(
                    "{} {run}: not every mirror has the marker after {ROUND_TIMEOUT:?}: {arrived:?}",
                    topo.name()
                ));
            }
            sleep(Duration::from_millis(10));
        }
        self.wait_quiet()?;
        let origin_cpu = self.origin.seconds() - origin_cpu;
        let hubs_cpu = self.hubs.iter().map(|h| h.1.seconds()).sum::<f64>() - hubs_cpu;
        let origin_served = bench::served(&self.origin_log).len() - origin_served;
        let hubs_served = self
            .hubs
            .iter()
            .map(|h| bench::served(&h.2).len())
            .sum::<usize>()
            - hubs_served;
        let mirror_runs = self.mirror_runs() - runs_before;
        let downstream = self
            .downstream_starts()
            .iter()
            .zip(&downstream_before)
            .filter(|(a, b)| a != b)
            .count();
        let (push_s, push_rc) = push_done.unwrap_or((f64::NAN, -1));
        let times: Vec<f64> = arrived.iter().flatten().copied().collect();
        let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |t| format!("{t:.6}"));
        let last = times.iter().copied().reduce(f64::max);
        let first = times.iter().copied().reduce(f64::min);
        let line = format!(
            "{} {} {run} {} {} {} {push_s:.6} {push_rc} {origin_cpu:.6} {hubs_cpu:.6} {origin_served} {hubs_served} {mirror_runs} {downstream}\n",
            topo.name(),
            on_off(filelist),
            self.files,
            fmt(last),
            fmt(first),
        );
        if run != "initial" {
            self.append("tiers.tsv", &line)?;
        }
        let mut arrivals = format!("{} {} {run}", topo.name(), on_off(filelist));
        for a in &arrived {
            let _ = write!(arrivals, " {}", fmt(*a));
        }
        arrivals.push('\n');
        self.append("arrivals.tsv", &arrivals)?;
        let kinds: Vec<String> = (0..MIRRORS)
            .map(|i| {
                let r = bench::last_run(&self.lab.mirrors[i].state_dir, "fedora");
                format!(
                    "{}:{}+{}-{}",
                    i + 1,
                    r["runs"][0]["kind"].as_str().unwrap_or("?"),
                    r["transferred"],
                    r["deleted"]
                )
            })
            .collect();
        self.note(&format!(
            "{}    last runs: {}",
            line.trim_end(),
            kinds.join(" ")
        ));
        if push_rc != 0 {
            return Err(format!(
                "{} {run}: mirrorpush push exited {push_rc}: see push.out",
                topo.name()
            ));
        }
        if !null {
            for i in 0..MIRRORS {
                let sub = &self.changed_dir;
                if let Some(d) = bench::tree_difference(
                    &self.tree.join(sub),
                    &self.lab.mirrors[i].dest("fedora").join(sub),
                    &[],
                ) {
                    return Err(format!(
                        "{} {run}: mirror {} differs in {sub}: {d}",
                        topo.name(),
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every mirror's whole tree equals the origin's.
    fn check_all(&self, when: &str) -> Result<(), String> {
        for i in 0..MIRRORS {
            if let Some(d) =
                bench::tree_difference(&self.tree, &self.lab.mirrors[i].dest("fedora"), &[])
            {
                return Err(format!("after {when}: mirror {} differs: {d}", i + 1));
            }
        }
        self.note(&format!(
            "after {when}: all {MIRRORS} mirrors equal the origin"
        ));
        Ok(())
    }

    /// Runs the mirrors' handlers ended so far (`verdict=run-` lines of their logs).
    fn mirror_runs(&self) -> usize {
        self.lab
            .mirrors
            .iter()
            .map(|m| {
                fs::read_to_string(m.state_dir.join("handler.log"))
                    .unwrap_or_default()
                    .matches("verdict=run-")
                    .count()
            })
            .sum()
    }

    /// Each hub's last downstream push (`downstream.json`), as text.
    fn downstream_starts(&self) -> Vec<String> {
        (0..HUBS)
            .map(|h| {
                fs::read_to_string(
                    self.lab.mirrors[h]
                        .state_dir
                        .join("fedora")
                        .join("downstream.json"),
                )
                .unwrap_or_default()
            })
            .collect()
    }

    /// Nothing of the lab runs: no runner, no downstream pusher, nothing pending or in flight,
    /// no daemon child; checked twice 300 ms apart (a hub's pusher starts after its runner).
    fn wait_quiet(&self) -> Result<(), String> {
        let deadline = Instant::now() + ROUND_TIMEOUT;
        let mut calm = 0;
        while calm < 2 {
            if Instant::now() > deadline {
                return Err("the lab did not become quiet".into());
            }
            if self.busy() {
                calm = 0;
                sleep(Duration::from_millis(20));
            } else {
                calm += 1;
                if calm < 2 {
                    sleep(Duration::from_millis(300));
                }
            }
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        let root = self.lab.root.as_os_str().as_encoded_bytes();
        let procs = fs::read_dir("/proc").is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let has = |w: &[u8]| cmd.windows(w.len()).any(|x| x == w);
                let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'));
                !zombie && has(root) && (has(b"__run") || has(b"__downstream"))
            })
        });
        let queued = self.lab.mirrors.iter().any(|m| {
            let s = m.state_dir.join("fedora");
            fs::metadata(s.join("pending")).is_ok_and(|p| p.len() > 0)
                || s.join("inflight").exists()
        });
        let serving = !self.origin.wait_idle(Duration::ZERO)
            || self.hubs.iter().any(|h| !h.1.wait_idle(Duration::ZERO));
        procs || queued || serving
    }
}
