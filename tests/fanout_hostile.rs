//! The master against hostile and broken mirrors: a small russh server in the test plays a mirror
//! that floods the session, opens channels towards the master, stalls once the session is up,
//! dies in the middle of a wait, or answers with terminal controls. The real `mirrorpush`
//! binary pushes it; the test checks what the master prints and how it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{self, Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use serde_json::Value;

/// What the hostile mirror does once the client has authenticated.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Sends `n` global requests (each one a log line in the SSH library), then answers `synced`.
    Flood(usize),
    /// Tries to open every kind of channel towards the master, then answers `synced`.
    OpenChannels,
    /// Never answers the master's channel open: the session is up, the request never sent.
    StallChannelOpen,
    /// Takes the request, then says nothing more (but still answers keepalives).
    StallAfterExec,
    /// Takes the request, then stops reading the connection altogether, as a dead host would.
    DeadAfterExec,
    /// Answers `accepted` followed by C1 controls, bidi overrides and DEL.
    Controls,
    /// Answers with one first line of 256 KiB of printable text it chose.
    LongLine,
    /// Exits 1, then sends `synced` and exits 0.
    TwoExitStatuses,
    /// Fills stderr with 200 KiB of noise before it answers `synced` on stdout.
    StderrNoise,
}

#[derive(Default)]
struct Shared {
    connections: AtomicUsize,
    execs: AtomicUsize,
    /// (channel type, whether the master accepted it).
    channel_opens: Mutex<Vec<(&'static str, bool)>>,
}

struct Mirror {
    dir: tempfile::TempDir,
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        // A DeadAfterExec session never returns: do not wait for it.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hostile", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

fn start(mode: Mode) -> Mirror {
    let dir = tempfile::tempdir().unwrap();
    let (host_key, client_key) = (dir.path().join("host_key"), dir.path().join("client_key"));
    keygen(&host_key);
    keygen(&client_key);
    let key = russh::keys::load_secret_key(&host_key, None).unwrap();
    let allowed = russh::keys::load_public_key(client_key.with_extension("pub")).unwrap();
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(server::Config {
        keys: vec![key],
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        ..Default::default()
    });
    let shared = Arc::new(Shared::default());
    let accept_shared = shared.clone();
    runtime.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            accept_shared.connections.fetch_add(1, Ordering::SeqCst);
            let conn = Conn {
                mode,
                allowed: allowed.clone(),
                shared: accept_shared.clone(),
                held: Vec::new(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, sock, conn).await {
                    let _ = session.await;
                }
            });
        }
    });
    std::fs::write(
        dir.path().join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
    )
    .unwrap();
    Mirror {
        dir,
        port,
        shared,
        runtime: Some(runtime),
    }
}

impl Mirror {
    fn registry(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("mirrors.toml");
        std::fs::write(
            &path,
            format!(
                "[defaults]\nuser = \"mirrorpush\"\nidentity = {:?}\nknown_hosts = {:?}\n\
                 connect_timeout = \"5s\"\nhistory = {:?}\n\n[[mirror]]\nname = \"hostile\"\nhost = \"127.0.0.1\"\n\
                 port = {}\nmodules = [\"fedora\"]\n{extra}\n",
                self.dir.path().join("client_key").display().to_string(),
                self.dir.path().join("known_hosts").display().to_string(),
                self.dir.path().join("history.db").display().to_string(),
                self.port
            ),
        )
        .unwrap();
        path
    }

    /// `mirrorpush push --json fedora` against this mirror, with `extra` registry keys.
    fn push(&self, extra: &str, flags: &[&str]) -> Output {
        self.push_as(extra, flags, &["--json"])
    }

    /// `mirrorpush push [how] fedora`: `--json`, or nothing for the human report.
    fn push_as(&self, extra: &str, flags: &[&str], how: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
            .arg("--registry")
            .arg(self.registry(extra))
            .args(flags)
            .arg("push")
            .args(how)
            .arg("fedora")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .expect("mirrorpush runs")
    }
}

/// The one mirror object and the summary of a `push --json`.
fn parse(out: &Output) -> (Value, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    (lines[0].clone(), lines[1]["summary"].clone())
}

fn dump(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    format!(
        "exit {:?}\nstdout:\n{}\nstderr ({} bytes):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr.len(),
        stderr.chars().take(2000).collect::<String>()
    )
}

