//! One SSH exchange with one mirror: connect, verify the host key, authenticate, send the request,
//! collect the answer. Every step is bounded: russh has no timeouts of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::time::timeout;
use tracing::debug;

use super::known_hosts::{KnownHosts, Verdict};
use super::registry::Mirror;
use crate::request::Request;

/// Output kept per mirror; a mirror that streams forever cannot exhaust memory.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// Everything needed to push to one mirror.
#[derive(Clone)]
pub struct Target {
    pub mirror: Mirror,
    pub request: Request,
    pub known_hosts: Arc<KnownHosts>,
    /// `None`: authenticate with the keys ssh-agent offers.
    pub key: Option<Arc<PrivateKey>>,
}

/// What the mirror answered, or why it could not.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub exit_status: Option<u32>,
    /// `None` means success.
    pub error: Option<String>,
    /// A short line for people: the handler's answer on success.
    pub message: String,
    pub output: Captured,
    pub attempts: u32,
    /// Failed before the request was sent, for a reason another try might not hit.
    pub retriable: bool,
}

/// stdout and stderr of the handler, together at most [`OUTPUT_LIMIT`] bytes.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    fn push(&mut self, stderr: bool, data: &[u8]) {
        let room = OUTPUT_LIMIT.saturating_sub(self.stdout.len() + self.stderr.len());
        if data.len() > room {
            self.truncated = true;
        }
        let kept = &data[..data.len().min(room)];
        if stderr {
            self.stderr.extend_from_slice(kept);
        } else {
            self.stdout.extend_from_slice(kept);
        }
    }

    /// Both streams as text (stdout first), for reports.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&self.stderr));
        s
    }
}

/// Pushes to one mirror, retrying connection-level failures `mirror.retries` times with backoff.
/// A refusal by the handler (or anything after the request was sent) is never retried.
pub async fn push(target: &Target) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut outcome = attempt_once(target).await;
        outcome.attempts = attempt;
        if !outcome.retriable || attempt > target.mirror.retries {
            return outcome;
        }
        let backoff =
            Duration::from_millis(500u64 << (attempt - 1).min(5)).min(Duration::from_secs(10));
        debug!(mirror = %target.mirror.name, ?backoff, error = ?outcome.error, "retrying");
        tokio::time::sleep(backoff).await;
    }
}

/// Why an attempt failed before the handler answered.
enum Failure {
    /// TCP, resolution, banner or key exchange trouble: worth another try.
    Connect(String),
    /// Host key, authentication: trying again cannot help.
    Refused(String),
    /// After the request was sent: the mirror may have acted on it, so never retried.
    Exchange(String),
}

async fn attempt_once(target: &Target) -> Outcome {
    let m = &target.mirror;
    let mut sent = false;
    let result = timeout(m.timeout, exchange(target, &mut sent)).await;
    let failure = match result {
        Ok(Ok(outcome)) => return outcome,
        Ok(Err(f)) => f,
        Err(_) if sent => Failure::Exchange(format!(
            "timed out after {} waiting for the handler's answer (timeout)",
            humantime::format_duration(m.timeout)
        )),
        Err(_) => Failure::Connect(format!(
            "timed out after {} before the request was sent (timeout)",
            humantime::format_duration(m.timeout)
        )),
    };
    let (error, retriable) = match failure {
        Failure::Connect(e) => (e, true),
        Failure::Refused(e) | Failure::Exchange(e) => (e, false),
    };
    Outcome {
        error: Some(error.clone()),
        message: error,
        retriable,
        ..Outcome::default()
    }
}

