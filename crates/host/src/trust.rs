//! Which component files the operator trusts: a pinned sha256, and
//! minisign signatures by the teams named in the config. Both are checked
//! on the bytes the host read, before anything parses them, and those same
//! bytes are what is compiled: a file swapped after the check is never the
//! one that runs.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The trust the operator places in one plugin file.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The file's hex sha256, when the config pins it.
    pub sha256: Option<String>,
    /// The keys that may have signed it: (team name, minisign public key,
    /// as the base64 line or the two lines of a `.pub` file). Empty means
    /// no signature is asked for, unless `require_signed`.
    pub signers: Vec<(String, String)>,
    /// Refuse the plugin unless one of `signers` signed it.
    pub require_signed: bool,
}

/// Why a file is not the one the operator trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustProblem {
    /// The file's digest is not the pinned one.
    Pin { expected: String, actual: String },
    /// No signature, or none that verifies with a trusted key.
    Signature(String),
}

/// The hex sha256 of a file's bytes, as pinned with `sha256 = "…"`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where a component's detached signature lies: `FILE.minisig`, as the
/// minisign tool writes it.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// A public key from config text: the base64 key line alone, or the
/// contents of a minisign `.pub` file (comment line, then the key).
pub fn parse_public_key(text: &str) -> Result<minisign_verify::PublicKey, String> {
    let text = text.trim();
    let line = if text.contains('\n') {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .unwrap_or("")
    } else {
        text
    };
    minisign_verify::PublicKey::from_base64(line)
        .map_err(|e| format!("not a minisign public key ({e})"))
}

/// Whether `signature` (the text of a `.minisig` file) is a signature of
/// exactly `bytes` by `key`. Only prehashed signatures (what minisign has
/// made by default since 0.8) are accepted.
pub fn verify_signature(bytes: &[u8], signature: &str, key: &str) -> Result<(), String> {
    let key = parse_public_key(key)?;
    let signature = minisign_verify::Signature::decode(signature)
        .map_err(|e| format!("the signature file is not a minisign signature ({e})"))?;
    key.verify(bytes, &signature, false).map_err(|e| match e {
        minisign_verify::Error::UnexpectedKeyId => "it was made with another key".to_owned(),
        minisign_verify::Error::InvalidSignature => {
            "it does not match the file's bytes (the file or the signature was changed)".to_owned()
        }
        other => other.to_string(),
    })
}

/// Largest signature file read; a real one is a few hundred bytes.
const MAX_SIGNATURE: u64 = 64 << 10;

impl Trust {
    /// Checks `bytes`, read from `path`, against the pin and the signers.
    pub fn check(&self, path: &Path, bytes: &[u8], sha256: &str) -> Result<(), TrustProblem> {
        if let Some(expected) = &self.sha256
            && !expected.eq_ignore_ascii_case(sha256)
        {
            return Err(TrustProblem::Pin {
                expected: expected.to_ascii_lowercase(),
                actual: sha256.to_owned(),
            });
        }
        if self.signers.is_empty() && !self.require_signed {
            return Ok(());
        }
        let by = || {
            self.signers
                .iter()
                .map(|(team, _)| format!("`{team}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if self.signers.is_empty() {
            return Err(TrustProblem::Signature(
                "[trust] require_signed is on and no trusted key is configured ([trust] keys)"
                    .to_owned(),
            ));
        }
        let sig_path = signature_path(path);
        let text = match std::fs::metadata(&sig_path) {
            Ok(meta) if meta.len() > MAX_SIGNATURE => {
                return Err(TrustProblem::Signature(format!(
                    "its signature {} is too large to be a minisign signature",
                    sig_path.display()
                )));
            }
            Ok(_) => std::fs::read_to_string(&sig_path).map_err(|e| {
                TrustProblem::Signature(format!(
                    "cannot read its signature {}: {e}",
                    sig_path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrustProblem::Signature(format!(
                    "it is not signed: there is no {} (it must be signed by {})",
                    sig_path.display(),
                    by()
                )));
            }
            Err(e) => {
                return Err(TrustProblem::Signature(format!(
                    "cannot read its signature {}: {e}",
                    sig_path.display()
                )));
            }
        };
        let mut why = Vec::new();
        for (team, key) in &self.signers {
            match verify_signature(bytes, &text, key) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(format!("not by `{team}`: {e}")),
            }
        }
        Err(TrustProblem::Signature(format!(
            "its signature {} does not verify ({}); it must be signed by {}",
            sig_path.display(),
            why.join("; "),
            by()
        )))
    }
}
