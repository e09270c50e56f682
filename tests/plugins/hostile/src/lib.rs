//! A plugin that misbehaves on request, one operation per sandbox rule:
//! endless loops, memory and stack exhaustion, panics, oversized output,
//! log floods, and reaching for secrets, environment and origins it was not
//! granted. The sandbox tests call each operation and check that the host
//! stops it and says why.

use sha2::Digest as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use keycycle_plugin_sdk::prelude::*;

struct Hostile;

impl Plugin for Hostile {
    fn describe() -> Description {
        Description::new("hostile", env!("CARGO_PKG_VERSION"))
            .host("{config.base_url}")
            // A second origin, for redirects from one granted origin to
            // another.
            .host("{config.other_url}")
            .secret("token")
            .config("base_url")
            .config("other_url")
            .operation(Operation::new("ok", "Behave, to show the plugin loads"))
            .operation(Operation::new("loop_forever", "Spin without end"))
            .operation(Operation::new(
                "alloc_4gib",
                "Allocate and touch memory in 64 MiB chunks up to 4 GiB",
            ))
            .operation(Operation::new("overflow_stack", "Recurse without end"))
            .operation(Operation::new("panic", "Panic"))
            .operation(Operation::new(
                "big_output",
                "Return an object with a 100 MB string",
            ))
            .operation(Operation::new("log_flood", "Log without end"))
            .operation(Operation::new(
                "log_flood_bytes",
                "Log 8 KiB lines without end",
            ))
            .operation(
                Operation::new(
                    "read_secret",
                    "Read a secret by name and report its length and a salted hash",
                )
                .input("name", "secret name", true),
            )
            .operation(Operation::new("read_env", "Return the environment"))
            .operation(
                Operation::new("http_get", "GET a URL through the host")
                    .input("url", "the URL", true),
            )
            .operation(Operation::new(
                "leak",
                "Read the granted secret, log it, and return it in a field not declared secret",
            ))
            .operation(Operation::new(
                "leak_in_error",
                "Read the granted secret and return it inside an error message",
            ))
            .operation(
                Operation::new(
                    "swallow_denial",
                    "GET a URL, ignore whatever the host says, and report success",
                )
                .input("url", "the URL", true),
            )
            .operation(
                Operation::new(
                    "send_header",
                    "GET a URL with one header of the plugin's choosing",
                )
                .input("url", "the URL", true)
                .input("name", "header name", true)
                .input("value", "header value", true),
            )
            .operation(
                Operation::new(
                    "send_credentials",
                    "GET a URL carrying the granted token in every credential header, plus X-Trace",
                )
                .input("url", "the URL", true),
            )
            .operation(
                Operation::new("http_many", "GET a URL `count` times in one call")
                    .input("url", "the URL", true)
                    .input("count", "how many requests", true),
            )
            .operation(Operation::new(
                "bump_static",
                "Increment a static counter and return it",
            ))
            .operation(
                Operation::new("echo_secret", "Report the length of a secret input").input(
                    "token",
                    "a secret passed in by the runbook",
                    true,
                ),
            )
            .operation(
                Operation::new("log_text", "Log a message of the caller's choosing")
                    .input("level", "trace, debug, info, warn or error", true)
                    .input("message", "the text", true),
            )
            .operation(Operation::new(
                "log_bad_level",
                "Call the host's log import with a level outside the enum",
            ))
            .operation(
                Operation::new("http_method", "Send a request with any method")
                    .input("url", "the URL", true)
                    .input("method", "the method", true),
            )
            .operation(
                Operation::new(
                    "secret_told",
                    "Ask for a secret and return what the host told the plugin",
                )
                .input("name", "secret name", true),
            )
            .operation(
                Operation::new("fail_with", "Fail with a provider error of the caller's text")
                    .input("message", "the text", true),
            )
            .operation(
                Operation::new(
                    "change_unknown",
                    "A change that gets a 502, with advice that forges a line",
                )
                .mutates()
                .if_interrupted(
                    "Check the provider.\nerror: forged by the plugin \u{1b}[2J\u{202e}",
                ),
            )
            .operation(
                Operation::new(
                    "send_secret_in",
                    "GET a URL with the secret (the `token` input, else the granted one) inside one header of the plugin's choosing, plus X-Trace",
                )
                .input("url", "the URL", true)
                .input("header", "header name", true)
                .input("token", "a secret passed in by the runbook", false),
            )
            .operation(
                Operation::new("send_body", "Send a request with a body")
                    .input("url", "the URL", true)
                    .input("method", "the method", true)
                    .input("body", "the body", true),
            )
    }

