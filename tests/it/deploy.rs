//! The deployment examples in `deploy/` stay true to the binary: every
//! `keycycle` command their containers and CI jobs run is one the real
//! binary accepts, every environment variable they set for keycycle is one
//! it reads, and the `keycycle.toml` they carry is a config it parses.
//! Run by nobody's cluster here; checked so that a renamed flag or setting
//! cannot leave the examples silently broken.

use std::path::Path;

use crate::support::*;

/// The documents of a YAML file, as JSON, read by PyYAML (installed with
/// the Python Kubernetes client by `cargo xtask setup`).
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .env("PYTHONPATH", repo_root().join("target/python-clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} is not valid YAML (or PyYAML is missing: `cargo xtask setup`):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The keycycle command lines in a container command or a CI script line.
fn keycycle_commands(line: &str) -> Vec<Vec<String>> {
    line.split([';', '\n'])
        .map(|part| {
            part.split('>')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|words| words.first().is_some_and(|w| w == "keycycle"))
        .collect()
}

/// The real binary accepts the command's subcommand and flags.
fn assert_accepted(ws: &Workspace, words: &[String], from: &str) {
    let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    args.push("--help");
    let run = ws.run(&args);
    assert_eq!(
        run.code,
        0,
        "{from}: `{}` is not a command keycycle accepts:\n{}",
        words.join(" "),
        run.stderr
    );
}

/// The config parses: doctor finds no error in its config section (it
/// cannot reach the example's servers, which is not the config's fault).
fn assert_config_parses(ws: &Workspace, toml: &str, from: &str) {
    let path = ws.file("deployed.toml", toml);
    let run = ws.run(&[
        "--config",
        path.to_str().unwrap(),
        "doctor",
        "--output",
        "json",
    ]);
    let report = run.json();
    assert!(
        report["config"].get("error").is_none(),
        "{from}: keycycle does not accept its keycycle.toml: {}",
        report["config"]["error"]
    );
}

/// Every variable the examples give keycycle is one it reads.
const READ_BY_KEYCYCLE: &[&str] = &[
    "KEYCYCLE_CONFIG",
    "KEYCYCLE_MASTER_KEY",
    "KEYCYCLE_STATE_PASSWORD",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
];

#[test]
fn the_kubernetes_manifests_run_commands_and_settings_keycycle_accepts() {
    let ws = Workspace::new();
    let docs = yaml_documents(&repo_root().join("deploy/kubernetes/keycycle.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ConfigMap",
            "CronJob",
            "CronJob",
            "CronJob",
            "Deployment"
        ]
    );
    let mut commands = 0;
    for doc in &docs {
        let pod = match doc["kind"].as_str().unwrap() {
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "Deployment" => &doc["spec"]["template"]["spec"],
            _ => continue,
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        for container in pod["containers"].as_array().unwrap() {
            let command: Vec<&str> = container["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let line = match command.as_slice() {
                ["sh", "-c", script] => (*script).to_owned(),
                words => words.join(" "),
            };
            for words in keycycle_commands(&line) {
                assert_accepted(&ws, &words, name);
                commands += 1;
            }
            for var in container["env"].as_array().unwrap() {
                let var = var["name"].as_str().unwrap();
                assert!(
                    READ_BY_KEYCYCLE.contains(&var),
                    "{name} sets {var}, which keycycle does not read"
                );
            }
        }
    }
    assert_eq!(
        commands, 5,
        "rotate (resume, rotate), cleanup, check, exporter"
    );
    let toml = docs[1]["data"]["keycycle.toml"].as_str().unwrap();
    assert_config_parses(&ws, toml, "the ConfigMap");
}

#[test]
fn the_ci_schedules_run_commands_and_settings_keycycle_accepts() {
    let ws = Workspace::new();
    let docs = yaml_documents(&repo_root().join("deploy/ci/keycycle.gitlab-ci.yml"));
    let jobs = docs[0].as_object().unwrap();
    let mut commands = 0;
    for (job, body) in jobs {
        for line in body["script"].as_array().into_iter().flatten() {
            for words in keycycle_commands(line.as_str().unwrap()) {
                assert_accepted(&ws, &words, job);
                commands += 1;
            }
        }
    }
    assert_eq!(commands, 4, "resume, rotate, cleanup, check");
    let toml = std::fs::read_to_string(repo_root().join("deploy/ci/keycycle.toml")).unwrap();
    assert_config_parses(&ws, &toml, "deploy/ci/keycycle.toml");
}
