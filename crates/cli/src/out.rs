//! Everything keycycle prints goes through here: masked for secret values,
//! and written so that a closed pipe is never a failure.
//!
//! `keycycle run … | head -1` closes stdout while keycycle still writes.
//! Rust ignores SIGPIPE, so the write fails with `BrokenPipe`, and
//! `println!` turns that into a panic (exit 101, "This is a bug"): a script
//! then sees a crash after a rotation that succeeded and may run it again.
//! Restoring SIGPIPE instead would kill the process at whatever write comes
//! first, possibly in the middle of a rotation. So a write to a closed
//! stream is dropped, quietly, and the command ends with the exit code its
//! work earned.
//!
//! The macros mirror `print!`/`println!`/`eprint!`/`eprintln!`; `note!` is
//! for summary lines ("runbook X finished …"), which `-q` silences so a
//! cron log gets only what went wrong.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicI8, Ordering};

/// `-v` count minus `-q` count, as given on the command line.
static VERBOSITY: AtomicI8 = AtomicI8::new(0);
/// Set once stdout turned out to be closed, so nothing more is tried.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set by the first write to stdout, so `main` knows whether a JSON reader
/// already has a document.
static STDOUT_USED: AtomicBool = AtomicBool::new(false);
/// `-o json`: commands that act report what they did as one JSON document
/// on stdout instead of a summary line on stderr.
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// What a command that changes something did: a JSON document on stdout
/// under `-o json` (whatever `-q` says, since a script asked for it), a
/// summary line on stderr otherwise (silenced by `-q`).
pub fn done(doc: serde_json::Value, text: fmt::Arguments<'_>) {
    if JSON.load(Ordering::Relaxed) {
        let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
        write(Stream::Stdout, format_args!("{body}\n"));
    } else if notes_wanted() {
        write(Stream::Stderr, format_args!("{text}\n"));
    }
}

/// Whether anything was written to stdout.
pub fn stdout_used() -> bool {
    STDOUT_USED.load(Ordering::Relaxed)
}

pub fn set_verbosity(verbosity: i8) {
    VERBOSITY.store(verbosity, Ordering::Relaxed);
}

/// Whether summary lines are wanted (not under `-q`).
pub fn notes_wanted() -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= 0
}

#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Writes `args` to `stream`, masked. Errors are not reported: a closed
/// pipe means the reader has gone, and any other error on a terminal
/// stream has nowhere better to be reported.
pub fn write(stream: Stream, args: fmt::Arguments<'_>) {
    let closed = match stream {
        Stream::Stdout => &STDOUT_CLOSED,
        Stream::Stderr => &STDERR_CLOSED,
    };
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let text = fmt::format(args);
    let masked = keycycle_secret::redact(&text);
    let masked = escape_controls(&masked, matches!(stream, Stream::Stdout));
    let result = match stream {
        Stream::Stdout => {
            STDOUT_USED.store(true, Ordering::Relaxed);
            let mut out = io::stdout().lock();
            out.write_all(masked.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Stderr => io::stderr().lock().write_all(masked.as_bytes()),
    };
    if result.is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// `text` with every control character but newline and tab written as a
/// `\u{..}` escape, and the characters that reorder text shown the same
/// way. Provider and plugin text (error messages, advice, names) reaches
/// the terminal through here; an escape sequence in it must not recolour,
/// retitle or rewrite what the operator sees. keycycle's own output has
/// no other control characters. On stdout, which may be JSON, the escape
/// is JSON's own `\uXXXX`, so a document stays valid (serde_json has
/// already escaped control characters; only the direction overrides are
/// left for this).
fn escape_controls(text: &str, json_safe: bool) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c != '\n' && c != '\t' && keycycle_host::is_hidden(c);
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) && json_safe {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else if needs(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `print!` to stdout, masked, that a closed pipe cannot break.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write($crate::out::Stream::Stdout, format_args!($($arg)*)) };
}

/// `println!` to stdout, masked, that a closed pipe cannot break.
macro_rules! outln {
    () => { $crate::out::write($crate::out::Stream::Stdout, format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::out::write($crate::out::Stream::Stdout, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!`, masked, that a closed pipe cannot break.
macro_rules! err {
    ($($arg:tt)*) => { $crate::out::write($crate::out::Stream::Stderr, format_args!($($arg)*)) };
}

/// `eprintln!`, masked, that a closed pipe cannot break.
macro_rules! errln {
    () => { $crate::out::write($crate::out::Stream::Stderr, format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::out::write($crate::out::Stream::Stderr, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A summary line on stderr, silenced by `-q`.
macro_rules! note {
    ($($arg:tt)*) => {
        if $crate::out::notes_wanted() {
            errln!($($arg)*)
        }
    };
}
