//! The GitLab REST API at `{base_url}/api/v4`, reached through the host:
//! authentication with `PRIVATE-TOKEN`, GitLab's error messages, waits on
//! its rate limiter, retries of requests that are safe to repeat, and
//! pagination.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keycycle_plugin_sdk::{Context, Error, Value, http, log, secret};

use crate::retry::{self, RateLimitStep};
use crate::{messages, pages};

/// The secret the plugin acts with.
pub(crate) const TOKEN_SECRET: &str = "token";

/// Whether a request may be sent again when its outcome is unknown (a 5xx
/// or a lost connection).
pub(crate) enum Repeat {
    /// Sending it twice leaves the same state: GET, the PUT of a variable
    /// or a hook, the DELETE of a token or a trigger.
    Safe,
    /// Sending it twice could act twice (rotate, create). `check` tells
    /// the operator how to find out what happened.
    Never { check: String },
}

/// One request to the API. No `Debug`: the body can hold a secret.
pub(crate) struct Call {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    repeat: Repeat,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>, repeat: Repeat) -> Call {
        Call {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            repeat,
        }
    }

    /// `GET` of `path` under `/api/v4`.
    pub(crate) fn get(path: impl Into<String>) -> Call {
        Call::new("GET", path, Repeat::Safe)
    }

    /// A `PUT` that sets attributes to given values, so repeating it is
    /// harmless.
    pub(crate) fn put(path: impl Into<String>) -> Call {
        Call::new("PUT", path, Repeat::Safe)
    }

    /// A `DELETE`: the object is gone after one or two of them.
    pub(crate) fn delete(path: impl Into<String>) -> Call {
        Call::new("DELETE", path, Repeat::Safe)
    }

    /// A `POST` that creates or rotates something; never sent twice after
    /// an unknown outcome. `check` says what the operator should look at.
    pub(crate) fn post(path: impl Into<String>, check: impl Into<String>) -> Call {
        Call::new(
            "POST",
            path,
            Repeat::Never {
                check: check.into(),
            },
        )
    }

    /// A `POST` that is safe to send twice, such as asking GitLab for a
    /// webhook test delivery: a second one is another test, nothing more.
    pub(crate) fn post_repeatable(path: impl Into<String>) -> Call {
        Call::new("POST", path, Repeat::Safe)
    }

    /// Add the query parameter `key=value`.
    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    /// Send `body` as JSON.
    pub(crate) fn json(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }

    /// `METHOD /path`, for log lines and messages: no query, no body.
    /// Projects and groups appear as the operator wrote them (`acme/docs`),
    /// not as they travel in the URL (`acme%2Fdocs`).
    pub(crate) fn label(&self) -> String {
        format!("{} {}", self.method, crate::fields::display_ref(&self.path))
    }
}

/// The GitLab instance the operator configured.
pub(crate) struct Api {
    base: String,
    started: Instant,
}

impl Api {
    /// The API of the instance at config `base_url`: `https://gitlab.com`,
    /// or a self-managed URL, possibly with a path prefix.
    pub(crate) fn new(ctx: &Context) -> Result<Api, Error> {
        Ok(Api {
            base: api_base(ctx.config("base_url")?),
            started: Instant::now(),
        })
    }

    /// Send `call` with the plugin's token; a non-2xx answer becomes
    /// [`Error::Provider`] carrying GitLab's status and message.
    pub(crate) fn send(&self, call: &Call) -> Result<http::Response, Error> {
        let token = secret(TOKEN_SECRET)?;
        self.send_as(call, &token)
    }

    /// [`Api::send`] and decode the JSON answer.
    pub(crate) fn json(&self, call: &Call) -> Result<Value, Error> {
        self.send(call)?.json()
    }

    /// Send `call` authenticated with `token`, waiting out GitLab's rate
    /// limiter and retrying what is safe to retry.
    pub(crate) fn send_as(&self, call: &Call, token: &str) -> Result<http::Response, Error> {
        let mut waits = 0;
        let mut retries = 0;
        loop {
            let (status, message) = match self.build(call, token).send() {
                Ok(response) if response.is_success() => return Ok(response),
                Ok(response) if response.status == 429 => {
                    let wait = retry::rate_limit_wait(
                        response.header("Retry-After"),
                        response.header("RateLimit-Reset"),
                        now_unix(),
                    );
                    let limiter = response
                        .header("RateLimit-Name")
                        .map_or_else(String::new, |name| format!(" ({name})"));
                    let message = messages::from_body(429, &response.body);
                    match retry::after_rate_limit(wait, waits, self.started.elapsed()) {
                        RateLimitStep::Wait(wait) => {
                            waits += 1;
                            log::warn(&format!(
                                "GitLab's rate limit{limiter} refused {}; waiting {} s before \
                                 sending it again (wait {waits} of {})",
                                call.label(),
                                retry::seconds(wait),
                                retry::MAX_RATE_LIMIT_WAITS
                            ));
                            std::thread::sleep(wait);
                            continue;
                        }
                        RateLimitStep::GiveUp(wait) => {
                            log::warn(&format!(
                                "GitLab's rate limit{limiter} still refuses {}; handing back to \
                                 the runbook to try again in {} s",
                                call.label(),
                                retry::seconds(wait)
                            ));
                            return Err(Error::retryable(
                                retry::millis(wait),
                                format!(
                                    "GitLab's rate limit{limiter} refused {} ({message}); \
                                     nothing was changed; try again in {} s",
                                    call.label(),
                                    retry::seconds(wait)
                                ),
                            ));
                        }
                    }
                }
                Ok(response) if response.status >= 500 => (
                    response.status,
                    messages::from_body(response.status, &response.body),
                ),
                Ok(response) => {
                    return Err(Error::provider(
                        response.status,
                        messages::from_body(response.status, &response.body),
                    ));
                }
                // No answer came: the SDK reports timeouts and connection
                // failures as status 0. An oversized answer came complete
                // and will not shrink by asking again.
                Err(Error::Provider { status: 0, message })
                    if !message.starts_with("response is too large") =>
                {
                    (0, message)
                }
                Err(other) => return Err(other),
            };
            let what = if status == 0 {
                "no answer".to_owned()
            } else {
                format!("HTTP {status}")
            };
            match &call.repeat {
                Repeat::Safe if retry::retry_server_error(retries, self.started.elapsed()) => {
                    retries += 1;
                    log::warn(&format!(
                        "GitLab gave {what} to {} ({message}); sending it again in {} s \
                         (retry {retries} of {})",
                        call.label(),
                        retry::seconds(retry::SERVER_ERROR_PAUSE),
                        retry::MAX_SERVER_ERROR_RETRIES
                    ));
                    std::thread::sleep(retry::SERVER_ERROR_PAUSE);
                }
                Repeat::Safe => return Err(Error::provider(status, message)),
                Repeat::Never { check } => {
                    log::error(&format!(
                        "GitLab gave {what} to {}; its outcome is unknown and it is not sent \
                         again",
                        call.label()
                    ));
                    return Err(Error::provider(
                        status,
                        format!(
                            "{message}; the outcome of {} is unknown (GitLab may have carried \
                             it out before failing), so it was not sent again: {check}",
                            call.label()
                        ),
                    ));
                }
            }
        }
    }

