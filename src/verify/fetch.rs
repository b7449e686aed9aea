//! Fetching one proof file from a mirror's public tree, bounded whatever the mirror does: at most
//! [`MAX_PROOF_BYTES`], at most [`MAX_REDIRECTS`] redirects, the mirror's `connect_timeout` for
//! the connection and its `timeout` for the whole fetch. http(s) through ureq (no compression, so
//! no decompression bomb; an https tree never redirects to plain http); rsync through the rsync
//! binary with an exact argv, no shell, a scrubbed environment and rsync's own bounds
//! (`--max-size`, `--timeout`, `--contimeout`), killed if it outlives them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::proof::MAX_PROOF_BYTES;
use super::spec::Scheme;

pub const MAX_REDIRECTS: u32 = 5;

/// Why a fetch failed, as `verify` and `report` name it (`connect`, `timeout`, `http-404`, ...),
/// and a detail for people (our own words, with anything the mirror said escaped later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub class: String,
    pub detail: String,
}

impl FetchError {
    fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        FetchError {
            class: class.into(),
            detail: detail.into(),
        }
    }
}

/// The bounds of one fetch (the mirror's registry timeouts).
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// Fetches `base` (a tree URL ending in `/`) joined with `path` (checked relative path).
pub async fn fetch(base: &str, path: &str, limits: FetchLimits) -> Result<Vec<u8>, FetchError> {
    let url = format!("{base}{path}");
    match Scheme::of(base) {
        Some(Scheme::Http) | Some(Scheme::Https) => {
            let https = Scheme::of(base) == Some(Scheme::Https);
            let job = tokio::task::spawn_blocking(move || http_get(&url, https, limits));
            // ureq's global timeout ends the blocking call; this only guards against a bug.
            match tokio::time::timeout(limits.timeout + Duration::from_secs(5), job).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(FetchError::new(
                    "internal",
                    format!("fetch task failed: {e}"),
                )),
                Err(_) => Err(FetchError::new("timeout", "no answer in time")),
            }
        }
        Some(Scheme::Rsync) => rsync_get(&url, limits).await,
        None => Err(FetchError::new("url", "unsupported URL scheme")),
    }
}

fn http_get(url: &str, https: bool, limits: FetchLimits) -> Result<Vec<u8>, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limits.timeout))
        .timeout_connect(Some(limits.connect_timeout))
        .max_redirects(MAX_REDIRECTS)
        .max_redirects_will_error(true)
        .https_only(https)
        .http_status_as_error(false)
        .max_response_header_size(64 * 1024)
        .user_agent(concat!("mirrorpush-verify/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(classify)?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::new(
            format!("http-{status}"),
            format!("HTTP status {status}"),
        ));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_PROOF_BYTES)
        .read_to_vec()
        .map_err(classify)
}

fn classify(e: ureq::Error) -> FetchError {
    use ureq::Error as E;
    let class = match &e {
        E::Timeout(_) => "timeout",
        E::HostNotFound | E::ConnectionFailed => "connect",
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout",
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::AddrNotAvailable => "connect",
            _ => "io",
        },
        E::BodyExceedsLimit(_) | E::LargeResponseHeader(..) => "too-large",
        E::TooManyRedirects | E::RedirectFailed | E::RequireHttpsOnly(_) => "redirects",
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => "tls",
        E::StatusCode(c) => {
            return FetchError::new(format!("http-{c}"), format!("HTTP status {c}"))
        }
        _ => "http",
    };
    FetchError::new(class, e.to_string())
}

static FETCHES: AtomicU64 = AtomicU64::new(0);

/// A private directory for one rsync fetch, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let n = FETCHES.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mirrorpush-verify-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// rsync's argv for fetching `url` into `dest`: exact, tested, nothing from the mirror in it
/// but the URL the registry gave.
pub fn rsync_argv(url: &str, dest: &Path, limits: FetchLimits) -> Vec<String> {
    let secs = |d: Duration| d.as_secs().max(1).to_string();
    vec![
        "--quiet".into(),
        "--no-motd".into(),
        // The file's content, not a link the mirror made: a link is resolved on its side.
        "--copy-links".into(),
        format!("--max-size={MAX_PROOF_BYTES}"),
        format!("--timeout={}", secs(limits.timeout)),
        format!("--contimeout={}", secs(limits.connect_timeout)),
        "--".into(),
        url.into(),
        dest.display().to_string(),
    ]
}

async fn rsync_get(url: &str, limits: FetchLimits) -> Result<Vec<u8>, FetchError> {
    let scratch = Scratch::new()
        .map_err(|e| FetchError::new("internal", format!("cannot make a scratch dir: {e}")))?;
    let dest = scratch.0.join("proof");
    let mut cmd = tokio::process::Command::new("rsync");
    cmd.args(rsync_argv(url, &dest, limits))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| FetchError::new("internal", format!("cannot run rsync: {e}")))?;
    let bound = limits.connect_timeout + limits.timeout + Duration::from_secs(2);
    let out = match tokio::time::timeout(bound, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(FetchError::new("internal", format!("rsync: {e}"))),
        // Dropping the future kills rsync (kill_on_drop).
        Err(_) => return Err(FetchError::new("timeout", "rsync ran past its timeouts")),
    };
    if !out.status.success() {
        let code = out.status.code().unwrap_or(-1);
        let said = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(300)]).into_owned();
        let class = match code {
            30 | 35 => "timeout".to_owned(),
            10 if said.contains("Connection refused") => "connect".to_owned(),
            _ => format!("rsync-{code}"),
        };
        return Err(FetchError::new(
            class,
            format!("rsync exit {code}: {}", said.trim()),
        ));
    }
    let meta = std::fs::symlink_metadata(&dest);
    match meta {
        // --max-size skips a larger file without an error.
        Err(_) => Err(FetchError::new(
            "too-large",
            "rsync skipped it: larger than 1 MiB (or not a regular file)",
        )),
        Ok(m) if !m.is_file() || m.len() > MAX_PROOF_BYTES => {
            Err(FetchError::new("too-large", "larger than 1 MiB"))
        }
        Ok(_) => std::fs::read(&dest)
            .map_err(|e| FetchError::new("internal", format!("cannot read the fetched copy: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_argv_is_exact() {
        let limits = FetchLimits {
            connect_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(120),
        };
        assert_eq!(
            rsync_argv(
                "rsync://m.example.net/fedora/repodata/repomd.xml",
                Path::new("/tmp/x/proof"),
                limits
            ),
            [
                "--quiet",
                "--no-motd",
                "--copy-links",
                "--max-size=1048576",
                "--timeout=120",
                "--contimeout=1",
                "--",
                "rsync://m.example.net/fedora/repodata/repomd.xml",
                "/tmp/x/proof"
            ]
        );
    }
}
