//! keycycle plugin that probes one HTTP endpoint under config `base_url`
//! and reports its status: a check that a consuming app (or the API it
//! calls) works with a rotated credential.
//!
//! The plugin can reach only what the operator grants in `hosts`, and the
//! URL is always a path under `base_url`. It answers with the status only,
//! never the body, which may hold data or credentials. `probe` is a read:
//! the host sends it in dry runs and may send it again, so only `GET` and
//! `HEAD` are offered.

use keycycle_plugin_sdk::prelude::*;
use serde_json::json;

struct HttpCheck;

impl Plugin for HttpCheck {
    fn describe() -> Description {
        Description::new("http-check", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .config("base_url")
            .operation(
                Operation::new(
                    "probe",
                    "Send GET or HEAD to a path under base_url and compare the status: {status, ok}",
                )
                .input("url", "path under base_url, starting with /", true)
                .input("method", "GET (the default) or HEAD", false)
                .input("bearer", "a token to send as Authorization: Bearer (a secret)", false)
                .input(
                    "expect_status",
                    "the status that counts as ok; any 2xx when absent",
                    false,
                ),
            )
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "probe" => probe(ctx.config("base_url")?, &input),
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(HttpCheck);

/// What `probe` will send.
struct Probe {
    method: &'static str,
    url: String,
    bearer: Option<String>,
    expect_status: Option<u16>,
}

/// Checks the input and builds the request, sending nothing.
fn plan(base_url: &str, input: &Value) -> Result<Probe, Error> {
    let path = input.str_field("url")?.trim();
    // A path, not a URL: "//host" and "http://..." would leave base_url
    // (the host would refuse an ungranted origin, but the operator meant a
    // path and deserves to hear so).
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return Err(Error::invalid_input(
            "input `url` must be a path under config `base_url`, starting with a single /",
        ));
    }
    let method = match input.opt_str_field("method")?.map(str::trim) {
        None | Some("") => "GET",
        Some(m) if m.eq_ignore_ascii_case("GET") => "GET",
        Some(m) if m.eq_ignore_ascii_case("HEAD") => "HEAD",
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "input `method` must be GET or HEAD, not `{other}`: probe is a read, sent in dry \
                 runs and possibly more than once"
            )));
        }
    };
    let bearer = input.opt_str_field("bearer")?.map(str::to_owned);
    if bearer.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return Err(Error::invalid_input("input `bearer` is empty"));
    }
    let expect_status = match input.field("expect_status") {
        None => None,
        Some(_) => {
            let status = input.u64_field("expect_status")?;
            if !(100..=599).contains(&status) {
                return Err(Error::invalid_input(
                    "input `expect_status` must be an HTTP status, 100 to 599",
                ));
            }
            Some(status as u16)
        }
    };
    Ok(Probe {
        method,
        url: format!("{}{path}", base_url.trim().trim_end_matches('/')),
        bearer,
        expect_status,
    })
}

/// Whether `status` is what the probe expected.
fn ok(status: u16, expect_status: Option<u16>) -> bool {
    match expect_status {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    }
}

fn probe(base_url: &str, input: &Value) -> Result<Value, Error> {
    let probe = plan(base_url, input)?;
    let mut request = http::Request::new(probe.method, probe.url);
    if let Some(token) = &probe.bearer {
        request = request.bearer(token);
    }
    // Any answer is a result, whatever its status: that is what is being
    // checked. Only no answer at all (refused, timed out) is an error.
    let response = request.send()?;
    Ok(json!({
        "status": response.status,
        "ok": ok(response.status, probe.expect_status),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_joins_base_url_and_defaults_to_get() {
        let p = plan("https://app.example/ ", &json!({"url": "/healthcheck?x=1"})).unwrap();
        assert_eq!(p.method, "GET");
        assert_eq!(p.url, "https://app.example/healthcheck?x=1");
        assert!(p.bearer.is_none() && p.expect_status.is_none());
        let p = plan(
            "https://app.example",
            &json!({"url": "/a", "method": "head", "bearer": "t", "expect_status": 401}),
        )
        .unwrap();
        assert_eq!((p.method, p.expect_status), ("HEAD", Some(401)));
        assert_eq!(p.bearer.as_deref(), Some("t"));
    }

    /// The error `plan` gives; `Probe` has no `Debug` (it holds the
    /// bearer token), so `unwrap_err` cannot be used.
    fn refused(base_url: &str, input: &Value) -> Error {
        match plan(base_url, input) {
            Err(e) => e,
            Ok(_) => panic!("the input was accepted"),
        }
    }

    #[test]
    fn urls_that_leave_base_url_are_refused() {
        for url in [
            "https://evil.example/",
            "//evil.example/x",
            "x/y",
            "/\\evil",
            "",
        ] {
            let e = refused("https://app.example", &json!({ "url": url }));
            assert!(e.to_string().contains("`url`"), "{url}: {e}");
        }
    }

    #[test]
    fn only_reads_and_real_statuses_are_accepted() {
        let e = refused("https://a", &json!({"url": "/", "method": "POST"}));
        assert!(e.to_string().contains("GET or HEAD"), "{e}");
        for status in [json!(42), json!(600), json!("200"), json!(-1)] {
            assert!(
                plan("https://a", &json!({"url": "/", "expect_status": status})).is_err(),
                "{status}"
            );
        }
        let e = refused("https://a", &json!({"url": "/", "bearer": " "}));
        assert!(e.to_string().contains("`bearer`"), "{e}");
    }

    #[test]
    fn ok_is_the_expected_status_or_any_2xx() {
        assert!(ok(204, None));
        assert!(!ok(301, None));
        assert!(!ok(401, None));
        assert!(ok(401, Some(401)));
        assert!(!ok(200, Some(401)));
    }
}
