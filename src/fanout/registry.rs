//! The master registry (`mirrors.toml`, README "Master configuration: mirrors.toml"): which
//! mirrors exist, how to reach them and how to push them.
//!
//! Parsing is strict: unknown keys, duplicate names, bad durations and bad module names are errors
//! that name the file, the line and the key, because an operator has to find and fix them by hand.
//! Relative `identity` / `known_hosts` paths are resolved against the registry file's directory,
//! so a registry and its keys can be moved together.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use russh::keys::PublicKey;

use super::protocol::Protocol;
use crate::request::ModuleName;
use crate::verify::spec::{ProofSpec, RawUrl, UrlSpec};

/// Where the registry lives unless `--registry` or `MIRRORPUSH_REGISTRY` says otherwise.
pub const DEFAULT_REGISTRY: &str = "/etc/mirrorpush/mirrors.toml";
const DEFAULT_USER: &str = "mirrorpush";
const DEFAULT_PORT: u16 = 22;
pub const DEFAULT_KNOWN_HOSTS: &str = "/etc/mirrorpush/known_hosts";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_CONCURRENCY: usize = 64;
/// Often enough to keep NAT and firewall state alive, rare enough to cost nothing at 1000
/// waiting sessions; a dead peer is noticed after about 4 intervals (3 unanswered, as OpenSSH's
/// ServerAliveCountMax).
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// ftpsync archive names become a config file name (`ftpsync-<archive>.conf`) and are split
/// into words by ftpsync's shell: letters, digits, `.`, `_` and `-` only.
const MAX_ARCHIVE_LEN: usize = 64;
/// Where pushes are recorded unless `--history` or `[defaults] history` says otherwise.
pub const DEFAULT_HISTORY: &str = "/var/lib/mirrorpush/history.db";

/// A parsed, validated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pub path: PathBuf,
    pub concurrency: usize,
    /// What a push does with later stages once a mirror of an earlier stage failed.
    pub after_failed_stage: StagePolicy,
    /// The `[bus]` table: how bus mirrors are reached. `None` when absent.
    pub bus: Option<Bus>,
    pub mirrors: Vec<Mirror>,
    /// The push history database (`[defaults] history`).
    pub history: PathBuf,
    /// The master's trees that `verify` compares mirrors with (`[verify]`).
    pub verify: VerifyTrees,
}

/// `[verify] tree` and `[verify.trees]`: the master's copy of each module.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyTrees {
    pub tree: Option<PathBuf>,
    pub trees: std::collections::BTreeMap<String, PathBuf>,
}

impl VerifyTrees {
    /// The master's tree of `module`: its own entry, else the shared `tree`.
    pub fn of(&self, module: &str) -> Option<&Path> {
        self.trees
            .get(module)
            .or(self.tree.as_ref())
            .map(PathBuf::as_path)
    }
}

/// `[defaults] after_failed_stage`: whether a later stage starts after a mirror of an earlier
/// stage failed. Debian's runmirrors waits for its stage-1 mirrors to end, then pushes stage 2
/// whatever they answered (logging the ones that never finished): `Warn` does that and says
/// so. `Hold` is for networks whose later stages pull from the earlier ones, where a failed
/// hub means its leaves would only fetch stale content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StagePolicy {
    /// Start the later stages, with a warning naming the failed mirrors (the default).
    #[default]
    Warn,
    /// Start no later stage; its mirrors are reported as held back (a failure).
    Hold,
}

impl StagePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StagePolicy::Warn => "warn",
            StagePolicy::Hold => "hold",
        }
    }
}

/// One mirror with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Private key file; `None` means "ask ssh-agent".
    pub identity: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// SSH keepalive period while a session is up (waits for `synced` can be long).
    pub keepalive_interval: Duration,
    pub retries: u32,
    /// The registry says this mirror reports completion (`synced`): a hub or a stage-1 mirror
    /// whose handler runs the module in wait mode.
    pub wait: bool,
    pub protocol: Protocol,
    /// SSH (the default) or the message bus. A bus mirror has no host or port (both empty/0).
    pub transport: Transport,
    pub modules: Vec<ModuleName>,
    pub stage: u32,
    pub tags: Vec<String>,
    pub enabled: bool,
    /// The module's public tree on this mirror (`url`), for `verify`.
    pub url: Option<UrlSpec>,
    /// What proves this mirror carries a push (`verify`).
    pub verify: Option<ProofSpec>,
}

/// How a push reaches a mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// An SSH session to `host:port`, running its forced command.
    Ssh,
    /// A signed trigger published on the registry's `[bus]`, read by the mirror's
    /// `mirrorpush-listen`. Its acks are verified against `ack_key`; without one the master
    /// cannot tell its acks from forged ones, so it waits for none.
    Bus { ack_key: Option<PublicKey> },
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::Bus { .. } => "bus",
        }
    }

    pub fn is_bus(&self) -> bool {
        matches!(self, Transport::Bus { .. })
    }
}

/// The `[bus]` table: the broker, where triggers go and acks come back, and the key that
/// signs the triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct Bus {
    /// `amqp://` or `amqps://` URL; may hold a password, so it is never printed whole.
    pub url: String,
    pub exchange: String,
    pub topic_prefix: String,
    /// The signer's principal, as mirrors list it in their `allowed_signers`.
    pub origin: String,
    /// The master binds a private queue to this before it publishes.
    pub ack_topic: String,
    /// Private key that signs triggers (`[defaults].identity` unless set).
    pub signing_key: PathBuf,
    /// TLS: the CA to trust (system roots otherwise) and a client certificate and key.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Bus {
    /// The routing key of a trigger for `module`.
    pub fn routing_key(&self, module: &ModuleName) -> String {
        format!("{}mirrorpush.sync.{module}", self.topic_prefix)
    }

    /// The URL with any password replaced by `***`, for people and logs.
    pub fn url_shown(&self) -> String {
        redact_url(&self.url)
    }
}

