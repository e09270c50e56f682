//! `cargo xtask bench-journal`: what durability costs. Runs the full
//! `gitlab-personal-token` rotation against the GitLab simulator, each run
//! journaled either on disk (SQLite, with group commit: an fsync before
//! every externally visible effect and after every minted value) or in
//! memory, alternating in the same session so both see the same machine,
//! and compares the wall times.
//!
//! `KEYCYCLE_BENCH_BINARY=PATH` measures that keycycle binary instead of
//! building this tree's. `KEYCYCLE_BENCH_BASELINE=PATH` measures another
//! binary (an older build) beside it, round by round, each with its own
//! workspace and simulators: on a shared machine the cost of an fsync
//! changes from one minute to the next, so only runs interleaved this way
//! can be compared.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::bench::{median, ms, percentile};
use crate::demo::{self, DemoEnv, Profile};
use crate::sim::Sim;
use crate::{cmd, demo_gitlab, plugins, setup};

/// A keycycle binary to measure instead of this tree's release build.
const BINARY_ENV: &str = "KEYCYCLE_BENCH_BINARY";

/// A second keycycle binary to measure beside the first.
const BASELINE_ENV: &str = "KEYCYCLE_BENCH_BASELINE";

/// One binary under measurement, with a workspace and simulators of its
/// own, so neither run sees the other's state.
struct Subject {
    name: String,
    env: DemoEnv,
    demo_sim: Sim,
    sim: Sim,
    disk: Vec<Duration>,
    memory: Vec<Duration>,
}

impl Subject {
    fn start(name: &str, keycycle: &Path) -> Result<Subject> {
        let demo_sim = Sim::start(keycycle)?;
        let env = DemoEnv::create(keycycle, demo_sim.url())?;
        env.init_secrets()?;
        let sim = Sim::start_provider(keycycle, "gitlab")?;
        demo_gitlab::prepare(&sim, &env)?;
        Ok(Subject {
            name: name.to_owned(),
            env,
            demo_sim,
            sim,
            disk: Vec::new(),
            memory: Vec::new(),
        })
    }

    fn once(&self, memory: bool) -> Result<Duration> {
        let (runbook, args) = demo_gitlab::rotation_args();
        let mut command = self.env.keycycle();
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
            bail!("the rotation with {} failed ({status})", self.name);
        }
        Ok(took)
    }

    /// One rotation with each journal; `memory_first` alternates which goes
    /// first so neither always gets the warmer cache.
    fn round(&mut self, memory_first: bool) -> Result<()> {
        if memory_first {
            self.memory.push(self.once(true)?);
            self.disk.push(self.once(false)?);
        } else {
            self.disk.push(self.once(false)?);
            self.memory.push(self.once(true)?);
        }
        Ok(())
    }

    /// Prints the subject's figures; returns the median on disk.
    fn report(&mut self) -> Duration {
        self.disk.sort();
        self.memory.sort();
        let (d, m) = (median(&self.disk), median(&self.memory));
        let overhead = (d.as_secs_f64() / m.as_secs_f64() - 1.0) * 100.0;
        cmd::note(&self.name);
        cmd::note(&format!(
            "  {:<22} {:>10} {:>10}",
            "journal", "median", "p90"
        ));
        cmd::note(&format!(
            "  {:<22} {:>10} {:>10}",
            "SQLite on disk",
            ms(d),
            ms(percentile(&self.disk, 0.9))
        ));
        cmd::note(&format!(
            "  {:<22} {:>10} {:>10}",
            "in memory",
            ms(m),
            ms(percentile(&self.memory, 0.9))
        ));
        cmd::note(&format!(
            "  overhead of the on-disk journal: {overhead:.1}% of a full rotation (goal: under 10%) — {}",
            if overhead < 10.0 {
                "within goal"
            } else {
                "OVER GOAL"
            }
        ));
        d
    }

    fn stop(self) -> Result<()> {
        self.sim.stop()?;
        self.demo_sim.stop()
    }
}

pub fn run(runs: usize) -> Result<()> {
    setup::run()?;
    plugins::build()?;
    let keycycle = match std::env::var_os(BINARY_ENV) {
        Some(path) => {
            cmd::say(&format!("Measuring {} ({BINARY_ENV})", path.display()));
            PathBuf::from(path)
        }
        None => {
            cmd::say("Building the keycycle command line (release build, as operators run it)");
            demo::build_cli(Profile::Release)?
        }
    };
    let mut subjects = Vec::new();
    if let Some(path) = std::env::var_os(BASELINE_ENV) {
        let path = PathBuf::from(path);
        cmd::say(&format!(
            "Measuring {} beside it ({BASELINE_ENV})",
            path.display()
        ));
        subjects.push(Subject::start(
            &format!("baseline: {}", path.display()),
            &path,
        )?);
    }
    subjects.push(Subject::start(
        &format!("measured: {}", keycycle.display()),
        &keycycle,
    )?);

    cmd::say("Warming up (fills the plugin cache and the state database)");
    for subject in &subjects {
        subject.once(false)?;
        subject.once(true)?;
    }
    cmd::say(&format!(
        "Rotating {runs} times with each journal{}, alternating",
        if subjects.len() > 1 {
            " and each binary"
        } else {
            ""
        }
    ));
    for i in 0..runs {
        // Alternate which binary goes first, too.
        let order: Vec<usize> = if i % 2 == 0 {
            (0..subjects.len()).collect()
        } else {
            (0..subjects.len()).rev().collect()
        };
        for k in order {
            subjects[k].round(i % 2 == 1)?;
        }
    }
    let disk: Vec<Duration> = subjects.iter_mut().map(Subject::report).collect();
    if let [baseline, measured] = disk[..] {
        cmd::note(&format!(
            "on disk, measured against baseline: {:+.1}% wall time",
            (measured.as_secs_f64() / baseline.as_secs_f64() - 1.0) * 100.0
        ));
    }
    for subject in subjects {
        subject.stop()?;
    }
    Ok(())
}
