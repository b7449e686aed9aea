//! The lab's message broker: Debian's `rabbitmq-server` on a loopback port, with its own data
//! dir, node name, Erlang cookie, log dir and config, and its own `epmd` on its own port, so
//! that parallel test runs (and other labs) never meet. Every process is stopped by pid.
//!
//! RabbitMQ takes seconds to boot: a test binary shares one broker through [`shared`], which
//! stops it when the test process exits; [`Broker::start`] gives one of your own.
//!
//! With [`BrokerOptions::tls`] the node also listens for AMQPS on a second loopback port, with
//! a CA and certificates made at start by the `openssl` CLI, and requires a client certificate
//! signed by that CA (`verify_peer`, `fail_if_no_peer_cert`), as Fedora's public broker does;
//! a client certificate's CN may also log in by itself (SASL EXTERNAL).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{free_port, other};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// RabbitMQ boots in 5-40 s depending on the machine's load.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const DIR_PREFIX: &str = "mirrorpush-broker-";

/// What to start.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// The broker refuses larger messages (`max_message_size`): a publisher of a larger one
    /// has its channel closed, and no consumer ever holds it.
    pub max_message_size: usize,
    /// Also listen for AMQPS (see [`Tls`]).
    pub tls: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_message_size: 1024 * 1024,
            tls: false,
        }
    }
}

/// The AMQPS side of a broker started with [`BrokerOptions::tls`]: its port, the CA that signed
/// the server's certificate (for `127.0.0.1` and `localhost`), and a client certificate with
/// its key, signed by the same CA, whose CN is [`Tls::client_cn`].
#[derive(Debug, Clone)]
pub struct Tls {
    pub port: u16,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_cn: String,
}

/// A running RabbitMQ node. Dropping it stops the node and its epmd and removes its dir
/// (kept when `MIRRORPUSH_LAB_KEEP` is set).
pub struct Broker {
    pub root: PathBuf,
    /// The AMQP port on 127.0.0.1.
    pub port: u16,
    /// The administrator (all permissions on vhost `/`).
    pub user: String,
    pub password: String,
    /// The broker's own log (stdout of the node).
    pub log: PathBuf,
    /// The AMQPS listener, when started with [`BrokerOptions::tls`].
    pub tls: Option<Tls>,
    node: String,
    epmd_port: u16,
    dist_port: u16,
    epmd: Option<Child>,
    server: Option<Child>,
}