/// `amqp://user:secret@host/vhost` -> `amqp://user:***@host/vhost`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Mirror {
    /// How this mirror is reached, as recorded in the push history (`"ssh"` or `"bus"`).
    pub fn transport(&self) -> &'static str {
        self.transport.name()
    }

    /// `host:port` as a person would type it (`[v6]:port` for IPv6 literals).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn carries(&self, module: &ModuleName) -> bool {
        self.modules.contains(module)
    }

    /// Whether this mirror is expected to answer `synced` (registry `wait = true`, or a
    /// protocol that always syncs in the foreground).
    pub fn expects_synced(&self) -> bool {
        self.wait || self.protocol.reports_completion()
    }
}

/// A registry problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RegistryError {}

/// A humantime duration ("10s", "2m"); a newtype so a bad value fails inside serde with its span.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match humantime::parse_duration(&text) {
            Ok(v) if v.is_zero() => Err(serde::de::Error::custom(format!(
                "duration {text:?} must be longer than zero"
            ))),
            Ok(v) => Ok(Dur(v)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. \"10s\", \"2m\", \"1h\""
            ))),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    bus: Option<RawBus>,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    verify: Option<RawVerify>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    tree: Option<PathBuf>,
    #[serde(default)]
    trees: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    url: Spanned<String>,
    exchange: Option<Spanned<String>>,
    topic_prefix: Option<Spanned<String>>,
    origin: Spanned<String>,
    ack_topic: Option<Spanned<String>>,
    signing_key: Option<PathBuf>,
    ca: Option<Spanned<PathBuf>>,
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    user: Option<String>,
    port: Option<Spanned<u16>>,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    connect_timeout: Option<Dur>,
    timeout: Option<Dur>,
    // Only meaningful for the whole push, so it is not accepted per mirror.
    concurrency: Option<Spanned<usize>>,
    after_failed_stage: Option<Spanned<String>>,
    retries: Option<u32>,
    keepalive_interval: Option<Dur>,
    wait: Option<bool>,
    protocol: Option<Spanned<String>>,
    archive: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    history: Option<PathBuf>,
    url: Option<Spanned<RawUrl>>,
    verify: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<Spanned<String>>,
    identity: Option<Spanned<PathBuf>>,
    known_hosts: Option<Spanned<PathBuf>>,
    connect_timeout: Option<Dur>,
    timeout: Option<Dur>,
    keepalive_interval: Option<Dur>,
    retries: Option<u32>,
    wait: Option<bool>,
    protocol: Option<Spanned<String>>,
    archive: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    ack_key: Option<Spanned<String>>,
    #[serde(default)]
    modules: Vec<Spanned<String>>,
    stage: Option<Spanned<u32>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    enabled: Option<bool>,
    url: Option<Spanned<RawUrl>>,
    verify: Option<Spanned<String>>,
}

