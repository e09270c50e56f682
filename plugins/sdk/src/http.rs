//! An HTTP client over the host's `http-send`: the only way out of the
//! sandbox. The host sends the request only to origins granted to the
//! plugin and follows redirects only through granted origins.
//!
//! ```ignore
//! let response = http::Request::post(format!("{base}/api/tokens"))
//!     .bearer(&secret("token")?)
//!     .json(&json!({"name": name}))
//!     .send()?;
//! let created: Created = response.json()?;
//! ```

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::keycycle::plugin::host;
use crate::error::describe_json_error;

/// Everything but RFC 3986 unreserved characters is encoded, so a value
/// means the same to every server whatever its view of `+`, `;` or `/`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode `value` for use as a query component. For a path
/// segment use [`segment`], which also refuses the values that would not
/// stay one segment.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// `value` as exactly one URL path segment: everything outside the RFC 3986
/// unreserved characters is percent-encoded (`/` included, so a value can
/// never add a segment), and the values a URL parser would treat as a
/// relative step (`.` and `..`, which climb out of the resource the path
/// names: `/projects/../hooks` is `/hooks`) or that leave the segment empty
/// are refused. `what` names the value in the error, which never quotes the
/// value itself.
///
/// ```ignore
/// let path = format!("/projects/{}/hooks", http::segment(project, "input `project`")?);
/// ```
pub fn segment(value: &str, what: &str) -> Result<String, Error> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(Error::invalid_input(format!(
            "{what} cannot be used in a URL path: it is empty, `.` or `..`"
        )));
    }
    Ok(encode(value))
}

/// An HTTP request being built. Nothing is sent until [`Request::send`].
///
/// There is no `Debug`: headers carry credentials.
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A body that failed to encode; reported by `send`, so that building
    /// stays a plain chain of calls.
    error: Option<Error>,
}

impl Request {
    /// A request with any method, such as `"PATCH"` or `"HEAD"`.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            error: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Request::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Request::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Request::new("DELETE", url)
    }

    /// Set the header `name` to `value`, replacing any earlier value
    /// (header names compare case-insensitively).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Authenticate with `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// Append the query parameter `key=value`, percent-encoding both.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        let (base, fragment) = match self.url.split_once('#') {
            Some((base, fragment)) => (base.to_owned(), Some(fragment.to_owned())),
            None => (self.url.clone(), None),
        };
        let separator = match base.find('?') {
            None => "?",
            Some(_) if base.ends_with('?') || base.ends_with('&') => "",
            Some(_) => "&",
        };
        let mut url = format!("{base}{separator}{}={}", encode(key), encode(value));
        if let Some(fragment) = fragment {
            url.push('#');
            url.push_str(&fragment);
        }
        self.url = url;
        self
    }

    /// Send `value` as a JSON body with `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => self.body = body,
            Err(e) => {
                self.error = Some(Error::invalid_input(format!(
                    "the request body for {} cannot be encoded as JSON ({})",
                    self.method,
                    describe_json_error(&e)
                )));
            }
        }
        self.header("Content-Type", "application/json")
    }

    /// Send `pairs` as an `application/x-www-form-urlencoded` body.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k.as_ref()), encode(v.as_ref())))
            .collect();
        self.body = encoded.join("&").into_bytes();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }

    /// Send `body` as it is; set `Content-Type` with [`Request::header`].
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The URL as it will be sent, query included.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body as it will be sent.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The value of header `name`, compared case-insensitively.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Send the request through the host and wait for the answer. Any
    /// status is an answer: check [`Response::is_success`].
    ///
    /// A request the sandbox refuses becomes [`Error::Denied`]; a timeout,
    /// connection failure or oversized answer becomes [`Error::Provider`]
    /// with status 0.
    pub fn send(self) -> Result<Response, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let request = host::HttpRequest {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
        };
        match host::http_send(&request) {
            Ok(response) => Ok(Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(error.into()),
        }
    }
}

impl From<host::HttpError> for Error {
    fn from(error: host::HttpError) -> Self {
        match error {
            host::HttpError::Denied(m) => Error::Denied(m),
            host::HttpError::Timeout(m) => Error::provider(0, format!("request timed out: {m}")),
            host::HttpError::Transport(m) => Error::provider(0, format!("request failed: {m}")),
            host::HttpError::TooLarge(m) => {
                Error::provider(0, format!("response is too large: {m}"))
            }
        }
    }
}

