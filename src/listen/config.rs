//! `listen.toml`: what the listener follows and where it hands requests. Parsing is strict, as
//! the handler's and the registry's are: unknown keys, bad durations and bad names are errors
//! naming the file, the line and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::bus::amqp::{BrokerConfig, BrokerUrl};
use crate::bus::envelope::Name;
use crate::bus::topic;
use crate::config_text::ConfigText;
use crate::request::{ModuleName, RelDir};

pub const DEFAULT_CONFIG: &str = "/etc/mirrorpush/listen.toml";
const DEFAULT_HANDLER_CONFIG: &str = "/etc/mirrorpush/handler.toml";
const DEFAULT_STATE_DIR: &str = "/var/lib/mirrorpush/listen";
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
const DEFAULT_EXCHANGE: &str = "amq.topic";
/// Ids remembered at most; past that new triggers are refused rather than ids forgotten early.
const DEFAULT_MAX_SEEN: usize = 100_000;

pub use crate::config_text::ConfigError;

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub path: PathBuf,
    /// `None`: the `mirrorpush-handler` beside this binary.
    pub handler: Option<PathBuf>,
    pub handler_config: PathBuf,
    /// This mirror's name in acks.
    pub mirror: Option<Name>,
    pub state_dir: PathBuf,
    pub max_age: Duration,
    pub max_seen: usize,
    pub broker: Option<Broker>,
    pub triggers: Vec<TriggerRule>,
    pub ack: Option<AckConfig>,
}

#[derive(Debug, Clone)]
pub struct Broker {
    pub connection: BrokerConfig,
    pub exchange: String,
    pub queue: String,
}

#[derive(Debug, Clone)]
pub struct TriggerRule {
    /// The binding pattern (`*`, `#`).
    pub topic: String,
    pub kind: TriggerKind,
    /// Its line in the file, for logs.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// Signed triggers from a mirrorpush master.
    Signed {
        allowed_signers: PathBuf,
        /// `None`: any module.
        modules: Option<Vec<ModuleName>>,
    },
    /// A distribution's own message: sync `module` (`dir`) once the topic was quiet `settle`.
    Hint {
        module: ModuleName,
        dir: Option<RelDir>,
        settle: Duration,
        /// Retry a null file-list run until the list changes, for this long after the hint.
        expect_change: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
pub struct AckConfig {
    pub topic: String,
    pub signing_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenConfig {
    handler: Option<Spanned<String>>,
    handler_config: Option<Spanned<String>>,
    mirror: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    max_seen: Option<Spanned<i64>>,
    broker: Option<RawBroker>,
    #[serde(default)]
    trigger: Vec<Spanned<RawTrigger>>,
    ack: Option<RawAck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Spanned<String>,
    exchange: Option<Spanned<String>>,
    queue: Spanned<String>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    topic: Spanned<String>,
    allowed_signers: Option<Spanned<String>>,
    modules: Option<Spanned<Vec<String>>>,
    module: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    expect_change: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAck {
    topic: Spanned<String>,
    signing_key: Spanned<String>,
}

pub fn load(path: &Path) -> Result<ListenConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<ListenConfig, ConfigError> {
    let ctx = ListenToml {
        file: ConfigText { path, text },
    };
    let raw: RawListenConfig = toml::from_str(text).map_err(|e| ctx.file.toml_error(&e))?;
    let mut cfg = ListenConfig {
        path: path.to_owned(),
        handler: raw
            .handler
            .as_ref()
            .map(|h| ctx.file.absolute(h, "handler"))
            .transpose()?,
        handler_config: match &raw.handler_config {
            Some(h) => ctx.file.absolute(h, "handler_config")?,
            None => PathBuf::from(DEFAULT_HANDLER_CONFIG),
        },
        mirror: raw
            .mirror
            .as_ref()
            .map(|m| {
                Name::parse(m.get_ref())
                    .map_err(|e| ctx.file.at(m.span(), format!("'mirror': {e}")))
            })
            .transpose()?,
        state_dir: match &raw.state_dir {
            Some(s) => ctx.file.absolute(s, "state_dir")?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        },
        max_age: match &raw.max_age {
            Some(d) => ctx.duration(d, "max_age", false)?,
            None => DEFAULT_MAX_AGE,
        },
        max_seen: match &raw.max_seen {
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as usize,
            Some(n) => return Err(ctx.file.at(n.span(), "'max_seen' must be at least 1")),
            None => DEFAULT_MAX_SEEN,
        },
        broker: None,
        triggers: Vec::new(),
        ack: None,
    };
    if let Some(b) = raw.broker {
        cfg.broker = Some(ctx.broker(b)?);
    }
    for t in raw.trigger {
        cfg.triggers.push(ctx.trigger(t)?);
    }
    if let Some(a) = raw.ack {
        if !topic::is_valid_pattern(a.topic.get_ref()) || a.topic.get_ref().contains(['*', '#']) {
            return Err(ctx
                .file
                .at(a.topic.span(), "'topic' in [ack] must be a routing key"));
        }
        if cfg.mirror.is_none() {
            return Err(ctx.file.at(
                a.topic.span(),
                "[ack] needs 'mirror' (this mirror's name in acks)",
            ));
        }
        cfg.ack = Some(AckConfig {
            topic: a.topic.get_ref().clone(),
            signing_key: ctx.file.absolute(&a.signing_key, "signing_key")?,
        });
    }
    Ok(cfg)
}

struct ListenToml<'a> {
    file: ConfigText<'a>,
}

impl ListenToml<'_> {
    fn duration(
        &self,
        v: &Spanned<String>,
        key: &str,
        zero_ok: bool,
    ) -> Result<Duration, ConfigError> {
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if zero_ok || !d.is_zero() => Ok(d),
            Ok(_) => Err(self
                .file
                .at(v.span(), format!("'{key}' must be more than zero"))),
            Err(e) => Err(self.file.at(
                v.span(),
                format!("'{key}': {e} (examples: \"90s\", \"10m\")"),
            )),
        }
    }

    fn broker(&self, b: RawBroker) -> Result<Broker, ConfigError> {
        BrokerUrl::parse(b.url.get_ref()).map_err(|e| self.file.at(b.url.span(), e))?;
        let queue = b.queue.get_ref();
        if queue.is_empty() || queue.len() > 255 || queue.starts_with("amq.") {
            return Err(self.file.at(
                b.queue.span(),
                "'queue' must be 1-255 bytes and not start with \"amq.\"",
            ));
        }
        let file = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref().map(|p| self.file.absolute(p, key)).transpose()
        };
        let (cert, key) = (file(&b.cert, "cert")?, file(&b.key, "key")?);
        if cert.is_some() != key.is_some() {
            return Err(self.file.at(
                b.url.span(),
                "'cert' and 'key' go together: set both or neither",
            ));
        }
        Ok(Broker {
            connection: BrokerConfig {
                url: b.url.into_inner(),
                ca: file(&b.ca, "ca")?,
                cert,
                key,
            },
            exchange: b
                .exchange
                .map_or_else(|| DEFAULT_EXCHANGE.to_owned(), Spanned::into_inner),
            queue: queue.clone(),
        })
    }

