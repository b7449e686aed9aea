//! File-list sync through the real lab: the upstream's list written by `mirrorpush filelist`,
//! the handler fetching it over a real `rsync --daemon` and transferring only what changed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{lab, local, ssh, status_json, write_config, LONG};
use mirrorpush_lab::Lab;

const LIST: &str = "fullfiletimelist-fedora";
const CONFIG: &str = "filelist = \"fullfiletimelist-fedora\"\n";

use common::publish_list as publish;

/// The origin daemon's log lines for module runs, e.g. `rsync on fedora/ from ...`.
fn served(lab: &Lab) -> Vec<String> {
    fs::read_to_string(lab.upstream_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(" rsync on ").nth(1))
        .map(|l| l.split(" from ").next().unwrap_or("").to_owned())
        .collect()
}

fn last_runs(lab: &Lab) -> serde_json::Value {
    status_json(lab)["modules"][0]["last_run"]["runs"].clone()
}

fn synced(lab: &Lab, request: &str) {
    let (code, out, err) = ssh(lab, request);
    assert_eq!((code, out.as_str()), (0, "synced"), "{request}: {err}");
}

#[test]
fn a_null_push_fetches_only_the_list_and_a_change_moves_only_what_changed() {
    let lab = lab("wait");
    write_config(&lab, CONFIG, None);
    publish(&lab);
    // No baseline yet: a plain rsync, after which the fetched list is the baseline.
    synced(&lab, "sync fedora");
    assert!(lab.in_sync(0, "fedora"));
    let runs = last_runs(&lab);
    assert_eq!(runs[0]["kind"], "full", "{runs}");
    assert!(
        runs[0]["result"]
            .as_str()
            .unwrap()
            .contains("no file-list baseline"),
        "{runs}"
    );

    // Nothing changed: the list is fetched, and that is all the upstream serves.
    let before = served(&lab).len();
    synced(&lab, "sync fedora");
    let after = served(&lab);
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert_eq!(after.last().unwrap(), &format!("fedora/{LIST}"));
    assert_eq!(last_runs(&lab)[0]["kind"], "null");

    // Two files change: only they travel.
    let up = lab.upstream_dir("fedora");
    fs::write(
        up.join("updates/41/x86_64/Packages/o/openssl-3.3.rpm"),
        "new openssl\n",
    )
    .unwrap();
    fs::write(up.join("README"), "upstream readme, longer now\n").unwrap();
    fs::remove_file(up.join("updates/41/x86_64/Packages/o/openssl-3.2.rpm")).unwrap();
    publish(&lab);
    synced(&lab, "sync fedora");
    assert!(lab.in_sync(0, "fedora"));
    let runs = last_runs(&lab);
    assert_eq!(runs[0]["kind"], "filelist", "{runs}");
    // openssl-3.3, README, and the directory whose mtime changed.
    assert_eq!(runs[0]["transferred"], 2, "{runs}");
    assert_eq!(runs[0]["deleted"], 1, "{runs}");
    // The list the mirror applied is published in its tree, for mirrors that pull from it.
    let dest = lab.mirrors[0].dest("fedora");
    assert_eq!(
        fs::read(dest.join(LIST)).unwrap(),
        fs::read(up.join(LIST)).unwrap()
    );
}

