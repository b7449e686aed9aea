//! Writes a pair of Fedora-shaped file lists for `benches/scale.sh`, without a tree:
//!
//! ```text
//! filelist-synth BASELINE FETCHED N
//! ```
//! BASELINE holds about N entries, every dir listed, in list order, with paths like
//! `pub/fedora/linux/releases/<rel>/Everything/<arch>/os/Packages/<l>/<name>.rpm` (12 releases,
//! 4 arches, 26 letter dirs: 1248 leaf dirs, 50-some bytes of directory per path as Fedora's
//! have). FETCHED is the same list after a publish: 1000 entries changed (mtime and size), 100
//! removed and 100 added, spread over the whole list. Lines are streamed out: memory stays
//! small at 12 million entries (1.3 GB per list). Prints the entry counts.

use std::fs::File;
use std::io::{BufWriter, Write};

const RELEASES: std::ops::RangeInclusive<u32> = 30..=41;
const ARCHES: [&str; 4] = ["aarch64", "ppc64le", "s390x", "x86_64"];
const CHANGED: u64 = 1000;
const REMOVED: u64 = 100;
const ADDED: u64 = 100;

struct Out {
    base: BufWriter<File>,
    fetched: BufWriter<File>,
    base_n: u64,
    fetched_n: u64,
}

impl Out {
    fn both(&mut self, line: &str) {
        self.base.write_all(line.as_bytes()).unwrap();
        self.fetched.write_all(line.as_bytes()).unwrap();
        self.base_n += 1;
        self.fetched_n += 1;
    }

    fn dir(&mut self, path: &str) {
        self.both(&format!("1700000000\td\t4096\t{path}\n"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: filelist-synth BASELINE FETCHED N");
        std::process::exit(2);
    }
    let n: u64 = args[2].parse().expect("N is a number");
    let open = |p: &str| BufWriter::with_capacity(1 << 20, File::create(p).expect("create"));
    let mut out = Out {
        base: open(&args[0]),
        fetched: open(&args[1]),
        base_n: 0,
        fetched_n: 0,
    };
    let header = "[Version]\n2\n\n[Files]\n";
    out.base.write_all(header.as_bytes()).unwrap();
    out.fetched.write_all(header.as_bytes()).unwrap();

    let leaves = RELEASES.count() as u64 * ARCHES.len() as u64 * 26;
    let per_leaf = (n / leaves).max(1);
    let files = per_leaf * leaves;
    // Every k-th file changes, leaves or gets a new neighbour, at offsets that do not collide.
    let (every_c, every_r, every_a) = (
        (files / CHANGED).max(1),
        (files / REMOVED).max(1),
        (files / ADDED).max(1),
    );
    let mut g: u64 = 0;
    for dir in [
        "pub",
        "pub/fedora",
        "pub/fedora/linux",
        "pub/fedora/linux/releases",
    ] {
        out.dir(dir);
    }
    for rel in RELEASES {
        let r = format!("pub/fedora/linux/releases/{rel}");
        out.dir(&r);
        out.dir(&format!("{r}/Everything"));
        for arch in ARCHES {
            let a = format!("{r}/Everything/{arch}");
            out.dir(&a);
            out.dir(&format!("{a}/os"));
            out.dir(&format!("{a}/os/Packages"));
            for l in b'a'..=b'z' {
                let l = l as char;
                let leaf = format!("{a}/os/Packages/{l}");
                out.dir(&leaf);
                for i in 0..per_leaf {
                    let mtime = 1_700_000_000 + (g * 7919) % 10_000_000;
                    let size = 10_000 + (g * 104_729) % 50_000_000;
                    let name = format!("{leaf}/{l}pkg{i:07}-1.0-1.fc{rel}.{arch}.rpm");
                    let line = format!("{mtime}\tf\t{size}\t{name}\n");
                    out.base.write_all(line.as_bytes()).unwrap();
                    out.base_n += 1;
                    if g % every_r == every_r / 3 {
                        // Removed upstream.
                    } else if g % every_c == every_c / 2 {
                        let line = format!("{}\tf\t{}\t{name}\n", mtime + 3600, size + 1);
                        out.fetched.write_all(line.as_bytes()).unwrap();
                        out.fetched_n += 1;
                    } else {
                        out.fetched.write_all(line.as_bytes()).unwrap();
                        out.fetched_n += 1;
                    }
                    if g % every_a == every_a / 5 {
                        // A new package sorting right after this one ('-' < 'a').
                        let line = format!(
                            "{}\tf\t{size}\t{leaf}/{l}pkg{i:07}a-1.0-1.fc{rel}.{arch}.rpm\n",
                            mtime + 7200
                        );
                        out.fetched.write_all(line.as_bytes()).unwrap();
                        out.fetched_n += 1;
                    }
                    g += 1;
                }
            }
        }
    }
    let footer = "\n[Checksums SHA1]\n\n[End]\n";
    out.base.write_all(footer.as_bytes()).unwrap();
    out.fetched.write_all(footer.as_bytes()).unwrap();
    out.base.flush().unwrap();
    out.fetched.flush().unwrap();
    println!("baseline={} fetched={}", out.base_n, out.fetched_n);
}