impl Broker {
    pub fn start(opts: BrokerOptions) -> io::Result<Broker> {
        for tool in [SERVER, CTL, "/usr/bin/epmd"] {
            if !Path::new(tool).exists() {
                return Err(other(format!(
                    "{tool} missing: install rabbitmq-server (scripts/install-deps.sh)"
                )));
            }
        }
        remove_stale();
        let root = make_root()?;
        let n = root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .trim_start_matches(DIR_PREFIX)
            .replace('-', "_");
        let password = random_hex(12)?;
        let mut broker = Broker {
            port: free_port()?,
            user: "mirrorpush-lab".into(),
            password,
            log: root.join("rabbit.log"),
            tls: None,
            node: format!("mpl_{n}@localhost"),
            epmd_port: free_port()?,
            dist_port: free_port()?,
            epmd: None,
            server: None,
            root,
        };
        let home = broker.root.join("home");
        fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        fs::write(&cookie, random_hex(16)?.to_uppercase())?;
        fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400))?;
        // Names resolve from this file only: no DNS lookups on a machine without a resolver.
        fs::write(
            broker.root.join("inetrc"),
            "{lookup, [file]}.\n{host, {127,0,0,1}, [\"localhost\"]}.\n",
        )?;
        let mut conf = String::new();
        if opts.tls {
            let tls = broker.make_tls()?;
            let dir = broker.root.join("tls");
            let _ = writeln!(conf, "listeners.ssl.1 = 127.0.0.1:{}", tls.port);
            let _ = writeln!(conf, "ssl_options.cacertfile = {}", tls.ca.display());
            let _ = writeln!(
                conf,
                "ssl_options.certfile = {}",
                dir.join("server.pem").display()
            );
            let _ = writeln!(
                conf,
                "ssl_options.keyfile = {}",
                dir.join("server.key").display()
            );
            let _ = writeln!(conf, "ssl_options.verify = verify_peer");
            let _ = writeln!(conf, "ssl_options.fail_if_no_peer_cert = true");
            let _ = writeln!(
                conf,
                "auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL"
            );
            let _ = writeln!(conf, "ssl_cert_login_from = common_name");
            fs::write(
                broker.root.join("enabled_plugins"),
                "[rabbitmq_auth_mechanism_ssl].\n",
            )?;
            broker.tls = Some(tls);
        } else {
            fs::write(broker.root.join("enabled_plugins"), "[].\n")?;
        }
        let _ = writeln!(conf, "listeners.tcp.1 = 127.0.0.1:{}", broker.port);
        let _ = writeln!(conf, "loopback_users = none");
        let _ = writeln!(conf, "default_user = {}", broker.user);
        let _ = writeln!(conf, "default_pass = {}", broker.password);
        let _ = writeln!(conf, "max_message_size = {}", opts.max_message_size);
        let _ = writeln!(
            conf,
            "log.console = true\nlog.console.level = info\nlog.file = false"
        );
        fs::write(broker.root.join("rabbitmq.conf"), conf)?;
        broker.start_epmd()?;
        broker.boot()?;
        Ok(broker)
    }

    /// `amqp://<admin>:<password>@127.0.0.1:<port>/%2F`.
    pub fn url(&self) -> String {
        self.url_for(&self.user, &self.password)
    }

    /// The URL for another user of this broker.
    pub fn url_for(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@127.0.0.1:{}/%2F", self.port)
    }

    /// `amqps://<user>:<password>@127.0.0.1:<tls port>/%2F` (an empty password: SASL EXTERNAL,
    /// the user being the client certificate's CN). `None` without [`BrokerOptions::tls`].
    pub fn tls_url_for(&self, user: &str, password: &str) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "amqps://{user}:{password}@127.0.0.1:{}/%2F",
            tls.port
        ))
    }

    /// A CA, and a server and a client certificate it signs, under `<root>/tls`.
    fn make_tls(&self) -> io::Result<Tls> {
        let dir = self.root.join("tls");
        fs::create_dir_all(&dir)?;
        let (ca, ca_key) = make_ca(&dir, "ca")?;
        make_cert(
            &dir,
            "server",
            &ca,
            &ca_key,
            "localhost",
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )?;
        let client_cn = format!("mirrorpush-lab-client-{}", random_hex(4)?);
        let (client_cert, client_key) = make_cert(
            &dir,
            "client",
            &ca,
            &ca_key,
            &client_cn,
            "extendedKeyUsage = clientAuth\n",
        )?;
        Ok(Tls {
            port: free_port()?,
            ca,
            client_cert,
            client_key,
            client_cn,
        })
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Stops the node (SIGTERM, then SIGKILL after 30 s); its data dir stays, so durable queues
    /// and persistent messages survive into [`Broker::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on the same port with the same data.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.boot()
    }

    /// `rabbitmqctl -n <node> ARGS...` against this node; its stdout.
    pub fn ctl(&self, args: &[&str]) -> io::Result<String> {
        let out = self
            .env(Command::new(CTL))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(other(format!(
                "rabbitmqctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A user with permissions on vhost `/` (`configure`, `write`, `read` regexps on resource
    /// names) and topic permissions on `exchange` (`write` / `read` regexps on routing keys),
    /// as docs/bus.md sets up one user per mirror.
    pub fn add_user(
        &self,
        user: &str,
        password: &str,
        permissions: [&str; 3],
        exchange: &str,
        topic: [&str; 2],
    ) -> io::Result<()> {
        self.ctl(&["add_user", user, password])?;
        let [configure, write, read] = permissions;
        self.ctl(&["set_permissions", "-p", "/", user, configure, write, read])?;
        let [twrite, tread] = topic;
        self.ctl(&[
            "set_topic_permissions",
            "-p",
            "/",
            user,
            exchange,
            twrite,
            tread,
        ])?;
        Ok(())
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn env(&self, mut cmd: Command) -> Command {
        let home = self.root.join("home");
        cmd.env("HOME", &home)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_INETRC", self.root.join("inetrc"))
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.root.join("rabbitmq-env.conf"),
            )
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.root.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.root.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.root.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", self.root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.root.join("log"))
            .env("RABBITMQ_PID_FILE", self.root.join("rabbit.pid"))
            // Runs the VM in place of the script, so the child's pid is the node's.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            // The distribution port listens on loopback only.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
        cmd
    }

    fn start_epmd(&mut self) -> io::Result<()> {
        let child = Command::new("/usr/bin/epmd")
            .arg("-port")
            .arg(self.epmd_port.to_string())
            .arg("-address")
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| other(format!("cannot start epmd: {e}")))?;
        self.epmd = Some(child);
        wait_port(self.epmd_port, Duration::from_secs(10), || Ok(()))
            .map_err(|e| other(format!("epmd: {e}")))
    }

    fn boot(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .env(Command::new(SERVER))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| other(format!("cannot start rabbitmq-server: {e}")))?;
        self.server = Some(child);
        let server = self.server.as_mut().expect("just set");
        let log = self.log.clone();
        wait_port(self.port, BOOT_TIMEOUT, || match server.try_wait()? {
            Some(status) => Err(other(format!(
                "rabbitmq-server exited with {status}; log {}",
                log.display()
            ))),
            None => Ok(()),
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.epmd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The VM's helpers (erl_child_setup, inet_gethost) end with it; anything left that
        // names our dir is stopped by pid.
        for pid in pids_naming(&self.root) {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::env::var_os("MIRRORPUSH_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Polls until `port` accepts connections; `alive` fails fast when the server died.
fn wait_port(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(other(format!("nothing listened on port {port} in time")));
        }
        sleep(Duration::from_millis(100));
    }
}

/// `openssl ARGS...`, an error with its stderr when it fails.
fn openssl(args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| other(format!("cannot run openssl (scripts/install-deps.sh): {e}")))?;
    if !out.status.success() {
        return Err(other(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str()
        .ok_or_else(|| other(format!("{} is not UTF-8", p.display())))
}

/// A self-signed CA (P-256) in `dir`: `<name>.pem` and `<name>.key`.
pub fn make_ca(dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=mirrorpush lab {name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        path_str(&key)?,
        "-out",
        path_str(&cert)?,
    ])?;
    Ok((cert, key))
}

/// A certificate for `cn` signed by `ca`, with the X.509 v3 `extensions` (config lines):
/// `<name>.pem` and `<name>.key` in `dir`.
pub fn make_cert(
    dir: &Path,
    name: &str,
    ca: &Path,
    ca_key: &Path,
    cn: &str,
    extensions: &str,
) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let (csr, ext) = (
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
    );
    fs::write(
        &ext,
        format!("basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n{extensions}"),
    )?;
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        path_str(&key)?,
        "-out",
        path_str(&csr)?,
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr)?,
        "-CA",
        path_str(ca)?,
        "-CAkey",
        path_str(ca_key)?,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        path_str(&ext)?,
        "-out",
        path_str(&cert)?,
    ])?;
    Ok((cert, key))
}

fn make_root() -> io::Result<PathBuf> {
    let base = std::env::temp_dir().canonicalize()?;
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "{DIR_PREFIX}{}-{}-{attempt}",
            std::process::id(),
            random_hex(3)?
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(other("cannot create a broker dir".into()))
}

fn random_hex(bytes: usize) -> io::Result<String> {
    use std::io::Read as _;
    let mut b = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Live processes whose command line names `dir`.
fn pids_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
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

/// Brokers (and their dirs) left by a test process that is gone: killed before it could stop
/// them. Their epmd names no dir and is found by its parent being gone (reparented to init).
fn remove_stale() {
    let Ok(base) = std::env::temp_dir().canonicalize() else {
        return;
    };
    let Ok(entries) = fs::read_dir(&base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for p in pids_naming(&e.path()) {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

static SHARED: OnceLock<Mutex<Option<Broker>>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(m) = SHARED.get() {
        let broker = m.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(broker);
    }
}

/// One broker per test process, started on first use and stopped when the process exits
/// (also after failed tests). Returns the lock that guards it: hold it only briefly, e.g.
/// to read the URL, or to restart the broker.
pub fn shared(opts: BrokerOptions) -> io::Result<&'static Mutex<Option<Broker>>> {
    let cell = SHARED.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        let broker = Broker::start(opts)?;
        // SAFETY: registers a plain extern "C" function to run at exit(3).
        unsafe { libc::atexit(stop_shared) };
        *guard = Some(broker);
    }
    drop(guard);
    Ok(cell)
}
