//! `cargo xtask bench-fleet N C`: what keycycle costs on top of the HTTP it
//! sends. N GitLab project access tokens, each held by a masked CI/CD
//! variable of its project, are rotated through `gitlab-project-token` by
//! one `keycycle rotate --concurrency C` process (release build, plugin
//! cache warm, durable journal on) against the GitLab simulator. Then a
//! plain reqwest client (`fleet_client`, its own process) sends the same
//! requests against a second simulator seeded the same way. Both are
//! measured from outside with `wait4`: CPU (user + system), wall time and
//! peak RSS; the requests are counted in each simulator's request log. A
//! single `keycycle run` of a one-call runbook is measured too.
//!
//! With `--postgres` the run state is in a throwaway PostgreSQL server (the
//! store crate's `pg_server` example) instead of SQLite; with `--runners R`
//! the credentials are split among R `keycycle rotate` processes on it, as
//! R runners would share a fleet. Their CPU is summed, their peak RSS is
//! the largest.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{Usage, median, ms};
use crate::demo::{self, DemoEnv, Profile};
use crate::fleet_client::REQUESTS_PER_ROTATION;
use crate::sim::Sim;
use crate::{cmd, plugins, setup};

/// keycycle's CPU per provider request may be at most this many times the
/// plain client's.
const GOAL_RATIO: f64 = 2.0;
/// CPU of one `keycycle run` of a one-call runbook.
const GOAL_RUN_CPU: Duration = Duration::from_millis(5);
/// Measured single runs, after two warm-up runs.
const SINGLE_RUNS: usize = 10;

/// The store entry holding the token the gitlab plugin acts with.
const OPS_SECRET: &str = "gitlab/fleet-ops";
/// The key of each project's variable holding its token.
const VARIABLE: &str = "DEPLOY_TOKEN";
const EXPIRES_IN_DAYS: i32 = 30;

/// One call: the smallest run that loads the gitlab plugin, opens the
/// store and the journal, and talks to GitLab.
const ONE_CALL: &str = "\
// Benchmark: one read-only call with the stored token.
let me = plugin(\"gitlab\").get_self_token();
#{ id: me.id }
";

/// The file the bench's inventory moves to (`credentials_file`).
const INVENTORY_FILE: &str = "fleet-inventory.toml";

/// Where the inventory is while single runs are measured.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `[credentials.ID]` sections in keycycle.toml.
    Inline,
    /// The sections in `credentials_file`.
    File,
}

impl Layout {
    fn describe(self, n: usize) -> String {
        match self {
            Layout::Inline => format!("{n} credentials in keycycle.toml"),
            Layout::File => format!("{n} credentials in credentials_file"),
        }
    }
}

/// Where keycycle keeps its run state, and how many processes rotate.
#[derive(Debug, Clone, Copy)]
pub struct State {
    pub postgres: bool,
    pub runners: usize,
}

impl Default for State {
    fn default() -> State {
        State {
            postgres: false,
            runners: 1,
        }
    }
}

/// A PostgreSQL server for the run, up until this is dropped.
struct PgServer {
    child: std::process::Child,
    url: String,
    password: String,
}