impl Registry {
    /// Reads and validates the registry at `path`.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read registry: {e}"),
        })?;
        Registry::parse(path, &text)
    }

    /// Validates registry text; `path` is used for messages and to resolve relative key paths.
    pub fn parse(path: &Path, text: &str) -> Result<Registry, RegistryError> {
        let err = |span: Option<Range<usize>>, key: Option<&str>, message: String| {
            let (line, line_key) = match span {
                Some(s) => locate(text, s.start),
                None => (None, None),
            };
            RegistryError {
                file: path.to_owned(),
                line,
                key: key.map(str::to_owned).or(line_key),
                message,
            }
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(e.span(), None, e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let d = raw.defaults;
        let concurrency = match d.concurrency {
            Some(c) if *c.get_ref() == 0 => {
                return Err(err(
                    Some(c.span()),
                    Some("concurrency"),
                    "must be at least 1".into(),
                ))
            }
            Some(c) => c.into_inner(),
            None => DEFAULT_CONCURRENCY,
        };
        let after_failed_stage = match &d.after_failed_stage {
            Some(v) => match v.get_ref().as_str() {
                "warn" => StagePolicy::Warn,
                "hold" => StagePolicy::Hold,
                other => {
                    return Err(err(
                        Some(v.span()),
                        Some("after_failed_stage"),
                        format!(
                            "unknown value {other:?}: use \"warn\" (start later stages, with a \
                             warning) or \"hold\" (start none after a failure)"
                        ),
                    ))
                }
            },
            None => StagePolicy::Warn,
        };
        if let Some(p) = &d.port {
            if *p.get_ref() == 0 {
                return Err(err(Some(p.span()), Some("port"), "must not be 0".into()));
            }
        }
        let default_kind = match &d.protocol {
            Some(p) => {
                ProtocolKind::parse(p).map_err(|e| err(Some(p.span()), Some("protocol"), e))?
            }
            None => ProtocolKind::Mirrorpush,
        };
        let default_archive = match &d.archive {
            Some(a) => Some(
                archive(a, default_kind).map_err(|e| err(Some(a.span()), Some("archive"), e))?,
            ),
            None => None,
        };

        let bus = match raw.bus {
            Some(b) => Some(
                parse_bus(b, d.identity.as_deref())
                    .map_err(|(span, key, message)| err(Some(span), Some(key), message))?,
            ),
            None => None,
        };
        if let Some(t) = &d.transport {
            ProtocolKind::transport(t).map_err(|e| err(Some(t.span()), Some("transport"), e))?;
        }
        let parse_url = |u: &Spanned<RawUrl>| {
            UrlSpec::parse(u.get_ref().clone()).map_err(|e| err(Some(u.span()), Some("url"), e))
        };
        let parse_proof = |v: &Spanned<String>| {
            ProofSpec::parse(v.get_ref()).map_err(|e| err(Some(v.span()), Some("verify"), e))
        };
        let default_url = d.url.as_ref().map(parse_url).transpose()?;
        let default_proof = d.verify.as_ref().map(parse_proof).transpose()?;
        let verify = raw.verify.unwrap_or_default();
        for module in verify.trees.keys() {
            if let Err(e) = ModuleName::parse(module) {
                return Err(err(
                    None,
                    Some("trees"),
                    format!("[verify.trees]: module name {module:?} {e}"),
                ));
            }
        }
        let verify = VerifyTrees {
            tree: verify.tree.map(resolve),
            trees: verify
                .trees
                .into_iter()
                .map(|(k, v)| (k, resolve(v)))
                .collect(),
        };

        let mut names = HashSet::new();
        let mut mirrors = Vec::with_capacity(raw.mirror.len());
        for m in raw.mirror {
            let name_span = m.name.span();
            let name = m.name.get_ref().clone();
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(err(
                    Some(name_span),
                    Some("name"),
                    "must be a non-empty name without control characters".into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err(
                    Some(name_span),
                    Some("name"),
                    format!("duplicate mirror name {name:?}"),
                ));
            }
            let transport_key = m.transport.as_ref().or(d.transport.as_ref());
            let on_bus = match transport_key {
                Some(t) => ProtocolKind::transport(t)
                    .map_err(|e| err(Some(t.span()), Some("transport"), e))?,
                None => false,
            };
            if on_bus && bus.is_none() {
                return Err(err(
                    transport_key.map(Spanned::span),
                    Some("transport"),
                    "transport = \"bus\" needs a [bus] table (url, origin, ...)".into(),
                ));
            }
            let transport = if on_bus {
                refuse_ssh_keys(&m).map_err(|(span, key)| {
                    err(
                        Some(span),
                        Some(key),
                        "a bus mirror is reached through [bus], not SSH: remove this key \
                         (or set transport = \"ssh\")"
                            .into(),
                    )
                })?;
                // Its acks name it on their `mirror:` line: a name that line cannot carry
                // could never be matched to an ack.
                crate::bus::envelope::Name::parse(&name).map_err(|_| {
                    err(
                        Some(name_span.clone()),
                        Some("name"),
                        format!(
                            "a bus mirror's name is the `mirror` of its listen.toml, which its \
                             acks carry: {name:?} must be letters, digits and . _ - @ : \
                             (starting with a letter or digit, at most 253 bytes)"
                        ),
                    )
                })?;
                let ack_key = match &m.ack_key {
                    Some(k) => Some(PublicKey::from_openssh(k.get_ref().trim()).map_err(|e| {
                        err(
                            Some(k.span()),
                            Some("ack_key"),
                            format!(
                                "not an OpenSSH public key line ({e}); use the listener's \
                                     \"ssh-ed25519 AAAA...\" line"
                            ),
                        )
                    })?),
                    None => None,
                };
                Transport::Bus { ack_key }
            } else {
                if let Some(k) = &m.ack_key {
                    return Err(err(
                        Some(k.span()),
                        Some("ack_key"),
                        "only bus mirrors have an ack_key: set transport = \"bus\" too".into(),
                    ));
                }
                Transport::Ssh
            };
            let host = match m.host {
                Some(h)
                    if h.get_ref().trim().is_empty()
                        || h.get_ref().contains(char::is_whitespace) =>
                {
                    return Err(err(
                        Some(h.span()),
                        Some("host"),
                        "must be a DNS name or address".into(),
                    ))
                }
                Some(h) => h.into_inner(),
                // The name is usually the host name; saying it twice is optional.
                None => name.clone(),
            };
            let port = match m.port.or(d.port.clone()) {
                Some(p) if *p.get_ref() == 0 => {
                    return Err(err(Some(p.span()), Some("port"), "must not be 0".into()))
                }
                Some(p) => p.into_inner(),
                None => DEFAULT_PORT,
            };
            let user = match m.user {
                Some(u) if u.get_ref().is_empty() => {
                    return Err(err(
                        Some(u.span()),
                        Some("user"),
                        "must not be empty".into(),
                    ))
                }
                Some(u) => u.into_inner(),
                None => d.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned()),
            };
            let mut modules = Vec::with_capacity(m.modules.len());
            for module in m.modules {
                let span = module.span();
                let parsed = ModuleName::parse(module.get_ref()).map_err(|e| {
                    err(
                        Some(span),
                        Some("modules"),
                        format!("module name {:?} {e}", module.get_ref()),
                    )
                })?;
                if !modules.contains(&parsed) {
                    modules.push(parsed);
                }
            }
            let stage = match m.stage {
                Some(s) if *s.get_ref() == 0 => {
                    return Err(err(
                        Some(s.span()),
                        Some("stage"),
                        "stages start at 1".into(),
                    ))
                }
                Some(s) => s.into_inner(),
                None => 1,
            };
            let kind = match &m.protocol {
                Some(p) => {
                    ProtocolKind::parse(p).map_err(|e| err(Some(p.span()), Some("protocol"), e))?
                }
                // A bus mirror runs mirrorpush-listen, which speaks the one grammar.
                None if on_bus => ProtocolKind::Mirrorpush,
                None => default_kind,
            };
            let protocol = match kind {
                ProtocolKind::Mirrorpush => {
                    if let Some(a) = &m.archive {
                        return Err(err(
                            Some(a.span()),
                            Some("archive"),
                            "only ftpsync mirrors have an archive: set protocol = \"ftpsync\" too"
                                .into(),
                        ));
                    }
                    Protocol::Mirrorpush
                }
                ProtocolKind::Ftpsync => Protocol::Ftpsync {
                    archive: match &m.archive {
                        Some(a) => Some(
                            archive(a, kind)
                                .map_err(|e| err(Some(a.span()), Some("archive"), e))?,
                        ),
                        None => default_archive.clone(),
                    },
                },
            };
            let mut tags = Vec::with_capacity(m.tags.len());
            for tag in m.tags {
                if tag.get_ref().is_empty() || tag.get_ref().chars().any(char::is_control) {
                    return Err(err(
                        Some(tag.span()),
                        Some("tags"),
                        "tags must be non-empty text".into(),
                    ));
                }
                tags.push(tag.into_inner());
            }
            // A bus mirror has no address: nothing may connect to it by mistake.
            let (host, port, user) = if on_bus {
                (String::new(), 0, String::new())
            } else {
                (host, port, user)
            };
            mirrors.push(Mirror {
                name,
                host,
                port,
                user,
                identity: m
                    .identity
                    .map(Spanned::into_inner)
                    .or(d.identity.clone())
                    .map(resolve),
                known_hosts: resolve(
                    m.known_hosts
                        .map(Spanned::into_inner)
                        .or(d.known_hosts.clone())
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_KNOWN_HOSTS)),
                ),
                connect_timeout: m
                    .connect_timeout
                    .or(d.connect_timeout)
                    .map_or(DEFAULT_CONNECT_TIMEOUT, |v| v.0),
                timeout: m.timeout.or(d.timeout).map_or(DEFAULT_TIMEOUT, |v| v.0),
                keepalive_interval: m
                    .keepalive_interval
                    .or(d.keepalive_interval)
                    .map_or(DEFAULT_KEEPALIVE_INTERVAL, |v| v.0),
                retries: m.retries.or(d.retries).unwrap_or(0),
                wait: m.wait.or(d.wait).unwrap_or(false),
                protocol,
                transport,
                modules,
                stage,
                tags,
                enabled: m.enabled.unwrap_or(true),
                url: match &m.url {
                    Some(u) => Some(parse_url(u)?),
                    None => default_url.clone(),
                },
                verify: match &m.verify {
                    Some(v) => Some(parse_proof(v)?),
                    None => default_proof.clone(),
                },
            });
        }
        let mut bus = bus;
        if let Some(b) = &mut bus {
            b.signing_key = resolve(std::mem::take(&mut b.signing_key));
            for p in [&mut b.ca, &mut b.cert, &mut b.key].into_iter().flatten() {
                *p = resolve(std::mem::take(p));
            }
        }
        Ok(Registry {
            path: path.to_owned(),
            concurrency,
            after_failed_stage,
            bus,
            mirrors,
            history: resolve(
                d.history
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_HISTORY)),
            ),
            verify,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Mirror> {
        self.mirrors.iter().find(|m| m.name == name)
    }
}