async fn exchange(target: &Target, sent: &mut bool) -> Result<Outcome, Failure> {
    let m = &target.mirror;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((m.host.as_str(), m.port))
        .await
        .map_err(|e| Failure::Connect(format!("cannot resolve {}: {e}", m.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::Connect(format!("{} has no address", m.host)));
    }
    let mut last = None;
    let mut handle = None;
    // Every resolved address is tried, each with its own connect_timeout, as OpenSSH does.
    for addr in addrs {
        debug!(mirror = %m.name, %addr, "connecting");
        match timeout(m.connect_timeout, connect(target, addr)).await {
            Ok(Ok(h)) => {
                handle = Some(h);
                break;
            }
            Ok(Err(Failure::Connect(e))) => last = Some(format!("{addr}: {e}")),
            Ok(Err(other)) => return Err(other),
            Err(_) => {
                last = Some(format!(
                    "{addr}: no SSH session within connect_timeout {} (TCP connect, banner, key exchange and auth)",
                    humantime::format_duration(m.connect_timeout)
                ))
            }
        }
    }
    let Some(handle) = handle else {
        return Err(Failure::Connect(last.unwrap_or_default()));
    };
    run_request(target, &handle, sent).await
}

/// The russh handler: its only job is the host key decision, and remembering why it refused.
struct HostCheck {
    host: String,
    port: u16,
    known_hosts: Arc<KnownHosts>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.known_hosts.check(&self.host, self.port, key)
            }
            PublicKeyOrCertificate::Certificate(_) => {
                self.refuse(
                    "host key is a certificate; only plain keys from known_hosts are trusted"
                        .into(),
                );
                return Ok(false);
            }
        };
        debug!(host = %self.host, port = self.port, %verdict, "host key check");
        match verdict {
            Verdict::Trusted { .. } => Ok(true),
            other => {
                self.refuse(format!("{other} ({})", self.known_hosts.path.display()));
                Ok(false)
            }
        }
    }
}

impl HostCheck {
    fn refuse(&self, why: String) {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(why);
        }
    }
}

fn config() -> Arc<client::Config> {
    let preferred = russh::Preferred {
        // zlib@openssh.com has desync reports, and requests are tiny: never offer compression.
        compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
        ..Default::default()
    };
    Arc::new(client::Config {
        preferred,
        nodelay: true,
        ..Default::default()
    })
}

async fn connect(target: &Target, addr: SocketAddr) -> Result<Handle<HostCheck>, Failure> {
    let m = &target.mirror;
    let refusal = Arc::new(Mutex::new(None));
    let check = HostCheck {
        host: m.host.clone(),
        port: m.port,
        known_hosts: target.known_hosts.clone(),
        refusal: refusal.clone(),
    };
    let mut handle = match client::connect(config(), addr, check).await {
        Ok(h) => h,
        Err(e) => {
            let refused = refusal.lock().ok().and_then(|mut s| s.take());
            return Err(match refused {
                Some(why) => Failure::Refused(why),
                None => Failure::Connect(describe(&e)),
            });
        }
    };
    authenticate(target, &mut handle).await?;
    Ok(handle)
}

async fn authenticate(target: &Target, handle: &mut Handle<HostCheck>) -> Result<(), Failure> {
    let user = target.mirror.user.as_str();
    let conn =
        |e: russh::Error| Failure::Connect(format!("during authentication: {}", describe(&e)));
    let refused = || {
        Failure::Refused(format!(
            "authentication refused for user {user:?}: the server did not accept our key"
        ))
    };
    if let Some(key) = &target.key {
        let hash = rsa_hash(handle, key.public_key()).await.map_err(conn)?;
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(conn)?;
        return if result.success() {
            Ok(())
        } else {
            Err(refused())
        };
    }
    let mut agent = AgentClient::connect_env().await.map_err(|e| {
        Failure::Refused(format!(
            "no identity set in the registry and ssh-agent is not usable (SSH_AUTH_SOCK): {e}"
        ))
    })?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| Failure::Refused(format!("ssh-agent: {e}")))?;
    for id in identities {
        let AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        let hash = rsa_hash(handle, &key).await.map_err(conn)?;
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => continue,
            Err(e) => debug!(error = %e, "agent key not usable"),
        }
    }
    Err(refused())
}

