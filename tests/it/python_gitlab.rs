//! python-gitlab, the GitLab client most scripts use, driven against the
//! GitLab simulator by `tests/clients/python_gitlab.py`: every call it makes
//! (paginated lists followed through `Link`, token rotation, triggers,
//! CI/CD variables, hooks) must be answered the way GitLab answers it, and
//! the simulator's true state must show what the client did.
//!
//! python-gitlab is installed by `cargo xtask setup` into
//! `target/python-clients`; without it this test fails rather than skips,
//! so a machine that never ran setup cannot pass it by accident.

use std::process::Command;

use crate::support::*;
use keycycle_sim::{GroupSeed, TokenSeed, VariableSeed};

/// Where `cargo xtask setup` installs the Python clients (`pip --target`).
fn python_clients() -> std::path::PathBuf {
    repo_root().join("target/python-clients")
}

fn python() -> Command {
    let mut python = Command::new("python3");
    python
        .current_dir(repo_root())
        .env("PYTHONPATH", python_clients())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    python
}

#[test]
fn python_gitlab_gets_gitlabs_answers_from_the_simulator() {
    let probe = python()
        .args(["-c", "import gitlab; print(gitlab.__version__)"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "python-gitlab is not installed in {}: run `cargo xtask setup`\n{}",
        python_clients().display(),
        String::from_utf8_lossy(&probe.stderr)
    );

    let sim = GitLabSim::start();
    // More variables than two pages of 20 hold.
    let count = 45;
    for i in 0..count {
        sim.state
            .add_variable(sim.deploy, VariableSeed::new(&format!("VAR_{i:02}"), "v"))
            .unwrap();
    }
    let group = sim
        .state
        .add_group(GroupSeed {
            path: "acme".into(),
            name: Some("Acme".into()),
        })
        .unwrap();
    sim.state.add_group_member(group, sim.ops, 30).unwrap();
    let pat = sim
        .state
        .add_token(TokenSeed::personal(sim.ops, "py-rotate").value(&canary("glpat-")))
        .unwrap();
    // It also seeds the variable API_TOKEN in acme/deploy.
    let bot = sim.seed_project_token();
    let count = count + 1;

    let output = python()
        .arg("tests/clients/python_gitlab.py")
        .env("GITLAB_URL", sim.origin())
        .env("GITLAB_TOKEN", sim.ops_token.token.expose())
        .env("PROJECT", "acme/deploy")
        .env("VARIABLE_COUNT", count.to_string())
        .env("GROUP", "acme")
        .env("PAT_ID", pat.id.to_string())
        .env("BOT_PROJECT", "acme/api")
        .env("BOT_TOKEN_ID", bot.id.to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python-gitlab met an answer GitLab would not give:\n{stderr}\n{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no report\n{stderr}")),
    )
    .unwrap();
    assert_eq!(report["user"], "ops");
    assert_eq!(report["variables_listed"], count);
    assert_eq!(report["group_id"], group);

    let snap = sim.state.snapshot();
    // Both rotations happened at the simulator: old revoked, new active.
    for (old, new) in [
        (pat.id, &report["pat_new_id"]),
        (bot.id, &report["bot_new_id"]),
    ] {
        let new = new.as_u64().unwrap();
        assert!(snap.token(old).unwrap().revoked, "token {old} revoked");
        let fresh = snap.token(new).unwrap();
        assert!(fresh.active, "token {new} active");
        assert_eq!(fresh.family_id, snap.token(old).unwrap().family_id);
        plant(fresh.value.expose());
    }
    // The script reports ids only: no token, old or new, in its output.
    assert_clean("python-gitlab's stdout", &stdout);
    assert_clean("python-gitlab's stderr", &stderr);
    // The trigger and the hook it made are gone again.
    let trigger = report["trigger_id"].as_u64().unwrap();
    assert!(snap.trigger(trigger).is_none());
    let hook = report["hook_id"].as_u64().unwrap();
    assert!(snap.hook(hook).is_none());
    // python-gitlab's hook test was one delivery, with the hook's token.
    let deliveries: Vec<_> = snap
        .hook_tests
        .iter()
        .filter(|t| t.hook_id == hook)
        .collect();
    assert_eq!(deliveries.len(), 1, "one test delivery of hook {hook}");
    assert!(deliveries[0].sent_token("hook-secret-1"));
    assert_eq!(deliveries[0].trigger, "push_events");
    // The variable holds the last value it was given, masked.
    let variable = snap.variable(sim.deploy, "PY_CLIENT_VAR", "*").unwrap();
    assert_eq!(variable.value.expose(), "third-value-3");
    assert!(variable.masked);
    // The plugin's own token was only used, never rotated.
    assert!(snap.token(sim.ops_token.id).unwrap().active);
}
