//! The rule every state dir of mirrorpush's mirror side follows (the handler's, the listener's):
//! a directory of the account that nobody else can write in. Whoever can write there could
//! forge what the program trusts from one step to the next: the handler's queue, baseline and
//! plan between two stages of a run, the listener's record of triggers already seen.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A state dir that is not private, said in words an admin can act on.
#[derive(Debug)]
pub(crate) struct NotPrivate(pub(crate) String);

impl std::fmt::Display for NotPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotPrivate {}

/// Whether `dir` (with its metadata `meta`) is a directory of the account `uid` that nobody
/// else can write in.
pub(crate) fn check(dir: &Path, meta: &Metadata, uid: u32) -> Result<(), NotPrivate> {
    if !meta.is_dir() {
        return Err(NotPrivate(format!("{} is not a directory", dir.display())));
    }
    if meta.uid() != uid {
        return Err(NotPrivate(format!(
            "{} is owned by uid {}, not by this mirror's account (uid {uid})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(NotPrivate(format!(
            "{} is writable by others than this mirror's account (mode {:o}): chmod go-w it",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Whether an I/O error carries a [`NotPrivate`].
pub(crate) fn is_not_private(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotPrivate>())
}
