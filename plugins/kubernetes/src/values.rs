//! Secret data as the API server keeps it: values in base64, which the
//! plugin decodes to compare and digest but never outputs except where an
//! operation declares a secret output.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The bytes of a `data` value. Line breaks are skipped, as Go's decoder
/// in the API server skips them: Signon's sync writes Ruby's
/// `Base64.encode64`, which wraps every 60 characters and ends with a
/// newline (reference). `None` when it is not base64.
pub(crate) fn decode(encoded: &str) -> Option<Vec<u8>> {
    let compact: String = encoded
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r'))
        .collect();
    STANDARD.decode(compact.as_bytes()).ok()
}

/// `bytes` in canonical base64, as the API server stores and serves it.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// What identifies a value in outputs, logs and the journal without
/// standing for it: 16 hex digits of a SHA-256 over a fixed prefix and the
/// value. Enough to tell two tokens apart; not the value's plain SHA-256,
/// which anyone could match against the value or its published hashes.
pub(crate) fn fingerprint(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keycycle-fingerprint-v1\0");
    hasher.update(bytes);
    hex(&hasher.finalize())[..16].to_owned()
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Equality that takes the same time wherever the first difference is, so
/// that how long a comparison took says nothing about a secret.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_style_base64_with_newlines_decodes() {
        // Ruby: Base64.encode64("a" * 50) wraps at 60 characters and ends
        // with a newline.
        let ruby = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh\nYWFhYWE=\n";
        assert_eq!(decode(ruby).unwrap(), vec![b'a'; 50]);
        assert_eq!(decode("dG9rZW4=").unwrap(), b"token");
        assert_eq!(decode("dG9r\r\nZW4=\r\n").unwrap(), b"token");
        assert_eq!(decode("").unwrap(), b"");
        assert!(decode("not base64!").is_none());
        assert_eq!(encode(&[b'a'; 50]), ruby.replace('\n', ""));
    }

    #[test]
    fn digests_are_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn fingerprints_are_short_and_not_the_plain_digest() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 16);
        assert!(!sha256_hex(b"abc").starts_with(&f));
        assert_eq!(f, fingerprint(b"abc"));
        assert_ne!(f, fingerprint(b"abd"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
        assert!(!same_bytes(b"", b"a"));
        assert!(same_bytes(b"", b""));
    }
}
