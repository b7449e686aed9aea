//! `/usr/bin/time -f '%e %U %S %M'` with microsecond resolution, for the fan-out benchmarks.
//!
//! ```text
//! rusage OUTFILE -- CMD [ARGS...]
//! ```
//! Writes `<wall s> <user s> <sys s> <max RSS KiB>` to OUTFILE and exits with the command's
//! status. GNU time prints CPU in 10 ms steps, too coarse for a master that spends a few ms
//! on ten mirrors. The figures come from wait4(2) on the child, as GNU time's do: CPU of the
//! command and of every descendant it waited for (pssh's ssh processes), and the peak RSS of
//! the largest single process among them. A small native parent matters for that last figure:
//! the kernel carries the parent's RSS high-water mark into a forked child across exec, so a
//! Python wrapper (~10 MiB) would hide any child smaller than itself.

use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args[1] != "--" {
        eprintln!("usage: rusage OUTFILE -- CMD [ARGS...]");
        return ExitCode::from(2);
    }
    let (out, cmd) = (&args[0], &args[2..]);
    let start = Instant::now();
    let child = match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rusage: {}: {e}", cmd[0]);
            return ExitCode::from(127);
        }
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child's pid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 with our child's pid and valid out pointers; the Child is not waited on again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    if pid < 0 {
        eprintln!("rusage: wait4: {}", std::io::Error::last_os_error());
        return ExitCode::from(125);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let line = format!(
        "{wall:.6} {:.6} {:.6} {}\n",
        secs(ru.ru_utime),
        secs(ru.ru_stime),
        ru.ru_maxrss
    );
    if let Err(e) = std::fs::write(out, line) {
        eprintln!("rusage: {out}: {e}");
        return ExitCode::from(125);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    ExitCode::from(code as u8)
}
