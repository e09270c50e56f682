//! The encrypted secrets file: named secret values sealed with
//! XChaCha20-Poly1305 under the master key, replaced atomically on every
//! change and guarded by a lock so concurrent processes keep each other's
//! updates.
//!
//! The file is JSON so an operator can see which secrets exist and when
//! they changed without any key:
//!
//! ```json
//! {
//!   "format": "keycycle-secrets",
//!   "version": 1,
//!   "key_check": { "nonce": "…", "ciphertext": "…" },
//!   "secrets": [
//!     { "name": "gitlab/token", "created_at": "2025-01-01T00:00:00Z",
//!       "updated_at": "2025-01-01T00:00:00Z", "nonce": "…", "ciphertext": "…" }
//!   ]
//! }
//! ```
//!
//! Each ciphertext is bound to its secret's name (the name is the associated
//! data), so moving ciphertexts between entries makes them fail to decrypt
//! rather than silently hand one secret out under another's name.
//!
//! Damage is confined to the entry it hits. An entry whose fields, times,
//! base64 or authentication are wrong is kept as a *damaged* entry: it is
//! listed with what is wrong, reading it fails naming it, `set` replaces it
//! and `remove` deletes it, while every other secret stays usable. A
//! rewrite of the file keeps a damaged entry it did not touch exactly as it
//! was read, so no data is dropped behind the operator's back. Damage to
//! the file as a whole (not JSON, another format, an entry without a usable
//! name, a bad key check) still fails the whole store.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, Payload};
use keycycle_secret::SecretValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{EntryDamage, StoreError};
use crate::fs::{create_private_dirs, lock_exclusive, parent_dir, read_if_exists, write_atomic};
use crate::key::MasterKey;

/// The file format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The longest secret name accepted, in characters.
pub const MAX_NAME_LEN: usize = 128;

const FORMAT_NAME: &str = "keycycle-secrets";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Secret names cannot contain ':', so this associated data can never be a
/// secret's, and the key check cannot be passed off as a secret or back.
const KEY_CHECK_AAD: &[u8] = b"keycycle:key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"keycycle master key check v1";

/// What the store shows about a secret without handing out its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    /// `None` only for a damaged entry whose time cannot be read.
    pub created_at: Option<OffsetDateTime>,
    /// `None` only for a damaged entry whose time cannot be read.
    pub updated_at: Option<OffsetDateTime>,
    /// What is wrong with the entry, when it is damaged.
    pub damage: Option<EntryDamage>,
}

/// Checks a secret name: 1 to [`MAX_NAME_LEN`] characters from
/// `[A-Za-z0-9._/-]`, not starting with `/`, and without `..`. Names look
/// like paths (`gitlab/deploy-token`) but must never act as one.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let problem = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.chars().count() > MAX_NAME_LEN {
        Some(format!("it is longer than {MAX_NAME_LEN} characters"))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        Some(format!("it contains the character {c:?}"))
    } else if name.starts_with('/') {
        Some("it starts with '/'".to_owned())
    } else if name.contains("..") {
        Some("it contains '..'".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(StoreError::InvalidName {
            name: shorten(name),
            problem,
        }),
    }
}

/// An encrypted secrets file, opened with its master key.
///
/// Reads ([`get`](Self::get), [`list`](Self::list), [`values`](Self::values))
/// use the contents as of [`open`](Self::open), the last
/// [`reload`](Self::reload), or this handle's last change. Changes
/// ([`set`](Self::set), [`remove`](Self::remove)) lock the file, re-read it,
/// apply the change and replace the file, so changes made meanwhile by other
/// handles or processes are kept.
pub struct SecretStore {
    path: PathBuf,
    lock_path: PathBuf,
    cipher: XChaCha20Poly1305,
    contents: Contents,
}

impl SecretStore {
    /// Opens the store at `path` with `key`.
    ///
    /// A missing file is an empty store; the file, and its parent
    /// directories (mode 0700), are created by the first change. An
    /// existing file opened with the wrong key fails with
    /// [`StoreError::WrongKey`].
    pub fn open(path: impl AsRef<Path>, key: &MasterKey) -> Result<SecretStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let Some(file_name) = path.file_name() else {
            return Err(StoreError::io(
                "open secrets store",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file"),
            ));
        };
        let mut lock_name = file_name.to_os_string();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        let cipher = key.cipher();
        let contents = load(&path, &cipher)?;
        Ok(SecretStore {
            path,
            lock_path,
            cipher,
            contents,
        })
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file, picking up changes made by other handles or
    /// processes.
    pub fn reload(&mut self) -> Result<(), StoreError> {
        self.contents = load(&self.path, &self.cipher)?;
        Ok(())
    }

