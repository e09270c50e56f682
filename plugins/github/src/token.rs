//! Who a token is, as `GET /user` tells it: the user, the classic scopes
//! (`X-OAuth-Scopes`; absent for fine-grained tokens) and the expiry
//! (`GitHub-Authentication-Token-Expiration`; absent when it never
//! expires). No API creates a personal access token (reference, "Manual"),
//! so `check_token` is how a runbook verifies the one a person pasted.

use keycycle_plugin_sdk::{Error, Value, http, json};

use crate::api::{self, Api};

/// `whoami`: the plugin's own token.
pub(crate) fn whoami(api: &Api) -> Result<Value, Error> {
    let response = api.send(api.request("GET", "/user"))?;
    describe(&response)
}

/// `check_token`: the token given, which the plugin never stores or shows.
/// A 401 is an answer here, not a failure: `{"valid": false}`.
pub(crate) fn check_token(api: &Api, token: &str) -> Result<Value, Error> {
    if token.trim().is_empty() {
        return Err(Error::invalid_input("`token` is empty"));
    }
    let response = api.request("GET", "/user").bearer(token.trim()).send()?;
    if response.status == 401 {
        return Ok(json!({ "valid": false, "reason": api::message(401, &response.body) }));
    }
    let mut out = describe(&api::check(response)?)?;
    out["valid"] = json!(true);
    Ok(out)
}

/// `{login, id, type, scopes, expires_at}` of a `GET /user` answer.
fn describe(response: &http::Response) -> Result<Value, Error> {
    let user: Value = response.json()?;
    let expires_at = match response.header("github-authentication-token-expiration") {
        None => Value::Null,
        Some(raw) => json!(expiry_rfc3339(raw).ok_or_else(|| {
            Error::provider(
                response.status,
                format!(
                    "GitHub sent an expiry the plugin cannot read ({raw:?}); check the token's \
                     expiry on its settings page"
                ),
            )
        })?),
    };
    Ok(json!({
        "login": user["login"],
        "id": user["id"],
        "type": user["type"],
        "scopes": scopes(response.header("x-oauth-scopes")),
        "expires_at": expires_at,
    }))
}

/// `X-OAuth-Scopes: repo, workflow` as `["repo", "workflow"]`; `null` when
/// the header is absent (a fine-grained or App token), `[]` when it is
/// present and empty (a classic token with no scope).
pub(crate) fn scopes(header: Option<&str>) -> Value {
    match header {
        None => Value::Null,
        Some(list) => json!(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        ),
    }
}

/// `2026-10-12 09:00:00 UTC` as `2026-10-12T09:00:00Z`, and the
/// `2026-10-12 09:00:00 +0900` some clients also meet (reference: *not in
/// a primary doc*) as `2026-10-12T09:00:00+09:00`. `None` for anything
/// else.
pub(crate) fn expiry_rfc3339(raw: &str) -> Option<String> {
    let mut parts = raw.split_whitespace();
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !shaped(date, "dddd-dd-dd") || !shaped(time, "dd:dd:dd") {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" => "Z".to_owned(),
        z if shaped(z, "+dddd") || shaped(z, "-dddd") => {
            if &z[1..] == "0000" {
                "Z".to_owned()
            } else {
                format!("{}:{}", &z[..3], &z[3..])
            }
        }
        _ => return None,
    };
    Some(format!("{date}T{time}{offset}"))
}

/// Whether `text` has the shape of `pattern`, where `d` is any ASCII digit
/// and every other character stands for itself.
fn shaped(text: &str, pattern: &str) -> bool {
    text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(t, p)| match p {
            b'd' => t.is_ascii_digit(),
            p => t == p,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_headers_become_rfc_3339() {
        assert_eq!(
            expiry_rfc3339("2026-10-12 09:00:00 UTC").as_deref(),
            Some("2026-10-12T09:00:00Z")
        );
        assert_eq!(
            expiry_rfc3339("2026-10-12 09:00:00 +0900").as_deref(),
            Some("2026-10-12T09:00:00+09:00")
        );
        assert_eq!(
            expiry_rfc3339("2026-10-12 09:00:00 -0530").as_deref(),
            Some("2026-10-12T09:00:00-05:30")
        );
        assert_eq!(
            expiry_rfc3339("2026-10-12 09:00:00 +0000").as_deref(),
            Some("2026-10-12T09:00:00Z")
        );
        for bad in [
            "",
            "2026-10-12",
            "2026-10-12 09:00 UTC",
            "2026-10-12 09:00:00 CEST",
            "2026-10-12 09:00:00 UTC extra",
            "Mon, 12 Oct 2026 09:00:00 GMT",
        ] {
            assert_eq!(expiry_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_header_is_a_list_or_null() {
        assert_eq!(scopes(Some("repo, workflow")), json!(["repo", "workflow"]));
        assert_eq!(scopes(Some("admin:org")), json!(["admin:org"]));
        assert_eq!(scopes(Some("")), json!([]));
        assert_eq!(scopes(None), Value::Null);
    }

    fn user_response(headers: &[(&str, &str)]) -> http::Response {
        http::Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: br#"{"login":"aihelp","id":7,"type":"User"}"#.to_vec(),
        }
    }

    #[test]
    fn user_answers_are_described() {
        let out = describe(&user_response(&[
            ("X-OAuth-Scopes", "repo"),
            (
                "GitHub-Authentication-Token-Expiration",
                "2026-10-12 09:00:00 UTC",
            ),
        ]))
        .unwrap();
        assert_eq!(
            out,
            json!({"login": "aihelp", "id": 7, "type": "User", "scopes": ["repo"],
                   "expires_at": "2026-10-12T09:00:00Z"})
        );
        let fine = describe(&user_response(&[])).unwrap();
        assert_eq!(fine["scopes"], Value::Null);
        assert_eq!(fine["expires_at"], Value::Null);
        let odd = describe(&user_response(&[(
            "GitHub-Authentication-Token-Expiration",
            "soon",
        )]));
        assert!(
            matches!(odd, Err(Error::Provider { status: 200, .. })),
            "{odd:?}"
        );
    }
}
