//! The master's command line (README, "Using mirrorpush"), in the library so that the man page
//! and shell completions are generated from the same definitions (`examples/gen-assets.rs`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::registry::DEFAULT_REGISTRY;

#[derive(Parser)]
#[command(
    name = "mirrorpush",
    version,
    about = "Push sync requests to mirrors over SSH or a message bus",
    long_about = "Push sync requests to mirrors over SSH or a message bus.\n\n\
        mirrorpush connects to every mirror of its registry that carries a module and sends it a \
        sync request over SSH, concurrently and stage by stage, then reports what each mirror \
        answered: accepted or queued (a sync runs in the background), synced (the content is \
        there), or why it failed. On a mirror, the request reaches mirrorpush-handler, the \
        forced command of a restricted account, or Debian's ftpsync. Host keys are checked \
        strictly against known_hosts; a dead, slow or hostile mirror costs only its own timeouts.\n\n\
        Mirrors that no SSH session reaches (transport = \"bus\") follow a RabbitMQ broker with \
        mirrorpush-listen: one signed trigger, published once, reaches all of them, and each \
        answers with a signed ack."
)]
pub struct Cli {
    /// The mirror registry.
    #[arg(long, global = true, value_name = "FILE", env = "MIRRORPUSH_REGISTRY", default_value = DEFAULT_REGISTRY)]
    pub registry: PathBuf,
    /// Debug logging on stderr (-vv: also the SSH library's).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The push history database (default: the registry's `[defaults] history`, else
    /// /var/lib/mirrorpush/history.db).
    #[arg(long, global = true, value_name = "FILE", env = "MIRRORPUSH_HISTORY")]
    pub history: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the registered mirrors and what they would be sent (bus mirrors: the topic and the
    /// signed payload). Connects to nobody.
    List {
        /// Only mirrors carrying this module.
        #[arg(long, value_name = "MODULE")]
        module: Option<String>,
        /// Only mirrors with this tag (repeatable: any of them).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// JSON Lines output.
        #[arg(long)]
        json: bool,
    },
    /// Ask every selected mirror to sync MODULE (or only DIR within it).
    Push {
        /// Show what would be sent to whom; connect to nobody.
        #[arg(long)]
        dry_run: bool,
        /// JSON Lines report on stdout.
        #[arg(long)]
        json: bool,
        /// Only this mirror (repeatable).
        #[arg(long = "mirror", value_name = "NAME")]
        mirrors: Vec<String>,
        /// Only mirrors with this tag (repeatable: any of them).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Most SSH sessions at once (default: the registry's `concurrency`); bus mirrors are not
        /// counted.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
        concurrency: Option<u32>,
        /// After the last stage, verify this push from outside (`verify --watch`) until every
        /// mirror with a `url` serves it or `--until` passes; exit 1 if it did not.
        #[arg(long)]
        verify: bool,
        /// With --verify: how long to watch (default 10m).
        #[arg(long, value_name = "DURATION", requires = "verify", value_parser = duration)]
        until: Option<Duration>,
        /// The module to sync, as named in each mirror's handler.toml (e.g. `fedora`).
        #[arg(value_name = "MODULE")]
        module: String,
        /// Only this directory of the module, relative to its root (e.g. `updates/41`; one
        /// trailing `/` is dropped).
        #[arg(value_name = "DIR")]
        dir: Option<String>,
    },
    /// Validate the registry, key files and known_hosts entries. Connects to no mirror; with
    /// a [bus] table, loads its signing key and connects to the broker.
    Check,
    /// Prove from outside that mirrors carry a recorded push: fetch each mirror's proof file
    /// from its public tree (`url`, `verify`) and compare it with the master's.
    #[command(long_about = VERIFY_ABOUT)]
    Verify {
        /// The push's id (`push` prints it); default the latest push (of --module).
        #[arg(value_name = "PUSH")]
        push: Option<i64>,
        /// With no PUSH: the latest push of this module.
        #[arg(long, value_name = "MODULE")]
        module: Option<String>,
        /// Poll, with a backoff per mirror, until every mirror is verified or --until passes.
        #[arg(long)]
        watch: bool,
        /// Bound the whole command, fetches in flight included (default 2m; 1h with --watch).
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        until: Option<Duration>,
        /// JSON Lines: one object per mirror, then a summary.
        #[arg(long)]
        json: bool,
        /// Only this mirror (repeatable).
        #[arg(long = "mirror", value_name = "NAME")]
        mirrors: Vec<String>,
        /// Only mirrors with this tag (repeatable: any of them).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// How far recorded pushes got: per mirror answer, synced, verified, lag; lag percentiles
    /// and stragglers; optionally an HTML page with a plot.
    #[command(long_about = REPORT_ABOUT)]
    Report {
        /// The push's id; default the latest push (of --module).
        #[arg(value_name = "PUSH", conflicts_with = "last")]
        push: Option<i64>,
        /// The last N pushes (of --module), one curve each in the HTML plot.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        last: Option<u32>,
        /// Only pushes of this module.
        #[arg(long, value_name = "MODULE")]
        module: Option<String>,
        /// JSON Lines: one object per mirror, then a summary, for each push.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML page (plot and tables) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Write a tree's file list, for mirrors that sync by file list. Connects to nobody.
    #[command(
        long_about = "Write a tree's file list, for mirrors that sync by file list. \
Connects to nobody; the registry is not read.\n\n\
The list (fullfiletimelist-<name of TREE>, in TREE) holds every entry of the tree with its \
time, type and size, in the format of Fedora's create-filelist, which quick-fedora-mirror \
reads too. A mirror whose module sets `filelist` fetches this one file, and when it changed, \
transfers only the entries that changed: run this after every publish, before \
`mirrorpush push`. The list is written to a temporary file and renamed into place, and left \
alone (its mtime too) when its content did not change.\n\n\
Skipped: the list itself, `.~tmp~` and `.nfs*` entries, entries that are not group-readable, \
dangling symlinks. Symlinks are listed as links, never followed. Types are marked `-` when \
not world-readable and `*` when inside a dir that is not.\n\n\
Exit status: 0 written or unchanged, 1 the scan or the write failed, 2 bad input \
(the previous list is left as it was)."
    )]
    Filelist {
        /// Write the list here instead of TREE/fullfiletimelist-<name of TREE>.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Put the SHA1 of every file with this name, at any depth, in the list's
        /// [Checksums SHA1] section (repeatable; Fedora uses repomd.xml).
        #[arg(long = "checksum", value_name = "NAME")]
        checksums: Vec<OsString>,
        /// Rescan only this dir, relative to TREE (repeatable), and keep the previous list's
        /// entries elsewhere; the dir's parents are refreshed too. Without a usable previous
        /// list the whole tree is scanned, and a note on stderr says so.
        #[arg(long = "changed", value_name = "DIR")]
        changed: Vec<OsString>,
        /// The module's top directory.
        tree: PathBuf,
    },
}

/// A humantime duration ("90s", "10m", "1h"), longer than zero.
fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; use e.g. \"90s\", \"10m\", \"1h\"")),
    }
}

