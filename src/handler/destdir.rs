//! The mirror tree, opened by file descriptor. rsync is started inside the directory that was
//! checked (its working directory is the opened fd, its destination `.`), so no path is looked up
//! again between the check and the write: a component swapped for a symlink after the check
//! cannot redirect the sync out of `dest`. Removals walk the tree the same way and never follow
//! a symlink.
//!
//! Rules for every directory at or below `dest` that a sync enters: it is a real directory (not
//! a symlink, not a file), owned by the mirror account (or root), and writable by nobody else
//! (no group or world write bit), so no other local user can swap what lies beneath it.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::atomic::AtomicFile;
use crate::request::RelDir;

/// Why a directory may not be synced into.
#[derive(Debug)]
pub enum DirError {
    /// A component is a symlink (the path under dest, up to it).
    Symlink(String),
    /// A component is not a directory.
    NotADirectory(String),
    /// A component is writable by others than the mirror account, or owned by another user.
    Unsafe(String),
    /// Anything else (missing dest, permissions, I/O).
    Io(String, io::Error),
}

impl DirError {
    /// Refusals (77) as opposed to temporary failures (75).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, DirError::Io(..))
    }
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirError::Symlink(p) => write!(f, "'{p}' is a symlink on this mirror"),
            DirError::NotADirectory(p) => write!(f, "'{p}' is not a directory on this mirror"),
            DirError::Unsafe(why) => f.write_str(why),
            DirError::Io(p, e) => write!(f, "{p}: {e}"),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens `dest` itself (the admin's path: symlinks in it are the admin's choice) and checks it
/// for the account running now.
pub fn open_dest(dest: &Path) -> Result<OwnedFd, DirError> {
    open_dest_for(dest, rustix::process::geteuid().as_raw())
}

/// As [`open_dest`], for the account `uid` (root's read-only `check` names the account).
pub fn open_dest_for(dest: &Path, uid: u32) -> Result<OwnedFd, DirError> {
    let fd = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DirError::Io(dest.display().to_string(), e.into()))?;
    check_safe_for(&fd, &dest.display().to_string(), uid)?;
    Ok(fd)
}

fn check_safe(fd: &OwnedFd, shown: &str) -> Result<(), DirError> {
    check_safe_for(fd, shown, rustix::process::geteuid().as_raw())
}