/// An HTTP answer, whatever its status.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, in the order received.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl Response {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON into `T`. A body of the wrong shape is a
    /// provider error carrying this response's status.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::provider(
                self.status,
                format!(
                    "the response body is not the JSON expected ({})",
                    describe_json_error(&e)
                ),
            )
        })
    }

    /// The delay a `Retry-After: <seconds>` header asks for. An HTTP-date
    /// form is not understood and gives `None`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("Retry-After")?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

/// How long a 429 or 503 without a usable `Retry-After` asks the host to
/// wait, in milliseconds.
pub const DEFAULT_RETRY_MS: u64 = 5_000;

/// How much of a text body (a proxy's error page) a message keeps.
const MAX_TEXT_MESSAGE: usize = 300;

impl Response {
    /// The response itself when its status is 2xx, else [`Response::to_error`]:
    /// the mapping every plugin needs, so that none writes it again.
    ///
    /// ```ignore
    /// let token: Token = http::Request::get(url).bearer(&t).send()?.error_for_status()?.json()?;
    /// ```
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.to_error())
        }
    }

    /// The error a runbook should see for this answer:
    ///
    /// - 429, and 503 with `Retry-After`: [`Error::Retryable`] after the
    ///   delay the provider asks for (at least a second), or
    ///   [`DEFAULT_RETRY_MS`]; the host waits and asks again.
    /// - anything else: [`Error::Provider`] with the status and the
    ///   provider's own message: a JSON body's `message`,
    ///   `error_description`, `error` or `errors`, else the text of the body
    ///   (cut to 300 characters), else `HTTP <status>`.
    ///
    /// Only the message is taken from the body, never the whole body, which
    /// may echo what was sent. Look at the status first where a provider
    /// gives it a meaning of its own (a 404 that means "already gone").
    pub fn to_error(&self) -> Error {
        self.to_error_with_default_retry(DEFAULT_RETRY_MS)
    }

    /// [`Response::to_error`], waiting `default_ms` when a 429 does not say
    /// how long: providers document their own pace.
    pub fn to_error_with_default_retry(&self, default_ms: u64) -> Error {
        let message = self.message();
        let retry = match self.status {
            429 => Some(self.retry_delay_ms(default_ms)),
            503 if self.retry_after().is_some() => Some(self.retry_delay_ms(default_ms)),
            _ => None,
        };
        match retry {
            Some(delay_ms) => Error::retryable(delay_ms, message),
            None => Error::provider(self.status, message),
        }
    }

    fn retry_delay_ms(&self, default_ms: u64) -> u64 {
        self.retry_after().map_or(default_ms, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1_000)
        })
    }

    /// The provider's message for an error answer (see [`Response::to_error`]).
    fn message(&self) -> String {
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            for key in ["message", "error_description", "error"] {
                if let Some(text) = body[key].as_str().filter(|t| !t.trim().is_empty()) {
                    return text.to_owned();
                }
            }
            if let Some(errors) = body["errors"].as_array() {
                let texts: Vec<&str> = errors.iter().filter_map(|e| e.as_str()).collect();
                if !texts.is_empty() {
                    return texts.join("; ");
                }
            }
        }
        match self.text().trim() {
            "" => format!("HTTP {}", self.status),
            text => text.chars().take(MAX_TEXT_MESSAGE).collect(),
        }
    }
}

