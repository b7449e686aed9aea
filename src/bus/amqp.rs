//! The AMQP 0-9-1 client (amqprs on tokio; TLS through rustls on ring): connect from an
//! `amqp://` / `amqps://` URL with an optional CA, client certificate and key, publish with
//! publisher confirms and fedora-messaging's wire properties, declare a durable queue bound to
//! topics, consume with manual acks.
//!
//! One [`Client`] is one connection with one channel. It does not reconnect by itself: a
//! caller that must survive broker restarts loops over [`Client::connect`] with a [`Backoff`]
//! and declares what it needs again, because after a reconnect the delivery tags, the
//! consumer and the confirm sequence of the old channel mean nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicGetArguments, BasicPublishArguments,
    BasicQosArguments, BasicRejectArguments, Channel, ConfirmSelectArguments, ConsumerMessage,
    QueueBindArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use amqprs::{
    Ack, BasicProperties, Cancel, Close, CloseChannel, FieldTable, FieldValue, Nack, Return,
};
use tokio::sync::{mpsc, oneshot, Mutex};

/// Bounds TCP connect, TLS and the AMQP handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a publish waits for the broker's confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// The system CA bundle, used when no `ca` is configured.
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client error: what failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpError {
    /// The URL or the TLS files are wrong: retrying cannot help.
    Config(String),
    /// The broker could not be reached or dropped us: retry later.
    Connection(String),
    /// The broker refused an operation (permissions, a missing exchange, a nack).
    Refused(String),
    /// A mandatory publish reached no queue: the broker returned it (`NO_ROUTE`).
    Unroutable(String),
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmqpError::Config(e) => write!(f, "broker config: {e}"),
            AmqpError::Connection(e) => write!(f, "broker connection: {e}"),
            AmqpError::Refused(e) => write!(f, "broker refused: {e}"),
            AmqpError::Unroutable(e) => write!(f, "no queue is bound to it: {e}"),
        }
    }
}

impl std::error::Error for AmqpError {}

fn conn_err(e: impl fmt::Display) -> AmqpError {
    AmqpError::Connection(e.to_string())
}

