//! Registry and usage errors through the real binary: exit 2 and a message naming file, line, key.

use std::process::{Command, Output};

fn run(registry: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .arg("--registry")
        .arg(registry)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn registry_errors_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirrors.toml");
    let cases = [
        (
            "[defaults]\nuser = \"u\"\ntimout = \"1s\"\n",
            ":3: key `timout`: unknown field",
        ),
        (
            "[[mirror]]\nname = \"a\"\n[[mirror]]\nname = \"a\"\n",
            ":4: key `name`: duplicate mirror name",
        ),
        (
            "[[mirror]]\nname = \"a\"\ntimeout = \"fast\"\n",
            ":3: key `timeout`: invalid duration",
        ),
        (
            "[[mirror]]\nname = \"a\"\nmodules = [\"../x\"]\n",
            ":3: key `modules`: module name",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        for args in [
            &["list"][..],
            &["check"],
            &["push", "--dry-run", "fedora"],
            &["push", "fedora"],
        ] {
            let out = run(&path, args);
            assert_eq!(out.status.code(), Some(2), "{args:?} on {text:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let want = format!("error: {}{expected}", path.display());
            assert!(
                stderr.starts_with(&want),
                "{args:?}: {stderr:?} lacks {want:?}"
            );
        }
    }
    let out = run(&dir.path().join("missing.toml"), &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml: cannot read registry"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirrors.toml");
    std::fs::write(&path, "[[mirror]]\nname = \"a\"\nmodules = [\"fedora\"]\n").unwrap();
    for args in [
        &["push"][..],
        &["push", "--concurrency", "0", "fedora"],
        &["frobnicate"],
        &["push", "Fedora"],
        &["push", "fedora", "a//b"],
        &["list", "--module", "-x"],
    ] {
        let out = run(&path, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A module nobody carries: one plain line naming the registry and the modules it knows,
    // with the closest one for a typo; no debug dump.
    let out = run(&path, &["push", "fedroa"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: no mirror in {} carries module \"fedroa\"; the modules it knows: fedora \
             (did you mean \"fedora\"?)\n",
            path.display()
        )
    );
    // MIRRORPUSH_REGISTRY is honoured when --registry is absent.
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorpush"))
        .args(["list"])
        .env("MIRRORPUSH_REGISTRY", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout)
        .starts_with("a  a:22  mirrorpush  stage 1  tags -  sync fedora"));
}

/// `list` and `push --dry-run` show exactly what each mirror would be sent: the request for a
/// mirrorpush handler, runmirrors' words for an ftpsync mirror (a dir push is a full sync there,
/// and says so). One trailing `/` typed on the command line is dropped; two are refused.
#[test]
fn list_and_dry_run_show_the_exact_command_per_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirrors.toml");
    std::fs::write(
        &path,
        "[[mirror]]\nname = \"hub\"\nmodules = [\"debian\"]\nwait = true\n\n\
         [[mirror]]\nname = \"ftp\"\nmodules = [\"debian\"]\nprotocol = \"ftpsync\"\narchive = \"debian\"\nstage = 2\n\n\
         [[mirror]]\nname = \"ftp-main\"\nmodules = [\"debian\"]\nprotocol = \"ftpsync\"\nstage = 2\n",
    )
    .unwrap();
    let out = run(&path, &["push", "--dry-run", "debian", "dists/trixie/"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
            .to_owned()
    };
    assert!(
        line("hub").ends_with("  sync debian dists/trixie"),
        "{text}"
    );
    assert!(
        line("ftp").ends_with(
            "ftpsync \" sync:archive:debian sync:all\" (dir push sent as a full sync (ftpsync has no dir sync))"
        ),
        "{text}"
    );
    assert!(
        line("ftp-main").contains("ftpsync \" sync:archive: sync:all\""),
        "{text}"
    );

    let out = run(
        &path,
        &["push", "--dry-run", "--json", "debian", "dists/trixie/"],
    );
    let plan: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(plan[0]["request"], "sync debian dists/trixie");
    assert_eq!(plan[0]["protocol"], "mirrorpush");
    assert_eq!(plan[0]["wait"], true);
    assert_eq!(plan[1]["request"], " sync:archive:debian sync:all");
    assert_eq!(plan[1]["protocol"], "ftpsync");
    assert!(plan[1]["note"].as_str().unwrap().contains("full sync"));
    assert_eq!(plan[2]["request"], " sync:archive: sync:all");

    let out = run(&path, &["list", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap()).unwrap();
    assert_eq!(v["requests"][0], " sync:archive:debian sync:all");

    let out = run(&path, &["push", "--dry-run", "debian", "dists/trixie//"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends with '/'"));

    // ftpsync mirrors report completion by themselves: no check warning for the hub stage,
    // which says wait = true.
    let out = run(&path, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("warning:"), "{text}");
}
