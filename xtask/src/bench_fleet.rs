//! `cargo xtask bench-fleet`: what rotating many credentials costs, one
//! `keycycle run` process per credential against one `keycycle rotate`
//! process for all of them (one wasmtime engine, each plugin loaded once,
//! one state store). CPU time is the figure: on a runner that rotates
//! hundreds of tokens, it is what the fleet pays. Against the demo
//! simulator, with the release build and a warm plugin cache.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{Usage, wait_with_usage};
use crate::cmd;
use crate::demo::{self, DemoEnv};

/// A rotation as the fleet runs it: mint a token, check the new one works.
const RUNBOOK: &str = "\
// Benchmark: a rotation of one credential: mint, then verify.
let fresh = plugin(\"example\").create_token(#{ name: param(\"name\") });
let check = plugin(\"example\").check_token(#{ token: fresh.token });
#{ new_id: fresh.id, valid: check.valid }
";

pub fn run(credentials: usize) -> Result<()> {
    if credentials == 0 {
        bail!("bench-fleet needs at least one credential");
    }
    let (sim, env) = crate::bench::demo_service()?;
    let runbook = env.dir().join("bench-rotate.rhai");
    std::fs::write(&runbook, RUNBOOK)
        .with_context(|| format!("cannot write {}", runbook.display()))?;
    let mut inventory = String::new();
    for i in 0..credentials {
        write!(
            inventory,
            "\n[credentials.c{i}]\nrunbook = {}\nparams = {{ name = \"c{i}\" }}\n",
            demo::toml_string(&runbook)?
        )?;
    }
    env.append_config(&inventory)?;

    // The first run compiles the plugin into the cache.
    measure(
        &env,
        &[
            "run",
            runbook.to_str().unwrap_or_default(),
            "--set",
            "name=warm",
        ],
    )?;

    cmd::say(&format!(
        "{credentials} rotations, one `keycycle run` process each"
    ));
    let mut separate = Usage {
        peak_rss_bytes: 0,
        cpu: Duration::ZERO,
    };
    let started = Instant::now();
    for i in 0..credentials {
        let name = format!("name=s{i}");
        let used = measure(
            &env,
            &["run", runbook.to_str().unwrap_or_default(), "--set", &name],
        )?;
        separate.cpu += used.cpu;
        separate.peak_rss_bytes = separate.peak_rss_bytes.max(used.peak_rss_bytes);
    }
    let separate_wall = started.elapsed();

    let mut rows = vec![(
        "one process per credential".to_owned(),
        separate,
        separate_wall,
    )];
    for concurrency in [1, 4] {
        cmd::say(&format!(
            "{credentials} rotations in one `keycycle rotate`, {concurrency} at a time"
        ));
        let ids: Vec<String> = (0..credentials).map(|i| format!("c{i}")).collect();
        let mut args = vec![
            "rotate".to_owned(),
            "--concurrency".to_owned(),
            concurrency.to_string(),
        ];
        args.extend(ids);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let used = measure(&env, &args)?;
        rows.push((
            format!("one `keycycle rotate`, concurrency {concurrency}"),
            used,
            started.elapsed(),
        ));
    }
    sim.stop()?;

    cmd::say(&format!(
        "{credentials} rotations (release build, plugin cache warm)"
    ));
    cmd::note(&format!(
        "{:<38} {:>14} {:>14} {:>12} {:>10}",
        "how", "CPU, total", "CPU/credential", "wall", "peak RSS"
    ));
    for (how, used, wall) in &rows {
        cmd::note(&format!(
            "{how:<38} {:>14} {:>14} {:>12} {:>10}",
            crate::bench::ms(used.cpu),
            crate::bench::ms(used.cpu / credentials as u32),
            crate::bench::ms(*wall),
            format!(
                "{:.1} MiB",
                used.peak_rss_bytes as f64 / f64::from(1u32 << 20)
            ),
        ));
    }
    Ok(())
}

/// Runs keycycle with `args` in the demo folder and returns what it used.
fn measure(env: &DemoEnv, args: &[&str]) -> Result<Usage> {
    let log = env.dir().join("bench-fleet.stderr");
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = env.keycycle();
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
    let (status, used) = wait_with_usage(child)?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}):\n{}",
            cmd::shown(&command),
            std::fs::read_to_string(&log).unwrap_or_default().trim_end()
        );
    }
    Ok(used)
}