    /// The value of secret `name`, or `None` when there is none. A damaged
    /// entry fails with [`StoreError::Damaged`].
    pub fn get(&self, name: &str) -> Result<Option<SecretValue>, StoreError> {
        validate_name(name)?;
        match self.contents.entries.get(name) {
            None => Ok(None),
            Some(Entry::Sound(entry)) => self.decrypt(name, entry).map(Some),
            Some(Entry::Damaged(damaged)) => Err(StoreError::Damaged {
                path: self.path.clone(),
                name: name.to_owned(),
                problem: damaged.problem,
            }),
        }
    }

    /// Stores `value` as secret `name`, replacing any previous value (whose
    /// creation time is kept) or damaged entry (whose times, unreliable, are
    /// not). A fresh nonce is used for every write.
    pub fn set(&mut self, name: &str, value: &SecretValue) -> Result<(), StoreError> {
        validate_name(name)?;
        let path = self.path.clone();
        self.modify(|contents, cipher| {
            let sealed =
                seal(cipher, name.as_bytes(), value.expose().as_bytes()).map_err(|_| {
                    StoreError::Encrypt {
                        path,
                        name: name.to_owned(),
                    }
                })?;
            let now = now();
            let fresh = |created_at| {
                Entry::Sound(Sound {
                    created_at,
                    updated_at: now,
                    sealed,
                })
            };
            match contents.entries.entry(name.to_owned()) {
                MapEntry::Occupied(mut slot) => {
                    let created_at = match slot.get() {
                        Entry::Sound(entry) => entry.created_at,
                        Entry::Damaged(_) => now,
                    };
                    slot.insert(fresh(created_at));
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(fresh(now));
                }
            }
            Ok(((), true))
        })
    }

    /// Deletes secret `name`, damaged or not. Returns whether it existed.
    pub fn remove(&mut self, name: &str) -> Result<bool, StoreError> {
        validate_name(name)?;
        self.modify(|contents, _| {
            let existed = contents.entries.remove(name).is_some();
            Ok((existed, existed))
        })
    }

    /// Every secret's name and times, damaged entries included with what is
    /// wrong with them, ordered by name. Hands out no value.
    pub fn list(&self) -> Vec<SecretInfo> {
        self.contents
            .entries
            .iter()
            .map(|(name, entry)| match entry {
                Entry::Sound(entry) => SecretInfo {
                    name: name.clone(),
                    created_at: Some(entry.created_at),
                    updated_at: Some(entry.updated_at),
                    damage: None,
                },
                Entry::Damaged(damaged) => SecretInfo {
                    name: name.clone(),
                    created_at: damaged.created_at,
                    updated_at: damaged.updated_at,
                    damage: Some(damaged.problem),
                },
            })
            .collect()
    }

    /// Every sound secret's value, ordered by name. Meant for registering
    /// all stored values with the redactor, which constructing each
    /// [`SecretValue`] does. Damaged entries have no value to give and are
    /// skipped; [`list`](Self::list) names them.
    pub fn values(&self) -> Result<Vec<SecretValue>, StoreError> {
        self.contents
            .entries
            .iter()
            .filter_map(|(name, entry)| match entry {
                Entry::Sound(entry) => Some(self.decrypt(name, entry)),
                Entry::Damaged(_) => None,
            })
            .collect()
    }

    fn decrypt(&self, name: &str, entry: &Sound) -> Result<SecretValue, StoreError> {
        // Every sound entry was authenticated when the file was read, so
        // these failures mean the bytes changed in memory since.
        let damaged = |problem| StoreError::Damaged {
            path: self.path.clone(),
            name: name.to_owned(),
            problem,
        };
        let mut plain = unseal(&self.cipher, name.as_bytes(), &entry.sealed)
            .map_err(|_| damaged(EntryDamage::Authentication))?;
        // Move the bytes into the String rather than copying them, so the
        // only copy is the one `SecretValue` wipes.
        match String::from_utf8(std::mem::take(&mut *plain)) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(damaged(EntryDamage::NotText))
            }
        }
    }

    /// Read-modify-write under the lock. `change` returns its result and
    /// whether it changed anything; unchanged contents are not rewritten.
    fn modify<R>(
        &mut self,
        change: impl FnOnce(&mut Contents, &XChaCha20Poly1305) -> Result<(R, bool), StoreError>,
    ) -> Result<R, StoreError> {
        create_private_dirs(&parent_dir(&self.path))?;
        let _lock = lock_exclusive(&self.lock_path)?;
        let mut contents = load(&self.path, &self.cipher)?;
        let (result, changed) = change(&mut contents, &self.cipher)?;
        if changed {
            if contents.key_check.is_none() {
                let check =
                    seal(&self.cipher, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT).map_err(|_| {
                        StoreError::Encrypt {
                            path: self.path.clone(),
                            name: "key check".to_owned(),
                        }
                    })?;
                contents.key_check = Some(check);
            }
            let bytes = to_disk(&self.path, &contents)?;
            write_atomic(&self.path, &bytes)?;
        }
        self.contents = contents;
        Ok(result)
    }
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .field("secrets", &self.contents.entries.len())
            .field(
                "damaged",
                &self
                    .contents
                    .entries
                    .values()
                    .filter(|e| matches!(e, Entry::Damaged(_)))
                    .count(),
            )
            .finish_non_exhaustive()
    }
}

