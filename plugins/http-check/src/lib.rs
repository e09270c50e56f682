//! keycycle plugin that sends one request the operator configured to a
//! path under config `base_url` and checks the answer: the proof that a
//! consumer (or the API it calls) works with a rotated credential.
//!
//! The plugin can reach only what the operator grants in `hosts`, and the
//! URL is always a path under `base_url`. The credential is a secret the
//! runbook passes (a minted or prompted token) or the plugin's own granted
//! `token`; it goes out as a bearer or in a named header. The answer is
//! reduced to its status and, when asked, whether one JSON field has the
//! expected value: the body may hold data or credentials, so it never
//! leaves the plugin. `probe` is a read, sent in dry runs and possibly more
//! than once, so it offers only `GET`, `HEAD` and `OPTIONS`; `send` takes
//! any method and is a mutating operation, printed instead in dry runs.

use keycycle_plugin_sdk::prelude::*;
use serde_json::json;

struct HttpCheck;

/// The inputs both operations share.
fn with_common_inputs(op: Operation) -> Operation {
    op.input("url", "path under base_url, starting with /", true)
        .input(
            "bearer",
            "a token to send as Authorization: Bearer (a secret)",
            false,
        )
        .input(
            "header",
            "send the credential in this header instead of Authorization: Bearer",
            false,
        )
        .input(
            "header_value",
            "the credential for `header` (a secret); without it the bearer or the granted token",
            false,
        )
        .input(
            "use_granted_token",
            "true: the credential is the plugin's granted secret `token`",
            false,
        )
        .input(
            "expect_status",
            "the status that counts as ok; any 2xx when absent",
            false,
        )
        .input(
            "json_field",
            "a dotted path in the JSON answer (`user.email`, `items.0.id`) to check",
            false,
        )
        .input(
            "json_equals",
            "the value `json_field` must have (string, number or boolean)",
            false,
        )
        .input(
            "json_contains",
            "a value the array at `json_field` must contain",
            false,
        )
}

