//! The master key that encrypts the secrets store, and its two outside
//! forms: base64 text (for `KEYCYCLE_MASTER_KEY`) and an owner-only key file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use keycycle_secret::SecretValue;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{KeyProblem, SealProblem, StoreError};
use crate::fs::{create_private_dirs, parent_dir, private_file_options, sync_dir};

/// The environment variable that carries the master key as base64.
pub const MASTER_KEY_ENV: &str = "KEYCYCLE_MASTER_KEY";

/// The length of a master key in bytes.
pub const KEY_LEN: usize = 32;

/// What every value made by [`MasterKey::seal`] starts with; the digit is
/// the sealing format's version.
pub const SEALED_PREFIX: &str = "kc1:";

const SEAL_NONCE_LEN: usize = 24;
const SEAL_TAG_LEN: usize = 16;

/// Put before a seal's context in the associated data. Secret names in the
/// secrets store cannot contain ':', so no sealed value can pass for a store
/// entry or the store's key check, nor the other way round.
const SEAL_AAD_PREFIX: &str = "keycycle:seal:";

/// A key file holds 45 bytes; anything far larger is the wrong file, and
/// reading it whole would only copy more of it into memory.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// The 32-byte key that encrypts every secret in a [`crate::SecretStore`].
///
/// The bytes are wiped from memory when the key (or any clone) is dropped,
/// and `Debug` shows no key material.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A new key from the operating system's secure random source (through
    /// `rand`'s thread-local generator, which reseeds from it).
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(&mut bytes[..]);
        MasterKey(bytes)
    }

    /// Decodes a key from standard, padded base64, the form of
    /// [`MASTER_KEY_ENV`]. Surrounding whitespace is ignored. The error never
    /// repeats the text.
    pub fn from_base64(text: &str) -> Result<MasterKey, StoreError> {
        decode(text).map_err(|problem| StoreError::InvalidKey {
            origin: format!("the base64 master key (as in {MASTER_KEY_ENV})"),
            problem,
        })
    }

    /// Reads the key from [`MASTER_KEY_ENV`], or `None` when it is not set.
    pub fn from_env() -> Result<Option<MasterKey>, StoreError> {
        let Some(value) = std::env::var_os(MASTER_KEY_ENV) else {
            return Ok(None);
        };
        let invalid = |problem| StoreError::InvalidKey {
            origin: MASTER_KEY_ENV.to_owned(),
            problem,
        };
        let value = Zeroizing::new(
            value
                .into_string()
                .map_err(|_| invalid(KeyProblem::NotBase64))?,
        );
        decode(&value).map(Some).map_err(invalid)
    }

    /// Reads a key file written by [`MasterKey::write_new_file`].
    ///
    /// A key file that group or others may read or write is refused (on
    /// Unix), because anyone who can read it can read every stored secret.
    pub fn load_file(path: impl AsRef<Path>) -> Result<MasterKey, StoreError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| StoreError::io("open master key file", path, e))?;
        // The checks use the open file, not the path, so the file that is
        // checked is the file that is read.
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("inspect master key file", path, e))?;
        if !meta.is_file() {
            return Err(StoreError::KeyFileNotRegular {
                path: path.to_path_buf(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(StoreError::KeyFileTooOpen {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let invalid = |problem| StoreError::InvalidKey {
            origin: format!("master key file {}", path.display()),
            problem,
        };
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(invalid(KeyProblem::TooLarge));
        }
        // Enough room up front that reading never reallocates and leaves an
        // unwiped copy of the key behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 64));
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("read master key file", path, e))?;
        if bytes.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(invalid(KeyProblem::TooLarge));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid(KeyProblem::NotBase64))?;
        decode(text).map_err(invalid)
    }

    /// Writes this key to a new file at `path` as one line of base64,
    /// readable and writable by the owner only (mode 0600 from the moment
    /// it exists). Missing parent directories are created with mode 0700.
    ///
    /// Refuses to replace an existing file: that file may hold the only key
    /// to an existing store.
    pub fn write_new_file(&self, path: impl AsRef<Path>) -> Result<(), StoreError> {
        let path = path.as_ref();
        let dir = parent_dir(path);
        create_private_dirs(&dir)?;
        let mut file = private_file_options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => StoreError::KeyFileExists {
                    path: path.to_path_buf(),
                },
                _ => StoreError::io("create master key file", path, e),
            })?;
        let mut line = self.to_base64();
        line.push('\n');
        let written = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // A half-written key file would be refused later as invalid;
            // removing it lets the operator simply retry.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(StoreError::io("write master key file", path, e));
        }
        sync_dir(&dir)
    }

    /// The key as standard, padded base64 (44 characters), the form
    /// [`MasterKey::from_base64`] and [`MASTER_KEY_ENV`] accept.
    ///
    /// This exists for `keycycle secrets init`, which prints a new key once
    /// so the operator can store it elsewhere (a password manager, a CI
    /// secret). Nothing else should call it: every copy of this text is a
    /// copy of the key to every stored secret. The returned string is wiped
    /// when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        // One allocation of the final size, so no unwiped copy is left by
        // a reallocation.
        let mut text = Zeroizing::new(String::with_capacity(48));
        STANDARD.encode_string(&self.0[..], &mut text);
        text
    }

    /// Encrypts `plaintext` into self-contained text that only
    /// [`MasterKey::open`] with this key and the same `context` turns back:
    /// [`SEALED_PREFIX`] followed by standard base64 of a random 24-byte
    /// nonce and the XChaCha20-Poly1305 ciphertext with its tag.
    ///
    /// `context` is bound as associated data, so a sealed value copied to
    /// another place (say `journal:RUN:7:token` into `journal:RUN:8:token`)
    /// fails to open there. It is not secret and not stored in the output;
    /// the opener must know it.
    ///
    /// # Panics
    ///
    /// Only if `plaintext` exceeds the cipher's limit of about 256 GiB.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        // Random 192-bit nonces are what XChaCha20 is for: collisions are
        // negligible however many values are sealed under one key.
        let nonce: [u8; SEAL_NONCE_LEN] = rand::random();
        let aad = seal_aad(context);
        let ciphertext = self
            .cipher()
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 refuses only plaintexts larger than 256 GiB");
        let mut raw = Vec::with_capacity(SEAL_NONCE_LEN + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        let mut text = String::with_capacity(SEALED_PREFIX.len() + raw.len().div_ceil(3) * 4);
        text.push_str(SEALED_PREFIX);
        STANDARD.encode_string(&raw, &mut text);
        text
    }

    /// Decrypts a value made by [`MasterKey::seal`] with this key and the
    /// same `context`. The value comes back as a [`SecretValue`], so it is
    /// registered with the redactor.
    ///
    /// Fails with [`StoreError::Unseal`] when the text is not a sealed
    /// value, or when authentication fails: a different key, a different
    /// context, or altered text (the three cannot be told apart, by design).
    /// The error names the context and never repeats the text.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretValue, StoreError> {
        let fail = |problem| StoreError::Unseal {
            context: context.to_owned(),
            problem,
        };
        let body = sealed
            .trim()
            .strip_prefix(SEALED_PREFIX)
            .ok_or(fail(SealProblem::NotSealed))?;
        let raw = STANDARD
            .decode(body)
            .map_err(|_| fail(SealProblem::NotBase64))?;
        if raw.len() < SEAL_NONCE_LEN + SEAL_TAG_LEN {
            return Err(fail(SealProblem::Truncated));
        }
        let (nonce, ciphertext) = raw.split_at(SEAL_NONCE_LEN);
        let aad = seal_aad(context);
        let mut plain = self
            .cipher()
            .decrypt(
                nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| fail(SealProblem::Authentication))?;
        // Move the bytes into the String rather than copying them, so the
        // only copy is the one `SecretValue` wipes.
        match String::from_utf8(std::mem::take(&mut plain)) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(fail(SealProblem::NotText))
            }
        }
    }

    /// Whether `text` looks like a value made by [`MasterKey::seal`] (it
    /// starts with [`SEALED_PREFIX`]). Says nothing about which key or
    /// context opens it.
    pub fn is_sealed(text: &str) -> bool {
        text.trim_start().starts_with(SEALED_PREFIX)
    }

    /// A key for fingerprinting requests in the run journal, derived from
    /// the master key so a journaled fingerprint of a secret input cannot
    /// be checked against guesses without the key. Wiped when dropped.
    pub fn fingerprint_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"keycycle:journal-fingerprint:v1\0");
        h.update(self.0.as_slice());
        Zeroizing::new(h.finalize().into())
    }

    /// The cipher keyed with this key. The cipher wipes its own copy of the
    /// key when dropped.
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

