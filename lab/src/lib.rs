//! The test lab (development only, never shipped): a real `rsync --daemon` upstream and N real OpenSSH `sshd` mirrors on 127.0.0.1,
//! each with its own host key and an authorized_keys line that forces `mirrorpush-handler`.
//!
//! One implementation serves the integration tests, the demo and the benchmarks. Everything lives
//! in one temp dir; every process started is stopped by pid when the [`Lab`] is dropped, together
//! with any process (detached handler runner, rsync) whose command line names the lab dir.
//!
//! When run as root, the mirrors log in as a dedicated unprivileged account, exactly as the README
//! tells a mirror admin to set one up (shell `/bin/sh`, password `*`, dest and state owned by it):
//! the lab creates one account per lab (`mpl-<pid>-<n>`, HOME under the lab dir) and removes it at
//! the end, together with any account a killed test run left behind. Each sshd (and so every
//! handler it runs) starts in a private mount namespace with the system directories bind-mounted
//! read-only: a handler bug fed hostile input in a test cannot damage the machine. Without root
//! the lab logs in as the current user.
//!
//! [`bench`] holds what the sync benchmarks share (rusage of a daemon's clients, tree comparison).
//! [`broker`] starts a RabbitMQ node of the lab's own for the bus transport.
//! [`web`] starts Debian's nginx serving mirrors' public trees, for the propagation tests.

pub mod bench;
pub mod broker;
pub mod web;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SSHD: &str = "/usr/sbin/sshd";
/// System directories made read-only for the handlers when the lab runs as root.
const READ_ONLY_DIRS: &[&str] = &[
    "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/opt",
    "/srv", "/home", "/root", "/var", "/work",
];
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lab accounts are named `mpl-<pid of the test process>-<n>`.
const ACCOUNT_PREFIX: &str = "mpl-";
static ACCOUNTS_MADE: AtomicU32 = AtomicU32::new(0);

/// What to build.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub mirrors: usize,
    /// Modules served upstream and configured on every mirror.
    pub modules: Vec<String>,
    /// Absolute path of the `mirrorpush-handler` binary that each sshd forces.
    pub handler_bin: PathBuf,
    /// `mode` of every module in the mirrors' handler.toml.
    pub mode: String,
    /// Run each sshd in a private mount namespace with read-only system dirs (root only).
    pub isolate: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            mirrors: 1,
            modules: vec!["fedora".into()],
            handler_bin: PathBuf::new(),
            mode: "detach".into(),
            isolate: true,
        }
    }
}

/// One mirror: an sshd on its own port forcing the handler with its own config.
#[derive(Debug)]
pub struct LabMirror {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    pub handler_config: PathBuf,
    pub state_dir: PathBuf,
    pub sshd_log: PathBuf,
    pub host_key_pub: String,
    pub authorized_keys: PathBuf,
}

impl LabMirror {
    /// Where this mirror keeps `module`.
    pub fn dest(&self, module: &str) -> PathBuf {
        self.dir.join("srv").join(module)
    }
}

/// A running lab. Dropping it stops every process and removes the temp dir
/// (kept when `MIRRORPUSH_LAB_KEEP` is set, for debugging).
pub struct Lab {
    pub root: PathBuf,
    /// The account the mirrors' sshd logs in as (and the registry's `user`).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The account's HOME (`<root>/home`), owned by it.
    pub home: PathBuf,
    /// The lab created the account and removes it when dropped.
    created_account: bool,
    /// Client private key (its public half is in every mirror's authorized_keys).
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// A ready `mirrors.toml` naming every mirror.
    pub registry: PathBuf,
    pub rsync_port: u16,
    pub rsync_bin: PathBuf,
    pub mirrors: Vec<LabMirror>,
    opts: LabOptions,
    children: Vec<Child>,
    /// (port, pid) of every `rsync --daemon` the lab started.
    daemons: Vec<(u16, u32)>,
}