/// The `protocol` key's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtocolKind {
    Mirrorpush,
    Ftpsync,
}

impl ProtocolKind {
    fn parse(value: &Spanned<String>) -> Result<ProtocolKind, String> {
        match value.get_ref().as_str() {
            "mirrorpush" => Ok(ProtocolKind::Mirrorpush),
            "ftpsync" => Ok(ProtocolKind::Ftpsync),
            other => Err(format!(
                "unknown protocol {other:?}: use \"mirrorpush\" (the default) or \"ftpsync\""
            )),
        }
    }
}

impl ProtocolKind {
    /// The `transport` key: `true` for `"bus"`.
    fn transport(value: &Spanned<String>) -> Result<bool, String> {
        match value.get_ref().as_str() {
            "ssh" => Ok(false),
            "bus" => Ok(true),
            other => Err(format!(
                "unknown transport {other:?}: use \"ssh\" (the default) or \"bus\""
            )),
        }
    }
}

/// A `[[mirror]]` key that only means something for SSH, set on a bus mirror: where and which.
fn refuse_ssh_keys(m: &RawMirror) -> Result<(), (Range<usize>, &'static str)> {
    let spans = [
        (m.host.as_ref().map(Spanned::span), "host"),
        (m.port.as_ref().map(Spanned::span), "port"),
        (m.user.as_ref().map(Spanned::span), "user"),
        (m.identity.as_ref().map(Spanned::span), "identity"),
        (m.known_hosts.as_ref().map(Spanned::span), "known_hosts"),
        (m.archive.as_ref().map(Spanned::span), "archive"),
        (
            m.protocol
                .as_ref()
                .filter(|p| p.get_ref() != "mirrorpush")
                .map(Spanned::span),
            "protocol",
        ),
    ];
    match spans.into_iter().find_map(|(span, key)| Some((span?, key))) {
        Some(found) => Err(found),
        None => Ok(()),
    }
}

/// Longest AMQP short string: exchange names and routing keys.
const AMQP_SHORT: usize = 255;

