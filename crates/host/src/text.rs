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
            // Bidirectional overrides reorder what the terminal shows.
            c if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
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
