//! How the handler starts other programs (rsync, the `mirrorpush` master): an exact argv, the
//! scrubbed environment, `/` as working directory, stdin from /dev/null, its own process group,
//! and a wall-clock bound after which the whole group is killed.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::config::SAFE_PATH;

/// The only environment a child ever sees: `PATH`, `LC_ALL=C` and an empty `HOME`.
pub fn scrubbed(cmd: &mut Command) -> &mut Command {
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .env("HOME", "")
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0)
}

/// Reads at most `limit` bytes of a child's pipe on a thread, so the child never blocks on it.
pub fn drain(
    pipe: Option<impl Read + Send + 'static>,
    limit: u64,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(p) = pipe {
            let mut bytes = Vec::new();
            let mut limited = p.take(limit);
            let _ = limited.read_to_end(&mut bytes);
            // Keep reading (and dropping) so the child is not stuck on a full pipe.
            let mut rest = limited.into_inner();
            let _ = std::io::copy(&mut rest, &mut std::io::sink());
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child` at most `timeout`; after that its process group is killed and `None`
/// returned.
pub fn wait_bounded(child: Child, timeout: Duration) -> Option<std::io::Result<ExitStatus>> {
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => Some(status),
        Err(_) => {
            // SAFETY: kill(2) on the process group the child was started in.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = rx.recv();
            None
        }
    }
}

/// The first line worth showing from a program's stderr: one starting with `prefix` if any,
/// else the first non-empty one; escaped.
pub fn first_line(text: &str, prefixes: &[&str]) -> Option<String> {
    let lines = || text.lines().map(str::trim);
    lines()
        .find(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .or_else(|| lines().find(|l| !l.is_empty()))
        .map(|l| crate::request::escape_bytes(l.as_bytes()))
}