/// Validates the `[bus]` table. `identity` is `[defaults].identity`, the signing key's default.
/// Paths are resolved by the caller.
fn parse_bus(
    b: RawBus,
    identity: Option<&Path>,
) -> Result<Bus, (Range<usize>, &'static str, String)> {
    let url = b.url.get_ref().clone();
    let tls_url = url.starts_with("amqps://");
    if !(url.starts_with("amqp://") || tls_url)
        || url.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err((
            b.url.span(),
            "url",
            "must be an amqp:// or amqps:// URL, e.g. \"amqps://user:secret@broker.example.org/%2F\"".into(),
        ));
    }
    // Names and topics go on the wire as AMQP short strings and into the signed payload.
    let plain = |v: &Spanned<String>, key: &'static str, empty_ok: bool| {
        let t = v.get_ref();
        if (t.is_empty() && !empty_ok)
            || t.len() > AMQP_SHORT
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err((
                v.span(),
                key,
                format!("must be 1-{AMQP_SHORT} characters without spaces or control characters"),
            ));
        }
        Ok(t.clone())
    };
    let exchange = match &b.exchange {
        Some(e) => plain(e, "exchange", false)?,
        None => "amq.topic".to_owned(),
    };
    let topic_prefix = match &b.topic_prefix {
        Some(p) => {
            let t = plain(p, "topic_prefix", true)?;
            if !(t.is_empty() || t.ends_with('.')) || t.contains(['*', '#']) {
                return Err((
                    p.span(),
                    "topic_prefix",
                    format!("{t:?} must be empty or end with '.', without '*' or '#' (e.g. \"org.example.prod.\")"),
                ));
            }
            t
        }
        None => String::new(),
    };
    let origin = plain(&b.origin, "origin", false)?;
    let ack_topic = match &b.ack_topic {
        Some(a) => plain(a, "ack_topic", false)?,
        None => format!("{topic_prefix}mirrorpush.synced"),
    };
    let signing_key = match (b.signing_key, identity) {
        (Some(k), _) => k,
        (None, Some(i)) => i.to_owned(),
        (None, None) => {
            return Err((
                b.origin.span(),
                "signing_key",
                "[bus] needs a signing_key (or [defaults] identity): the private key that signs triggers".into(),
            ))
        }
    };
    match (&b.cert, &b.key) {
        (Some(c), None) => {
            return Err((
                c.span(),
                "cert",
                "a client certificate needs its key too".into(),
            ))
        }
        (None, Some(k)) => return Err((k.span(), "key", "a client key needs its cert too".into())),
        _ => {}
    }
    if !tls_url {
        if let Some((span, key)) = [(&b.ca, "ca"), (&b.cert, "cert"), (&b.key, "key")]
            .into_iter()
            .find_map(|(v, key)| Some((v.as_ref()?.span(), key)))
        {
            return Err((span, key, "TLS settings need an amqps:// url".into()));
        }
    }
    Ok(Bus {
        url,
        exchange,
        topic_prefix,
        origin,
        ack_topic,
        signing_key,
        ca: b.ca.map(Spanned::into_inner),
        cert: b.cert.map(Spanned::into_inner),
        key: b.key.map(Spanned::into_inner),
    })
}

/// An ftpsync archive name, valid only with protocol ftpsync.
fn archive(value: &Spanned<String>, kind: ProtocolKind) -> Result<String, String> {
    if kind != ProtocolKind::Ftpsync {
        return Err("only ftpsync mirrors have an archive: set protocol = \"ftpsync\" too".into());
    }
    let name = value.get_ref();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > MAX_ARCHIVE_LEN || !first_ok || !name.chars().all(ok_char) {
        return Err(format!(
            "archive {name:?} must be 1-{MAX_ARCHIVE_LEN} letters, digits, '.', '_' or '-', \
             starting with a letter or digit (ftpsync reads ftpsync-<archive>.conf)"
        ));
    }
    Ok(name.clone())
}

/// Turns a byte offset into a 1-based line number and, when that line is `key = ...`, the key.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).and_then(|k| {
        let k = k.trim_matches('"');
        let plain = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        plain.then(|| k.to_owned())
    });
    let key = key.or_else(|| {
        // An unknown-key error points at the key itself, which may have no `=` on its line.
        let word: String = text
            .get(offset..)
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        (!word.is_empty() && line.trim_start().starts_with(&word)).then_some(word)
    });
    (Some(line_no), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_failed_stage_is_warn_or_hold() {
        let r = parse("[[mirror]]\nname = \"m\"\nmodules = [\"a\"]\n").unwrap();
        assert_eq!(r.after_failed_stage, StagePolicy::Warn);
        let r = parse("[defaults]\nafter_failed_stage = \"hold\"\n").unwrap();
        assert_eq!(r.after_failed_stage, StagePolicy::Hold);
        let e = parse("[defaults]\nafter_failed_stage = \"wait\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("after_failed_stage"))
        );
        // A push-wide choice: not accepted per mirror.
        assert!(parse("[[mirror]]\nname = \"m\"\nafter_failed_stage = \"hold\"\n").is_err());
    }

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(Path::new("/etc/mp/mirrors.toml"), text)
    }

    fn fails(text: &str) -> RegistryError {
        match parse(text) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e,
        }
    }

    const GOOD: &str = r#"
[defaults]
user = "pusher"
identity = "id_ed25519"
known_hosts = "/etc/mp/known_hosts"
connect_timeout = "3s"
timeout = "1m"
concurrency = 8
retries = 2

[[mirror]]
name = "a.example.net"
modules = ["fedora", "debian"]
tags = ["eu", "tier1"]

