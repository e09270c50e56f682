//! Shared runners: teams own runbooks, plugin instances and store names,
//! and a run of one team never reaches another team's credentials. Each
//! test plays team `b` (or a careless runbook of team `a`) trying to use
//! team `a`'s token, with the real binary, the example plugin against the
//! demo simulator, and the http-check plugin aimed at a listener that
//! stands for a server of the attacker's own.

use crate::support::*;

/// Team `a` owns the example plugin (acting with `a/admin`) and the
/// runbooks in `runbooks/a/`; team `b` owns an http-check instance aimed at
/// `listener`, shared with `a`, and the runbooks in `runbooks/b/`. `extra`
/// is appended (runbook sections, flow rules).
fn two_teams(sim: &DemoSim, listener: &Listener, extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.config(&two_teams_config(sim, listener, extra));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("a/admin", &admin);
    ws
}

fn two_teams_config(sim: &DemoSim, listener: &Listener, extra: &str) -> String {
    format!(
        r#"[plugins.demo-a]
path = "{example}"
hosts = ["{o}"]
secrets = {{ token = "a/admin" }}
config = {{ base_url = "{o}" }}

[plugins.check-b]
path = "{check}"
hosts = ["{l}"]
config = {{ base_url = "{l}" }}
shared_with = ["a"]

[teams.a]
runbooks = ["a"]
plugins = ["demo-a"]
secrets = ["a/*"]

[teams.b]
runbooks = ["b"]
plugins = ["check-b"]
secrets = ["b/*"]

{extra}"#,
        example = wasm("example").display(),
        check = wasm("http_check").display(),
        o = sim.origin(),
        l = listener.origin(),
    )
}

#[test]
fn a_team_cannot_call_another_teams_plugin_instance() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = two_teams(
        &sim,
        &listener,
        "[runbooks.\"b/steal\"]\nsecrets = [\"a/admin\"]\n",
    );
    let before = sim.state.tokens().len();
    ws.runbook(
        "b/steal",
        r#"let t = plugin("demo-a").create_token(#{ name: "mine" }); t.id"#,
    );
    let run = ws.run(&["run", "b/steal", "--output", "json"]);
    run.assert_code(4);
    let message = run.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("runbook `b/steal` (team `b`) may not call plugin `demo-a`")
            && message.contains("belongs to team `a`"),
        "{message}"
    );
    assert_eq!(
        sim.state.tokens().len(),
        before,
        "no token was minted with team a's credential"
    );

    // Granting the store name in the runbook's section does not make
    // another team's secret readable.
    ws.runbook("b/read", r#"let s = secret("a/admin"); "read""#);
    ws.config(&two_teams_config(
        &sim,
        &listener,
        "[runbooks.\"b/read\"]\nsecrets = [\"a/admin\"]\n",
    ));
    let run = ws.run(&["run", "b/read"]);
    run.assert_code(4)
        .stderr_has("may not use secret `a/admin`, which belongs to team `a`");

    // Positive control: team a's own runbook mints with its own plugin.
    ws.runbook(
        "a/mint",
        r#"let t = plugin("demo-a").create_token(#{ name: "mine" }); t.id"#,
    );
    ws.run(&["run", "a/mint"]).assert_ok();
    assert_eq!(sim.state.tokens().len(), before + 1);
}

