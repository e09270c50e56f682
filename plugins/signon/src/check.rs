//! `check_token`: `GET {base_url}/user.json?client_id=...` with the token
//! as `Authorization: Bearer`, and what its answer means.
//!
//! Signon answers 401 with an empty body whether the token is unknown,
//! expired or revoked, is for another application, or belongs to a user
//! without `signin` on it; all of them are `valid: false`, and nothing
//! tells them apart. Without `client_id` Signon answers 200 for a token of
//! any application, so an empty one is refused before anything is sent.

use keycycle_plugin_sdk::{Error, Input, Value, http};
use serde::Deserialize;
use serde_json::json;

/// The wait after a 429 without a usable `Retry-After`.
const DEFAULT_RETRY_MS: u64 = 10_000;

/// What `/user.json` answers (`UserOAuthPresenter`).
#[derive(Deserialize)]
struct Answer {
    user: User,
}

#[derive(Deserialize)]
struct User {
    uid: String,
    name: String,
    email: String,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    organisation_slug: Option<String>,
    #[serde(default)]
    organisation_content_id: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// The request for `token` and `client_id` against `base_url`.
pub(crate) fn request(base_url: &str, token: &str, client_id: &str) -> http::Request {
    http::Request::get(format!(
        "{}/user.json",
        base_url.trim().trim_end_matches('/')
    ))
    .query("client_id", client_id)
    .header("Accept", "application/json")
    .bearer(token)
}

pub(crate) fn check_token(base_url: &str, input: &Value) -> Result<Value, Error> {
    let token = input.str_field("token")?;
    let client_id = input.str_field("client_id")?.trim();
    if token.trim().is_empty() {
        return Err(Error::invalid_input("input `token` is empty"));
    }
    if client_id.is_empty() {
        return Err(Error::invalid_input(
            "input `client_id` is empty; without it Signon accepts a token of any application",
        ));
    }
    interpret(request(base_url, token, client_id).send()?)
}

/// What an answer of `/user.json` says about the token.
pub(crate) fn interpret(response: http::Response) -> Result<Value, Error> {
    match response.status {
        200 => {
            let answer: Answer = response.json()?;
            let user = answer.user;
            Ok(json!({
                "valid": true,
                "uid": user.uid,
                "name": user.name,
                "email": user.email,
                "permissions": user.permissions,
                "disabled": user.disabled,
                "organisation_slug": user.organisation_slug,
                "organisation_content_id": user.organisation_content_id,
            }))
        }
        401 => Ok(json!({ "valid": false })),
        429 => {
            let delay_ms = response
                .header("Retry-After")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_MS, |s| s.max(1).saturating_mul(1000));
            Err(Error::retryable(
                delay_ms,
                format!(
                    "Signon refused the check for now (429); try again in {} s",
                    delay_ms.div_ceil(1000)
                ),
            ))
        }
        status => Err(Error::provider(status, message(&response))),
    }
}

/// Signon's `error` or `message` when the body is JSON with one; otherwise
/// the status only: an HTML error page says nothing a runbook can use.
fn message(response: &http::Response) -> String {
    serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| {
            ["error", "message"]
                .iter()
                .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
        })
        .unwrap_or_else(|| format!("GET /user.json failed with status {}", response.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_request_is_the_one_gds_sso_makes() {
        let request = request("https://signon.example/ ", "tok", "app id&x");
        assert_eq!(
            request.url(),
            "https://signon.example/user.json?client_id=app%20id%26x"
        );
        assert_eq!(request.header_value("Authorization"), Some("Bearer tok"));
    }

    #[test]
    fn a_200_gives_the_user_and_its_permissions() {
        let out = interpret(response(
            200,
            &[],
            r#"{"user":{"uid":"u-1","name":"Short URL Manager","email":"s@alphagov.co.uk",
               "permissions":["signin","view"],"organisation_slug":null,
               "organisation_content_id":null,"disabled":false}}"#,
        ))
        .unwrap();
        assert_eq!(out["valid"], true);
        assert_eq!(out["uid"], "u-1");
        assert_eq!(out["permissions"], json!(["signin", "view"]));
        assert_eq!(out["disabled"], false);
        assert_eq!(out["email"], "s@alphagov.co.uk");
    }

    #[test]
    fn a_401_with_an_empty_body_is_invalid_not_an_error() {
        assert_eq!(
            interpret(response(401, &[], "")).unwrap(),
            json!({"valid": false})
        );
    }

    #[test]
    fn other_statuses_are_errors() {
        match interpret(response(429, &[("retry-after", "5")], "")) {
            Err(Error::Retryable { delay_ms, .. }) => assert_eq!(delay_ms, 5_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            interpret(response(503, &[], r#"{"error":"Service Unavailable"}"#)).unwrap_err(),
            Error::provider(503, "Service Unavailable")
        );
        assert_eq!(
            interpret(response(500, &[], "<html>oops</html>")).unwrap_err(),
            Error::provider(500, "GET /user.json failed with status 500")
        );
        // A 200 that is not a user answer is not taken for a valid token.
        assert!(interpret(response(200, &[], r#"{"ok":true}"#)).is_err());
    }

    #[test]
    fn empty_inputs_are_refused_before_sending() {
        let e = check_token("https://s", &json!({"token": "t", "client_id": " "})).unwrap_err();
        assert!(e.to_string().contains("client_id"), "{e}");
        let e = check_token("https://s", &json!({"token": " ", "client_id": "c"})).unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
    }
}
