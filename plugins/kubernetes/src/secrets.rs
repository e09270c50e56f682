//! The Secret operations: what keys a Secret holds (digests, never values),
//! one key's value as a secret output, whether a key holds an expected
//! value, and setting one key with a merge patch guarded by the Secret's
//! resourceVersion.
//!
//! Values are compared and digested after base64 decoding, so a value
//! written by Ruby's `Base64.encode64` (wrapped lines) and the same value
//! written by kubectl compare equal.

use std::collections::BTreeMap;
use std::time::Duration;

use keycycle_plugin_sdk::{Error, Input, Value, json, log};

use crate::api::{self, Api};
use crate::values::{decode, encode, fingerprint, same_bytes};

/// How many times `patch_secret_key` tries when another writer keeps
/// changing the Secret between its read and its patch.
const PATCH_ATTEMPTS: u32 = 5;

/// The pause before the next try after a conflict, times the attempt.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(200);

/// What the plugin needs of a Secret answer.
pub(crate) struct Secret {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) resource_version: String,
    pub(crate) type_: String,
    /// Decoded values; `None` for a value that is not base64.
    pub(crate) data: BTreeMap<String, Option<Vec<u8>>>,
}

impl Secret {
    /// From a Secret object as the API serves it.
    pub(crate) fn from_object(object: &Value) -> Secret {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let data = object["data"]
            .as_object()
            .map(|data| {
                data.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().and_then(decode)))
                    .collect()
            })
            .unwrap_or_default();
        Secret {
            name: text(&object["metadata"]["name"]),
            namespace: text(&object["metadata"]["namespace"]),
            resource_version: text(&object["metadata"]["resourceVersion"]),
            type_: object["type"].as_str().unwrap_or("Opaque").to_owned(),
            data,
        }
    }

    /// The decoded value of `key`: provider 404 when the Secret has no
    /// such key (naming the keys it has), 422 when it is not base64.
    fn value(&self, key: &str) -> Result<&[u8], Error> {
        match self.data.get(key) {
            Some(Some(value)) => Ok(value),
            Some(None) => Err(Error::provider(
                422,
                format!(
                    "the value of key `{key}` in secret {}/{} is not base64",
                    self.namespace, self.name
                ),
            )),
            None => Err(Error::provider(
                404,
                format!(
                    "secret {}/{} has no key `{key}` (its keys: {})",
                    self.namespace,
                    self.name,
                    self.key_list()
                ),
            )),
        }
    }

    fn key_list(&self) -> String {
        if self.data.is_empty() {
            return "none".to_owned();
        }
        self.data.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// `{name, namespace, resource_version, type, keys: {KEY: {fingerprint,
    /// length}}}`: enough to tell values apart, nothing to recover one.
    pub(crate) fn summary(&self) -> Value {
        let keys: serde_json::Map<String, Value> = self
            .data
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    Some(bytes) => {
                        json!({ "fingerprint": fingerprint(bytes), "length": bytes.len() })
                    }
                    None => json!({ "fingerprint": null, "length": null, "error": "not base64" }),
                };
                (k.clone(), shown)
            })
            .collect();
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "resource_version": self.resource_version,
            "type": self.type_,
            "keys": keys,
        })
    }
}

fn get(api: &Api, ns: &str, name: &str) -> Result<Secret, Error> {
    Ok(Secret::from_object(&api.get(&api::secret_path(ns, name))?))
}

/// `read_secret`: the Secret's keys with the digest and length of each
/// value.
pub(crate) fn read_secret(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 253)?;
    Ok(get(api, &ns, name)?.summary())
}

/// `read_secret_key`: one key's value (a secret output) and its digest.
pub(crate) fn read_secret_key(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 253)?;
    let key = api::key_field(input)?;
    let secret = get(api, &ns, name)?;
    let bytes = secret.value(key)?;
    // Runbook values are text; a binary value could only be mangled.
    let value = std::str::from_utf8(bytes).map_err(|_| {
        Error::provider(
            422,
            format!("the value of key `{key}` in secret {ns}/{name} is binary, not UTF-8 text"),
        )
    })?;
    Ok(json!({
        "value": value,
        "fingerprint": fingerprint(bytes),
        "resource_version": secret.resource_version,
    }))
}

/// `secret_key_matches`: whether `key` holds `expected`, compared in
/// constant time. A missing key does not match (its digest is null).
pub(crate) fn secret_key_matches(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 253)?;
    let key = api::key_field(input)?;
    let expected = input.str_field("expected")?.as_bytes();
    let secret = get(api, &ns, name)?;
    let current = match secret.data.get(key) {
        None => None,
        Some(_) => Some(secret.value(key)?),
    };
    Ok(json!({
        "matches": current.is_some_and(|c| same_bytes(c, expected)),
        "fingerprint_current": current.map(fingerprint),
        "fingerprint_expected": fingerprint(expected),
        "resource_version": secret.resource_version,
    }))
}

