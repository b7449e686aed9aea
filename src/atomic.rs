//! The one way mirrorpush replaces a file: a temp file beside it, filled, flushed (and fsynced
//! where a crash must not leave an empty file), renamed over the final name. Readers see the old
//! file or the new one, never half of one.
//!
//! Everything happens inside an opened directory (`openat`/`renameat`/`unlinkat`): the temp file
//! is created exclusively and never through a symlink someone planted under its name, and the
//! rename replaces a symlink at the final name rather than following it. The handler's state
//! files, the trace and list files it puts into the mirror tree, the listener's state files,
//! the file lists the master generates and the report page all go through here.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

/// A file being written under a temporary name; [`AtomicFile::commit`] puts it in place.
/// Dropped uncommitted, it removes the temporary file.
pub(crate) struct AtomicFile {
    dir: OwnedFd,
    tmp: OsString,
    name: OsString,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// The temporary name of `name`: hidden, per process, and recognisable
    /// ([`AtomicFile::is_temp_name`]), so concurrent writers never share one.
    pub(crate) fn temp_name(name: &OsStr) -> OsString {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.tmp", std::process::id()));
        tmp
    }

    /// Whether `name` is a temporary name of a file called `final_name`.
    #[cfg(feature = "master")]
    pub(crate) fn is_temp_name(name: &[u8], final_name: &[u8]) -> bool {
        name.strip_prefix(b".")
            .and_then(|r| r.strip_prefix(final_name))
            .and_then(|r| r.strip_prefix(b"."))
            .and_then(|r| r.strip_suffix(b".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit))
    }

    /// Starts replacing `path` (its parent directory is opened without following a symlink at
    /// its last component).
    pub(crate) fn create(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        Self::create_in(path, mode, OFlags::NOFOLLOW)
    }

    /// As [`AtomicFile::create`], for a path a person named on the command line (the report
    /// page): symlinks on the way to its directory are theirs to choose.
    #[cfg(feature = "master")]
    pub(crate) fn create_following(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        Self::create_in(path, mode, OFlags::empty())
    }

    fn create_in(path: &Path, mode: u32, follow: OFlags) -> io::Result<AtomicFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = rfs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | follow,
            Mode::empty(),
        )?;
        Self::create_at(dir, name, mode)
    }

    /// Starts replacing `name` inside the opened directory `dir`.
    pub(crate) fn create_at(dir: OwnedFd, name: &OsStr, mode: u32) -> io::Result<AtomicFile> {
        if name.is_empty() || name.as_bytes().contains(&b'/') {
            return Err(io::Error::other("not a file name"));
        }
        let tmp = Self::temp_name(name);
        // A temp file of ours that a killed run left behind.
        let _ = rfs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
        let fd = rfs::openat(
            &dir,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        // The umask must not widen or narrow what the caller asked for.
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Ok(AtomicFile {
            dir,
            tmp,
            name: name.to_owned(),
            out: Some(BufWriter::with_capacity(1 << 16, File::from(fd))),
        })
    }

    /// Flushes what was written and gives the file `time` as its mtime; written last, since
    /// a later write would move the mtime again.
    pub(crate) fn set_modified(&mut self, time: std::time::SystemTime) -> io::Result<()> {
        let out = self.out.as_mut().expect("open");
        out.flush()?;
        out.get_ref().set_modified(time)
    }

    /// Flushes, optionally fsyncs, and renames over the final name.
    pub(crate) fn commit(mut self, sync: bool) -> io::Result<()> {
        let out = self.out.take().expect("not committed twice");
        let result = (|| {
            let file = out.into_inner().map_err(|e| e.into_error())?;
            if sync {
                file.sync_all()?;
            }
            drop(file);
            Ok(rfs::renameat(
                &self.dir,
                self.tmp.as_os_str(),
                &self.dir,
                self.name.as_os_str(),
            )?)
        })();
        if result.is_err() {
            let _ = rfs::unlinkat(&self.dir, self.tmp.as_os_str(), AtFlags::empty());
        }
        result
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("open").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().expect("open").write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("open").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = rfs::unlinkat(&self.dir, self.tmp.as_os_str(), AtFlags::empty());
        }
    }
}

/// Replaces `path` with `bytes`, fsynced (mode 0640: the handler's state files).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path, 0o640)?;
    f.write_all(bytes)?;
    f.commit(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn replaces_whole_and_never_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        let path = t.path().join("status.json");
        // A symlink planted at the temp name and at the final name: neither is followed.
        symlink(
            &target,
            t.path()
                .join(AtomicFile::temp_name(OsStr::new("status.json"))),
        )
        .unwrap();
        symlink(&target, &path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("list");
        std::fs::write(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path, 0o644).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    #[cfg(feature = "master")]
    fn temp_names_are_recognised() {
        let name = AtomicFile::temp_name(OsStr::new("list"));
        assert!(AtomicFile::is_temp_name(name.as_bytes(), b"list"));
        assert!(!AtomicFile::is_temp_name(b".list..tmp", b"list"));
        assert!(!AtomicFile::is_temp_name(b"list", b"list"));
    }
}
