//! Exit codes and the one-line answers every verb gives: the answer on stdout, an error as one
//! line on stderr starting `error:`.

use std::io::Write;

pub const EXIT_OK: i32 = 0;
/// The sync ran and failed (wait mode, local `sync`).
pub const EXIT_SYNC_FAILED: i32 = 1;
/// Malformed: anything the grammar or the command line rejects.
pub const EXIT_USAGE: i32 = 64;
/// Temporary: state dir not writable, lock error, cannot start the sync.
pub const EXIT_TEMPFAIL: i32 = 75;
/// Well-formed but not permitted.
pub const EXIT_NOPERM: i32 = 77;
pub const EXIT_CONFIG: i32 = 78;

/// An error for the caller: exit code and the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitError {
    pub(crate) code: i32,
    pub(crate) message: String,
}

pub(crate) fn fail(code: i32, message: impl Into<String>) -> ExitError {
    ExitError {
        code,
        message: message.into(),
    }
}

/// Prints the error line and returns its exit code.
pub(crate) fn report(f: &ExitError) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {}", f.message);
    f.code
}

/// One answer line on stdout. A client that has hung up (EPIPE) must not turn a request that
/// was handled into a panic, so write errors are ignored: the log and status hold the result.
pub(crate) fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
