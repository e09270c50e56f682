//! GitLab's rules for the value of a masked CI/CD variable, checked before
//! anything is sent so that a rotation fails before it writes a value
//! GitLab would refuse.
//!
//! `app/models/concerns/ci/maskable.rb` holds two rules:
//! - masked and expanded (`raw: false`): `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z`,
//!   at least 8 characters from the Base64 alphabet of RFC 4648, both the
//!   standard and the URL-safe variant (so `+ / = - _`), plus `@ : . ~`;
//! - masked and raw (`raw: true`): `\A\S{8,}\z`, at least 8 characters with
//!   no whitespace, since a raw value is never expanded by the runner
//!   (gitlab-org/gitlab issue 196871).
//!
//! The provider reference gives only the first rule, and the GitLab
//! simulator applies it whatever `raw` says; GitLab itself relaxes it for
//! raw variables, and so does this plugin.

/// The fewest characters GitLab masks.
pub(crate) const MIN_LENGTH: usize = 8;

/// The characters an expanded masked value may hold besides ASCII letters
/// and digits.
const EXPANDED_EXTRA: &str = "_+=/@:.~-";

/// Why `value` cannot be the value of a masked variable, or `None` when it
/// can. The reason never quotes the value or its characters: it is a
/// secret.
pub(crate) fn violation(value: &str, raw: bool) -> Option<String> {
    let short = value.chars().count() < MIN_LENGTH;
    let whitespace = value.chars().any(ruby_space);
    let outside_alphabet = !raw
        && value
            .chars()
            .any(|c| !ruby_space(c) && !c.is_ascii_alphanumeric() && !EXPANDED_EXTRA.contains(c));
    let mut problems = Vec::new();
    if short {
        problems.push(format!("is shorter than {MIN_LENGTH} characters"));
    }
    if whitespace {
        problems.push("contains whitespace or line breaks".to_owned());
    }
    if outside_alphabet {
        problems.push("contains characters other than A-Z a-z 0-9 + / = - _ @ : . ~".to_owned());
    }
    if problems.is_empty() {
        return None;
    }
    let rule = if raw {
        "GitLab masks a raw variable only if its value has at least 8 characters and no \
         whitespace"
    } else {
        "GitLab masks an expanded variable (raw: false) only if its value has at least 8 \
         characters, all from the Base64 alphabet or @ : . ~; a raw variable may hold any \
         characters but whitespace"
    };
    Some(format!("the value {}; {rule}", problems.join(" and ")))
}

/// What Ruby's `\s` matches, the whitespace GitLab's rules refuse; wider
/// Unicode spaces such as U+00A0 are not in it.
fn ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_gitlab_masks() {
        for value in [
            "glpat-abcdefghij0123456789",
            "glptt-0123456789abcdef0123456789abcdef01234567",
            "YWJjZGVmZ2g=",
            "a+b/c=d-e_f@g:h.i~j",
            "12345678",
        ] {
            assert_eq!(violation(value, false), None, "{value}");
            assert_eq!(violation(value, true), None, "{value}");
        }
    }

    #[test]
    fn refuses_short_values() {
        let why = violation("abc1234", false).unwrap();
        assert!(why.contains("shorter than 8"), "{why}");
        assert!(violation("abc1234", true).is_some());
        // Eight characters, counted as characters rather than bytes.
        assert_eq!(violation("éééééééé", true), None);
        assert!(violation("ééééééé", true).is_some());
    }

    #[test]
    fn refuses_whitespace_under_both_rules() {
        for raw in [false, true] {
            let why = violation("abcd efgh", raw).unwrap();
            assert!(why.contains("whitespace"), "{why}");
            assert!(violation("abcdefgh\nijkl", raw).is_some());
        }
        // Ruby's `\s` is ASCII only: a no-break space is fine when raw.
        assert_eq!(violation("abcd\u{a0}efgh", true), None);
        assert!(violation("abcd\u{a0}efgh", false).is_some());
    }

    #[test]
    fn expanded_values_keep_to_the_alphabet_and_raw_ones_need_not() {
        for value in [
            "pa$$word123",
            "secret#1234",
            "abc!defgh",
            "quote\"1234",
            "ümlautsss",
        ] {
            let why = violation(value, false).unwrap();
            assert!(why.contains("other than A-Z"), "{why}");
            assert!(!why.contains(value), "{why}");
            assert_eq!(violation(value, true), None, "{value}");
        }
    }

    #[test]
    fn names_every_problem_without_the_value() {
        let why = violation("a$ b", false).unwrap();
        assert!(
            why.contains("shorter") && why.contains("whitespace") && why.contains("other than"),
            "{why}"
        );
        assert!(!why.contains("a$ b"));
    }
}