[[mirror]]
name = "b"
host = "10.0.0.2"
port = 2222
user = "other"
modules = ["fedora"]
stage = 2
timeout = "5s"
retries = 0
enabled = false
"#;

    #[test]
    fn parses_defaults_and_overrides() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.concurrency, 8);
        let a = &r.mirrors[0];
        assert_eq!(a.host, "a.example.net");
        assert_eq!(a.port, 22);
        assert_eq!(a.user, "pusher");
        assert_eq!(a.identity.as_deref(), Some(Path::new("/etc/mp/id_ed25519")));
        assert_eq!(a.known_hosts, Path::new("/etc/mp/known_hosts"));
        assert_eq!(a.connect_timeout, Duration::from_secs(3));
        assert_eq!(a.timeout, Duration::from_secs(60));
        assert_eq!(a.retries, 2);
        assert_eq!(a.stage, 1);
        assert!(a.enabled);
        assert_eq!(a.tags, ["eu", "tier1"]);
        assert_eq!(a.address(), "a.example.net:22");
        let b = &r.mirrors[1];
        assert_eq!(
            (b.host.as_str(), b.port, b.user.as_str()),
            ("10.0.0.2", 2222, "other")
        );
        assert_eq!((b.stage, b.retries, b.enabled), (2, 0, false));
        assert_eq!(b.timeout, Duration::from_secs(5));
        assert_eq!(b.address(), "10.0.0.2:2222");
    }

    #[test]
    fn empty_registry_uses_builtin_defaults() {
        let r = parse("[[mirror]]\nname = \"m\"\n").unwrap();
        assert_eq!(r.concurrency, 64);
        let m = &r.mirrors[0];
        assert_eq!(m.user, "mirrorpush");
        assert_eq!(m.identity, None);
        assert_eq!(m.known_hosts, Path::new("/etc/mirrorpush/known_hosts"));
        assert_eq!(m.connect_timeout, Duration::from_secs(10));
        assert_eq!(m.timeout, Duration::from_secs(120));
        assert_eq!(m.retries, 0);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = fails("[[mirror]]\nname = \"m\"\nmodlues = [\"x\"]\n");
        assert_eq!(e.file, Path::new("/etc/mp/mirrors.toml"));
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("modlues"));
        assert!(e.message.contains("unknown field"), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("/etc/mp/mirrors.toml:3: key `modlues`:"),
            "{text}"
        );

        let e = fails("[defaults]\nuser = \"u\"\nconcurency = 3\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("concurency")));
        // concurrency is for the whole push, not per mirror.
        let e = fails("[[mirror]]\nname = \"m\"\nconcurrency = 3\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("concurrency")));
        let e = fails("[mirrors]\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn bad_values_are_located() {
        let e = fails("[defaults]\n\ntimeout = \"soon\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("timeout")));
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = fails("[[mirror]]\nname = \"m\"\nconnect_timeout = \"0s\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("connect_timeout"))
        );
        let e = fails("[[mirror]]\nname = \"m\"\nport = 70000\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("port")));
        let e = fails("[[mirror]]\nname = \"m\"\nport = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("port")));
        let e = fails("[[mirror]]\nname = \"m\"\nstage = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("stage")));
        let e = fails("[defaults]\nconcurrency = 0\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("concurrency")));
        let e = fails("[[mirror]]\nname = \"m\"\nenabled = \"yes\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("enabled")));
        let e = fails("[[mirror]]\nhost = \"h\"\n");
        assert!(e.message.contains("missing field `name`"), "{e}");
        assert_eq!(e.line, Some(1));
        let e = fails("[[mirror]]\nname = \"m\"\nhost = \"a b\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("host")));
        let e = fails("not toml at all = = =\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn module_names_follow_the_request_grammar() {
        let e =
            fails("[[mirror]]\nname = \"m\"\nmodules = [\n  \"fedora\",\n  \"Fedora/../x\",\n]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("modules")));
        assert!(e.message.contains("Fedora/../x"), "{e}");
        let r = parse("[[mirror]]\nname = \"m\"\nmodules = [\"a\", \"a\", \"b.c-d_e\"]\n").unwrap();
        assert_eq!(r.mirrors[0].modules.len(), 2);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = fails("[[mirror]]\nname = \"m\"\n\n[[mirror]]\nname = \"m\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("name")));
        assert!(e.message.contains("duplicate"), "{e}");
        let e = fails("[[mirror]]\nname = \"\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("name")));
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let e = Registry::load(Path::new("/nonexistent/mirrors.toml")).unwrap_err();
        assert_eq!(e.line, None);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/mirrors.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn wait_protocol_archive_and_keepalive() {
        let r = parse(
            r#"
[defaults]
wait = true
keepalive_interval = "5s"

[[mirror]]
name = "hub"
modules = ["fedora"]

[[mirror]]
name = "deb"
modules = ["debian"]
protocol = "ftpsync"
archive = "debian-security"
wait = false

[[mirror]]
name = "deb-main"
modules = ["debian"]
protocol = "ftpsync"
keepalive_interval = "1m"
"#,
        )
        .unwrap();
        let (hub, deb, main) = (&r.mirrors[0], &r.mirrors[1], &r.mirrors[2]);
        assert_eq!((hub.wait, &hub.protocol), (true, &Protocol::Mirrorpush));
        assert_eq!(hub.keepalive_interval, Duration::from_secs(5));
        assert!(hub.expects_synced());
        assert_eq!(
            deb.protocol,
            Protocol::Ftpsync {
                archive: Some("debian-security".into())
            }
        );
        // ftpsync syncs in the foreground: it reports completion whatever `wait` says.
        assert!(!deb.wait && deb.expects_synced());
        assert_eq!(main.protocol, Protocol::Ftpsync { archive: None });
        assert_eq!(main.keepalive_interval, Duration::from_secs(60));

        let plain = parse("[[mirror]]\nname = \"m\"\n").unwrap();
        let m = &plain.mirrors[0];
        assert_eq!((m.wait, &m.protocol), (false, &Protocol::Mirrorpush));
        assert_eq!(m.keepalive_interval, Duration::from_secs(15));
        assert!(!m.expects_synced());

        // A defaults archive serves the ftpsync mirrors; a mirrorpush mirror ignores it.
        let r = parse(
            "[defaults]\nprotocol = \"ftpsync\"\narchive = \"debian\"\n\n[[mirror]]\nname = \"a\"\n\n[[mirror]]\nname = \"b\"\nprotocol = \"mirrorpush\"\n",
        )
        .unwrap();
        assert_eq!(
            r.mirrors[0].protocol,
            Protocol::Ftpsync {
                archive: Some("debian".into())
            }
        );
        assert_eq!(r.mirrors[1].protocol, Protocol::Mirrorpush);
    }

    #[test]
    fn bad_protocol_and_archive_are_located() {
        let e = fails("[[mirror]]\nname = \"m\"\nprotocol = \"rsync\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("protocol")));
        assert!(e.message.contains("unknown protocol \"rsync\""), "{e}");
        // archive only with ftpsync, at the level where it is written.
        let e = fails("[[mirror]]\nname = \"m\"\narchive = \"debian\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("archive")));
        assert!(e.message.contains("protocol = \"ftpsync\""), "{e}");
        let e = fails("[defaults]\narchive = \"debian\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("archive")));
        for bad in ["", "a b", "*", "-x", "../x", "deb$x", &"a".repeat(65)] {
            let e = fails(&format!(
                "[[mirror]]\nname = \"m\"\nprotocol = \"ftpsync\"\narchive = {bad:?}\n"
            ));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(4), Some("archive")),
                "{bad:?}"
            );
        }
        let e = fails("[[mirror]]\nname = \"m\"\nwait = \"yes\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("wait")));
        let e = fails("[defaults]\nkeepalive_interval = \"0s\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("keepalive_interval"))
        );
    }

    const ACK_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAZFVc9xc5VfdMfyMEXVWnfNjMF+gyXM57wS62ABrSyy lst";

    const BUS: &str = r#"
[defaults]
identity = "id_ed25519"

[bus]
url = "amqps://master:secret@broker.example.org/%2F"
topic_prefix = "org.example.prod."
origin = "master.example.org"
ca = "bus-ca.pem"
cert = "/etc/mp/bus-cert.pem"
key = "/etc/mp/bus-key.pem"

[[mirror]]
name = "ssh1"
modules = ["fedora"]

[[mirror]]
name = "listener1"
transport = "bus"
modules = ["fedora"]
stage = 2
"#;

    #[test]
    fn bus_table_and_bus_mirrors() {
        let text = format!("{BUS}ack_key = \"{ACK_KEY}\"\n");
        let r = parse(&text).unwrap();
        let b = r.bus.as_ref().unwrap();
        assert_eq!(b.exchange, "amq.topic");
        assert_eq!(b.ack_topic, "org.example.prod.mirrorpush.synced");
        assert_eq!(b.origin, "master.example.org");
        // The signing key defaults to [defaults].identity; relative paths follow the registry.
        assert_eq!(b.signing_key, Path::new("/etc/mp/id_ed25519"));
        assert_eq!(b.ca.as_deref(), Some(Path::new("/etc/mp/bus-ca.pem")));
        assert_eq!(
            b.routing_key(&ModuleName::parse("fedora").unwrap()),
            "org.example.prod.mirrorpush.sync.fedora"
        );
        assert_eq!(b.url_shown(), "amqps://master:***@broker.example.org/%2F");
        let (ssh, bus) = (&r.mirrors[0], &r.mirrors[1]);
        assert_eq!(ssh.transport, Transport::Ssh);
        assert_eq!(ssh.host, "ssh1");
        let Transport::Bus { ack_key: Some(k) } = &bus.transport else {
            panic!("{:?}", bus.transport)
        };
        assert_eq!(k, &PublicKey::from_openssh(ACK_KEY).unwrap());
        assert_eq!((bus.host.as_str(), bus.port, bus.stage), ("", 0, 2));
        assert_eq!(bus.protocol, Protocol::Mirrorpush);

        // Everything else has a default; a bus mirror without ack_key waits for no ack.
        let r = parse(
            "[bus]\nurl = \"amqp://localhost\"\norigin = \"m\"\nsigning_key = \"/k\"\nack_topic = \"acks\"\nexchange = \"x\"\n\n[defaults]\ntransport = \"bus\"\nprotocol = \"ftpsync\"\n\n[[mirror]]\nname = \"l\"\n",
        )
        .unwrap();
        let b = r.bus.unwrap();
        assert_eq!(
            (
                b.exchange.as_str(),
                b.ack_topic.as_str(),
                b.topic_prefix.as_str()
            ),
            ("x", "acks", "")
        );
        assert_eq!(r.mirrors[0].transport, Transport::Bus { ack_key: None });
        assert_eq!(r.mirrors[0].protocol, Protocol::Mirrorpush);
        assert_eq!(b.url_shown(), "amqp://localhost");
    }

    #[test]
    fn bus_mistakes_are_located() {
        let bus_line = |extra: &str| {
            BUS.replace(
                "origin = \"master.example.org\"\n",
                &format!("origin = \"master.example.org\"\n{extra}\n"),
            )
        };
        // [bus] keys: line 9 is the one added after origin.
        for (extra, key) in [
            ("exchange = \"\"", "exchange"),
            ("topic_prefix = \"org.example\"", "topic_prefix"),
            ("ack_topic = \"a b\"", "ack_topic"),
            ("colour = \"blue\"", "colour"),
        ] {
            let e = fails(&bus_line(extra));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(9), Some(key)),
                "{extra}: {e}"
            );
        }
        let e = fails(&BUS.replace("amqps://master", "http://master"));
        assert_eq!((e.line, e.key.as_deref()), (Some(6), Some("url")), "{e}");
        let e = fails(&BUS.replace("amqps://", "amqp://"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("ca")), "{e}");
        assert!(e.message.contains("amqps://"), "{e}");
        let e = fails(&BUS.replace("key = \"/etc/mp/bus-key.pem\"\n", ""));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("cert")), "{e}");
        let e = fails(&BUS.replace("identity = \"id_ed25519\"\n", ""));
        assert_eq!(e.key.as_deref(), Some("signing_key"), "{e}");
        let e = fails(&BUS.replace("origin = \"master.example.org\"\n", ""));
        assert!(e.message.contains("origin"), "{e}");

        // [[mirror]] keys of a bus mirror.
        for (extra, key) in [
            ("host = \"h\"", "host"),
            ("port = 22", "port"),
            ("user = \"u\"", "user"),
            ("identity = \"k\"", "identity"),
            ("known_hosts = \"kh\"", "known_hosts"),
            ("protocol = \"ftpsync\"", "protocol"),
            ("ack_key = \"ssh-ed25519 nonsense\"", "ack_key"),
            ("transport = \"pigeon\"", "transport"),
        ] {
            let e = fails(&format!("{BUS}{extra}\n"));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(22), Some(key)),
                "{extra}: {e}"
            );
        }
        // ack_key only on a bus mirror; a bus mirror only with [bus].
        let e = fails(&format!(
            "[[mirror]]\nname = \"m\"\nack_key = \"{ACK_KEY}\"\n"
        ));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("ack_key")),
            "{e}"
        );
        let e = fails("[[mirror]]\nname = \"m\"\ntransport = \"bus\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("transport")),
            "{e}"
        );
        assert!(e.message.contains("[bus]"), "{e}");
        // A bus mirror's name is what its acks carry on their `mirror:` line: the envelope's
        // name grammar, checked at load. The same name is fine for an SSH mirror.
        let line = BUS.lines().position(|l| l.contains("listener1")).unwrap() + 1;
        for bad in [
            "listener 1",
            "-listener",
            "lis,tener",
            "listener*",
            "lístener",
        ] {
            let e = fails(&BUS.replace("\"listener1\"", &format!("{bad:?}")));
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some("name")),
                "{bad}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/mp/mirrors.toml:{line}"))
                    && e.message.contains("letters, digits"),
                "{e}"
            );
        }
        assert!(parse(&BUS.replace("\"listener1\"", "\"bus-1.example.org\"")).is_ok());
        assert!(parse(&BUS.replace("\"ssh1\"", "\"ssh 1\"")).is_ok());
        let e = fails("[defaults]\ntransport = \"carrier\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("transport")),
            "{e}"
        );
    }

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            ("amqp://u:p@h:5672/%2F", "amqp://u:***@h:5672/%2F"),
            ("amqps://u:p:q@h/v", "amqps://u:***@h/v"),
            ("amqp://u@h/", "amqp://u@h/"),
            ("amqp://h", "amqp://h"),
            ("amqp://u:p@h", "amqp://u:***@h"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn url_verify_history_and_trees() {
        let r = parse(
            r#"
[defaults]
history = "hist/history.db"
url = "https://{module}.example.net/pub/{module}/"
verify = "trace:project/trace/m.example.net"

[verify]
tree = "/srv/pub"
[verify.trees]
epel = "/srv/epel"

[[mirror]]
name = "a"
modules = ["fedora"]

[[mirror]]
name = "b"
modules = ["epel"]
url = { epel = "rsync://b.example.net/epel/" }
verify = "file:repodata/repomd.xml"
"#,
        )
        .unwrap();
        assert_eq!(r.history, Path::new("/etc/mp/hist/history.db"));
        assert_eq!(r.verify.of("fedora"), Some(Path::new("/srv/pub")));
        assert_eq!(r.verify.of("epel"), Some(Path::new("/srv/epel")));
        let (a, b) = (&r.mirrors[0], &r.mirrors[1]);
        assert_eq!(
            a.url.as_ref().unwrap().for_module("fedora").as_deref(),
            Some("https://fedora.example.net/pub/fedora/")
        );
        assert_eq!(
            a.verify.as_ref().unwrap().to_string(),
            "trace:project/trace/m.example.net"
        );
        assert_eq!(b.url.as_ref().unwrap().for_module("fedora"), None);
        assert_eq!(
            b.verify.as_ref().unwrap().to_string(),
            "file:repodata/repomd.xml"
        );
        assert_eq!(a.transport(), "ssh");
        let plain = parse("[[mirror]]\nname = \"m\"\n").unwrap();
        assert_eq!(plain.history, Path::new(DEFAULT_HISTORY));
        assert_eq!(
            (
                plain.mirrors[0].url.clone(),
                plain.mirrors[0].verify.clone()
            ),
            (None, None)
        );

        let e = fails("[[mirror]]\nname = \"m\"\nurl = \"ftp://m/x\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("url")));
        let e = fails("[[mirror]]\nname = \"m\"\nverify = \"file:../etc/passwd\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("verify")));
        let e = fails("[defaults]\nverify = \"md5:x\"\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("verify")));
        let e = fails("[verify]\ntre = \"/srv\"\n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn locate_never_panics_on_odd_offsets() {
        assert_eq!(locate("", 5), (Some(1), None));
        assert_eq!(locate("a = 1\nb = é", 11).0, Some(2));
        for i in 0..20 {
            let _ = locate("x = \"é\"\n[t]\n", i);
        }
    }
}
