//! One SSH exchange with one mirror: connect, verify the host key, authenticate, send the request,
//! collect the answer. Every step is bounded: russh has no timeouts of its own. While the
//! session is up, SSH keepalives notice a dead mirror long before `timeout`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, Disconnect};
use tokio::time::timeout;
use tracing::debug;

use super::known_hosts::{HostKeyVerdict, KnownHosts};
use super::output::Captured;
use super::protocol::{Answer, Ended, Exec};
use super::registry::Mirror;
use crate::request::Request;

/// Everything needed to push to one mirror.
#[derive(Clone)]
pub struct SshTarget {
    pub mirror: Mirror,
    pub request: Request,
    /// What this mirror is sent for `request` (its protocol's rendering).
    pub command: Exec,
    pub known_hosts: Arc<KnownHosts>,
    /// `None`: authenticate with the keys ssh-agent offers.
    pub key: Option<Arc<PrivateKey>>,
}

impl SshTarget {
    pub fn new(
        mirror: Mirror,
        request: Request,
        known_hosts: Arc<KnownHosts>,
        key: Option<Arc<PrivateKey>>,
    ) -> SshTarget {
        let command = mirror.protocol.command(&request);
        SshTarget {
            mirror,
            request,
            command,
            known_hosts,
            key,
        }
    }
}

/// What the mirror answered, or why it could not.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub exit_status: Option<u32>,
    /// `None` means success.
    pub error: Option<String>,
    /// What the mirror said it did (`accepted`, `queued`, `synced`), on success.
    pub answer: Option<Answer>,
    /// A short line for people: the handler's answer on success.
    pub message: String,
    pub output: Captured,
    pub attempts: u32,
    /// Failed before the SSH session was up, for a reason another try might not hit.
    pub retriable: bool,
}

/// Pushes to one mirror, retrying connection-level failures `mirror.retries` times with backoff.
/// Only a failure before the SSH session is up is retried: once it is, the mirror may have
/// acted on the request, or is stalling, and another try would only cost another `timeout`.
pub async fn push(target: &SshTarget) -> Outcome {
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

/// How far one attempt got; decides whether its failure may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP, banner, key exchange, authentication.
    Connecting,
    /// Authenticated: the SSH session is up, the request not yet sent.
    SessionUp,
    /// The request was sent; waiting for the answer.
    Sent,
}

/// Why an attempt failed before the handler answered.
enum Failure {
    /// TCP, resolution, banner or key exchange trouble before the session is up: worth another try.
    Connect(String),
    /// Host key, authentication: trying again cannot help.
    Refused(String),
    /// With the SSH session up: the mirror may have acted on the request, or stalls; never retried.
    Exchange(String),
}

