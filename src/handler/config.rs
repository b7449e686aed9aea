//! The handler config (`handler.toml`): parsed strictly, every error names the file, the line and
//! the key, so an admin can fix it without guessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::exit::{fail, ExitError, EXIT_CONFIG};
use crate::config_text::ConfigText;
use crate::request::{ModuleName, RelDir};

// ---- The rsync_args policy: an allowlist, like rrsync's table of long options ----
//
// An admin's `rsync_args` may hold only the options below, each in one word (`--name` or
// `--name=VALUE`; short ones as `-x` or clustered, `-zH`, a value attached: `-B8192`). Anything
// else is refused with the config line: the handler decides the transfer (what is taken from
// the upstream, where rsync writes and reads, what is deleted, what rsync reports), the admin
// tunes the connection and the selection of files.

/// What an allowed option's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// No value.
    None,
    /// A size or rate: digits, an optional fraction, an optional unit (`8192`, `40M`, `1.5G`,
    /// `100KiB`).
    Size,
    /// A whole number in `lo..=hi`.
    Number(u64, u64),
    /// An include/exclude pattern: printable ASCII, not empty, not starting with `!` (a lone
    /// `!` clears every rule so far, the handler's own protect rules included).
    Pattern,
    /// A filter rule that only includes, excludes, protects, risks, hides or shows a pattern:
    /// never merge files (read from the tree or the disk) and never `!` (clear).
    Rule,
    /// An absolute path (a file the admin keeps, such as a daemon password file).
    AbsPath,
    /// A short lower-case name (a compression algorithm).
    Word,
    /// Socket options from rsync's own list (`TCP_NODELAY`, `SO_SNDBUF=65536`, ...), comma
    /// separated.
    SockOpts,
}

/// One allowed option.
struct Allowed {
    long: &'static str,
    short: Option<u8>,
    value: Value,
    /// Also given to the fetch of the module's file list: connection options. Options that
    /// select files of the tree (filters, sizes) would only make rsync skip the list.
    fetch: bool,
}

const fn opt(long: &'static str, short: Option<u8>, value: Value, fetch: bool) -> Allowed {
    Allowed {
        long,
        short,
        value,
        fetch,
    }
}

/// The options an admin may add, each with the reason it keeps the handler's rules.
const ALLOWED: &[Allowed] = &[
    // Bandwidth: how fast, not what.
    opt("bwlimit", None, Value::Size, true),
    // Address family, port, connect and I/O timeouts of the daemon connection (ours come
    // first; a later one of the admin's wins, the wall-clock `timeout` still bounds the run).
    opt("ipv4", Some(b'4'), Value::None, true),
    opt("ipv6", Some(b'6'), Value::None, true),
    opt("port", None, Value::Number(1, 65_535), true),
    opt("contimeout", None, Value::Number(1, 86_400), true),
    opt("timeout", None, Value::Number(1, 86_400), true),
    // A daemon module that wants a password: rsync reads the file (it refuses one that others
    // can read) and sends nothing else from it.
    opt("password-file", None, Value::AbsPath, true),
    // The handler adds it for daemon sources anyway (the MOTD must not reach the parser).
    opt("no-motd", None, Value::None, true),
    // Compression on the wire.
    opt("compress", Some(b'z'), Value::None, true),
    opt("compress-level", None, Value::Number(0, 22), true),
    opt("compress-choice", None, Value::Word, true),
    opt("zc", None, Value::Word, true),
    // Delta-transfer tuning (ftpsync passes -B8192) and file-list memory: speed, not content.
    opt("block-size", Some(b'B'), Value::Number(1, 131_072), true),
    opt("no-inc-recursive", None, Value::None, false),
    opt("no-i-r", None, Value::None, false),
    // Socket tuning of the daemon connection (`TCP_NODELAY` saves a file-list null run most
    // of its wall time on a fast link).
    opt("sockopts", None, Value::SockOpts, true),
    // Keeps the statistics' numbers plain, as the handler reads them.
    opt("no-human-readable", None, Value::None, true),
    // Hard links among the transferred files (Debian's archive has them); they stay in dest.
    opt("hard-links", Some(b'H'), Value::None, false),
    // Holes in sparse files, on the mirror's own disk.
    opt("sparse", Some(b'S'), Value::None, false),
    // Compare by checksum: slower (reads every file on both sides), never different content.
    opt("checksum", Some(b'c'), Value::None, false),
    // Owners and groups are never taken (no -o/-g), so numeric ids change nothing; kept so
    // that configs carried over from older setups still load.
    opt("numeric-ids", None, Value::None, false),
    // Which files: patterns and size bounds select, inside dest only.
    opt("exclude", None, Value::Pattern, false),
    opt("include", None, Value::Pattern, false),
    opt("filter", Some(b'f'), Value::Rule, false),
    opt("max-size", None, Value::Size, false),
    opt("min-size", None, Value::Size, false),
    // Leaves out dirs that would hold nothing after the filters.
    opt("prune-empty-dirs", Some(b'm'), Value::None, false),
    // Removes excluded files from the mirror: deletions, still under `--max-delete` and after
    // the handler's own protect rules (the first matching rule wins).
    opt("delete-excluded", None, Value::None, false),
];

