//! `cargo xtask bench-plugins`: what configured plugins a runbook does not
//! call cost a run. The same one-call runbook runs with only its plugin
//! configured, then with ten more (every shipped plugin, several times
//! over, each with its own grants and its code already in the cache). A
//! run loads only the plugins its runbook names, so the two must cost the
//! same; before that, every configured plugin was read, hashed, mapped and
//! described by every run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{Usage, median, ms};
use crate::demo::{self, DemoEnv};
use crate::{cmd, plugins};

/// How many other plugin instances the second configuration adds.
const EXTRA: usize = 10;

/// One plugin call, named literally: the runbook the issue measures.
const RUNBOOK: &str = "\
// Benchmark: one read-only call.
let me = plugin(\"example\").whoami();
#{ token_id: me.token_id }
";

/// Names every plugin at run time, so a run loads them all: the warm-up
/// that puts each extra plugin's compiled code in the cache.
const LOAD_ALL: &str = "\
// Warm-up: a computed plugin name makes a run describe every plugin.
let name = \"exam\" + \"ple\";
plugin(name).whoami()
";

pub fn run(runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("bench-plugins needs at least one run");
    }
    let (sim, env) = crate::bench::demo_service()?;
    let runbook = env.dir().join("bench-one-call.rhai");
    std::fs::write(&runbook, RUNBOOK)
        .with_context(|| format!("cannot write {}", runbook.display()))?;
    let load_all = env.dir().join("bench-load-all.rhai");
    std::fs::write(&load_all, LOAD_ALL)
        .with_context(|| format!("cannot write {}", load_all.display()))?;

    cmd::say(&format!(
        "{runs} runs with only the example plugin configured"
    ));
    measure(&env, &load_all)?;
    let alone = series(&env, &runbook, runs)?;

    let shipped = [
        "gitlab",
        "zendesk",
        "github",
        "ibm-sm",
        "kubernetes",
        "signon",
        "http-check",
    ];
    let mut extra = String::new();
    for i in 0..EXTRA {
        let name = shipped[i % shipped.len()];
        write!(
            extra,
            "\n[plugins.extra-{i}]\npath = {}\nhosts = [\"https://extra-{i}.example.com\"]\nconfig = {{ base_url = \"https://extra-{i}.example.com\" }}\n",
            demo::toml_string(plugins::wasm_path(name))?
        )?;
    }
    env.append_config(&extra)?;
    cmd::say(&format!(
        "{runs} runs with {EXTRA} more plugins configured (their code cached)"
    ));
    measure(&env, &load_all)?;
    let crowded = series(&env, &runbook, runs)?;
    // What every run paid before plugins were loaded lazily.
    let eager = series(&env, &load_all, runs)?;
    sim.stop()?;

    cmd::say(&format!(
        "A one-call runbook, median of {runs} runs (release build, plugin cache warm)"
    ));
    cmd::note(&format!(
        "{:<34} {:>10} {:>10} {:>10}",
        "configured", "CPU", "wall", "peak RSS"
    ));
    for (what, s) in [
        ("the runbook's plugin alone", &alone),
        ("and 10 other plugins", &crowded),
        ("all 11 loaded (a computed name)", &eager),
    ] {
        cmd::note(&format!(
            "{what:<34} {:>10} {:>10} {:>10}",
            ms(s.cpu),
            ms(s.wall),
            format!("{:.1} MiB", s.rss as f64 / f64::from(1u32 << 20))
        ));
    }
    // Within the noise of a shared machine: a run that loaded ten more
    // plugins would cost several milliseconds more.
    let ok = crowded.cpu <= alone.cpu + alone.cpu / 10 + Duration::from_micros(300);
    cmd::note(&format!(
        "goal: no more CPU with 10 other plugins than with none: {}",
        if ok { "met" } else { "NOT met" }
    ));
    Ok(())
}

/// Medians of a series of runs.
struct Series {
    cpu: Duration,
    wall: Duration,
    rss: u64,
}

fn series(env: &DemoEnv, runbook: &Path, runs: usize) -> Result<Series> {
    let mut cpu = Vec::with_capacity(runs);
    let mut wall = Vec::with_capacity(runs);
    let mut rss = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let used = measure(env, runbook)?;
        wall.push(started.elapsed());
        cpu.push(used.cpu);
        rss.push(used.peak_rss_bytes);
    }
    cpu.sort();
    wall.sort();
    rss.sort_unstable();
    Ok(Series {
        cpu: median(&cpu),
        wall: median(&wall),
        rss: rss[rss.len() / 2],
    })
}

/// Runs the runbook once with `keycycle run` and returns what it used.
fn measure(env: &DemoEnv, runbook: &Path) -> Result<Usage> {
    let mut command = env.keycycle();
    command.arg("run").arg(runbook);
    crate::bench::measure_command(command, &env.dir().join("bench-plugins.stderr"))
}