    fn invoke(_ctx: &Context, operation: &str, input: Value) -> Result<Value, Error> {
        match operation {
            "ok" => Ok(json!({"ok": true})),
            "loop_forever" => loop_forever(),
            "alloc_4gib" => Ok(json!({"allocated_mib": alloc_4gib()})),
            "overflow_stack" => Ok(json!({"depth": recurse(0)})),
            "panic" => panic!("hostile plugin panicked"),
            "big_output" => Ok(json!({"data": "x".repeat(100_000_000)})),
            "log_flood" => log_flood(),
            "log_flood_bytes" => log_flood_bytes(),
            "swallow_denial" => {
                // A plugin that hides a refusal from its caller: the host's
                // own record of the denial must still decide the call.
                let _ = http::Request::get(input.str_field("url")?).send();
                Ok(json!({"ok": true}))
            }
            "send_header" => {
                let response = http::Request::get(input.str_field("url")?)
                    .header(input.str_field("name")?, input.str_field("value")?)
                    .send()?;
                Ok(json!({"status": response.status}))
            }
            "send_credentials" => {
                let token = secret("token")?;
                let response = http::Request::get(input.str_field("url")?)
                    .header("Authorization", format!("Bearer {token}"))
                    .header("Private-Token", token.as_str())
                    .header("Job-Token", token.as_str())
                    .header("Cookie", format!("session={token}"))
                    .header("X-Trace", "hostile")
                    .send()?;
                Ok(json!({"status": response.status}))
            }
            "http_many" => {
                let url = input.str_field("url")?;
                let count = input.u64_field("count")?;
                for _ in 0..count {
                    http::Request::get(url).send()?;
                }
                Ok(json!({"sent": count}))
            }
            "bump_static" => {
                // Each call gets a fresh instance, so this is 1 every time;
                // 2 would mean an instance (and its memory) was reused.
                static CALLS: AtomicU64 = AtomicU64::new(0);
                Ok(json!({"calls": CALLS.fetch_add(1, Ordering::SeqCst) + 1}))
            }
            "read_secret" => {
                let value = secret(input.str_field("name")?)?;
                // Salted, so the report is not the plain sha256 a leak scan
                // looks for.
                let digest = sha2::Sha256::digest(format!("isolation-check:{value}"));
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                Ok(json!({"value_len": value.len(), "salted_sha256": hex}))
            }
            "read_env" => {
                let vars: Vec<(String, String)> = std::env::vars().collect();
                Ok(json!({ "vars": vars }))
            }
            "http_get" => {
                let response = http::Request::get(input.str_field("url")?).send()?;
                Ok(json!({"status": response.status}))
            }
            "leak" => {
                let value = secret("token")?;
                log::info(&format!("the token is {value}"));
                log::error(&format!("again: {value}"));
                Ok(json!({ "stolen": value, "nested": { "copy": value } }))
            }
            "leak_in_error" => {
                let value = secret("token")?;
                Err(Error::provider(
                    500,
                    format!("upstream rejected token {value}"),
                ))
            }
            "echo_secret" => Ok(json!({"len": input.str_field("token")?.len()})),
            "log_text" => {
                let message = input.str_field("message")?;
                match input.str_field("level")? {
                    "trace" => log::trace(message),
                    "debug" => log::debug(message),
                    "warn" => log::warn(message),
                    "error" => log::error(message),
                    _ => log::info(message),
                }
                Ok(json!({"ok": true}))
            }
            "log_bad_level" => {
                log_bad_level();
                Ok(json!({"ok": true}))
            }
            "http_method" => {
                let response =
                    http::Request::new(input.str_field("method")?, input.str_field("url")?)
                        .send()?;
                Ok(json!({"status": response.status}))
            }
            "secret_told" => match secret(input.str_field("name")?) {
                Ok(value) => Ok(json!({"len": value.len()})),
                Err(e) => Ok(json!({"told": e.to_string()})),
            },
            "fail_with" => Err(Error::provider(400, input.str_field("message")?)),
            "change_unknown" => Err(Error::provider(502, "bad gateway")),
            "send_secret_in" => {
                let token = match input.opt_str_field("token")? {
                    Some(t) => t.to_owned(),
                    None => secret("token")?,
                };
                let response = http::Request::get(input.str_field("url")?)
                    .header(input.str_field("header")?, format!("v1;{token};end"))
                    .header("X-Trace", "hostile")
                    .send()?;
                Ok(json!({"status": response.status}))
            }
            "send_body" => {
                let response =
                    http::Request::new(input.str_field("method")?, input.str_field("url")?)
                        .body(input.str_field("body")?.as_bytes().to_vec())
                        .send()?;
                Ok(json!({"status": response.status}))
            }
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Hostile);

fn loop_forever() -> ! {
    let mut spins: u64 = 0;
    loop {
        // black_box makes the loop body observable, so it stays a real loop.
        spins = black_box(spins.wrapping_add(1));
    }
}

/// Returns only if 4 GiB fit, which a wasm32 address space cannot hold.
fn alloc_4gib() -> u64 {
    const CHUNK: usize = 64 << 20;
    const CHUNKS: usize = 64; // 64 × 64 MiB = 4 GiB; usize is 32-bit here.
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(CHUNKS);
    for _ in 0..CHUNKS {
        let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK);
        // Writing every byte makes the pages real, not just reserved.
        chunk.resize(CHUNK, 0xA5);
        kept.push(black_box(chunk));
    }
    black_box(&kept);
    (kept.len() * (CHUNK >> 20)) as u64
}

/// The caller uses each result after the call returns, so neither
/// tail-call elimination nor accumulator rewriting can turn this into a
/// loop. Frames keep almost nothing in linear memory, so what runs out is
/// the engine's call stack, not the module's 1 MiB shadow stack.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = black_box(recurse(depth + 1));
    below.wrapping_mul(31).wrapping_add(depth)
}

fn log_flood_bytes() -> ! {
    let line = "x".repeat(8 << 10);
    loop {
        log::info(black_box(&line));
    }
}

fn log_flood() -> ! {
    let mut line: u64 = 0;
    loop {
        log::info(&format!("flood line {line}"));
        line = black_box(line.wrapping_add(1));
    }
}

/// The host's `log` import called directly, as the SDK never would, with a
/// level discriminant the `level` enum does not have. The signature is the
/// canonical ABI's lowering of `log: func(level: level, message: string)`.
#[allow(unsafe_code)]
fn log_bad_level() {
    #[link(wasm_import_module = "keycycle:plugin/host@0.1.0")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, message: *const u8, len: usize);
    }
    let message = "a line at level 9";
    // SAFETY: the pointer and length describe a live string; the host reads
    // it during the call and keeps no reference.
    unsafe { host_log(black_box(9), message.as_ptr(), message.len()) };
}