/// Why well-known options are refused (the rest: "not on the handler's list").
const REFUSED: &[(&str, Option<u8>, &str)] = &[
    ("temp-dir", Some(b'T'), WRITES_OUTSIDE),
    ("backup-dir", None, WRITES_OUTSIDE),
    ("partial-dir", None, WRITES_OUTSIDE),
    (
        "backup",
        Some(b'b'),
        "it keeps replaced and deleted files as backups in the tree",
    ),
    ("compare-dest", None, READS_OUTSIDE),
    ("copy-dest", None, READS_OUTSIDE),
    ("link-dest", None, READS_OUTSIDE),
    ("files-from", None, READS_OUTSIDE),
    ("exclude-from", None, FROM_FILE),
    ("include-from", None, FROM_FILE),
    ("cvs-exclude", Some(b'C'), FROM_FILE),
    ("archive", Some(b'a'), UPSTREAM_META),
    ("owner", Some(b'o'), UPSTREAM_META),
    ("group", Some(b'g'), UPSTREAM_META),
    ("devices", None, UPSTREAM_META),
    ("specials", None, UPSTREAM_META),
    ("copy-devices", None, UPSTREAM_META),
    ("write-devices", None, UPSTREAM_META),
    ("super", None, UPSTREAM_META),
    ("fake-super", None, UPSTREAM_META),
    ("chown", None, UPSTREAM_META),
    ("usermap", None, UPSTREAM_META),
    ("groupmap", None, UPSTREAM_META),
    ("chmod", None, UPSTREAM_META),
    ("acls", Some(b'A'), UPSTREAM_META),
    ("xattrs", Some(b'X'), UPSTREAM_META),
    ("keep-dirlinks", Some(b'K'), LINKS),
    ("copy-links", Some(b'L'), LINKS),
    ("copy-dirlinks", Some(b'k'), LINKS),
    ("copy-unsafe-links", None, LINKS),
    ("munge-links", None, LINKS),
    ("rsh", Some(b'e'), PROGRAMS),
    ("rsync-path", None, PROGRAMS),
    ("remote-option", Some(b'M'), PROGRAMS),
    ("daemon", None, PROGRAMS),
    ("server", None, PROGRAMS),
    ("sender", None, PROGRAMS),
    ("config", None, PROGRAMS),
    ("log-file", None, OURS),
    ("out-format", None, OURS),
    ("log-format", None, OURS),
    ("itemize-changes", Some(b'i'), OURS),
    ("info", None, OURS),
    ("debug", None, OURS),
    ("verbose", Some(b'v'), OURS),
    ("quiet", Some(b'q'), OURS),
    ("human-readable", Some(b'h'), OURS),
    ("max-delete", None, "use the module's max_delete"),
    ("recursive", Some(b'r'), OURS),
    ("dry-run", Some(b'n'), OURS),
    (
        "inplace",
        None,
        "readers would see half-written files (the handler uses --delay-updates)",
    ),
    ("remove-source-files", None, OURS),
    ("write-batch", None, OURS),
    ("only-write-batch", None, OURS),
    ("read-batch", None, OURS),
];
const WRITES_OUTSIDE: &str = "it makes rsync write outside dest";
const READS_OUTSIDE: &str = "it makes rsync read files outside dest";
const FROM_FILE: &str =
    "its rules come from a file, where a '!' line clears the handler's own rules; list the patterns in rsync_args";
const UPSTREAM_META: &str =
    "the mirror's owners, groups and modes are the mirror's, and no devices or special files arrive from upstream";
const LINKS: &str = "symlinks stay symlinks and are never followed";
const PROGRAMS: &str = "rsync must not start other programs or act as a server";
const OURS: &str = "the handler sets what rsync transfers, deletes and reports itself";

pub const DEFAULT_CONFIG: &str = "/etc/mirrorpush/handler.toml";
/// The only PATH rsync (and anything it starts) ever sees.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const DEFAULT_STATE_DIR: &str = "/var/lib/mirrorpush";
const DEFAULT_RSYNC: &str = "/usr/bin/rsync";
/// ftpsync's cap on deletions per run (its stage 2 runs rsync with `--max-delete=40000`).
pub const DEFAULT_MAX_DELETE: u64 = 40_000;
/// The largest file list fetched. An entry of a tree in Fedora's layout costs about 115 bytes
/// (`benches/list-entry-size.sh`), so Fedora's largest list (about 12 million entries, about
/// 1.4 GB) passes with room to spare, while a hostile upstream cannot fill the state dir (which
/// holds two copies, the fetched list and the baseline) with more than a few GB.
pub const DEFAULT_MAX_LIST_SIZE: u64 = 3 << 30;
/// The most entries a file list may hold: Fedora's largest (about 12 million) passes; at about
/// 115 bytes an entry this many fit in [`DEFAULT_MAX_LIST_SIZE`].
pub const DEFAULT_MAX_LIST_ENTRIES: u64 = 20_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Detach,
    Wait,
}

