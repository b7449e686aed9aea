//! Hand-parsed argv (the handler takes no clap: it must start in a few ms).
//!
//! `mirrorpush-handler [--config F] [--key LABEL] [sync [--full] [--by-mode] <module> [dir] | status [--json]
//! | check | authorized-key [--from PATTERNS] KEYFILE|- | --version]`
//! Without a verb the request comes from `SSH_ORIGINAL_COMMAND` (forced-command mode); with a
//! verb and no `SSH_ORIGINAL_COMMAND` it is local mode, where `sync` always waits for the run
//! that covers it, running it in the foreground when no runner is active (a systemd unit would
//! kill a detached runner with its cgroup). `--full` forces a plain rsync where the module
//! has a file list, repairing drift the lists cannot see. `--by-mode` answers a local `sync` as
//! a push is answered, by the module's `mode` (a `detach` module: `accepted` or `queued` at
//! once, a detached runner syncs): what the bus listener asks for. A verb together
//! with `SSH_ORIGINAL_COMMAND` is a misconfigured forced command (exit 78). There is also
//! the hidden `__run <module>`, which is what a detached runner executes. argv is written by
//! the admin (authorized_keys) or by the handler itself, never by the client, so the hidden verb
//! grants a client nothing: the client only controls `SSH_ORIGINAL_COMMAND`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::config::DEFAULT_CONFIG;

pub(crate) const USAGE: &str = "usage: mirrorpush-handler [--config FILE] [--key LABEL] [sync [--full] [--by-mode] <module> [dir] | status [--json] | check | authorized-key [--from PATTERNS] KEYFILE|- | --version]";
pub(crate) const RUN_VERB: &str = "__run";
pub(crate) const DOWNSTREAM_VERB: &str = "__downstream";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// No verb: the request comes from `SSH_ORIGINAL_COMMAND`.
    Forced,
    /// `sync [--full] <module> [dir]`, re-joined as raw request bytes so the one grammar
    /// validates it.
    Sync {
        raw: Vec<u8>,
        /// `--full`: a plain rsync even where the module has a file list.
        plain: bool,
        /// `--by-mode`: answered by the module's mode, as a push is, not always waiting.
        by_mode: bool,
    },
    Status {
        json: bool,
    },
    Check,
    /// `authorized-key [--from PATTERNS] KEYFILE|-`: print the key line for one master.
    AuthorizedKey {
        from: Option<String>,
        key_file: OsString,
    },
    Help,
    Version,
    /// Hidden: the detached runner for one module.
    Run(String),
    /// Hidden: a hub's detached push of `targets` of a module to its downstream mirrors.
    Downstream {
        module: String,
        targets: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub config: PathBuf,
    pub key: Option<String>,
    pub verb: Verb,
}

pub fn parse(args: &[OsString]) -> Result<Invocation, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut key = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        let (name, inline) = match a.iter().position(|&b| b == b'=') {
            Some(p) if a.starts_with(b"--") => (&a[..p], Some(&args[i].as_bytes()[p + 1..])),
            _ => (a, None),
        };
        if name != b"--config" && name != b"--key" {
            break;
        }
        let value: OsString = match inline {
            Some(v) => std::ffi::OsStr::from_bytes(v).to_owned(),
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{} needs a value", String::from_utf8_lossy(name)))?
            }
        };
        if name == b"--config" {
            config = PathBuf::from(value);
        } else {
            key = Some(
                value
                    .into_string()
                    .map_err(|_| "--key must be UTF-8".to_owned())?,
            );
        }
        i += 1;
    }
    let rest: Vec<&[u8]> = args[i..].iter().map(|a| a.as_bytes()).collect();
    let verb = match rest.as_slice() {
        [] => Verb::Forced,
        [b"sync", words @ ..] if !words.is_empty() => {
            let (mut plain, mut by_mode, mut words) = (false, false, words);
            loop {
                match words {
                    [b"--full", ..] if !plain => plain = true,
                    [b"--by-mode", ..] if !by_mode => by_mode = true,
                    _ => break,
                }
                words = &words[1..];
            }
            if words.is_empty() {
                return Err(USAGE.to_owned());
            }
            let mut raw = b"sync".to_vec();
            for w in words {
                raw.push(b' ');
                raw.extend_from_slice(w);
            }
            Verb::Sync {
                raw,
                plain,
                by_mode,
            }
        }
        [b"status"] => Verb::Status { json: false },
        [b"status", b"--json"] => Verb::Status { json: true },
        [b"check"] => Verb::Check,
        [b"authorized-key", b"--from", from, key_file] => Verb::AuthorizedKey {
            from: Some(String::from_utf8_lossy(from).into_owned()),
            key_file: std::ffi::OsStr::from_bytes(key_file).to_owned(),
        },
        [b"authorized-key", key_file] if !key_file.starts_with(b"--") => Verb::AuthorizedKey {
            from: None,
            key_file: std::ffi::OsStr::from_bytes(key_file).to_owned(),
        },
        [b"--help" | b"-h" | b"help"] => Verb::Help,
        [b"--version" | b"-V"] => Verb::Version,
        [b"__run", module] => Verb::Run(String::from_utf8_lossy(module).into_owned()),
        [b"__downstream", module, targets @ ..] if !targets.is_empty() => Verb::Downstream {
            module: String::from_utf8_lossy(module).into_owned(),
            targets: targets
                .iter()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect(),
        },
        _ => return Err(USAGE.to_owned()),
    };
    Ok(Invocation { config, key, verb })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, String> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_options_and_verbs() {
        let i = p(&["--config", "/x.toml", "--key=master"]).unwrap();
        assert_eq!(i.config, PathBuf::from("/x.toml"));
        assert_eq!(i.key.as_deref(), Some("master"));
        assert_eq!(i.verb, Verb::Forced);
        assert_eq!(p(&[]).unwrap().config, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(
            p(&["--config=/y", "sync", "fedora", "a/b"]).unwrap().verb,
            Verb::Sync {
                raw: b"sync fedora a/b".to_vec(),
                plain: false,
                by_mode: false
            }
        );
        assert_eq!(
            p(&["sync", "--full", "fedora"]).unwrap().verb,
            Verb::Sync {
                raw: b"sync fedora".to_vec(),
                plain: true,
                by_mode: false
            }
        );
        assert_eq!(
            p(&["sync", "--by-mode", "--full", "fedora", "d"])
                .unwrap()
                .verb,
            Verb::Sync {
                raw: b"sync fedora d".to_vec(),
                plain: true,
                by_mode: true
            }
        );
        assert_eq!(p(&["--version"]).unwrap().verb, Verb::Version);
        assert_eq!(p(&["-V"]).unwrap().verb, Verb::Version);
        assert_eq!(
            p(&["status", "--json"]).unwrap().verb,
            Verb::Status { json: true }
        );
        assert_eq!(p(&["check"]).unwrap().verb, Verb::Check);
        assert_eq!(p(&["__run", "m"]).unwrap().verb, Verb::Run("m".into()));
    }

    #[test]
    fn refuses_bad_usage() {
        for bad in [
            &["--config"][..],
            &["sync"],
            &["sync", "--full"],
            &["sync", "--by-mode"],
            &["status", "--xml"],
            &["frobnicate"],
            &["check", "extra"],
            &["--verbose"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_argv_never_panics(args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 0..5)) {
            use std::os::unix::ffi::OsStringExt;
            let args: Vec<OsString> = args.into_iter().map(OsString::from_vec).collect();
            let _ = parse(&args);
        }
    }
}