impl Plugin for HttpCheck {
    fn describe() -> Description {
        Description::new("http-check", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            .config("base_url")
            .secret("token")
            .operation(
                with_common_inputs(Operation::new(
                    "probe",
                    "Send GET, HEAD or OPTIONS to a path under base_url and check the status and \
                     one JSON field: {status, ok, status_ok, field_found, field_ok}",
                ))
                .input("method", "GET (the default), HEAD or OPTIONS", false),
            )
            .operation(
                with_common_inputs(Operation::new(
                    "send",
                    "Send any method with a JSON body to a path under base_url and check the \
                     answer as probe does",
                ))
                .input(
                    "method",
                    "POST (the default), PUT, PATCH, DELETE, ...",
                    false,
                )
                .input("body", "a JSON value to send as the body", false)
                .mutates()
                .if_interrupted(
                    "the request may or may not have reached the server; check its effect there \
                     before sending it again",
                ),
            )
    }

    fn invoke(ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        let mutating = match operation {
            "probe" => false,
            "send" => true,
            other => return Err(Error::unknown_operation(other)),
        };
        let plan = plan(ctx.config("base_url")?, &input, mutating)?;
        let granted = if plan.use_granted_token {
            Some(secret("token")?)
        } else {
            None
        };
        send(plan, granted)
    }
}

keycycle_plugin_sdk::export_plugin!(HttpCheck);

/// Where the credential goes.
enum Credential {
    None,
    Bearer(String),
    Header(String, String),
}

/// What one check expects of a JSON field.
#[derive(Debug, PartialEq)]
enum FieldCheck {
    Equals(Value),
    Contains(Value),
    Present,
}

/// What an operation will send, and what it expects back.
struct Plan {
    method: String,
    url: String,
    credential: Credential,
    /// The header the granted token goes in (`None`: bearer).
    use_granted_token: bool,
    granted_header: Option<String>,
    body: Option<Value>,
    expect_status: Option<u16>,
    field: Option<(Vec<String>, FieldCheck)>,
}

const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// Checks the input and builds the request, sending nothing.
fn plan(base_url: &str, input: &Value, mutating: bool) -> Result<Plan, Error> {
    let path = input.str_field("url")?.trim();
    // A path, not a URL: "//host" and "http://..." would leave base_url
    // (the host would refuse an ungranted origin, but the operator meant a
    // path and deserves to hear so).
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return Err(Error::invalid_input(
            "input `url` must be a path under config `base_url`, starting with a single /",
        ));
    }
    // `.` and `..` segments (also percent-encoded: URL parsers treat
    // `%2e%2e` as `..`) would climb out of base_url's path, which may be
    // the only part of the origin the operator meant to expose.
    let path_only = path.split(['?', '#']).next().unwrap_or_default();
    if path_only.split('/').any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    }) {
        return Err(Error::invalid_input(
            "input `url` may not contain `.` or `..` path segments",
        ));
    }
    let method = match input.opt_str_field("method")?.map(str::trim) {
        None | Some("") if mutating => "POST".to_owned(),
        None | Some("") => "GET".to_owned(),
        Some(m) => m.to_ascii_uppercase(),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid_input(format!(
            "input `method`: `{method}` is not an HTTP method"
        )));
    }
    if !mutating && !READ_METHODS.contains(&method.as_str()) {
        return Err(Error::invalid_input(format!(
            "input `method` must be GET, HEAD or OPTIONS, not `{method}`: probe is a read, sent \
             in dry runs and possibly more than once; use `send` for a request that changes \
             something"
        )));
    }
    let bearer = input.opt_str_field("bearer")?.map(str::to_owned);
    let header = input.opt_str_field("header")?.map(|h| h.trim().to_owned());
    let header_value = input.opt_str_field("header_value")?.map(str::to_owned);
    let use_granted_token = input.opt_bool_field("use_granted_token")?.unwrap_or(false);
    for (name, value) in [("bearer", &bearer), ("header_value", &header_value)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(Error::invalid_input(format!("input `{name}` is empty")));
        }
    }
    if let Some(h) = &header {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !valid {
            return Err(Error::invalid_input(format!(
                "input `header`: `{h}` is not a header name"
            )));
        }
    }
    let given = [bearer.is_some(), header_value.is_some(), use_granted_token];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(Error::invalid_input(
            "give one credential: `bearer`, `header_value` or `use_granted_token`",
        ));
    }
    if header_value.is_some() && header.is_none() {
        return Err(Error::invalid_input(
            "input `header_value` needs `header`, the header to send it in",
        ));
    }
    let credential = match (bearer, header.clone(), header_value) {
        (Some(token), Some(h), _) => Credential::Header(h, token),
        (Some(token), None, _) => Credential::Bearer(token),
        (None, Some(h), Some(v)) => Credential::Header(h, v),
        _ => Credential::None,
    };
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
    let field = match input.opt_str_field("json_field")? {
        None => {
            if input.field("json_equals").is_some() || input.field("json_contains").is_some() {
                return Err(Error::invalid_input(
                    "`json_equals` and `json_contains` need `json_field`",
                ));
            }
            None
        }
        Some(path) => {
            let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
            if steps.iter().any(String::is_empty) {
                return Err(Error::invalid_input(format!(
                    "input `json_field`: `{path}` is not a dotted path"
                )));
            }
            let check = match (input.field("json_equals"), input.field("json_contains")) {
                (Some(_), Some(_)) => {
                    return Err(Error::invalid_input(
                        "give `json_equals` or `json_contains`, not both",
                    ));
                }
                (Some(v), None) => FieldCheck::Equals(scalar("json_equals", v)?),
                (None, Some(v)) => FieldCheck::Contains(scalar("json_contains", v)?),
                (None, None) => FieldCheck::Present,
            };
            Some((steps, check))
        }
    };
    let body = input.field("body").cloned();
    if body.is_some() && !mutating {
        return Err(Error::invalid_input("probe sends no body; use `send`"));
    }
    Ok(Plan {
        method,
        url: format!("{}{path}", base_url.trim().trim_end_matches('/')),
        credential,
        use_granted_token,
        granted_header: header,
        body,
        expect_status,
        field,
    })
}

/// A value to compare with: a string, number or boolean.
fn scalar(name: &str, value: &Value) -> Result<Value, Error> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value.clone()),
        _ => Err(Error::invalid_input(format!(
            "input `{name}` must be a string, a number or a boolean"
        ))),
    }
}

/// Whether `status` is what the check expected.
fn status_ok(status: u16, expect_status: Option<u16>) -> bool {
    match expect_status {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    }
}