#[derive(Debug, Clone)]
pub struct Module {
    pub name: ModuleName,
    /// Always ends with `/`, so rsync copies the tree's contents, not the tree.
    pub source: String,
    pub dest: PathBuf,
    pub mode: Mode,
    pub allow_dirs: bool,
    pub rsync_args: Vec<String>,
    pub timeout: Duration,
    /// File-list sync: the list's path under `source` (e.g. `fullfiletimelist-fedora`).
    pub filelist: Option<RelDir>,
    /// A run that would delete more entries than this is refused (file lists) or stopped by
    /// rsync (`--max-delete`).
    pub max_delete: u64,
    /// Two-stage sync: rsync filter patterns that land after everything else, before deletes.
    pub last: Vec<String>,
    /// Debian-style trace file under `dest`, written after each good full run.
    pub trace: Option<RelDir>,
    /// Epoch-seconds file under `dest`, written at the same moment.
    pub lastsync: Option<RelDir>,
    /// Hub: the registry of downstream mirrors to push after a run that changed something.
    pub downstream: Option<PathBuf>,
    /// File-list sync: the largest list fetched (rsync `--max-size`); a larger one is not
    /// fetched and the run is a plain rsync.
    pub max_list_size: u64,
    /// File-list sync: the most entries a list may hold to be planned.
    pub max_list_entries: u64,
}

impl Module {
    /// The files under `dest` the handler itself writes, which rsync must neither overwrite
    /// nor delete.
    pub fn own_files(&self) -> Vec<&RelDir> {
        self.trace.iter().chain(self.lastsync.iter()).collect()
    }

    /// rsync daemon sources (`rsync://` or `host::module`) get a connect timeout.
    pub fn is_daemon_source(&self) -> bool {
        self.source.starts_with("rsync://") || self.source.contains("::")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub rsync: PathBuf,
    /// The `mirrorpush` master binary a hub runs for downstream pushes; `None`: the one beside
    /// the handler's own binary.
    pub mirrorpush: Option<PathBuf>,
    pub modules: BTreeMap<String, Module>,
}

pub use crate::config_text::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    rsync: Option<Spanned<String>>,
    mirrorpush: Option<Spanned<String>>,
    #[serde(default)]
    modules: BTreeMap<Spanned<String>, RawModule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    source: Spanned<String>,
    dest: Spanned<String>,
    mode: Option<Spanned<String>>,
    allow_dirs: Option<bool>,
    rsync_args: Option<Spanned<Vec<Spanned<String>>>>,
    timeout: Option<Spanned<String>>,
    filelist: Option<Spanned<String>>,
    max_delete: Option<Spanned<i64>>,
    last: Option<Spanned<Vec<String>>>,
    trace: Option<Spanned<String>>,
    lastsync: Option<Spanned<String>>,
    downstream: Option<Spanned<String>>,
    max_list_size: Option<Spanned<toml::Value>>,
    max_list_entries: Option<Spanned<i64>>,
}

/// The state dir a config file names, read leniently: for logging a refusal when the config
/// itself is broken. Its `state_dir` line if one can be read, else the default.
pub fn state_dir_hint(path: &Path) -> PathBuf {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let from_toml = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("state_dir")?.as_str().map(PathBuf::from));
    // A file that is not TOML any more may still hold an intact `state_dir = "..."` line.
    let from_line = || {
        text.lines().find_map(|l| {
            let v = l
                .trim()
                .strip_prefix("state_dir")?
                .trim()
                .strip_prefix('=')?;
            Some(PathBuf::from(
                v.trim().strip_prefix('"')?.strip_suffix('"')?,
            ))
        })
    };
    from_toml
        .or_else(from_line)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// Reads and validates the config file.
/// Loads the config for a verb: a remote client gets a terse message, an admin the full one.
pub(crate) fn load_for(path: &Path, remote: bool) -> Result<Config, ExitError> {
    load(path).map_err(|e| {
        if remote {
            fail(
                EXIT_CONFIG,
                "mirror configuration error (the mirror admin can run 'mirrorpush-handler check')",
            )
        } else {
            fail(EXIT_CONFIG, e.0)
        }
    })
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    parse(path, &text)
}

/// Parses config text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let ctx = HandlerToml {
        file: ConfigText { path, text },
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.file.toml_error(&e))?;
    let state_dir = match &raw.state_dir {
        Some(s) => ctx.file.absolute(s, "state_dir")?,
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let rsync = match &raw.rsync {
        Some(r) => ctx.file.absolute(r, "rsync")?,
        None => PathBuf::from(DEFAULT_RSYNC),
    };
    let mirrorpush = match &raw.mirrorpush {
        Some(m) => Some(ctx.file.absolute(m, "mirrorpush")?),
        None => None,
    };
    let mut modules = BTreeMap::new();
    for (name, m) in raw.modules {
        let module = ctx.module(&name, m)?;
        modules.insert(module.name.as_str().to_owned(), module);
    }
    Ok(Config {
        path: path.to_owned(),
        state_dir,
        rsync,
        mirrorpush,
        modules,
    })
}

struct HandlerToml<'a> {
    file: ConfigText<'a>,
}