async fn attempt_once(target: &SshTarget) -> Outcome {
    let m = &target.mirror;
    let mut phase = Phase::Connecting;
    let result = timeout(m.timeout, exchange(target, &mut phase)).await;
    let limit = humantime::format_duration(m.timeout);
    let failure = match result {
        Ok(Ok(outcome)) => return outcome,
        Ok(Err(f)) => f,
        Err(_) => match phase {
            Phase::Connecting => Failure::Connect(format!(
                "timed out after {limit} before the SSH session was up (timeout)"
            )),
            Phase::SessionUp => Failure::Exchange(format!(
                "timed out after {limit} with the SSH session up, before the request was sent \
                 (timeout; not retried: the mirror is up but stalls)"
            )),
            Phase::Sent => Failure::Exchange(format!(
                "timed out after {limit} waiting for the handler's answer (timeout)"
            )),
        },
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

async fn exchange(target: &SshTarget, phase: &mut Phase) -> Result<Outcome, Failure> {
    let m = &target.mirror;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((m.host.as_str(), m.port))
        .await
        .map_err(|e| Failure::Connect(format!("cannot resolve {}: {e}", m.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::Connect(format!("{} has no address", m.host)));
    }
    let mut last = None;
    let mut session = None;
    // Every resolved address is tried, each with its own connect_timeout, as OpenSSH does.
    for addr in addrs {
        debug!(mirror = %m.name, %addr, "connecting");
        match timeout(m.connect_timeout, connect(target, addr)).await {
            Ok(Ok(s)) => {
                session = Some(s);
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
    let Some((handle, events)) = session else {
        return Err(Failure::Connect(last.unwrap_or_default()));
    };
    *phase = Phase::SessionUp;
    let outcome = run_request(target, &handle, &events, phase).await;
    let refused = events.refused_channels();
    if refused > 0 {
        debug!(mirror = %m.name, refused, "refused channels the mirror tried to open");
    }
    outcome
}

/// What the session's event loop tells us besides channel data: why it refused a host key,
/// why the session ended, how many channels the server tried to open towards us.
#[derive(Default)]
struct Events {
    refusal: Mutex<Option<String>>,
    ended: Mutex<Option<String>>,
    refused_channels: Mutex<u64>,
}

impl Events {
    fn set(slot: &Mutex<Option<String>>, why: String) {
        if let Ok(mut s) = slot.lock() {
            s.get_or_insert(why);
        }
    }

    fn take(slot: &Mutex<Option<String>>) -> Option<String> {
        slot.lock().ok().and_then(|mut s| s.take())
    }

    fn refused_channels(&self) -> u64 {
        self.refused_channels.lock().map(|n| *n).unwrap_or(0)
    }
}

/// The russh handler: decides on the host key, refuses every channel the server opens towards
/// us, and remembers why the session ended.
struct HostCheck {
    host: String,
    port: u16,
    keepalive_interval: Duration,
    known_hosts: Arc<KnownHosts>,
    events: Arc<Events>,
}

impl HostCheck {
    fn refuse(&self, why: String) {
        Events::set(&self.events.refusal, why);
    }

    /// A mirror only answers our one session channel; it has no business opening channels to
    /// the master (forwarded ports, X11, agent, sessions), whatever it claims.
    async fn refuse_channel(&self, reply: client::ChannelOpenHandle) -> Result<(), russh::Error> {
        if let Ok(mut n) = self.events.refused_channels.lock() {
            *n += 1;
        }
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
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
            HostKeyVerdict::Trusted { .. } => Ok(true),
            other => {
                self.refuse(format!("{other} ({})", self.known_hosts.path.display()));
                Ok(false)
            }
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel(reply).await
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            client::DisconnectReason::ReceivedDisconnect(info) => format!(
                "the mirror closed the SSH session ({})",
                crate::request::escape_bytes(info.message.as_bytes())
            ),
            client::DisconnectReason::Error(e) => session_error(e, self.keepalive_interval),
        };
        Events::set(&self.events.ended, why);
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// Why the SSH session ended under us, in words a person can act on.
fn session_error(e: &russh::Error, keepalive_interval: Duration) -> String {
    match e {
        russh::Error::KeepaliveTimeout => format!(
            "the mirror stopped answering: {} SSH keepalives {} apart went unanswered \
             (the mirror or the network died)",
            KEEPALIVE_MAX,
            humantime::format_duration(keepalive_interval)
        ),
        other => format!("the SSH session failed: {}", describe(other)),
    }
}

/// Keepalives sent without any answer before the session is given up (OpenSSH's
/// ServerAliveCountMax default); it ends at the next interval, about 4 intervals after the
/// mirror last said anything.
const KEEPALIVE_MAX: usize = 3;

fn config(keepalive_interval: Duration) -> Arc<client::Config> {
    let preferred = russh::Preferred {
        // zlib@openssh.com has desync reports, and requests are tiny: never offer compression.
        compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
        ..Default::default()
    };
    Arc::new(client::Config {
        preferred,
        nodelay: true,
        // A wait for `synced` can last as long as a sync: keep NAT state alive and notice a
        // dead mirror long before `timeout` (which still bounds the whole exchange).
        keepalive_interval: Some(keepalive_interval),
        keepalive_max: KEEPALIVE_MAX,
        ..Default::default()
    })
}

async fn connect(
    target: &SshTarget,
    addr: SocketAddr,
) -> Result<(Handle<HostCheck>, Arc<Events>), Failure> {
    let m = &target.mirror;
    let events = Arc::new(Events::default());
    let check = HostCheck {
        host: m.host.clone(),
        port: m.port,
        keepalive_interval: m.keepalive_interval,
        known_hosts: target.known_hosts.clone(),
        events: events.clone(),
    };
    let mut handle = match client::connect(config(m.keepalive_interval), addr, check).await {
        Ok(h) => h,
        Err(e) => {
            return Err(match Events::take(&events.refusal) {
                Some(why) => Failure::Refused(why),
                None => Failure::Connect(describe(&e)),
            });
        }
    };
    authenticate(target, &mut handle).await?;
    Ok((handle, events))
}

async fn authenticate(target: &SshTarget, handle: &mut Handle<HostCheck>) -> Result<(), Failure> {
    let user = target.mirror.user.as_str();
    let conn =
        |e: russh::Error| Failure::Connect(format!("during authentication: {}", describe(&e)));
    // Name the key that was offered, as `ssh-keygen -lf` prints it: the mirror admin can
    // compare it with the line in authorized_keys, where a mangled key or a typo in the
    // options makes sshd skip the line without telling the client why.
    let refused = |offered: String| {
        Failure::Refused(format!(
            "authentication refused for user {user:?}: the server did not accept {offered}; \
             check that key's line in the mirror's authorized_keys for typos"
        ))
    };
    if let Some(key) = &target.key {
        let offered = match &target.mirror.identity {
            Some(path) => format!(
                "the key {} ({})",
                fingerprint(key.public_key()),
                path.display()
            ),
            None => format!("the key {}", fingerprint(key.public_key())),
        };
        let hash = rsa_hash(handle, key.public_key()).await.map_err(conn)?;
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(conn)?;
        return if result.success() {
            Ok(())
        } else {
            Err(refused(offered))
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
    let mut offered = Vec::new();
    for id in identities {
        let AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        offered.push(fingerprint(&key));
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
    Err(refused(if offered.is_empty() {
        "any key: ssh-agent holds none".to_owned()
    } else {
        format!("the ssh-agent key(s) {}", offered.join(", "))
    }))
}

/// `SHA256:...`, as `ssh-keygen -lf` prints a key's fingerprint.
fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
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
    target: &SshTarget,
    handle: &Handle<HostCheck>,
    events: &Events,
    phase: &mut Phase,
) -> Result<Outcome, Failure> {
    // The session is up: whatever fails from here on is not retried.
    let after = |e: russh::Error| Failure::Exchange(describe(&e));
    let mut channel = handle.channel_open_session().await.map_err(after)?;
    let command = target.command.text.as_str();
    debug!(mirror = %target.mirror.name, %command, "sending");
    *phase = Phase::Sent;
    channel.exec(true, command).await.map_err(after)?;
    let mut ended = Ended::default();
    let mut closed = false;
    // Keep reading after ExitStatus until Close (or the end): data may still follow it, and an
    // undrained channel stalls the whole session.
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => ended.output.push(false, &data),
            ChannelMsg::ExtendedData { data, .. } => ended.output.push(true, &data),
            ChannelMsg::ExitStatus { exit_status } => match ended.exit_status {
                None => ended.exit_status = Some(exit_status),
                // Bounded: a mirror that repeats itself cannot grow this past a few entries.
                Some(_) if ended.later_exit_statuses.len() < 8 => {
                    ended.later_exit_statuses.push(exit_status)
                }
                Some(_) => {}
            },
            ChannelMsg::ExitSignal { signal_name, .. } => {
                ended.signal = Some(format!("{signal_name:?}"))
            }
            ChannelMsg::Failure => ended.exec_refused = true,
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    if !closed {
        // The channel ended without a close: the session itself died (e.g. missed keepalives).
        ended.session_error = Events::take(&events.ended);
    }
    let _ = handle
        .disconnect(Disconnect::ByApplication, "done", "en")
        .await;
    let verdict = target.mirror.protocol.judge(&ended);
    Ok(Outcome {
        exit_status: ended.exit_status,
        error: verdict.error,
        answer: verdict.answer,
        message: verdict.message,
        output: ended.output,
        attempts: 1,
        retriable: false,
    })
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

/// How one target ended, and when: `begun` is when the exchange with this mirror started (a
/// session's connect; for a bus mirror, the publish its trigger went out in), so that
/// `begun + elapsed` is when its answer arrived.
pub struct Done {
    pub outcome: Outcome,
    pub begun: Instant,
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_session_is_named_with_its_keepalives() {
        let text = session_error(&russh::Error::KeepaliveTimeout, Duration::from_secs(15));
        assert!(text.contains("3 SSH keepalives 15s apart"), "{text}");
        let text = session_error(&russh::Error::Disconnect, Duration::from_secs(15));
        assert!(text.contains("closed the connection"), "{text}");
    }
}