    /// Every item of the list at `path`, following all pages.
    pub(crate) fn get_all(
        &self,
        path: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        let mut page: u32 = 1;
        loop {
            if page > pages::MAX_PAGES {
                return Err(Error::invalid_input(format!(
                    "GET {} lists more than {} items; the plugin stops there because a call \
                     may send only so many requests; narrow the list with a filter",
                    crate::fields::display_ref(path),
                    pages::MAX_PAGES as usize * pages::PER_PAGE
                )));
            }
            let mut call = Call::get(path);
            for (key, value) in filters {
                call = call.query(key, value.clone());
            }
            let call = call
                .query("per_page", pages::PER_PAGE.to_string())
                .query("page", page.to_string());
            let response = self.send(&call)?;
            let batch: Vec<Value> = response.json()?;
            let count = batch.len();
            items.extend(batch);
            match pages::next_page(response.header("X-Next-Page"), page, count, pages::PER_PAGE) {
                Some(next) => page = next,
                None => return Ok(items),
            }
        }
    }

    fn build(&self, call: &Call, token: &str) -> http::Request {
        let mut request = http::Request::new(call.method, format!("{}{}", self.base, call.path))
            .header("PRIVATE-TOKEN", token)
            .header("Accept", "application/json");
        for (key, value) in &call.query {
            request = request.query(key, value);
        }
        match &call.body {
            Some(body) => request.json(body),
            None => request,
        }
    }
}

/// `{base_url}/api/v4`. A base URL that already ends in `/api/v4` is taken
/// as meant rather than doubled.
pub(crate) fn api_base(base_url: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    let base = base.strip_suffix("/api/v4").unwrap_or(base);
    format!("{base}/api/v4")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d: Duration| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    #[test]
    fn api_base_appends_the_version_once() {
        assert_eq!(api_base("https://gitlab.com"), "https://gitlab.com/api/v4");
        assert_eq!(
            api_base("https://git.example/gl/ "),
            "https://git.example/gl/api/v4"
        );
        assert_eq!(
            api_base("https://gitlab.com/api/v4/"),
            "https://gitlab.com/api/v4"
        );
    }

    #[test]
    fn requests_carry_the_token_the_query_and_the_body() {
        let api = Api {
            base: api_base("https://gl.example/sub"),
            started: Instant::now(),
        };
        let call = Call::put("/projects/acme%2Fapi/variables/K")
            .query("filter[environment_scope]", "prod")
            .json(json!({"value": "v"}));
        let request = api.build(&call, "glpat-x");
        assert_eq!(
            request.url(),
            "https://gl.example/sub/api/v4/projects/acme%2Fapi/variables/K\
             ?filter%5Benvironment_scope%5D=prod"
        );
        assert_eq!(request.header_value("private-token"), Some("glpat-x"));
        assert_eq!(request.body_bytes(), br#"{"value":"v"}"#);
        let request = api.build(&Call::get("/user"), "t");
        assert!(request.body_bytes().is_empty());
    }

    #[test]
    fn calls_know_their_label_and_repeatability() {
        let call = Call::get("/projects/1/triggers").query("page", "2");
        assert_eq!(call.label(), "GET /projects/1/triggers");
        // Paths go out encoded but are shown as the operator wrote them.
        let call = Call::put("/projects/acme%2Fdocs/variables/K");
        assert_eq!(call.label(), "PUT /projects/acme/docs/variables/K");
        assert!(matches!(call.repeat, Repeat::Safe));
        let call = Call::post("/personal_access_tokens/3/rotate", "check list_pats")
            .json(json!({"expires_at": "2030-01-01"}));
        assert!(matches!(&call.repeat, Repeat::Never { check } if check == "check list_pats"));
        assert!(matches!(Call::put("/x").repeat, Repeat::Safe));
        assert!(matches!(Call::delete("/x").repeat, Repeat::Safe));
        assert!(matches!(Call::post_repeatable("/x").repeat, Repeat::Safe));
    }
}
