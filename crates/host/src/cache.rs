//! The cache of precompiled components. Entries are keyed by the plugin
//! file's sha256 and the engine's compatibility hash, so a changed plugin or
//! an upgraded host never loads stale machine code, and a second run of the
//! same plugin compiles nothing.
//!
//! Deserializing machine code is arbitrary code execution, so nothing in
//! the cache is loaded on the strength of where it lies:
//!
//! - the folder must be this user's, not a symbolic link, and writable by
//!   nobody else; one that is not is refused (the host does not change its
//!   mode and go on, since whatever is in it may already be someone
//!   else's);
//! - an entry is opened without following links (`O_NOFOLLOW`) and must be
//!   a regular file of this user's that nobody else can write;
//! - each entry starts with an HMAC-SHA256 tag over its name and its bytes,
//!   keyed with a 32-byte key only the host holds (a random key file, mode
//!   0600, in the state folder). An entry whose tag does not verify (planted,
//!   altered, written by another keycycle's key, restored from a shared CI
//!   cache) is removed and the plugin compiled again; it is never
//!   deserialized.
//!
//! The key is a file of its own, not derived from the master key, because
//! plugins load in commands that never open the store (`plugins list`,
//! `doctor`) and with no `KEYCYCLE_MASTER_KEY`; and it lives in the state
//! folder, not beside the cache, so a cache folder copied from elsewhere
//! (a CI cache, a backup) brings no key that makes its entries load.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::HostError;

/// Bytes of the HMAC-SHA256 tag at the start of each entry.
const TAG_LEN: usize = 32;
/// Bytes of the cache key.
const KEY_LEN: usize = 32;
/// Bound into every tag, so a tag made for anything else never fits.
const TAG_CONTEXT: &[u8] = b"keycycle plugin cache v1\0";

pub(crate) struct Cache {
    dir: PathBuf,
    engine_key: String,
    key: [u8; KEY_LEN],
}

impl Cache {
    pub fn open(dir: &Path, key_file: &Path, engine: &Engine) -> Result<Cache, HostError> {
        let refuse = |path: &Path, message: String| HostError::Cache {
            path: path.to_owned(),
            message,
        };
        create_private_dir(dir).map_err(|e| refuse(dir, e.to_string()))?;
        let key = cache_key(key_file).map_err(|e| refuse(key_file, e.to_string()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Cache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
            key,
        })
    }

    fn name(&self, sha256: &str) -> String {
        format!("{sha256}-{}.cwasm", self.engine_key)
    }

    fn mac(&self, name: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes a key of any size");
        mac.update(TAG_CONTEXT);
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac
    }

    /// The compiled component, from the cache when an authentic entry is
    /// there. The second value is true when it had to be compiled now.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> Result<(Component, bool), wasmtime::Error> {
        let name = self.name(sha256);
        let path = self.dir.join(&name);
        match self.read_authentic(&name, &path) {
            Ok(Some(entry)) => {
                // SAFETY: `entry` carries a valid HMAC under a key only this
                // host holds, over the entry's name (the sha256 of the
                // source and this engine's compatibility hash) and the
                // bytes after the tag: they are exactly what `Component::serialize` of this
                // engine configuration wrote for this source. It was read
                // through a descriptor opened without following links,
                // from a regular file of this user's in a folder only this
                // user can write, and it is deserialized from memory, so
                // the file cannot change between the check and the load.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(engine, &entry[TAG_LEN..]) };
                match loaded {
                    Ok(component) => return Ok((component, false)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(path = %path.display(), "discarding a cache entry: {why}; the plugin is compiled again");
                let _ = fs::remove_file(&path);
            }
        }
        let component = Component::from_binary(engine, wasm)?;
        if let Err(e) = self.store(&name, &path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write plugin cache entry");
        }
        Ok((component, true))
    }

    /// The bytes of an entry whose tag verifies, tag first (the
    /// serialized component starts at `TAG_LEN`: not copied out, since
    /// wasmtime copies it into its own mapping anyway); `None` when there
    /// is no entry, an error saying why one is not trusted.
    fn read_authentic(&self, name: &str, path: &Path) -> Result<Option<Vec<u8>>, String> {
        let mut file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err("it is a symbolic link".into());
            }
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.file_type().is_file() {
            return Err("it is not a regular file".into());
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!("it belongs to uid {}", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "it is writable by other users (mode {:04o})",
                meta.mode() & 0o7777
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() < TAG_LEN {
            return Err("it is too short to carry an authentication tag".into());
        }
        let (tag, code) = bytes.split_at(TAG_LEN);
        let mut mac = self.mac(name);
        mac.update(code);
        mac.verify_slice(tag)
            .map_err(|_| "its authentication tag does not verify (this host did not write it)")?;
        Ok(Some(bytes))
    }

    fn store(
        &self,
        name: &str,
        path: &Path,
        component: &Component,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let code = component.serialize()?;
        let mut mac = self.mac(name);
        mac.update(&code);
        let tag = mac.finalize().into_bytes();
        let (tmp_path, mut tmp) = tempfile_in(&self.dir)?;
        let written = (|| {
            tmp.write_all(&tag)?;
            tmp.write_all(&code)?;
            tmp.sync_all()?;
            // Replaces whatever is at `path`, a link included, without
            // following it.
            fs::rename(&tmp_path, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp_path);
        }
        Ok(written?)
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = format!(".tmp-{}-{:x}", std::process::id(), rand::random::<u64>());
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    Ok((path, file))
}

/// Creates the cache folder (0700) when it is missing; refuses one that is
/// a link, not a folder, another user's, or writable by others.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    check_private_dir(dir, "cache directory")
}

/// A folder that only this user can write, reached without following a
/// link at its last component.
fn check_private_dir(dir: &Path, what: &str) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    let shown = dir.display();
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{what} {shown} is a symbolic link; refusing to load machine code through it \
             (point cache_dir at the real folder)"
        )));
    }
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{what} {shown} is not a folder; point cache_dir elsewhere or remove it"
        )));
    }
    // Ownership first: another user's folder is neither used nor changed.
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{what} {shown} belongs to another user; refusing to load machine code from it"
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{what} {shown} is writable by other users (mode {:04o}), who could have planted \
             machine code in it; refusing to use it. Remove it (`rm -r {shown}`; it is only a \
             cache) or, if you trust what is in it, `chmod 700 {shown}`",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads the cache key, creating it (32 random bytes, mode 0600, in a 0700
