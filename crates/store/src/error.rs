//! The errors of the store. Each names the file involved and says what the
//! operator can do about it; none ever contains a key or a secret value.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Something went wrong with a master key or the secrets store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A master key could not be decoded. The offending text is never shown.
    #[error(
        "{origin} is not a valid master key: {problem}; a master key is 32 random bytes in \
         standard base64 (44 characters), as printed by `keycycle secrets init`"
    )]
    InvalidKey { origin: String, problem: KeyProblem },

    /// A master key file is readable or writable by group or others.
    #[error(
        "master key file {path} has mode {mode:04o}, which lets group or others read or write it; \
         run `chmod 600 {path}` and try again",
        path = path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },

    /// A master key file path does not name a regular file.
    #[error(
        "master key file {path} is not a regular file; point to the file written by \
         `keycycle secrets init`",
        path = path.display()
    )]
    KeyFileNotRegular { path: PathBuf },

    /// Writing a new master key file would replace an existing one.
    #[error(
        "refusing to overwrite master key file {path}: it may be the only key to an existing \
         secrets store; move it aside first if you really mean to replace it",
        path = path.display()
    )]
    KeyFileExists { path: PathBuf },

    /// The store was created with a different master key.
    #[error(
        "wrong master key for store {path}: it does not match the key the store was created \
         with; check KEYCYCLE_MASTER_KEY or the master key file",
        path = path.display()
    )]
    WrongKey { path: PathBuf },

    /// One entry of the store is damaged; the others are still usable.
    #[error(
        "secret `{name}` in store {path} is damaged: {problem}; replace it with \
         `keycycle secrets set {name}` or remove it with `keycycle secrets rm {name}` \
         (or restore the store from a backup)",
        path = path.display()
    )]
    Damaged {
        path: PathBuf,
        name: String,
        problem: EntryDamage,
    },

    /// Encryption refused the value; only possible for absurdly large values.
    #[error(
        "could not encrypt secret `{name}` for store {path}: the value is too large to store",
        path = path.display()
    )]
    Encrypt { path: PathBuf, name: String },

    /// The store file is not in the expected shape.
    #[error(
        "store {path} is corrupt: {problem}; restore it from a backup",
        path = path.display()
    )]
    Corrupt { path: PathBuf, problem: String },

    /// The store file was written by a newer (or unknown) format.
    #[error(
        "store {path} has format version {found}, but this keycycle understands only version \
         {supported}; use a keycycle release that supports it",
        path = path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u64,
        supported: u32,
    },

    /// A secret name breaks the naming rules.
    #[error(
        "invalid secret name `{name}`: {problem}; names are 1 to {max} characters of letters, \
         digits, '.', '_', '/' and '-', with no leading '/' and no '..'",
        max = crate::secrets::MAX_NAME_LEN
    )]
    InvalidName { name: String, problem: String },

    /// A value made by [`crate::MasterKey::seal`] could not be opened. The
    /// sealed text is never shown; the context says where it came from.
    #[error("could not open the sealed value for `{context}`: {problem}")]
    Unseal {
        context: String,
        problem: SealProblem,
    },

    /// A file system operation failed.
    #[error(
        "could not {action} {path}: {source}; check that the path is right and that you may \
         read and write it",
        path = path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why text is not a master key. Deliberately says nothing about the text
/// itself beyond its decoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Nothing but whitespace.
    Empty,
    /// Not standard, padded base64.
    NotBase64,
    /// Valid base64 of the wrong number of bytes.
    WrongLength { bytes: usize },
    /// A key file too large to be a key file.
    TooLarge,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("it is empty"),
            KeyProblem::NotBase64 => f.write_str("it is not valid base64"),
            KeyProblem::WrongLength { bytes } => {
                write!(f, "it decodes to {bytes} bytes instead of 32")
            }
            KeyProblem::TooLarge => f.write_str("it is far larger than a key"),
        }
    }
}

/// What is wrong with one damaged entry of the secrets store. Like
/// [`KeyProblem`], says nothing about the entry's bytes, so it is safe to
/// print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryDamage {
    /// A field is missing, unknown, or of the wrong type.
    Malformed,
    /// The nonce is not standard base64 of 24 bytes.
    Nonce,
    /// The ciphertext is not standard base64, or too short to hold a tag.
    Ciphertext,
    /// A time is not an RFC 3339 time.
    Time { field: &'static str },
    /// Authenticated decryption failed although the key check passed.
    Authentication,
    /// Decrypted, but not UTF-8 text.
    NotText,
}

impl fmt::Display for EntryDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryDamage::Malformed => f.write_str(
                "its fields are not those of a secret entry (one is missing, unknown or of the \
                 wrong type)",
            ),
            EntryDamage::Nonce => f.write_str("its nonce is not base64 of 24 bytes"),
            EntryDamage::Ciphertext => {
                f.write_str("its ciphertext is not base64 or is too short to be one")
            }
            EntryDamage::Time { field } => write!(f, "its {field} is not an RFC 3339 time"),
            EntryDamage::Authentication => f.write_str(
                "its ciphertext failed authentication: the entry was altered, corrupted, or \
                 copied from another entry",
            ),
            EntryDamage::NotText => f.write_str("its value is not UTF-8 text after decryption"),
        }
    }
}

/// Why a sealed value could not be opened. Like [`KeyProblem`], says
/// nothing about the text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealProblem {
    /// The text does not start with [`crate::SEALED_PREFIX`].
    NotSealed,
    /// The text after the prefix is not standard, padded base64.
    NotBase64,
    /// Too short to hold a nonce and an authentication tag.
    Truncated,
    /// Authenticated decryption failed.
    Authentication,
    /// Decrypted, but not UTF-8 text.
    NotText,
}

impl fmt::Display for SealProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealProblem::NotSealed => {
                "it is not a sealed value (those start with `kc1:`); it may have been \
                 stored before sealing was in place or edited by hand"
            }
            SealProblem::NotBase64 => "it is not valid base64 after `kc1:`; it was altered",
            SealProblem::Truncated => "it is too short to be a sealed value; it was cut short",
            SealProblem::Authentication => {
                "authentication failed: it was sealed under a different master key or for a \
                 different context, or it was altered; check KEYCYCLE_MASTER_KEY or the master \
                 key file"
            }
            SealProblem::NotText => "it is not UTF-8 text after decryption",
        })
    }
}