const VERIFY_ABOUT: &str = "Prove from outside that mirrors carry a recorded push.\n\n\
For every mirror of the push whose registry entry has a `url` (its public tree of the module: \
https, http or rsync), fetch the file its `verify` setting names and compare it with the \
master's value recorded when the push started: `trace:<path>` compares the trace's \
`Archive serial:` with the master's project/trace/master, `filelist:<name>` and `file:<path>` \
compare sha256. Fetches run concurrently; each reads at most 1 MiB, follows at most 5 \
redirects and is bounded by the mirror's connect_timeout and timeout. A mirror's answer never \
counts as proof.\n\n\
States: verified; stale (answered synced but serves other content); pending (answered \
accepted or queued, or no answer, and not matching yet); error, with a class: the push's \
failure (push-connect, push-timeout, ...) or the last failed fetch (connect, timeout, \
http-<code>, too-large, redirects, tls, rsync-<code>). The first time a mirror matched is \
recorded in the history.\n\n\
Exit status: 0 every selected mirror verified, 1 otherwise, 2 usage, registry or history error.";

const REPORT_ABOUT: &str = "How far recorded pushes got.\n\n\
Per mirror: transport, answer, synced after, verified after and lag (from the push's start), \
verify's state and the error class; then \"N of M verified within T\", lag percentiles p50, \
p90 and p99 over every mirror of the push (a mirror not verified counts as slowest, so a \
percentile is shown only once that share is verified) and the stragglers. Reads the history \
only.\n\n\
--html FILE writes one self-contained page (inline SVG and CSS, nothing loaded from anywhere, \
readable without JavaScript) plotting the share of mirrors synced and verified against the \
time since the push, one curve per push for --last N, with the tables under it.\n\n\
Exit status: 0 reported, 2 usage or history error (no such push).";
