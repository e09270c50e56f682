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

/// Every registered spelling of every secret, indexed by its first
/// [`MIN_MASKED_LEN`] bytes. A batch of rotations registers thousands of
/// values (each old and new token, each escaped spelling), and every log
/// line and outgoing header is redacted: trying each value against each
/// text made redaction grow with the batch. With the index, a text is
/// scanned once and only values that start where it matches are compared.
struct Redactor {
    /// Registered spellings, each once.
    values: Vec<Arc<Zeroizing<String>>>,
    /// Indices into `values` by their first four bytes.
    by_prefix: std::collections::HashMap<[u8; MIN_MASKED_LEN], Vec<usize>>,
    /// One bit per two-byte start of a registered value: most positions of
    /// a text are passed over with one bit test, no hashing.
    starts: Vec<u64>,
}

impl Redactor {
    fn new() -> Redactor {
        Redactor {
            values: Vec::new(),
            by_prefix: std::collections::HashMap::new(),
            starts: vec![0; (1 << 16) / 64],
        }
    }

    fn start_bit(bytes: &[u8]) -> usize {
        usize::from(bytes[0]) << 8 | usize::from(bytes[1])
    }

    fn insert(&mut self, form: String) {
        let bytes = form.as_bytes();
        let Ok(prefix) = <[u8; MIN_MASKED_LEN]>::try_from(&bytes[..MIN_MASKED_LEN]) else {
            return;
        };
        let same = self.by_prefix.entry(prefix).or_default();
        if same.iter().any(|&i| self.values[i].as_str() == form) {
            return;
        }
        same.push(self.values.len());
        let bit = Redactor::start_bit(bytes);
        self.starts[bit / 64] |= 1 << (bit % 64);
        self.values.push(Arc::new(Zeroizing::new(form)));
    }

    /// The byte ranges of `text` that any registered value covers, merged
    /// where they overlap or touch, in order.
    fn covered(&self, text: &str) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        if self.values.is_empty() || bytes.len() < MIN_MASKED_LEN {
            return ranges;
        }
        for at in 0..=bytes.len() - MIN_MASKED_LEN {
            let bit = Redactor::start_bit(&bytes[at..]);
            if self.starts[bit / 64] & (1 << (bit % 64)) == 0 {
                continue;
            }
            let Some(candidates) =
                <[u8; MIN_MASKED_LEN]>::try_from(&bytes[at..at + MIN_MASKED_LEN])
                    .ok()
                    .and_then(|prefix| self.by_prefix.get(&prefix))
            else {
                continue;
            };
            // Every value that starts here, so one that contains another
            // is masked whole whichever is found first.
            let end = candidates
                .iter()
                .map(|&i| self.values[i].as_bytes())
                .filter(|value| bytes[at..].starts_with(value))
                .map(|value| at + value.len())
                .max();
            if let Some(end) = end {
                match ranges.last_mut() {
                    Some(last) if at <= last.1 => last.1 = last.1.max(end),
                    _ => ranges.push((at, end)),
                }
            }
        }
        ranges
    }
}

static REDACTOR: std::sync::LazyLock<RwLock<Redactor>> =
    std::sync::LazyLock::new(|| RwLock::new(Redactor::new()));

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
        known.insert(form);
    }
}

/// `text` with every registered secret value replaced by [`MASK`]. Where
/// values overlap, the whole stretch they cover becomes one mask.
pub fn redact(text: &str) -> Cow<'_, str> {
    let ranges = REDACTOR
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .covered(text);
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (start, end) in ranges {
        // A range may start or end inside a character only if a value
        // does, and values are `str`s, so both ends are boundaries.
        out.push_str(&text[from..start]);
        out.push_str(MASK);
        from = end;
    }
    out.push_str(&text[from..]);
    Cow::Owned(out)
}

/// The number of distinct spellings the redactor masks; for diagnostics.
pub fn registered_count() -> usize {
    REDACTOR.read().map(|k| k.values.len()).unwrap_or(0)
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
    fn overlapping_values_are_masked_as_one_stretch() {
        let _a = SecretValue::new("XYabcd-overlap");
        let _b = SecretValue::new("abcd-overlapQRST");
        assert_eq!(redact("<XYabcd-overlapQRST>"), "<***>");
        assert_eq!(redact("XYabcd-overlap XYabcd-overlap"), "*** ***");
        // Multi-byte characters around and inside a value.
        let _c = SecretValue::new("éclair-Ω-secret");
        assert_eq!(redact("ü éclair-Ω-secret ü"), "ü *** ü");
    }

    #[test]
    fn many_values_are_all_masked() {
        let values: Vec<SecretValue> = (0..2000)
            .map(|i| SecretValue::new(format!("glpat-many-{i:05}-xxxxxxxx")))
            .collect();
        for v in values.iter().step_by(97) {
            let line = format!("token {} here", v.expose());
            assert_eq!(redact(&line), "token *** here");
        }
        assert_eq!(redact("glpat-many-nothing"), "glpat-many-nothing");
    }

    #[test]
    fn short_values_are_not_masked() {
        let _s = SecretValue::new("ab");
        assert_eq!(redact("abc"), "abc");
    }
}
