//! The IBM Secrets Manager plugin through the real binary against three
//! simulated instances of one account (dev, stage, prod, sharing one IAM):
//! seed 000's rotation in each environment (rename the old secret, create
//! the new value under the name, check it read back, delete the renamed one
//! later), an access token that expires mid-call, and a locked secret's
//! deletion refused with a message that says why.

use std::process::Stdio;
use std::time::Duration;

use keycycle_sim::{IbmApiKeySeed, IbmSecretSeed, IbmSmState, Release, SimServer};

use crate::support::*;

pub(crate) const NAME: &str = "aihelp--QA_GIT_TOKEN";
pub(crate) const ENVS: [&str; 3] = ["dev", "stage", "prod"];

/// Three instances of one account in the test process, each holding the
/// secret with an old value; IAM is served by every instance, and the dev
/// one is the `iam_url` the plugin is given.
pub(crate) struct IbmSim {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) servers: Vec<SimServer>,
    pub(crate) states: Vec<IbmSmState>,
    pub(crate) old_values: Vec<String>,
    pub(crate) old_ids: Vec<String>,
    pub(crate) api_key: String,
}

impl IbmSim {
    pub(crate) fn start() -> IbmSim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (dev_server, dev) = rt.block_on(keycycle_sim::start_ibm_sm(0)).unwrap();
        let mut servers = vec![dev_server];
        let mut states = vec![dev.clone()];
        for _ in 1..ENVS.len() {
            let (server, state) = dev.start_instance(0).unwrap();
            servers.push(server);
            states.push(state);
        }
        let api_key = canary("ibm-apikey-");
        dev.add_api_key(IbmApiKeySeed::new(&api_key)).unwrap();
        let mut old_values = Vec::new();
        let mut old_ids = Vec::new();
        for (env, state) in ENVS.iter().zip(&states) {
            let value = canary(&format!("ibm-old-{env}-"));
            old_ids.push(
                state
                    .add_secret(IbmSecretSeed::arbitrary(NAME, &value))
                    .unwrap(),
            );
            old_values.push(value);
        }
        IbmSim {
            rt,
            servers,
            states,
            old_values,
            old_ids,
            api_key,
        }
    }

    pub(crate) fn origin(&self, i: usize) -> String {
        self.servers[i].base_url.trim_end_matches('/').to_owned()
    }

    /// The plugin configured for dev, with an overlay per environment; every
    /// environment reaches its own instance and the shared IAM.
    fn workspace(&self) -> Workspace {
        let ws = Workspace::new();
        let iam = self.origin(0);
        let mut config = format!(
            "[plugins.sm]\npath = \"{}\"\nhosts = [\"{iam}\"]\nsecrets = {{ api_key = \"ibm/api-key\" }}\nconfig = {{ base_url = \"{iam}\", iam_url = \"{iam}\" }}\n",
            wasm("ibm_sm").display()
        );
        for (i, env) in ENVS.iter().enumerate() {
            let origin = self.origin(i);
            config.push_str(&format!(
                "\n[plugins.sm.envs.{env}]\nhosts = [\"{origin}\", \"{iam}\"]\nconfig = {{ base_url = \"{origin}\" }}\n"
            ));
        }
        ws.config(&config);
        ws.set_secret("ibm/api-key", &self.api_key);
        ws.runbook("ibm-rotate", ROTATE);
        ws.runbook("ibm-cleanup", CLEANUP);
        ws.runbook("ibm-find", FIND);
        ws
    }

    /// Every access token IAM issued so far, planted so that no output
    /// may show one.
    fn plant_tokens(&self) -> usize {
        let tokens = self.states[0].snapshot().tokens;
        for t in &tokens {
            plant(t.value.expose());
            plant(t.refresh_token.expose());
        }
        tokens.len()
    }
}

