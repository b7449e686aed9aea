//! `man mirrorpush` is a real page: rendered by the generator the package build runs
//! (`examples/gen-assets.rs`), it has every section an operator looks for, shows each option
//! with its argument, covers every command and option of the CLI, and formats without a groff
//! warning. The per-command pages stay.

#[allow(dead_code)]
#[path = "../examples/gen-assets.rs"]
mod gen_assets;

use std::io::Write;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use mirrorpush::fanout::cli::Cli;

/// The page as a reader sees it, through groff; groff's warnings (-ww) are returned too.
fn format(page: &str) -> (String, String) {
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rLL=200n"])
        .env("GROFF_NO_SGR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff runs (groff-base)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Plain text: drop overstrike bold/underline that grotty writes without SGR.
    let text = String::from_utf8_lossy(&out.stdout)
        .replace("\u{2010}", "-")
        .replace("\u{2212}", "-");
    let mut plain = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '\u{8}' {
            i += 2;
            continue;
        }
        plain.push(chars[i]);
        i += 1;
    }
    (plain, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_main_page_has_every_section_and_formats_cleanly() {
    let page = gen_assets::main_page();
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "FILES",
        "ENVIRONMENT",
        "\"EXIT STATUS\"",
        "EXAMPLES",
        "\"SEE ALSO\"",
    ] {
        let header = format!(".SH {section}\n");
        let plain = format!(".SH {}\n", section.trim_matches('"'));
        assert!(
            page.contains(&header) || page.contains(&plain),
            "no {section} section"
        );
    }
    let (text, warnings) = format(&page);
    assert_eq!(warnings, "", "groff warnings");

    // The synopsis shows option arguments (it used to say `[--registry]`).
    let synopsis: String = text
        .split("SYNOPSIS")
        .nth(1)
        .and_then(|s| s.split("DESCRIPTION").next())
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for form in [
        "mirrorpush [--registry FILE] [-v]... [--history FILE] list [--module MODULE] [--tag TAG]... [--json]",
        "mirrorpush [--registry FILE] [-v]... [--history FILE] push [--dry-run] [--json] [--mirror NAME]... [--tag TAG]... [--concurrency N] [--verify] [--until DURATION] MODULE [DIR]",
        "mirrorpush [--registry FILE] [-v]... [--history FILE] check",
        "mirrorpush [--registry FILE] [-v]... [--history FILE] verify [--module MODULE] [--watch] [--until DURATION] [--json] [--mirror NAME]... [--tag TAG]... [PUSH]",
        "mirrorpush [--registry FILE] [-v]... [--history FILE] report [--last N] [--module MODULE] [--json] [--html FILE] [PUSH]",
    ] {
        assert!(synopsis.contains(form), "{form:?} not in {synopsis:?}");
    }

    // Generated from the CLI: every command and every option appears.
    let cli = Cli::command();
    for sub in cli.get_subcommands() {
        assert!(
            text.contains(&format!("mirrorpush-{}(1)", sub.get_name())),
            "{}",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    text.contains(&format!("--{long}")),
                    "--{long} of {}",
                    sub.get_name()
                );
            }
        }
    }
    for needle in [
        "/etc/mirrorpush/mirrors.toml",
        "/etc/mirrorpush/known_hosts",
        "/etc/mirrorpush/id_ed25519",
        "MIRRORPUSH_REGISTRY",
        "mirrorpush filelist /srv/pub/fedora && mirrorpush push fedora",
        "--dry-run fedora",
        "| jq",
        "mirrorpush-handler(8)",
        "synced within",
        "/var/lib/mirrorpush/history.db",
        "MIRRORPUSH_HISTORY",
        "verified within",
        "push --verify",
    ] {
        assert!(text.contains(needle), "{needle:?} missing");
    }
    // Exit codes, from the constants the binary returns.
    let exit = text.split("EXIT STATUS").nth(1).unwrap();
    for code in ["0", "1", "2", "130"] {
        assert!(
            exit.lines()
                .any(|l| l.trim() == code || l.trim().starts_with(&format!("{code} "))),
            "exit {code}"
        );
    }
}

#[test]
fn every_command_keeps_its_own_page() {
    let pages = gen_assets::command_pages();
    let names: Vec<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
    for sub in Cli::command().get_subcommands() {
        let file = format!("mirrorpush-{}.1", sub.get_name());
        assert!(names.contains(&file.as_str()), "{file} not in {names:?}");
    }
    let (_, push) = pages
        .iter()
        .find(|(f, _)| f == "mirrorpush-push.1")
        .unwrap();
    let (text, warnings) = format(push);
    assert_eq!(warnings, "", "groff warnings");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("[--mirror NAME]... [--tag TAG]... [--concurrency N] [--verify] [--until DURATION] MODULE [DIR]"),
        "{flat}"
    );
    assert!(flat.contains("SEE ALSO mirrorpush(1)"), "{flat}");
}
