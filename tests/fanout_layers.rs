//! The fan-out's modules form layers: `src/fanout/mod.rs` lists them lowest first, and each
//! module may import only modules listed before it. So no module imports one that imports it
//! back, and no lower module reaches up into a higher one.

use std::path::Path;

/// The module names of the list in `mod.rs`'s doc comment (lines "//! - [`name`]: ..."), in order.
fn layers(mod_rs: &str) -> Vec<String> {
    mod_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]").map(|(name, _)| name.to_owned()))
        .collect()
}

/// The fan-out modules a file names through `super::` or `crate::fanout::`, tests aside.
fn imports(source: &str, modules: &[String]) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for prefix in ["super::", "crate::fanout::"] {
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

#[test]
fn each_fanout_module_imports_only_lower_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fanout");
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let order = layers(&mod_rs);
    // Every module file is in the list, and the list names no module that does not exist.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .filter(|n| n != "mod")
        .collect();
    files.sort();
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        files, listed,
        "src/fanout/mod.rs must list every module once"
    );
    let mut wrong = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let source = std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
        for used in imports(&source, &order) {
            let j = order.iter().position(|m| *m == used).unwrap();
            if j >= i {
                wrong.push(format!("{module} imports {used}, which is not below it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let order: Vec<String> = ["output", "protocol", "session"]
        .map(str::to_owned)
        .to_vec();
    let source = "use super::session::Captured;\nuse crate::fanout::output::X;\n#[cfg(test)]\nuse super::protocol;";
    assert_eq!(imports(source, &order), ["session", "output"]);
}
