//! Where in a TOML config file something is wrong, for the one-line errors every config of
//! mirrorpush gives: "<file> line <n>: unknown key 'x' in [modules.y]". Shared by the
//! handler's and the listener's configs, so a typo reads the same in both.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// A config error, already rendered as `<file> line N: <what>` (or `<file>: <what>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A config file's path and text, to turn byte offsets into lines and tables.
pub(crate) struct ConfigText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl ConfigText<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The `[table]` header in force at `offset`, or "the top level".
    fn table_at(&self, offset: usize) -> String {
        let end = offset.min(self.text.len());
        String::from_utf8_lossy(&self.text.as_bytes()[..end])
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
            .unwrap_or_else(|| "the top level".to_owned())
    }

    /// "<file> line <n>: <what>" for the value at `span`.
    pub fn at(&self, span: Range<usize>, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{} line {}: {what}",
            self.path.display(),
            self.line_of(span.start)
        ))
    }

    /// The TOML parser's error in the same words: unknown and missing keys named with their
    /// table, anything else with its line.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim();
        let Some(span) = e.span() else {
            return ConfigError(format!("{}: {message}", self.path.display()));
        };
        let table = self.table_at(span.start);
        let quoted = message.split('`').nth(1);
        if let (true, Some(key)) = (message.starts_with("unknown field"), quoted) {
            return self.at(span, format!("unknown key '{key}' in {table}"));
        }
        if let (true, Some(key)) = (message.starts_with("missing field"), quoted) {
            return self.at(span, format!("missing key '{key}' in {table}"));
        }
        self.at(span, message)
    }

    /// A path value that must be absolute (a relative one would depend on the cwd of whoever
    /// runs the program: sshd, systemd or an admin's shell).
    pub fn absolute(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = PathBuf::from(value.get_ref());
        if !p.is_absolute() {
            return Err(self.at(value.span(), format!("'{key}' must be an absolute path")));
        }
        Ok(p)
    }
}
