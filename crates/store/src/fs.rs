//! File system steps shared by the key file and the store: private
//! directories and files, crash-safe replacement, and cross-process locks.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The directory holding `path`; a bare file name lives in the current one.
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` and any missing ancestors, readable by the owner only.
/// Directories that already exist keep their mode: they may be shared on
/// purpose, and the files inside are private anyway.
pub(crate) fn create_private_dirs(dir: &Path) -> Result<(), StoreError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| StoreError::io("create directory", dir, e))
}

/// Opens options that create a file readable and writable by the owner only.
/// The mode is applied at creation, so there is no moment at which the file
/// is open to others.
pub(crate) fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes the directory entry changes inside `dir` (creations, renames)
/// durable. Without this a crash right after a rename can lose the new name.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("flush directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `path` with `contents` so that a reader, or the file after a
/// crash, shows either the old contents or the new, never a mixture.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));

    let written = private_file_options()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(StoreError::io("write temporary file", temp, e));
    }
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(StoreError::io("replace", path, e));
    }
    sync_dir(&dir)
}

/// Takes an exclusive lock on `lock_path`, creating it if need be, and holds
/// it until the returned file is dropped. The lock file is never deleted:
/// deleting it would let two processes lock two different files.
pub(crate) fn lock_exclusive(lock_path: &Path) -> Result<File, StoreError> {
    let file = private_file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(|e| StoreError::io("open lock file", lock_path, e))?;
    file.lock()
        .map_err(|e| StoreError::io("lock", lock_path, e))?;
    Ok(file)
}

/// Reads `path`, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}
