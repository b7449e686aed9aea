//! What the master logs on stderr, and what it never lets a mirror make it log.
//!
//! The SSH library logs a line for protocol events a server controls (one WARN per global
//! request such as a keepalive, one ERROR per unexpected request reply). A hostile mirror can
//! send those in a loop: 2.4 million lines in 15 s were seen. So the library's own log is off
//! unless asked for with `-vv`, and everything the master says about a mirror goes through its
//! report (bounded: one line and at most 64 KiB of output per mirror).

use std::io::IsTerminal;

/// The `tracing` filter for `-v` counted `verbose` times.
pub fn filter(verbose: u8) -> &'static str {
    match verbose {
        // Our own warnings (e.g. the open-file limit) only; the SSH library says nothing.
        0 => "warn,russh=off",
        1 => "warn,mirrorpush=debug,russh=off",
        // -vv is for debugging a connection by hand: everything, the library included.
        _ => "debug",
    }
}

/// Installs the stderr logger for a run of `mirrorpush`.
pub fn init(verbose: u8) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter(verbose)))
        .with_writer(std::io::stderr)
        // Plain text when stderr is a log file or the journal, colours only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_library_is_silent_below_vv() {
        for v in [0, 1] {
            let f = filter(v);
            assert!(f.contains("russh=off"), "{f}");
            assert!(tracing_subscriber::EnvFilter::try_new(f).is_ok());
        }
        assert!(filter(1).contains("mirrorpush=debug"));
        assert_eq!(filter(2), "debug");
    }
}