/// A small deterministic generator of random changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Path -> what it is (file contents, `dir`, or the link target) for a whole tree. Dangling
/// symlinks are left out: Fedora's lists skip them, so a file-list mirror does not carry them.
fn tree(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let kind = e.file_type().unwrap();
            let what = if kind.is_symlink() {
                if fs::metadata(&p).is_err() {
                    continue;
                }
                [
                    b"link:".as_slice(),
                    fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes(),
                ]
                .concat()
            } else if kind.is_dir() {
                stack.push(p.clone());
                b"dir".to_vec()
            } else {
                fs::read(&p).unwrap()
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Every entry of the tree (files, dirs, symlinks), relative, without the list itself.
fn entries(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_name()
                .to_string_lossy()
                .starts_with("fullfiletimelist")
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// One random change of the kinds the issue names.
fn change(up: &Path, rng: &mut Rng, round: u64, log: &mut Vec<String>) {
    let all = entries(up);
    let files: Vec<&PathBuf> = all
        .iter()
        .filter(|p| up.join(p).is_file() && !up.join(p).is_symlink())
        .collect();
    let dirs: Vec<&PathBuf> = all
        .iter()
        .filter(|p| up.join(p).is_dir() && !up.join(p).is_symlink())
        .collect();
    let links: Vec<&PathBuf> = all.iter().filter(|p| up.join(p).is_symlink()).collect();
    // Times that differ from round to round: the list (max of mtime and ctime, in seconds)
    // then differs even for a same-size change within the same second.
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1000 * (round + 1);
    let pick_dir = |rng: &mut Rng| {
        up.join(
            dirs.get(rng.below(dirs.len().max(1)))
                .map_or(Path::new(""), |p| p.as_path()),
        )
    };
    match rng.below(11) {
        0 => {
            let p = pick_dir(rng).join(format!("new-{round}-{}.rpm", rng.below(1000)));
            fs::write(&p, format!("new file of round {round}\n")).unwrap();
            log.push(format!("new {}", p.display()));
        }
        1 if !files.is_empty() => {
            // Same size, new content, new mtime.
            let p = up.join(files[rng.below(files.len())]);
            let len = fs::metadata(&p).unwrap().len() as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| b'a' + ((i as u64 + round) % 26) as u8)
                .collect();
            fs::write(&p, text).unwrap();
            set_mtime(&p, stamp);
            log.push(format!("same size {}", p.display()));
        }
        2 if !files.is_empty() => {
            let p = up.join(files[rng.below(files.len())]);
            fs::write(
                &p,
                format!(
                    "changed size in round {round}, {}\n",
                    "x".repeat(rng.below(50))
                ),
            )
            .unwrap();
            log.push(format!("size {}", p.display()));
        }
        3 if files.len() > 3 => {
            let p = up.join(files[rng.below(files.len())]);
            fs::remove_file(&p).unwrap();
            log.push(format!("rm {}", p.display()));
        }
        4 if dirs.len() > 3 => {
            let p = up.join(dirs[rng.below(dirs.len())]);
            fs::remove_dir_all(&p).unwrap();
            log.push(format!("rm -r {}", p.display()));
        }
        5 if !files.is_empty() => {
            // A file replaced by a dir (holding a file).
            let p = up.join(files[rng.below(files.len())]);
            fs::remove_file(&p).unwrap();
            fs::create_dir(&p).unwrap();
            fs::write(p.join("inside"), "now a dir\n").unwrap();
            log.push(format!("file->dir {}", p.display()));
        }
        6 if dirs.len() > 3 => {
            // A dir (tree) replaced by a file.
            let p = up.join(dirs[rng.below(dirs.len())]);
            fs::remove_dir_all(&p).unwrap();
            fs::write(&p, "now a file\n").unwrap();
            log.push(format!("dir->file {}", p.display()));
        }
        7 if !files.is_empty() => {
            // A symlink added, to a file in the tree (relative, so --safe-links keeps it).
            let target = files[rng.below(files.len())];
            let name = format!("link-{round}-{}", rng.below(1_000_000));
            std::os::unix::fs::symlink(target, up.join(&name)).unwrap();
            log.push(format!("ln {name} -> {}", target.display()));
        }
        8 if !links.is_empty() && !files.is_empty() => {
            let l = up.join(links[rng.below(links.len())]);
            let target = files[rng.below(files.len())];
            // Links live at the top, so a tree-relative target stays inside.
            if l.parent() == Some(up) {
                fs::remove_file(&l).unwrap();
                std::os::unix::fs::symlink(target, &l).unwrap();
                log.push(format!("retarget {} -> {}", l.display(), target.display()));
            }
        }
        9 if !links.is_empty() => {
            let l = up.join(links[rng.below(links.len())]);
            fs::remove_file(&l).unwrap();
            log.push(format!("rm link {}", l.display()));
        }
        _ => {
            let p = pick_dir(rng).join(format!("empty-{round}"));
            let _ = fs::create_dir(&p);
            log.push(format!("mkdir {}", p.display()));
        }
    }
}

#[test]
fn twenty_rounds_of_random_changes_converge_with_full_and_dir_pushes() {
    let lab = lab("wait");
    write_config(&lab, CONFIG, None);
    let up = lab.upstream_dir("fedora");
    for i in 0..12 {
        let d = up.join(format!("pool/p{}", i % 4));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("pkg-{i}.rpm")), format!("package {i}\n")).unwrap();
    }
    publish(&lab);
    synced(&lab, "sync fedora");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut log = Vec::new();
    for round in 0..22u64 {
        for _ in 0..1 + rng.below(3) {
            change(&up, &mut rng, round, &mut log);
        }
        publish(&lab);
        if round == 11 {
            // A runner killed mid-transfer: the next push still converges.
            fs::write(up.join("big.iso"), vec![7u8; 400_000]).unwrap();
            publish(&lab);
            write_config(
                &lab,
                &format!("{CONFIG}rsync_args = [\"--bwlimit=100\"]\n"),
                None,
            );
            let mode_detach = fs::read_to_string(&lab.mirrors[0].handler_config)
                .unwrap()
                .replace("mode = \"wait\"", "mode = \"detach\"");
            lab.write_handler_config(0, &mode_detach).unwrap();
            let (code, _, err) = ssh(&lab, "sync fedora");
            assert_eq!(code, 0, "{err}");
            let pgid = common::module_state(&lab).join("rsync.pgid");
            assert!(lab.wait_until(LONG, || pgid.exists()));
            let config = &lab.mirrors[0].handler_config;
            assert!(lab.wait_until(LONG, || common::runner_pid(config).is_some()));
            let pid = common::runner_pid(config).unwrap();
            // SAFETY: kill(2) on the runner found by its command line.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            assert!(lab.wait_until(LONG, || common::runner_pid(config).is_none()));
            write_config(&lab, CONFIG, None);
            synced(&lab, "sync fedora");
        } else if round % 3 == 1 {
            // A dir push for every top dir that exists: together they cover the change.
            let mut tops: Vec<String> = fs::read_dir(&up)
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            tops.sort();
            for t in &tops {
                synced(&lab, &format!("sync fedora {t}"));
            }
            // What changed outside the dirs (top-level files, links, removed dirs): a full push.
            synced(&lab, "sync fedora");
        } else {
            synced(&lab, "sync fedora");
        }
        let dest = lab.mirrors[0].dest("fedora");
        assert!(
            tree(&dest) == tree(&up),
            "round {round} diverged after:\n{}",
            log.join("\n")
        );
    }
    // File-list runs did the work, not plain rsyncs.
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(log.matches("ran filelist").count() >= 10, "{log}");
}