/// Shows the status and body size only: bodies can carry secrets.
impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_one_encoded_segment_and_never_a_relative_step() {
        assert_eq!(segment("acme/api", "x").unwrap(), "acme%2Fapi");
        assert_eq!(segment("a b?c#d%e", "x").unwrap(), "a%20b%3Fc%23d%25e");
        assert_eq!(segment("v1.2-x_y~z", "x").unwrap(), "v1.2-x_y~z");
        assert_eq!(segment("ü", "x").unwrap(), "%C3%BC");
        assert_eq!(segment("...", "x").unwrap(), "...");
        // Already encoded dots are encoded again, so they stay literal.
        assert_eq!(segment("%2e%2e", "x").unwrap(), "%252e%252e");
        assert_eq!(segment("../x", "x").unwrap(), "..%2Fx");
        for bad in ["", ".", ".."] {
            let err = segment(bad, "input `project`").unwrap_err();
            assert!(
                err.to_string()
                    .contains("input `project` cannot be used in a URL path"),
                "{err}"
            );
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_success_passes_and_an_error_answer_becomes_the_runbooks_error() {
        let ok = answer(201, &[], "{}").error_for_status().unwrap();
        assert_eq!(ok.status, 201);
        assert_eq!(
            answer(404, &[], r#"{"message":"404 Project Not Found"}"#).to_error(),
            Error::provider(404, "404 Project Not Found")
        );
        assert_eq!(
            answer(
                400,
                &[],
                r#"{"error":"invalid_grant","error_description":"expired"}"#
            )
            .to_error(),
            Error::provider(400, "expired")
        );
        assert_eq!(
            answer(422, &[], r#"{"errors":["name taken","scope unknown"]}"#).to_error(),
            Error::provider(422, "name taken; scope unknown")
        );
        assert_eq!(
            answer(502, &[], "<html>Bad gateway</html>\n").to_error(),
            Error::provider(502, "<html>Bad gateway</html>")
        );
        assert_eq!(
            answer(500, &[], "").to_error(),
            Error::provider(500, "HTTP 500")
        );
        let long = "x".repeat(1000);
        match answer(500, &[], &long).to_error() {
            Error::Provider { message, .. } => assert_eq!(message.len(), 300),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_limits_are_retryable_after_what_the_provider_asks() {
        assert_eq!(
            answer(429, &[("retry-after", "7")], r#"{"message":"slow down"}"#).to_error(),
            Error::retryable(7_000, "slow down")
        );
        // No usable header: the default; zero seconds: at least one.
        assert_eq!(
            answer(429, &[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")], "").to_error(),
            Error::retryable(DEFAULT_RETRY_MS, "HTTP 429")
        );
        assert_eq!(
            answer(429, &[("Retry-After", "0")], "").to_error(),
            Error::retryable(1_000, "HTTP 429")
        );
        // 503 is retryable only when the provider says when.
        assert_eq!(
            answer(503, &[("Retry-After", "2")], "").to_error(),
            Error::retryable(2_000, "HTTP 503")
        );
        assert_eq!(
            answer(503, &[], "").to_error(),
            Error::provider(503, "HTTP 503")
        );
        assert!(answer(429, &[], "").error_for_status().is_err());
        assert_eq!(
            answer(429, &[], "").to_error_with_default_retry(60_000),
            Error::retryable(60_000, "HTTP 429")
        );
    }

    #[test]
    fn query_is_percent_encoded_and_appended() {
        let r = Request::get("https://x.test/api/tokens").query("name", "ci [k/1&2=3 ü]");
        assert_eq!(
            r.url(),
            "https://x.test/api/tokens?name=ci%20%5Bk%2F1%262%3D3%20%C3%BC%5D"
        );
        let r = r.query("a b", "-._~");
        assert!(r.url().ends_with("&a%20b=-._~"), "{}", r.url());
    }

    #[test]
    fn query_keeps_existing_query_and_fragment() {
        let r = Request::get("https://x.test/p?x=1#frag").query("y", "2");
        assert_eq!(r.url(), "https://x.test/p?x=1&y=2#frag");
        let r = Request::get("https://x.test/p?").query("y", "2");
        assert_eq!(r.url(), "https://x.test/p?y=2");
    }

    #[test]
    fn form_body_and_content_type() {
        let r = Request::post("https://x.test/").form(&[("grant_type", "a b"), ("x", "1+1")]);
        assert_eq!(r.body_bytes(), b"grant_type=a%20b&x=1%2B1");
        assert_eq!(
            r.header_value("content-type"),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[test]
    fn json_body_bearer_and_header_replacement() {
        let r = Request::post("https://x.test/")
            .header("authorization", "old")
            .bearer("abc")
            .json(&serde_json::json!({"name": "n"}));
        assert_eq!(r.body_bytes(), br#"{"name":"n"}"#);
        assert_eq!(r.header_value("Authorization"), Some("Bearer abc"));
        assert_eq!(r.headers.len(), 2);
    }

    #[test]
    fn response_helpers() {
        let r = Response {
            status: 429,
            headers: vec![("retry-after".into(), " 7 ".into())],
            body: br#"{"message":"slow down"}"#.to_vec(),
        };
        assert!(!r.is_success());
        assert_eq!(r.header("Retry-After"), Some(" 7 "));
        assert_eq!(r.retry_after(), Some(Duration::from_secs(7)));
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["message"], "slow down");
        assert!(format!("{r:?}").contains("429"));
        assert!(!format!("{r:?}").contains("slow down"));
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let r = Response {
            status: 200,
            headers: vec![],
            body: br#"{"id":"demo-secret-value"}"#.to_vec(),
        };
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Id {
            id: u64,
        }
        let err = r.json::<Id>().unwrap_err();
        assert!(matches!(err, Error::Provider { status: 200, .. }));
        assert!(!err.to_string().contains("demo-secret-value"), "{err}");
    }
}
