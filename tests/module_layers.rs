//! The handler's and the fan-out's modules form layers: each area's `mod.rs` lists them in its
//! doc comment (lines "//! - [`name`]: ..."), and each module may import only modules below it.
//! So no module imports one that imports it back, and no lower module reaches up into a higher
//! one. The fan-out lists its modules lowest first; the handler highest first, the way an
//! auditor reads it from the stranger path down.

use std::path::Path;

/// The module names of the list in a `mod.rs`'s doc comment, in the order written.
fn layers(mod_rs: &str) -> Vec<String> {
    mod_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]").map(|(name, _)| name.to_owned()))
        .collect()
}

/// The modules of `modules` a file names through any of `prefixes`, tests and comments aside
/// (doc links name modules without importing them).
fn imports(source: &str, prefixes: &[&str], modules: &[String]) -> Vec<String> {
    let code: String = source
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for prefix in prefixes {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

/// The module names of a folder: its `.rs` files but `mod.rs`, and its subfolders.
fn modules_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_owned)
            }
        })
        .filter(|n| n != "mod")
        .collect();
    names.sort();
    names
}

/// The source files of module `name` in `dir`: `name.rs`, or every file of the folder `name/`.
fn sources(dir: &Path, name: &str) -> Vec<String> {
    let folder = dir.join(name);
    if folder.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    } else {
        vec![std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap()]
    }
}

/// Every import in `area` that does not point down its list; `lowest_first` says how it is written.
fn upward_imports(area: &str, lowest_first: bool) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(area);
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let mut order = layers(&mod_rs);
    if !lowest_first {
        order.reverse();
    }
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        modules_in(&dir),
        listed,
        "src/{area}/mod.rs must list every module once"
    );
    let own = format!("crate::{area}::");
    // `super::` in a file of a subfolder names the subfolder's own items, not the area's.
    let mut wrong = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let prefixes: &[&str] = if dir.join(module).is_dir() {
            &[own.as_str()]
        } else {
            &["super::", own.as_str()]
        };
        for source in sources(&dir, module) {
            for used in imports(&source, prefixes, &order) {
                let j = order.iter().position(|m| *m == used).unwrap();
                if j >= i && used != *module {
                    wrong.push(format!("{module} imports {used}, which is not below it"));
                }
            }
        }
    }
    wrong
}

#[test]
fn each_fanout_module_imports_only_lower_ones() {
    let wrong = upward_imports("fanout", true);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn each_handler_module_imports_only_lower_ones() {
    let wrong = upward_imports("handler", false);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The stages share only what `stages/mod.rs` holds (the context, the events and the values
/// that flow from one stage to the next): no stage names another stage or the runner.
#[test]
fn no_stage_imports_another_stage_or_the_runner() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/handler/stages");
    let stages = modules_in(&dir);
    assert!(stages.len() >= 5, "{stages:?}");
    let mut wrong = Vec::new();
    for stage in &stages {
        let source = std::fs::read_to_string(dir.join(format!("{stage}.rs"))).unwrap();
        let others: Vec<String> = stages.iter().filter(|s| *s != stage).cloned().collect();
        for used in imports(&source, &["super::", "crate::handler::stages::"], &others) {
            wrong.push(format!("stage {stage} imports stage {used}"));
        }
        let runner = ["runner".to_owned(), "serve".to_owned()];
        for used in imports(&source, &["crate::handler::", "super::super::"], &runner) {
            wrong.push(format!("stage {stage} imports {used}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let order: Vec<String> = ["output", "protocol", "session"]
        .map(str::to_owned)
        .to_vec();
    let source = "use super::session::Captured;\n/// [`super::protocol`]\nuse crate::fanout::output::X;\n#[cfg(test)]\nuse super::protocol;";
    assert_eq!(
        imports(source, &["super::", "crate::fanout::"], &order),
        ["session", "output"]
    );
}