impl HandlerToml<'_> {
    fn module(&self, name: &Spanned<String>, m: RawModule) -> Result<Module, ConfigError> {
        let module_name = ModuleName::parse(name.get_ref()).map_err(|e| {
            self.file.at(
                name.span(),
                format!(
                    "module name '{}' {e}",
                    crate::request::escape_bytes(name.get_ref().as_bytes())
                ),
            )
        })?;
        let table = format!("[modules.{module_name}]");
        let source = self.source(&m.source, &table)?;
        let dest = self.file.absolute(&m.dest, "dest")?;
        if dest.parent().is_none() {
            return Err(self.file.at(m.dest.span(), "'dest' must not be '/'"));
        }
        let mode = match m.mode.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("detach", _)) => Mode::Detach,
            Some(("wait", _)) => Mode::Wait,
            Some((other, span)) => {
                return Err(self.file.at(
                    span,
                    format!("'mode' in {table} must be \"detach\" or \"wait\", not \"{other}\""),
                ))
            }
        };
        let mut rsync_args = Vec::new();
        for a in m.rsync_args.map(Spanned::into_inner).unwrap_or_default() {
            if let Err(why) = check_rsync_arg(a.get_ref()) {
                // The element's own line: an array may span many.
                return Err(self
                    .file
                    .at(a.span(), format!("'rsync_args' in {table}: {why}")));
            }
            rsync_args.push(a.into_inner());
        }
        let timeout = match &m.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(self.file.at(
                        t.span(),
                        format!("'timeout' in {table} must be more than zero"),
                    ))
                }
                Err(e) => {
                    return Err(self.file.at(
                        t.span(),
                        format!("'timeout' in {table}: {e} (examples: \"90s\", \"6h\")"),
                    ))
                }
            },
        };
        let filelist = self.rel_path(m.filelist.as_ref(), "filelist", &table)?;
        let trace = self.rel_path(m.trace.as_ref(), "trace", &table)?;
        let lastsync = self.rel_path(m.lastsync.as_ref(), "lastsync", &table)?;
        if let (Some(t), Some(l)) = (&trace, &lastsync) {
            if t == l {
                return Err(self.file.at(
                    m.lastsync.as_ref().map_or(0..0, Spanned::span),
                    format!("'trace' and 'lastsync' in {table} name the same file"),
                ));
            }
        }
        let max_delete = match &m.max_delete {
            None => DEFAULT_MAX_DELETE,
            Some(v) => u64::try_from(*v.get_ref()).map_err(|_| {
                self.file.at(
                    v.span(),
                    format!("'max_delete' in {table} must not be negative"),
                )
            })?,
        };
        let last = match m.last {
            None => Vec::new(),
            Some(patterns) => {
                let bad = patterns
                    .get_ref()
                    .iter()
                    .find(|p| p.is_empty() || p.bytes().any(|b| b.is_ascii_control()));
                if let Some(bad) = bad {
                    return Err(self.file.at(
                        patterns.span(),
                        format!(
                            "'last' in {table}: {:?} is not an rsync pattern (empty, or holds control characters)",
                            bad
                        ),
                    ));
                }
                patterns.into_inner()
            }
        };
        let downstream = match &m.downstream {
            Some(d) => Some(self.file.absolute(d, "downstream")?),
            None => None,
        };
        let max_list_size = match &m.max_list_size {
            None => DEFAULT_MAX_LIST_SIZE,
            Some(v) => self.byte_size(v, "max_list_size", &table)?,
        };
        let max_list_entries = match &m.max_list_entries {
            None => DEFAULT_MAX_LIST_ENTRIES,
            Some(v) => match u64::try_from(*v.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(self.file.at(
                        v.span(),
                        format!("'max_list_entries' in {table} must be more than zero"),
                    ))
                }
            },
        };
        Ok(Module {
            name: module_name,
            source,
            dest,
            mode,
            allow_dirs: m.allow_dirs.unwrap_or(true),
            rsync_args,
            timeout,
            filelist,
            max_delete,
            last,
            trace,
            lastsync,
            downstream,
            max_list_size,
            max_list_entries,
        })
    }

    /// A size in bytes: an integer, or a string with a binary unit (`"3G"`, `"512M"`, `"64K"`).
    fn byte_size(
        &self,
        v: &Spanned<toml::Value>,
        key: &str,
        table: &str,
    ) -> Result<u64, ConfigError> {
        let parsed = match v.get_ref() {
            toml::Value::Integer(n) => u64::try_from(*n).ok(),
            toml::Value::String(s) => parse_byte_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if n > 0 => Ok(n),
            _ => Err(self.file.at(
                v.span(),
                format!(
                    "'{key}' in {table} must be a size more than zero: bytes, or a string such as \"3G\", \"512M\""
                ),
            )),
        }
    }

    /// A path relative to the module's top (`filelist`, `trace`, `lastsync`): the same rules
    /// as a pushed dir, so it can never leave the tree.
    fn rel_path(
        &self,
        value: Option<&Spanned<String>>,
        key: &str,
        table: &str,
    ) -> Result<Option<RelDir>, ConfigError> {
        let Some(v) = value else { return Ok(None) };
        RelDir::parse(v.get_ref()).map(Some).map_err(|e| {
            self.file.at(
                v.span(),
                format!(
                    "'{key}' in {table} must be a relative path inside the module ('{}' {e})",
                    crate::request::escape_bytes(v.get_ref().as_bytes())
                ),
            )
        })
    }

    /// rsync:// URL, `host::module`, or a local absolute path (handy for tests and local mirrors).
    /// Remote-shell sources (`host:path`) are refused: they would make rsync start ssh.
    fn source(&self, s: &Spanned<String>, table: &str) -> Result<String, ConfigError> {
        let v = s.get_ref();
        let ok_chars = !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic());
        let daemon = v.starts_with("rsync://") || v.contains("::");
        let local = v.starts_with('/');
        if !ok_chars || !(daemon || local) {
            return Err(self.file.at(
                s.span(),
                format!(
                    "'source' in {table} must be an rsync:// URL, host::module or an absolute path"
                ),
            ));
        }
        Ok(if v.ends_with('/') {
            v.clone()
        } else {
            format!("{v}/")
        })
    }
}

