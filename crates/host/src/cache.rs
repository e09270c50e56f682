//! The cache of precompiled components. Entries are keyed by the plugin
//! file's sha256 and the engine's compatibility hash, so a changed plugin or
//! an upgraded host never loads stale machine code, and a second run of the
//! same plugin compiles nothing.
//!
//! Deserializing machine code that someone else wrote is arbitrary code
//! execution, so the cache lives in a directory the host creates for itself
//! with mode 0700, and entries are written atomically.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::HostError;

pub(crate) struct Cache {
    dir: PathBuf,
    engine_key: String,
}

impl Cache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Cache, HostError> {
        create_private_dir(dir).map_err(|e| HostError::Cache {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Cache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component, from the cache when present. The second
    /// value is true when it had to be compiled now.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> Result<(Component, bool), wasmtime::Error> {
        let path = self.entry(sha256);
        if path.exists() && !trusted_entry(&path) {
            tracing::warn!(path = %path.display(), "discarding a cache entry that is not this user's private file");
            let _ = fs::remove_file(&path);
        }
        if path.exists() {
            // SAFETY: the file is this user's, in a directory only this
            // user can write (checked when the cache was opened and above),
            // was written by `Component::serialize` of this same engine
            // configuration (the compatibility hash is in its name), and is
            // named after the sha256 of the source it was compiled from.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, &path) };
            match loaded {
                Ok(component) => return Ok((component, false)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write plugin cache entry");
        }
        Ok((component, true))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), Box<dyn std::error::Error>> {
        let bytes = component.serialize()?;
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(&bytes)?;
        tmp.1.sync_all()?;
        fs::rename(&tmp.0, path)?;
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!(".tmp-{}-{:x}", std::process::id(), rand_suffix());
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    // Ownership first: another user's folder is neither used nor changed.
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "cache directory {} belongs to another user; refusing to load machine code from it",
            dir.display()
        )));
    }
    // A cache others could write into may hold their machine code: none of
    // its entries is trusted. They are removed (they are only a cache, and
    // are compiled again) before the folder is made private again.
    if meta.mode() & 0o022 != 0 {
        tracing::warn!(dir = %dir.display(), "the plugin cache was writable by other users; its entries are discarded and it is made private (0700)");
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether a cache entry may be loaded: a regular file (not a link) of
/// this user's that nobody else can write.
fn trusted_entry(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    meta.file_type().is_file()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o022 == 0
}