/// Where the broker is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost` or `amqps://...` (vhost percent-encoded, `%2F` = `/`).
    pub url: String,
    /// CA bundle for amqps (default: the system's).
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for amqps brokers that require one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A parsed broker URL.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    password: String,
    pub vhost: String,
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl BrokerUrl {
    /// `amqp[s]://[user[:password]@]host[:port][/vhost]`; defaults: guest/guest, 5672 (5671
    /// for amqps), vhost `/`.
    pub fn parse(url: &str) -> Result<Self, AmqpError> {
        let bad = |what: &str| AmqpError::Config(format!("url: {what}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("amqps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("amqp://") {
            (false, r)
        } else {
            return Err(bad("must start with amqp:// or amqps://"));
        };
        let (authority, vhost) = match rest.split_once('/') {
            Some((a, v)) => (a, Some(v)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (percent_decode(n)?, percent_decode(p)?),
                None => (percent_decode(u)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_owned(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if tls => 5671,
            None => 5672,
        };
        let vhost = match vhost {
            None | Some("") => "/".to_owned(),
            Some(v) => percent_decode(v)?,
        };
        Ok(BrokerUrl {
            tls,
            host,
            port,
            user,
            password,
            vhost,
        })
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}@{}:{}/{}",
            if self.tls { "amqps" } else { "amqp" },
            self.user,
            self.host,
            self.port,
            self.vhost.replace('%', "%25").replace('/', "%2F")
        )
    }
}

fn percent_decode(s: &str) -> Result<String, AmqpError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| AmqpError::Config(format!("url: bad escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| AmqpError::Config("url: not UTF-8".into()))
}

/// The TLS set-up: roots from `ca` (or the system bundle), an optional client certificate.
fn tls_adaptor(cfg: &BrokerConfig, host: &str) -> Result<TlsAdaptor, AmqpError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let config_err = |what: String| AmqpError::Config(what);
    let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, AmqpError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| config_err(format!("{}: {e}", path.display())))
    };
    let ca = cfg.ca.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_CA));
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&ca)? {
        roots
            .add(c)
            .map_err(|e| config_err(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("tls: {e}")))?
        .with_root_certificates(roots);
    let config = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| config_err(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| config_err(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_err(
                "cert and key go together: set both or neither".into(),
            ))
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(TlsAdaptor::new(connector, host.to_owned()))
}

/// Why a connection could not be opened, in words an operator can act on: the TLS failures
/// that are a matter of files (`ca`, `cert`, `key`) say which file, on one line.
fn explain_open_error(cfg: &BrokerConfig, url: &BrokerUrl, e: &str) -> String {
    let e = e.replace(['\n', '\r'], " ");
    let at = url.redacted();
    if !url.tls {
        return format!("{at}: {e}");
    }
    let ca = cfg.ca.as_ref().map_or_else(
        || format!("the system's bundle {SYSTEM_CA} (no `ca` set)"),
        |p| p.display().to_string(),
    );
    if e.contains("UnknownIssuer") || e.contains("invalid peer certificate") {
        format!(
            "{at}: TLS: the broker's certificate is not signed by the CA in {ca} ({e}); set `ca` \
             to the CA certificate that signed the broker's"
        )
    } else if e.contains("CertificateRequired") || e.contains("alert") {
        match &cfg.cert {
            None => format!(
                "{at}: TLS: the broker wants a client certificate ({e}); set `cert` and `key`"
            ),
            Some(cert) => format!(
                "{at}: TLS: the broker refused the client certificate {} ({e}); it must be \
                 signed by a CA the broker trusts",
                cert.display()
            ),
        }
    } else {
        format!("{at}: {e}")
    }
}

/// Publisher confirms in flight: sequence number → who waits for it.
#[derive(Default)]
struct Confirms {
    next: u64,
    waiting: BTreeMap<u64, InFlight>,
    /// Set when the channel closed: every later publish fails at once.
    closed: Option<String>,
}

/// One publish waiting for its confirm.
struct InFlight {
    tx: oneshot::Sender<Result<(), AmqpError>>,
    message_id: String,
    /// Set by a `basic.return`, which the broker sends before the confirm of the same message:
    /// the confirm then means "unroutable", not "delivered".
    returned: Option<String>,
}

impl Confirms {
    fn settle(&mut self, tag: u64, multiple: bool, outcome: Result<(), AmqpError>) {
        let tags: Vec<u64> = if multiple {
            self.waiting.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        for t in tags {
            if let Some(f) = self.waiting.remove(&t) {
                let outcome = match (f.returned, &outcome) {
                    (Some(why), Ok(())) => Err(AmqpError::Unroutable(why)),
                    _ => outcome.clone(),
                };
                let _ = f.tx.send(outcome);
            }
        }
    }

    /// A returned message: the oldest publish in flight with its `message_id` (publishes are
    /// confirmed in order, and a return comes before its confirm).
    fn returned(&mut self, message_id: Option<&str>, why: String) {
        let Some(id) = message_id else { return };
        if let Some(f) = self
            .waiting
            .values_mut()
            .find(|f| f.message_id == id && f.returned.is_none())
        {
            f.returned = Some(why);
        }
    }

    fn fail_all(&mut self, why: String) {
        for (_, f) in std::mem::take(&mut self.waiting) {
            let _ = f.tx.send(Err(AmqpError::Refused(why.clone())));
        }
        self.closed = Some(why);
    }
}

struct ChannelEvents {
    confirms: Arc<std::sync::Mutex<Confirms>>,
}

#[async_trait::async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        let why = format!("channel closed: {close}");
        lock(&self.confirms).fail_all(why);
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        lock(&self.confirms).fail_all("consumer cancelled by the broker".into());
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, _active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        lock(&self.confirms).settle(ack.delivery_tag(), ack.mutiple(), Ok(()));
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        lock(&self.confirms).settle(
            nack.delivery_tag(),
            nack.multiple(),
            Err(AmqpError::Refused("the broker nacked the message".into())),
        );
    }
    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        props: BasicProperties,
        _: Vec<u8>,
    ) {
        let why = format!(
            "the broker returned it: {} {} (exchange {:?}, routing key {:?})",
            ret.reply_code(),
            ret.reply_text(),
            ret.exchange(),
            ret.routing_key()
        );
        lock(&self.confirms).returned(props.message_id().map(String::as_str), why);
    }
}

struct ConnectionEvents {
    confirms: Arc<std::sync::Mutex<Confirms>>,
}

#[async_trait::async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        lock(&self.confirms).fail_all(format!("connection closed: {close}"));
        Ok(())
    }
    async fn blocked(&mut self, _: &Connection, _reason: String) {}
    async fn unblocked(&mut self, _: &Connection) {}
    async fn secret_updated(&mut self, _: &Connection) {}
}

