//! The master's side of a proof: the value a mirror's copy must have, read from the master's
//! tree when a push starts, and the comparison with what a mirror served.

use std::io::Read;
use std::path::Path;

use super::spec::ProofSpec;

/// The most a proof file may hold: the same bound as a fetch from a mirror.
pub const MAX_PROOF_BYTES: u64 = 1 << 20;

/// The master's value of `spec` in `tree` (Archive serial or sha256).
pub fn master_value(tree: &Path, spec: &ProofSpec) -> Result<String, String> {
    let path = tree.join(spec.master_path());
    let file =
        std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut content = Vec::new();
    file.take(MAX_PROOF_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if content.len() as u64 > MAX_PROOF_BYTES {
        return Err(format!(
            "{} is larger than 1 MiB, more than a mirror's copy may be fetched; \
             verify with a smaller file (a trace, repomd.xml)",
            path.display()
        ));
    }
    spec.value_of(&content)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How a mirror's copy compares with the master's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// It serves the master's value (returned).
    Same(String),
    /// It serves something else: what (escaped for showing later), or why it proves nothing.
    Other(String),
}

pub fn compare(spec: &ProofSpec, expected: &str, served: &[u8]) -> Match {
    match spec.value_of(served) {
        Ok(v) if v == expected => Match::Same(v),
        Ok(v) => Match::Other(format!("serves {}", shorten(&v))),
        Err(e) => Match::Other(e),
    }
}

/// A served value as shown: at most 64 characters.
fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(64).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_values_come_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("project/trace")).unwrap();
        std::fs::write(
            dir.path().join("project/trace/master"),
            "x\nArchive serial: 42\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("big"),
            vec![0u8; (MAX_PROOF_BYTES + 1) as usize],
        )
        .unwrap();
        let trace = ProofSpec::parse("trace:project/trace/m1").unwrap();
        assert_eq!(master_value(dir.path(), &trace).unwrap(), "42");
        let big = ProofSpec::parse("file:big").unwrap();
        assert!(master_value(dir.path(), &big)
            .unwrap_err()
            .contains("1 MiB"));
        let none = ProofSpec::parse("file:none").unwrap();
        assert!(master_value(dir.path(), &none).is_err());
        assert_eq!(
            compare(&trace, "42", b"Archive serial: 42\n"),
            Match::Same("42".into())
        );
        assert_eq!(
            compare(&trace, "42", b"Archive serial: 41\n"),
            Match::Other("serves 41".into())
        );
        assert!(matches!(compare(&trace, "42", b"<html>"), Match::Other(_)));
    }
}
