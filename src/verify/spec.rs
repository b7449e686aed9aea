//! What a mirror's public tree is (`url`) and what proves it carries a push (`verify`), as the
//! registry spells them (README, "Propagation").
//!
//! Both are validated when the registry is read, so a fetch only ever joins a checked base URL
//! and a checked relative path: no `..`, no leading `/`, no query, nothing to percent-encode.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// `url`: one template (`{module}` replaced by the module's name) or one URL per module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSpec {
    Template(String),
    PerModule(BTreeMap<String, String>),
}

/// The registry's raw `url` value: a string or a table of strings.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum RawUrl {
    One(String),
    Table(BTreeMap<String, String>),
}

impl UrlSpec {
    pub(crate) fn parse(raw: RawUrl) -> Result<UrlSpec, String> {
        match raw {
            RawUrl::One(t) => {
                check_url(&t.replace("{module}", "m"))?;
                Ok(UrlSpec::Template(t))
            }
            RawUrl::Table(map) => {
                for (module, url) in &map {
                    crate::request::ModuleName::parse(module)
                        .map_err(|e| format!("module name {module:?} {e}"))?;
                    check_url(url)?;
                }
                Ok(UrlSpec::PerModule(map))
            }
        }
    }

    /// The public tree of `module` on this mirror, always ending in `/`; `None` when a per-module
    /// table does not name it.
    pub fn for_module(&self, module: &str) -> Option<String> {
        let mut url = match self {
            UrlSpec::Template(t) => t.replace("{module}", module),
            UrlSpec::PerModule(map) => map.get(module)?.clone(),
        };
        if !url.ends_with('/') {
            url.push('/');
        }
        Some(url)
    }
}

/// The schemes a mirror's tree may be fetched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Rsync,
}

impl Scheme {
    pub fn of(url: &str) -> Option<Scheme> {
        let (scheme, _) = url.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "rsync" => Some(Scheme::Rsync),
            _ => None,
        }
    }
}

/// A URL we will fetch from: http, https or rsync, a host, no whitespace or controls, no query or
/// fragment (the proof's path is appended to it).
fn check_url(url: &str) -> Result<(), String> {
    if Scheme::of(url).is_none() {
        return Err(format!(
            "url {url:?} must start with https://, http:// or rsync://"
        ));
    }
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!("url {url:?} needs a host (and no user name)"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control())
        || url.contains(['?', '#', '{', '}', '\\', '"'])
    {
        return Err(format!(
            "url {url:?} must not contain spaces, controls, a query or a fragment \
             ({{module}} is the only placeholder)"
        ));
    }
    Ok(())
}

/// `verify`: which file of the module's tree proves a mirror has the push.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProofSpec {
    /// `trace:<path>`: the `Archive serial:` line of the mirror's own trace file, compared with
    /// the one in the master's `project/trace/master`.
    Trace(String),
    /// `filelist:<name>`: sha256 of the module's file list.
    Filelist(String),
    /// `file:<path>`: sha256 of one file, e.g. `repodata/repomd.xml`.
    File(String),
}

/// Where the master's own serial is read for `trace:` proofs (ftpsync's convention).
pub const MASTER_TRACE: &str = "project/trace/master";

impl ProofSpec {
    pub fn parse(text: &str) -> Result<ProofSpec, String> {
        let (kind, path) = text.split_once(':').ok_or_else(|| {
            format!(
                "verify {text:?} must be \"trace:<path>\", \"filelist:<name>\" or \"file:<path>\""
            )
        })?;
        check_path(path).map_err(|e| format!("verify {text:?}: {e}"))?;
        let path = path.to_owned();
        match kind {
            "trace" => Ok(ProofSpec::Trace(path)),
            "filelist" => Ok(ProofSpec::Filelist(path)),
            "file" => Ok(ProofSpec::File(path)),
            other => Err(format!(
                "verify {text:?}: unknown kind {other:?}; use trace:, filelist: or file:"
            )),
        }
    }

    /// The file fetched from the mirror, relative to its tree.
    pub fn mirror_path(&self) -> &str {
        match self {
            ProofSpec::Trace(p) | ProofSpec::Filelist(p) | ProofSpec::File(p) => p,
        }
    }

