//! Logging through tracing, with every line masked for secret values before
//! it reaches stderr, and a panic hook that masks panic messages too.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `--color`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Whether log lines get ANSI colour: `always` and `never` are obeyed;
/// `auto` means stderr is a terminal, `NO_COLOR` is unset or empty
/// (no-color.org), and `TERM` is not `dumb`.
pub fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            io::IsTerminal::is_terminal(&io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        }
    }
}

/// Sets up tracing. `verbosity` is `-v` count minus `-q` count.
/// `KEYCYCLE_LOG` (an `EnvFilter` directive) overrides it.
pub fn init(verbosity: i8, color: Color, format: Format) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Third-party crates (wasmtime, cranelift, hyper) stay quiet unless
    // asked for with -vvv: their trace output is enormous.
    let default = if verbosity >= 3 {
        "trace".to_owned()
    } else {
        format!(
            "warn,keycycle={level},keycycle_host={level},keycycle_runbook={level},keycycle_cli={level},plugin={level},runbook={level}"
        )
    };
    let filter = std::env::var("KEYCYCLE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr);
    let _ = match format {
        // CI collects these: every line is one JSON object with a
        // timestamp, the level, the target and the fields.
        Format::Json => builder
            .json()
            // A batch's runs log in a span naming their credential.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        Format::Text => builder
            .with_target(verbosity >= 1)
            .with_ansi(use_color(color))
            .without_time()
            .try_init(),
    };

    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-text panic payload)".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text =
            format!("keycycle panicked{location}: {payload}\nThis is a bug; please report it.\n");
        let _ = io::stderr().write_all(keycycle_secret::redact(&text).as_bytes());
    }));
}

struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = LineBuffer;

    fn make_writer(&'a self) -> LineBuffer {
        LineBuffer(Vec::new())
    }
}

/// Collects one formatted event and writes it masked, in one write, when
/// dropped, so a secret split across `write` calls is still caught.
pub struct LineBuffer(Vec<u8>);

impl Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = io::stderr()
            .lock()
            .write_all(keycycle_secret::redact(&text).as_bytes());
    }
}
