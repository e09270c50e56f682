//! Text that came from outside keycycle (a plugin, a provider, a file's
//! first bytes, a wasmtime diagnostic) made fit for one line of a terminal,
//! a log or a TSV row: a newline or an escape sequence in such text could
//! forge output lines or drive the operator's terminal.

/// `text` on one line: newlines, tabs and other control characters become
/// visible escapes (`\n`, `\t`, `\u{1b}`), so one message stays one line
/// and one TSV field.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// How many characters of a piece of outside text a host message quotes.
pub const ECHO_CHARS: usize = 200;

/// How many characters of a plugin's own error message are kept: a
/// provider's answer can be worth reading, a megabyte of it is not.
pub const MESSAGE_CHARS: usize = 2000;

/// Text a plugin handed the host (a secret name, an HTTP method, a header
/// name, a URL) as a host message quotes it: masked, on one escaped line,
/// and cut to [`ECHO_CHARS`] with an ellipsis and the whole length, so a
/// 1 MB name does not come back as a 1 MB error.
pub fn echo(text: &str) -> String {
    bounded(text, ECHO_CHARS)
}

/// `text` masked, on one escaped line, and cut to `max` characters (of the
/// original text) with `… (N bytes in all)`. Masking comes first, so a cut
/// never leaves half a secret value that the redactor no longer knows.
pub fn bounded(text: &str, max: usize) -> String {
    let masked = keycycle_secret::redact(text);
    match masked.char_indices().nth(max) {
        None => one_line(&masked),
        Some((cut, _)) => format!(
            "{}… ({} bytes in all)",
            one_line(&masked[..cut]),
            masked.len()
        ),
    }
}

/// Whether `c` must not reach a terminal as it is: a C0 or C1 control
/// character or DEL (escape sequences, NUL, bell, backspace, NEL), or a
/// bidirectional control, which reorders what the terminal shows (the
/// embeddings and overrides U+202A..U+202E, the isolates U+2066..U+2069, and
/// the marks U+200E, U+200F and U+061C).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
}

/// A diagnostic folded onto one line: line breaks and the indentation
/// after them become single spaces (wasmtime's multi-line messages read
/// fine that way), then anything else unprintable is escaped.
pub(crate) fn fold(text: &str) -> String {
    let folded: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    one_line(&folded.join(" "))
}

/// The first bytes of a file, shown the way an operator would recognise
/// them: printable ASCII as is, anything else as `\xNN`.
pub(crate) fn byte_prefix(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(max) {
        if b.is_ascii_graphic() || b == b' ' {
            // A backtick would end the quoting the message puts around it.
            if b == b'`' || b == b'\\' {
                out.push('\\');
            }
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_breaks_and_controls() {
        assert_eq!(one_line("a\nb\tc\r\u{1b}[31m"), "a\\nb\\tc\\r\\u{1b}[31m");
        assert_eq!(one_line("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(one_line("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(
            one_line("\0\u{7f}\u{85}\u{9b}\u{2066}\u{200f}"),
            "\\u{0}\\u{7f}\\u{85}\\u{9b}\\u{2066}\\u{200f}"
        );
    }

    #[test]
    fn echo_is_one_line_and_bounded() {
        assert_eq!(echo("a\nb"), "a\\nb");
        let long = "x".repeat(1 << 20);
        let shown = echo(&long);
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.starts_with(&"x".repeat(ECHO_CHARS)));
        assert!(shown.ends_with("… (1048576 bytes in all)"), "{shown}");
        // A cut never falls inside a character.
        let wide = "é".repeat(ECHO_CHARS + 1);
        assert!(echo(&wide).starts_with(&"é".repeat(ECHO_CHARS)));
        assert_eq!(echo(&"é".repeat(ECHO_CHARS)), "é".repeat(ECHO_CHARS));
    }

    #[test]
    fn fold_joins_lines() {
        assert_eq!(
            fold("failed to parse\n\nCaused by:\n    0: bad\n\tthing"),
            "failed to parse Caused by: 0: bad thing"
        );
    }

    #[test]
    fn byte_prefix_shows_text_and_hex() {
        assert_eq!(byte_prefix(b"#!/bin/sh\n", 5), "#!/bi");
        assert_eq!(byte_prefix(b"\x89PNG\r\n", 6), "\\x89PNG\\x0d\\x0a");
    }
}