    fn trigger(&self, t: Spanned<RawTrigger>) -> Result<TriggerRule, ConfigError> {
        let line = self.file.line_of(t.span().start);
        let t = t.into_inner();
        if !topic::is_valid_pattern(t.topic.get_ref()) {
            return Err(self
                .file
                .at(t.topic.span(), "'topic' is not a topic pattern"));
        }
        let kind = match (&t.allowed_signers, &t.module) {
            (Some(signers), None) => {
                for (key, v) in [
                    ("dir", &t.dir),
                    ("settle", &t.settle),
                    ("expect_change", &t.expect_change),
                ] {
                    if let Some(v) = v {
                        return Err(self.file.at(
                            v.span(),
                            format!(
                                "'{key}' belongs to hint triggers (with 'module'), not signed ones"
                            ),
                        ));
                    }
                }
                let modules = match &t.modules {
                    None => None,
                    Some(list) => Some(
                        list.get_ref()
                            .iter()
                            .map(|m| {
                                ModuleName::parse(m).map_err(|e| {
                                    self.file
                                        .at(list.span(), format!("'modules': module name {e}"))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                };
                TriggerKind::Signed {
                    allowed_signers: self.file.absolute(signers, "allowed_signers")?,
                    modules,
                }
            }
            (None, Some(module)) => {
                if let Some(m) = &t.modules {
                    return Err(self.file.at(
                        m.span(),
                        "'modules' belongs to signed triggers; a hint names one 'module'",
                    ));
                }
                TriggerKind::Hint {
                    module: ModuleName::parse(module.get_ref()).map_err(|e| {
                        self.file
                            .at(module.span(), format!("'module': module name {e}"))
                    })?,
                    dir: t
                        .dir
                        .as_ref()
                        .map(|d| {
                            RelDir::parse(d.get_ref())
                                .map_err(|e| self.file.at(d.span(), format!("'dir': dir {e}")))
                        })
                        .transpose()?,
                    settle: match &t.settle {
                        Some(s) => self.duration(s, "settle", true)?,
                        None => Duration::ZERO,
                    },
                    expect_change: t
                        .expect_change
                        .as_ref()
                        .map(|e| self.duration(e, "expect_change", false))
                        .transpose()?,
                }
            }
            (Some(s), Some(_)) => return Err(self.file.at(
                s.span(),
                "a [[trigger]] has either 'allowed_signers' (signed) or 'module' (hint), not both",
            )),
            (None, None) => {
                return Err(self.file.at(
                    t.topic.span(),
                    "a [[trigger]] needs 'allowed_signers' (signed triggers) or 'module' (a hint)",
                ))
            }
        };
        Ok(TriggerRule {
            topic: t.topic.into_inner(),
            kind,
            line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
handler = "/usr/bin/mirrorpush-handler"
handler_config = "/etc/mirrorpush/handler.toml"
mirror = "mirror.example.net"
state_dir = "/var/lib/mirrorpush/listen"
max_age = "10m"

[broker]
url = "amqps://broker.example.org/%2Fmirrors"
queue = "mirrorpush.mirror.example.net"
ca = "/etc/mirrorpush/bus-ca.pem"
cert = "/etc/mirrorpush/bus-cert.pem"
key = "/etc/mirrorpush/bus-key.pem"

[[trigger]]
topic = "org.example.prod.mirrorpush.sync.#"
allowed_signers = "/etc/mirrorpush/allowed_signers"
modules = ["fedora"]

[[trigger]]
topic = "org.fedoraproject.prod.bodhi.updates.fedora.sync"
module = "fedora"
dir = "updates"
settle = "2m"
expect_change = "30m"

[ack]
topic = "org.example.prod.mirrorpush.synced"
signing_key = "/var/lib/mirrorpush/listen/id_ed25519"
"#;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/l.toml"), text).unwrap_err().0
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(Path::new("/etc/l.toml"), GOOD).unwrap();
        assert_eq!(c.max_age, Duration::from_secs(600));
        let b = c.broker.unwrap();
        assert_eq!(b.exchange, "amq.topic");
        assert_eq!(c.triggers.len(), 2);
        assert_eq!(c.triggers[1].line, 20);
        match &c.triggers[1].kind {
            TriggerKind::Hint {
                settle,
                expect_change,
                dir,
                ..
            } => {
                assert_eq!(*settle, Duration::from_secs(120));
                assert_eq!(*expect_change, Some(Duration::from_secs(1800)));
                assert_eq!(dir.as_ref().unwrap().as_str(), "updates");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.ack.unwrap().topic, "org.example.prod.mirrorpush.synced");
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../examples/listen.toml");
        let c = parse(Path::new("examples/listen.toml"), text).unwrap();
        assert_eq!(c.triggers.len(), 2);
        assert!(c.ack.is_some() && c.broker.is_some());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        assert_eq!(
            err("max_age = \"10m\"\nfoo = 1\n"),
            "/etc/l.toml line 2: unknown key 'foo' in the top level"
        );
        assert_eq!(
            err(&GOOD.replace("settle = \"2m\"", "settle = \"2m\"\nsetle = \"1m\"")),
            "/etc/l.toml line 25: unknown key 'setle' in [[trigger]]"
        );
        assert!(err(&GOOD.replace("max_age = \"10m\"", "max_age = \"ten\""))
            .starts_with("/etc/l.toml line 6: 'max_age'"));
        assert!(
            err(&GOOD.replace("dir = \"updates\"", "dir = \"../x\"")).contains("line 23: 'dir'")
        );
        assert!(err(&GOOD.replace("module = \"fedora\"\n", "")).contains("needs 'allowed_signers'"));
        assert!(err(&GOOD.replace(
            "modules = [\"fedora\"]",
            "modules = [\"fedora\"]\nmodule = \"x\""
        ))
        .contains("not both"));
        assert!(err(&GOOD.replace("mirror = \"mirror.example.net\"\n", ""))
            .contains("[ack] needs 'mirror'"));
        assert!(err(&GOOD.replace("url = \"amqps", "url = \"http")).contains("line 9"));
        assert!(
            err(&GOOD.replace("cert = \"/etc/mirrorpush/bus-cert.pem\"\n", ""))
                .contains("go together")
        );
    }
}
