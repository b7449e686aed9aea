//! The handler config (`handler.toml`): parsed strictly, every error names the file, the line and
//! the key, so an admin can fix it without guessing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::exit::{fail, ExitError, EXIT_CONFIG};
use crate::request::{ModuleName, RelDir};

pub const DEFAULT_CONFIG: &str = "/etc/mirrorpush/handler.toml";
/// The only PATH rsync (and anything it starts) ever sees.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const DEFAULT_STATE_DIR: &str = "/var/lib/mirrorpush";
const DEFAULT_RSYNC: &str = "/usr/bin/rsync";
/// ftpsync's cap on deletions per run (its stage 2 runs rsync with `--max-delete=40000`).
pub const DEFAULT_MAX_DELETE: u64 = 40_000;

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

/// A config error, already rendered as `<file> line N: <what>` (or `<file>: <what>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
    rsync_args: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
    filelist: Option<Spanned<String>>,
    max_delete: Option<Spanned<i64>>,
    last: Option<Spanned<Vec<String>>>,
    trace: Option<Spanned<String>>,
    lastsync: Option<Spanned<String>>,
    downstream: Option<Spanned<String>>,
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
    let ctx = Ctx { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
    let state_dir = match &raw.state_dir {
        Some(s) => ctx.absolute(s, "state_dir")?,
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let rsync = match &raw.rsync {
        Some(r) => ctx.absolute(r, "rsync")?,
        None => PathBuf::from(DEFAULT_RSYNC),
    };
    let mirrorpush = match &raw.mirrorpush {
        Some(m) => Some(ctx.absolute(m, "mirrorpush")?),
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

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The `[table]` header in force at `offset`, for "unknown key 'x' in [modules.y]".
    fn table_at(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let before = String::from_utf8_lossy(&self.text.as_bytes()[..end]);
        before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| {
                // `get` rather than indexing: the header may hold non-ASCII text.
                let end = l
                    .find(']')
                    .map_or(l.len(), |i| i + 1 + usize::from(l.starts_with("[[")));
                l.get(..end).unwrap_or(l).to_owned()
            })
    }

    fn at(&self, span: Range<usize>, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{} line {}: {what}",
            self.path.display(),
            self.line_of(span.start)
        ))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim();
        let Some(span) = e.span() else {
            return ConfigError(format!("{}: {message}", self.path.display()));
        };
        let table = self
            .table_at(span.start)
            .unwrap_or_else(|| "the top level".to_owned());
        let quoted = message.split('`').nth(1);
        if let (true, Some(key)) = (message.starts_with("unknown field"), quoted) {
            return self.at(span, format!("unknown key '{key}' in {table}"));
        }
        if let (true, Some(key)) = (message.starts_with("missing field"), quoted) {
            return self.at(span, format!("missing key '{key}' in {table}"));
        }
        self.at(span, message)
    }

    fn absolute(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = PathBuf::from(value.get_ref());
        if !p.is_absolute() {
            return Err(self.at(value.span(), format!("'{key}' must be an absolute path")));
        }
        Ok(p)
    }

    fn module(&self, name: &Spanned<String>, m: RawModule) -> Result<Module, ConfigError> {
        let module_name = ModuleName::parse(name.get_ref()).map_err(|e| {
            self.at(
                name.span(),
                format!(
                    "module name '{}' {e}",
                    crate::request::escape_bytes(name.get_ref().as_bytes())
                ),
            )
        })?;
        let table = format!("[modules.{module_name}]");
        let source = self.source(&m.source, &table)?;
        let dest = self.absolute(&m.dest, "dest")?;
        if dest.parent().is_none() {
            return Err(self.at(m.dest.span(), "'dest' must not be '/'"));
        }
        let mode = match m.mode.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("detach", _)) => Mode::Detach,
            Some(("wait", _)) => Mode::Wait,
            Some((other, span)) => {
                return Err(self.at(
                    span,
                    format!("'mode' in {table} must be \"detach\" or \"wait\", not \"{other}\""),
                ))
            }
        };
        let rsync_args = match m.rsync_args {
            None => Vec::new(),
            Some(args) => {
                for a in args.get_ref() {
                    if let Err(why) = check_rsync_arg(a) {
                        return Err(self.at(args.span(), format!("'rsync_args' in {table}: {why}")));
                    }
                }
                args.into_inner()
            }
        };
        let timeout = match &m.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(self.at(
                        t.span(),
                        format!("'timeout' in {table} must be more than zero"),
                    ))
                }
                Err(e) => {
                    return Err(self.at(
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
                return Err(self.at(
                    m.lastsync.as_ref().map_or(0..0, Spanned::span),
                    format!("'trace' and 'lastsync' in {table} name the same file"),
                ));
            }
        }
        let max_delete = match &m.max_delete {
            None => DEFAULT_MAX_DELETE,
            Some(v) => u64::try_from(*v.get_ref()).map_err(|_| {
                self.at(
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
                    return Err(self.at(
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
            Some(d) => Some(self.absolute(d, "downstream")?),
            None => None,
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
        })
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
            self.at(
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
            return Err(self.at(
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

/// Long options of rsync that would undo the handler's rules: the upstream's owners, groups,
/// devices, special files, ACLs or modes arriving on the mirror; symlinked dirs on the mirror
/// being followed; rsync starting other programs or writing outside `dest`; the handler's own
/// options being overridden.
const DENIED_LONG: &[&str] = &[
    "--archive",
    "--devices",
    "--specials",
    "--copy-devices",
    "--write-devices",
    "--owner",
    "--group",
    "--super",
    "--fake-super",
    "--chown",
    "--usermap",
    "--groupmap",
    "--chmod",
    "--acls",
    "--xattrs",
    "--keep-dirlinks",
    "--copy-unsafe-links",
    "--munge-links",
    "--rsh",
    "--rsync-path",
    "--files-from",
    "--from0",
    "--remove-source-files",
    "--log-file",
    "--write-batch",
    "--only-write-batch",
    "--read-batch",
    "--daemon",
    "--server",
    "--sender",
    "--config",
    "--dry-run",
    "--list-only",
    "--itemize-changes",
    "--out-format",
    "--info",
    "--delete-missing-args",
    "--max-delete",
];
/// The short forms: -a (implies -D -o -g), -D, -o, -g, -A, -X, -K, -e, -n, -i.
const DENIED_SHORT: &[u8] = b"aDogAXKeni";
/// Short options that take an argument: the rest of a cluster after one of these is its value.
const SHORT_WITH_ARG: &[u8] = b"BTfM";

/// Ok when an admin's rsync option keeps the handler's guarantees.
pub fn check_rsync_arg(a: &str) -> Result<(), String> {
    // Before `--`, a word without a dash would become an extra source path.
    if !a.starts_with('-') || a == "--" || a == "-" {
        return Err(format!(
            "'{a}' is not an option (options start with '-'; '--' is added by the handler)"
        ));
    }
    if a.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{a:?} holds control characters"));
    }
    if let Some(long) = a.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        let name = format!("--{name}");
        if DENIED_LONG.contains(&name.as_str()) {
            return Err(format!(
                "'{name}' is not allowed: the handler sets modes, owners, deletes and logging itself, and keeps devices, special files and other programs out of the mirror"
            ));
        }
        return Ok(());
    }
    for &c in a.as_bytes()[1..].iter() {
        if DENIED_SHORT.contains(&c) {
            return Err(format!(
                "'-{}' (in '{a}') is not allowed: the handler sets modes, owners, deletes and logging itself, and keeps devices, special files and other programs out of the mirror",
                c as char
            ));
        }
        if SHORT_WITH_ARG.contains(&c) {
            break;
        }
    }
    Ok(())
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
        for good in [
            "--bwlimit=40M",
            "-H",
            "-v",
            "--hard-links",
            "--exclude=/x",
            "-f- /x",
            "-Bfoo",
            "--no-motd",
            "--contimeout=5",
            "--password-file=/etc/m.secret",
            "-z",
        ] {
            assert!(check_rsync_arg(good).is_ok(), "{good}");
        }
        let e = err(&format!("{GOOD}rsync_args = [\"-avH\"]\n"));
        assert!(e.contains("line 6") && e.contains("'-a'"), "{e}");
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
        assert_eq!(c.modules["debian"].mode, Mode::Wait);
        assert!(!c.modules["debian"].allow_dirs);
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