/// Writes `text` as the upstream's list (bypassing the generator: a hostile or broken list).
fn hostile_list(lab: &Lab, text: &str) {
    fs::write(lab.upstream_dir("fedora").join(LIST), text).unwrap();
}

/// The generator's list with one extra line in [Files].
fn with_line(lab: &Lab, line: &str) -> String {
    publish(lab);
    let good = fs::read_to_string(lab.upstream_dir("fedora").join(LIST)).unwrap();
    good.replacen("[Files]\n", &format!("[Files]\n{line}\n"), 1)
}

#[test]
fn hostile_or_broken_lists_fall_back_or_are_refused_and_never_touch_outside_dest() {
    let lab = lab("wait");
    write_config(&lab, CONFIG, None);
    publish(&lab);
    synced(&lab, "sync fedora");
    synced(&lab, "sync fedora");
    let outside = lab.root.join("outside");
    lab.create_dir_for_account(&outside).unwrap();
    fs::write(outside.join("precious"), "keep").unwrap();
    let dest = lab.mirrors[0].dest("fedora");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases: Vec<(&str, String)> = vec![
        (
            "absolute path",
            with_line(&lab, &format!("{now}\tf\t4\t/etc/passwd")),
        ),
        (
            "dot-dot",
            with_line(&lab, &format!("{now}\tf\t4\t../outside/precious")),
        ),
        (
            "dot component",
            with_line(&lab, &format!("{now}\tf\t4\tREADME/./x")),
        ),
        (
            "empty component",
            with_line(&lab, &format!("{now}\tf\t4\tupdates//x")),
        ),
        ("NUL", with_line(&lab, &format!("{now}\tf\t4\tup\0dates"))),
        ("field count", with_line(&lab, &format!("{now}\tf\tREADME"))),
        ("non-numeric", with_line(&lab, "yesterday\tf\t4\tREADME")),
        (
            "below a symlink",
            with_line(
                &lab,
                &format!("{now}\tl\t7\tevil-link\n{now}\tf\t4\tevil-link/precious"),
            ),
        ),
        ("truncated", {
            publish(&lab);
            let good = fs::read_to_string(lab.upstream_dir("fedora").join(LIST)).unwrap();
            good[..good.find("[End]").unwrap()].to_owned()
        }),
        ("version 4", {
            publish(&lab);
            fs::read_to_string(lab.upstream_dir("fedora").join(LIST))
                .unwrap()
                .replacen("[Version]\n2", "[Version]\n4", 1)
        }),
    ];
    for (what, text) in &cases {
        // A symlink out of the tree on the mirror, as a local user could plant it: no list
        // line may make the handler write or delete through it.
        let _ = fs::remove_file(dest.join("evil-link"));
        std::os::unix::fs::symlink(&outside, dest.join("evil-link")).unwrap();
        hostile_list(&lab, text);
        synced(&lab, "sync fedora");
        let runs = last_runs(&lab);
        assert_eq!(runs[0]["kind"], "full", "{what}: {runs}");
        assert!(
            runs[0]["result"]
                .as_str()
                .unwrap()
                .contains("plain rsync: invalid file list"),
            "{what}: {runs}"
        );
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep",
            "{what}"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{what}");
        // The fallback's rsync removed the planted link (it is not upstream), not its target.
        assert!(!dest.join("evil-link").exists(), "{what}");
    }
    let log = fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap();
    assert!(
        log.matches("verdict=filelist-invalid").count() >= cases.len(),
        "{log}"
    );

    // A list that would remove most of the mirror: refused, nothing deleted.
    publish(&lab);
    synced(&lab, "sync fedora");
    write_config(&lab, &format!("{CONFIG}max_delete = 3\n"), None);
    let full = fs::read_to_string(lab.upstream_dir("fedora").join(LIST)).unwrap();
    let gutted: String = full
        .lines()
        .filter(|l| !l.contains("releases") && !l.contains("updates"))
        .map(|l| format!("{l}\n"))
        .collect();
    hostile_list(&lab, &gutted);
    let (code, _, err) = ssh(&lab, "sync fedora");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("max_delete"), "{err}");
    assert!(dest
        .join("releases/41/Everything/x86_64/os/repodata/repomd.xml")
        .exists());
    assert!(dest.join("updates/41/x86_64/repodata/repomd.xml").exists());
    let v = status_json(&lab);
    assert!(v["modules"][0]["last_run"]["result"]
        .as_str()
        .unwrap()
        .contains("max_delete"));
}

