//! `cargo xtask`: the project's chores as one small program, so a fresh
//! machine needs nothing but rustup, cargo and python3 to set up, test, see
//! the demo and measure the CLI.

mod bench;
mod bench_fleet;
mod bench_journal;
mod bench_plugins;
mod cmd;
mod demo;
mod demo_github;
mod demo_gitlab;
mod demo_signon;
mod demo_zendesk;
mod fleet_client;
mod plugins;
mod setup;
mod sim;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup              install what builds and tests need (the wasm32-wasip2 target, python-gitlab)
  plugins            build the plugin workspaces (plugins/, tests/plugins/) for wasm32-wasip2
  test [ARGS...]     setup, plugins, the plugin workspaces' own unit tests (native),
                     then `cargo test --workspace ARGS...`; prints each stage's time
  man [DIR]          write keycycle's man pages (default target/man)
  demo [--keep]      rotate a demo admin token end to end against a local simulator;
                     --keep leaves the demo folder (config, store, cache) in place
  bench-run [--runs N] [--warmup N]
                     time `keycycle run` (release build) on a small runbook with warm
                     caches; default 30 runs after 3 warm-up runs
  bench-journal [--runs N]
                     a full GitLab rotation with the journal on disk vs in memory,
                     alternating; reports the on-disk overhead
  bench-fleet [N [C]] [--postgres [--runners R]]
                     N GitLab project-token rotations (default 1000), each with a masked
                     variable, in one `keycycle rotate --concurrency C` (default 16), and
                     the same requests from a plain reqwest client; reports CPU per
                     rotation and per request, wall, peak RSS, and one `keycycle run`.
                     --postgres keeps the run state in a throwaway PostgreSQL server;
                     --runners R splits the credentials among R processes on it
  bench-plugins [--runs N]
                     a one-call runbook with only its plugin configured against ten
                     more configured; reports CPU, wall and peak RSS of each
  help               show this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "setup" => {
            no_options(command, rest)?;
            setup::run()
        }
        "plugins" => {
            no_options(command, rest)?;
            plugins::build().map(|_| ())
        }
        "test" => test(rest),
        "man" => man(rest),
        "demo" => {
            let keep = match rest {
                [] => false,
                [flag] if flag == "--keep" => true,
                _ => bail!(
                    "demo takes only --keep, not `{}`\n\n{USAGE}",
                    rest.join(" ")
                ),
            };
            demo::run(keep)
        }
        "bench-run" => bench::run(&parse_bench_options(rest)?),
        "bench-journal" => bench_journal::run(parse_bench_options(rest)?.runs),
        "bench-plugins" => bench_plugins::run(parse_bench_options(rest)?.runs),
        "bench-fleet" => {
            let (n, c, state) = parse_fleet_options(rest)?;
            bench_fleet::run(n, c, state)
        }
        // The plain client bench-fleet runs as a child process.
        "fleet-client" => match rest {
            [spec] => fleet_client::run(spec),
            _ => bail!("fleet-client takes one spec file"),
        },
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn no_options(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("{command} takes no options, but got `{}`", rest.join(" "))
    }
}

/// The test command: everything the tests rely on, then every workspace's
/// tests. The plugin workspaces build for wasm32-wasip2, but their unit
/// tests are plain Rust and run on the host target.
fn test(cargo_test_args: &[String]) -> Result<()> {
    let mut stages = Vec::new();
    let mut stage = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let started = std::time::Instant::now();
        let result = f();
        stages.push((name.to_owned(), started.elapsed()));
        result
    };
    stage("setup", &mut || setup::run())?;
    stage("plugins (wasm32-wasip2)", &mut || {
        plugins::build().map(|_| ())
    })?;
    for (manifest, what) in plugins::WORKSPACES {
        stage(&format!("unit tests of {manifest}"), &mut || {
            cmd::say(&format!(
                "Running the unit tests of {manifest} ({what}) on the host"
            ));
            cmd::run(
                cmd::cargo()
                    .args([
                        "test",
                        "--workspace",
                        "--manifest-path",
                        manifest,
                        "--target-dir",
                    ])
                    .arg(cmd::host_target_dir()),
            )
        })?;
    }
    // Programs unpacked by setup (Debian's kubectl) come first on PATH.
    let mut path = setup::debian_tools();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).context("a tool folder holds a `:`")?;
    let result = stage("host workspace tests", &mut || {
        cmd::say("Running the test suite of the whole workspace");
        cmd::run(
            cmd::cargo()
                .env("PATH", &path)
                .args(["test", "--workspace"])
                .args(cargo_test_args),
        )
    });
    cmd::say("Time per stage");
    for (name, took) in &stages {
        cmd::note(&format!("{:>8.1} s  {name}", took.as_secs_f64()));
    }
    result
}

/// Builds keycycle and has it write its man pages, generated from the same
/// clap definition as `--help`.
fn man(rest: &[String]) -> Result<()> {
    let dir = match rest {
        [] => cmd::repo_root().join("target/man"),
        [dir] => std::path::PathBuf::from(dir),
        _ => bail!("man takes at most one folder, not `{}`", rest.join(" ")),
    };
    cmd::say("Building keycycle");
    cmd::run(cmd::cargo().args(["build", "--quiet", "--bin", "keycycle"]))?;
    let bin = cmd::host_target_dir().join("debug/keycycle");
    cmd::run(std::process::Command::new(bin).arg("man").arg(&dir))
}

/// `N [C]` positionally, or the older `--credentials N`; `--postgres` and
/// `--runners R` anywhere.
fn parse_fleet_options(rest: &[String]) -> Result<(usize, usize, bench_fleet::State)> {
    let number = |what: &str, text: &str| -> Result<usize> {
        text.parse()
            .with_context(|| format!("bench-fleet: {what} `{text}` is not a whole number"))
    };
    let mut state = bench_fleet::State::default();
    let mut positional = Vec::new();
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--postgres" => state.postgres = true,
            "--runners" => {
                let r = words
                    .next()
                    .context("bench-fleet: --runners takes a number")?;
                state.runners = number("R", r)?;
            }
            _ => positional.push(word.clone()),
        }
    }
    if state.runners == 0 {
        bail!("bench-fleet: --runners must be at least 1");
    }
    if state.runners > 1 && !state.postgres {
        bail!("bench-fleet: several runners share their state in PostgreSQL; add --postgres");
    }
    let (n, c) = match positional.as_slice() {
        [] => (1000, 16),
        [flag, n] if flag == "--credentials" => (number("N", n)?, 16),
        [n] => (number("N", n)?, 16),
        [n, c] => (number("N", n)?, number("C", c)?),
        other => bail!("bench-fleet takes N and C (or --credentials N), not {other:?}"),
    };
    Ok((n, c, state))
}

fn parse_bench_options(rest: &[String]) -> Result<bench::Options> {
    let mut options = bench::Options::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut number = |name: &str| -> Result<usize> {
            let value = it
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            value
                .parse()
                .with_context(|| format!("{name} `{value}` is not a whole number"))
        };
        match flag.as_str() {
            "--runs" => options.runs = number("--runs")?,
            "--warmup" => options.warmup = number("--warmup")?,
            other => bail!("bench-run takes --runs N and --warmup N, not `{other}`"),
        }
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if options.warmup == 0 {
        bail!(
            "--warmup must be at least 1: the first run fills the plugin cache, and it is not what operators wait for"
        );
    }
    Ok(options)
}
