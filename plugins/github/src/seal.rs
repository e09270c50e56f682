//! libsodium's sealed box (`crypto_box_seal`), the only form in which
//! GitHub accepts an Actions secret: `encrypted_value` =
//! base64(crypto_box_seal(value, decoded public key)) (reference).
//!
//! A sealed box needs a fresh ephemeral key pair, so sealing needs
//! randomness: `OsRng` reads getrandom, which on wasm32-wasip2 is the host's
//! `wasi:random/random`, an import the sandbox grants. Were it refused, the
//! plugin would fail to load or sealing would fail; it never falls back to
//! a predictable key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crypto_box::PublicKey;
use crypto_box::aead::OsRng;
use keycycle_plugin_sdk::Error;

/// `value` sealed for the base64 Curve25519 public `key`, in base64.
pub(crate) fn seal(key: &str, value: &[u8]) -> Result<String, Error> {
    let raw = STANDARD
        .decode(key.trim())
        .map_err(|_| Error::provider(200, "GitHub's public key is not base64; nothing was sent"))?;
    let raw: [u8; 32] = raw.try_into().map_err(|raw: Vec<u8>| {
        Error::provider(
            200,
            format!(
                "GitHub's public key has {} bytes, not the 32 of a Curve25519 key; nothing was sent",
                raw.len()
            ),
        )
    })?;
    let sealed = PublicKey::from(raw)
        .seal(&mut OsRng, value)
        .map_err(|_| Error::provider(0, "sealing the value failed; nothing was sent"))?;
    Ok(STANDARD.encode(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_the_private_key_only() {
        let secret = crypto_box::SecretKey::generate(&mut OsRng);
        let public = STANDARD.encode(secret.public_key().as_bytes());
        let sealed = seal(&public, b"the value").unwrap();
        let raw = STANDARD.decode(&sealed).unwrap();
        // 32-byte ephemeral public key + 16-byte tag + the message.
        assert_eq!(raw.len(), 32 + 16 + b"the value".len());
        assert_eq!(secret.unseal(&raw).unwrap(), b"the value");
        let other = crypto_box::SecretKey::generate(&mut OsRng);
        assert!(other.unseal(&raw).is_err());
        // Fresh randomness each time: the same value never seals the same.
        assert_ne!(seal(&public, b"the value").unwrap(), sealed);
    }

    #[test]
    fn a_malformed_key_is_refused_before_anything_is_sent() {
        assert!(seal("not base64!", b"v").is_err());
        let short = STANDARD.encode([1u8; 16]);
        let error = seal(&short, b"v").unwrap_err();
        assert!(error.to_string().contains("16 bytes"), "{error}");
    }
}