    /// The file read in the master's tree.
    pub fn master_path(&self) -> &str {
        match self {
            ProofSpec::Trace(_) => MASTER_TRACE,
            ProofSpec::Filelist(p) | ProofSpec::File(p) => p,
        }
    }

    /// Serial or sha256 of a file's content; `Err` says why the content proves nothing.
    pub fn value_of(&self, content: &[u8]) -> Result<String, String> {
        match self {
            ProofSpec::Trace(_) => archive_serial(content)
                .ok_or_else(|| "no `Archive serial:` line (not a trace file?)".to_owned()),
            ProofSpec::Filelist(_) | ProofSpec::File(_) => Ok(sha256_hex(content)),
        }
    }
}

impl fmt::Display for ProofSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofSpec::Trace(p) => write!(f, "trace:{p}"),
            ProofSpec::Filelist(p) => write!(f, "filelist:{p}"),
            ProofSpec::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// A relative path of plain components: `[A-Za-z0-9_][A-Za-z0-9._+~-]*` joined by `/`, as the
/// request grammar's dirs, so it is joined to a URL or an rsync source as it is.
fn check_path(path: &str) -> Result<(), String> {
    let ok_component = |c: &str| {
        let mut chars = c.chars();
        matches!(chars.next(), Some(f) if f.is_ascii_alphanumeric() || f == '_')
            && chars.all(|ch| ch.is_ascii_alphanumeric() || "._+~-".contains(ch))
    };
    if path.is_empty() || path.len() > 1024 || !path.split('/').all(ok_component) {
        return Err(
            "the path must be relative, with components of letters, digits and \
                    `._+~-` (not starting with `.`, `-` or `~`)"
                .into(),
        );
    }
    Ok(())
}

/// The value of the first `Archive serial:` line, trimmed; at most 128 characters of it count.
pub fn archive_serial(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    text.lines().find_map(|l| {
        let v = l.strip_prefix("Archive serial:")?.trim();
        (!v.is_empty()).then(|| v.chars().take(128).collect())
    })
}

pub fn sha256_hex(content: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(content);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_parse_and_print_back() {
        for t in [
            "trace:project/trace/m.example.net",
            "filelist:fullfiletimelist-fedora",
            "file:repodata/repomd.xml",
        ] {
            assert_eq!(ProofSpec::parse(t).unwrap().to_string(), t);
        }
        for bad in [
            "trace",
            "trace:",
            "sha:x",
            "file:/etc/passwd",
            "file:../x",
            "file:a//b",
            "file:a/./b",
            "file:a b",
            "file:a?b",
            "file:.hidden",
        ] {
            assert!(ProofSpec::parse(bad).is_err(), "{bad}");
        }
        let p = ProofSpec::parse("trace:project/trace/m1").unwrap();
        assert_eq!(p.master_path(), MASTER_TRACE);
        assert_eq!(p.mirror_path(), "project/trace/m1");
    }

    #[test]
    fn trace_values_are_the_archive_serial() {
        let p = ProofSpec::Trace("t".into());
        let trace = b"Mon Nov 30 10:00:00 UTC 2026\nDate: x\nArchive serial: 2026113001\n";
        assert_eq!(p.value_of(trace).unwrap(), "2026113001");
        assert!(p.value_of(b"<html><body>404</body></html>").is_err());
        let f = ProofSpec::File("x".into());
        assert_eq!(
            f.value_of(b"").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn urls_are_checked_and_expanded() {
        let t = UrlSpec::parse(RawUrl::One("https://m.example.net/{module}".into())).unwrap();
        assert_eq!(
            t.for_module("fedora").as_deref(),
            Some("https://m.example.net/fedora/")
        );
        let mut map = BTreeMap::new();
        map.insert("epel".to_owned(), "rsync://m.example.net/epel/".to_owned());
        let per = UrlSpec::parse(RawUrl::Table(map)).unwrap();
        assert_eq!(per.for_module("fedora"), None);
        assert_eq!(
            per.for_module("epel").as_deref(),
            Some("rsync://m.example.net/epel/")
        );
        for bad in [
            "ftp://m/x",
            "m.example.net/x",
            "http:///x",
            "http://u@m/x",
            "http://m/x?y",
            "http://m/a b",
            "http://m/{other}",
        ] {
            assert!(UrlSpec::parse(RawUrl::One(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(Scheme::of("RSYNC://h/m/"), Some(Scheme::Rsync));
    }
}