struct Sealed {
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

enum Entry {
    Sound(Sound),
    Damaged(Damaged),
}

/// An entry that was read whole and authenticated.
struct Sound {
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    sealed: Sealed,
}

/// An entry that could not be read or authenticated. Its JSON is kept as
/// read, and written back unchanged until it is replaced or removed.
struct Damaged {
    problem: EntryDamage,
    created_at: Option<OffsetDateTime>,
    updated_at: Option<OffsetDateTime>,
    raw: serde_json::Value,
}

#[derive(Default)]
struct Contents {
    /// `None` only for a store that has never been written.
    key_check: Option<Sealed>,
    entries: BTreeMap<String, Entry>,
}

fn seal(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, chacha20poly1305::Error> {
    // Random 192-bit nonces are what XChaCha20 is for: collisions are
    // negligible however many writes the store sees.
    let nonce: [u8; NONCE_LEN] = rand::random();
    let ciphertext = cipher.encrypt(
        (&nonce).into(),
        Payload {
            msg: plaintext,
            aad,
        },
    )?;
    Ok(Sealed { nonce, ciphertext })
}

fn unseal(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, chacha20poly1305::Error> {
    cipher
        .decrypt(
            (&sealed.nonce).into(),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
}

fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    // Whole seconds: the file is read by people, and finer times say nothing.
    now.replace_nanosecond(0).unwrap_or(now)
}

/// A name fit to repeat in an error: long names are cut short.
fn shorten(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_LEN {
        name.to_owned()
    } else {
        let mut short: String = name.chars().take(MAX_NAME_LEN).collect();
        short.push('…');
        short
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskStore {
    format: String,
    version: u32,
    key_check: DiskSealed,
    /// Read entry by entry, so one that does not fit [`DiskEntry`] is
    /// damaged alone, and kept as it was.
    secrets: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskSealed {
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskEntry {
    name: String,
    created_at: String,
    updated_at: String,
    nonce: String,
    ciphertext: String,
}

/// Just enough of the file to tell which format and version it claims,
/// read first so a newer file gets a version error, not a parse error.
#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

fn load(path: &Path, cipher: &XChaCha20Poly1305) -> Result<Contents, StoreError> {
    match read_if_exists(path)? {
        None => Ok(Contents::default()),
        Some(bytes) => from_disk(path, &bytes, cipher),
    }
}

fn corrupt(path: &Path, problem: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Describes a JSON error by position only: the parser's own message can
/// quote the file's text, and a file put in the store's place by mistake
/// may hold secrets in the clear.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io | Category::Syntax | Category::Eof => "it is not valid JSON",
        Category::Data => "its structure is not that of a keycycle secrets file",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

fn from_disk(
    path: &Path,
    bytes: &[u8],
    cipher: &XChaCha20Poly1305,
) -> Result<Contents, StoreError> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, json_problem(&e)))?;
    if probe.format.as_ref().and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(corrupt(
            path,
            format!("it is not a keycycle secrets file (it lacks \"format\": \"{FORMAT_NAME}\")"),
        ));
    }
    match probe.version.as_ref().and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        None => {
            return Err(corrupt(
                path,
                "its format version is missing or not a number",
            ));
        }
    }
    let disk: DiskStore =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, json_problem(&e)))?;

    let key_check = decode_sealed(&disk.key_check).map_err(|problem| {
        let what = match problem {
            EntryDamage::Nonce => "nonce",
            _ => "ciphertext",
        };
        corrupt(path, format!("the key check has a malformed {what}"))
    })?;
    match unseal(cipher, KEY_CHECK_AAD, &key_check) {
        Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => {}
        Ok(_) => return Err(corrupt(path, "its key check holds an unexpected value")),
        Err(_) => {
            return Err(StoreError::WrongKey {
                path: path.to_path_buf(),
            });
        }
    }

    let mut entries = BTreeMap::new();
    for (index, raw) in disk.secrets.into_iter().enumerate() {
        // Without a usable name an entry cannot be addressed to replace or
        // remove it, so that much damage is the whole file's.
        let Some(name) = raw.get("name").and_then(|n| n.as_str()).map(str::to_owned) else {
            return Err(corrupt(path, format!("secret #{} has no name", index + 1)));
        };
        let position = format!("secret #{} (`{}`)", index + 1, shorten(&name));
        if validate_name(&name).is_err() {
            return Err(corrupt(path, format!("{position} has an invalid name")));
        }
        let entry = match read_entry(cipher, &name, &raw) {
            Ok(sound) => Entry::Sound(sound),
            Err(problem) => {
                let time = |field| {
                    raw.get(field)
                        .and_then(|t| t.as_str())
                        .and_then(|t| parse_time(t).ok())
                };
                Entry::Damaged(Damaged {
                    problem,
                    created_at: time("created_at"),
                    updated_at: time("updated_at"),
                    raw,
                })
            }
        };
        if entries.insert(name, entry).is_some() {
            return Err(corrupt(path, format!("{position} appears more than once")));
        }
    }
    Ok(Contents {
        key_check: Some(key_check),
        entries,
    })
}

/// Reads one entry and authenticates it, so damage shows when the file is
/// read rather than in the middle of a run. The plaintext is wiped at once.
fn read_entry(
    cipher: &XChaCha20Poly1305,
    name: &str,
    raw: &serde_json::Value,
) -> Result<Sound, EntryDamage> {
    let disk = DiskEntry::deserialize(raw).map_err(|_| EntryDamage::Malformed)?;
    let sealed = decode_sealed(&DiskSealed {
        nonce: disk.nonce,
        ciphertext: disk.ciphertext,
    })?;
    let plain =
        unseal(cipher, name.as_bytes(), &sealed).map_err(|_| EntryDamage::Authentication)?;
    if std::str::from_utf8(&plain).is_err() {
        return Err(EntryDamage::NotText);
    }
    drop(plain);
    let time = |field, text: &str| parse_time(text).map_err(|_| EntryDamage::Time { field });
    Ok(Sound {
        created_at: time("created_at", &disk.created_at)?,
        updated_at: time("updated_at", &disk.updated_at)?,
        sealed,
    })
}

fn decode_sealed(disk: &DiskSealed) -> Result<Sealed, EntryDamage> {
    let nonce = STANDARD
        .decode(&disk.nonce)
        .ok()
        .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
        .ok_or(EntryDamage::Nonce)?;
    let ciphertext = STANDARD
        .decode(&disk.ciphertext)
        .ok()
        .filter(|c| c.len() >= TAG_LEN)
        .ok_or(EntryDamage::Ciphertext)?;
    Ok(Sealed { nonce, ciphertext })
}

fn parse_time(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339).map(|t| t.to_offset(time::UtcOffset::UTC))
}

