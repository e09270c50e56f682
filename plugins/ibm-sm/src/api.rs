//! One Secrets Manager instance at `base_url`, reached through the host:
//! the IAM API key exchange, bearer authentication with one fresh exchange
//! after a 401, IBM's error messages and its rate limiter.
//!
//! The host gives every call a fresh instance of the plugin, so an access
//! token lives for one call: it is fetched on the first request a call
//! sends and reused by that call's later requests. Nothing here sends a
//! request twice, except once after a 401, which Secrets Manager answers
//! before it acts.

use std::cell::RefCell;

use keycycle_plugin_sdk::{Context, Error, Value, http, secret};

use crate::messages;

/// The secret the plugin acts with: an IBM Cloud API key.
pub(crate) const API_KEY_SECRET: &str = "api_key";

/// Where IAM lives unless config `iam_url` says otherwise.
pub(crate) const DEFAULT_IAM_URL: &str = "https://iam.cloud.ibm.com";

/// IAM's grant type for API keys (IAM docs).
const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// The wait after a 429 that carries no usable `Retry-After`.
pub(crate) const DEFAULT_RETRY_MS: u64 = 5_000;

/// One request, kept as parts so it can be built again for the one resend
/// after a 401 (a request is consumed by sending it).
pub(crate) struct Call {
    method: &'static str,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
}

impl Call {
    pub(crate) fn get(path: impl Into<String>) -> Call {
        Call {
            method: "GET",
            path: path.into(),
            body: None,
        }
    }

    pub(crate) fn delete(path: impl Into<String>) -> Call {
        Call {
            method: "DELETE",
            path: path.into(),
            body: None,
        }
    }

    pub(crate) fn post(path: impl Into<String>, body: &Value) -> Call {
        Call {
            method: "POST",
            path: path.into(),
            body: Some(("application/json", body.to_string().into_bytes())),
        }
    }

    /// A `PATCH` with `application/merge-patch+json`, the only type
    /// Secrets Manager takes for metadata updates (reference).
    pub(crate) fn merge_patch(path: impl Into<String>, body: &Value) -> Call {
        Call {
            method: "PATCH",
            path: path.into(),
            body: Some((
                "application/merge-patch+json",
                body.to_string().into_bytes(),
            )),
        }
    }
}

/// The instance the operator configured.
pub(crate) struct Api {
    base: String,
    iam: String,
    /// The access token of this call, once fetched.
    token: RefCell<Option<String>>,
}