/// The tree may be owned by the account, or by root (an admin's pre-made parent dir), and
/// written by nobody else.
fn check_safe_for(fd: &OwnedFd, shown: &str, account: u32) -> Result<(), DirError> {
    let st = rfs::fstat(fd).map_err(|e| DirError::Io(shown.to_owned(), e.into()))?;
    if st.st_uid != 0 && st.st_uid != account {
        return Err(DirError::Unsafe(format!(
            "'{shown}' is owned by uid {}, not by this mirror's account",
            st.st_uid
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(DirError::Unsafe(format!(
            "'{shown}' is writable by others than this mirror's account (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Opens `name` in `parent` as a directory without following a symlink, classifying failures.
fn open_component(parent: &OwnedFd, name: &str, shown: &str) -> Result<OwnedFd, DirError> {
    match rfs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP): tell them apart.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rfs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                    Err(DirError::Symlink(shown.to_owned()))
                }
                _ => Err(DirError::NotADirectory(shown.to_owned())),
            }
        }
        Err(e) => Err(DirError::Io(shown.to_owned(), e.into())),
    }
}

/// The directories opened for a dir sync, outermost first, and which of them this call created.
pub struct OpenedDir {
    /// The innermost directory: rsync's working directory.
    pub fd: OwnedFd,
    /// Components created here (relative paths), so they can be removed again if the dir turns
    /// out not to exist upstream.
    pub created: Vec<String>,
}

/// Opens `dest/dir` component by component, never following a symlink; with `create`, missing
/// components are made (0755). Every component must pass the ownership and mode rules.
pub fn open_dir(dest_fd: &OwnedFd, dir: &RelDir, create: bool) -> Result<OpenedDir, DirError> {
    let mut current = dest_fd
        .try_clone()
        .map_err(|e| DirError::Io(".".into(), e))?;
    let mut shown = String::new();
    let mut created = Vec::new();
    for c in dir.components() {
        if !shown.is_empty() {
            shown.push('/');
        }
        shown.push_str(c);
        let next = match open_component(&current, c, &shown) {
            Err(DirError::Io(_, e)) if create && e.kind() == io::ErrorKind::NotFound => {
                match rfs::mkdirat(&current, c, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(DirError::Io(shown.clone(), e.into())),
                }
                created.push(shown.clone());
                open_component(&current, c, &shown)?
            }
            other => other?,
        };
        check_safe(&next, &shown)?;
        current = next;
    }
    Ok(OpenedDir {
        fd: current,
        created,
    })
}

/// Checks `dest/dir` without creating anything: Ok when every existing component passes (a
/// missing tail is fine, a sync creates it).
pub fn check_dir(dest: &Path, dir: &RelDir) -> Result<(), DirError> {
    match open_dir(&open_dest(dest)?, dir, false) {
        Err(DirError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map(drop),
    }
}

/// The opened parent directory of `rel` (checked as [`open_dir`] checks, created when
/// `create`) and `rel`'s last component.
fn open_parent_dir<'r>(
    dest_fd: &OwnedFd,
    rel: &'r RelDir,
    create: bool,
) -> Result<(OwnedFd, &'r str), DirError> {
    let s = rel.as_str();
    match s.rsplit_once('/') {
        None => Ok((
            dest_fd
                .try_clone()
                .map_err(|e| DirError::Io(".".into(), e))?,
            s,
        )),
        Some((parent, leaf)) => {
            let parent = RelDir::parse(parent)
                .map_err(|_| DirError::Io(parent.to_owned(), io::ErrorKind::InvalidInput.into()))?;
            Ok((open_dir(dest_fd, &parent, create)?.fd, leaf))
        }
    }
}

/// Removes `name` in `parent` (a file, symlink or whole directory tree) without following any
/// symlink: directories are entered by fd with O_NOFOLLOW. Missing is fine. Returns how many
/// entries were removed.
pub fn remove_at(parent: &OwnedFd, name: &OsStr) -> io::Result<u64> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(1),
        Err(rustix::io::Errno::NOENT) => return Ok(0),
        // EISDIR on Linux for a directory (EPERM on some systems).
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = match rfs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    let names = list_names(&dir)?;
    for child in names {
        removed += remove_at(&dir, &child)?;
    }
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(removed + 1),
        Err(rustix::io::Errno::NOENT) => Ok(removed),
        Err(e) => Err(e.into()),
    }
}

/// Whether relative `path` under `dest_fd` is a directory here: one `statat` that does not
/// follow a final symlink, a cheap filter before [`count_path`] (which never follows any).
pub fn is_dir_at(dest_fd: &OwnedFd, path: &[u8]) -> bool {
    rfs::statat(dest_fd, OsStr::from_bytes(path), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
}

/// How many entries removing `name` in `parent` would remove, counting no further than
/// `limit + 1`; symlinks are counted, never followed.
pub fn count_at(parent: &OwnedFd, name: &OsStr, limit: u64) -> io::Result<u64> {
    let dir = match rfs::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(0),
        // A file or a symlink: one entry.
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => return Ok(1),
        Err(e) => return Err(e.into()),
    };
    let mut n = 1;
    for child in list_names(&dir)? {
        n += count_at(&dir, &child, limit.saturating_sub(n))?;
        if n > limit {
            break;
        }
    }
    Ok(n)
}

/// Opens the parent of relative `path` under `dest_fd` without following symlinks; `None` when
/// a component is missing, a symlink or not a directory.
pub fn open_parent<'p>(
    dest_fd: &OwnedFd,
    path: &'p [u8],
) -> io::Result<Option<(OwnedFd, &'p [u8])>> {
    let mut parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let Some(leaf) = parts.pop() else {
        return Ok(None);
    };
    if leaf.is_empty() || leaf == b"." || leaf == b".." {
        return Ok(None);
    }
    let mut current = dest_fd.try_clone()?;
    for p in parts {
        if p.is_empty() || p == b"." || p == b".." {
            return Ok(None);
        }
        current = match rfs::openat(&current, OsStr::from_bytes(p), dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(Some((current, leaf)))
}

/// The names in a directory, without `.` and `..`.
fn list_names(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir.as_fd())? {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            out.push(OsStr::from_bytes(bytes).to_owned());
        }
    }
    Ok(out)
}

