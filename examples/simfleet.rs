//! The simulated fleet for the fan-out benchmarks (`benches/fanout-sim.sh`,
//! `benches/fanout-wait.sh`): N SSH endpoints on 127.0.0.1, each a russh server that accepts one
//! public key and answers an `exec` of `sync ...` with stdout `accepted\n`, exit status 0, EOF
//! and close: what a mirror's handler in detach mode answers, without sshd or the handler, so
//! that what is measured is the client's own cost and its round trips over a (simulated) WAN.
//! With `--answer synced --answer-after MIN-MAX` each endpoint answers like a handler in wait
//! mode instead: `synced\n` after its own delay, drawn once per endpoint uniformly from MIN..MAX
//! ms (`--seed`), so that the master holds N sessions waiting.
//!
//! ```text
//! simfleet --dir DIR [--mirrors N] [--delay-ms D] [--concurrency C] [--threads T] [--conn-log F]
//!          [--trace F] [--answer WORD] [--answer-after MIN-MAX] [--seed S] [--answer-log F]
//! ```
//! It writes into DIR: `host_key` (ssh-keygen, shared by every endpoint), `client_key` (the one
//! key accepted; reused if present), `mirrors.toml` (the master's registry), `known_hosts`,
//! `pssh_hosts` (`127.0.0.1:PORT` lines for parallel-ssh), `answers.tsv` (`name port
//! answer_after_ms` per endpoint), then prints `ready` and serves until stdin closes or
//! SIGTERM/SIGINT. With `--conn-log F` it appends one line per connection:
//! `<ms from accept to the client's EOF> <client->server chunks> <server->client chunks>`;
//! with `--trace F` (delay > 0 only) one line per chunk the proxy relays (see `trace`); with
//! `--answer-log F` one line per delayed answer: `<port> <Unix time in ms when it was sent>`, to
//! compare with the master's own timestamps on the same machine.
//!
//! Delay model (`--delay-ms D`, D = one round-trip time): a delay line in front of each session.
//! Every chunk read from the client is handed to the server D/2 after it arrived, and every
//! chunk the server writes is handed to the client D/2 after it was written, each direction in
//! order and independently (pipelined like a real link with infinite bandwidth). So each
//! request/answer exchange costs exactly one D, and pipelined packets are not charged twice,
//! unlike a sleep per packet at the server's write path, which would charge D/2 per packet and
//! serialise back-to-back packets. The TCP handshake, which loopback completes at once, is
//! modelled too: the server's session starts 1.5 D after accept (when a real server's accept
//! returns, counted from the client's SYN) and no client byte reaches it earlier, so the
//! server's banner reaches the client 2 D after connect() began, as on a real link.
//! With D = 0 the TCP stream is handed to the server directly (no proxy).

