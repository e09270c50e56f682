//! `cargo xtask bench-run`: how long an operator waits for `keycycle run`,
//! and how much memory it takes, on a small runbook with the plugin cache
//! already filled. Measures the release build, since that is what operators
//! run, against the demo simulator on this machine.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::demo::{self, ADMIN_SECRET, DemoEnv, Profile};
use crate::sim::Sim;
use crate::{cmd, plugins, setup};

/// Wall time an operator should wait at most for a small runbook.
const GOAL_WALL: Duration = Duration::from_millis(100);
/// Peak resident memory of one `keycycle run`.
const GOAL_RSS_BYTES: u64 = 64 << 20;

/// One plugin call and a result: the smallest run that still loads the
/// plugin, opens the store, and talks to the service.
const RUNBOOK: &str = "\
// Benchmark: one read-only call with the stored admin token.
let me = plugin(\"example\").whoami();
#{ token_id: me.token_id }
";

pub struct Options {
    pub runs: usize,
    pub warmup: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runs: 30,
            warmup: 3,
        }
    }
}

/// One measured `keycycle run`.
struct Sample {
    wall: Duration,
    peak_rss_bytes: u64,
}

pub fn run(options: &Options) -> Result<()> {
    let (sim, env) = demo_service()?;
    let runbook = env.dir().join("bench-whoami.rhai");
    std::fs::write(&runbook, RUNBOOK)
        .with_context(|| format!("cannot write {}", runbook.display()))?;
    let stderr_file = env.dir().join("last-run.stderr");

    cmd::say(&format!(
        "Warming up: {} run(s); the first compiles the plugin into the cache",
        options.warmup
    ));
    for _ in 0..options.warmup {
        measure_once(&env, &runbook, &stderr_file)?;
    }
    let cache = env.dir().join("cache");
    let cached = std::fs::read_dir(&cache)
        .with_context(|| format!("the plugin cache {} was not created", cache.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "cwasm"));
    if !cached {
        bail!(
            "after the warm-up the plugin cache {} holds no compiled plugin, so the runs would measure compilation",
            cache.display()
        );
    }

    cmd::say(&format!(
        "Measuring {} runs of `keycycle run` on a one-call runbook",
        options.runs
    ));
    let mut samples = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        samples.push(measure_once(&env, &runbook, &stderr_file)?);
    }
    sim.stop()?;
    report(&samples, options);
    Ok(())
}

/// The release build of keycycle, the demo token service with an admin
/// token, and a throw-away keycycle folder holding that token: what every
/// benchmark against the demo measures in.
pub fn demo_service() -> Result<(Sim, DemoEnv)> {
    setup::run()?;
    plugins::build()?;
    cmd::say("Building the keycycle command line (release build, as operators run it)");
    let keycycle = demo::build_cli(Profile::Release)?;
    cmd::say("Starting the demo token service and a throw-away keycycle folder");
    let sim = Sim::start(&keycycle)?;
    let admin_token = demo::random_token();
    sim.seed_token("admin", &admin_token)?;
    let env = DemoEnv::create(&keycycle, sim.url())?;
    env.init_secrets()?;
    env.set_secret(ADMIN_SECRET, &admin_token)?;
    Ok((sim, env))
}

/// Runs the runbook once, as an operator would, and measures it.
fn measure_once(env: &DemoEnv, runbook: &Path, stderr_file: &Path) -> Result<Sample> {
    let stderr = File::create(stderr_file)
        .with_context(|| format!("cannot create {}", stderr_file.display()))?;
    let mut command = env.keycycle();
    command
        .arg("run")
        .arg(runbook)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
    let (status, peak_rss_bytes) = wait_with_peak_rss(child)?;
    let wall = started.elapsed();
    if !status.success() {
        let said = std::fs::read_to_string(stderr_file).unwrap_or_default();
        bail!(
            "`{}` failed ({status}):\n{}",
            cmd::shown(&command),
            said.trim_end()
        );
    }
    Ok(Sample {
        wall,
        peak_rss_bytes,
    })
}

/// Waits for `child` and returns its exit status and peak resident set
/// size in bytes. `wait4` reports the usage of that one process, unlike
/// `getrusage(RUSAGE_CHILDREN)`, which would also count the cargo builds
/// and the simulator this program started.
fn wait_with_peak_rss(child: Child) -> Result<(ExitStatus, u64)> {
    wait_with_usage(child).map(|(status, usage)| (status, usage.peak_rss_bytes))
}

/// What one child process used.
pub struct Usage {
    pub peak_rss_bytes: u64,
    /// User and system CPU time.
    pub cpu: Duration,
}