/// Removes the entry at relative `path` under `dest_fd` (components `/`-separated, as in a file
/// list), never following a symlink on the way: if a parent component is missing, a symlink or
/// not a directory, nothing is removed (it cannot be inside dest as the path says).
pub fn remove_path(dest_fd: &OwnedFd, path: &[u8]) -> io::Result<u64> {
    match open_parent(dest_fd, path)? {
        Some((parent, leaf)) => remove_at(&parent, OsStr::from_bytes(leaf)),
        None => Ok(0),
    }
}

/// How many entries [`remove_path`] would remove (no further than `limit + 1`).
pub fn count_path(dest_fd: &OwnedFd, path: &[u8], limit: u64) -> io::Result<u64> {
    match open_parent(dest_fd, path)? {
        Some((parent, leaf)) => count_at(&parent, OsStr::from_bytes(leaf), limit),
        None => Ok(0),
    }
}

/// Removes the directories a dir sync created (innermost first) if they are empty.
pub fn remove_created(dest_fd: &OwnedFd, created: &[String]) {
    for rel in created.iter().rev() {
        let Ok(rel) = RelDir::parse(rel) else {
            continue;
        };
        if let Ok((parent, name)) = open_parent_dir(dest_fd, &rel, false) {
            let _ = rfs::unlinkat(&parent, name, AtFlags::REMOVEDIR);
        }
    }
}

/// Writes `bytes` to `rel` (a `/`-separated path under `dest_fd`) by temp file and rename,
/// creating missing parent directories, never following a symlink. For the trace files.
pub fn write_file_at(dest_fd: &OwnedFd, rel: &RelDir, bytes: &[u8]) -> io::Result<()> {
    replace_file_at(dest_fd, rel, |file| file.write_all(bytes))
}

/// Copies the file `src` to `rel` under `dest_fd` (with `src`'s modification time) by temp
/// file and rename, as [`write_file_at`]: a mirror publishes the file list it applied, for the
/// mirrors that pull from it.
pub fn install_file_at(dest_fd: &OwnedFd, rel: &RelDir, src: &Path) -> io::Result<()> {
    let mut from = std::fs::File::open(src)?;
    let modified = from.metadata()?.modified()?;
    replace_file_at(dest_fd, rel, |to| {
        std::io::copy(&mut from, to)?;
        to.set_modified(modified)
    })
}

/// The one way the handler puts a file into the tree: the crate's atomic writer (0644, created
/// exclusively, never through a symlink) in the opened parent directory, filled by `fill`,
/// synced, renamed over `rel`; on any error the temp file is removed.
fn replace_file_at(
    dest_fd: &OwnedFd,
    rel: &RelDir,
    fill: impl FnOnce(&mut AtomicFile) -> io::Result<()>,
) -> io::Result<()> {
    let comps: Vec<&str> = rel.components().collect();
    let (leaf, parents) = comps.split_last().ok_or(io::ErrorKind::InvalidInput)?;
    let dir = if parents.is_empty() {
        dest_fd.try_clone()?
    } else {
        let parent = RelDir::parse(&parents.join("/")).map_err(|_| io::ErrorKind::InvalidInput)?;
        open_dir(dest_fd, &parent, true)
            .map_err(|e| io::Error::other(e.to_string()))?
            .fd
    };
    let mut file = AtomicFile::create_at(dir, OsStr::new(leaf), 0o644)?;
    fill(&mut file)?;
    file.commit(true)
}