#[test]
fn dir_pushes_look_only_under_the_dir_and_full_repairs_drift() {
    let lab = lab("wait");
    write_config(&lab, CONFIG, None);
    publish(&lab);
    synced(&lab, "sync fedora");
    let up = lab.upstream_dir("fedora");
    let dest = lab.mirrors[0].dest("fedora");
    fs::write(
        up.join("updates/41/x86_64/Packages/o/openssh-9.9.rpm"),
        "openssh\n",
    )
    .unwrap();
    fs::write(
        up.join("development/rawhide/COMPOSE_ID"),
        "Fedora-Rawhide-20261126.n.0\n",
    )
    .unwrap();
    publish(&lab);
    synced(&lab, "sync fedora updates");
    assert!(dest
        .join("updates/41/x86_64/Packages/o/openssh-9.9.rpm")
        .exists());
    // Outside the dir nothing moved.
    assert_eq!(
        fs::read_to_string(dest.join("development/rawhide/COMPOSE_ID")).unwrap(),
        "Fedora-Rawhide-20261125.n.0\n"
    );
    assert_eq!(last_runs(&lab)[0]["kind"], "filelist");
    // The baseline moved only inside the dir: a full push brings the rest.
    synced(&lab, "sync fedora");
    assert!(lab.in_sync(0, "fedora"));
    assert_eq!(last_runs(&lab)[0]["transferred"], 1);

    // Drift the lists cannot see: a file changed and one removed on the mirror by hand.
    fs::write(dest.join("README"), "edited on the mirror\n").unwrap();
    fs::remove_file(dest.join("updates/41/x86_64/repodata/repomd.xml")).unwrap();
    synced(&lab, "sync fedora");
    assert_eq!(last_runs(&lab)[0]["kind"], "null");
    assert!(!lab.in_sync(0, "fedora"));
    let (code, out, err) = local(&lab, &["sync", "--full", "fedora"]);
    assert_eq!((code, out.as_str()), (0, "synced"), "{err}");
    assert!(lab.in_sync(0, "fedora"));
    assert_eq!(last_runs(&lab)[0]["kind"], "full");
}