/// Ok when an admin's rsync option is on the allowlist with a valid value; else why not.
pub fn check_rsync_arg(a: &str) -> Result<(), String> {
    // Before `--`, a word without a dash would become an extra source path.
    if !a.starts_with('-') || a == "--" || a == "-" {
        return Err(format!(
            "'{}' is not an option (options start with '-', a value goes in the same word: '--name=value'; '--' is added by the handler)",
            escape(a)
        ));
    }
    if !a.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(format!(
            "'{}' holds control or non-ASCII characters",
            escape(a)
        ));
    }
    split_options(a).map(drop)
}

/// The admin's options that also apply to the fetch of a module's file list (connection
/// options), one option per word. `args` were checked when the config was loaded.
pub fn fetch_options(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| split_options(a).ok())
        .flatten()
        .filter(|(o, _)| o.fetch)
        .map(|(_, word)| word)
        .collect()
}

/// One admin word as the allowed options it holds, each with its own one-option word (a short
/// cluster `-zH` is `-z`, `-H`).
fn split_options(a: &str) -> Result<Vec<(&'static Allowed, String)>, String> {
    if let Some(long) = a.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (long, None),
        };
        let Some(o) = ALLOWED.iter().find(|o| o.long == name) else {
            return Err(refusal(&format!("'--{}'", escape(name)), |r| r.0 == name));
        };
        check_value(o, &format!("--{name}"), value)?;
        return Ok(vec![(o, a.to_owned())]);
    }
    let mut found = Vec::new();
    let cluster = &a.as_bytes()[1..];
    for (i, &c) in cluster.iter().enumerate() {
        let Some(o) = ALLOWED.iter().find(|o| o.short == Some(c)) else {
            let what = format!("'-{}'", escape(&(c as char).to_string()));
            let shown = if cluster.len() > 1 {
                format!("{what} (in '{}')", escape(a))
            } else {
                what
            };
            return Err(refusal(&shown, |r| r.1 == Some(c)));
        };
        if o.value == Value::None {
            found.push((o, format!("-{}", c as char)));
            continue;
        }
        // The rest of the cluster is the value.
        let value = &a[2 + i..];
        check_value(o, &format!("-{}", c as char), Some(value))?;
        found.push((o, format!("-{}{value}", c as char)));
        break;
    }
    Ok(found)
}

/// The message for an option not on the allowlist: the known reason, else the rule.
fn refusal(shown: &str, known: impl Fn(&(&str, Option<u8>, &str)) -> bool) -> String {
    match REFUSED.iter().find(|r| known(r)) {
        Some((_, _, why)) => format!("{shown} is not allowed: {why}"),
        None => format!(
            "{shown} is not allowed: only the options the handler lists may be added (see rsync_args in mirrorpush-handler(8))"
        ),
    }
}

