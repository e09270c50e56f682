//! Fault injection: make chosen provider requests fail on purpose, so tests can
//! rehearse retries, rate limits and half-finished rotations.

use serde::{Deserialize, Serialize};

/// Makes the next `times` requests matching `method` and `path_prefix` fail
/// with `status` before the provider looks at them (nothing changes state),
/// or, with [`FailRule::after_processing`], after the provider carried them
/// out: a gateway that lost the answer, so the change happened but the
/// client sees only the error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRule {
    /// HTTP method to match (case-insensitive); `None` matches any method.
    #[serde(default)]
    pub method: Option<String>,
    /// Request paths starting with this match; empty matches every path.
    #[serde(default)]
    pub path_prefix: String,
    /// Status code to answer with.
    pub status: u16,
    /// How many matching requests fail before the rule expires.
    #[serde(default = "one")]
    pub times: u32,
    /// Seconds for a `Retry-After` header, if one should be sent.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Overrides the `message` of the error body; defaults to the status line
    /// (for example "500 Internal Server Error").
    #[serde(default)]
    pub message: Option<String>,
    /// Let the provider handle the request first, then answer `status`
    /// instead of its response.
    #[serde(default)]
    pub after_processing: bool,
}

fn one() -> u32 {
    1
}

impl FailRule {
    /// A rule failing the next request for `method` + `path_prefix` with `status`.
    pub fn new(method: &str, path_prefix: &str, status: u16) -> FailRule {
        FailRule {
            method: Some(method.to_owned()),
            path_prefix: path_prefix.to_owned(),
            status,
            times: 1,
            retry_after: None,
            message: None,
            after_processing: false,
        }
    }

    /// The same rule, letting the provider carry the request out before its
    /// answer is replaced by the error (a 502 from a proxy that lost it).
    pub fn after_processing(mut self) -> FailRule {
        self.after_processing = true;
        self
    }

    /// The same rule, failing `times` requests.
    pub fn times(mut self, times: u32) -> FailRule {
        self.times = times;
        self
    }

    /// The same rule, sending `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> FailRule {
        self.retry_after = Some(seconds);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.is_empty() || m == "*" || m.eq_ignore_ascii_case(method));
        method_ok && path.starts_with(&self.path_prefix)
    }
}

/// Answers the next `times` provider requests with 429, `Retry-After:
/// retry_after` and the body "Retry later".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub times: u32,
    #[serde(default = "default_retry_after")]
    pub retry_after: u64,
}

fn default_retry_after() -> u64 {
    1
}

/// What the simulator does instead of handling a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    RateLimited {
        retry_after: u64,
    },
    Failed {
        status: u16,
        retry_after: Option<u64>,
        message: Option<String>,
        /// The provider handles the request before the error replaces its
        /// answer.
        after_processing: bool,
    },
}

/// The pending faults of one simulator.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<FailRule>,
    rate_limit: Option<RateLimit>,
}

impl Faults {
    pub(crate) fn add(&mut self, rule: FailRule) {
        if rule.times > 0 {
            self.rules.push(rule);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
        self.rate_limit = None;
    }

    pub(crate) fn set_rate_limit(&mut self, limit: RateLimit) {
        self.rate_limit = (limit.times > 0).then_some(limit);
    }

    pub(crate) fn pending_rules(&self) -> Vec<FailRule> {
        self.rules.clone()
    }

    /// The fault to inject for this request, if any, using it up. A rate
    /// limit wins over fail rules; among rules the oldest matching one wins.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<Injected> {
        if let Some(limit) = self.rate_limit.as_mut() {
            limit.times -= 1;
            let retry_after = limit.retry_after;
            if limit.times == 0 {
                self.rate_limit = None;
            }
            return Some(Injected::RateLimited { retry_after });
        }
        let index = self.rules.iter().position(|r| r.matches(method, path))?;
        let rule = &mut self.rules[index];
        rule.times -= 1;
        let injected = Injected::Failed {
            status: rule.status,
            retry_after: rule.retry_after,
            message: rule.message.clone(),
            after_processing: rule.after_processing,
        };
        if rule.times == 0 {
            self.rules.remove(index);
        }
        Some(injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_matches_method_and_prefix_and_expires() {
        let mut faults = Faults::default();
        faults.add(FailRule::new("DELETE", "/api/tokens/", 500).times(2));
        assert_eq!(faults.take("GET", "/api/tokens/1"), None);
        assert_eq!(faults.take("DELETE", "/api/whoami"), None);
        let failed = Injected::Failed {
            status: 500,
            retry_after: None,
            message: None,
            after_processing: false,
        };
        assert_eq!(faults.take("delete", "/api/tokens/1"), Some(failed.clone()));
        assert_eq!(faults.take("DELETE", "/api/tokens/2"), Some(failed));
        assert_eq!(faults.take("DELETE", "/api/tokens/3"), None);
    }

    #[test]
    fn rate_limit_wins_and_counts_down() {
        let mut faults = Faults::default();
        faults.add(FailRule::new("GET", "", 503));
        faults.set_rate_limit(RateLimit {
            times: 1,
            retry_after: 7,
        });
        assert_eq!(
            faults.take("GET", "/x"),
            Some(Injected::RateLimited { retry_after: 7 })
        );
        assert!(matches!(
            faults.take("GET", "/x"),
            Some(Injected::Failed { status: 503, .. })
        ));
        assert_eq!(faults.take("GET", "/x"), None);
    }

    #[test]
    fn zero_times_adds_nothing() {
        let mut faults = Faults::default();
        faults.add(FailRule::new("GET", "", 500).times(0));
        faults.set_rate_limit(RateLimit {
            times: 0,
            retry_after: 1,
        });
        assert_eq!(faults.take("GET", "/"), None);
        assert!(faults.pending_rules().is_empty());
    }

    #[test]
    fn rule_without_method_matches_any() {
        let rule: FailRule =
            serde_json::from_str(r#"{"path_prefix":"/api/","status":502,"retry_after":null}"#)
                .unwrap();
        assert_eq!(rule.times, 1);
        assert!(rule.matches("PUT", "/api/v4/x"));
        assert!(!rule.matches("PUT", "/other"));
    }
}
