//! `cargo xtask demo`: on a fresh machine, rotate an admin token end to end.
//! A local simulator plays the token service; a throw-away folder holds the
//! config, the encrypted store and the plugin cache; the operator sees each
//! step, a dry run, the real run, and the service's true state afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use rand::RngCore;

use crate::sim::{Sim, TokenSummary};
use crate::{cmd, plugins, setup};

/// The store entry holding the admin token the example plugin acts with.
pub const ADMIN_SECRET: &str = "demo/admin";

/// The rotation runbook, relative to the repository root.
const ROTATE_RUNBOOK: &str = "runbooks/demo-rotate.rhai";

/// Which build of the CLI to use.
#[derive(Clone, Copy)]
pub enum Profile {
    /// The dev build, which shares its dependencies with the test build.
    Dev,
    /// What operators run.
    Release,
}

/// Builds the CLI and returns the path of the `keycycle` binary.
pub fn build_cli(profile: Profile) -> Result<PathBuf> {
    let (args, folder): (&[&str], &str) = match profile {
        Profile::Dev => (&["build", "-p", "keycycle-cli"], "debug"),
        Profile::Release => (&["build", "--release", "-p", "keycycle-cli"], "release"),
    };
    cmd::run(cmd::cargo().args(args))?;
    let binary = cmd::host_target_dir()
        .join(folder)
        .join(format!("keycycle{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        bail!("the build succeeded but {} is not there", binary.display());
    }
    Ok(binary)
}

/// A random token value in the simulator's own style.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("demo-{}", hex::encode(bytes))
}

/// A throw-away keycycle installation: config, store and cache in a
/// temporary folder, pointed at one simulator.
pub struct DemoEnv {
    dir: tempfile::TempDir,
    keycycle: PathBuf,
    config: PathBuf,
    /// Set for every keycycle this folder runs (a database password).
    env: Vec<(String, String)>,
}