fn lock(m: &std::sync::Mutex<Confirms>) -> std::sync::MutexGuard<'_, Confirms> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message to publish, with fedora-messaging's wire properties.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub body: Vec<u8>,
    /// `message_id`: the trigger's or ack's id.
    pub message_id: String,
    pub sent_at: SystemTime,
}

/// One delivery from the queue; ack or reject it with [`Client::ack`] / [`Client::reject`].
#[derive(Debug)]
pub struct Delivery {
    pub tag: u64,
    pub routing_key: String,
    pub redelivered: bool,
    pub message_id: Option<String>,
    pub body: Vec<u8>,
}

/// One connection and one channel in confirm mode.
pub struct Client {
    connection: Connection,
    channel: Channel,
    confirms: Arc<std::sync::Mutex<Confirms>>,
    /// Serialises publishes so that confirm sequence numbers follow publish order.
    publish_lock: Mutex<()>,
}

impl Client {
    /// Connects, opens a channel and turns on publisher confirms. `name` is shown by the
    /// broker's management tools (`connection_name`).
    pub async fn connect(cfg: &BrokerConfig, name: &str) -> Result<Client, AmqpError> {
        let url = BrokerUrl::parse(&cfg.url)?;
        let mut args = OpenConnectionArguments::new(&url.host, url.port, &url.user, &url.password);
        args.virtual_host(&url.vhost)
            .connection_name(name)
            .heartbeat(30);
        if url.tls {
            args.tls_adaptor(tls_adaptor(cfg, &url.host)?);
            if cfg.cert.is_some() && url.password.is_empty() {
                // A certificate and no password: the broker identifies us by the certificate.
                args.credentials(SecurityCredentials::new_external());
            }
        } else if cfg.ca.is_some() || cfg.cert.is_some() || cfg.key.is_some() {
            return Err(AmqpError::Config(
                "ca, cert and key need an amqps:// url".into(),
            ));
        }
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&args))
            .await
            .map_err(|_| {
                AmqpError::Connection(format!(
                    "{}: no answer within {}s",
                    url.redacted(),
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| AmqpError::Connection(explain_open_error(cfg, &url, &e.to_string())))?;
        let confirms = Arc::new(std::sync::Mutex::new(Confirms {
            next: 1,
            ..Default::default()
        }));
        connection
            .register_callback(ConnectionEvents {
                confirms: confirms.clone(),
            })
            .await
            .map_err(conn_err)?;
        let channel = connection.open_channel(None).await.map_err(conn_err)?;
        channel
            .register_callback(ChannelEvents {
                confirms: confirms.clone(),
            })
            .await
            .map_err(conn_err)?;
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .map_err(conn_err)?;
        Ok(Client {
            connection,
            channel,
            confirms,
            publish_lock: Mutex::new(()),
        })
    }

    /// Publishes `msg` to `exchange` with `routing_key` and waits for the broker's confirm.
    /// Properties: `content_type=application/json`, `delivery_mode=2`, `message_id`, headers
    /// `fedora_messaging_schema = "base.message"` and `sent-at`.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &Outgoing,
    ) -> Result<(), AmqpError> {
        self.publish_with(exchange, routing_key, msg, false).await
    }

    /// [`Client::publish`] with the `mandatory` flag: a message no queue is bound for comes
    /// back, and is an [`AmqpError::Unroutable`] rather than a confirm that means nothing.
    pub async fn publish_mandatory(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &Outgoing,
    ) -> Result<(), AmqpError> {
        self.publish_with(exchange, routing_key, msg, true).await
    }

    async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &Outgoing,
        mandatory: bool,
    ) -> Result<(), AmqpError> {
        let rx = {
            let _order = self.publish_lock.lock().await;
            let (tx, rx) = oneshot::channel();
            {
                let mut c = lock(&self.confirms);
                if let Some(why) = &c.closed {
                    return Err(AmqpError::Connection(why.clone()));
                }
                let seq = c.next;
                c.next += 1;
                c.waiting.insert(
                    seq,
                    InFlight {
                        tx,
                        message_id: msg.message_id.clone(),
                        returned: None,
                    },
                );
            }
            let mut headers = FieldTable::new();
            headers.insert(
                "fedora_messaging_schema".try_into().expect("short name"),
                FieldValue::S("base.message".try_into().expect("short value")),
            );
            headers.insert(
                "sent-at".try_into().expect("short name"),
                FieldValue::S(
                    super::envelope::format_time(msg.sent_at)
                        .as_str()
                        .try_into()
                        .expect("short value"),
                ),
            );
            let props = BasicProperties::default()
                .with_content_type("application/json")
                .with_delivery_mode(amqprs::DELIVERY_MODE_PERSISTENT)
                .with_message_id(&msg.message_id)
                .with_headers(headers)
                .finish();
            let mut args = BasicPublishArguments::new(exchange, routing_key);
            args.mandatory(mandatory);
            self.channel
                .basic_publish(props, msg.body.clone(), args)
                .await
                .map_err(conn_err)?;
            rx
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AmqpError::Connection("the channel went away".into())),
            Err(_) => Err(AmqpError::Connection(format!(
                "no confirm within {}s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Declares the durable queue `queue` and binds it to `exchange` for every topic.
    pub async fn declare_queue(
        &self,
        queue: &str,
        exchange: &str,
        topics: &[String],
    ) -> Result<(), AmqpError> {
        let mut args = QueueDeclareArguments::durable_client_named(queue);
        self.channel
            .queue_declare(args.finish())
            .await
            .map_err(|e| AmqpError::Refused(format!("declare queue {queue:?}: {e}")))?;
        for topic in topics {
            self.channel
                .queue_bind(QueueBindArguments::new(queue, exchange, topic))
                .await
                .map_err(|e| {
                    AmqpError::Refused(format!("bind {queue:?} to {exchange:?} {topic:?}: {e}"))
                })?;
        }
        Ok(())
    }

    /// A private queue `queue` for this connection (exclusive: deleted with the connection)
    /// bound to `exchange` for `topic`, consumed without acks: what the master listens for
    /// acks on. Nothing in it needs to survive the connection: an ack that arrives once the
    /// master has gone has no one to tell.
    pub async fn listen_private(
        &self,
        queue: &str,
        exchange: &str,
        topic: &str,
    ) -> Result<Consumer, AmqpError> {
        let mut declare = QueueDeclareArguments::new(queue);
        declare.exclusive(true).auto_delete(true);
        self.channel
            .queue_declare(declare.finish())
            .await
            .map_err(|e| AmqpError::Refused(format!("declare queue {queue:?}: {e}")))?;
        self.channel
            .queue_bind(QueueBindArguments::new(queue, exchange, topic))
            .await
            .map_err(|e| {
                AmqpError::Refused(format!("bind {queue:?} to {exchange:?} {topic:?}: {e}"))
            })?;
        let mut args = BasicConsumeArguments::new(queue, "");
        args.manual_ack(false).exclusive(true);
        let (_tag, rx) = self
            .channel
            .basic_consume_rx(args.finish())
            .await
            .map_err(|e| AmqpError::Refused(format!("consume {queue:?}: {e}")))?;
        Ok(Consumer { rx })
    }

    /// Starts consuming `queue` with manual acks, at most `prefetch` unacked deliveries at a
    /// time (this bounds what the client holds in memory).
    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, AmqpError> {
        self.channel
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(conn_err)?;
        let mut args = BasicConsumeArguments::new(queue, "");
        args.manual_ack(true);
        let (_tag, rx) = self
            .channel
            .basic_consume_rx(args.finish())
            .await
            .map_err(|e| AmqpError::Refused(format!("consume {queue:?}: {e}")))?;
        Ok(Consumer { rx })
    }

    /// One message from `queue` (`basic.get`, to be acked or rejected), or `None` when it is
    /// empty: for taking a queue one message at a time.
    pub async fn get(&self, queue: &str) -> Result<Option<Delivery>, AmqpError> {
        let got = self
            .channel
            .basic_get(BasicGetArguments::new(queue))
            .await
            .map_err(conn_err)?;
        Ok(got.map(|(ok, props, body)| Delivery {
            tag: ok.delivery_tag(),
            routing_key: ok.routing_key().clone(),
            redelivered: ok.redelivered(),
            message_id: props.message_id().cloned(),
            body,
        }))
    }

    /// Removes the message at the head of `queue` unread: fetched without ack, so the broker
    /// drops it as it sends it, even when this client then cannot decode it (which ends the
    /// connection). For a message that stops every session that fetches it.
    pub async fn discard_head(&self, queue: &str) -> Result<bool, AmqpError> {
        let mut args = BasicGetArguments::new(queue);
        args.no_ack(true);
        self.channel
            .basic_get(args)
            .await
            .map(|m| m.is_some())
            .map_err(conn_err)
    }

    pub async fn ack(&self, tag: u64) -> Result<(), AmqpError> {
        self.channel
            .basic_ack(BasicAckArguments::new(tag, false))
            .await
            .map_err(conn_err)
    }

    /// Rejects a delivery; with `requeue` false the broker drops it (or dead-letters it).
    pub async fn reject(&self, tag: u64, requeue: bool) -> Result<(), AmqpError> {
        self.channel
            .basic_reject(BasicRejectArguments::new(tag, requeue))
            .await
            .map_err(conn_err)
    }

    /// Whether the connection and channel are still open.
    pub fn is_open(&self) -> bool {
        self.connection.is_open() && self.channel.is_open()
    }

    /// Resolves when the connection fails (broker gone, network lost).
    pub async fn closed(&self) {
        if self.connection.is_open() {
            self.connection.listen_network_io_failure().await;
        }
    }

    pub async fn close(self) {
        let _ = self.channel.close().await;
        let _ = self.connection.close().await;
    }
}

/// Deliveries of one consumer.
pub struct Consumer {
    rx: mpsc::UnboundedReceiver<ConsumerMessage>,
}

impl Consumer {
    /// The next delivery; `None` when the channel or connection closed.
    pub async fn recv(&mut self) -> Option<Delivery> {
        loop {
            let m = self.rx.recv().await?;
            let (Some(deliver), Some(body)) = (m.deliver, m.content) else {
                continue;
            };
            return Some(Delivery {
                tag: deliver.delivery_tag(),
                routing_key: deliver.routing_key().clone(),
                redelivered: deliver.redelivered(),
                message_id: m.basic_properties.and_then(|p| p.message_id().cloned()),
                body,
            });
        }
    }

    /// A delivery already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        loop {
            let m = self.rx.try_recv().ok()?;
            let (Some(deliver), Some(body)) = (m.deliver, m.content) else {
                continue;
            };
            return Some(Delivery {
                tag: deliver.delivery_tag(),
                routing_key: deliver.routing_key().clone(),
                redelivered: deliver.redelivered(),
                message_id: m.basic_properties.and_then(|p| p.message_id().cloned()),
                body,
            });
        }
    }
}

/// Bounded exponential backoff for reconnects: 0.5 s doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(500),
            max,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: start from the shortest wait again.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_escapes() {
        let u = BrokerUrl::parse("amqp://mirrorpush:s%40cret@broker.example.org:5673/%2F").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.user.as_str(),
                u.password.as_str(),
                u.vhost.as_str()
            ),
            (
                false,
                "broker.example.org",
                5673,
                "mirrorpush",
                "s@cret",
                "/"
            )
        );
        assert_eq!(
            u.redacted(),
            "amqp://mirrorpush@broker.example.org:5673/%2F"
        );
        let f = BrokerUrl::parse("amqps://fedora:@rabbitmq.fedoraproject.org/%2Fpublic_pubsub")
            .unwrap();
        assert_eq!(
            (f.tls, f.port, f.vhost.as_str(), f.password.as_str()),
            (true, 5671, "/public_pubsub", "")
        );
        let d = BrokerUrl::parse("amqp://127.0.0.1").unwrap();
        assert_eq!(
            (d.user.as_str(), d.port, d.vhost.as_str()),
            ("guest", 5672, "/")
        );
        for bad in ["http://x", "amqp://", "amqp://h:port", "amqp://h/%zz"] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(AmqpError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn confirms_settle_single_and_multiple() {
        let mut c = Confirms::default();
        let mut rxs = Vec::new();
        for t in 1..=5 {
            let (tx, rx) = oneshot::channel();
            let message_id = format!("m{}", t.min(4));
            c.waiting.insert(
                t,
                InFlight {
                    tx,
                    message_id,
                    returned: None,
                },
            );
            rxs.push(rx);
        }
        c.settle(2, true, Ok(()));
        c.settle(3, false, Err(AmqpError::Refused("nack".into())));
        // A return marks the oldest publish with that id; its confirm then fails it.
        c.returned(Some("m4"), "312 NO_ROUTE".into());
        c.settle(4, false, Ok(()));
        c.fail_all("gone".into());
        let got: Vec<_> = rxs.into_iter().map(|mut r| r.try_recv().unwrap()).collect();
        assert_eq!(
            got,
            vec![
                Ok(()),
                Ok(()),
                Err(AmqpError::Refused("nack".into())),
                Err(AmqpError::Unroutable("312 NO_ROUTE".into())),
                Err(AmqpError::Refused("gone".into()))
            ]
        );
        assert!(c.closed.is_some());
    }

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::new(Duration::from_secs(4));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }
}
