//! Rules of the code's shape that review alone would let slip:
//! - no two types of the crate share a name: a reader who meets `Verdict` or `Summary` should
//!   not have to find out which of two it is;
//! - one way to replace a file (`src/atomic.rs`): a temp file, created exclusively and never
//!   through a symlink, renamed into place; nobody else renames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names a line defines as a struct, enum, trait or type alias.
fn defined_type(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().skip_while(|w| w.starts_with("pub"));
    let keyword = words.next()?;
    if !matches!(keyword, "struct" | "enum" | "trait" | "type") {
        return None;
    }
    let name = words.next()?;
    let end = name
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(name.len());
    Some(&name[..end]).filter(|n| n.starts_with(|c: char| c.is_ascii_uppercase()))
}

#[test]
fn no_two_types_of_the_crate_share_a_name() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            // An indented private `type X = ...;` is an impl's associated type (the trait's name,
            // `type Target = ...` in a Deref) or an alias local to a test module.
            let indented_alias = line.starts_with(' ') && line.trim_start().starts_with("type ");
            if indented_alias {
                continue;
            }
            if let Some(name) = defined_type(line) {
                let at = format!("{}:{}", f.strip_prefix(&src).unwrap().display(), i + 1);
                seen.entry(name.to_owned()).or_default().push(at);
            }
        }
    }
    assert!(seen.len() > 50, "found only {} type names", seen.len());
    let twice: Vec<_> = seen.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(twice.is_empty(), "{twice:#?}");
}

#[test]
fn the_scan_reads_definitions_and_leaves_other_lines() {
    assert_eq!(defined_type("pub(crate) struct Plan {"), Some("Plan"));
    assert_eq!(defined_type("enum Kind {"), Some("Kind"));
    assert_eq!(
        defined_type("pub type Outcome = (Plan, Vec<u8>);"),
        Some("Outcome")
    );
    assert_eq!(defined_type("struct Ctx<'a> {"), Some("Ctx"));
    assert_eq!(defined_type("let s = struct_name;"), None);
    assert_eq!(defined_type("// the struct below"), None);
}

#[test]
fn only_the_atomic_writer_renames_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        if f.ends_with("atomic.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may move things around to stage a race.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            if line.contains("rename(") || line.contains("renameat(") {
                found.push(format!(
                    "{}:{}",
                    f.strip_prefix(&src).unwrap().display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "renames outside src/atomic.rs: {found:#?}"
    );
}
