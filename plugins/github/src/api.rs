//! The GitHub REST API at `base_url`, reached through the host: the headers
//! GitHub asks every client to send, GitHub's error messages, and its rate
//! limits turned into retryable errors.
//!
//! Nothing here sends a request twice. A rate-limited answer is handed back
//! to the host as retryable (the host retries only non-mutating calls).

use std::time::{SystemTime, UNIX_EPOCH};

use keycycle_plugin_sdk::{Context, Error, Value, http, secret};

/// The secret the plugin acts with: a personal access token.
pub(crate) const TOKEN_SECRET: &str = "token";

/// Where GitHub's REST API lives unless config `base_url` says otherwise
/// (GitHub Enterprise Server: `https://HOST/api/v3`).
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.github.com";

/// The REST API version the plugin was written against (reference header).
pub(crate) const API_VERSION: &str = "2022-11-28";

/// The wait after a rate-limited answer that says nothing usable about when
/// to come back: GitHub's docs ask for at least a minute.
pub(crate) const DEFAULT_RETRY_MS: u64 = 60_000;

/// The longest wait a reset time may ask for: the primary limit resets
/// within the hour.
const MAX_RETRY_MS: u64 = 3_600_000;

/// The instance the operator configured.
pub(crate) struct Api {
    base: String,
}