#[cfg(feature = "master")]
mod fleet {
    use russh::keys::{PrivateKey, PublicKey};
    use russh::server::{self, Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
    use russh::{Channel, ChannelId};
    use std::fmt::Write as _;
    use std::fs;
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    const USAGE: &str = "usage: simfleet --dir DIR [--mirrors N] [--delay-ms D] \
                         [--concurrency C] [--threads T] [--conn-log FILE] [--trace FILE] \
                         [--answer WORD] [--answer-after MIN_MS-MAX_MS] [--seed S] \
                         [--answer-log FILE]";

    struct Args {
        dir: PathBuf,
        mirrors: usize,
        delay: Duration,
        concurrency: usize,
        threads: usize,
        conn_log: Option<PathBuf>,
        trace: Option<PathBuf>,
        /// The first word of the answer (`accepted`, `synced`, ...).
        answer: String,
        /// Each endpoint answers after its own delay, uniform in this range (ms).
        answer_after: (u64, u64),
        seed: u64,
        answer_log: Option<PathBuf>,
    }

    fn parse_args() -> Result<Args, String> {
        let mut dir = None;
        let mut mirrors = 100usize;
        let mut delay_ms = 0u64;
        let mut concurrency = None;
        let mut threads = 1usize;
        let mut conn_log = None;
        let mut trace = None;
        let mut answer = "accepted".to_owned();
        let mut answer_after = (0, 0);
        let mut seed = 1u64;
        let mut answer_log = None;
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
            let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
            match flag.as_str() {
                "--dir" => dir = Some(PathBuf::from(value()?)),
                "--mirrors" => mirrors = num(value()?)? as usize,
                "--delay-ms" => delay_ms = num(value()?)?,
                "--concurrency" => concurrency = Some(num(value()?)? as usize),
                "--threads" => threads = num(value()?)?.max(1) as usize,
                "--conn-log" => conn_log = Some(PathBuf::from(value()?)),
                "--trace" => trace = Some(PathBuf::from(value()?)),
                "--answer" => answer = value()?,
                "--answer-after" => {
                    let v = value()?;
                    let (lo, hi) = v.split_once('-').unwrap_or((&v, &v));
                    answer_after = (num(lo.to_owned())?, num(hi.to_owned())?);
                    if answer_after.0 > answer_after.1 {
                        return Err(format!("--answer-after {v}: MIN is above MAX"));
                    }
                }
                "--seed" => seed = num(value()?)?,
                "--answer-log" => answer_log = Some(PathBuf::from(value()?)),
                "-h" | "--help" => return Err(USAGE.into()),
                _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
            }
        }
        if !(1..=20_000).contains(&mirrors) {
            return Err("--mirrors must be 1..=20000".into());
        }
        Ok(Args {
            dir: dir.ok_or(USAGE)?,
            mirrors,
            delay: Duration::from_millis(delay_ms),
            concurrency: concurrency.unwrap_or(mirrors),
            threads,
            conn_log,
            trace,
            answer,
            answer_after,
            seed,
            answer_log,
        })
    }

    /// Unix time in ms: the clock of the master's log timestamps, which the benchmark compares
    /// these with (`Instant` has no absolute value).
    fn unix_ms() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Endpoint `i`'s answer delay: uniform in `range`, the same for a given seed and `i`
    /// (splitmix64), so that a benchmark can compare what the master reports with it.
    fn answer_delay(range: (u64, u64), seed: u64, i: usize) -> Duration {
        let mut z = seed
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(i as u64 + 1);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Duration::from_millis(range.0 + z % (range.1 - range.0 + 1))
    }

    pub fn main() -> Result<(), String> {
        let args = parse_args()?;
        // Each endpoint holds a listener, each live connection a socket (plus what the client
        // side of the benchmark needs when it runs as our child): ask for the hard limit.
        let want = args.mirrors as u64 * 4 + 256;
        let limit = mirrorpush::rlimit::raise_open_files(want);
        if limit < want {
            eprintln!("simfleet: warning: RLIMIT_NOFILE is {limit} (hard limit), want {want}");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        runtime.block_on(run(args))
    }

    async fn run(args: Args) -> Result<(), String> {
        fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
        let dir = args
            .dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", args.dir.display()))?;
        let host_key_path = dir.join("host_key");
        let client_key_path = dir.join("client_key");
        for path in [&host_key_path, &client_key_path] {
            if !path.exists() {
                keygen(path)?;
            }
        }
        let host_key = russh::keys::load_secret_key(&host_key_path, None)
            .map_err(|e| format!("{}: {e}", host_key_path.display()))?;
        let client_pub = russh::keys::load_public_key(client_key_path.with_extension("pub"))
            .map_err(|e| format!("{}.pub: {e}", client_key_path.display()))?;
        let host_pub_line = host_key
            .public_key()
            .to_openssh()
            .map_err(|e| format!("host key: {e}"))?;
        let host_pub_line = host_pub_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        let config = Arc::new(server_config(host_key));
        let shared = Arc::new(Shared {
            answer: format!("{}\n", args.answer).into_bytes(),
            allowed: client_pub,
            accepted: AtomicU64::new(0),
            execs: AtomicU64::new(0),
            log: args.conn_log.as_ref().map(|p| spawn_conn_log(p.clone())),
            trace: args.trace.as_ref().map(|p| spawn_conn_log(p.clone())),
            answers: args.answer_log.as_ref().map(|p| spawn_conn_log(p.clone())),
        });

        let mut listeners = Vec::with_capacity(args.mirrors);
        for _ in 0..args.mirrors {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("bind: {e}"))?;
            listeners.push(l);
        }
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("local_addr: {e}"))?;
        let delays: Vec<Duration> = (0..ports.len())
            .map(|i| answer_delay(args.answer_after, args.seed, i))
            .collect();
        write_files(&dir, &args, &ports, &delays, &host_pub_line)?;