fn seal_aad(context: &str) -> String {
    let mut aad = String::with_capacity(SEAL_AAD_PREFIX.len() + context.len());
    aad.push_str(SEAL_AAD_PREFIX);
    aad.push_str(context);
    aad
}

fn decode(text: &str) -> Result<MasterKey, KeyProblem> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyProblem::Empty);
    }
    // `decode` allocates its output once at the estimated size, so the
    // only heap copy is this one, wiped on drop.
    let decoded = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyProblem::NotBase64)?);
    if decoded.len() != KEY_LEN {
        return Err(KeyProblem::WrongLength {
            bytes: decoded.len(),
        });
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&decoded);
    Ok(MasterKey(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let back = MasterKey::from_base64(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!(back.0[..], key.0[..]);
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(MasterKey::generate().0[..], MasterKey::generate().0[..]);
    }

    #[test]
    fn wrong_length_and_encoding_are_refused_without_echo() {
        let short = STANDARD.encode([7u8; 16]);
        let err = MasterKey::from_base64(&short).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("16 bytes instead of 32"), "{msg}");
        assert!(!msg.contains(&short), "{msg}");

        let garbage = "not-base64-but-a-secret-looking-value!!";
        let err = MasterKey::from_base64(garbage).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(msg.contains("not valid base64"), "{msg}");
        assert!(!msg.contains("secret-looking"), "{msg}");

        assert!(matches!(
            MasterKey::from_base64("  \n"),
            Err(StoreError::InvalidKey {
                problem: KeyProblem::Empty,
                ..
            })
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let debug = format!("{key:?}");
        assert_eq!(debug, "MasterKey(***)");
        assert!(!debug.contains(text.as_str()));
    }

    #[test]
    fn key_file_round_trip_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/master.key");
        let key = MasterKey::generate();
        key.write_new_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(dir_mode & 0o077, 0, "directory mode {dir_mode:o}");
        }
        let loaded = MasterKey::load_file(&path).unwrap();
        assert_eq!(loaded.0[..], key.0[..]);
    }

    #[test]
    fn write_new_file_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::generate();
        first.write_new_file(&path).unwrap();
        let err = MasterKey::generate().write_new_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileExists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        // The original key is untouched.
        assert_eq!(MasterKey::load_file(&path).unwrap().0[..], first.0[..]);
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::generate().write_new_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let err = MasterKey::load_file(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::KeyFileTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        let msg = err.to_string();
        let shown = path.display().to_string();
        assert!(msg.contains(&shown), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {shown}")), "{msg}");

        // Group-writable alone is refused too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(matches!(
            MasterKey::load_file(&path),
            Err(StoreError::KeyFileTooOpen { mode: 0o620, .. })
        ));

        // The suggested fix works.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        MasterKey::load_file(&path).unwrap();
    }

    #[test]
    fn invalid_key_file_names_the_file_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let contents = STANDARD.encode([1u8; 31]);
        private_file_options()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap()
            .write_all(contents.as_bytes())
            .unwrap();
        let err = MasterKey::load_file(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("31 bytes"), "{msg}");
        assert!(!msg.contains(&contents), "{msg}");
    }

    #[test]
    fn seal_round_trip() {
        let key = MasterKey::generate();
        let sealed = key.seal("glpat-seal-round-trip", "journal:r1:3:token");
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(MasterKey::is_sealed(&sealed));
        assert!(!sealed.contains("glpat-seal-round-trip"));
        let opened = key.open(&sealed, "journal:r1:3:token").unwrap();
        assert_eq!(opened.expose(), "glpat-seal-round-trip");
        // The empty string and non-ASCII text survive too.
        assert_eq!(key.open(&key.seal("", "c"), "c").unwrap().expose(), "");
        assert_eq!(
            key.open(&key.seal("clé ✓", "c"), "c").unwrap().expose(),
            "clé ✓"
        );
    }

    #[test]
    fn seal_uses_a_fresh_nonce_each_time() {
        let key = MasterKey::generate();
        let a = key.seal("same-value", "ctx");
        let b = key.seal("same-value", "ctx");
        assert_ne!(a, b);
        assert_eq!(key.open(&a, "ctx").unwrap(), key.open(&b, "ctx").unwrap());
    }

    #[test]
    fn open_refuses_wrong_context_key_and_tampering_without_echo() {
        let key = MasterKey::generate();
        let sealed = key.seal("canary-open-refusal", "journal:r1:1:token");

        let err = key.open(&sealed, "journal:r1:2:token").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Unseal {
                    problem: SealProblem::Authentication,
                    ..
                }
            ),
            "{err}"
        );
        let msg = format!("{err} {err:?}");
        assert!(msg.contains("journal:r1:2:token"), "{msg}");
        assert!(!msg.contains(&sealed), "{msg}");
        assert!(!msg.contains("canary-open-refusal"), "{msg}");

        let other = MasterKey::generate();
        assert!(matches!(
            other.open(&sealed, "journal:r1:1:token"),
            Err(StoreError::Unseal {
                problem: SealProblem::Authentication,
                ..
            })
        ));

        // Flip one bit of the ciphertext, keeping the text valid base64.
        let mut raw = STANDARD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", STANDARD.encode(&raw));
        assert!(matches!(
            key.open(&tampered, "journal:r1:1:token"),
            Err(StoreError::Unseal {
                problem: SealProblem::Authentication,
                ..
            })
        ));

        for (text, problem) in [
            ("plain-text-not-sealed", SealProblem::NotSealed),
            ("kc1:%%%not-base64%%%", SealProblem::NotBase64),
            ("kc1:AAAA", SealProblem::Truncated),
        ] {
            let err = key.open(text, "ctx").unwrap_err();
            assert!(
                matches!(&err, StoreError::Unseal { problem: p, .. } if *p == problem),
                "{err}"
            );
            assert!(!err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn seal_context_cannot_pass_for_a_secret_name() {
        // Store entries are bound to their name; seals to the prefix and
        // context. Names never contain ':', so the two never collide.
        assert!(seal_aad("gitlab/token").contains(':'));
        assert!(crate::secrets::validate_name(&seal_aad("gitlab/token")).is_err());
    }

    #[test]
    fn fingerprint_key_is_stable_per_key_and_not_the_key() {
        let key = MasterKey::generate();
        let derived = key.fingerprint_key();
        assert_eq!(derived[..], key.fingerprint_key()[..]);
        assert_ne!(derived[..], key.0[..]);
        assert_ne!(derived[..], MasterKey::generate().fingerprint_key()[..]);
        // The journal feeds it straight to a hasher.
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(key.fingerprint_key());
        assert_ne!(h.finalize()[..], [0u8; 32]);
    }

    #[test]
    fn missing_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let err = MasterKey::load_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
