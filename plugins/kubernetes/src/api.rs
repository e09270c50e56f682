//! One Kubernetes API server at config `api_url`, reached through the host
//! with the service-account token as `Authorization: Bearer`: the request
//! paths of the resources the plugin touches, the namespace an input
//! falls back to, name checks, and how the API server's `Status` errors
//! become the plugin's errors.
//!
//! The API server answers every error with a `Status` object (apimachinery
//! `api/errors`): `{"kind":"Status","reason":"NotFound","message":"secrets
//! \"x\" not found","code":404,...}`. Its `reason` is what a person
//! searches for and its `message` names the object, so both are kept.

use keycycle_plugin_sdk::{Context, Error, Input, Value, http, secret};

/// The secret the plugin acts with: a service-account bearer token.
pub(crate) const TOKEN_SECRET: &str = "token";

/// The wait after a 429 without a usable `Retry-After`. The API server's
/// priority and fairness normally sends `Retry-After: 1`.
const DEFAULT_RETRY_MS: u64 = 2_000;

/// How much of a body that is not a `Status` to keep in a message.
const MAX_TEXT: usize = 300;

/// The API server the operator configured, and the namespace inputs
/// default to.
pub(crate) struct Api {
    base: String,
    default_namespace: Option<String>,
}

impl Api {
    /// From config `api_url` and `namespace`.
    pub(crate) fn new(ctx: &Context) -> Result<Api, Error> {
        let base = ctx.config("api_url")?.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(Error::invalid_input("config value `api_url` is empty"));
        }
        let default_namespace = ctx
            .config_opt("namespace")
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned);
        Ok(Api {
            base: base.to_owned(),
            default_namespace,
        })
    }

    /// Input `namespace`, else config `namespace`; checked to be a name.
    pub(crate) fn namespace(&self, input: &Value) -> Result<String, Error> {
        let namespace = match input.opt_str_field("namespace")?.map(str::trim) {
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => self.default_namespace.clone().ok_or_else(|| {
                Error::invalid_input(
                    "input `namespace` is missing and this plugin's config sets no default \
                     `namespace`",
                )
            })?,
        };
        check_name("namespace", &namespace, 63)?;
        Ok(namespace)
    }

    /// A request to `path` (which starts with `/`) on the API server.
    pub(crate) fn request(&self, method: &str, path: &str) -> Result<http::Request, Error> {
        Ok(http::Request::new(method, format!("{}{path}", self.base))
            .header("Accept", "application/json")
            .bearer(&secret(TOKEN_SECRET)?))
    }

    /// Sends `request`; a 2xx answer as it is, anything else as an error.
    pub(crate) fn send(&self, request: http::Request) -> Result<http::Response, Error> {
        check(request.send()?)
    }

    /// `GET path`, decoded.
    pub(crate) fn get(&self, path: &str) -> Result<Value, Error> {
        self.send(self.request("GET", path)?)?.json()
    }
}

/// `/api/v1/namespaces/{ns}/secrets/{name}`.
pub(crate) fn secret_path(ns: &str, name: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/secrets/{}",
        http::encode(ns),
        http::encode(name)
    )
}

/// `/apis/batch/v1/namespaces/{ns}/cronjobs/{name}`.
pub(crate) fn cronjob_path(ns: &str, name: &str) -> String {
    format!(
        "/apis/batch/v1/namespaces/{}/cronjobs/{}",
        http::encode(ns),
        http::encode(name)
    )
}

/// `/apis/batch/v1/namespaces/{ns}/jobs`, or one Job in it.
pub(crate) fn jobs_path(ns: &str, name: Option<&str>) -> String {
    let collection = format!("/apis/batch/v1/namespaces/{}/jobs", http::encode(ns));
    match name {
        Some(name) => format!("{collection}/{}", http::encode(name)),
        None => collection,
    }
}

/// `/api/v1/namespaces/{ns}/pods`.
pub(crate) fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{}/pods", http::encode(ns))
}

/// `/apis/apps/v1/namespaces/{ns}/deployments/{name}`.
pub(crate) fn deployment_path(ns: &str, name: &str) -> String {
    format!(
        "/apis/apps/v1/namespaces/{}/deployments/{}",
        http::encode(ns),
        http::encode(name)
    )
}

/// The input `field`, trimmed, checked to be an object name the API
/// server could hold (lowercase DNS subdomain, at most `max` characters).
pub(crate) fn name_field<'a>(input: &'a Value, field: &str, max: usize) -> Result<&'a str, Error> {
    let name = input.str_field(field)?.trim();
    check_name(field, name, max)?;
    Ok(name)
}