impl Lab {
    pub fn start(opts: LabOptions) -> io::Result<Lab> {
        if !opts.handler_bin.is_absolute() {
            return Err(other(format!(
                "handler_bin must be absolute: {}",
                opts.handler_bin.display()
            )));
        }
        for tool in [SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
            if !Path::new(tool).exists() {
                return Err(other(format!("{tool} missing: install openssh-server")));
            }
        }
        let rsync_bin = find_in_path("rsync").ok_or_else(|| other("rsync missing".into()))?;
        let root = make_temp_root()?;
        let home = root.join("home");
        fs::create_dir(&home)?;
        let (user, created_account) = if is_root() {
            remove_stale_accounts();
            match create_account(&home) {
                Ok(name) => (name, true),
                Err(e) => {
                    let _ = fs::remove_dir_all(&root);
                    return Err(e);
                }
            }
        } else {
            (current_user()?, false)
        };
        let (uid, gid) = match account_ids(&user) {
            Ok(ids) => ids,
            Err(e) => {
                if created_account {
                    remove_account(&user);
                }
                let _ = fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let mut lab = Lab {
            identity: root.join("client_key"),
            known_hosts: root.join("known_hosts"),
            registry: root.join("mirrors.toml"),
            root,
            user,
            uid,
            gid,
            home,
            created_account,
            rsync_port: 0,
            rsync_bin,
            mirrors: Vec::new(),
            opts,
            children: Vec::new(),
            daemons: Vec::new(),
        };
        // From here on, Drop cleans up whatever was started if a step fails.
        lab.give_to_account(&lab.home)?;
        keygen(&lab.identity)?;
        lab.start_upstream()?;
        let client_pub = fs::read_to_string(lab.identity.with_extension("pub"))?;
        for i in 0..lab.opts.mirrors {
            lab.start_mirror(i, client_pub.trim())?;
        }
        lab.write_known_hosts()?;
        fs::write(&lab.registry, lab.registry_toml(""))?;
        Ok(lab)
    }

    /// The directory served upstream as `module`: write files here and they are served at once.
    pub fn upstream_dir(&self, module: &str) -> PathBuf {
        self.root.join("upstream").join(module)
    }

    pub fn rsync_url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{}/", self.rsync_port, module)
    }

    /// The default handler.toml of mirror `i`, with `extra_module_keys` added to every module table.
    pub fn handler_toml(&self, i: usize, extra_module_keys: &str) -> String {
        let m = &self.mirrors[i];
        let mut s = format!(
            "state_dir = {:?}\nrsync = {:?}\n",
            m.state_dir.display().to_string(),
            self.rsync_bin.display().to_string()
        );
        for module in &self.opts.modules {
            let _ = write!(
                s,
                "\n[modules.{module}]\nsource = {:?}\ndest = {:?}\nmode = {:?}\n{extra_module_keys}\n",
                self.rsync_url(module),
                m.dest(module).display().to_string(),
                self.opts.mode,
            );
        }
        s
    }

    /// Rewrites mirror `i`'s handler.toml.
    pub fn write_handler_config(&self, i: usize, text: &str) -> io::Result<()> {
        fs::write(&self.mirrors[i].handler_config, text)
    }

    /// A `mirrors.toml` naming every mirror, with `extra_mirror_keys` added to every `[[mirror]]`.
    pub fn registry_toml(&self, extra_mirror_keys: &str) -> String {
        let mut s = format!(
            "[defaults]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\nconnect_timeout = \"10s\"\ntimeout = \"2m\"\nhistory = {:?}\n",
            self.user,
            self.identity.display().to_string(),
            self.known_hosts.display().to_string(),
            self.history().display().to_string()
        );
        for m in &self.mirrors {
            let _ = write!(
                s,
                "\n[[mirror]]\nname = {:?}\nhost = \"127.0.0.1\"\nport = {}\nmodules = {:?}\n{extra_mirror_keys}\n",
                m.name, m.port, self.opts.modules
            );
        }
        s
    }

    /// The master's push history for the lab's registry (`[defaults] history`).
    pub fn history(&self) -> PathBuf {
        self.root.join("history.db")
    }

    /// The real OpenSSH client, set up to reach mirror `i` with the lab key and strict host keys.
    pub fn ssh(&self, i: usize, remote_command: &str) -> Command {
        self.ssh_raw(i, remote_command.as_bytes())
    }

    /// As [`Lab::ssh`], for a command that is not UTF-8 (it is sent byte for byte).
    pub fn ssh_raw(&self, i: usize, remote_command: &[u8]) -> Command {
        let mut cmd = Command::new("/usr/bin/ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(&self.identity)
            .arg("-p")
            .arg(self.mirrors[i].port.to_string())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("--")
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(OsStr::from_bytes(remote_command))
            .stdin(Stdio::null());
        cmd
    }

    /// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// True when mirror `i`'s copy of `module` has the same files with the same contents as upstream.
    pub fn in_sync(&self, i: usize, module: &str) -> bool {
        trees_equal(&self.upstream_dir(module), &self.mirrors[i].dest(module))
    }

    /// As [`Lab::in_sync`], leaving out the mirror's own files (trace files) under `own`.
    pub fn in_sync_except(&self, i: usize, module: &str, own: &Path) -> bool {
        match (
            list_tree(&self.upstream_dir(module)),
            list_tree(&self.mirrors[i].dest(module)),
        ) {
            (Ok(up), Ok(mut mirror)) => {
                // The own files, and the dirs made to hold them, unless upstream has them too.
                let mine = |p: &Path| p.starts_with(own) || own.starts_with(p);
                mirror.retain(|(p, _)| !mine(p) || up.iter().any(|(q, _)| q == p));
                up == mirror
            }
            _ => false,
        }
    }

    /// A hub's push set-up: a key pair, known_hosts and a registry that mirror `from` pushes
    /// mirrors `to` with (its `downstream`), all readable by the lab account, with `timeout`
    /// for every mirror; each target's authorized_keys gains the key, forcing the handler and
    /// labelled with `from`'s name. Returns the registry's path.
    pub fn downstream_registry(
        &self,
        from: usize,
        to: &[usize],
        timeout: &str,
    ) -> io::Result<PathBuf> {
        let dir = self.root.join(format!("{}-push", self.mirrors[from].name));
        self.create_dir_for_account(&dir)?;
        let key = dir.join("id_ed25519");
        keygen(&key)?;
        self.give_to_account(&key)?;
        let public = fs::read_to_string(key.with_extension("pub"))?;
        let known_hosts = dir.join("known_hosts");
        fs::copy(&self.known_hosts, &known_hosts)?;
        let mut registry = format!(
            "[defaults]\nuser = {:?}\nidentity = {:?}\nknown_hosts = {:?}\ntimeout = {timeout:?}\nhistory = {:?}\n",
            self.user,
            key.display().to_string(),
            known_hosts.display().to_string(),
            dir.join("history.db").display().to_string()
        );
        for &i in to {
            let m = &self.mirrors[i];
            let _ = write!(
                registry,
                "\n[[mirror]]\nname = {:?}\nhost = \"127.0.0.1\"\nport = {}\nmodules = {:?}\n",
                m.name, m.port, self.opts.modules
            );
            let mut keys = fs::read_to_string(&m.authorized_keys)?;
            let _ = writeln!(
                keys,
                "restrict,command=\"{} --config {} --key {}\" {}",
                self.opts.handler_bin.display(),
                m.handler_config.display(),
                self.mirrors[from].name,
                public.trim()
            );
            fs::write(&m.authorized_keys, keys)?;
        }
        let path = dir.join("downstream.toml");
        fs::write(&path, registry)?;
        Ok(path)
    }

    /// `program` set up to run as the lab account (uid, gid, no supplementary groups, HOME), as
    /// a mirror admin runs the handler locally: `runuser -u mirrorpush -- mirrorpush-handler ...`.
    pub fn command_as_account(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user);
        if is_root() {
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd
    }

    /// Makes `path` (a file or directory, not recursively) belong to the lab account.
    pub fn give_to_account(&self, path: &Path) -> io::Result<()> {
        if is_root() {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))?;
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents, each owned by the lab account.
    pub fn create_dir_for_account(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut p = dir;
        while !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for d in missing.iter().rev() {
            fs::create_dir(d)?;
            self.give_to_account(d)?;
        }
        Ok(())
    }

    fn start_upstream(&mut self) -> io::Result<()> {
        let mut modules = Vec::new();
        for module in &self.opts.modules {
            let path = self.upstream_dir(module);
            seed_tree(&path)?;
            modules.push((module.clone(), path));
        }
        self.rsync_port = self.start_daemon("upstream", &modules)?;
        Ok(())
    }

    /// The origin daemon's log: one `rsync on <module>/ from ...` line per client run.
    pub fn upstream_log(&self) -> PathBuf {
        self.root.join("upstream").join("rsyncd.log")
    }

    /// Starts another `rsync --daemon` serving `modules` (name, path), e.g. a hub's tree for
    /// its leaves; returns its port. Its log is `<root>/<name>/rsyncd.log`.
    pub fn serve(&mut self, name: &str, modules: &[(String, PathBuf)]) -> io::Result<u16> {
        self.start_daemon(name, modules)
    }

    /// The pid of the `rsync --daemon` the lab started on `port` (the upstream's is
    /// `rsync_port`); the daemon forks one child per client connection, so its children's CPU
    /// is what the clients cost it.
    pub fn daemon_pid(&self, port: u16) -> Option<u32> {
        self.daemons
            .iter()
            .find_map(|&(p, pid)| (p == port).then_some(pid))
    }

    fn start_daemon(&mut self, name: &str, modules: &[(String, PathBuf)]) -> io::Result<u16> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir)?;
        let mut conf = String::from("use chroot = no\nread only = yes\nnumbers = yes\n");
        if is_root() {
            // As root rsyncd would drop to nobody, who cannot enter the lab's private temp dir.
            conf.push_str("uid = 0\ngid = 0\n");
        }
        let _ = writeln!(conf, "log file = {}", dir.join("rsyncd.log").display());
        for (module, path) in modules {
            let _ = writeln!(conf, "\n[{module}]\npath = {}", path.display());
        }
        let conf_path = dir.join("rsyncd.conf");
        fs::write(&conf_path, conf)?;
        let rsync = self.rsync_bin.clone();
        let port = self.spawn_listener("rsync --daemon", |port| {
            let mut cmd = Command::new(&rsync);
            cmd.arg("--daemon")
                .arg("--no-detach")
                .arg(format!("--config={}", conf_path.display()))
                .arg(format!("--port={port}"))
                .arg("--address=127.0.0.1");
            cmd
        })?;
        // spawn_listener keeps the child it returns a port for last.
        if let Some(child) = self.children.last() {
            self.daemons.push((port, child.id()));
        }
        Ok(port)
    }