        for (listener, answer_after) in listeners.into_iter().zip(delays) {
            let (config, shared, delay) = (config.clone(), shared.clone(), args.delay);
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((sock, _)) => {
                            let id = shared.accepted.fetch_add(1, Ordering::Relaxed) + 1;
                            let (config, shared) = (config.clone(), shared.clone());
                            tokio::spawn(serve(id, sock, config, shared, delay, answer_after));
                        }
                        Err(e) => {
                            // EMFILE and the like: say so, back off, keep serving.
                            eprintln!("simfleet: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }

        println!("ready");
        let _ = std::io::stdout().flush();
        wait_for_shutdown().await;
        eprintln!(
            "simfleet: served {} connections, {} sync execs",
            shared.accepted.load(Ordering::Relaxed),
            shared.execs.load(Ordering::Relaxed)
        );
        for log in shared
            .log
            .iter()
            .chain(&shared.trace)
            .chain(&shared.answers)
        {
            // Let the log writer drain what is queued.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = log.send(LogMsg::Flush(tx));
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        Ok(())
    }

    fn server_config(host_key: PrivateKey) -> server::Config {
        server::Config {
            keys: vec![host_key],
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            // OpenSSH's client opens with a "none" auth probe: answer it at once, as sshd does.
            auth_rejection_time: Duration::from_millis(0),
            auth_rejection_time_initial: Some(Duration::from_millis(0)),
            inactivity_timeout: Some(Duration::from_secs(300)),
            nodelay: true,
            ..Default::default()
        }
    }

    async fn wait_for_shutdown() {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        // tokio's io-std feature is not enabled in this crate: a plain thread watches stdin.
        let (tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = stdin_closed => {}
        }
    }

    fn write_files(
        dir: &Path,
        args: &Args,
        ports: &[u16],
        delays: &[Duration],
        host_pub: &str,
    ) -> Result<(), String> {
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text)
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let mut registry = format!(
            "[defaults]\nuser = \"mirrorpush\"\nidentity = {:?}\nknown_hosts = {:?}\n\
             connect_timeout = \"30s\"\ntimeout = \"5m\"\nconcurrency = {}\nhistory = {:?}\n",
            dir.join("client_key").display().to_string(),
            dir.join("known_hosts").display().to_string(),
            args.concurrency,
            dir.join("history.db").display().to_string()
        );
        let (mut known_hosts, mut pssh_hosts) = (String::new(), String::new());
        let mut answers = String::new();
        for (i, (port, after)) in ports.iter().zip(delays).enumerate() {
            let _ = writeln!(answers, "sim{} {port} {}", i + 1, after.as_millis());
            let _ = write!(
                registry,
                "\n[[mirror]]\nname = \"sim{}\"\nhost = \"127.0.0.1\"\nport = {port}\nmodules = [\"fedora\"]\n",
                i + 1
            );
            let _ = writeln!(known_hosts, "[127.0.0.1]:{port} {host_pub}");
            let _ = writeln!(pssh_hosts, "127.0.0.1:{port}");
        }
        write("mirrors.toml", &registry)?;
        write("known_hosts", &known_hosts)?;
        write("answers.tsv", &answers)?;
        write("pssh_hosts", &pssh_hosts)
    }

    fn keygen(path: &Path) -> Result<(), String> {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "simfleet", "-f"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("ssh-keygen: {e}"))?;
        if !status.success() {
            return Err(format!("ssh-keygen failed for {}", path.display()));
        }
        Ok(())
    }

    struct Shared {
        /// What every exec is answered on stdout.
        answer: Vec<u8>,
        allowed: PublicKey,
        accepted: AtomicU64,
        execs: AtomicU64,
        log: Option<mpsc::UnboundedSender<LogMsg>>,
        trace: Option<mpsc::UnboundedSender<LogMsg>>,
        /// `--answer-log`: when each delayed answer went out.
        answers: Option<mpsc::UnboundedSender<LogMsg>>,
    }

    enum LogMsg {
        Line(String),
        Flush(tokio::sync::oneshot::Sender<()>),
    }

    fn spawn_conn_log(path: PathBuf) -> mpsc::UnboundedSender<LogMsg> {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogMsg>();
        tokio::spawn(async move {
            let file = fs::OpenOptions::new().create(true).append(true).open(&path);
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("simfleet: {}: {e}", path.display());
                    return;
                }
            };
            while let Some(msg) = rx.recv().await {
                match msg {
                    LogMsg::Line(line) => {
                        let _ = file.write_all(line.as_bytes());
                    }
                    LogMsg::Flush(done) => {
                        let _ = file.flush();
                        let _ = done.send(());
                    }
                }
            }
        });
        tx
    }

    /// One client connection: hand it to the server, directly or through the delay line.
    async fn serve(
        id: u64,
        sock: TcpStream,
        config: Arc<server::Config>,
        shared: Arc<Shared>,
        delay: Duration,
        answer_after: Duration,
    ) {
        let _ = sock.set_nodelay(true);
        let handler = Conn {
            shared: shared.clone(),
            exec: false,
            answer_after,
            port: sock.local_addr().map(|a| a.port()).unwrap_or(0),
        };
        let start = Instant::now();
        if delay.is_zero() {
            // No proxy: the connection's lifetime is the session's.
            if let Ok(session) = server::run_stream(config, sock, handler).await {
                let _ = session.await;
            }
            log_conn(&shared, start, 0, 0);
            return;
        }
        let (server_end, proxy_end) = tokio::io::duplex(64 * 1024);
        let gate = start + delay * 3 / 2;
        tokio::spawn(async move {
            tokio::time::sleep_until(gate).await;
            if let Ok(session) = server::run_stream(config, server_end, handler).await {
                let _ = session.await;
            }
        });
        let (tcp_r, tcp_w) = sock.into_split();
        let (dup_r, dup_w) = tokio::io::split(proxy_end);
        let half = delay / 2;
        let (c2s, s2c) = tokio::join!(
            delay_line(tcp_r, dup_w, half, gate, trace(&shared, id, start, "c2s")),
            delay_line(dup_r, tcp_w, half, start, trace(&shared, id, start, "s2c"))
        );
        // c2s.1 is when the client's EOF (or error) was read: the end of its exchange.
        let elapsed = c2s.1.saturating_duration_since(start);
        log_conn_elapsed(&shared, elapsed, c2s.0, s2c.0);
    }

    fn log_conn(shared: &Shared, start: Instant, c2s: u64, s2c: u64) {
        log_conn_elapsed(shared, start.elapsed(), c2s, s2c)
    }

    fn log_conn_elapsed(shared: &Shared, elapsed: Duration, c2s: u64, s2c: u64) {
        if let Some(log) = &shared.log {
            let _ = log.send(LogMsg::Line(format!(
                "{:.3} {c2s} {s2c}\n",
                elapsed.as_secs_f64() * 1000.0
            )));
        }
    }

    /// A `--trace` line writer for one direction of connection `id`: `<id> <ms since accept,
    /// when the proxy read the chunk> <direction> <bytes>` (0 bytes: EOF). At a large delay the
    /// client's chunks cluster at multiples of the RTT: one cluster per round trip it waited for.
    fn trace(shared: &Shared, id: u64, start: Instant, dir: &'static str) -> impl Fn(usize) {
        let tx = shared.trace.clone();
        move |bytes| {
            if let Some(tx) = &tx {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                let _ = tx.send(LogMsg::Line(format!("{id} {ms:.1} {dir} {bytes}\n")));
            }
        }
    }

    /// Copies `from` to `to`, handing each chunk over `half` after it was read (and never before
    /// `not_before`), in order; EOF is passed on the same way. Returns the number of chunks and
    /// when `from` ended.
    async fn delay_line<R, W>(
        mut from: R,
        mut to: W,
        half: Duration,
        not_before: Instant,
        trace: impl Fn(usize),
    ) -> (u64, Instant)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
        let reader = async move {
            let mut buf = vec![0u8; 32 * 1024];
            let mut chunks = 0u64;
            loop {
                let n = from.read(&mut buf).await.unwrap_or(0);
                trace(n);
                let due = (Instant::now() + half).max(not_before);
                if n == 0 {
                    let _ = tx.send((due, None));
                    return (chunks, Instant::now());
                }
                chunks += 1;
                if tx.send((due, Some(buf[..n].to_vec()))).is_err() {
                    return (chunks, Instant::now());
                }
            }
        };
        let writer = async move {
            while let Some((due, chunk)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                match chunk {
                    Some(bytes) => {
                        if to.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            }
            let _ = to.shutdown().await;
            // Keep draining so the reader never blocks on a dead peer.
            while rx.recv().await.is_some() {}
        };
        let (result, ()) = tokio::join!(reader, writer);
        result
    }

    struct Conn {
        shared: Arc<Shared>,
        exec: bool,
        /// Zero: answer at once (detach mode). Otherwise hold the session this long first.
        answer_after: Duration,
        /// The endpoint's port, which names it in `--answer-log`.
        port: u16,
    }

    impl Conn {
        fn allowed(&self, key: &PublicKey) -> bool {
            key.key_data() == self.shared.allowed.key_data()
        }
    }

    impl server::Handler for Conn {
        type Error = russh::Error;

        async fn auth_publickey_offered(
            &mut self,
            _user: &str,
            offer: PublicKeyOffer<'_>,
        ) -> Result<Auth, Self::Error> {
            Ok(if self.allowed(offer.public_key) {
                Auth::Accept
            } else {
                Auth::reject()
            })
        }

        async fn auth_publickey(
            &mut self,
            _user: &str,
            key: VerifiedPublicKey<'_>,
        ) -> Result<Auth, Self::Error> {
            Ok(if self.allowed(key.public_key) {
                Auth::Accept
            } else {
                Auth::reject()
            })
        }

        async fn channel_open_session(
            &mut self,
            _channel: Channel<Msg>,
            reply: server::ChannelOpenHandle,
            _session: &mut Session,
        ) -> Result<(), Self::Error> {
            reply.accept().await;
            Ok(())
        }

        async fn exec_request(
            &mut self,
            channel: ChannelId,
            data: &[u8],
            session: &mut Session,
        ) -> Result<(), Self::Error> {
            session.channel_success(channel)?;
            if data.starts_with(b"sync ") && !self.exec {
                self.exec = true;
                self.shared.execs.fetch_add(1, Ordering::Relaxed);
                if !self.answer_after.is_zero() {
                    // Wait mode: the session stays open (and answers keepalives) until then.
                    let (handle, after) = (session.handle(), self.answer_after);
                    let (answer, log, port) = (
                        self.shared.answer.clone(),
                        self.shared.answers.clone(),
                        self.port,
                    );
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        if let Some(log) = log {
                            let at = unix_ms();
                            let _ = log.send(LogMsg::Line(format!("{port} {at:.1}\n")));
                        }
                        let _ = handle.data(channel, answer).await;
                        let _ = handle.exit_status_request(channel, 0).await;
                        let _ = handle.eof(channel).await;
                        let _ = handle.close(channel).await;
                    });
                    return Ok(());
                }
                session.data(channel, self.shared.answer.clone())?;
                session.exit_status_request(channel, 0)?;
            } else {
                session.extended_data(channel, 1, &b"error: refused\n"[..])?;
                session.exit_status_request(channel, 64)?;
            }
            session.eof(channel)?;
            session.close(channel)
        }
    }
}

#[cfg(feature = "master")]
fn main() -> std::process::ExitCode {
    match fleet::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simfleet: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(feature = "master"))]
fn main() {
    eprintln!("simfleet needs the `master` feature (russh, tokio)");
    std::process::exit(2);
}