/// The value at a dotted path; array elements by index.
fn at<'a>(mut value: &'a Value, steps: &[String]) -> Option<&'a Value> {
    for step in steps {
        value = match value {
            Value::Object(map) => map.get(step)?,
            Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// `(found, ok)` for one field check of a body.
fn check_field(body: &[u8], steps: &[String], check: &FieldCheck) -> (bool, bool) {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return (false, false);
    };
    let Some(value) = at(&json, steps) else {
        return (false, false);
    };
    let ok = match check {
        FieldCheck::Present => !value.is_null(),
        FieldCheck::Equals(expected) => value == expected,
        FieldCheck::Contains(expected) => value
            .as_array()
            .is_some_and(|items| items.contains(expected)),
    };
    (true, ok)
}

fn send(plan: Plan, granted: Option<String>) -> Result<Value, Error> {
    let mut request = http::Request::new(plan.method.clone(), plan.url);
    let credential = match granted {
        Some(token) => match plan.granted_header {
            Some(h) => Credential::Header(h, token),
            None => Credential::Bearer(token),
        },
        None => plan.credential,
    };
    request = match &credential {
        Credential::None => request,
        Credential::Bearer(token) => request.bearer(token),
        Credential::Header(name, value) => request.header(name.as_str(), value.as_str()),
    };
    if let Some(body) = &plan.body {
        request = request.json(body);
    }
    if plan.field.is_some() {
        request = request.header("Accept", "application/json");
    }
    // Any answer is a result, whatever its status: that is what is being
    // checked. Only no answer at all (refused, timed out) is an error.
    let response = request.send()?;
    let status_ok = status_ok(response.status, plan.expect_status);
    let (field_found, field_ok) = match &plan.field {
        Some((steps, check)) => {
            let (found, ok) = check_field(&response.body, steps, check);
            (Some(found), Some(ok))
        }
        None => (None, None),
    };
    Ok(json!({
        "method": plan.method,
        "status": response.status,
        "status_ok": status_ok,
        "field_found": field_found,
        "field_ok": field_ok,
        "ok": status_ok && field_ok.unwrap_or(true),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `plan` gives; `Plan` has no `Debug` (it holds the
    /// credential), so `unwrap_err` cannot be used.
    fn refused(input: &Value, mutating: bool) -> Error {
        match plan("https://app.example", input, mutating) {
            Err(e) => e,
            Ok(_) => panic!("the input was accepted: {input}"),
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        for url in [
            "/..",
            "/a/../admin",
            "/./a",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/..",
        ] {
            let e = refused(&json!({ "url": url }), false);
            assert!(e.to_string().contains("`.` or `..`"), "{url}: {e}");
        }
        // Dots inside a segment, or in the query, are fine.
        for url in ["/a/.well-known/x", "/v1.2/...", "/a?x=../b"] {
            assert!(
                plan("https://app.example", &json!({ "url": url }), false).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn a_path_joins_base_url_and_defaults_to_get_or_post() {
        let p = plan(
            "https://app.example/ ",
            &json!({"url": "/healthcheck?x=1"}),
            false,
        )
        .unwrap();
        assert_eq!(p.method, "GET");
        assert_eq!(p.url, "https://app.example/healthcheck?x=1");
        assert!(matches!(p.credential, Credential::None) && p.expect_status.is_none());
        let p = plan("https://app.example", &json!({"url": "/a"}), true).unwrap();
        assert_eq!(p.method, "POST");
        let p = plan(
            "https://app.example",
            &json!({"url": "/a", "method": "head", "bearer": "t", "expect_status": 401}),
            false,
        )
        .unwrap();
        assert_eq!((p.method.as_str(), p.expect_status), ("HEAD", Some(401)));
        assert!(matches!(p.credential, Credential::Bearer(ref t) if t == "t"));
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
            let e = refused(&json!({ "url": url }), false);
            assert!(e.to_string().contains("`url`"), "{url}: {e}");
        }
    }

    #[test]
    fn probe_only_reads_and_send_takes_any_method() {
        let e = refused(&json!({"url": "/", "method": "POST"}), false);
        assert!(e.to_string().contains("use `send`"), "{e}");
        let e = refused(&json!({"url": "/", "body": {"a": 1}}), false);
        assert!(e.to_string().contains("no body"), "{e}");
        let p = plan(
            "https://a",
            &json!({"url": "/", "method": "delete", "body": {"a": 1}}),
            true,
        )
        .unwrap();
        assert_eq!(p.method, "DELETE");
        assert_eq!(p.body, Some(json!({"a": 1})));
        let e = refused(&json!({"url": "/", "method": "GE T"}), true);
        assert!(e.to_string().contains("not an HTTP method"), "{e}");
    }

    #[test]
    fn statuses_and_credentials_are_checked() {
        for status in [json!(42), json!(600), json!("200"), json!(-1)] {
            assert!(
                plan(
                    "https://a",
                    &json!({"url": "/", "expect_status": status}),
                    false
                )
                .is_err(),
                "{status}"
            );
        }
        let e = refused(&json!({"url": "/", "bearer": " "}), false);
        assert!(e.to_string().contains("`bearer`"), "{e}");
        let e = refused(
            &json!({"url": "/", "bearer": "a", "use_granted_token": true}),
            false,
        );
        assert!(e.to_string().contains("one credential"), "{e}");
        let e = refused(&json!({"url": "/", "header_value": "v"}), false);
        assert!(e.to_string().contains("needs `header`"), "{e}");
        let e = refused(
            &json!({"url": "/", "header": "X Bad", "header_value": "v"}),
            false,
        );
        assert!(e.to_string().contains("not a header name"), "{e}");
        let p = plan(
            "https://a",
            &json!({"url": "/", "header": "X-Api-Key", "header_value": "v"}),
            false,
        )
        .unwrap();
        assert!(
            matches!(p.credential, Credential::Header(ref h, ref v) if h == "X-Api-Key" && v == "v")
        );
        let p = plan(
            "https://a",
            &json!({"url": "/", "header": "X-Api-Key", "use_granted_token": true}),
            false,
        )
        .unwrap();
        assert!(p.use_granted_token && p.granted_header.as_deref() == Some("X-Api-Key"));
    }

    #[test]
    fn status_ok_is_the_expected_status_or_any_2xx() {
        assert!(status_ok(204, None));
        assert!(!status_ok(301, None));
        assert!(!status_ok(401, None));
        assert!(status_ok(401, Some(401)));
        assert!(!status_ok(200, Some(401)));
    }

    fn steps(path: &str) -> Vec<String> {
        path.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn json_fields_are_found_by_dotted_path_and_compared() {
        let body =
            br#"{"user":{"email":"a@b","permissions":["signin","x"],"n":2,"items":[{"id":7}]}}"#;
        let eq = |v: Value| FieldCheck::Equals(v);
        assert_eq!(
            check_field(body, &steps("user.email"), &eq(json!("a@b"))),
            (true, true)
        );
        assert_eq!(
            check_field(body, &steps("user.email"), &eq(json!("x@b"))),
            (true, false)
        );
        assert_eq!(
            check_field(body, &steps("user.n"), &eq(json!(2))),
            (true, true)
        );
        assert_eq!(
            check_field(body, &steps("user.items.0.id"), &eq(json!(7))),
            (true, true)
        );
        assert_eq!(
            check_field(
                body,
                &steps("user.permissions"),
                &FieldCheck::Contains(json!("signin"))
            ),
            (true, true)
        );
        assert_eq!(
            check_field(
                body,
                &steps("user.permissions"),
                &FieldCheck::Contains(json!("admin"))
            ),
            (true, false)
        );
        assert_eq!(
            check_field(body, &steps("user.missing"), &FieldCheck::Present),
            (false, false)
        );
        assert_eq!(
            check_field(b"", &steps("user"), &FieldCheck::Present),
            (false, false)
        );
        assert_eq!(
            check_field(body, &steps("user"), &FieldCheck::Present),
            (true, true)
        );
    }

    #[test]
    fn field_checks_are_validated() {
        let e = refused(&json!({"url": "/", "json_equals": "x"}), false);
        assert!(e.to_string().contains("need `json_field`"), "{e}");
        let e = refused(&json!({"url": "/", "json_field": "a..b"}), false);
        assert!(e.to_string().contains("dotted path"), "{e}");
        let e = refused(
            &json!({"url": "/", "json_field": "a", "json_equals": {"x": 1}}),
            false,
        );
        assert!(e.to_string().contains("string, a number"), "{e}");
        let e = refused(
            &json!({"url": "/", "json_field": "a", "json_equals": 1, "json_contains": 1}),
            false,
        );
        assert!(e.to_string().contains("not both"), "{e}");
    }
}