/// folder) when it does not exist. A key file that is a link, another
/// user's, or readable or writable by others is refused.
fn cache_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let shown = path.display();
    if !path.exists() {
        // Written whole under a name of its own, then linked into place:
        // another process starting at the same moment either finds no key
        // or the whole key, never a file still being written. The link
        // fails if someone else's key got there first, and theirs is used.
        let key: [u8; KEY_LEN] = rand::random();
        let temp = path.with_extension(format!(
            "new-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&key)?;
                file.sync_all()
            });
        let linked = written.and_then(|()| fs::hard_link(&temp, path));
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => return Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!(
                    "the plugin cache key {shown} is a symbolic link; refusing it"
                ))
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o077 != 0
    {
        return Err(std::io::Error::other(format!(
            "the plugin cache key {shown} must be a file of yours that nobody else can read or \
             write (mode 0600); remove it and the cache, and the next load makes new ones"
        )));
    }
    let mut key = [0u8; KEY_LEN];
    let mut rest = Vec::new();
    file.read_exact(&mut key)
        .and_then(|()| file.read_to_end(&mut rest))
        .map_err(|_| {
            std::io::Error::other(format!("the plugin cache key {shown} is not 32 bytes"))
        })?;
    if !rest.is_empty() {
        return Err(std::io::Error::other(format!(
            "the plugin cache key {shown} is not 32 bytes"
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    const WAT: &str = "(component)";

    fn setup() -> (tempfile::TempDir, Engine, Cache) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let engine = engine();
        let cache = Cache::open(
            &tmp.path().join("cache"),
            &tmp.path().join("state/cache.key"),
            &engine,
        )
        .unwrap();
        (tmp, engine, cache)
    }

    fn wasm() -> Vec<u8> {
        wat::parse_str(WAT).unwrap()
    }

    #[test]
    fn cache_entries_are_authenticated_and_a_second_load_compiles_nothing() {
        let (_tmp, engine, cache) = setup();
        let (_, compiled) = cache.load_or_compile(&engine, "ab", &wasm()).unwrap();
        assert!(compiled);
        let (_, compiled) = cache.load_or_compile(&engine, "ab", &wasm()).unwrap();
        assert!(!compiled, "an authentic entry is loaded");
    }

    #[test]
    fn cache_entry_with_a_bad_tag_is_compiled_again() {
        let (_tmp, engine, cache) = setup();
        cache.load_or_compile(&engine, "ab", &wasm()).unwrap();
        let path = cache.dir.join(cache.name("ab"));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, compiled) = cache.load_or_compile(&engine, "ab", &wasm()).unwrap();
        assert!(compiled, "an altered entry is not loaded");
        assert_ne!(fs::read(&path).unwrap(), bytes, "and it is replaced");
    }

    #[test]
    fn cache_entry_under_another_name_does_not_verify() {
        let (_tmp, engine, cache) = setup();
        cache.load_or_compile(&engine, "ab", &wasm()).unwrap();
        fs::copy(
            cache.dir.join(cache.name("ab")),
            cache.dir.join(cache.name("cd")),
        )
        .unwrap();
        let (_, compiled) = cache.load_or_compile(&engine, "cd", &wasm()).unwrap();
        assert!(compiled, "a tag is bound to the entry's name");
    }

    #[test]
    fn cache_key_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, engine, _cache) = setup();
        let key = tmp.path().join("state/cache.key");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        let first = fs::read(&key).unwrap();
        Cache::open(&tmp.path().join("cache"), &key, &engine).unwrap();
        assert_eq!(fs::read(&key).unwrap(), first, "an existing key is kept");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Cache::open(&tmp.path().join("cache"), &key, &engine).is_err());
    }

    /// Processes that start together (test binaries sharing one cache)
    /// all get the one key, never a file still being written.
    #[test]
    fn a_key_made_by_many_at_once_is_one_whole_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("state/cache.key");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (key, barrier) = (key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache_key(&key).unwrap()
                })
            })
            .collect();
        let keys: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "one key for all");
        assert_eq!(fs::read(&key).unwrap(), keys[0]);
        let left: Vec<_> = fs::read_dir(tmp.path().join("state")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }

    #[test]
    fn cache_folder_writable_by_others_or_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, engine, _cache) = setup();
        let key = tmp.path().join("state/cache.key");
        let dir = tmp.path().join("cache");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Cache::open(&dir, &key, &engine).err().unwrap().to_string();
        assert!(err.contains("writable by other users"), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = Cache::open(&link, &key, &engine).err().unwrap().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
