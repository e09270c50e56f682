//! `cargo xtask bench-journal`: what durability costs. Runs the full
//! `gitlab-personal-token` rotation against the GitLab simulator, each run
//! journaled either on disk (SQLite, with group commit: an fsync before
//! every externally visible effect and after every minted value) or in
//! memory, alternating in the same session so both see the same machine,
//! and compares the wall times.
//!
//! `KEYCYCLE_BENCH_BINARY=PATH` measures that keycycle binary instead of
//! building this tree's, so an older build can be measured beside a newer
//! one on the same machine and simulator.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::bench::{median, ms, percentile};
use crate::demo::{self, DemoEnv, Profile};
use crate::sim::Sim;
use crate::{cmd, demo_gitlab, plugins, setup};

/// A keycycle binary to measure instead of this tree's release build.
const BINARY_ENV: &str = "KEYCYCLE_BENCH_BINARY";

pub fn run(runs: usize) -> Result<()> {
    setup::run()?;
    plugins::build()?;
    let keycycle = match std::env::var_os(BINARY_ENV) {
        Some(path) => {
            cmd::say(&format!("Measuring {} ({BINARY_ENV})", path.display()));
            std::path::PathBuf::from(path)
        }
        None => {
            cmd::say("Building the keycycle command line (release build, as operators run it)");
            demo::build_cli(Profile::Release)?
        }
    };
    let demo_sim = Sim::start(&keycycle)?;
    let env = DemoEnv::create(&keycycle, demo_sim.url())?;
    env.init_secrets()?;
    let sim = Sim::start_provider(&keycycle, "gitlab")?;
    demo_gitlab::prepare(&sim, &env)?;
    let (runbook, args) = demo_gitlab::rotation_args();

    let once = |memory: bool| -> Result<Duration> {
        let mut command = env.keycycle();
        command
            .arg("-q")
            .arg("run")
            .arg(&runbook)
            .args(args)
            .stdout(Stdio::null());
        if memory {
            command.env("KEYCYCLE_STATE_BACKEND", "memory");
        }
        let start = Instant::now();
        let status = command.status()?;
        let took = start.elapsed();
        if !status.success() {
            bail!("the rotation failed ({status})");
        }
        Ok(took)
    };
    cmd::say("Warming up (fills the plugin cache and the state database)");
    once(false)?;
    once(true)?;
    cmd::say(&format!(
        "Rotating {runs} times with each journal, alternating"
    ));
    let (mut disk, mut memory) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first so neither always gets the warmer cache.
        if i % 2 == 0 {
            disk.push(once(false)?);
            memory.push(once(true)?);
        } else {
            memory.push(once(true)?);
            disk.push(once(false)?);
        }
    }
    disk.sort();
    memory.sort();
    let (d, m) = (median(&disk), median(&memory));
    let overhead = (d.as_secs_f64() / m.as_secs_f64() - 1.0) * 100.0;
    cmd::note(&format!("{:<24} {:>10} {:>10}", "journal", "median", "p90"));
    cmd::note(&format!(
        "{:<24} {:>10} {:>10}",
        "SQLite on disk",
        ms(d),
        ms(percentile(&disk, 0.9))
    ));
    cmd::note(&format!(
        "{:<24} {:>10} {:>10}",
        "in memory",
        ms(m),
        ms(percentile(&memory, 0.9))
    ));
    cmd::note(&format!(
        "overhead of the on-disk journal: {overhead:.1}% of a full rotation (goal: under 10%) — {}",
        if overhead < 10.0 {
            "within goal"
        } else {
            "OVER GOAL"
        }
    ));
    sim.stop()?;
    demo_sim.stop()?;
    Ok(())
}