fn check_value(o: &Allowed, name: &str, value: Option<&str>) -> Result<(), String> {
    let v = match (o.value, value) {
        (Value::None, None) => return Ok(()),
        (Value::None, Some(_)) => return Err(format!("'{name}' takes no value")),
        (_, None | Some("")) => {
            return Err(format!(
                "'{name}' needs a value in the same word ('{name}=...')"
            ))
        }
        (_, Some(v)) => v,
    };
    let ok = match o.value {
        Value::None => true,
        Value::Size => is_size(v),
        Value::Number(lo, hi) => {
            v.len() <= 20
                && v.bytes().all(|b| b.is_ascii_digit())
                && v.parse::<u64>().is_ok_and(|n| (lo..=hi).contains(&n))
        }
        Value::Pattern => !v.starts_with('!'),
        Value::Rule => is_plain_rule(v),
        Value::AbsPath => v.starts_with('/') && !v.contains(' '),
        Value::Word => {
            v.len() <= 16
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
        Value::SockOpts => v.split(',').all(is_sockopt),
    };
    if ok {
        return Ok(());
    }
    let expected = match o.value {
        Value::None => "",
        Value::Size => "digits with an optional unit, e.g. 40M",
        Value::Number(..) => "a whole number in range",
        Value::Pattern => "a pattern not starting with '!'",
        Value::Rule => {
            "an include, exclude, protect, risk, hide or show rule with a pattern (no merge, no '!')"
        }
        Value::AbsPath => "an absolute path",
        Value::Word => "a lower-case name",
        Value::SockOpts => "socket options such as TCP_NODELAY or SO_SNDBUF=65536",
    };
    Err(format!("'{name}={v}': the value must be {expected}"))
}

/// One of the socket options rsync knows, with a number where it takes one.
fn is_sockopt(o: &str) -> bool {
    const FLAGS: &[&str] = &[
        "TCP_NODELAY",
        "SO_KEEPALIVE",
        "IPTOS_LOWDELAY",
        "IPTOS_THROUGHPUT",
    ];
    const SIZES: &[&str] = &["SO_SNDBUF", "SO_RCVBUF", "SO_SNDLOWAT", "SO_RCVLOWAT"];
    match o.split_once('=') {
        None => FLAGS.contains(&o),
        Some((name, n)) => {
            SIZES.contains(&name)
                && (1..=10).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// `8192`, `40M`, `1.5G`, `100KiB`, `2mb`: what rsync's size and rate options take, nothing
/// else (no `+1`/`-1` suffix, no sign).
fn is_size(v: &str) -> bool {
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if digits_end == 0 || digits_end > 20 {
        return false;
    }
    let mut rest = &v[digits_end..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    let units = [
        "", "b", "k", "m", "g", "t", "p", "kb", "mb", "gb", "tb", "pb", "kib", "mib", "gib", "tib",
        "pib",
    ];
    units.contains(&rest.to_ascii_lowercase().as_str())
}

/// A filter rule of the forms `- PATTERN`, `+ PATTERN`, `P PATTERN`, `R`, `H`, `S` (with the
/// harmless modifiers `/`, `!` (negate), `s`, `r`, `p`), or the long words `exclude`,
/// `include`, `protect`, `risk`, `hide`, `show`; separated by one space or `_`.
fn is_plain_rule(rule: &str) -> bool {
    let Some((head, pattern)) = rule.split_once([' ', '_']) else {
        return false;
    };
    if pattern.is_empty() {
        return false;
    }
    let words = ["exclude", "include", "protect", "risk", "hide", "show"];
    if words.contains(&head) {
        return true;
    }
    let mut chars = head.chars();
    matches!(chars.next(), Some('-' | '+' | 'P' | 'R' | 'H' | 'S'))
        && chars.all(|c| "/!srp".contains(c))
}

/// `1234`, `64K`, `512M`, `3G`, `1T` (binary units, as rsync reads them).
fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn escape(a: &str) -> String {
    crate::request::escape_bytes(a.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(Path::new("/etc/h.toml"), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0,
        }
    }

    const GOOD: &str = r#"state_dir = "/var/lib/mp"

[modules.fedora]
source = "rsync://up.example.org/fedora"
dest = "/srv/mirror/fedora"
"#;

    #[test]
    fn parses_defaults() {
        let c = parse(Path::new("/etc/h.toml"), GOOD).unwrap();
        let m = &c.modules["fedora"];
        assert_eq!(m.source, "rsync://up.example.org/fedora/");
        assert_eq!(m.mode, Mode::Detach);
        assert!(m.allow_dirs);
        assert_eq!(m.timeout, Duration::from_secs(6 * 3600));
        assert!(m.is_daemon_source());
        let c = parse(
            Path::new("/h"),
            "[modules.x]\nsource = \"a::b\"\ndest = \"/d\"\n",
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/mirrorpush"));
        assert_eq!(c.rsync, PathBuf::from("/usr/bin/rsync"));
    }

    #[test]
    fn rsync_args_that_undo_the_rules_are_refused() {
        for bad in [
            "-a",
            "-avz",
            "--archive",
            "-D",
            "--devices",
            "--specials",
            "-o",
            "--owner",
            "-g",
            "--chmod=F777",
            "--super",
            "-K",
            "--keep-dirlinks",
            "-e",
            "--rsh=ssh",
            "--rsync-path=x",
            "-X",
            "--acls",
            "--log-file=/etc/x",
            "--files-from=/x",
            "--max-delete=9",
            "/etc",
            "--",
            "-",
        ] {
            assert!(check_rsync_arg(bad).is_err(), "{bad}");
        }
    }

    /// Issue 16 item 7: the denylist let these through; each writes or reads outside dest,
    /// clears the handler's own filter rules, or changes what rsync reports.
    #[test]
    fn rsync_args_is_an_allowlist() {
        for (bad, why) in [
            ("--temp-dir=/tmp", "outside dest"),
            ("-T/tmp", "outside dest"),
            ("-zT/tmp", "outside dest"),
            ("--backup-dir=/var/tmp/b", "outside dest"),
            ("--partial-dir=/tmp/p", "outside dest"),
            ("--compare-dest=/etc", "outside dest"),
            ("--copy-dest=/etc", "outside dest"),
            ("--link-dest=/etc", "outside dest"),
            ("--exclude-from=/etc/x", "'!' line"),
            ("--filter=!", "no merge"),
            ("--filter=clear", "no merge"),
            ("-f!", "no merge"),
            ("--filter=merge /etc/rules", "no merge"),
            ("--filter=. /etc/rules", "no merge"),
            ("--filter=dir-merge .rsync-filter", "no merge"),
            ("-F", "only the options"),
            ("--exclude=!", "not starting with '!'"),
            ("--inplace", "half-written"),
            ("-v", "reports itself"),
            ("-h", "reports itself"),
            ("-r", "reports itself"),
            ("--no-safe-links", "only the options"),
            ("--bwlimit=fast", "digits"),
            ("--bwlimit=1M+1", "digits"),
            ("--bwlimit", "needs a value"),
            ("--bwlimit=", "needs a value"),
            ("--timeout=0", "whole number"),
            ("--port=99999", "whole number"),
            ("-Bfoo", "whole number"),
            ("-z=1", "'-=' (in '-z=1') is not allowed"),
            ("--hard-links=1", "takes no value"),
            ("--password-file=secret", "absolute path"),
            ("--compress-choice=Z;x", "lower-case"),
            ("--sockopts=SO_BINDTODEVICE=eth0", "socket options"),
            ("--sockopts=TCP_NODELAY,", "socket options"),
            ("--bwlimit=1M\u{e9}", "non-ASCII"),
            ("--exclude=a\tb", "control"),
        ] {
            let e = check_rsync_arg(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        for good in [
            "--bwlimit=40M",
            "--bwlimit=400",
            "--bwlimit=1.5m",
            "--bwlimit=100KiB",
            "-4",
            "--ipv6",
            "-z",
            "-zH",
            "-HSz4",
            "--compress-level=9",
            "--zc=zstd",
            "-H",
            "--hard-links",
            "-S",
            "-m",
            "--prune-empty-dirs",
            "--numeric-ids",
            "--delete-excluded",
            "--checksum",
            "--exclude=/x",
            "--exclude=*.iso",
            "--include=- leading dash is a prefix",
            "--filter=- /x",
            "--filter=-/ x",
            "--filter=P keep/",
            "--filter=exclude *.tmp",
            "-f- /x",
            "-B8192",
            "-HSB8192",
            "--no-motd",
            "--timeout=120",
            "--contimeout=5",
            "--port=8873",
            "--password-file=/etc/m.secret",
            "--max-size=4G",
            "--min-size=1",
            "--no-inc-recursive",
            "--no-human-readable",
            "--sockopts=TCP_NODELAY",
            "--sockopts=TCP_NODELAY,SO_SNDBUF=65536",
        ] {
            assert_eq!(check_rsync_arg(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn every_allowed_option_is_documented() {
        let doc = include_str!("../../docs/rsync-args.md");
        for o in ALLOWED {
            assert!(doc.contains(&format!("`--{}", o.long)), "--{}", o.long);
            if let Some(c) = o.short {
                assert!(doc.contains(&format!("`-{}", c as char)), "-{}", c as char);
            }
        }
        for (long, short, _) in REFUSED {
            assert!(doc.contains(&format!("--{long}")), "--{long}");
            if let Some(c) = short {
                assert!(doc.contains(&format!("-{}", *c as char)), "-{}", *c as char);
            }
        }
    }

    #[test]
    fn a_refused_rsync_arg_names_the_file_line_and_option() {
        let text = format!(
            "{GOOD}rsync_args = [\n  \"--bwlimit=40M\",\n  \"-H\",\n  \"--temp-dir=/tmp\",\n]\n"
        );
        assert_eq!(
            err(&text),
            "/etc/h.toml line 9: 'rsync_args' in [modules.fedora]: '--temp-dir' is not allowed: it makes rsync write outside dest"
        );
        let e = err(&format!("{GOOD}rsync_args = [\"-avH\"]\n"));
        assert!(
            e.contains("line 6") && e.contains("'-a' (in '-avH')"),
            "{e}"
        );
    }

    #[test]
    fn only_connection_options_reach_the_list_fetch() {
        let args: Vec<String> = [
            "--bwlimit=40M",
            "-zH",
            "--exclude=*.iso",
            "-f- /x",
            "--max-size=1G",
            "-4",
            "--password-file=/etc/p",
            "-HB8192",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            fetch_options(&args),
            [
                "--bwlimit=40M",
                "-z",
                "-4",
                "--password-file=/etc/p",
                "-B8192"
            ]
        );
    }

    #[test]
    fn list_bounds_parse_with_defaults() {
        let m = &parse(Path::new("/h"), GOOD).unwrap().modules["fedora"];
        assert_eq!((m.max_list_size, m.max_list_entries), (3 << 30, 20_000_000));
        for (line, size) in [
            ("max_list_size = 1000", 1000),
            ("max_list_size = \"64K\"", 64 << 10),
            ("max_list_size = \"2G\"", 2 << 30),
        ] {
            let c = parse(Path::new("/h"), &format!("{GOOD}{line}\n")).unwrap();
            assert_eq!(c.modules["fedora"].max_list_size, size, "{line}");
        }
        let c = parse(Path::new("/h"), &format!("{GOOD}max_list_entries = 5\n")).unwrap();
        assert_eq!(c.modules["fedora"].max_list_entries, 5);
        for bad in [
            "max_list_size = 0",
            "max_list_size = -1",
            "max_list_size = \"lots\"",
            "max_list_size = \"1.5G\"",
            "max_list_size = true",
            "max_list_entries = 0",
            "max_list_entries = -3",
        ] {
            let e = err(&format!("{GOOD}{bad}\n"));
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains("line 6") && e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn new_keys_parse_and_validate() {
        let c = parse(
            Path::new("/h"),
            &format!(
                "{GOOD}filelist = \"fullfiletimelist-fedora\"\nmax_delete = 10\nlast = [\"repodata/\"]\n\
                 trace = \"project/trace/m.example.net\"\nlastsync = \"lastsync\"\n\
                 downstream = \"/etc/mirrorpush/downstream.toml\"\n"
            ),
        )
        .unwrap();
        let m = &c.modules["fedora"];
        assert_eq!(
            m.filelist.as_ref().unwrap().as_str(),
            "fullfiletimelist-fedora"
        );
        assert_eq!(
            (m.max_delete, m.last.as_slice()),
            (10, &["repodata/".to_owned()][..])
        );
        assert_eq!(m.own_files().len(), 2);
        assert_eq!(
            parse(Path::new("/h"), GOOD).unwrap().modules["fedora"].max_delete,
            40_000
        );
        for (bad, what) in [
            ("trace = \"../x\"", "'trace'"),
            ("trace = \"/abs\"", "'trace'"),
            ("filelist = \"a//b\"", "'filelist'"),
            ("max_delete = -1", "'max_delete'"),
            ("last = [\"\"]", "'last'"),
            ("downstream = \"rel.toml\"", "'downstream'"),
        ] {
            let e = err(&format!("{GOOD}{bad}\n"));
            assert!(e.contains("line 6") && e.contains(what), "{bad}: {e}");
        }
        let e = err(&format!("{GOOD}trace = \"x\"\nlastsync = \"x\"\n"));
        assert!(e.contains("line 7") && e.contains("same file"), "{e}");
    }

    #[test]
    fn a_broken_config_still_names_its_state_dir() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("h.toml");
        std::fs::write(&p, "state_dir = \"/var/lib/x\"\n[modules.a]\nbogus = 1\n").unwrap();
        assert_eq!(state_dir_hint(&p), PathBuf::from("/var/lib/x"));
        std::fs::write(&p, "state_dir = \"/var/lib/y\"\n[[[ not toml\n").unwrap();
        assert_eq!(state_dir_hint(&p), PathBuf::from("/var/lib/y"));
        std::fs::write(&p, "state_dir = \"relative\"\n").unwrap();
        assert_eq!(state_dir_hint(&p), PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            state_dir_hint(&t.path().join("missing")),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../examples/handler.toml");
        let c = parse(Path::new("examples/handler.toml"), text).unwrap();
        // One module, every optional key commented out: the defaults.
        assert_eq!(c.modules.len(), 1);
        assert_eq!(c.modules["fedora"].mode, Mode::Detach);
        assert!(c.modules["fedora"].allow_dirs);
    }

    #[test]
    fn unknown_key_names_file_line_key_and_table() {
        let text = format!("{GOOD}foo = 1\n");
        assert_eq!(
            err(&text),
            "/etc/h.toml line 6: unknown key 'foo' in [modules.fedora]"
        );
        assert_eq!(
            err("state_dir = \"/x\"\nbar = 2\n"),
            "/etc/h.toml line 2: unknown key 'bar' in the top level"
        );
    }

    #[test]
    fn validation_errors_name_the_line() {
        let e = err(&GOOD.replace("/srv/mirror/fedora", "srv/x"));
        assert_eq!(e, "/etc/h.toml line 5: 'dest' must be an absolute path");
        let e = err(&format!("{GOOD}mode = \"later\"\n"));
        assert!(
            e.starts_with("/etc/h.toml line 6: 'mode' in [modules.fedora]"),
            "{e}"
        );
        let e = err(&format!("{GOOD}timeout = \"soon\"\n"));
        assert!(e.starts_with("/etc/h.toml line 6: 'timeout'"), "{e}");
        let e = err(&format!("{GOOD}rsync_args = [\"/etc\"]\n"));
        assert!(e.contains("line 6") && e.contains("not an option"), "{e}");
        let e = err(&GOOD.replace("modules.fedora", "modules.Fedora"));
        assert!(
            e.starts_with("/etc/h.toml line 3: module name 'Fedora'"),
            "{e}"
        );
        let e = err(&GOOD.replace("rsync://up.example.org/fedora", "host:path"));
        assert!(e.contains("line 4") && e.contains("'source'"), "{e}");
        let e = err(&GOOD.replace("dest = \"/srv/mirror/fedora\"\n", ""));
        assert!(e.contains("missing key 'dest'"), "{e}");
        let e = err("[[x]\u{e9}\nstate_dir = 5\n");
        assert!(e.starts_with("/etc/h.toml line "), "{e}");
        let e = err("state_dir = 5\n");
        assert!(e.starts_with("/etc/h.toml line 1:"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_config_text_never_panics(text in "[\\[\\]a-z_=\"/ \n\u{e9}.0-9]{0,120}") {
            let _ = parse(Path::new("/h"), &text);
        }
    }
}