    fn start_mirror(&mut self, i: usize, client_pub: &str) -> io::Result<()> {
        let name = format!("mirror{}", i + 1);
        let dir = self.root.join(&name);
        fs::create_dir_all(&dir)?;
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key)?;
        let mirror = LabMirror {
            host_key_pub: fs::read_to_string(host_key.with_extension("pub"))?
                .trim()
                .to_owned(),
            handler_config: dir.join("handler.toml"),
            state_dir: dir.join("state"),
            sshd_log: dir.join("sshd.log"),
            authorized_keys: dir.join("authorized_keys"),
            port: 0,
            name,
            dir,
        };
        // What a sync writes belongs to the account, as the README's set-up makes it.
        self.create_dir_for_account(&mirror.state_dir)?;
        fs::set_permissions(&mirror.state_dir, fs::Permissions::from_mode(0o750))?;
        for module in &self.opts.modules {
            self.create_dir_for_account(&mirror.dest(module))?;
        }
        fs::write(
            &mirror.authorized_keys,
            format!(
                "restrict,command=\"{} --config {} --key lab\" {client_pub}\n",
                self.opts.handler_bin.display(),
                mirror.handler_config.display()
            ),
        )?;
        let sshd_config = mirror.dir.join("sshd_config");
        let log = mirror.sshd_log.clone();
        let isolate = self.opts.isolate && is_root() && Path::new("/usr/bin/unshare").exists();
        let root = self.root.clone();
        let (ak, hk) = (mirror.authorized_keys.clone(), host_key.clone());
        self.mirrors.push(mirror);
        fs::write(
            self.mirrors[i].handler_config.clone(),
            self.handler_toml(i, ""),
        )?;
        if is_root() {
            // sshd's privilege-separation dir; Debian creates it only when the service starts.
            fs::create_dir_all("/run/sshd")?;
        }
        let user = self.user.clone();
        let port = self.spawn_listener("sshd", |port| {
            let _ = fs::write(&sshd_config, sshd_config_text(port, &hk, &ak, &user));
            if isolate {
                isolated_sshd(&root, &sshd_config, &log)
            } else {
                let mut cmd = Command::new(SSHD);
                cmd.arg("-D")
                    .arg("-f")
                    .arg(&sshd_config)
                    .arg("-E")
                    .arg(&log);
                cmd
            }
        })?;
        self.mirrors[i].port = port;
        Ok(())
    }

    /// Starts a server on a free port, retrying with another port if it loses a race for it.
    fn spawn_listener(
        &mut self,
        what: &str,
        mut command: impl FnMut(u16) -> Command,
    ) -> io::Result<u16> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = command(port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| other(format!("cannot start {what}: {e}")))?;
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                if TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    self.children.push(child);
                    return Ok(port);
                }
                if let Some(status) = child.try_wait()? {
                    last_error = format!("{what} exited with {status} on port {port}");
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("{what} did not listen on port {port}");
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
        Err(other(last_error))
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        let mut s = String::new();
        for m in &self.mirrors {
            let _ = writeln!(
                s,
                "[127.0.0.1]:{} {}",
                m.port,
                key_without_comment(&m.host_key_pub)
            );
        }
        fs::write(&self.known_hosts, s)
    }

    /// Every process still running whose command line names the lab dir: detached handler
    /// runners and their rsyncs, which outlive the sshd session that started them.
    fn stray_pids(&self) -> Vec<i32> {
        let needle = self.root.as_os_str().as_bytes();
        let me = std::process::id() as i32;
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Two passes: a runner killed between passes cannot start new rsyncs afterwards.
        for _ in 0..2 {
            let mut pids = self.stray_pids();
            if self.created_account {
                pids.extend(pids_of_uid(self.uid));
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from /proc and a valid signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            sleep(Duration::from_millis(50));
        }
        if self.created_account {
            remove_account(&self.user);
        }
        if std::env::var_os("MIRRORPUSH_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Creates this lab's account: a system account with shell `/bin/sh` and password `*`, as the
/// README sets up `mirrorpush`. Retried: parallel tests may hold the passwd lock for a moment.
fn create_account(home: &Path) -> io::Result<String> {
    let n = ACCOUNTS_MADE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{ACCOUNT_PREFIX}{}-{n}", std::process::id());
    let mut last = String::new();
    for attempt in 0..10 {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/bin/sh",
            ])
            .args([
                "--password",
                "*",
                "--comment",
                "mirrorpush lab",
                "--home-dir",
            ])
            .arg(home)
            .arg(&name)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| other(format!("cannot run useradd: {e}")))?;
        if out.status.success() {
            return Ok(name);
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        sleep(Duration::from_millis(100 * (attempt + 1)));
    }
    Err(other(format!("useradd {name} failed: {last}")))
}

fn remove_account(name: &str) {
    for attempt in 0..10 {
        let ok = Command::new("userdel")
            .arg(name)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        sleep(Duration::from_millis(100 * (attempt + 1)));
    }
}

/// Removes lab accounts whose test process is gone (a run killed before its labs were dropped).
fn remove_stale_accounts() {
    let Ok(passwd) = fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or("");
        let Some(rest) = name.strip_prefix(ACCOUNT_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                if let Ok((uid, _)) = account_ids(name) {
                    for p in pids_of_uid(uid) {
                        // SAFETY: kill(2) with a pid read from /proc.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                remove_account(name);
            }
        }
    }
}

fn account_ids(name: &str) -> io::Result<(u32, u32)> {
    let id = |flag: &str| -> io::Result<u32> {
        let out = Command::new("id").arg(flag).arg(name).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| other(format!("cannot tell the ids of account {name}")))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Every process whose real uid is `uid`.
fn pids_of_uid(uid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                    == Some(uid)
            })
        })
        .collect()
}

