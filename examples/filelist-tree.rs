//! Builds a synthetic mirror tree for the file-list benchmarks (`benches/filelist.sh`):
//!
//! ```text
//! filelist-tree DIR NFILES          # a fresh tree of NFILES files under DIR
//! filelist-tree --touch DIR/SUB N   # a publish of N changes in SUB: a third of them
//!                                   # rewritten, a third removed, the rest new
//! ```
//! The layout is shaped like a distribution's: `arch<i>/group<j>/pkg<k>/` leaf dirs of 100
//! files (`*.rpm` of a few bytes), a `repodata/repomd.xml` per group, and a symlink per group,
//! so that the generator sees dirs, files and symlinks in realistic proportions.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

const PER_LEAF: usize = 100;
const LEAVES_PER_GROUP: usize = 50;
const GROUPS_PER_ARCH: usize = 20;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, dir, n] if flag == "--touch" => touch(Path::new(dir), parse(n)),
        [dir, n] => build(Path::new(dir), parse(n)),
        _ => {
            eprintln!("usage: filelist-tree DIR NFILES | filelist-tree --touch DIR N");
            std::process::exit(2);
        }
    }
}

fn parse(n: &str) -> usize {
    n.parse().unwrap_or_else(|_| {
        eprintln!("error: '{n}' is not a number");
        std::process::exit(2)
    })
}

fn build(root: &Path, files: usize) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let mut made = 0;
    'outer: for arch in 0.. {
        for group in 0..GROUPS_PER_ARCH {
            let g = root.join(format!("arch{arch}/group{group:02}"));
            fs::create_dir_all(g.join("repodata"))?;
            fs::write(
                g.join("repodata/repomd.xml"),
                format!("<repomd {arch} {group}/>"),
            )?;
            symlink("repodata", g.join("latest"))?;
            for leaf in 0..LEAVES_PER_GROUP {
                let d = g.join(format!("pkg{leaf:02}"));
                fs::create_dir(&d)?;
                for i in 0..PER_LEAF {
                    if made == files {
                        break 'outer;
                    }
                    fs::write(
                        d.join(format!("name-{i:03}-1.0-1.fc41.x86_64.rpm")),
                        &b"rpm"[..i % 4],
                    )?;
                    made += 1;
                }
            }
        }
    }
    Ok(())
}

/// A publish into one dir: `n` changes, a third rewrites (new size and mtime), a third
/// removals, the rest new files (named for this round, so every round adds new entries and
/// the dir keeps about its size).
fn touch(dir: &Path, n: usize) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    names.sort();
    let (rewrite, remove) = (n / 3, n / 3);
    if names.len() < rewrite + remove {
        eprintln!(
            "error: {} holds fewer than {} files",
            dir.display(),
            rewrite + remove
        );
        std::process::exit(2);
    }
    for p in &names[..rewrite] {
        fs::write(p, format!("rebuilt at {:?}", std::time::SystemTime::now()))?;
    }
    for p in &names[names.len() - remove..] {
        fs::remove_file(p)?;
    }
    let round = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for i in 0..n - rewrite - remove {
        fs::write(dir.join(format!("added-{round}-{i:04}.rpm")), b"new")?;
    }
    Ok(())
}
