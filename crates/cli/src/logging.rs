//! Logging through tracing, with every line masked for secret values before
//! it reaches stderr, and a panic hook that masks panic messages too.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Sets up tracing. `verbosity` is `-v` count minus `-q` count.
/// `KEYCYCLE_LOG` (an `EnvFilter` directive) overrides it.
pub fn init(verbosity: i8) {
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_target(verbosity >= 1)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        .without_time()
        .try_init();

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