/// The merge patch that sets `key` to `value` only if the Secret is still
/// at `resource_version` (else 409 Conflict).
pub(crate) fn key_patch(resource_version: &str, key: &str, value: &[u8]) -> Value {
    json!({
        "metadata": { "resourceVersion": resource_version },
        "data": { key: encode(value) },
    })
}

/// `patch_secret_key`: read the Secret, then set `key` with a merge patch
/// carrying the resourceVersion read, so a concurrent writer (a sync job,
/// a controller) is never overwritten blind: on 409 Conflict it reads
/// again and retries. A key that already holds the value is not written.
pub(crate) fn patch_secret_key(api: &Api, input: &Value) -> Result<Value, Error> {
    let ns = api.namespace(input)?;
    let name = api::name_field(input, "name", 253)?;
    let key = api::key_field(input)?;
    let value = input.str_field("value")?.as_bytes();
    let digest = fingerprint(value);
    let path = api::secret_path(&ns, name);
    let mut attempt = 1;
    loop {
        let secret = get(api, &ns, name)?;
        if let Some(Some(current)) = secret.data.get(key)
            && same_bytes(current, value)
        {
            return Ok(json!({
                "name": name,
                "namespace": ns,
                "key": key,
                "resource_version": secret.resource_version,
                "fingerprint": digest,
                "changed": false,
            }));
        }
        let request = api
            .request("PATCH", &path)?
            .header("Content-Type", "application/merge-patch+json")
            .body(key_patch(&secret.resource_version, key, value).to_string());
        let response = request.send()?;
        if response.status == 409
            && api::status_reason(&response.body) == "Conflict"
            && attempt < PATCH_ATTEMPTS
        {
            log::info(&format!(
                "secret {ns}/{name} changed since it was read (attempt {attempt} of \
                 {PATCH_ATTEMPTS}); reading it again"
            ));
            std::thread::sleep(CONFLICT_BACKOFF * attempt);
            attempt += 1;
            continue;
        }
        let patched = Secret::from_object(&api::check(response)?.json()?);
        log::info(&format!(
            "set key `{key}` of secret {ns}/{name} (resourceVersion {})",
            patched.resource_version
        ));
        return Ok(json!({
            "name": name,
            "namespace": ns,
            "key": key,
            "resource_version": patched.resource_version,
            "fingerprint": digest,
            "changed": true,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "signon-token-a-b", "namespace": "apps", "resourceVersion": "42" },
            "type": "Opaque",
            "data": {
                "bearer_token": "c2VjcmV0LXRva2Vu",
                "wrapped": "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh\nYWFhYWE=\n",
                "broken": "%%%",
            },
        })
    }

    #[test]
    fn the_summary_shows_digests_and_lengths_never_values() {
        let secret = Secret::from_object(&object());
        let summary = secret.summary();
        assert_eq!(summary["resource_version"], "42");
        assert_eq!(summary["type"], "Opaque");
        assert_eq!(summary["keys"]["bearer_token"]["length"], 12);
        assert_eq!(
            summary["keys"]["bearer_token"]["fingerprint"],
            fingerprint(b"secret-token")
        );
        assert_eq!(summary["keys"]["wrapped"]["length"], 50);
        assert_eq!(summary["keys"]["broken"]["fingerprint"], Value::Null);
        let text = summary.to_string();
        assert!(
            !text.contains("secret-token") && !text.contains("c2VjcmV0"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_key_is_a_404_that_lists_the_keys() {
        let secret = Secret::from_object(&object());
        assert_eq!(secret.value("bearer_token").unwrap(), b"secret-token");
        match secret.value("nope") {
            Err(Error::Provider {
                status: 404,
                message,
            }) => {
                assert!(
                    message.contains("bearer_token, broken, wrapped"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            secret.value("broken"),
            Err(Error::Provider { status: 422, .. })
        ));
    }

    #[test]
    fn the_patch_is_guarded_by_the_resource_version() {
        assert_eq!(
            key_patch("42", "bearer_token", b"new"),
            json!({ "metadata": { "resourceVersion": "42" }, "data": { "bearer_token": "bmV3" } })
        );
    }

    #[test]
    fn a_secret_without_data_has_no_keys() {
        let secret = Secret::from_object(&json!({ "metadata": { "name": "e", "namespace": "n" } }));
        assert_eq!(secret.summary()["keys"], json!({}));
        assert_eq!(secret.type_, "Opaque");
        match secret.value("k") {
            Err(Error::Provider { message, .. }) => assert!(message.contains("none"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