impl Drop for IbmSim {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// Seed 000, one environment: the old secret is renamed so that by-name
/// readers (External Secrets) follow the name to the new value at their
/// next refresh, while the old one stays for by-id readers and rollback.
const ROTATE: &str = r#"
let sm = plugin("sm");
let name = params.name;
let date = params.date;
let value = prompt_secret("new_value", "The new value of the secret");
let old = sm.find_secret(#{ name: name });
let renamed = `${name}-replaced-${date}`;
sm.rename_secret(#{ id: old.id, name: renamed });
let created = sm.create_secret(#{ name: name, payload: value, description: "rotated by keycycle" });
let check = sm.check_secret(#{ name: name, value: value });
if !check.matches { fail(`the value read back from ${name} is not the new one`); }
let back = sm.get_secret(#{ id: created.id });
if !is_secret(back.payload) { fail("the value came back as text"); }
#{ env: params.env, old_id: old.id, renamed: renamed, new_id: created.id, versions: check.versions_total }
"#;

/// The seed's cleanup, once External Secrets has refreshed the cluster.
const CLEANUP: &str = r#"
let sm = plugin("sm");
let old = sm.find_secret(#{ name: params.renamed });
let deleted = sm.delete_secret(#{ id: old.id });
#{ deleted: deleted.deleted, id: old.id }
"#;

const FIND: &str = r#"
let found = plugin("sm").find_secret(#{ name: params.name });
#{ id: found.id }
"#;

const DATE: &str = "2026-11-29";

fn rotate(ws: &Workspace, env: &str, new_value: &str) -> Run {
    ws.run_env(
        &[
            "run",
            "ibm-rotate",
            "--env",
            env,
            "--set",
            &format!("name={NAME}"),
            "--set",
            &format!("date={DATE}"),
            "--input",
            "new_value=env:IBM_NEW_VALUE",
            "-o",
            "json",
        ],
        &[("IBM_NEW_VALUE", new_value)],
    )
}

fn cleanup(ws: &Workspace, env: &str) -> Run {
    ws.run(&[
        "run",
        "ibm-cleanup",
        "--env",
        env,
        "--set",
        &format!("renamed={NAME}-replaced-{DATE}"),
        "-o",
        "json",
    ])
}

#[test]
fn each_environment_is_rotated_by_rename_then_cleaned_up() {
    let sim = IbmSim::start();
    let ws = sim.workspace();
    let mut new_values = Vec::new();
    for (i, env) in ENVS.iter().enumerate() {
        let new_value = canary(&format!("ibm-new-{env}-"));
        let run = rotate(&ws, env, &new_value);
        run.assert_ok();
        let result = &run.json()["result"];
        assert_eq!(result["env"], *env);
        assert_eq!(result["old_id"], sim.old_ids[i]);
        assert_eq!(result["renamed"], format!("{NAME}-replaced-{DATE}"));
        assert_eq!(result["versions"], 1);

        // The true state of this instance: the name holds the new value in
        // a new secret, the old secret keeps its id and value under the
        // new name.
        let state = &sim.states[i];
        let current = state.secret_named(NAME).expect("a secret under the name");
        assert_eq!(result["new_id"], current.id);
        assert!(current.current_value().unwrap().expose() == new_value);
        assert_eq!(current.description, "rotated by keycycle");
        let old = state.secret(&sim.old_ids[i]).expect("the old secret kept");
        assert_eq!(old.name, format!("{NAME}-replaced-{DATE}"));
        assert!(old.current_value().unwrap().expose() == sim.old_values[i]);
        // The other environments are untouched until their turn.
        for (j, other) in sim.states.iter().enumerate().skip(i + 1) {
            let s = other.secret_named(NAME).unwrap();
            assert_eq!(s.id, sim.old_ids[j], "{} changed early", ENVS[j]);
        }
        new_values.push(new_value);
    }

    // Cleanup, later: prod's old secret is still locked by an application,
    // so its deletion is refused and says why; the others go.
    sim.states[2]
        .add_lock(&sim.old_ids[2], None, "eso-prod-sync")
        .unwrap();
    for (i, env) in ENVS.iter().enumerate() {
        let run = cleanup(&ws, env);
        if *env == "prod" {
            run.assert_code(5)
                .stderr_has("is locked, so Secrets Manager will not delete it")
                .stderr_has("412");
            assert!(sim.states[i].secret(&sim.old_ids[i]).is_some());
            continue;
        }
        run.assert_ok();
        assert_eq!(run.json()["result"]["deleted"], true);
        assert!(sim.states[i].secret(&sim.old_ids[i]).is_none());
    }
    sim.states[2].clear_locks(&sim.old_ids[2]).unwrap();
    cleanup(&ws, "prod").assert_ok();
    for (i, state) in sim.states.iter().enumerate() {
        let snapshot = state.snapshot();
        assert_eq!(snapshot.secrets.len(), 1, "{}", ENVS[i]);
        assert!(snapshot.secrets[0].current_value().unwrap().expose() == new_values[i]);
    }

    // No access token IAM issued shows anywhere keycycle wrote.
    assert!(sim.plant_tokens() >= 9);
    ws.assert_files_clean();
}

#[test]
fn a_token_that_expires_mid_call_is_exchanged_again() {
    let sim = IbmSim::start();
    let ws = sim.workspace();
    let dev = &sim.states[0];
    let tokens_before = dev.snapshot().tokens.len();
    // Hold the lookup until the token it carries has expired.
    let gate = dev.gate("GET", "/api/v2/secret_groups/", 1);
    let child = ws
        .command(&[
            "run",
            "ibm-find",
            "--env",
            "dev",
            "--set",
            &format!("name={NAME}"),
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        gate.wait_arrived(Duration::from_secs(60)),
        "the lookup never arrived"
    );
    dev.advance_clock(3601);
    gate.release(Release::Process);
    let output = wait_or_kill(child, "keycycle");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["result"]["id"], sim.old_ids[0]);

    // Two exchanges: the first token expired while held, the second worked.
    let tokens = dev.snapshot().tokens;
    assert_eq!(tokens.len(), tokens_before + 2);
    assert!(tokens[tokens.len() - 2].expired);
    assert!(!tokens[tokens.len() - 1].expired);
    let lookups = dev
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v2/secret_groups/"))
        .count();
    assert_eq!(lookups, 2, "one refused lookup and one resend");
    sim.plant_tokens();
    assert_clean("stdout", &stdout);
    assert_clean("stderr", &stderr);
    ws.assert_files_clean();
}

#[test]
fn a_wrong_api_key_fails_with_iams_message() {
    let sim = IbmSim::start();
    let ws = sim.workspace();
    ws.set_secret("ibm/api-key", &canary("ibm-wrong-key-"));
    ws.run(&[
        "run",
        "ibm-find",
        "--env",
        "stage",
        "--set",
        &format!("name={NAME}"),
    ])
    .assert_code(5)
    .stderr_has("IAM refused to exchange the API key")
    .stderr_has("BXNIM0415E");
    assert!(
        sim.states[1]
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/api/")),
        "nothing reached the instance"
    );
}
