//! The sandbox's promise, tested with hostile plugins through the real
//! binary: each attempt fails cleanly with an error naming the plugin, the
//! operation and what was refused, and the next call in the same host works.

use crate::support::*;

/// A workspace with the hostile plugin (two teams' instances), the
/// load-time-refused plugins, and the example plugin.
fn workspace(sim: &DemoSim) -> Workspace {
    let ws = Workspace::new();
    let o = sim.origin();
    ws.config(&format!(
        r#"{example}
[plugins.hostile]
path = "{hostile}"
hosts = ["{o}"]
secrets = {{ token = "team-a/token" }}
config = {{ base_url = "{o}" }}
timeout_secs = 2

[plugins.hostile_b]
path = "{hostile}"
hosts = ["{o}"]
secrets = {{ token = "team-b/token" }}
config = {{ base_url = "{o}" }}

[plugins.hostile_big]
path = "{hostile}"
memory_mb = 512

[plugins.fsreader]
path = "{fs}"

[plugins.sockets]
path = "{sock}"

[plugins.wasihttp]
path = "{http}"
"#,
        example = example_plugin_config(sim),
        hostile = wasm("hostile").display(),
        fs = wasm("fs_reader").display(),
        sock = wasm("socket_opener").display(),
        http = wasm("wasi_http").display(),
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.set_secret("team-a/token", &canary("team-a-"));
    ws.set_secret("team-b/token", &canary("team-b-"));
    ws
}

/// Runs `call` inside try/catch, then a good call on the same plugin and
/// one on the example plugin, and returns the caught error map.
fn attempt(ws: &Workspace, plugin: &str, call: &str) -> serde_json::Value {
    let text = format!(
        r#"
        let err = ();
        try {{
            let p = plugin("{plugin}");
            p.{call};
        }} catch (e) {{
            err = e;
        }}
        let after = plugin("hostile").ok();
        let other = plugin("example").whoami();
        #{{ err: err, after: after.ok, other: other.user }}
        "#
    );
    ws.runbook("attempt", &text);
    let run = ws.run(&["run", "attempt", "--output", "json", "-vv"]);
    run.assert_ok();
    let result = run.json()["result"].clone();
    assert_eq!(
        result["after"], true,
        "the next call on the same host works: {result}"
    );
    assert_eq!(
        result["other"], "demo-admin",
        "another plugin still works: {result}"
    );
    assert!(result["err"].is_object(), "the attempt must fail: {result}");
    result["err"].clone()
}

#[track_caller]
fn assert_msg(err: &serde_json::Value, kind: &str, needles: &[&str]) {
    assert_eq!(err["kind"], kind, "{err}");
    let msg = err["message"].as_str().unwrap();
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
}

#[test]
fn reading_a_file_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "fsreader", "read()");
    assert_msg(&err, "denied", &["fsreader", "wasi:filesystem"]);
}

#[test]
fn opening_a_socket_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "sockets", "connect()");
    assert_msg(&err, "denied", &["sockets", "wasi:sockets"]);
}

#[test]
fn importing_wasi_http_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "wasihttp", "ok()");
    assert_msg(&err, "denied", &["wasihttp", "wasi:http"]);
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    let rows = list.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "wasihttp")
        .unwrap();
    assert_eq!(row["status"], "refused");
}

#[test]
fn the_environment_is_empty() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook("env", "plugin(\"hostile\").read_env()\n");
    let leaked = canary("env-");
    let out = ws
        .command(&["run", "env", "--output", "json"])
        .env("TEAM_B_TOKEN", &leaked)
        .timed_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_clean("stdout", &stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["result"]["vars"],
        serde_json::json!([]),
        "the plugin sees no environment variables"
    );
}

#[test]
fn an_ungranted_host_is_refused_directly() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(
        &ws,
        "hostile",
        r#"http_get(#{ url: "http://127.0.0.1:9/steal" })"#,
    );
    assert_msg(
        &err,
        "denied",
        &["hostile", "http_get", "http://127.0.0.1:9", "not granted"],
    );
}

#[test]
fn an_ungranted_host_is_refused_through_a_redirect() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let call = format!(
        r#"http_get(#{{ url: "{}/api/redirect?to=http://127.0.0.1:9/steal" }})"#,
        sim.origin()
    );
    let err = attempt(&ws, "hostile", &call);
    assert_msg(
        &err,
        "denied",
        &[
            "hostile",
            "http_get",
            "redirect to http://127.0.0.1:9/steal",
            "not granted",
        ],
    );
    // A redirect that stays on a granted origin is followed.
    ws.runbook(
        "redirect-ok",
        &format!(
            "plugin(\"hostile\").http_get(#{{ url: \"{o}/api/redirect?to={o}/api/whoami\" }})\n",
            o = sim.origin()
        ),
    );
    let run = ws.run(&["run", "redirect-ok", "--output", "json"]);
    run.assert_ok();
    assert_eq!(
        run.json()["result"]["status"],
        401,
        "followed to whoami, which wants a token"
    );
}