/// A DNS-1123 subdomain (`[a-z0-9]([-a-z0-9.]*[a-z0-9])?`) of at most
/// `max` characters: what the API server accepts as a name. Checking it
/// here gives a clear error instead of a 404 for a mistyped name.
pub(crate) fn check_name(field: &str, name: &str, max: usize) -> Result<(), Error> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty()
        || name.len() > max
        || !valid_chars
        || !alnum(name.as_bytes().first())
        || !alnum(name.as_bytes().last())
    {
        return Err(Error::invalid_input(format!(
            "input `{field}` must be a Kubernetes name: at most {max} lowercase letters, digits, \
             `-` and `.`, starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters.
pub(crate) fn key_field(input: &Value) -> Result<&str, Error> {
    let key = input.str_field("key")?;
    if key.is_empty()
        || key.len() > 253
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(Error::invalid_input(
            "input `key` must be a Secret data key: letters, digits, `-`, `.` and `_`",
        ));
    }
    Ok(key)
}

/// A 2xx answer as it is; anything else as the error its `Status` says.
pub(crate) fn check(response: http::Response) -> Result<http::Response, Error> {
    if response.is_success() {
        return Ok(response);
    }
    Err(status_error(
        response.status,
        response.header("Retry-After"),
        &response.body,
    ))
}

/// What a `Status` answer says, as one line: `reason: message`.
pub(crate) fn status_message(status: u16, body: &[u8]) -> String {
    let text = |v: &Value| v.as_str().map(str::trim).unwrap_or_default().to_owned();
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => {
            let reason = text(&value["reason"]);
            let message = text(&value["message"]);
            match (reason.is_empty(), message.is_empty()) {
                (false, false) if message.starts_with(&reason) => message,
                (false, false) => format!("{reason}: {message}"),
                (false, true) => reason,
                (true, false) => message,
                (true, true) => format!("the API server answered HTTP {status} with no message"),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                return format!("the API server answered HTTP {status} with no message");
            }
            let mut kept: String = text.chars().take(MAX_TEXT).collect();
            if kept.len() < text.len() {
                kept.push_str(" …");
            }
            kept
        }
    }
}

/// The error for a non-2xx answer. 429 is retryable after `Retry-After`;
/// 401 and 403 say what the operator has to fix, since the API server's
/// own words ("Unauthorized") do not.
pub(crate) fn status_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> Error {
    let message = status_message(status, body);
    match status {
        429 => {
            let delay_ms = retry_delay_ms(retry_after);
            Error::retryable(
                delay_ms,
                format!(
                    "{message} (the API server is limiting requests; try again in {} s)",
                    delay_ms.div_ceil(1000)
                ),
            )
        }
        401 => Error::provider(
            401,
            format!(
                "{message}: the API server does not accept the service-account token (secret \
                 `{TOKEN_SECRET}`); it is unknown, expired, revoked or for another cluster"
            ),
        ),
        403 => Error::provider(
            403,
            format!(
                "{message} (the service account behind secret `{TOKEN_SECRET}` needs a Role \
                 or ClusterRole binding that allows this)"
            ),
        ),
        _ => Error::provider(status, message),
    }
}

/// `Retry-After` seconds as milliseconds, at least one second;
/// [`DEFAULT_RETRY_MS`] when absent or not a number of seconds.
fn retry_delay_ms(retry_after: Option<&str>) -> u64 {
    match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(seconds) => seconds.max(1).saturating_mul(1000),
        None => DEFAULT_RETRY_MS,
    }
}

/// The `reason` of a `Status` body (`AlreadyExists`, `Conflict`, ...), or
/// an empty string: the one way to tell the two kinds of 409 apart.
pub(crate) fn status_reason(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    fn ctx(config: &[(&str, &str)]) -> Context {
        Context::new(
            "run",
            "run-1",
            config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn names_are_never_relative_path_steps() {
        // Every name goes into a path; `.` and `..` would climb out of it.
        for bad in [".", "..", "a/b", "-a", ""] {
            assert!(check_name("name", bad, 253).is_err(), "{bad}");
        }
        assert_eq!(
            secret_path("apps", "a.b"),
            "/api/v1/namespaces/apps/secrets/a.b"
        );
    }

    #[test]
    fn status_objects_keep_reason_and_message() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"secrets"},"code":404}"#;
        assert_eq!(
            status_error(404, None, body),
            Error::provider(404, "NotFound: secrets \"x\" not found")
        );
        let conflict = br#"{"kind":"Status","reason":"Conflict","message":"Operation cannot be fulfilled on secrets \"x\": the object has been modified; please apply your changes to the latest version and try again","code":409}"#;
        let Error::Provider { status, message } = status_error(409, None, conflict) else {
            panic!("not a provider error")
        };
        assert_eq!(status, 409);
        assert!(
            message.starts_with("Conflict: Operation cannot"),
            "{message}"
        );
        assert_eq!(status_reason(conflict), "Conflict");
        assert_eq!(status_reason(b"<html>"), "");
    }

    #[test]
    fn bodies_that_are_not_status() {
        assert_eq!(
            status_message(404, b""),
            "the API server answered HTTP 404 with no message"
        );
        assert_eq!(status_message(502, b"bad gateway\n"), "bad gateway");
        assert_eq!(
            status_message(
                401,
                br#"{"kind":"Status","reason":"Unauthorized","message":"Unauthorized"}"#
            ),
            "Unauthorized"
        );
        assert!(status_message(500, "x".repeat(1000).as_bytes()).ends_with('…'));
    }

    #[test]
    fn rate_limits_are_retryable_and_auth_errors_say_what_to_fix() {
        let body = br#"{"kind":"Status","reason":"TooManyRequests","message":"Too many requests, please try again later.","code":429}"#;
        match status_error(429, Some("3"), body) {
            Error::Retryable { delay_ms, message } => {
                assert_eq!(delay_ms, 3_000);
                assert!(
                    message.starts_with("TooManyRequests: Too many"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        match status_error(429, None, b"") {
            Error::Retryable { delay_ms, .. } => assert_eq!(delay_ms, DEFAULT_RETRY_MS),
            other => panic!("{other:?}"),
        }
        let Error::Provider { status, message } = status_error(
            401,
            None,
            br#"{"kind":"Status","reason":"Unauthorized","message":"Unauthorized","code":401}"#,
        ) else {
            panic!("not a provider error")
        };
        assert_eq!(status, 401);
        assert!(message.contains("service-account token"), "{message}");
        let forbidden = br#"{"kind":"Status","reason":"Forbidden","message":"secrets \"x\" is forbidden: User \"system:serviceaccount:ops:kc\" cannot get resource \"secrets\" in API group \"\" in the namespace \"apps\"","code":403}"#;
        let Error::Provider { status, message } = status_error(403, None, forbidden) else {
            panic!("not a provider error")
        };
        assert_eq!(status, 403);
        assert!(message.starts_with("Forbidden: secrets \"x\" is forbidden"));
        assert!(message.contains("Role"), "{message}");
    }

    #[test]
    fn namespace_comes_from_the_input_else_the_config() {
        let api = Api::new(&ctx(&[
            ("api_url", "https://k8s.example:6443/"),
            ("namespace", "apps"),
        ]))
        .unwrap();
        assert_eq!(api.base, "https://k8s.example:6443");
        assert_eq!(api.namespace(&json!({})).unwrap(), "apps");
        assert_eq!(api.namespace(&json!({"namespace": "ops"})).unwrap(), "ops");
        assert!(api.namespace(&json!({"namespace": "../x"})).is_err());
        let api = Api::new(&ctx(&[("api_url", "https://k8s.example")])).unwrap();
        let e = api.namespace(&json!({})).unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
    }

    #[test]
    fn names_and_keys_are_checked() {
        for good in ["a", "signon-token-x", "a.b-1"] {
            assert!(check_name("name", good, 63).is_ok(), "{good}");
        }
        for bad in ["", "A", "-a", "a-", "a/b", "a b", &"a".repeat(64)] {
            assert!(check_name("name", bad, 63).is_err(), "{bad}");
        }
        assert!(key_field(&json!({"key": "bearer_token"})).is_ok());
        assert!(key_field(&json!({"key": ".env-X_1"})).is_ok());
        assert!(key_field(&json!({"key": "a/b"})).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(
            secret_path("apps", "s"),
            "/api/v1/namespaces/apps/secrets/s"
        );
        assert_eq!(
            cronjob_path("apps", "cj"),
            "/apis/batch/v1/namespaces/apps/cronjobs/cj"
        );
        assert_eq!(
            jobs_path("apps", None),
            "/apis/batch/v1/namespaces/apps/jobs"
        );
        assert_eq!(
            jobs_path("apps", Some("j")),
            "/apis/batch/v1/namespaces/apps/jobs/j"
        );
        assert_eq!(pods_path("apps"), "/api/v1/namespaces/apps/pods");
        assert_eq!(
            deployment_path("apps", "d"),
            "/apis/apps/v1/namespaces/apps/deployments/d"
        );
    }
}
