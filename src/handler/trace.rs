//! Trace files under `dest`, written after each good run that covered the whole module:
//! - `trace`: Debian ftpsync's format, which Debian's mirror checker and mirror-status tools
//!   read: the first line is the date as `date -u` prints it in the POSIX locale, then
//!   `Field: value` lines.
//! - `lastsync`: the end of the run in epoch seconds, as Arch Linux's mirror checks read it.
//!
//! Both are written by temp file and rename through the opened dest directory, and every rsync
//! run protects them from being overwritten or deleted.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::Module;
use super::destdir;
use crate::request::RelDir;

/// The upstream's own trace file, whose `Archive serial` is copied (as ftpsync does).
pub const MASTER_TRACE: &str = "project/trace/master";
/// Most bytes read from the upstream's trace: it is upstream content, so bounded.
const MASTER_TRACE_LIMIT: usize = 64 * 1024;

/// What went into a run, for the trace.
pub struct RunFacts {
    pub started: SystemTime,
    pub ended: SystemTime,
    /// `ssh` for a push, `cron` for a local (timer or admin) run, as ftpsync names them.
    pub trigger: &'static str,
    pub bytes_received: u64,
    /// Time spent in rsync.
    pub rsync_time: Duration,
}

/// Writes the module's trace and lastsync files (those configured); Ok(true) when any was.
pub fn write(m: &Module, dest: &OwnedFd, facts: &RunFacts) -> std::io::Result<bool> {
    if let Some(t) = &m.trace {
        let serial = destdir::read_file_at(
            dest,
            &RelDir::parse(MASTER_TRACE).expect("a valid constant"),
            MASTER_TRACE_LIMIT,
        )
        .map(|b| archive_serial(&b));
        let text = content(m, facts, serial.as_ref(), &hostname());
        destdir::write_file_at(dest, t, text.as_bytes()).map_err(|e| naming(m, t, e))?;
    }
    if let Some(l) = &m.lastsync {
        let secs = facts
            .ended
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        destdir::write_file_at(dest, l, format!("{secs}\n").as_bytes())
            .map_err(|e| naming(m, l, e))?;
    }
    Ok(m.trace.is_some() || m.lastsync.is_some())
}

/// An error that names the file under dest it is about.
fn naming(m: &Module, rel: &RelDir, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("cannot write {}: {e}", m.dest.join(rel.as_str()).display()),
    )
}

/// The `Archive serial` of the upstream's master trace: `unknown` when the file has no such
/// field or its value is not a plain token (upstream content is never copied raw).
pub fn archive_serial(master: &[u8]) -> String {
    String::from_utf8_lossy(master)
        .lines()
        .find_map(|l| l.strip_prefix("Archive serial: "))
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| "unknown".to_owned(), str::to_owned)
}

/// The trace's text. `serial`: `None` when the upstream has no master trace (the field is then
/// left out, as ftpsync does).
pub fn content(m: &Module, f: &RunFacts, serial: Option<&String>, host: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", date_u(f.ended));
    let _ = writeln!(s, "Date: {}", rfc2822(f.ended));
    let _ = writeln!(s, "Date-Started: {}", rfc2822(f.started));
    if let Some(serial) = serial {
        let _ = writeln!(s, "Archive serial: {serial}");
    }
    let _ = writeln!(s, "Creator: mirrorpush {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "Running on host: {host}");
    let _ = writeln!(s, "Trigger: {}", f.trigger);
    let _ = writeln!(s, "Upstream-mirror: {}", upstream_host(&m.source));
    if f.bytes_received > 0 {
        let _ = writeln!(s, "Total bytes received in rsync: {}", f.bytes_received);
    }
    let secs = f.rsync_time.as_secs();
    let _ = writeln!(s, "Total time spent in rsync: {secs}");
    if let Some(rate) = f.bytes_received.checked_div(secs) {
        let _ = writeln!(s, "Average rate: {rate} B/s");
    }
    s
}

/// The host part of an rsync source: `rsync://host[:port]/...`, `host::module`, or `localhost`
/// for a local path.
pub fn upstream_host(source: &str) -> String {
    if let Some(rest) = source.strip_prefix("rsync://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or(authority);
        return match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
            None => host.split(':').next().unwrap_or(host).to_owned(),
        };
    }
    if let Some((host, _)) = source.split_once("::") {
        return host.rsplit('@').next().unwrap_or(host).to_owned();
    }
    "localhost".to_owned()
}

fn hostname() -> String {
    let mut h = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    h.retain(|c| c.is_ascii_graphic());
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// UTC civil time: (year, month 1-12, day, hour, minute, second, weekday index into DAYS).
fn civil(t: SystemTime) -> (i64, usize, u32, u64, u64, u64, usize) {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        days.rem_euclid(7) as usize,
    )
}

/// `date -u` in the POSIX locale: `Wed Nov 25 15:20:00 UTC 2026` (day padded with a space).
pub fn date_u(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, wd) = civil(t);
    format!(
        "{} {} {d:>2} {hh:02}:{mm:02}:{ss:02} UTC {y}",
        DAYS[wd],
        MONTHS[m - 1]
    )
}

/// `date -u -R`: `Wed, 25 Nov 2026 15:20:00 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, wd) = civil(t);
    format!(
        "{}, {d:02} {} {y} {hh:02}:{mm:02}:{ss:02} +0000",
        DAYS[wd],
        MONTHS[m - 1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates_match_gnu_date() {
        // date -u -d @1795619100 ; date -u -R -d @1795619100
        assert_eq!(date_u(at(1_795_619_100)), "Wed Nov 25 15:05:00 UTC 2026");
        assert_eq!(
            rfc2822(at(1_795_619_100)),
            "Wed, 25 Nov 2026 15:05:00 +0000"
        );
        assert_eq!(date_u(at(0)), "Thu Jan  1 00:00:00 UTC 1970");
        // A leap day.
        assert_eq!(
            rfc2822(at(1_709_164_800)),
            "Thu, 29 Feb 2024 00:00:00 +0000"
        );
    }

    #[test]
    fn dates_match_the_system_date_command() {
        for secs in [951_782_400u64, 1_234_567_890, 4_102_444_799] {
            let out = std::process::Command::new("date")
                .env("LC_ALL", "C")
                .args(["-u", "-d", &format!("@{secs}")])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                date_u(at(secs))
            );
            let out = std::process::Command::new("date")
                .env("LC_ALL", "C")
                .args(["-u", "-R", "-d", &format!("@{secs}")])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                rfc2822(at(secs))
            );
        }
    }

    #[test]
    fn serial_is_copied_only_when_clean() {
        assert_eq!(
            archive_serial(b"Thu Nov 26\nArchive serial: 2026112601\n"),
            "2026112601"
        );
        assert_eq!(archive_serial(b"no serial here\n"), "unknown");
        assert_eq!(archive_serial(b"Archive serial: a\x1b[31mb\n"), "unknown");
    }

    #[test]
    fn upstream_hosts() {
        assert_eq!(
            upstream_host("rsync://dl.example.org/fedora/"),
            "dl.example.org"
        );
        assert_eq!(upstream_host("rsync://127.0.0.1:873/m/"), "127.0.0.1");
        assert_eq!(upstream_host("rsync://[2001:db8::1]:873/m/"), "2001:db8::1");
        assert_eq!(
            upstream_host("user@ftp.example.org::debian/"),
            "ftp.example.org"
        );
        assert_eq!(upstream_host("/srv/up/"), "localhost");
    }
}