impl PgServer {
    fn start() -> Result<PgServer> {
        use std::io::BufRead as _;
        cmd::say("Starting a throwaway PostgreSQL server for the run state");
        let mut command = cmd::cargo();
        command
            .args([
                "run",
                "--quiet",
                "-p",
                "keycycle-store",
                "--features",
                "test-server",
                "--example",
                "pg_server",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("no stdout")?)
            .read_line(&mut line)
            .context("cannot read the server's address")?;
        let said: Value = serde_json::from_str(&line)
            .with_context(|| format!("the PostgreSQL server did not start: {line:?}"))?;
        let field = |k: &str| {
            said[k]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {k} in {line:?}"))
        };
        Ok(PgServer {
            url: field("url")?,
            password: field("password")?,
            child,
        })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing its stdin stops the server.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

pub fn run(credentials: usize, concurrency: usize, state: State) -> Result<()> {
    if credentials == 0 || concurrency == 0 {
        bail!("bench-fleet needs at least one credential and a concurrency of at least one");
    }
    setup::run()?;
    plugins::build()?;
    cmd::say("Building keycycle and the plain client (release builds)");
    let keycycle = demo::build_cli(Profile::Release)?;
    let client = build_client()?;

    cmd::say("Starting two GitLab simulators, one for keycycle, one for the plain client");
    let sim_k = Sim::start_provider(&keycycle, "gitlab")?;
    let sim_p = Sim::start_provider(&keycycle, "gitlab")?;
    cmd::say(&format!(
        "Seeding each with {credentials} projects, each with a project access token and a masked variable holding it"
    ));
    let fleet_k = seed(&sim_k, credentials)?;
    let fleet_p = seed(&sim_p, credentials)?;

    let pg = state.postgres.then(PgServer::start).transpose()?;
    let mut env = DemoEnv::create(&keycycle, sim_k.url())?;
    if let Some(pg) = &pg {
        env.prepend_config(&format!("state = {}", demo::toml_string(&pg.url)?))?;
        env.set_env("KEYCYCLE_STATE_PASSWORD", &pg.password);
    }
    env.init_secrets()?;
    env.set_secret(OPS_SECRET, &fleet_k.ops_token)?;
    env.append_config(&plugin_text(sim_k.url())?)?;
    let inventory = inventory_text(credentials, &fleet_k)?;

    let one_call = env.dir().join("bench-one-call.rhai");
    std::fs::write(&one_call, ONE_CALL)
        .with_context(|| format!("cannot write {}", one_call.display()))?;
    let one_call = one_call.to_str().context("the demo folder is not UTF-8")?;
    cmd::say("Warming up: the first run compiles the gitlab plugin into the cache");
    for _ in 0..2 {
        measure(&env, &["run", one_call])?;
    }
    // The single run is measured with the inventory in the config itself,
    // which every command parses, then in a `credentials_file`, which only
    // the inventory's commands read; the batch runs with the latter.
    let mut singles = Vec::new();
    for layout in [Layout::Inline, Layout::File] {
        match layout {
            Layout::Inline => env.append_config(&inventory)?,
            Layout::File => {
                let config = std::fs::read_to_string(env.config_path())
                    .context("cannot read the bench config")?;
                let without = config.replacen(&inventory, "", 1);
                std::fs::write(env.config_path(), without)
                    .context("cannot write the bench config")?;
                std::fs::write(env.dir().join(INVENTORY_FILE), &inventory)
                    .context("cannot write the inventory file")?;
                env.prepend_config(&format!("credentials_file = \"{INVENTORY_FILE}\""))?;
            }
        }
        cmd::say(&format!(
            "Measuring {SINGLE_RUNS} single `keycycle run`s of a one-call runbook, {}",
            layout.describe(credentials)
        ));
        let mut runs = Vec::with_capacity(SINGLE_RUNS);
        for _ in 0..SINGLE_RUNS {
            let started = Instant::now();
            let used = measure(&env, &["run", one_call])?;
            runs.push((used, started.elapsed()));
        }
        singles.push((layout, runs));
    }

    sim_k.delete("/requests")?;
    let where_ = if state.postgres {
        "state in PostgreSQL"
    } else {
        "state in SQLite"
    };
    cmd::say(&format!(
        "{credentials} rotations in {} `keycycle rotate --concurrency {concurrency}` ({where_})",
        state.runners
    ));
    // Runner k rotates credentials k, k + R, k + 2R, ...
    let shares: Vec<Vec<String>> = (0..state.runners)
        .map(|k| {
            let mut args = vec![
                "rotate".to_owned(),
                "--concurrency".to_owned(),
                concurrency.to_string(),
            ];
            args.extend(
                (k..credentials)
                    .step_by(state.runners)
                    .map(|i| format!("c{i}")),
            );
            args
        })
        .collect();
    let started = Instant::now();
    let keycycle_used = match std::env::var("BENCH_FLEET_WRAP") {
        // A profiler around the rotation, e.g. `perf record -g -o F --`;
        // its own CPU then counts too, so the figures are for reading the
        // profile only.
        Ok(wrap) if !wrap.trim().is_empty() && state.runners == 1 => {
            let mut words = wrap.split_whitespace();
            let mut command = Command::new(words.next().unwrap_or_default());
            command.args(words).arg(env.keycycle().get_program());
            command.args(env.keycycle().get_args()).args(&shares[0]);
            command.current_dir(env.dir());
            for (k, v) in env.keycycle().get_envs() {
                match v {
                    Some(v) => command.env(k, v),
                    None => command.env_remove(k),
                };
            }
            crate::bench::measure_command(command, &env.dir().join("bench-fleet.stderr"))?
        }
        _ => measure_runners(&env, &shares)?,
    };
    let keycycle_wall = started.elapsed();
    let keycycle_requests = requests(&sim_k)?;
    check_rotated(&sim_k, credentials, "keycycle")?;

    cmd::say(&format!(
        "The same rotations by the plain reqwest client, {concurrency} at a time"
    ));
    let spec = env.dir().join("fleet-client.json");
    write_spec(&spec, sim_p.url(), concurrency, &fleet_p)?;
    sim_p.delete("/requests")?;
    let mut command = Command::new(&client);
    command.arg("fleet-client").arg(&spec);
    let started = Instant::now();
    let plain_used =
        crate::bench::measure_command(command, &env.dir().join("fleet-client.stderr"))?;
    let plain_wall = started.elapsed();
    let plain_requests = requests(&sim_p)?;
    check_rotated(&sim_p, credentials, "the plain client")?;
    sim_k.stop()?;
    sim_p.stop()?;
    drop(pg);

    let expected = credentials * REQUESTS_PER_ROTATION;
    let k_count: usize = keycycle_requests.values().sum();
    let p_count: usize = plain_requests.values().sum();
    if keycycle_requests != plain_requests {
        cmd::note(&format!(
            "the two clients' requests differ (keycycle {k_count}, plain {p_count}):"
        ));
        for (what, n) in &keycycle_requests {
            let m = plain_requests.get(what).copied().unwrap_or(0);
            if *n != m {
                cmd::note(&format!("  {what}: keycycle {n}, plain {m}"));
            }
        }
        bail!("the plain client does not make the requests keycycle makes");
    }
    if k_count != expected {
        cmd::note(&format!(
            "keycycle made {k_count} requests, not {REQUESTS_PER_ROTATION} per rotation"
        ));
    }

    let who = match (state.postgres, state.runners) {
        (false, _) => "keycycle rotate".to_owned(),
        (true, 1) => "keycycle rotate (PG)".to_owned(),
        (true, r) => format!("keycycle rotate (PG, {r}x)"),
    };
    report(
        credentials,
        concurrency,
        &[
            (&who, keycycle_used, keycycle_wall, k_count),
            ("plain reqwest client", plain_used, plain_wall, p_count),
        ],
        &singles,
    );
    Ok(())
}

/// Builds this program in release, for the plain client: its HTTP stack
/// then has the same optimisation as keycycle's.
fn build_client() -> Result<PathBuf> {
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "xtask"]))?;
    let binary = cmd::host_target_dir()
        .join("release")
        .join(format!("xtask{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        bail!("the build succeeded but {} is not there", binary.display());
    }
    Ok(binary)
}

/// What was seeded in one simulator.
struct Fleet {
    ops_token: String,
    /// (project id, token id) per credential.
    projects: Vec<(u64, u64)>,
}

/// User `fleet-ops` with an `api` token, Maintainer of projects
/// `fleet/p0`..; each project has an access token and a masked variable
/// holding it.
fn seed(sim: &Sim, n: usize) -> Result<Fleet> {
    // GitLab's own limit (2000 authenticated requests a minute) would
    // measure waits, not work.
    sim.control("/settings", json!({"rate_limit_per_minute": u32::MAX}))?;
    let ops = id(&sim.control("/users", json!({"username": "fleet-ops"}))?)?;
    let seeded = sim.control(
        "/tokens",
        json!({"user_id": ops, "name": "fleet-ops", "scopes": ["api"]}),
    )?;
    let ops_token = token_value(&seeded)?;
    let mut projects = Vec::with_capacity(n);
    for i in 0..n {
        let project = id(&sim.control("/projects", json!({"path": format!("fleet/p{i}")}))?)?;
        sim.control(
            &format!("/projects/{project}/members"),
            json!({"user_id": ops, "access_level": 40}),
        )?;
        let token = sim.control(
            "/tokens",
            json!({"project_id": project, "name": "deploy", "scopes": ["api"]}),
        )?;
        sim.control(
            &format!("/projects/{project}/variables"),
            json!({"key": VARIABLE, "value": token_value(&token)?, "masked": true}),
        )?;
        projects.push((project, id(&token)?));
    }
    Ok(Fleet {
        ops_token,
        projects,
    })
}

/// The gitlab plugin granted this simulator, and one inventory entry per
/// project token.
/// The gitlab plugin's section.
fn plugin_text(url: &str) -> Result<String> {
    Ok(format!(
        "
[plugins.gitlab]
path = {wasm}
hosts = [{url}]
secrets = {{ token = {secret} }}
config = {{ base_url = {url} }}
",
        wasm = demo::toml_string(plugins::wasm_path("gitlab"))?,
        url = demo::toml_string(url)?,
        secret = demo::toml_string(OPS_SECRET)?,
    ))
}

/// The inventory: a `[credentials.cI]` section per project.
fn inventory_text(n: usize, fleet: &Fleet) -> Result<String> {
    let mut text = String::new();
    for (i, (project, token_id)) in fleet.projects.iter().enumerate().take(n) {
        write!(
            text,
            "
[credentials.c{i}]
runbook = \"gitlab-project-token\"
params = {{ owner = \"{project}\", token_id = \"{token_id}\", variables = \"{project}:{VARIABLE}\", expires_in_days = \"{EXPIRES_IN_DAYS}\" }}
"
        )?;
    }
    Ok(text)
}

fn write_spec(path: &Path, url: &str, concurrency: usize, fleet: &Fleet) -> Result<()> {
    let today = time::OffsetDateTime::now_utc().date();
    let expires_at = today + time::Duration::days(EXPIRES_IN_DAYS.into());
    let spec = json!({
        "base_url": url,
        "token": fleet.ops_token,
        "concurrency": concurrency,
        "expires_at": expires_at.to_string(),
        "credentials": fleet.projects.iter().map(|(project, token_id)| json!({
            "project": project, "token_id": token_id, "key": VARIABLE,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_vec(&spec)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The provider requests the simulator received, as `METHOD /path` with
/// ids folded to `:id`, counted.
fn requests(sim: &Sim) -> Result<BTreeMap<String, usize>> {
    let log = sim.get("/requests")?;
    let mut counts = BTreeMap::new();
    for r in log.as_array().context("the request log is not a list")? {
        let path: Vec<&str> = r["path"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .map(|s| {
                if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                    ":id"
                } else {
                    s
                }
            })
            .collect();
        let what = format!(
            "{} {}",
            r["method"].as_str().unwrap_or_default(),
            path.join("/")
        );
        *counts.entry(what).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Every variable holds an active token that replaced another: each
/// rotation happened and reached its consumer.
fn check_rotated(sim: &Sim, n: usize, who: &str) -> Result<()> {
    let state = sim.state()?;
    let tokens: HashMap<&str, &Value> = state["tokens"]
        .as_array()
        .context("no tokens in the simulator's state")?
        .iter()
        .filter_map(|t| Some((t["value"].as_str()?, t)))
        .collect();
    let rotated = state["variables"]
        .as_array()
        .context("no variables in the simulator's state")?
        .iter()
        .filter(|v| v["key"] == VARIABLE)
        .filter(|v| {
            v["value"]
                .as_str()
                .and_then(|value| tokens.get(value))
                .is_some_and(|t| t["active"] == true && !t["previous_id"].is_null())
        })
        .count();
    if rotated != n {
        bail!("after {who}'s run, {rotated} of {n} variables hold a rotated, active token");
    }
    Ok(())
}

fn id(v: &Value) -> Result<u64> {
    v["id"]
        .as_u64()
        .with_context(|| format!("the simulator's answer has no id: {v}"))
}

fn token_value(v: &Value) -> Result<String> {
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("the seeded token has no value")
}

/// Runs one keycycle per `shares` entry at once, in the demo folder, and
/// returns what they used together: CPU summed, the largest peak RSS.
fn measure_runners(env: &DemoEnv, shares: &[Vec<String>]) -> Result<Usage> {
    let used = std::thread::scope(|s| {
        let runs: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(k, args)| {
                let mut command = env.keycycle();
                command.args(args);
                let log = env.dir().join(format!("bench-fleet-{k}.stderr"));
                s.spawn(move || crate::bench::measure_command(command, &log))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a runner's thread panicked"))
            .collect::<Result<Vec<Usage>>>()
    })?;
    Ok(Usage {
        cpu: used.iter().map(|u| u.cpu).sum(),
        peak_rss_bytes: used.iter().map(|u| u.peak_rss_bytes).max().unwrap_or(0),
    })
}

/// Runs keycycle with `args` in the demo folder and returns what it used.
fn measure(env: &DemoEnv, args: &[&str]) -> Result<Usage> {
    let mut command = env.keycycle();
    command.args(args);
    crate::bench::measure_command(command, &env.dir().join("bench-fleet.stderr"))
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn report(
    n: usize,
    c: usize,
    rows: &[(&str, Usage, Duration, usize); 2],
    singles: &[(Layout, Vec<(Usage, Duration)>)],
) {
    cmd::say(&format!(
        "{n} GitLab project-token rotations with a masked variable, concurrency {c} (release builds, plugin cache warm, durable journal)"
    ));
    cmd::note(&format!(
        "{:<22} {:>10} {:>12} {:>12} {:>9} {:>10} {:>10}",
        "client", "CPU", "CPU/rotation", "CPU/request", "requests", "wall", "peak RSS"
    ));
    for (who, used, wall, count) in rows {
        cmd::note(&format!(
            "{who:<22} {:>10} {:>12} {:>12} {:>9} {:>10} {:>10}",
            ms(used.cpu),
            us(used.cpu / n as u32),
            us(used.cpu / (*count).max(1) as u32),
            count,
            ms(*wall),
            mib(used.peak_rss_bytes),
        ));
    }
    let per_request = |(_, used, _, count): &(&str, Usage, Duration, usize)| {
        used.cpu.as_secs_f64() / (*count).max(1) as f64
    };
    let ratio = per_request(&rows[0]) / per_request(&rows[1]);
    cmd::note(&format!(
        "keycycle / plain, CPU per request: {ratio:.2}× (goal <= {GOAL_RATIO}×) — {}",
        verdict(ratio <= GOAL_RATIO)
    ));

    for (layout, runs) in singles {
        let mut cpu: Vec<Duration> = runs.iter().map(|(u, _)| u.cpu).collect();
        let mut wall: Vec<Duration> = runs.iter().map(|(_, w)| *w).collect();
        cpu.sort();
        wall.sort();
        let rss = runs
            .iter()
            .map(|(u, _)| u.peak_rss_bytes)
            .max()
            .unwrap_or(0);
        let cpu_median = median(&cpu);
        cmd::say(&format!(
            "A single `keycycle run` of a one-call runbook (gitlab get_self_token), {} runs, {}",
            runs.len(),
            layout.describe(n)
        ));
        cmd::note(&format!(
            "CPU median {} (fastest {}, slowest {}); wall median {}; peak RSS {} — goal CPU <= {}: {}",
            ms(cpu_median),
            ms(cpu[0]),
            ms(cpu[cpu.len() - 1]),
            ms(median(&wall)),
            mib(rss),
            ms(GOAL_RUN_CPU),
            verdict(cpu_median <= GOAL_RUN_CPU)
        ));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "within goal" } else { "OVER GOAL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_entries_name_the_project_token_and_variable() {
        let fleet = Fleet {
            ops_token: "t".into(),
            projects: vec![(3, 7), (4, 9)],
        };
        let text = inventory_text(2, &fleet).unwrap();
        assert!(text.contains("[credentials.c1]\nrunbook = \"gitlab-project-token\""));
        assert!(text.contains(
            "owner = \"4\", token_id = \"9\", variables = \"4:DEPLOY_TOKEN\", expires_in_days = \"30\""
        ));
        let plugin = plugin_text("http://127.0.0.1:1").unwrap();
        assert!(plugin.contains("hosts = [\"http://127.0.0.1:1\"]"));
    }
}