#[test]
fn a_flooding_mirror_cannot_flood_the_masters_stderr() {
    let mirror = start(Mode::Flood(20_000));
    let out = mirror.push("", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (m, summary) = parse(&out);
    assert_eq!(m["ok"], true, "{m}");
    assert_eq!(m["answer"], "synced", "{m}");
    assert_eq!(summary["synced"], 1);
    assert!(out.stderr.len() < 1024, "{}", dump(&out));

    // -v (our own debug lines) stays bounded too; -vv shows the library's log, flood and all,
    // which proves the flood reached the master and that the filter is what bounds it.
    let out = mirror.push("", &["-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    assert!(out.stderr.len() < 64 * 1024, "{}", dump(&out));
    let out = mirror.push("", &["-vv"]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let global_requests = String::from_utf8_lossy(&out.stderr)
        .matches("Unhandled global request")
        .count();
    assert!(global_requests >= 20_000, "{global_requests} lines");
}

#[test]
fn channels_a_mirror_opens_towards_the_master_are_refused() {
    let mirror = start(Mode::OpenChannels);
    let out = mirror.push("", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (m, _) = parse(&out);
    assert_eq!(m["answer"], "synced", "{m}");
    let opens = mirror.shared.channel_opens.lock().unwrap().clone();
    assert_eq!(opens.len(), 7, "{opens:?}");
    for (kind, accepted) in opens {
        assert!(!accepted, "the master accepted a {kind} channel");
    }
}

#[test]
fn a_stall_after_the_session_is_up_is_not_retried() {
    for (mode, expected) in [
        (
            Mode::StallChannelOpen,
            "with the SSH session up, before the request was sent",
        ),
        (Mode::StallAfterExec, "waiting for the handler's answer"),
    ] {
        let mirror = start(mode);
        let out = mirror.push("timeout = \"3s\"\nretries = 2\n", &[]);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", dump(&out));
        let (m, summary) = parse(&out);
        let error = m["error"].as_str().unwrap_or_default();
        assert!(error.contains("timed out after 3s"), "{mode:?}: {error}");
        assert!(error.contains(expected), "{mode:?}: {error}");
        // One attempt, one connection: retries are for failures before the session is up.
        assert_eq!(m["attempts"], 1, "{mode:?}: {m}");
        assert_eq!(
            mirror.shared.connections.load(Ordering::SeqCst),
            1,
            "{mode:?}"
        );
        assert_eq!(summary["failed"], 1);
    }
}

#[test]
fn a_mirror_that_dies_during_a_wait_is_found_dead_by_keepalives() {
    let mirror = start(Mode::DeadAfterExec);
    // Without keepalives this would end only at `timeout` (60 s), with "timed out".
    let out = mirror.push(
        "timeout = \"60s\"\nkeepalive_interval = \"1s\"\nretries = 2\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let (m, _) = parse(&out);
    let error = m["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("3 SSH keepalives 1s apart went unanswered"),
        "{error}"
    );
    assert!(!error.contains("timed out"), "{error}");
    assert!(m["exit_status"].is_null() && m["answer"].is_null(), "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(mirror.shared.execs.load(Ordering::SeqCst), 1);
}

#[test]
fn terminal_controls_from_a_mirror_never_reach_the_json_raw() {
    let mirror = start(Mode::Controls);
    let out = mirror.push("", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8 JSON");
    for c in stdout.chars() {
        assert!(
            c == '\n' || !(c.is_control() || mirrorpush::fanout::json::needs_escape(c)),
            "{c:?} raw in {stdout}"
        );
    }
    let (m, _) = parse(&out);
    // The value a JSON reader gets is still exactly what the mirror sent.
    assert_eq!(m["output"], CONTROLS);
    assert_eq!(m["answer"], "accepted");
}

/// A mirror's first output line is the report's message: in the human report it is cut to a few
/// hundred bytes with a mark (a 256 KiB line would split into journal records that can read
/// like other mirrors' lines); JSON `output` keeps what was captured.
#[test]
fn a_huge_first_line_is_capped_in_the_report() {
    let mirror = start(Mode::LongLine);
    let out = mirror.push_as("", &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("hostile")).unwrap();
    assert!(line.len() < 500, "{} bytes", line.len());
    assert!(line.contains("accepted forged"), "{line}");
    assert!(
        line.contains("more bytes; the whole output is in push --json]"),
        "{line}"
    );
    assert!(stdout.lines().all(|l| l.len() < 500), "{stdout}");
    let out = mirror.push("", &[]);
    let (m, _) = parse(&out);
    assert_eq!(m["output"].as_str().unwrap().len(), 64 * 1024, "{m}");
    assert!(m["message"].as_str().unwrap().len() < 500);
}

/// A mirror that exits twice (1, then 0 with `synced`) is not taken at its second word.
#[test]
fn a_second_exit_status_is_a_protocol_error() {
    let mirror = start(Mode::TwoExitStatuses);
    let out = mirror.push("", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let (m, summary) = parse(&out);
    assert_eq!(m["ok"], false, "{m}");
    assert!(m["answer"].is_null(), "{m}");
    assert_eq!(
        m["error"],
        "protocol error: the mirror sent a second exit status (1, then 0)"
    );
    assert_eq!(summary["failed"], 1);
}

/// stderr noise (a login shell's profile, or a flood) cannot fill the capture before the answer
/// on stdout: each stream has its own bound.
#[test]
fn stderr_noise_cannot_hide_the_answer() {
    let mirror = start(Mode::StderrNoise);
    let out = mirror.push("", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    let (m, _) = parse(&out);
    assert_eq!(m["answer"], "synced", "{m}");
    assert_eq!(m["output_truncated"], true, "{m}");
}

const CONTROLS: &str = "accepted \u{9b}2J\u{85}\u{202e}exe.txt\u{2066}\u{7f}\u{1b}[31m\n";

struct Conn {
    mode: Mode,
    allowed: PublicKey,
    shared: Arc<Shared>,
    /// Channel opens this mirror never answers (dropping one would refuse it).
    held: Vec<server::ChannelOpenHandle>,
}

impl Conn {
    fn auth(&self, key: &PublicKey) -> Auth {
        if key.key_data() == self.allowed.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

/// Answers `synced` through the session handle, from outside the handler's callbacks.
async fn answer(handle: &server::Handle, channel: ChannelId, stdout: &'static str) {
    let _ = handle.data(channel, stdout.as_bytes()).await;
    let _ = handle.exit_status_request(channel, 0).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// Every kind of channel a server can open towards a client, and whether the client accepted.
async fn open_every_channel(handle: &server::Handle, shared: &Shared) {
    let results: Vec<(&'static str, bool)> = vec![
        (
            "forwarded-tcpip",
            handle
                .channel_open_forwarded_tcpip("127.0.0.1", 22, "203.0.113.9", 4000)
                .await
                .is_ok(),
        ),
        (
            "forwarded-streamlocal",
            handle
                .channel_open_forwarded_streamlocal("/run/x.sock")
                .await
                .is_ok(),
        ),
        (
            "x11",
            handle.channel_open_x11("203.0.113.9", 6000).await.is_ok(),
        ),
        ("agent", handle.channel_open_agent().await.is_ok()),
        ("session", handle.channel_open_session().await.is_ok()),
        (
            "direct-tcpip",
            handle
                .channel_open_direct_tcpip("127.0.0.1", 22, "203.0.113.9", 4000)
                .await
                .is_ok(),
        ),
        (
            "direct-streamlocal",
            handle
                .channel_open_direct_streamlocal("/run/x.sock")
                .await
                .is_ok(),
        ),
    ];
    shared.channel_opens.lock().unwrap().extend(results);
}

impl server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.auth(key.public_key))
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.mode {
            Mode::StallChannelOpen => self.held.push(reply),
            _ => reply.accept().await,
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.execs.fetch_add(1, Ordering::SeqCst);
        session.channel_success(channel)?;
        match self.mode {
            Mode::Flood(n) => {
                // Global requests the client does not handle: the SSH library logs each one.
                for _ in 0..n {
                    session.tcpip_forward("", 0, None)?;
                }
                session.data(channel, &b"synced\n"[..])?;
                session.exit_status_request(channel, 0)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
            Mode::OpenChannels => {
                let (handle, shared) = (session.handle(), self.shared.clone());
                tokio::spawn(async move {
                    open_every_channel(&handle, &shared).await;
                    answer(&handle, channel, "synced\n").await;
                });
            }
            Mode::Controls => {
                let handle = session.handle();
                tokio::spawn(async move { answer(&handle, channel, CONTROLS).await });
            }
            Mode::LongLine => {
                let handle = session.handle();
                tokio::spawn(async move {
                    let mut line = String::from("accepted ");
                    while line.len() < 256 * 1024 {
                        line.push_str("forged.example  ok  0.1s  synced ");
                    }
                    line.push('\n');
                    let line: &'static str = Box::leak(line.into_boxed_str());
                    answer(&handle, channel, line).await;
                });
            }
            Mode::TwoExitStatuses => {
                let handle = session.handle();
                tokio::spawn(async move {
                    let _ = handle.exit_status_request(channel, 1).await;
                    answer(&handle, channel, "synced\n").await;
                });
            }
            Mode::StderrNoise => {
                let handle = session.handle();
                tokio::spawn(async move {
                    let noise = vec![b'n'; 8 * 1024];
                    for _ in 0..25 {
                        let _ = handle.extended_data(channel, 1, noise.clone()).await;
                    }
                    answer(&handle, channel, "synced\n").await;
                });
            }
            Mode::StallAfterExec | Mode::StallChannelOpen => {}
            Mode::DeadAfterExec => {
                // The session's loop waits on this handler: nothing is read or answered again.
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }
}