#[test]
fn a_secret_goes_only_where_the_policy_lets_it() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let grants = "[runbooks.\"a/leak\"]\nsecrets = [\"a/admin\"]\n";
    let ws = two_teams(&sim, &listener, grants);
    // Team a may call b's shared checker, but its secrets may not go there
    // unless a rule says so: neither the stored admin token nor a token it
    // just minted.
    ws.runbook(
        "a/leak",
        r#"
        let which = param("which");
        let token = if which == "stored" { secret("a/admin") }
                    else { plugin("demo-a").create_token(#{ name: "fresh" }).token };
        plugin("check-b").probe(#{ url: "/collect", bearer: token })
        "#,
    );
    for (which, label) in [("stored", "a/admin"), ("minted", "minted:demo-a")] {
        let run = ws.run(&["run", "a/leak", "--set", &format!("which={which}")]);
        run.assert_code(4).stderr_has(&format!(
            "secret `{label}` may not be sent to plugin `check-b` by runbook `a/leak` (team `a`)"
        ));
        run.stderr_has("belongs to team `b`")
            .stderr_has("[[teams.a.flows]]");
    }
    assert!(
        listener.requests().is_empty(),
        "nothing reached the other team's server"
    );
    // A dry run meets the same rule, with the placeholder it mints.
    ws.run(&["run", "a/leak", "--dry-run", "--set", "which=minted"])
        .assert_code(4);

    // The operator allows minted tokens to go to the checker: they do, and
    // the stored admin token still may not.
    ws.config(&two_teams_config(
        &sim,
        &listener,
        &format!(
            "{grants}\n[[teams.a.flows]]\nsecrets = [\"minted:demo-a\"]\nto = [\"check-b\", \"demo-a\"]\n"
        ),
    ));
    ws.run(&["run", "a/leak", "--set", "which=minted"])
        .assert_ok();
    assert_eq!(listener.requests().len(), 1, "the allowed send happened");
    ws.run(&["run", "a/leak", "--set", "which=stored"])
        .assert_code(4);
    assert_eq!(listener.requests().len(), 1);
}

#[test]
fn a_flow_rule_holds_on_a_runner_without_teams() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = Workspace::new();
    let config = |flows: &str| {
        format!(
            "{}\n[plugins.check]\npath = \"{}\"\nhosts = [\"{l}\"]\nconfig = {{ base_url = \"{l}\" }}\n\n\
             [runbooks.leak]\nsecrets = [\"demo/admin\"]\n{flows}",
            example_plugin_config(&sim),
            wasm("http_check").display(),
            l = listener.origin()
        )
    };
    ws.config(&config(""));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook(
        "leak",
        r#"plugin("check").probe(#{ url: "/", bearer: secret("demo/admin") })"#,
    );
    // One team: the secret goes where the runbook sends it, as before.
    ws.run(&["run", "leak"]).assert_ok();
    assert_eq!(listener.requests().len(), 1);
    ws.config(&config(
        "\n[[flows]]\nsecrets = [\"demo/*\"]\nto = [\"example\"]\n",
    ));
    ws.run(&["run", "leak"])
        .assert_code(4)
        .stderr_has("secret `demo/admin` may not be sent to plugin `check`")
        .stderr_has("[[flows]] #1 (secrets = [\"demo/*\"]) sends it only to [\"example\"]");
    assert_eq!(listener.requests().len(), 1, "the refused send never left");
}

#[test]
fn grants_follow_the_runbooks_path_inside_the_folder_not_its_file_name() {
    let sim = DemoSim::start();
    let (ws, _) = demo_workspace(&sim, "rotate");
    let body = r#"let s = secret("demo/admin"); "read""#;
    ws.runbook("rotate", body);
    ws.run(&["run", "rotate"]).assert_ok();

    // The same file name elsewhere gets nothing: outside the folder...
    let outside = ws.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let stray = outside.join("rotate.rhai");
    std::fs::write(&stray, body).unwrap();
    ws.run(&["run", stray.to_str().unwrap()])
        .assert_code(4)
        .stderr_has("a runbook outside the runbooks folder is not granted secret `demo/admin`");
    // ...through a link inside the folder that leads out of it...
    std::os::unix::fs::symlink(&stray, ws.path().join("runbooks/linked.rhai")).unwrap();
    ws.run(&["run", "linked"])
        .assert_code(4)
        .stderr_has("outside the runbooks folder");
    // ...or in a subfolder, whose runbook is `sub/rotate`.
    ws.runbook("sub/rotate", body);
    ws.run(&["run", "sub/rotate"])
        .assert_code(4)
        .stderr_has("runbook `sub/rotate` is not granted secret `demo/admin`")
        .stderr_has("[runbooks.\"sub/rotate\"]");
}

#[test]
fn a_runbook_section_names_the_plugin_instances_it_may_call() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "{}\n[plugins.check]\npath = \"{}\"\nhosts = [\"{l}\"]\nconfig = {{ base_url = \"{l}\" }}\n\n\
         [runbooks.narrow]\nplugins = [\"example\"]\n",
        example_plugin_config(&sim),
        wasm("http_check").display(),
        l = listener.origin()
    ));
    ws.runbook("narrow", r#"plugin("check").probe(#{ url: "/" })"#);
    ws.run(&["run", "narrow"])
        .assert_code(4)
        .stderr_has("runbook `narrow` may not call plugin `check`")
        .stderr_has("plugins = [\"example\"]");
    assert!(listener.requests().is_empty());
    // Positive control: the same runbook under another name, no section.
    ws.runbook("wide", r#"plugin("check").probe(#{ url: "/" })"#);
    ws.run(&["run", "wide"]).assert_ok();
    assert_eq!(listener.requests().len(), 1);
}

#[test]
fn a_policy_that_cannot_be_right_stops_every_command() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = two_teams(&sim, &listener, "");
    // Team a's plugin granted team b's store name.
    let config = two_teams_config(&sim, &listener, "").replace(
        "secrets = { token = \"a/admin\" }",
        "secrets = { token = \"b/admin\" }",
    );
    ws.config(&config);
    ws.run(&["secrets", "list"])
        .assert_code(3)
        .stderr_has("[plugins.demo-a] is granted store name `b/admin`, which team `b` owns");
}

