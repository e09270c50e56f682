//! The Zendesk API at the instance's `base_url`, reached through the host:
//! authentication (OAuth bearer token or API token over Basic), Zendesk's
//! error messages, its rate limiter, and pagination.
//!
//! Nothing here sends a request twice. A 429 is handed back to the host as
//! retryable (the host retries only non-mutating calls); a 5xx or a lost
//! connection is reported as it is, because the provider reference does not
//! say whether Zendesk may have acted before failing.

use keycycle_plugin_sdk::{Context, Error, Value, http, secret};

use crate::{messages, pages};

/// The secret the plugin acts with: an OAuth access token, or an API token
/// when config `auth` is `api_token`.
pub(crate) const TOKEN_SECRET: &str = "token";

/// The wait after a 429 that carries no usable `Retry-After`. Zendesk's
/// rate limits are per minute, so a short wait would most likely be
/// refused again.
pub(crate) const DEFAULT_RETRY_MS: u64 = 10_000;

/// How the plugin's secret is presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <token>` (config `auth` = `oauth`, the default).
    OAuth,
    /// `Authorization: Basic base64("{email}/token:{token}")`.
    ApiToken { email: String },
}

impl Auth {
    /// From config `auth` and `email`.
    pub(crate) fn from_config(auth: Option<&str>, email: Option<&str>) -> Result<Auth, Error> {
        match auth.map(str::trim) {
            None | Some("") | Some("oauth") => Ok(Auth::OAuth),
            Some("api_token") => match email.map(str::trim) {
                Some(email) if !email.is_empty() => Ok(Auth::ApiToken {
                    email: email.to_owned(),
                }),
                _ => Err(Error::invalid_input(
                    "config `auth` is `api_token`, which needs config `email` (the agent the \
                     API token acts as)",
                )),
            },
            Some(other) => Err(Error::invalid_input(format!(
                "config `auth` must be `oauth` or `api_token`, not `{other}`"
            ))),
        }
    }

    /// The `Authorization` header value for `token`.
    pub(crate) fn header(&self, token: &str) -> String {
        match self {
            Auth::OAuth => format!("Bearer {token}"),
            Auth::ApiToken { email } => {
                format!(
                    "Basic {}",
                    base64(format!("{email}/token:{token}").as_bytes())
                )
            }
        }
    }
}

/// The instance the operator configured.
pub(crate) struct Api {
    base: String,
    auth: Auth,
}

impl Api {
    /// From config `base_url`, `auth` and `email`.
    pub(crate) fn new(ctx: &Context) -> Result<Api, Error> {
        Ok(Api {
            base: ctx
                .config("base_url")?
                .trim()
                .trim_end_matches('/')
                .to_owned(),
            auth: Auth::from_config(ctx.config_opt("auth"), ctx.config_opt("email"))?,
        })
    }

    /// How the plugin authenticates.
    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    /// `{base_url}{path}`; `path` starts with `/`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with `method`, not yet authenticated.
    pub(crate) fn request(&self, method: &str, path: &str) -> http::Request {
        http::Request::new(method, self.url(path)).header("Accept", "application/json")
    }

    /// Send `request` with the plugin's secret; a non-2xx answer becomes an
    /// error carrying Zendesk's status and message.
    pub(crate) fn send(&self, request: http::Request) -> Result<http::Response, Error> {
        let token = secret(TOKEN_SECRET)?;
        check(
            request
                .header("Authorization", self.auth.header(&token))
                .send()?,
        )
    }

    /// [`Api::send`] and decode the JSON answer.
    pub(crate) fn json(&self, request: http::Request) -> Result<Value, Error> {
        self.send(request)?.json()
    }

    /// Every item under `key` of the list at `path` (query included),
    /// following Zendesk's pages.
    pub(crate) fn get_all(&self, path: &str, key: &str) -> Result<Vec<Value>, Error> {
        pages::collect(path, key, |path| {
            self.json(self.request("GET", &pages::local(path)))
        })
    }
}

/// A 2xx answer as it is; anything else as an error. 429 is retryable after
/// `Retry-After` seconds. The reference says nothing on whether Zendesk may
/// act on a request it answers 429; like every rate limiter it documents,
/// it is taken to refuse before acting, and the host never retries a
/// mutating call on its own anyway.
pub(crate) fn check(response: http::Response) -> Result<http::Response, Error> {
    if response.is_success() {
        return Ok(response);
    }
    let message = messages::from_body(response.status, &response.body);
    if response.status == 429 {
        let delay_ms = retry_delay_ms(response.header("Retry-After"));
        Err(Error::retryable(
            delay_ms,
            format!(
                "Zendesk's rate limit refused the request ({message}); try again in {} s",
                delay_ms.div_ceil(1000)
            ),
        ))
    } else {
        Err(Error::provider(response.status, message))
    }
}

/// `Retry-After` in seconds as milliseconds; [`DEFAULT_RETRY_MS`] when it
/// is absent or not a number of seconds. A `0` still waits a second so
/// that retries do not become a burst.
pub(crate) fn retry_delay_ms(retry_after: Option<&str>) -> u64 {
    match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(seconds) => seconds.max(1).saturating_mul(1000),
        None => DEFAULT_RETRY_MS,
    }
}

/// Standard base64 with padding (RFC 4648 §4), for the Basic header: small
/// enough not to need a dependency.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn basic_header_is_email_slash_token() {
        let auth = Auth::from_config(Some("api_token"), Some(" admin@example.com ")).unwrap();
        // base64("admin@example.com/token:abc123")
        assert_eq!(
            auth.header("abc123"),
            "Basic YWRtaW5AZXhhbXBsZS5jb20vdG9rZW46YWJjMTIz"
        );
        assert_eq!(
            Auth::from_config(None, None).unwrap().header("t0k"),
            "Bearer t0k"
        );
        assert_eq!(Auth::from_config(Some("oauth"), None).unwrap(), Auth::OAuth);
    }

    #[test]
    fn auth_config_is_checked() {
        let e = Auth::from_config(Some("api_token"), None).unwrap_err();
        assert!(e.to_string().contains("`email`"), "{e}");
        let e = Auth::from_config(Some("password"), Some("a@b")).unwrap_err();
        assert!(e.to_string().contains("`password`"), "{e}");
    }

    #[test]
    fn retry_after_in_seconds_else_the_default() {
        assert_eq!(retry_delay_ms(Some("7")), 7_000);
        assert_eq!(retry_delay_ms(Some(" 60 ")), 60_000);
        assert_eq!(retry_delay_ms(Some("0")), 1_000);
        assert_eq!(retry_delay_ms(None), DEFAULT_RETRY_MS);
        assert_eq!(
            retry_delay_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            DEFAULT_RETRY_MS
        );
    }

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
    fn statuses_become_the_right_errors() {
        assert!(check(response(204, &[], b"")).is_ok());
        match check(response(429, &[("retry-after", "42")], b"Too many")) {
            Err(Error::Retryable { delay_ms, message }) => {
                assert_eq!(delay_ms, 42_000);
                assert!(message.contains("Too many"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match check(response(429, &[], b"")) {
            Err(Error::Retryable { delay_ms, .. }) => assert_eq!(delay_ms, DEFAULT_RETRY_MS),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check(response(
                401,
                &[],
                br#"{"error":"Couldn't authenticate you"}"#
            ))
            .unwrap_err(),
            Error::provider(401, "Couldn't authenticate you")
        );
    }
}