fn format_time(path: &Path, time: OffsetDateTime) -> Result<String, StoreError> {
    time.format(&Rfc3339).map_err(|_| {
        corrupt(
            path,
            "a secret has a time that cannot be written as RFC 3339",
        )
    })
}

fn encode_sealed(sealed: &Sealed) -> DiskSealed {
    DiskSealed {
        nonce: STANDARD.encode(sealed.nonce),
        ciphertext: STANDARD.encode(&sealed.ciphertext),
    }
}

fn to_disk(path: &Path, contents: &Contents) -> Result<Vec<u8>, StoreError> {
    let key_check = contents
        .key_check
        .as_ref()
        .map(encode_sealed)
        .ok_or_else(|| corrupt(path, "it would be written without a key check"))?;
    let secrets = contents
        .entries
        .iter()
        .map(|(name, entry)| match entry {
            Entry::Sound(entry) => {
                let sealed = encode_sealed(&entry.sealed);
                let disk = DiskEntry {
                    name: name.clone(),
                    created_at: format_time(path, entry.created_at)?,
                    updated_at: format_time(path, entry.updated_at)?,
                    nonce: sealed.nonce,
                    ciphertext: sealed.ciphertext,
                };
                serde_json::to_value(disk)
                    .map_err(|e| StoreError::io("encode", path, io::Error::other(e)))
            }
            Entry::Damaged(damaged) => Ok(damaged.raw.clone()),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let disk = DiskStore {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        key_check,
        secrets,
    };
    let mut bytes = serde_json::to_vec_pretty(&disk)
        .map_err(|e| StoreError::io("encode", path, io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("state/secrets.json")
    }

    fn raw(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn write_raw(path: &Path, value: &serde_json::Value) {
        std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();

        let mut store = SecretStore::open(&path, &key).unwrap();
        assert!(store.list().is_empty());
        assert_eq!(store.get("gitlab/token").unwrap(), None);
        assert!(!path.exists(), "opening must not create the file");

        store
            .set("gitlab/token", &SecretValue::new("glpat-round-trip-1111"))
            .unwrap();
        store
            .set("aws.key_id", &SecretValue::new("AKIAROUNDTRIP2222"))
            .unwrap();
        assert_eq!(
            store.get("gitlab/token").unwrap().unwrap().expose(),
            "glpat-round-trip-1111"
        );

        let reopened = SecretStore::open(&path, &key).unwrap();
        assert_eq!(
            reopened.get("aws.key_id").unwrap().unwrap().expose(),
            "AKIAROUNDTRIP2222"
        );
        let names: Vec<_> = reopened.list().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["aws.key_id", "gitlab/token"]);
        let values: Vec<String> = reopened
            .values()
            .unwrap()
            .iter()
            .map(|v| v.expose().to_owned())
            .collect();
        assert_eq!(values, ["AKIAROUNDTRIP2222", "glpat-round-trip-1111"]);
    }

    #[test]
    fn update_keeps_created_at_and_uses_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut store = SecretStore::open(&path, &key).unwrap();

        store
            .set("token", &SecretValue::new("first-value-aaaa"))
            .unwrap();
        let before = store.list().remove(0);
        let nonce_before = raw(&path)["secrets"][0]["nonce"].clone();

        store
            .set("token", &SecretValue::new("first-value-aaaa"))
            .unwrap();
        store
            .set("token", &SecretValue::new("second-value-bbbb"))
            .unwrap();
        let after = store.list().remove(0);
        assert_eq!(after.created_at, before.created_at);
        assert!(after.updated_at >= before.updated_at);
        assert_eq!(after.created_at.unwrap().offset(), time::UtcOffset::UTC);
        assert_ne!(raw(&path)["secrets"][0]["nonce"], nonce_before);
        assert_eq!(
            store.get("token").unwrap().unwrap().expose(),
            "second-value-bbbb"
        );
        let on_disk = raw(&path);
        let created = on_disk["secrets"][0]["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z'), "{created}");
        OffsetDateTime::parse(created, &Rfc3339).unwrap();
        assert_eq!(on_disk["version"], 1);
    }

    #[test]
    fn wrong_key_is_detected_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        store
            .set("token", &SecretValue::new("wrong-key-canary"))
            .unwrap();

        let err = SecretStore::open(&path, &MasterKey::generate()).unwrap_err();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("wrong master key for store {}", path.display())),
            "{msg}"
        );
    }

    #[test]
    fn wrong_key_is_detected_when_the_store_appears_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut late = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        let mut first = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        first
            .set("token", &SecretValue::new("first-writer-value"))
            .unwrap();

        let err = late
            .set("other", &SecretValue::new("late-writer-value"))
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
        // The first writer's store is intact.
        assert_eq!(raw(&path)["secrets"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut store = SecretStore::open(&path, &key).unwrap();
        store
            .set("token", &SecretValue::new("tamper-canary-value"))
            .unwrap();

        let mut doc = raw(&path);
        let mut ct = STANDARD
            .decode(doc["secrets"][0]["ciphertext"].as_str().unwrap())
            .unwrap();
        ct[0] ^= 0x01;
        doc["secrets"][0]["ciphertext"] = STANDARD.encode(&ct).into();
        write_raw(&path, &doc);

        let store = SecretStore::open(&path, &key).unwrap();
        let err = store.get("token").unwrap_err();
        assert!(
            matches!(&err, StoreError::Damaged { name, problem: EntryDamage::Authentication, .. } if name == "token"),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(store.values().unwrap().is_empty());
    }

    #[test]
    fn swapped_ciphertexts_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut store = SecretStore::open(&path, &key).unwrap();
        store
            .set("alpha", &SecretValue::new("alpha-secret-value"))
            .unwrap();
        store
            .set("beta", &SecretValue::new("beta-secret-value"))
            .unwrap();

        let mut doc = raw(&path);
        let secrets = doc["secrets"].as_array_mut().unwrap();
        for field in ["nonce", "ciphertext"] {
            let a = secrets[0][field].clone();
            secrets[0][field] = secrets[1][field].clone();
            secrets[1][field] = a;
        }
        write_raw(&path, &doc);

        let store = SecretStore::open(&path, &key).unwrap();
        for name in ["alpha", "beta"] {
            let err = store.get(name).unwrap_err();
            assert!(
                matches!(&err, StoreError::Damaged { name: n, problem: EntryDamage::Authentication, .. } if n == name),
                "{err}"
            );
        }
    }

    #[test]
    fn file_on_disk_never_contains_the_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let canary = "CANARY-plaintext-7f3a9c1e-must-not-appear";
        let mut store = SecretStore::open(&path, &key).unwrap();
        store.set("canary", &SecretValue::new(canary)).unwrap();
        store.set("canary", &SecretValue::new(canary)).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(canary));
        assert!(!text.contains("CANARY"));
        assert!(!text.contains(&STANDARD.encode(canary)));
        let key_text = key.to_base64();
        assert!(!text.contains(key_text.as_str()));
        // The store does hold the secret, so the absence above means something.
        assert!(text.contains("\"canary\""));
        assert_eq!(store.get("canary").unwrap().unwrap().expose(), canary);
    }

    #[cfg(unix)]
    #[test]
    fn files_and_directories_are_private_and_no_temp_files_remain() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secrets.json");
        let mut store = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        store
            .set("x", &SecretValue::new("private-mode-value"))
            .unwrap();
        store
            .set("y", &SecretValue::new("private-mode-value2"))
            .unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a/b/secrets.json.lock")), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")) & 0o077, 0);
        assert_eq!(mode(&dir.path().join("a")) & 0o077, 0);
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["secrets.json", "secrets.json.lock"]);
    }

    #[test]
    fn concurrent_sets_from_separate_handles_both_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        const PER_THREAD: usize = 15;

        std::thread::scope(|scope| {
            for writer in ["left", "right"] {
                let (path, key) = (&path, &key);
                scope.spawn(move || {
                    let mut store = SecretStore::open(path, key).unwrap();
                    for i in 0..PER_THREAD {
                        let value = SecretValue::new(format!("{writer}-value-{i:04}"));
                        store.set(&format!("{writer}/{i}"), &value).unwrap();
                    }
                });
            }
        });

        let store = SecretStore::open(&path, &key).unwrap();
        assert_eq!(store.list().len(), 2 * PER_THREAD);
        for writer in ["left", "right"] {
            for i in 0..PER_THREAD {
                let got = store.get(&format!("{writer}/{i}")).unwrap().unwrap();
                assert_eq!(got.expose(), format!("{writer}-value-{i:04}"));
            }
        }
    }

    #[test]
    fn a_stale_handle_keeps_changes_made_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut a = SecretStore::open(&path, &key).unwrap();
        let mut b = SecretStore::open(&path, &key).unwrap();

        b.set("from-b", &SecretValue::new("value-written-by-b"))
            .unwrap();
        assert_eq!(a.get("from-b").unwrap(), None, "reads use a's snapshot");
        a.set("from-a", &SecretValue::new("value-written-by-a"))
            .unwrap();
        assert_eq!(
            a.get("from-b").unwrap().unwrap().expose(),
            "value-written-by-b"
        );

        b.reload().unwrap();
        assert_eq!(
            b.get("from-a").unwrap().unwrap().expose(),
            "value-written-by-a"
        );
    }

    #[test]
    fn remove_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut store = SecretStore::open(&path, &key).unwrap();
        assert!(!store.remove("never-set").unwrap());
        store
            .set("keep", &SecretValue::new("value-to-keep"))
            .unwrap();
        store
            .set("drop", &SecretValue::new("value-to-drop"))
            .unwrap();

        assert!(store.remove("drop").unwrap());
        assert!(!store.remove("drop").unwrap());
        assert_eq!(store.get("drop").unwrap(), None);

        let reopened = SecretStore::open(&path, &key).unwrap();
        let names: Vec<_> = reopened.list().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["keep"]);

        // Removing the last secret leaves a store that still checks the key.
        store.remove("keep").unwrap();
        assert!(SecretStore::open(&path, &key).unwrap().list().is_empty());
        assert!(matches!(
            SecretStore::open(&path, &MasterKey::generate()),
            Err(StoreError::WrongKey { .. })
        ));
    }

    #[test]
    fn names_are_validated() {
        for good in [
            "a",
            "gitlab/token",
            "A.b_c-d/e.f",
            "x/y/z",
            &"n".repeat(128),
        ] {
            validate_name(good).unwrap_or_else(|e| panic!("{good:?} refused: {e}"));
        }
        let bad = [
            ("", "empty"),
            (&*"n".repeat(129), "longer than 128"),
            ("has space", "' '"),
            ("colon:name", "':'"),
            ("/absolute", "starts with '/'"),
            ("a/../b", "'..'"),
            ("..", "'..'"),
            ("ünïcode", "'ü'"),
        ];
        for (name, expected) in bad {
            let err = validate_name(name).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::InvalidName { .. }), "{msg}");
            assert!(msg.contains(expected), "{name:?}: {msg}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        let value = SecretValue::new("never-stored-value");
        assert!(store.set("../escape", &value).is_err());
        assert!(store.get("bad name").is_err());
        assert!(store.remove("/abs").is_err());
        assert!(!path.exists(), "a refused name must not write the store");
    }

    #[test]
    fn newer_format_versions_are_refused_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        let mut store = SecretStore::open(&path, &key).unwrap();
        store
            .set("token", &SecretValue::new("version-test-value"))
            .unwrap();

        let mut doc = raw(&path);
        doc["version"] = 2.into();
        doc["new_field"] = "something".into();
        write_raw(&path, &doc);
        let err = SecretStore::open(&path, &key).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn corrupt_files_are_reported_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let key = MasterKey::generate();

        std::fs::write(&path, "{\"password\": \"hunter2-plaintext\"").unwrap();
        let err = SecretStore::open(&path, &key).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");

        std::fs::write(
            &path,
            "{\"format\": \"keycycle-secrets\", \"version\": 1, \"key_check\": \"hunter2-plaintext\", \"secrets\": []}",
        )
        .unwrap();
        let msg = SecretStore::open(&path, &key).unwrap_err().to_string();
        assert!(msg.contains("structure"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    /// An edit of a store file's JSON, as damage on disk would make.
    type Edit = fn(&mut serde_json::Value);

    /// Each kind of damage to one entry, as an edit of its JSON object.
    fn damages() -> Vec<(&'static str, EntryDamage, Edit)> {
        fn flip_ciphertext(entry: &mut serde_json::Value) {
            let mut ct = STANDARD
                .decode(entry["ciphertext"].as_str().unwrap())
                .unwrap();
            ct[3] ^= 0x20;
            entry["ciphertext"] = STANDARD.encode(&ct).into();
        }
        vec![
            ("nonce not base64", EntryDamage::Nonce, |e| {
                e["nonce"] = "@@@@".into()
            }),
            ("nonce too short", EntryDamage::Nonce, |e| {
                e["nonce"] = STANDARD.encode([0u8; 12]).into()
            }),
            ("ciphertext not base64", EntryDamage::Ciphertext, |e| {
                let ct = e["ciphertext"].as_str().unwrap().replacen(|_| true, "%", 1);
                e["ciphertext"] = ct.into();
            }),
            (
                "created_at not a time",
                EntryDamage::Time {
                    field: "created_at",
                },
                |e| e["created_at"] = "2025-13-01T00:00:00Z".into(),
            ),
            (
                "ciphertext fails authentication",
                EntryDamage::Authentication,
                flip_ciphertext,
            ),
            ("a field missing", EntryDamage::Malformed, |e| {
                e.as_object_mut().unwrap().remove("nonce");
            }),
            ("an unknown field", EntryDamage::Malformed, |e| {
                e["extra"] = true.into()
            }),
            ("a field of the wrong type", EntryDamage::Malformed, |e| {
                e["updated_at"] = 17.into()
            }),
        ]
    }

    fn three_secrets(path: &Path, key: &MasterKey) -> SecretStore {
        let mut store = SecretStore::open(path, key).unwrap();
        for name in ["alpha", "beta", "gamma"] {
            store
                .set(name, &SecretValue::new(format!("{name}-value-1234")))
                .unwrap();
        }
        store
    }

    #[test]
    fn one_damaged_entry_leaves_the_others_usable() {
        for (what, expected, damage) in damages() {
            let dir = tempfile::tempdir().unwrap();
            let path = store_path(&dir);
            let key = MasterKey::generate();
            three_secrets(&path, &key);
            let mut doc = raw(&path);
            damage(&mut doc["secrets"][1]);
            let damaged_raw = doc["secrets"][1].clone();
            write_raw(&path, &doc);

            let mut store = SecretStore::open(&path, &key)
                .unwrap_or_else(|e| panic!("{what}: the store does not open: {e}"));
            let listed: Vec<_> = store
                .list()
                .into_iter()
                .map(|i| (i.name, i.damage))
                .collect();
            assert_eq!(
                listed,
                [
                    ("alpha".to_owned(), None),
                    ("beta".to_owned(), Some(expected)),
                    ("gamma".to_owned(), None)
                ],
                "{what}"
            );
            let err = store.get("beta").unwrap_err();
            assert!(
                matches!(&err, StoreError::Damaged { name, problem, .. } if name == "beta" && *problem == expected),
                "{what}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains("keycycle secrets set beta"), "{msg}");
            assert!(msg.contains("keycycle secrets rm beta"), "{msg}");
            if let Some(ct) = damaged_raw["ciphertext"].as_str() {
                assert!(
                    !msg.contains(ct),
                    "{what}: the message quotes the ciphertext"
                );
            }
            assert_eq!(
                store.get("alpha").unwrap().unwrap().expose(),
                "alpha-value-1234"
            );
            assert_eq!(store.values().unwrap().len(), 2, "{what}");

            // Writing another secret keeps the damaged entry as it was read.
            store
                .set("delta", &SecretValue::new("delta-value-1234"))
                .unwrap();
            store.remove("gamma").unwrap();
            let kept = raw(&path)["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "beta")
                .cloned();
            assert_eq!(kept, Some(damaged_raw), "{what}");

            // `set` replaces the damaged entry.
            store
                .set("beta", &SecretValue::new("beta-value-5678"))
                .unwrap();
            let reopened = SecretStore::open(&path, &key).unwrap();
            assert_eq!(
                reopened.get("beta").unwrap().unwrap().expose(),
                "beta-value-5678"
            );
            assert!(reopened.list().iter().all(|i| i.damage.is_none()), "{what}");

            // `remove` deletes one.
            let mut doc = raw(&path);
            damage(&mut doc["secrets"][1]);
            write_raw(&path, &doc);
            let mut store = SecretStore::open(&path, &key).unwrap();
            assert!(store.remove("beta").unwrap(), "{what}");
            let names: Vec<_> = SecretStore::open(&path, &key)
                .unwrap()
                .list()
                .into_iter()
                .map(|i| i.name)
                .collect();
            assert_eq!(names, ["alpha", "delta"], "{what}");
        }
    }

    #[test]
    fn a_value_that_is_not_text_is_a_damaged_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        three_secrets(&path, &key);
        let sealed = seal(&key.cipher(), b"beta", &[0xff, 0xfe, 0x00]).unwrap();
        let mut doc = raw(&path);
        doc["secrets"][1]["nonce"] = STANDARD.encode(sealed.nonce).into();
        doc["secrets"][1]["ciphertext"] = STANDARD.encode(&sealed.ciphertext).into();
        write_raw(&path, &doc);

        let store = SecretStore::open(&path, &key).unwrap();
        assert!(matches!(
            store.get("beta"),
            Err(StoreError::Damaged {
                problem: EntryDamage::NotText,
                ..
            })
        ));
        assert!(store.get("gamma").unwrap().is_some());
    }

    #[test]
    fn damage_to_the_whole_file_still_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let key = MasterKey::generate();
        three_secrets(&path, &key);
        let pristine = raw(&path);
        let cases: [(&str, Edit); 5] = [
            ("key check nonce", |d| d["key_check"]["nonce"] = "@@".into()),
            ("entry without a name", |d| {
                d["secrets"][1].as_object_mut().unwrap().remove("name");
            }),
            ("entry that is not an object", |d| {
                d["secrets"][1] = 7.into()
            }),
            ("invalid name", |d| d["secrets"][1]["name"] = "../x".into()),
            ("duplicate name", |d| {
                d["secrets"][1]["name"] = "alpha".into()
            }),
        ];
        for (what, damage) in cases {
            let mut doc = pristine.clone();
            damage(&mut doc);
            write_raw(&path, &doc);
            let err = SecretStore::open(&path, &key).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{what}: {err}");
        }

        // A damaged entry does not hide a wrong key.
        let mut doc = pristine.clone();
        doc["secrets"][1]["nonce"] = "@@".into();
        write_raw(&path, &doc);
        assert!(matches!(
            SecretStore::open(&path, &MasterKey::generate()),
            Err(StoreError::WrongKey { .. })
        ));
    }

    #[test]
    fn debug_shows_no_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut store = SecretStore::open(&path, &MasterKey::generate()).unwrap();
        store
            .set("token", &SecretValue::new("debug-canary-value"))
            .unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("secrets: 1"), "{debug}");
        assert!(!debug.contains("debug-canary"), "{debug}");
    }
}