#[test]
fn a_deferred_action_is_not_run_once_its_run_may_no_longer_call_the_plugin() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = two_teams(&sim, &listener, "");
    ws.runbook(
        "a/later",
        r#"
        let t = plugin("demo-a").create_token(#{ name: "later" });
        defer(plugin("demo-a"), "revoke_token", #{ id: t.id }, 0, "revoke the token");
        t.id
        "#,
    );
    let run = ws.run(&["run", "a/later", "--output", "json"]);
    run.assert_ok();
    let id = run.json()["result"].as_u64().unwrap();
    // The plugin changes hands before the cleanup.
    let moved = two_teams_config(&sim, &listener, "")
        .replace("plugins = [\"demo-a\"]", "plugins = []")
        .replace(
            "plugins = [\"check-b\"]",
            "plugins = [\"check-b\", \"demo-a\"]",
        )
        .replace("secrets = [\"b/*\"]", "secrets = [\"b/*\", \"a/admin\"]")
        .replace("secrets = [\"a/*\"]", "secrets = [\"a/x*\"]");
    ws.config(&moved);
    let cleanup = ws.run(&["cleanup", "--output", "json"]);
    cleanup.assert_code(5);
    let report = cleanup.json();
    assert_eq!(report[0]["outcome"], "retrying", "{report}");
    assert!(
        report[0]["error"]
            .as_str()
            .unwrap()
            .contains("may not call plugin `demo-a`, which belongs to team `b`"),
        "{report}"
    );
    assert!(
        sim.state.token(id).unwrap().active,
        "the action did not run"
    );
}

#[test]
fn pinned_destinations_stop_a_rotation_before_anything_changes() {
    let sim = GitLabSim::start();
    let ws = gitlab_workspace(&sim);
    let old = sim.ops_token.token.expose().to_owned();
    sim.state
        .add_variable(
            sim.deploy,
            keycycle_sim::VariableSeed::new("GITLAB_TOKEN", &old).masked(),
        )
        .unwrap();
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "{config}\n[runbooks.gitlab-personal-token.destinations]\n\
             gitlab_variable = [\"acme/deploy:*\"]\nstore_as = [\"gitlab/*\"]\n"
        ),
    )
    .unwrap();
    let args = |variables: &str, store_as: &str| {
        vec![
            "run".to_owned(),
            "gitlab-personal-token".to_owned(),
            "--set".to_owned(),
            format!("store_as={store_as}"),
            "--set".to_owned(),
            "expires_in_days=45".to_owned(),
            "--set".to_owned(),
            format!("variables={variables}"),
        ]
    };
    for (variables, store_as, refused) in [
        (
            "acme/receiver:STOLEN",
            "gitlab/ops",
            "gitlab_variable `acme/receiver:STOLEN`",
        ),
        (
            "acme/deploy:GITLAB_TOKEN",
            "elsewhere/ops",
            "store_as `elsewhere/ops`",
        ),
    ] {
        let a = args(variables, store_as);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ws.run(&a)
            .assert_code(4)
            .stderr_has(&format!(
                "runbook `gitlab-personal-token` may not send a credential to {refused}"
            ))
            .stderr_has("[runbooks.gitlab-personal-token.destinations]");
        assert!(sim.changes().is_empty(), "{:?}", sim.changes());
    }
    // Positive control: the pinned destinations are allowed.
    let a = args("acme/deploy:GITLAB_TOKEN", "gitlab/ops");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    ws.run(&a).assert_ok();
    assert!(!sim.changes().is_empty());
}

#[test]
fn doctor_names_grants_that_can_never_apply() {
    let sim = DemoSim::start();
    let listener = Listener::start();
    let ws = two_teams(
        &sim,
        &listener,
        "[plugins.stray]\npath = \"stray.wasm\"\n\n[runbooks.\"a/missing\"]\nsecrets = [\"a/x\"]\n",
    );
    ws.runbook("a/present", "1");
    let run = ws.run(&["doctor", "--output", "json"]);
    let report = run.json();
    assert_eq!(report["policy"]["teams"], serde_json::json!(["a", "b"]));
    assert_eq!(
        report["policy"]["uncallable_plugins"],
        serde_json::json!(["stray"])
    );
    assert_eq!(
        report["policy"]["sections_without_runbook"],
        serde_json::json!(["a/missing"])
    );
    let text = ws.run(&["doctor"]);
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(
        all.contains("plugin `stray` belongs to no team")
            && all.contains("[runbooks.\"a/missing\"] names no runbook"),
        "{all}"
    );
}
