//! `mirrorpush-handler check`: tests what a sync needs, not only that the config parses: the
//! state dir is writable, every `dest` is a safe directory the account can write, rsync is new
//! enough, and the upstream answers (a bounded listing of the source, and of the file list
//! where one is configured). As root it only reads: it creates nothing and checks that the
//! account owning the state dir could write what it must.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::config::{Config, Module};
use super::exit::{fail, report, say, EXIT_CONFIG, EXIT_NOPERM, EXIT_OK, EXIT_TEMPFAIL};
use super::{child, cli, config, destdir, rsync, state};

/// Wall-clock bound of one upstream probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// One thing `check` found wrong: exit code and the line after `error: `.
struct Finding(i32, String);

/// `root`: running as root, where `check` only reads.
pub(crate) fn run(inv: &cli::Invocation, as_root: bool) -> i32 {
    let cfg = match config::load(&inv.config) {
        Ok(c) => c,
        Err(e) => return report(&fail(EXIT_CONFIG, e.0)),
    };
    let mut problems = Vec::new();
    let account = state_dir(&cfg, as_root, &mut problems);
    let version = match rsync::check_version(&cfg.rsync, &cfg.state_dir, !as_root) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(Finding(EXIT_CONFIG, e));
            None
        }
    };
    for m in cfg.modules.values() {
        dest(&cfg, m, account, as_root, &mut problems);
        if version.is_some() {
            upstream(&cfg, m, &mut problems);
        }
        if let Err(e) = super::downstream::check(&cfg, m) {
            problems.push(Finding(EXIT_CONFIG, e));
        }
    }
    for p in &problems {
        let _ = report(&fail(p.0, p.1.clone()));
    }
    if let Some(worst) = problems.iter().map(|p| p.0).max() {
        return worst;
    }
    let names: Vec<&str> = cfg.modules.keys().map(String::as_str).collect();
    let (a, b, c) = version.unwrap_or_default();
    say(&format!(
        "ok: {} module(s) [{}], rsync {a}.{b}.{c} at {}, state dir {}{}",
        names.len(),
        names.join(", "),
        cfg.rsync.display(),
        cfg.state_dir.display(),
        if as_root {
            " (checked as root: read only)"
        } else {
            ""
        }
    ));
    EXIT_OK
}

/// Checks the state dir; returns the uid that syncs (ours, or as root the dir's owner).
fn state_dir(cfg: &Config, as_root: bool, problems: &mut Vec<Finding>) -> Option<u32> {
    let dir = &cfg.state_dir;
    if as_root {
        return match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() && m.uid() != 0 => {
                if let Err(e) = crate::private_dir::check(dir, &m, m.uid()) {
                    problems.push(Finding(EXIT_NOPERM, e.to_string()));
                }
                Some(m.uid())
            }
            Ok(m) if m.is_dir() => {
                problems.push(Finding(
                    EXIT_TEMPFAIL,
                    format!(
                        "state dir {} is owned by root: the mirror account cannot write it (chown -R mirrorpush: {})",
                        dir.display(),
                        dir.display()
                    ),
                ));
                None
            }
            Ok(_) => {
                problems.push(Finding(
                    EXIT_TEMPFAIL,
                    format!("state dir {} is not a directory", dir.display()),
                ));
                None
            }
            Err(e) => {
                problems.push(Finding(
                    EXIT_TEMPFAIL,
                    format!("state dir {}: {e}", dir.display()),
                ));
                None
            }
        };
    }
    let probe = dir.join(format!(".check.{}", std::process::id()));
    let writable = state::ensure_dir(dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
        })
        .and_then(|_| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        problems.push(Finding(
            EXIT_TEMPFAIL,
            format!("state dir {} is not writable: {e}", dir.display()),
        ));
    } else if let Err(e) = state::check_private_dir(dir, true) {
        problems.push(Finding(EXIT_NOPERM, e.to_string()));
    }
    Some(rustix::process::geteuid().as_raw())
}