/// The list with the mtime of its `README` entry changed by `k` in its last digit: the same
/// size, other bytes.
fn bump_readme(list: &[u8], k: u8) -> Vec<u8> {
    let text = String::from_utf8(list.to_vec()).unwrap();
    let line = text.find("\tREADME\n").unwrap();
    let start = text[..line].rfind('\n').unwrap() + 1;
    let mut out = list.to_vec();
    let d = &mut out[start + 9];
    *d = b'0' + (*d - b'0' + k) % 10;
    out
}

fn handler_log(lab: &Lab) -> String {
    fs::read_to_string(lab.mirrors[0].state_dir.join("handler.log")).unwrap()
}

#[test]
fn a_null_run_after_a_null_run_reads_neither_list_and_a_replaced_list_is_still_planned() {
    use std::os::unix::fs::MetadataExt;
    let lab = lab("wait");
    write_config(&lab, CONFIG, None);
    publish(&lab);
    let state = common::module_state(&lab);
    let (fetched, record) = (state.join("filelist.fetched"), state.join("filelist.same"));
    let compared = |log: &str| log.matches("verdict=filelist-compared").count();
    synced(&lab, "sync fedora");
    // Adopted byte for byte: recorded by identity, so the next null run reads neither list.
    let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
    let text = fs::read_to_string(&record).unwrap();
    assert!(text.starts_with("fetched dev="), "{text}");
    assert!(text.contains(&format!(" ino={} ", ino(&fetched))), "{text}");
    assert!(
        text.contains(&format!(" ino={} ", ino(&state.join("filelist.baseline")))),
        "{text}"
    );
    synced(&lab, "sync fedora");
    assert_eq!(last_runs(&lab)[0]["kind"], "null");
    assert_eq!(compared(&handler_log(&lab)), 0, "{}", handler_log(&lab));
    assert_eq!(fs::read_to_string(&record).unwrap(), text);

    // Without the record, the lists are compared once (and said so), then known again.
    fs::remove_file(&record).unwrap();
    synced(&lab, "sync fedora");
    assert_eq!(last_runs(&lab)[0]["kind"], "null");
    assert_eq!(compared(&handler_log(&lab)), 1);
    assert_eq!(fs::read_to_string(&record).unwrap(), text);
    synced(&lab, "sync fedora");
    assert_eq!(last_runs(&lab)[0]["kind"], "null");
    assert_eq!(compared(&handler_log(&lab)), 1, "{}", handler_log(&lab));

    // The fetched list rewritten in place, with its size and mtime kept (rsync's quick check
    // then keeps it): the same inode, but another ctime, so it is compared and planned.
    let mtime = fs::metadata(&fetched).unwrap().modified().unwrap();
    let planted = bump_readme(&fs::read(&fetched).unwrap(), 1);
    let f = fs::OpenOptions::new().write(true).open(&fetched).unwrap();
    std::io::Write::write_all(&mut &f, &planted).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let before = ino(&fetched);
    synced(&lab, "sync fedora");
    assert_eq!(ino(&fetched), before, "rsync kept the planted list");
    assert_eq!(fs::read(&fetched).unwrap(), planted);
    assert_eq!(
        last_runs(&lab)[0]["kind"],
        "filelist",
        "{}",
        last_runs(&lab)
    );

    // Replaced by another file of the same size and mtime (another inode): planned too.
    let other = state.join("planted");
    fs::write(&other, bump_readme(&planted, 1)).unwrap();
    fs::File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    lab.give_to_account(&other).unwrap();
    fs::rename(&other, &fetched).unwrap();
    synced(&lab, "sync fedora");
    assert_eq!(
        last_runs(&lab)[0]["kind"],
        "filelist",
        "{}",
        last_runs(&lab)
    );
    assert_eq!(compared(&handler_log(&lab)), 1);
}