/// The `Match User mirrorpush` block of the README's "Setting up a mirror", verbatim: the lab's
/// mirrors are set up exactly as the README tells a mirror admin.
const README: &str = include_str!("../../README.md");

/// The README's Match block for `user`, with the lab's authorized_keys file.
fn readme_match_block(user: &str, authorized_keys: &Path) -> io::Result<String> {
    let start = README
        .find("   Match User mirrorpush\n")
        .ok_or_else(|| other("README.md has no `Match User mirrorpush` block".into()))?;
    let block = &README[start..];
    let end = block
        .find("   ```")
        .ok_or_else(|| other("README.md's Match block is not closed".into()))?;
    let mut out = String::new();
    for line in block[..end].lines() {
        let line = line.strip_prefix("   ").unwrap_or(line);
        let line = match line.trim_start() {
            l if l.starts_with("AuthorizedKeysFile ") => {
                format!("    AuthorizedKeysFile {}", authorized_keys.display())
            }
            _ if line.starts_with("Match User ") => format!("Match User {user}"),
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

fn sshd_config_text(port: u16, host_key: &Path, authorized_keys: &Path, user: &str) -> String {
    let root_login = if user == "root" {
        "forced-commands-only"
    } else {
        "no"
    };
    let block = readme_match_block(user, authorized_keys).unwrap_or_else(|e| {
        // A README without the block is a bug the lab must show, not hide.
        format!(
            "# {e}\nMatch User {user}\n    AuthorizedKeysFile {}\n",
            authorized_keys.display()
        )
    });
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nAllowUsers {user}\n\
         PermitRootLogin {root_login}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
         LogLevel VERBOSE\nMaxStartups 1000:30:1000\nMaxSessions 10\nUseDNS no\n\
         AuthorizedKeysFile none\n\n{block}",
        host_key.display(),
    )
}

/// `sshd` in a private mount namespace with the system directories read-only. The lab dir
/// stays writable: it is bind-mounted onto itself first so that the recursive read-only
/// binds of its parents carry it along as a writable submount.
fn isolated_sshd(lab_root: &Path, sshd_config: &Path, log: &Path) -> Command {
    let mut script = String::from("set -e\n");
    let _ = writeln!(script, "mount --bind \"$1\" \"$1\"");
    for dir in READ_ONLY_DIRS {
        let _ = writeln!(
            script,
            "if [ -d {dir} ] && [ ! -L {dir} ]; then mount --rbind {dir} {dir}; mount -o remount,bind,ro {dir}; fi"
        );
    }
    let _ = writeln!(script, "exec {SSHD} -D -f \"$2\" -E \"$3\"");
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("lab-sshd")
        .arg(lab_root)
        .arg(sshd_config)
        .arg(log);
    cmd
}

/// A small tree shaped like a distribution: several top dirs so that dir pushes can be told apart.
fn seed_tree(path: &Path) -> io::Result<()> {
    let files: &[(&str, &str)] = &[
        ("README", "upstream readme\n"),
        (
            "releases/41/Everything/x86_64/os/repodata/repomd.xml",
            "<repomd rev=\"1\"/>\n",
        ),
        (
            "releases/41/Everything/x86_64/os/Packages/b/bash-5.2.rpm",
            "bash payload\n",
        ),
        (
            "updates/41/x86_64/repodata/repomd.xml",
            "<repomd rev=\"7\"/>\n",
        ),
        (
            "updates/41/x86_64/Packages/o/openssl-3.2.rpm",
            "openssl payload\n",
        ),
        (
            "development/rawhide/COMPOSE_ID",
            "Fedora-Rawhide-20261125.n.0\n",
        ),
    ];
    for (rel, content) in files {
        let file = path.join(rel);
        fs::create_dir_all(file.parent().unwrap_or(path))?;
        fs::write(file, content)?;
    }
    Ok(())
}

/// Whether any process of group `pgid` still runs (zombies do not count: they write nothing).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
        group == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

/// For a program built as a Cargo example (`target/<profile>/examples/NAME`): binary `bin` of
/// the same build, `target/<profile>/<bin>`. The demo and the benchmarks find the handler so.
pub fn sibling_binary(bin: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| other("cannot locate the build directory".into()))?;
    let path = dir.join(bin);
    if !path.exists() {
        return Err(other(format!(
            "{} missing: build with `cargo build --release --bins --examples`",
            path.display()
        )));
    }
    Ok(path)
}

/// Same relative paths, same kinds, same file contents and symlink targets.
pub fn trees_equal(a: &Path, b: &Path) -> bool {
    match (list_tree(a), list_tree(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

type TreeEntry = (PathBuf, Vec<u8>);

fn list_tree(root: &Path) -> io::Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                let target = fs::read_link(&path)?;
                out.push((rel, [b"link:", target.as_os_str().as_bytes()].concat()));
            } else if kind.is_dir() {
                out.push((rel, b"dir".to_vec()));
                stack.push(path);
            } else {
                out.push((rel, [b"file:".as_slice(), &fs::read(&path)?].concat()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// An ed25519 key pair at `path` and `path.pub`, without a passphrase.
pub fn keygen(path: &Path) -> io::Result<()> {
    let status = Command::new("/usr/bin/ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "mirrorpush-lab",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(other(format!("ssh-keygen failed for {}", path.display())));
    }
    Ok(())
}

fn key_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn make_temp_root() -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = std::env::temp_dir().canonicalize()?;
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "mirrorpush-lab-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                // Traversable by every uid: the lab's servers may run as other users.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(other("cannot create a lab temp dir".into()))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether the lab runs as root (and so with a dedicated unprivileged account).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn current_user() -> io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || name.is_empty() {
        return Err(other("cannot tell the current user name".into()));
    }
    Ok(name)
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_uses_the_readmes_match_block() {
        let b = readme_match_block("mpl-1-0", Path::new("/lab/ak")).unwrap();
        assert!(b.starts_with("Match User mpl-1-0\n"), "{b}");
        assert!(b.contains("    AuthorizedKeysFile /lab/ak\n"), "{b}");
        for key in [
            "DisableForwarding yes",
            "PermitTTY no",
            "AuthenticationMethods publickey",
        ] {
            assert!(b.contains(key), "{b}");
        }
    }
}