impl DemoEnv {
    /// Creates the folder and writes `keycycle.toml` for the example plugin
    /// against the simulator at `sim_url`.
    pub fn create(keycycle: &Path, sim_url: &str) -> Result<DemoEnv> {
        let dir = tempfile::Builder::new()
            .prefix("keycycle-demo-")
            .tempdir()
            .context("cannot create a temporary folder for the demo")?;
        let config = dir.path().join("keycycle.toml");
        let root = cmd::repo_root();
        let text = config_text(
            &root.join("runbooks"),
            &plugins::wasm_path("example"),
            sim_url,
        )?;
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        Ok(DemoEnv {
            dir,
            keycycle: keycycle.to_owned(),
            config,
            env: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The folder's `keycycle.toml`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Adds `text` to the end of `keycycle.toml`.
    pub fn append_config(&self, text: &str) -> Result<()> {
        let mut current = std::fs::read_to_string(&self.config)
            .with_context(|| format!("cannot read {}", self.config.display()))?;
        current.push_str(text);
        std::fs::write(&self.config, current)
            .with_context(|| format!("cannot write {}", self.config.display()))
    }

    /// Puts `text` (top-level settings) at the start of `keycycle.toml`,
    /// before any section.
    pub fn prepend_config(&self, text: &str) -> Result<()> {
        let current = std::fs::read_to_string(&self.config)
            .with_context(|| format!("cannot read {}", self.config.display()))?;
        std::fs::write(&self.config, format!("{text}\n{current}"))
            .with_context(|| format!("cannot write {}", self.config.display()))
    }

    /// Sets `name` to `value` for every keycycle run from now on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// `keycycle --config <this config>`, run in the folder, with none of
    /// the caller's keycycle settings leaking in.
    pub fn keycycle(&self) -> Command {
        let mut command = Command::new(&self.keycycle);
        command
            .current_dir(self.dir.path())
            .arg("--config")
            .arg(&self.config)
            .env_remove("KEYCYCLE_CONFIG")
            .env_remove("KEYCYCLE_MASTER_KEY")
            .env_remove("KEYCYCLE_STATE_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `keycycle secrets init`: a new master key in the folder.
    pub fn init_secrets(&self) -> Result<()> {
        cmd::run(self.keycycle().args(["secrets", "init"]))
    }

    /// `keycycle secrets set NAME`, the value given on stdin so that it is
    /// never on a command line.
    pub fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        let mut command = self.keycycle();
        command.args(["secrets", "set", name]).stdin(Stdio::piped());
        cmd::note(&format!(
            "$ {} < (the value, on stdin)",
            cmd::shown(&command)
        ));
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
        {
            let mut stdin = child.stdin.take().context("stdin was not captured")?;
            stdin
                .write_all(value.as_bytes())
                .context("cannot pass the value to keycycle secrets set")?;
        }
        let status = child
            .wait()
            .context("cannot wait for keycycle secrets set")?;
        if !status.success() {
            bail!("`keycycle secrets set {name}` failed ({status})");
        }
        Ok(())
    }

    /// Leaves the folder in place and returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// The demo's `keycycle.toml`. State and cache are relative to the file, so
/// they stay inside the folder.
fn config_text(runbooks_dir: &Path, example_wasm: &Path, sim_url: &str) -> Result<String> {
    Ok(format!(
        "\
# The keycycle demo: the example plugin against a local demo token service.
state_dir = \"state\"
cache_dir = \"cache\"
runbooks_dir = {runbooks}

[plugins.example]
path = {wasm}
hosts = [{url}]
secrets = {{ token = {secret} }}
config = {{ base_url = {url} }}

# The rotation runbook writes the new admin token back to the store.
[runbooks.demo-rotate]
secrets = [{secret}]
",
        runbooks = toml_string(runbooks_dir)?,
        wasm = toml_string(example_wasm)?,
        url = toml_string(sim_url)?,
        secret = toml_string(ADMIN_SECRET)?,
    ))
}

/// A TOML basic string. JSON string syntax is a subset of TOML's basic
/// strings (the same quote and escapes), so serde_json does the escaping.
pub fn toml_string(value: impl AsRef<Path>) -> Result<String> {
    let value = value.as_ref();
    let text = value.to_str().with_context(|| {
        format!(
            "{} is not valid UTF-8, so it cannot go into keycycle.toml",
            value.display()
        )
    })?;
    Ok(serde_json::to_string(text)?)
}

pub fn run(keep: bool) -> Result<()> {
    setup::run()?;
    plugins::build()?;
    cmd::say("Building the keycycle command line (dev build)");
    let keycycle = build_cli(Profile::Dev)?;

    cmd::say("Starting the demo token service (a local simulator, state in memory only)");
    let sim = Sim::start(&keycycle)?;
    cmd::note(&format!("the service listens on {}", sim.url()));

    cmd::say("Giving the service an admin token, as if an administrator had created it by hand");
    let admin_token = random_token();
    let old_id = sim.seed_token("admin", &admin_token)?;
    cmd::note(&format!(
        "admin token id {old_id}, named `admin`; its value is random and not shown"
    ));

    cmd::say(
        "Writing keycycle.toml: the example plugin may reach only this service and read only `demo/admin`",
    );
    let env = DemoEnv::create(&keycycle, sim.url())?;
    cmd::note(&format!("{}", env.config().display()));

    cmd::say("Creating the master key that encrypts the secrets store");
    env.init_secrets()?;

    cmd::say(&format!(
        "Storing the admin token in the secrets store as `{ADMIN_SECRET}`"
    ));
    env.set_secret(ADMIN_SECRET, &admin_token)?;

    let runbook = cmd::repo_root().join(ROTATE_RUNBOOK);
    cmd::say("Rehearsing the rotation with --dry-run: reads happen, changes are only shown");
    cmd::run(env.keycycle().arg("run").arg(&runbook).arg("--dry-run"))?;

    cmd::say("Rotating the admin token for real");
    cmd::run(env.keycycle().arg("run").arg(&runbook))?;

    cmd::say(
        "Checking that the store now holds a working token (a quiet dry run authenticates with it)",
    );
    let current_id = stored_token_id(&env, &runbook)?;
    cmd::note(&format!(
        "the stored token is accepted by the service: token id {current_id}"
    ));

    cmd::say("The service's true state (from its control API; values not shown)");
    let tokens = sim.tokens()?;
    print_tokens(&tokens);
    check_rotated(&tokens, old_id, current_id)?;
    cmd::note(&format!(
        "rotated: token {old_id} is revoked, and token {current_id}, the one in the store, is the only active one"
    ));

    cmd::say("Stopping the demo token service");
    sim.stop()?;

    crate::demo_gitlab::run(&keycycle, &env)?;
    crate::demo_zendesk::run(&keycycle, &env)?;
    crate::demo_github::run(&keycycle, &env)?;
    crate::demo_signon::run(&keycycle, &env)?;
    if keep {
        let dir = env.keep();
        cmd::say(&format!("The demo folder is kept at {}", dir.display()));
        cmd::note(
            "the simulator is gone, so its tokens are too; run the demo again for a fresh service",
        );
    } else {
        cmd::say("Removing the demo folder (keep it next time with `cargo xtask demo --keep`)");
        drop(env);
    }
    Ok(())
}

/// The id of the token the store holds, as the service sees it: a dry run
/// of the rotation starts with `whoami` using the stored token, and reports
/// that id as `old_id`.
fn stored_token_id(env: &DemoEnv, runbook: &Path) -> Result<u64> {
    let mut command = env.keycycle();
    command
        .args(["-q", "run"])
        .arg(runbook)
        .args(["--dry-run", "--output", "json"])
        .stderr(Stdio::inherit());
    cmd::note(&format!("$ {}", cmd::shown(&command)));
    let output = command
        .output()
        .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the dry run ({}) did not print a JSON report",
            output.status
        )
    })?;
    if !output.status.success() || report["ok"] != true {
        bail!(
            "the dry run with the stored token failed ({}): {}",
            output.status,
            report["error"]["message"]
        );
    }
    report["result"]["old_id"]
        .as_u64()
        .with_context(|| format!("the dry run's result has no old_id: {}", report["result"]))
}

fn print_tokens(tokens: &[TokenSummary]) {
    cmd::note(&format!("{:>4}  {:<9} name", "id", "state"));
    for t in tokens {
        let state = if t.active { "active" } else { "revoked" };
        cmd::note(&format!("{:>4}  {:<9} {}", t.id, state, t.name));
    }
}

/// The rotation worked when the old token is revoked and the stored one is
/// the single active token.
fn check_rotated(tokens: &[TokenSummary], old_id: u64, current_id: u64) -> Result<()> {
    if current_id == old_id {
        bail!(
            "the store still holds the old token {old_id}; the rotation did not store the new one"
        );
    }
    match tokens.iter().find(|t| t.id == old_id) {
        Some(t) if t.active => {
            bail!("the old token {old_id} is still active; the rotation did not revoke it")
        }
        Some(_) => {}
        None => bail!("the service no longer knows the old token {old_id}"),
    }
    let active: Vec<u64> = tokens.iter().filter(|t| t.active).map(|t| t.id).collect();
    if active != [current_id] {
        bail!(
            "expected token {current_id} to be the only active token, but the active ones are {active:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u64, active: bool) -> TokenSummary {
        TokenSummary {
            id,
            name: format!("t{id}"),
            active,
        }
    }

    #[test]
    fn config_is_toml_with_escaped_paths() {
        let text = config_text(
            Path::new("/repo \"x\"/runbooks"),
            Path::new("C:\\w\\example.wasm"),
            "http://127.0.0.1:4000",
        )
        .unwrap();
        assert!(text.contains(r#"runbooks_dir = "/repo \"x\"/runbooks""#));
        assert!(text.contains(r#"path = "C:\\w\\example.wasm""#));
        assert!(text.contains(r#"hosts = ["http://127.0.0.1:4000"]"#));
        assert!(text.contains(r#"secrets = { token = "demo/admin" }"#));
        assert!(text.contains("[runbooks.demo-rotate]\nsecrets = [\"demo/admin\"]"));
    }

    #[test]
    fn random_tokens_differ_and_look_like_the_service_s() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(a.starts_with("demo-") && a.len() == 5 + 32);
    }

    #[test]
    fn rotation_check_accepts_only_the_finished_rotation() {
        assert!(check_rotated(&[token(1, false), token(2, true)], 1, 2).is_ok());
        // Old token still active.
        assert!(check_rotated(&[token(1, true), token(2, true)], 1, 2).is_err());
        // Store never updated.
        assert!(check_rotated(&[token(1, false), token(2, true)], 1, 1).is_err());
        // A stray extra active token.
        assert!(check_rotated(&[token(1, false), token(2, true), token(3, true)], 1, 2).is_err());
    }
}