impl Api {
    /// From config `base_url` and `iam_url`.
    pub(crate) fn new(ctx: &Context) -> Result<Api, Error> {
        let base = ctx.config("base_url")?.trim().trim_end_matches('/');
        let iam = ctx
            .config_opt("iam_url")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_IAM_URL)
            .trim_end_matches('/');
        Ok(Api {
            base: base.to_owned(),
            iam: iam.to_owned(),
            token: RefCell::new(None),
        })
    }

    /// Exchanges the API key for an access token at IAM.
    fn fetch_token(&self) -> Result<String, Error> {
        let apikey = secret(API_KEY_SECRET)?;
        let response = http::Request::post(format!("{}/identity/token", self.iam))
            .header("Accept", "application/json")
            .form(&[("grant_type", APIKEY_GRANT), ("apikey", apikey.as_str())])
            .send()?;
        let response = check(response).map_err(|e| match e {
            Error::Provider { status, message } => Error::provider(
                status,
                format!("IAM refused to exchange the API key for a token: {message}"),
            ),
            other => other,
        })?;
        let answer: Value = response.json()?;
        answer["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::provider(response.status, "IAM's answer has no access_token"))
    }

    fn token(&self, fresh: bool) -> Result<String, Error> {
        if !fresh && let Some(token) = self.token.borrow().as_ref() {
            return Ok(token.clone());
        }
        let token = self.fetch_token()?;
        *self.token.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    fn build(&self, call: &Call, token: &str) -> http::Request {
        let mut request = http::Request::new(call.method, format!("{}{}", self.base, call.path))
            .header("Accept", "application/json")
            .bearer(token);
        if let Some((content_type, body)) = &call.body {
            request = request
                .header("Content-Type", *content_type)
                .body(body.clone());
        }
        request
    }

    /// Sends `call` with this call's access token. A 401 means the token
    /// expired or was revoked: one new exchange and one resend.
    pub(crate) fn send(&self, call: &Call) -> Result<http::Response, Error> {
        let response = self.build(call, &self.token(false)?).send()?;
        if response.status != 401 {
            return check(response);
        }
        let token = self.token(true)?;
        check(self.build(call, &token).send()?)
    }

    /// [`Api::send`] and decode the JSON answer.
    pub(crate) fn json(&self, call: &Call) -> Result<Value, Error> {
        self.send(call)?.json()
    }
}

/// A 2xx answer as it is; anything else as an error with IBM's message. A
/// 429 is retryable after `Retry-After` seconds.
pub(crate) fn check(response: http::Response) -> Result<http::Response, Error> {
    if response.is_success() {
        return Ok(response);
    }
    let message = messages::from_body(response.status, &response.body);
    if response.status == 429 {
        let delay_ms = retry_delay_ms(response.header("Retry-After"));
        return Err(Error::retryable(
            delay_ms,
            format!(
                "IBM Cloud's rate limit refused the request ({message}); try again in {} s",
                delay_ms.div_ceil(1000)
            ),
        ));
    }
    Err(Error::provider(response.status, message))
}

/// `Retry-After` seconds as milliseconds, at least one second;
/// [`DEFAULT_RETRY_MS`] when absent or not a number of seconds.
pub(crate) fn retry_delay_ms(retry_after: Option<&str>) -> u64 {
    match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(seconds) => seconds.max(1).saturating_mul(1000),
        None => DEFAULT_RETRY_MS,
    }
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
    fn statuses_become_the_right_errors() {
        assert!(check(response(204, &[], b"")).is_ok());
        match check(response(429, &[("Retry-After", "12")], b"Retry later")) {
            Err(Error::Retryable { delay_ms, message }) => {
                assert_eq!(delay_ms, 12_000);
                assert!(message.contains("Retry later"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match check(response(429, &[], b"")) {
            Err(Error::Retryable { delay_ms, .. }) => assert_eq!(delay_ms, DEFAULT_RETRY_MS),
            other => panic!("{other:?}"),
        }
        let body = br#"{"errors":[{"code":"precondition_failed","message":"The secret is locked"}],"trace":"t","status_code":412}"#;
        assert_eq!(
            check(response(412, &[], body)).unwrap_err(),
            Error::provider(412, "The secret is locked")
        );
    }

    #[test]
    fn retry_after_in_seconds_else_the_default() {
        assert_eq!(retry_delay_ms(Some("0")), 1_000);
        assert_eq!(retry_delay_ms(Some(" 30 ")), 30_000);
        assert_eq!(
            retry_delay_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            DEFAULT_RETRY_MS
        );
        assert_eq!(retry_delay_ms(None), DEFAULT_RETRY_MS);
    }

    #[test]
    fn iam_url_defaults_to_ibm_cloud() {
        let config = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let ctx = Context::new("run", "key", config(&[("base_url", "https://x.example/")]));
        let api = Api::new(&ctx).unwrap();
        assert_eq!(api.iam, DEFAULT_IAM_URL);
        assert_eq!(api.base, "https://x.example");
        let ctx = Context::new(
            "run",
            "key",
            config(&[
                ("base_url", "https://x.example"),
                ("iam_url", "http://127.0.0.1:9/"),
            ]),
        );
        assert_eq!(Api::new(&ctx).unwrap().iam, "http://127.0.0.1:9");
    }

    #[test]
    fn merge_patch_calls_carry_their_content_type() {
        let call = Call::merge_patch(
            "/api/v2/secrets/a/metadata",
            &serde_json::json!({"name": "n"}),
        );
        assert_eq!(call.method, "PATCH");
        assert_eq!(
            call.body.as_ref().unwrap().0,
            "application/merge-patch+json"
        );
    }
}