/// Waits for `child` and returns its exit status and what it used, for
/// that one process (see [`wait_with_peak_rss`]).
#[allow(unsafe_code)]
pub fn wait_with_usage(child: Child) -> Result<(ExitStatus, Usage)> {
    let pid =
        libc::pid_t::try_from(child.id()).context("the child's process id is out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a C struct of integers and timevals, for which all
    // zero bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the types
        // `wait4` writes. `pid` is our own child, which nothing else waits
        // for: `child` is consumed here, so std never reaps it too.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("cannot wait for keycycle run");
        }
    }
    let max_rss = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    // macOS reports bytes; Linux and the BSDs report KiB.
    let bytes = if cfg!(target_os = "macos") {
        max_rss
    } else {
        max_rss * 1024
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok((
        ExitStatus::from_raw(status),
        Usage {
            peak_rss_bytes: bytes,
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
        },
    ))
}

/// Runs `command`, its stderr to `log` and its stdout next to it, and
/// returns what it used.
pub fn measure_command(mut command: Command, log: &Path) -> Result<Usage> {
    let out_log = log.with_extension("stdout");
    let create = |path: &Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    command
        .stdin(Stdio::null())
        .stdout(create(&out_log)?)
        .stderr(create(log)?);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
    let (status, used) = wait_with_usage(child)?;
    if !status.success() {
        // What went wrong, not the thousands of lines that went right.
        let stdout = std::fs::read_to_string(&out_log).unwrap_or_default();
        let stderr = std::fs::read_to_string(log).unwrap_or_default();
        let said: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.contains("succeeded"))
            .chain(stderr.lines().filter(|l| !l.starts_with(" INFO")))
            .take(40)
            .collect();
        bail!(
            "`{}` failed ({status}):\n{}",
            cmd::shown(&command).chars().take(300).collect::<String>(),
            said.join("\n")
        );
    }
    Ok(used)
}

/// The value below which `q` of the sorted samples fall (nearest rank).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "within goal" } else { "OVER GOAL" }
}

fn report(samples: &[Sample], options: &Options) {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    let (median, p90) = (median(&walls), percentile(&walls, 0.9));
    let peak = samples.iter().map(|s| s.peak_rss_bytes).max().unwrap_or(0);
    let wall_goal = format!("<= {}", ms(GOAL_WALL));
    let rss_goal = format!("<= {}", mib(GOAL_RSS_BYTES));

    cmd::say(&format!(
        "keycycle run (release), {} runs after {} warm-up runs, plugin cache warm",
        options.runs, options.warmup
    ));
    let rows = [
        (
            "wall time, median",
            ms(median),
            wall_goal.clone(),
            Some(median <= GOAL_WALL),
        ),
        ("wall time, p90", ms(p90), wall_goal, Some(p90 <= GOAL_WALL)),
        ("wall time, fastest", ms(walls[0]), String::new(), None),
        (
            "wall time, slowest",
            ms(walls[walls.len() - 1]),
            String::new(),
            None,
        ),
        (
            "peak RSS, max of runs",
            mib(peak),
            rss_goal,
            Some(peak <= GOAL_RSS_BYTES),
        ),
    ];
    cmd::note(&format!(
        "{:<22} {:>10}  {:<12} {}",
        "measure", "value", "goal", ""
    ));
    for (name, value, goal, ok) in rows {
        cmd::note(&format!(
            "{name:<22} {value:>10}  {goal:<12} {}",
            ok.map(verdict).unwrap_or("")
        ));
    }
    let met = p90 <= GOAL_WALL && peak <= GOAL_RSS_BYTES;
    cmd::say(if met {
        "Both goals are met"
    } else {
        "At least one goal is missed (see OVER GOAL above)"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn p90_of_thirty_is_the_twenty_seventh() {
        let sorted = ms_list(&(1..=30).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 0.9), Duration::from_millis(27));
        assert_eq!(percentile(&sorted[..1], 0.9), Duration::from_millis(1));
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&ms_list(&[1, 2, 3])), Duration::from_millis(2));
        assert_eq!(median(&ms_list(&[1, 2, 3, 5])), Duration::from_micros(2500));
    }

    #[test]
    fn peak_rss_of_a_child_is_measured() {
        // A shell that holds 32 MiB: its peak must show at least that much.
        let child = std::process::Command::new("sh")
            .args([
                "-c",
                "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo ${#x} > /dev/null",
            ])
            .spawn()
            .unwrap();
        let (status, peak) = wait_with_peak_rss(child).unwrap();
        assert!(status.success());
        assert!(peak >= 32 << 20, "peak {peak} bytes");
    }
}