fn dest(
    cfg: &Config,
    m: &Module,
    account: Option<u32>,
    as_root: bool,
    problems: &mut Vec<Finding>,
) {
    let shown = format!(
        "{}: dest {} of module '{}'",
        cfg.path.display(),
        m.dest.display(),
        m.name
    );
    let uid = account.unwrap_or_else(|| rustix::process::geteuid().as_raw());
    let fd = match destdir::open_dest_for(&m.dest, uid) {
        Ok(fd) => fd,
        Err(e) => {
            problems.push(Finding(EXIT_CONFIG, format!("{shown}: {e}")));
            return;
        }
    };
    if as_root {
        // Read only: the account must own dest and have write permission on it.
        let ok =
            rfs::fstat(&fd).is_ok_and(|st| Some(st.st_uid) == account && st.st_mode & 0o200 != 0);
        if !ok {
            problems.push(Finding(
                EXIT_CONFIG,
                format!(
                    "{shown} is not owned and writable by the account that owns the state dir (uid {})",
                    account.map_or_else(|| "?".to_owned(), |u| u.to_string())
                ),
            ));
        }
        return;
    }
    let probe = format!(".mirrorpush-check.{}", std::process::id());
    match rfs::openat(
        &fd,
        probe.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(_) => {
            let _ = rfs::unlinkat(&fd, probe.as_str(), AtFlags::empty());
        }
        Err(e) => problems.push(Finding(
            EXIT_CONFIG,
            format!("{shown} is not writable by this account: {e}"),
        )),
    }
}

/// The upstream answers: the source lists, and so does the file list where one is configured.
fn upstream(cfg: &Config, m: &Module, problems: &mut Vec<Finding>) {
    let mut sources = vec![m.source.clone()];
    if let Some(list) = &m.filelist {
        sources.push(format!("{}{list}", m.source));
    }
    let mut source_lists = false;
    for source in sources {
        match list_source(&cfg.rsync, m, &source) {
            Ok(()) => source_lists = true,
            // The module answers but its list is not there: the usual state before the
            // upstream's first publish (or, behind a hub, before the hub's first full run).
            Err(ListFailure::Missing(_)) if source_lists => problems.push(Finding(
                EXIT_CONFIG,
                format!(
                    "module '{}': the upstream has not published its list yet ({source} does \
                     not exist): run `mirrorpush filelist` there (behind a hub: wait for the \
                     hub's first full run), or sync once without `filelist` and add it later",
                    m.name
                ),
            )),
            Err(why) => problems.push(Finding(
                EXIT_CONFIG,
                format!(
                    "module '{}': upstream {source} cannot be listed: {why}",
                    m.name
                ),
            )),
        }
    }
}

/// Why a source did not list.
enum ListFailure {
    /// rsync's "partial transfer" exit with the sender's `link_stat ... No such file or
    /// directory`: the upstream answers but the path is not there.
    Missing(String),
    Other(String),
}

impl std::fmt::Display for ListFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListFailure::Missing(why) | ListFailure::Other(why) => f.write_str(why),
        }
    }
}

/// `rsync --list-only` of one source (no recursion), bounded in time.
fn list_source(rsync: &Path, m: &Module, source: &str) -> Result<(), ListFailure> {
    let mut cmd = Command::new(rsync);
    cmd.arg("--list-only").arg("--no-motd").arg("--timeout=30");
    if m.is_daemon_source() {
        cmd.arg("--contimeout=10");
    }
    // The admin's options may be needed to reach the upstream (e.g. --password-file).
    cmd.args(&m.rsync_args).arg("--").arg(source);
    child::scrubbed(&mut cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut running = cmd
        .spawn()
        .map_err(|e| ListFailure::Other(format!("cannot run rsync: {e}")))?;
    let stderr = child::read_capped(running.stderr.take(), 64 * 1024);
    let status = match child::wait_bounded(running, PROBE_TIMEOUT, Duration::ZERO) {
        Some(s) => s.map_err(|e| ListFailure::Other(e.to_string()))?,
        None => {
            return Err(ListFailure::Other(format!(
                "no answer within {}",
                humantime::format_duration(PROBE_TIMEOUT)
            )))
        }
    };
    let text = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let said = child::first_line(&text, &["@ERROR", "rsync:"]).unwrap_or_default();
    let why = format!(
        "rsync exit {}{}{said}",
        status.code().unwrap_or(-1),
        if said.is_empty() { "" } else { ": " },
    );
    if status.code() == Some(23) && said.contains("No such file or directory") {
        Err(ListFailure::Missing(why))
    } else {
        Err(ListFailure::Other(why))
    }
}