impl Api {
    /// From config `base_url`, or GitHub.com's API.
    pub(crate) fn new(ctx: &Context) -> Api {
        let base = ctx
            .config_opt("base_url")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .unwrap_or(DEFAULT_BASE_URL);
        Api {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// A request to `path` (which starts with `/`) with GitHub's headers,
    /// not yet authenticated.
    pub(crate) fn request(&self, method: &str, path: &str) -> http::Request {
        http::Request::new(method, format!("{}{path}", self.base))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            // GitHub refuses requests without a User-Agent.
            .header(
                "User-Agent",
                concat!("keycycle-plugin-github/", env!("CARGO_PKG_VERSION")),
            )
    }

    /// Sends `request` with the plugin's token; a non-2xx answer becomes an
    /// error carrying GitHub's status and message.
    pub(crate) fn send(&self, request: http::Request) -> Result<http::Response, Error> {
        let token = secret(TOKEN_SECRET)?;
        check(request.bearer(&token).send()?)
    }

    /// [`Api::send`] and decode the JSON answer.
    pub(crate) fn json(&self, request: http::Request) -> Result<Value, Error> {
        self.send(request)?.json()
    }
}

/// A 2xx answer as it is; anything else as an error that keeps GitHub's
/// message. Rate limits (reference: "Exceeded → 403 or 429 with remaining
/// 0; secondary limits may send `retry-after`") are retryable after the
/// delay GitHub gives.
pub(crate) fn check(response: http::Response) -> Result<http::Response, Error> {
    if response.is_success() {
        return Ok(response);
    }
    let message = message(response.status, &response.body);
    if let Some(delay_ms) = rate_limited(&response) {
        return Err(Error::retryable(
            delay_ms,
            format!(
                "GitHub's rate limit refused the request ({message}); try again in {} s",
                delay_ms.div_ceil(1000)
            ),
        ));
    }
    if response.status == 401 {
        return Err(Error::provider(
            401,
            format!("unauthorized: {message} (the token is unknown, revoked or expired)"),
        ));
    }
    Err(Error::provider(response.status, message))
}

/// The delay a rate-limited answer asks for, or `None` when the answer is
/// not about a rate limit. A 403 is a rate limit only when it says so in
/// its headers: most 403s are missing scopes or rights, which waiting does
/// not fix.
pub(crate) fn rate_limited(response: &http::Response) -> Option<u64> {
    let exhausted = response
        .header("x-ratelimit-remaining")
        .is_some_and(|r| r.trim() == "0");
    let retry_after = response
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limited = match response.status {
        429 => true,
        403 => exhausted || retry_after.is_some(),
        _ => false,
    };
    if !limited {
        return None;
    }
    if let Some(seconds) = retry_after {
        // A `0` still waits a second, so retries do not become a burst.
        return Some(seconds.max(1).saturating_mul(1000));
    }
    let reset = response
        .header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(match (exhausted, reset) {
        (true, Some(reset)) => until(reset),
        _ => DEFAULT_RETRY_MS,
    })
}

/// Milliseconds until epoch second `reset`, at least one second and at
/// most an hour (a wrong clock must not make the host wait for days).
fn until(reset: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    reset
        .saturating_sub(now)
        .max(1)
        .saturating_mul(1000)
        .min(MAX_RETRY_MS)
}

/// How much of a non-JSON body to keep: an HTML page from a proxy says
/// little beyond its first lines.
const MAX_TEXT: usize = 300;

/// GitHub's `message`, with the `errors[]` of a 422 appended (reference:
/// "Error body: `{message, documentation_url, status}`; 422 adds
/// `errors[]`").
pub(crate) fn message(status: u16, body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => {
            let head = fields
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned();
            let details: Vec<String> = fields
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(error_detail)
                .filter(|d| !d.is_empty())
                .collect();
            if details.is_empty() {
                head
            } else {
                format!("{head} ({})", details.join("; "))
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(MAX_TEXT) {
                Some((at, _)) => format!("{}…", &text[..at]),
                None => text.to_owned(),
            }
        }
    };
    if text.is_empty() {
        format!("GitHub answered HTTP {status} with no message")
    } else {
        text
    }
}

/// One of `errors[]`: a string, or `{resource, field, code, message}`.
fn error_detail(error: &Value) -> String {
    if let Some(text) = error.as_str() {
        return text.to_owned();
    }
    let part = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut out = String::new();
    if !part("field").is_empty() {
        out.push_str(part("field"));
        out.push_str(": ");
    }
    out.push_str(match part("message") {
        "" => part("code"),
        m => m,
    });
    out.trim_end_matches(": ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> http::Response {
        http::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn every_request_carries_githubs_headers() {
        let ctx = Context::new("run", "key", vec![]);
        let request = Api::new(&ctx).request("GET", "/user");
        assert_eq!(request.url(), "https://api.github.com/user");
        assert_eq!(
            request.header_value("accept"),
            Some("application/vnd.github+json")
        );
        assert_eq!(
            request.header_value("x-github-api-version"),
            Some("2022-11-28")
        );
        assert!(
            request
                .header_value("user-agent")
                .is_some_and(|ua| ua.starts_with("keycycle-plugin-github/"))
        );
        let ctx = Context::new(
            "run",
            "key",
            vec![("base_url".into(), " http://127.0.0.1:9/api/v3/ ".into())],
        );
        assert_eq!(
            Api::new(&ctx).request("GET", "/user").url(),
            "http://127.0.0.1:9/api/v3/user"
        );
    }

    #[test]
    fn errors_keep_githubs_message() {
        let body = br#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest","status":"401"}"#;
        match check(response(401, &[], body)).unwrap_err() {
            Error::Provider { status, message } => {
                assert_eq!(status, 401);
                assert!(
                    message.starts_with("unauthorized: Bad credentials"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"Secret","field":"key_id","code":"invalid"}],"status":"422"}"#;
        assert_eq!(
            check(response(422, &[], body)).unwrap_err(),
            Error::provider(422, "Validation Failed (key_id: invalid)")
        );
        let body = br#"{"message":"Must have admin rights to Repository.","status":"403"}"#;
        assert_eq!(
            check(response(403, &[("x-ratelimit-remaining", "4999")], body)).unwrap_err(),
            Error::provider(403, "Must have admin rights to Repository.")
        );
        assert_eq!(
            check(response(502, &[], b"")).unwrap_err(),
            Error::provider(502, "GitHub answered HTTP 502 with no message")
        );
        assert!(check(response(204, &[], b"")).is_ok());
    }

    #[test]
    fn rate_limits_are_retryable_after_the_delay_github_gives() {
        // Secondary limit: a 403 with retry-after.
        match check(response(403, &[("retry-after", "30")], b"{}")).unwrap_err() {
            Error::Retryable { delay_ms, .. } => assert_eq!(delay_ms, 30_000),
            other => panic!("{other:?}"),
        }
        // 429 without any header: the default wait.
        match check(response(429, &[], b"Retry later")).unwrap_err() {
            Error::Retryable { delay_ms, message } => {
                assert_eq!(delay_ms, DEFAULT_RETRY_MS);
                assert!(message.contains("Retry later"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Primary limit: remaining 0 and a reset time 90 s from now.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = (now + 90).to_string();
        let limited = response(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            br#"{"message":"API rate limit exceeded for user ID 1."}"#,
        );
        match check(limited).unwrap_err() {
            Error::Retryable { delay_ms, message } => {
                assert!((85_000..=90_000).contains(&delay_ms), "{delay_ms}");
                assert!(message.contains("API rate limit exceeded"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A reset in the past still waits a second; one far away an hour.
        let past = response(
            403,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
            b"",
        );
        assert_eq!(rate_limited(&past), Some(1_000));
        let far = response(
            429,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "99999999999"),
            ],
            b"",
        );
        assert_eq!(rate_limited(&far), Some(MAX_RETRY_MS));
    }
}