/// Reads at most `limit` bytes of the regular file `rel` under `dest_fd`, without following a
/// symlink anywhere on the way; `None` when it is missing or not a plain file.
pub fn read_file_at(dest_fd: &OwnedFd, rel: &RelDir, limit: usize) -> Option<Vec<u8>> {
    let (dir, leaf) = open_parent_dir(dest_fd, rel, false).ok()?;
    let fd = rfs::openat(
        &dir,
        leaf,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    if !rfs::fstat(&fd).is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode).is_file()) {
        return None;
    }
    let mut buf = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), limit as u64),
        &mut buf,
    )
    .ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn d(s: &str) -> RelDir {
        RelDir::parse(s).unwrap()
    }

    #[test]
    fn opens_and_creates_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        fs::create_dir(&dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
        let fd = open_dest(&dest).unwrap();
        let opened = open_dir(&fd, &d("a/b/c"), true).unwrap();
        assert_eq!(opened.created, ["a", "a/b", "a/b/c"]);
        assert!(dest.join("a/b/c").is_dir());
        fs::create_dir(t.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), dest.join("a/l")).unwrap();
        fs::write(dest.join("a/f"), "x").unwrap();
        assert!(matches!(
            open_dir(&fd, &d("a/l/x"), true),
            Err(DirError::Symlink(p)) if p == "a/l"
        ));
        assert!(matches!(
            open_dir(&fd, &d("a/f/x"), true),
            Err(DirError::NotADirectory(p)) if p == "a/f"
        ));
        assert!(!t.path().join("outside/x").exists());
        assert!(check_dir(&dest, &d("a/missing/x")).is_ok());
        assert!(check_dir(&dest, &d("a/l")).is_err());
    }

    #[test]
    fn refuses_dirs_writable_by_others() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("open/x")).unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(t.path().join("open"), fs::Permissions::from_mode(0o777)).unwrap();
        let fd = open_dest(t.path()).unwrap();
        let e = open_dir(&fd, &d("open/x"), false).err().unwrap();
        assert!(matches!(e, DirError::Unsafe(_)), "{e}");
        assert!(e.to_string().contains("writable by others"), "{e}");
    }

    #[test]
    fn removal_never_leaves_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        fs::create_dir_all(dest.join("gone/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        fs::write(dest.join("gone/sub/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("gone/link")).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("l")).unwrap();
        let fd = rfs::open(&dest, dir_flags(), Mode::empty()).unwrap();
        // Through a symlink: nothing happens.
        assert_eq!(remove_path(&fd, b"l/precious").unwrap(), 0);
        assert_eq!(remove_path(&fd, b"gone/link/precious").unwrap(), 0);
        assert_eq!(remove_path(&fd, b"../outside/precious").unwrap(), 0);
        // A tree holding a symlink to outside: the link goes, the target stays.
        assert_eq!(count_path(&fd, b"gone", 100).unwrap(), 4);
        assert_eq!(count_path(&fd, b"gone", 1).unwrap(), 2);
        assert_eq!(remove_path(&fd, b"gone").unwrap(), 4);
        assert!(!dest.join("gone").exists());
        assert!(outside.join("precious").exists());
        assert_eq!(remove_path(&fd, b"missing/x").unwrap(), 0);
    }

    #[test]
    fn writes_and_reads_files_by_fd() {
        let t = tempfile::tempdir().unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let fd = open_dest(t.path()).unwrap();
        write_file_at(&fd, &d("project/trace/m"), b"one\n").unwrap();
        write_file_at(&fd, &d("project/trace/m"), b"two\n").unwrap();
        assert_eq!(
            fs::read(t.path().join("project/trace/m")).unwrap(),
            b"two\n"
        );
        assert_eq!(
            read_file_at(&fd, &d("project/trace/m"), 2).unwrap(),
            b"tw".to_vec()
        );
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("project/trace/l")).unwrap();
        assert!(read_file_at(&fd, &d("project/trace/l"), 100).is_none());
        assert_eq!(
            fs::read_dir(t.path().join("project/trace"))
                .unwrap()
                .count(),
            2,
            "no temp file left"
        );
    }
}
