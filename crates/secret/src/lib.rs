//! Secret values that cannot be printed, and the process-wide redactor that
//! masks every secret value this process has seen.
//!
//! Constructing a [`SecretValue`] is the only way the host holds a secret, and
//! construction registers the value with the redactor. That is what makes the
//! "secrets never leak" promise hold without every call site remembering it:
//! log lines, error chains, JSON output and panic messages all pass through
//! [`redact`] on their way out.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

/// What a secret value looks like wherever it would otherwise be shown.
pub const MASK: &str = "***";

/// Values shorter than this are not masked inside other text: masking every
/// "a" or "42" would destroy the output and protect nothing real.
pub const MIN_MASKED_LEN: usize = 4;

/// A secret value. It prints as `***` through `Debug` and `Display`, has no
/// `Serialize`, and its memory is wiped when the last clone is dropped.
#[derive(Clone)]
pub struct SecretValue(Arc<Zeroizing<String>>);

impl SecretValue {
    /// Wraps `value` and registers it with the redactor.
    pub fn new(value: impl Into<String>) -> SecretValue {
        let value = Zeroizing::new(value.into());
        register(&value);
        SecretValue(Arc::new(value))
    }

    /// The clear value. Call this only where the value must leave the
    /// process: into a plugin, an encrypted store, or a provider request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &SecretValue) -> bool {
        // Not constant time: equality is used for bookkeeping (has this value
        // changed?), never to check a credential an attacker supplies.
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

static REDACTOR: RwLock<Vec<Arc<Zeroizing<String>>>> = RwLock::new(Vec::new());

/// Registers `value` so that [`redact`] masks it from now on. Registering a
/// value twice is harmless.
pub fn register(value: &str) {
    if value.len() < MIN_MASKED_LEN {
        return;
    }
    let mut forms = vec![value.to_owned()];
    // A value inside output may be escaped: as serde_json writes it (JSON
    // output, JSON log lines) or as `{:?}` does (an error that quotes a
    // string). Mask those spellings too.
    for escaped in [json_escape(value), debug_escape(value)] {
        if escaped != value && !forms.contains(&escaped) {
            forms.push(escaped);
        }
    }
    let mut known = REDACTOR
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for form in forms {
        if !known.iter().any(|k| k.as_str() == form) {
            known.push(Arc::new(Zeroizing::new(form)));
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// `text` with every registered secret value replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = REDACTOR
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// The number of distinct spellings the redactor masks; for diagnostics.
pub fn registered_count() -> usize {
    REDACTOR.read().map(|k| k.len()).unwrap_or(0)
}

/// `value` as serde_json spells it inside a JSON string.
fn json_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_owned()
}

/// `value` as `format!("{value:?}")` spells it, without the quotes.
fn debug_escape(value: &str) -> String {
    let quoted = format!("{value:?}");
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_prints_as_mask() {
        let s = SecretValue::new("glpat-canary-aaaaaaaaaaaa");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "glpat-canary-aaaaaaaaaaaa");
    }

    #[test]
    fn redact_masks_registered_values_and_their_json_spelling() {
        let _s = SecretValue::new("tok\"en-with-quote");
        let line = r#"{"v":"tok\"en-with-quote"} and tok"en-with-quote"#;
        let out = redact(line);
        assert!(!out.contains("en-with-quote"), "{out}");
        assert_eq!(out, r#"{"v":"***"} and ***"#);
    }

    #[test]
    fn every_escaped_spelling_is_masked() {
        let value = "tok\"en/+=%\u{8}\u{c}\u{1}é-aaaaaaaa";
        register(value);
        let json = serde_json::to_string(&serde_json::json!({ "v": value })).unwrap();
        assert!(json.contains("\\b") && json.contains("\\f"), "{json}");
        assert_eq!(redact(&json), format!("{{\"v\":\"{MASK}\"}}"));
        let debug = format!("{value:?}");
        assert_eq!(redact(&debug), format!("\"{MASK}\""));
    }

    #[test]
    fn longer_secret_masked_whole() {
        let _a = SecretValue::new("abcdef");
        let _b = SecretValue::new("abcdefghij");
        assert_eq!(redact("x abcdefghij y"), "x *** y");
    }

    #[test]
    fn short_values_are_not_masked() {
        let _s = SecretValue::new("ab");
        assert_eq!(redact("abc"), "abc");
    }
}