#[test]
fn an_ungranted_host_is_refused_through_ip_literals() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let port = sim.origin().rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("http://[::1]:{port}/api/whoami"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let err = attempt(&ws, "hostile", &format!(r#"http_get(#{{ url: "{url}" }})"#));
        assert_msg(&err, "denied", &["hostile", "http_get", "not granted"]);
    }
}

#[test]
fn a_granted_name_that_resolves_to_a_private_address_is_refused() {
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let local = sim.origin().replace("127.0.0.1", "localhost");
    ws.config(&format!(
        "[plugins.hostile]\npath = \"{}\"\nhosts = [\"{local}\"]\nconfig = {{ base_url = \"{local}\" }}\n",
        wasm("hostile").display()
    ));
    ws.runbook(
        "private",
        &format!("plugin(\"hostile\").http_get(#{{ url: \"{local}/api/whoami\" }})\n"),
    );
    let run = ws.run(&["run", "private"]);
    run.assert_code(4)
        .stderr_has("localhost")
        .stderr_has("non-public address");
    assert!(
        sim.state.requests().is_empty(),
        "nothing reached the server"
    );
}

#[test]
fn userinfo_in_a_url_is_refused() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let url = sim.origin().replace("http://", "http://admin:hunter2@");
    let err = attempt(
        &ws,
        "hostile",
        &format!(r#"http_get(#{{ url: "{url}/api/whoami" }})"#),
    );
    assert_msg(&err, "denied", &["hostile", "http_get", "userinfo"]);
    assert!(!err["message"].as_str().unwrap().contains("hunter2"));
}

#[test]
fn an_ungranted_secret_is_refused_and_teams_are_isolated() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", r#"read_secret(#{ name: "other" })"#);
    assert_msg(
        &err,
        "denied",
        &["hostile", "read_secret", "secret `other` is not granted"],
    );
    // Each team's instance reads only its own grant.
    ws.runbook(
        "teams",
        r#"#{ a: plugin("hostile").read_secret(#{ name: "token" }).salted_sha256,
             b: plugin("hostile_b").read_secret(#{ name: "token" }).salted_sha256 }"#,
    );
    let run = ws.run(&["run", "teams", "--output", "json"]);
    run.assert_ok();
    let r = run.json()["result"].clone();
    // Hashes of the values, not lengths: the two canaries have the same
    // length, so swapped grants would pass a length check.
    let stored = ws.stored_secrets();
    let salted = |name: &str| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(format!(
            "isolation-check:{}",
            stored[name]
        )))
    };
    assert_eq!(
        r["a"],
        salted("team-a/token"),
        "team A's instance reads team A's secret"
    );
    assert_eq!(
        r["b"],
        salted("team-b/token"),
        "team B's instance reads team B's secret"
    );
    assert_ne!(r["a"], r["b"]);
}

#[test]
fn an_uncaught_denial_exits_with_the_denied_code() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "deny",
        "plugin(\"hostile\").http_get(#{ url: \"http://127.0.0.1:9/\" });\n",
    );
    ws.run(&["run", "deny"])
        .assert_code(4)
        .stderr_has("deny.rhai:1")
        .stderr_has("plugin `hostile` operation `http_get` was denied");
}

#[test]
fn an_endless_loop_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "loop_forever()");
    assert_msg(&err, "failed", &["hostile", "loop_forever", "time limit"]);
}

#[test]
fn allocating_4_gib_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "alloc_4gib()");
    assert_msg(
        &err,
        "failed",
        &["hostile", "alloc_4gib", "memory limit of 64 MiB"],
    );
}

#[test]
fn a_stack_overflow_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "overflow_stack()");
    assert_msg(&err, "failed", &["hostile", "overflow_stack", "stack"]);
}

#[test]
fn a_panic_fails_the_call() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "panic()");
    assert_msg(&err, "failed", &["hostile", "panic", "panicked"]);
}

#[test]
fn a_100_mb_output_is_refused() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    // With memory to build it, the output limit stops it.
    let err = attempt(&ws, "hostile_big", "big_output()");
    assert_msg(
        &err,
        "failed",
        &[
            "hostile_big",
            "big_output",
            "bytes of output, over the limit",
        ],
    );
    // Within the default memory it cannot even be built.
    let err = attempt(&ws, "hostile", "big_output()");
    assert_msg(&err, "failed", &["hostile", "big_output", "memory limit"]);
}

#[test]
fn endless_logging_is_stopped() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "log_flood()");
    assert_msg(
        &err,
        "failed",
        &["hostile", "log_flood", "logged more than the limit"],
    );
}

#[test]
fn a_response_over_the_size_cap_is_refused() {
    // A server of the test's own that answers with 16 MiB, twice the cap.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/big",
            axum::routing::get(|| async { "x".repeat(16 << 20) }),
        )
        .route("/small", axum::routing::get(|| async { "ok" }));
    rt.spawn(async move { axum::serve(listener, app).await });

    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.hostile]\npath = \"{}\"\nhosts = [\"{origin}\"]\nconfig = {{ base_url = \"{origin}\" }}\n",
        wasm("hostile").display()
    ));
    ws.runbook(
        "big",
        &format!(
            r#"
            let h = plugin("hostile");
            let err = ();
            try {{ h.http_get(#{{ url: "{origin}/big" }}); }} catch (e) {{ err = e; }}
            #{{ err: err, small: h.http_get(#{{ url: "{origin}/small" }}).status }}
            "#
        ),
    );
    let run = ws.run(&["run", "big", "--output", "json"]);
    run.assert_ok();
    let result = run.json()["result"].clone();
    let message = result["err"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("over the") && message.contains("limit"),
        "{result}"
    );
    assert_eq!(
        result["small"], 200,
        "the next request on the same host works"
    );
}