/// RSA keys must sign with SHA-2 when the server allows it (OpenSSH >= 8.8 refuses SHA-1).
async fn rsa_hash(
    handle: &Handle<HostCheck>,
    key: &PublicKey,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if !key.algorithm().is_rsa() {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}

async fn run_request(
    target: &Target,
    handle: &Handle<HostCheck>,
    sent: &mut bool,
) -> Result<Outcome, Failure> {
    let conn = |e: russh::Error| Failure::Connect(describe(&e));
    let mut channel = handle.channel_open_session().await.map_err(conn)?;
    let request = target.request.to_string();
    debug!(mirror = %target.mirror.name, %request, "sending");
    *sent = true;
    channel
        .exec(true, request)
        .await
        .map_err(|e| Failure::Exchange(describe(&e)))?;
    let mut output = Captured::default();
    let mut exit_status = None;
    let mut signal = None;
    let mut exec_refused = false;
    // Keep reading after ExitStatus until Close (or the end): data may still follow it, and an
    // undrained channel stalls the whole session.
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => output.push(false, &data),
            ChannelMsg::ExtendedData { data, .. } => output.push(true, &data),
            ChannelMsg::ExitStatus { exit_status: s } => exit_status = Some(s),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(format!("{signal_name:?}")),
            ChannelMsg::Failure => exec_refused = true,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = handle
        .disconnect(Disconnect::ByApplication, "done", "en")
        .await;
    Ok(judge(exit_status, signal, exec_refused, output))
}

/// Turns what the channel delivered into an outcome. A missing exit status is never success.
fn judge(
    exit_status: Option<u32>,
    signal: Option<String>,
    exec_refused: bool,
    output: Captured,
) -> Outcome {
    let first_line = |bytes: &[u8]| {
        let text = crate::request::escape_bytes(bytes);
        text.split("\\x0a")
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned()
    };
    // The handler's errors are one stderr line starting "error:" (DESIGN.md section 4); prefer
    // it over noise a login shell may print first (e.g. profile scripts).
    let error_line = |bytes: &[u8]| {
        let text = crate::request::escape_bytes(bytes);
        text.split("\\x0a")
            .map(str::trim)
            .find(|l| l.starts_with("error:"))
            .map(str::to_owned)
            .unwrap_or_else(|| first_line(bytes))
    };
    let (stdout_line, stderr_line) = (first_line(&output.stdout), error_line(&output.stderr));
    let error = match (exit_status, &signal) {
        (Some(0), _) => None,
        (Some(code), _) => {
            let what = match code {
                1 => "the sync ran and rsync failed",
                64 => "handler refused a malformed request",
                75 => "temporary failure on the mirror; try again later",
                77 => "handler refused: not permitted (unknown module, dirs not allowed, or symlink)",
                78 => "handler configuration error on the mirror",
                _ => "handler failed",
            };
            let detail = if stderr_line.is_empty() { &stdout_line } else { &stderr_line };
            Some(if detail.is_empty() {
                format!("{what} (exit {code})")
            } else {
                format!("{what} (exit {code}): {detail}")
            })
        }
        (None, Some(sig)) => Some(format!("handler killed by signal {sig} (no exit status)")),
        (None, None) if exec_refused => Some("the server refused to run the request (no exit status)".into()),
        (None, None) => Some(
            "channel closed without an exit status (no exit status): the handler or the connection died"
                .into(),
        ),
    };
    let message = match &error {
        Some(e) => e.clone(),
        None if !stdout_line.is_empty() => stdout_line,
        None => "ok".into(),
    };
    Outcome {
        exit_status,
        error,
        message,
        output,
        attempts: 1,
        retriable: false,
    }
}

/// russh errors in words a person can act on.
fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        russh::Error::Disconnect => "the server closed the connection".into(),
        russh::Error::UnknownKey => "host key refused".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(stdout: &str, stderr: &str) -> Captured {
        Captured {
            stdout: stdout.into(),
            stderr: stderr.into(),
            truncated: false,
        }
    }

    #[test]
    fn exit_codes_become_messages() {
        let ok = judge(Some(0), None, false, captured("accepted\n", ""));
        assert_eq!((ok.error, ok.message.as_str()), (None, "accepted"));
        let e = judge(
            Some(77),
            None,
            false,
            captured("", "error: unknown module \"x\"\nmore\n"),
        );
        let text = e.error.unwrap();
        assert!(text.contains("not permitted"), "{text}");
        assert!(
            text.contains("(exit 77): error: unknown module \"x\""),
            "{text}"
        );
        for code in [1, 64, 75, 78, 3] {
            let e = judge(Some(code), None, false, Captured::default());
            assert!(e.error.unwrap().contains(&format!("exit {code}")));
        }
    }

    #[test]
    fn no_exit_status_is_a_failure() {
        for (sig, refused) in [
            (None, false),
            (Some("KILL".to_string()), false),
            (None, true),
        ] {
            let e = judge(None, sig, refused, captured("accepted\n", ""));
            assert!(e.error.unwrap().contains("no exit status"));
        }
    }

    #[test]
    fn output_is_bounded_and_escaped() {
        let mut c = Captured::default();
        for _ in 0..100 {
            c.push(false, &[b'x'; 1000]);
            c.push(true, &[b'y'; 1000]);
        }
        assert_eq!(c.stdout.len() + c.stderr.len(), OUTPUT_LIMIT);
        assert!(c.truncated);
        let e = judge(Some(1), None, false, captured("", "\x1b[31mbad\rline\n"));
        let text = e.error.unwrap();
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    }
}
