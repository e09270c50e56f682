//! Secret values the simulators mint, and how the control API shows them.
//!
//! Inside the simulators every token value is a [`SecretValue`], so Debug
//! output and panics never show one; only the serializers here, used by the
//! control API's "true state", write the clear value.

use std::collections::BTreeMap;

use keycycle_secret::SecretValue;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serializer};

const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `prefix` followed by `len` random URL-safe characters.
pub(crate) fn url_safe_token(prefix: &str, len: usize) -> SecretValue {
    let mut rng = rand::rng();
    let mut value = String::with_capacity(prefix.len() + len);
    value.push_str(prefix);
    for _ in 0..len {
        value.push(char::from(URL_SAFE[rng.random_range(0..URL_SAFE.len())]));
    }
    SecretValue::new(value)
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `prefix` followed by `len` random ASCII letters and digits, the alphabet
/// of GitHub's token bodies.
pub(crate) fn alnum_token(prefix: &str, len: usize) -> SecretValue {
    let mut rng = rand::rng();
    let mut value = String::with_capacity(prefix.len() + len);
    value.push_str(prefix);
    for _ in 0..len {
        value.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    SecretValue::new(value)
}

/// `prefix` followed by `bytes` random bytes in lowercase hex.
pub(crate) fn hex_token(prefix: &str, bytes: usize) -> SecretValue {
    SecretValue::new(format!("{prefix}{}", random_hex(bytes)))
}

/// `bytes` random bytes in lowercase hex, for names that are not secret.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    let raw: Vec<u8> = (0..bytes).map(|_| rng.random::<u8>()).collect();
    hex::encode(raw)
}

/// serde: a [`SecretValue`] as its clear text (control API only).
pub mod expose {
    use super::*;

    pub fn serialize<S: Serializer>(value: &SecretValue, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
        String::deserialize(d).map(SecretValue::new)
    }

    pub fn deserialize_opt<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SecretValue>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretValue::new))
    }

    /// A map of names to secrets, from clear text.
    pub fn deserialize_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, SecretValue>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect())
    }

    /// serde: a map of names to secrets as clear text.
    pub mod map {
        use super::*;

        pub fn serialize<S: Serializer>(
            values: &BTreeMap<String, SecretValue>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_map(values.iter().map(|(k, v)| (k, v.expose())))
        }
    }

    /// serde: an optional [`SecretValue`] as its clear text or null.
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(
            value: &Option<SecretValue>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => s.serialize_str(value.expose()),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_values_have_the_documented_shape() {
        let pat = url_safe_token("glpat-", 20);
        let rest = pat.expose().strip_prefix("glpat-").unwrap();
        assert_eq!(rest.len(), 20);
        assert!(rest.bytes().all(|b| URL_SAFE.contains(&b)));

        let trigger = hex_token("glptt-", 20);
        let rest = trigger.expose().strip_prefix("glptt-").unwrap();
        assert_eq!(rest.len(), 40);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );

        assert_ne!(url_safe_token("x", 20), url_safe_token("x", 20));

        let classic = alnum_token("ghp_", 36);
        let rest = classic.expose().strip_prefix("ghp_").unwrap();
        assert_eq!(rest.len(), 36);
        assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(format!("{pat:?}"), "***");
    }
}
