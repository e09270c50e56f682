//! The idempotency label `create_access_token` and `create_trigger` put in
//! a description, so that `find_access_token` and `find_trigger` can find
//! what an interrupted creation made.
//!
//! GitLab has no idempotency keys of its own, and only the description of
//! an access token or a trigger is free text the API gives back.

/// The text appended for idempotency key `key`: ` [keycycle:KEY]`, or
/// nothing when the host gave no key.
pub(crate) fn suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" [keycycle:{key}]")
    }
}

/// `description` with the label for `key` appended.
pub(crate) fn labelled(description: &str, key: &str) -> String {
    format!("{description}{}", suffix(key))
}

/// Whether `description` carries the label for `key`. A description that
/// is the label alone may come back without its leading space, should
/// GitLab ever strip it.
pub(crate) fn carries(description: &str, key: &str) -> bool {
    if key.is_empty() {
        return false;
    }
    let label = suffix(key);
    description.contains(&label) || description == label.trim_start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_key_or_nothing() {
        assert_eq!(
            labelled("deploy", "run-7/step-2"),
            "deploy [keycycle:run-7/step-2]"
        );
        assert_eq!(labelled("", "k1"), " [keycycle:k1]");
        assert_eq!(labelled("deploy", ""), "deploy");
    }

    #[test]
    fn recognises_its_own_label_only() {
        assert!(carries("deploy [keycycle:k1]", "k1"));
        assert!(carries(" [keycycle:k1]", "k1"));
        assert!(carries("[keycycle:k1]", "k1"));
        assert!(!carries("deploy [keycycle:k10]", "k1"));
        assert!(!carries("deploy [keycycle:k1", "k1"));
        assert!(!carries("deploy", "k1"));
        // Without a key nothing can be told apart.
        assert!(!carries("deploy", ""));
    }
}
