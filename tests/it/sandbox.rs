//! The sandbox's promise, tested with hostile plugins through the real
//! binary: each attempt fails cleanly with an error naming the plugin, the
//! operation and what was refused, and the next call in the same host works.
//!
//! A denial is only a denial if nothing was sent, so the ungranted targets
//! are listeners of the test's own that count connections, never closed
//! ports, where a request that went out and was refused by the kernel
//! looks the same as one the host never sent.

use std::process::Command;

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

/// A plugin refused for its imports is refused when it loads, before any
/// call: `plugins list` and `plugins inspect` report it, and a runbook that
/// names it stops with the load error before its first effect (a call to
/// the example plugin that comes first in the runbook never reaches the
/// simulator). `call` is what the runbook would have done with it.
#[track_caller]
fn assert_refused_at_load(sim: &DemoSim, ws: &Workspace, plugin: &str, call: &str, import: &str) {
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let rows = list.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == plugin)
        .unwrap_or_else(|| panic!("no row for {plugin}: {rows}"));
    assert_eq!(row["status"], "refused", "{row}");
    let refusal = format!("plugin `{plugin}` is refused: it imports {import}");
    assert!(
        row["error"].as_str().unwrap_or("").contains(&refusal),
        "{row}"
    );
    ws.run(&["plugins", "inspect", plugin])
        .assert_code(4)
        .stderr_has(&refusal);

    ws.runbook(
        "uses-refused",
        &format!("plugin(\"example\").whoami();\nplugin(\"{plugin}\").{call};\n"),
    );
    let run = ws.run(&["run", "uses-refused", "--output", "json"]);
    run.assert_code(4);
    let report = run.json();
    assert_eq!(report["error"]["kind"], "denied", "{report}");
    let message = report["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!(
            "the runbook uses plugin `{plugin}`, which did not load"
        )) && message.contains(&refusal),
        "{report}"
    );
    assert!(
        report.get("run_id").is_none(),
        "no run was recorded: {report}"
    );
    assert!(
        sim.state.requests().is_empty(),
        "no effect ran before the load error: {:?}",
        sim.state.requests()
    );
}

#[test]
fn reading_a_file_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    assert_refused_at_load(&sim, &ws, "fsreader", "read()", "wasi:filesystem/");
}

#[test]
fn opening_a_socket_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let target = Listener::start();
    let call = format!(r#"connect(#{{ addr: "127.0.0.1:{}" }})"#, target.port());
    assert_refused_at_load(&sim, &ws, "sockets", &call, "wasi:sockets/");
    assert_eq!(target.accepted(), 0, "nothing connected to the listener");
}

/// With `inert_wasi = true` the filesystem and socket interfaces link, and
/// stay inert: no directory is preopened, so no file can be named, and
/// TCP is refused before any socket exists, so nothing reaches the
/// listener. `wasi:http` is still refused: it is not one of them.
#[test]
fn inert_wasi_links_files_and_sockets_that_reach_nothing() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let mut inert = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    for (section, file) in [
        ("fsreader", "fs_reader"),
        ("sockets", "socket_opener"),
        ("wasihttp", "wasi_http"),
    ] {
        let plain = format!("[plugins.{section}]\npath = \"{}\"\n", wasm(file).display());
        inert = inert.replace(&plain, &format!("{plain}inert_wasi = true\n"));
    }
    assert_eq!(inert.matches("inert_wasi = true").count(), 3, "{inert}");
    std::fs::write(ws.path().join("keycycle.toml"), inert).unwrap();

    let err = attempt(&ws, "fsreader", "read()");
    assert_msg(&err, "denied", &["reading /etc/passwd failed"]);

    let target = Listener::start();
    let err = attempt(
        &ws,
        "sockets",
        &format!(r#"connect(#{{ addr: "127.0.0.1:{}" }})"#, target.port()),
    );
    assert_msg(&err, "denied", &["connecting to 127.0.0.1"]);
    assert_eq!(target.accepted(), 0, "nothing connected to the listener");

    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let http = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "wasihttp")
        .cloned()
        .unwrap();
    assert_eq!(
        http["status"], "refused",
        "wasi:http is never inert: {http}"
    );
}

#[test]
fn importing_wasi_http_is_refused_at_load_time() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    // `send` really sends through wasi:http and waits for the answer, so a
    // host that let the import through would show up at this listener.
    let target = Listener::start();
    let call = format!(r#"send(#{{ authority: "127.0.0.1:{}" }})"#, target.port());
    assert_refused_at_load(&sim, &ws, "wasihttp", &call, "wasi:http/");
    assert_eq!(target.accepted(), 0, "nothing connected to the listener");
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
    let target = Listener::start();
    let err = attempt(
        &ws,
        "hostile",
        &format!(r#"http_get(#{{ url: "{}/steal" }})"#, target.origin()),
    );
    assert_msg(
        &err,
        "denied",
        &[
            "hostile",
            "http_get",
            &format!("host {} is not granted", target.origin()),
        ],
    );
    assert_eq!(
        target.accepted(),
        0,
        "nothing was sent to the ungranted host"
    );
}

#[test]
fn an_ungranted_host_is_refused_through_a_redirect() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let target = Listener::start();
    let call = format!(
        r#"http_get(#{{ url: "{}/api/redirect?to={}/steal" }})"#,
        sim.origin(),
        target.origin()
    );
    let err = attempt(&ws, "hostile", &call);
    assert_msg(
        &err,
        "denied",
        &[
            "hostile",
            "http_get",
            &format!("redirect to {}/steal", target.origin()),
            "not granted",
        ],
    );
    assert_eq!(target.accepted(), 0, "the redirect was not followed");
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
    // The granted simulator's port on the IPv6 loopback, where the test
    // listens itself: the same machine and port, another origin.
    let v6 = Listener::start_on(format!("[::1]:{port}").parse().unwrap());
    for url in [
        format!("http://[::1]:{port}/api/whoami"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let err = attempt(&ws, "hostile", &format!(r#"http_get(#{{ url: "{url}" }})"#));
        assert_msg(&err, "denied", &["hostile", "http_get", "not granted"]);
    }
    assert_eq!(v6.accepted(), 0, "nothing was sent to [::1]:{port}");
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
    ws.runbook(
        "userinfo",
        &format!(
            r#"
            let err = ();
            try {{ plugin("hostile").http_get(#{{ url: "{url}/api/whoami" }}); }} catch (e) {{ err = e; }}
            err
            "#
        ),
    );
    let run = ws.run(&["run", "userinfo", "--output", "json"]);
    run.assert_ok();
    let err = run.json()["result"].clone();
    assert_msg(&err, "denied", &["hostile", "http_get", "userinfo"]);
    assert!(!err["message"].as_str().unwrap().contains("hunter2"));
    assert!(
        sim.state.requests().is_empty(),
        "nothing reached the simulator: {:?}",
        sim.state.requests()
    );
    // The simulator's log does see the same request without userinfo.
    ws.runbook(
        "no-userinfo",
        &format!(
            "plugin(\"hostile\").http_get(#{{ url: \"{}/api/whoami\" }})\n",
            sim.origin()
        ),
    );
    ws.run(&["run", "no-userinfo"]).assert_ok();
    assert_eq!(sim.state.requests().len(), 1, "{:?}", sim.state.requests());
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
    let target = Listener::start();
    ws.runbook(
        "deny",
        &format!(
            "plugin(\"hostile\").http_get(#{{ url: \"{}/\" }});\n",
            target.origin()
        ),
    );
    ws.run(&["run", "deny"])
        .assert_code(4)
        .stderr_has("deny.rhai:1")
        .stderr_has("plugin `hostile` operation `http_get` was denied");
    assert_eq!(target.accepted(), 0, "nothing was sent");
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

/// The log lines of `operation` that reached stderr, and their bytes.
fn flood_lines(stderr: &str, needle: &str) -> (usize, usize) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
    (lines.len(), lines.iter().map(|l| l.len()).sum())
}

#[test]
fn endless_logging_is_stopped_and_the_log_cap_holds() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let err = attempt(&ws, "hostile", "log_flood()");
    assert_msg(
        &err,
        "failed",
        &["hostile", "log_flood", "logged more than the limit"],
    );
    // What the call logged up to the cap is written, and no line beyond:
    // 1,000 lines.
    let flood = |op: &str| {
        ws.runbook(
            "flood",
            &format!("try {{ plugin(\"hostile\").{op}(); }} catch {{ }}\n"),
        );
        let run = ws.run(&["run", "flood"]);
        run.assert_ok();
        run.stderr
    };
    let (lines, _) = flood_lines(&flood("log_flood"), "flood line ");
    assert_eq!(lines, 1_000, "log lines written of a flood");
    // 8 KiB lines: the 256 KiB byte cap stops them after 32 lines.
    let (lines, bytes) = flood_lines(&flood("log_flood_bytes"), &"x".repeat(8 << 10));
    assert!(lines > 0, "the plugin's log lines are written");
    assert!(
        lines <= 32 && bytes <= (256 << 10) + lines * 200,
        "{lines} lines of 8 KiB written, over the 256 KiB cap"
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

/// A workspace with only the hostile plugin, granted `origins` and the
/// secret `token`; its `base_url` is the first origin, its `other_url` the
/// second.
fn hostile_granted(origins: &[&str]) -> Workspace {
    let ws = Workspace::new();
    let hosts: Vec<String> = origins.iter().map(|o| format!("\"{o}\"")).collect();
    let mut config = format!("base_url = \"{}\"", origins[0]);
    if let Some(other) = origins.get(1) {
        config.push_str(&format!(", other_url = \"{other}\""));
    }
    ws.config(&format!(
        "[plugins.hostile]\npath = \"{}\"\nhosts = [{}]\nsecrets = {{ token = \"team-a/token\" }}\nconfig = {{ {config} }}\n",
        wasm("hostile").display(),
        hosts.join(", ")
    ));
    ws.set_secret("team-a/token", &canary("team-a-"));
    ws
}

/// Runs one call of the hostile plugin inside try/catch and returns
/// `#{ out, err }`.
fn catch(ws: &Workspace, call: &str) -> serde_json::Value {
    ws.runbook(
        "catch",
        &format!(
            r#"
            let out = ();
            let err = ();
            try {{ out = plugin("hostile").{call}; }} catch (e) {{ err = e; }}
            #{{ out: out, err: err }}
            "#
        ),
    );
    let run = ws.run(&["run", "catch", "--output", "json"]);
    run.assert_ok();
    run.json()["result"].clone()
}

#[test]
fn a_denial_the_plugin_swallows_still_fails_the_call() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    let target = Listener::start();
    // The plugin ignores the refusal and reports `{"ok": true}`.
    let err = attempt(
        &ws,
        "hostile",
        &format!(r#"swallow_denial(#{{ url: "{}/steal" }})"#, target.origin()),
    );
    assert_msg(
        &err,
        "denied",
        &[
            "hostile",
            "swallow_denial",
            &format!("host {} is not granted", target.origin()),
        ],
    );
    assert_eq!(target.accepted(), 0, "nothing was sent");
}

#[test]
fn headers_that_steer_the_connection_are_refused() {
    let server = Listener::start();
    let o = server.origin();
    let ws = hostile_granted(&[&o]);
    for name in [
        "Host",
        "Connection",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Transfer-Encoding",
        "Upgrade",
        "TE",
        "Keep-Alive",
    ] {
        let r = catch(
            &ws,
            &format!(r#"send_header(#{{ url: "{o}/", name: "{name}", value: "evil.example" }})"#),
        );
        assert_msg(
            &r["err"],
            "denied",
            &[
                "send_header",
                &format!("header `{name}` may not be set by a plugin"),
            ],
        );
    }
    assert_eq!(
        server.accepted(),
        0,
        "no request with a forbidden header was sent"
    );
    // Any other header goes through.
    let r = catch(
        &ws,
        &format!(r#"send_header(#{{ url: "{o}/", name: "X-Custom", value: "fine" }})"#),
    );
    assert_eq!(r["out"]["status"], 200, "{r}");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].has_header("x-custom"),
        "{:?}",
        seen[0].header_names()
    );
}

#[test]
fn the_request_cap_holds() {
    let server = Listener::start();
    let o = server.origin();
    let ws = hostile_granted(&[&o]);
    // The default cap is 100 requests per call.
    let r = catch(
        &ws,
        &format!(r#"http_many(#{{ url: "{o}/", count: 101 }})"#),
    );
    assert_msg(
        &r["err"],
        "denied",
        &["http_many", "the call's HTTP request limit is used up"],
    );
    assert_eq!(
        server.requests().len(),
        100,
        "requests that reached the server"
    );
    // The limit is per call: the next call sends again.
    let r = catch(
        &ws,
        &format!(r#"http_many(#{{ url: "{o}/", count: 100 }})"#),
    );
    assert_eq!(r["out"]["sent"], 100, "{r}");
}

#[test]
fn the_redirect_limit_holds() {
    let server = Listener::start();
    let o = server.origin();
    let ws = hostile_granted(&[&o]);
    // Five redirects are followed...
    let r = catch(&ws, &format!(r#"http_get(#{{ url: "{o}/chain/5" }})"#));
    assert_eq!(r["out"]["status"], 200, "{r}");
    assert_eq!(server.requests().len(), 6, "the request and five redirects");
    // ...a sixth is not.
    let r = catch(&ws, &format!(r#"http_get(#{{ url: "{o}/chain/6" }})"#));
    let message = r["err"]["message"].as_str().unwrap_or("");
    assert!(message.contains("more than 5 redirects"), "{r}");
    let chain: Vec<String> = server.requests()[6..]
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        chain,
        [
            "/chain/6", "/chain/5", "/chain/4", "/chain/3", "/chain/2", "/chain/1"
        ],
        "requests sent for the six-redirect chain"
    );
}

#[test]
fn credential_headers_are_dropped_on_a_cross_origin_redirect() {
    let a = Listener::start();
    let b = Listener::start();
    let ws = hostile_granted(&[&a.origin(), &b.origin()]);
    let credentials = ["authorization", "private-token", "job-token", "cookie"];

    // Redirected to the other granted origin: the credentials stay behind,
    // other headers go on.
    let r = catch(
        &ws,
        &format!(
            r#"send_credentials(#{{ url: "{}/redirect?to={}/landed" }})"#,
            a.origin(),
            b.origin()
        ),
    );
    assert_eq!(r["out"]["status"], 200, "{r}");
    let first = &a.requests()[0];
    for h in credentials {
        assert!(
            first.has_header(h),
            "the first hop carries {h}: {:?}",
            first.header_names()
        );
    }
    let landed = b.requests();
    assert_eq!(
        landed.len(),
        1,
        "the redirect was followed to the other origin; the first saw {:?}",
        a.requests().iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(landed[0].target, "/landed");
    for h in credentials {
        assert!(
            !landed[0].has_header(h),
            "{h} crossed to the other origin: {:?}",
            landed[0].header_names()
        );
    }
    assert!(
        landed[0].has_header("x-trace"),
        "{:?}",
        landed[0].header_names()
    );

    // Redirected within the same origin, they are kept.
    let r = catch(
        &ws,
        &format!(
            r#"send_credentials(#{{ url: "{o}/redirect?to={o}/same" }})"#,
            o = a.origin()
        ),
    );
    assert_eq!(r["out"]["status"], 200, "{r}");
    let same = a.requests();
    let same = same.last().unwrap();
    assert_eq!(same.target, "/same");
    for h in credentials {
        assert!(
            same.has_header(h),
            "{h} kept on the same origin: {:?}",
            same.header_names()
        );
    }
}

#[test]
fn proxies_from_the_environment_are_ignored() {
    let server = Listener::start();
    let proxy = Listener::start();
    let o = server.origin();
    let ws = hostile_granted(&[&o]);
    ws.runbook(
        "via-proxy",
        &format!("plugin(\"hostile\").http_get(#{{ url: \"{o}/direct\" }})\n"),
    );
    let mut cmd = ws.command(&["run", "via-proxy", "--output", "json"]);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, proxy.origin());
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let out = cmd.timed_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["result"]["status"], 200, "{report}");
    assert_eq!(
        proxy.accepted(),
        0,
        "the proxy from the environment was used"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/direct", "the server was reached directly");
}

#[test]
fn statics_do_not_survive_between_calls() {
    let sim = DemoSim::start();
    let ws = workspace(&sim);
    ws.runbook(
        "statics",
        r#"
        let h = plugin("hostile");
        [h.bump_static().calls, h.bump_static().calls, plugin("hostile_b").bump_static().calls]
        "#,
    );
    let run = ws.run(&["run", "statics", "--output", "json"]);
    run.assert_ok();
    assert_eq!(
        run.json()["result"],
        serde_json::json!([1, 1, 1]),
        "each call starts with a fresh instance"
    );

    // More calls than the pool has slots: every slot is reused, after its
    // reset (freed slots are reset in batches), and still nothing is left.
    ws.runbook(
        "statics-reused",
        r#"
        let h = plugin("hostile");
        let seen = [];
        for i in 0..150 { seen.push(h.bump_static().calls); }
        seen
        "#,
    );
    let run = ws.run(&["run", "statics-reused", "--output", "json"]);
    run.assert_ok();
    let seen = run.json()["result"].clone();
    assert_eq!(
        seen,
        serde_json::json!(vec![1; 150]),
        "a reused slot starts clean"
    );
}

#[test]
fn a_plugin_built_against_another_contract_version_is_refused_at_load() {
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.next]\npath = \"{}\"\n",
        wasm("contract_next").display()
    ));
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let row = list.json()[0].clone();
    assert_eq!(row["status"], "error", "{row}");
    let error = row["error"].as_str().unwrap_or("");
    // Not a capability refusal: a plugin built for another contract, with
    // what to do about it.
    assert!(
        error.contains("plugin `next` was built against the plugin contract keycycle:plugin@0.2.0")
            && error.contains("this keycycle speaks keycycle:plugin@0.1.x; rebuild the plugin"),
        "{row}"
    );
    ws.runbook("next", "plugin(\"next\").ok()\n");
    ws.run(&["run", "next"])
        .assert_code(3)
        .stderr_has("the runbook uses plugin `next`, which did not load");
}

#[test]
fn describe_runs_without_grants() {
    let target = Listener::start();
    let o = target.origin();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.probe]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ target = \"probe/target\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        wasm("describe_probe").display()
    ));
    // The secret is where to send: a describe that could read it could
    // also reach the listener.
    ws.set_secret("probe/target", &format!("{o}/from-describe"));
    let inspect = ws.run(&["plugins", "inspect", "probe", "--output", "json"]);
    inspect.assert_ok();
    let doc = inspect.json()["operations"][0]["doc"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        doc.contains(
            "describe saw secret: refused (secret `target` is not granted (granted: none))"
        ),
        "{doc}"
    );
    assert!(
        doc.contains("http: denied (") && doc.contains("is not granted"),
        "{doc}"
    );
    assert_eq!(target.accepted(), 0, "describe sent nothing");
    // The same probe in a call, with its grants, reads and sends.
    ws.runbook("probe", "plugin(\"probe\").probe()\n");
    let run = ws.run(&["run", "probe", "--output", "json"]);
    run.assert_ok();
    assert_eq!(
        run.json()["result"],
        serde_json::json!({"secret": "read", "http": "sent"})
    );
    let seen = target.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/from-describe");
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_plugin_cache_is_private_and_one_owned_by_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let sim = DemoSim::start();
    let ws = Workspace::new();
    let cache = ws.path().join("cache");
    let config = |ws: &Workspace| {
        std::fs::write(
            ws.path().join("keycycle.toml"),
            format!(
                "state_dir = \"state\"\ncache_dir = \"{}\"\n\n{}",
                cache.display(),
                example_plugin_config(&sim)
            ),
        )
        .unwrap();
    };
    config(&ws);
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook("who", "plugin(\"example\").whoami().user\n");

    // Created by keycycle: 0700, and it holds the compiled plugin.
    ws.run(&["run", "who"]).assert_ok();
    assert_eq!(mode_of(&cache), 0o700, "mode of a new cache folder");
    let entries = || std::fs::read_dir(&cache).unwrap().count();
    assert!(entries() > 0, "the cache holds the compiled plugin");

    // One others can write to is refused, not made private and trusted:
    // whoever could write there could have planted machine code. Nothing
    // in it is loaded, changed or removed; the operator decides.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = cache.join("planted-by-another-user.cwasm");
    std::fs::write(&planted, b"not machine code of ours").unwrap();
    ws.run(&["run", "who"])
        .assert_code(3)
        .stderr_has("is writable by other users (mode 0777)")
        .stderr_has("refusing to use it");
    assert_eq!(mode_of(&cache), 0o777, "the folder's mode is not changed");
    assert!(planted.exists(), "nothing in a refused cache is touched");
    std::fs::remove_file(&planted).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let compiled: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ws.run(&["run", "who"]).assert_ok();

    // An entry others can write to is not loaded either.
    let entry = compiled.first().expect("a compiled plugin");
    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    ws.run(&["run", "who", "-v"])
        .assert_ok()
        .stderr_has("discarding a cache entry: it is writable by other users");
    assert_eq!(
        mode_of(entry),
        0o600,
        "the entry was written again, private"
    );

    // One owned by another user is refused: machine code from it is never
    // loaded, and nothing is written into it.
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let status = Command::new("chown")
        .args(["65534:65534", cache.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "chown the cache folder (the tests run as root)"
    );
    ws.run(&["run", "who"])
        .assert_code(3)
        .stderr_has("belongs to another user; refusing to load machine code from it");
    assert_eq!(
        entries(),
        0,
        "nothing was written into another user's cache"
    );
}

#[test]
fn the_panic_hook_masks_secrets() {
    let ws = Workspace::new();
    ws.config("");
    let value = canary("panic-");
    ws.set_secret("team-a/token", &value);
    let out = ws
        .command(&["runs"])
        .env("KEYCYCLE_DEBUG_PANIC", "secret:team-a/token")
        .timed_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code of a panic; stderr:\n{stderr}"
    );
    assert_clean("stderr of a panic", &stderr);
    assert!(
        stderr.contains("KEYCYCLE_DEBUG_PANIC: secret `team-a/token` is <***>")
            && stderr.contains("This is a bug"),
        "the panic message, masked:\n{stderr}"
    );
}

// The host's voice belongs to the host: text a plugin chose reaches the
// operator on one escaped line, attributed to the plugin, and bounded.

/// Plugin text that tries to forge a host line and drive the terminal: a
/// newline, then a line that looks like keycycle's, NUL, a screen clear,
/// C1 controls and bidirectional overrides. Rhai escapes, for runbooks.
const FORGERY: &str = r"x\nFORGED error: all good\x00\x1b[2J\u0085\u009b\u202e\u2066\u200f\r\t";

/// No raw control or bidirectional character but the line breaks and tabs
/// keycycle writes itself, and no line that starts with the forged text.
#[track_caller]
fn assert_one_voice(what: &str, text: &str) {
    let hidden = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    };
    assert!(
        !text.chars().any(hidden),
        "{what} carries a raw control character: {text:?}"
    );
    assert!(
        !text.contains("\nFORGED"),
        "{what} has a line forged by the plugin:\n{text}"
    );
}

#[test]
fn a_plugin_log_line_cannot_forge_a_host_line() {
    let ws = hostile_granted(&["http://127.0.0.1:9"]);
    for format in ["text", "json"] {
        for level in ["info", "warn", "error"] {
            ws.runbook(
                "log",
                &format!(
                    "plugin(\"hostile\").log_text(#{{ level: \"{level}\", message: \"{FORGERY}\" }});\n"
                ),
            );
            let run = ws.run(&["run", "log", "--log-format", format]);
            run.assert_ok();
            assert_one_voice("stderr", &run.stderr);
            let lines: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| l.contains("FORGED"))
                .collect();
            assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
            let line = lines[0];
            // Escaped visibly (JSON doubles the backslash) and attributed.
            assert!(
                line.contains("x\\nFORGED") || line.contains("x\\\\nFORGED"),
                "{line}"
            );
            assert!(
                line.contains("\\u{1b}[2J") || line.contains("\\\\u{1b}[2J"),
                "{line}"
            );
            assert!(
                line.contains("hostile.log_text: x\\")
                    && line.contains("hostile")
                    && line.contains("log_text"),
                "attributed to the plugin and operation: {line}"
            );
        }
    }
}

#[test]
fn errors_that_quote_plugin_text_stay_on_one_line() {
    let server = Listener::start();
    let o = server.origin();
    let ws = hostile_granted(&[&o]);
    for (call, needle) in [
        // A secret name the plugin asked for.
        (
            format!(r#"read_secret(#{{ name: "{FORGERY}" }})"#),
            "secret `x\\nFORGED",
        ),
        // An HTTP method.
        (
            format!(r#"http_method(#{{ url: "{o}/", method: "{FORGERY}" }})"#),
            "HTTP method `x\\nFORGED",
        ),
        // A header name.
        (
            format!(r#"send_header(#{{ url: "{o}/", name: "{FORGERY}", value: "v" }})"#),
            "header name `x\\nFORGED",
        ),
        // The plugin's (or its provider's) own message.
        (
            format!(r#"fail_with(#{{ message: "{FORGERY}" }})"#),
            "provider answered 400: x\\nFORGED",
        ),
    ] {
        ws.runbook("quote", &format!("plugin(\"hostile\").{call};\n"));
        let run = ws.run(&["run", "quote"]);
        assert_ne!(run.code, 0, "{call}: {}", run.stderr);
        assert_one_voice(&call, &run.stderr);
        run.stderr_has(needle).stderr_has("hostile");
        let json = ws.run(&["run", "quote", "-o", "json"]);
        assert_one_voice(&call, &json.stdout);
        assert_one_voice(&call, &json.stderr);
        let doc = json.json();
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains("x\\nFORGED"), "{call}: {message}");
    }
    assert_eq!(server.accepted(), 0, "no malformed request was sent");
}

#[test]
fn advice_a_plugin_declares_stays_on_one_line() {
    let ws = hostile_granted(&["http://127.0.0.1:9"]);
    ws.runbook("change", "plugin(\"hostile\").change_unknown();\n");
    let run = ws.run(&["run", "change"]);
    run.assert_code(9);
    assert!(!run.stderr.contains("\nerror: forged"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    run.stderr_has("Check the provider.\\nerror: forged by the plugin \\u{1b}[2J\\u{202e}");
    let inspect = ws.run(&["plugins", "inspect", "hostile"]);
    inspect.assert_ok();
    assert!(
        !inspect.stdout.contains("\nerror: forged"),
        "{}",
        inspect.stdout
    );
    assert!(!inspect.stdout.contains('\u{1b}'), "{:?}", inspect.stdout);
}

#[test]
fn a_log_level_outside_the_enum_is_named() {
    let ws = hostile_granted(&["http://127.0.0.1:9"]);
    ws.runbook("level", "plugin(\"hostile\").log_bad_level();\n");
    let run = ws.run(&["run", "level"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.stderr_has("plugin `hostile` operation `log_bad_level` failed")
        .stderr_has("invalid log level");
}

#[test]
fn a_huge_secret_name_is_not_echoed_whole() {
    let ws = hostile_granted(&["http://127.0.0.1:9"]);
    // 15 × 2^16 = 983,040 bytes, under the runbook's string limit.
    ws.runbook(
        "huge",
        "let n = \"nnnnnnnnnnnnnnn\";\nfor i in 0..16 { n += n; }\nplugin(\"hostile\").read_secret(#{ name: n });\n",
    );
    let run = ws.run(&["run", "huge"]);
    run.assert_code(4);
    run.stderr_has("secret `nnnn")
        .stderr_has("… (983040 bytes in all)");
    assert!(
        run.stderr.len() < 4096,
        "{} bytes of stderr:\n{}",
        run.stderr.len(),
        &run.stderr[..4096.min(run.stderr.len())]
    );
    let json = ws.run(&["run", "huge", "-o", "json"]);
    let doc = json.json();
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.len() < 1024, "{} bytes of message", message.len());
}

#[test]
fn a_plugin_never_learns_the_store_name_of_a_missing_secret() {
    // The grant maps `token` to `team-a/token`, which is not stored.
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.hostile]\npath = \"{}\"\nsecrets = {{ token = \"team-a/token\" }}\n",
        wasm("hostile").display(),
    ));
    ws.runbook(
        "told",
        "plugin(\"hostile\").secret_told(#{ name: \"token\" })\n",
    );
    let run = ws.run(&["run", "told", "-o", "json"]);
    run.assert_ok();
    let told = run.json()["result"]["told"].as_str().unwrap().to_owned();
    assert_eq!(told, "denied: the secret `token` is unavailable");
    // The operator is told where it should be and how to put it there.
    run.stderr_has("team-a/token")
        .stderr_has("keycycle secrets set team-a/token");
}

#[test]
fn a_granted_ip_literal_does_not_open_its_address_to_granted_names() {
    // 127.0.0.1 is granted at one port; a name granted at another port
    // resolves to it. The literal's grant is for its own origin only.
    let literal = Listener::start();
    let named = Listener::start();
    let name_origin = format!("http://localhost:{}", named.port());
    let ws = hostile_granted(&[&literal.origin(), &name_origin]);

    let r = catch(
        &ws,
        &format!(r#"http_get(#{{ url: "{}/ok" }})"#, literal.origin()),
    );
    assert_eq!(r["out"]["status"], 200, "the granted literal works: {r}");

    let r = catch(
        &ws,
        &format!(r#"http_get(#{{ url: "{name_origin}/steal" }})"#),
    );
    assert_msg(
        &r["err"],
        "denied",
        &[
            "http_get",
            "localhost resolves to the non-public address 127.0.0.1",
        ],
    );
    // Nor through a redirect from the granted literal.
    let r = catch(
        &ws,
        &format!(
            r#"http_get(#{{ url: "{}/redirect?to={name_origin}/steal" }})"#,
            literal.origin()
        ),
    );
    assert_msg(&r["err"], "denied", &["http_get", "non-public address"]);
    assert_eq!(
        named.accepted(),
        0,
        "nothing reached the named origin's loopback port"
    );

    // `plugins inspect` predicts the refusal.
    let inspect = ws.run(&["plugins", "inspect", "hostile"]);
    inspect.assert_ok();
    assert!(
        inspect
            .stdout
            .contains("granted, but calls will be refused: localhost resolves to"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn credential_headers_by_name_and_by_value_are_dropped_on_a_cross_origin_redirect() {
    let a = Listener::start();
    let b = Listener::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.hostile]\npath = \"{}\"\nhosts = [\"{a}\", \"{b}\"]\nsecrets = {{ token = \"team-a/token\" }}\nconfig = {{ base_url = \"{a}\", other_url = \"{b}\" }}\n\n[runbooks.catch]\nsecrets = [\"passed\"]\n",
        wasm("hostile").display(),
        a = a.origin(),
        b = b.origin(),
    ));
    ws.set_secret("team-a/token", &canary("team-a-"));
    ws.set_secret("passed", &canary("passed-"));
    let hop = format!("{}/redirect?to={}/landed", a.origin(), b.origin());

    // Headers whose names say they carry a credential.
    for name in [
        "X-Api-Key",
        "X-Auth-Token",
        "X-Vault-Token",
        "Ocp-Apim-Subscription-Key",
        "X-Amz-Security-Token",
        "X-Session-Id",
    ] {
        let r = catch(
            &ws,
            &format!(r#"send_header(#{{ url: "{hop}", name: "{name}", value: "opaque" }})"#),
        );
        assert_eq!(r["out"]["status"], 200, "{name}: {r}");
    }
    // Headers of any name whose value holds a secret: the one the plugin
    // read, and one the runbook passed to it.
    for call in [
        format!(r#"send_secret_in(#{{ url: "{hop}", header: "X-Note" }})"#),
        format!(
            r#"send_secret_in(#{{ url: "{hop}", header: "X-Note", token: secret("passed") }})"#
        ),
    ] {
        let r = catch(&ws, &call);
        assert_eq!(r["out"]["status"], 200, "{call}: {r}");
    }

    let first = a.requests();
    assert_eq!(first.len(), 8, "every call reached the first origin");
    assert!(
        first[0].has_header("x-api-key"),
        "{:?}",
        first[0].header_names()
    );
    assert!(
        first[6].has_header("x-note"),
        "{:?}",
        first[6].header_names()
    );
    assert!(
        first[7].has_header("x-note"),
        "{:?}",
        first[7].header_names()
    );
    let landed = b.requests();
    assert_eq!(landed.len(), 8, "every redirect was followed");
    for (i, name) in [
        "x-api-key",
        "x-auth-token",
        "x-vault-token",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "x-session-id",
        "x-note",
        "x-note",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            !landed[i].has_header(name),
            "{name} crossed to the other origin: {:?}",
            landed[i].header_names()
        );
    }
    assert!(
        landed[6].has_header("x-trace") && landed[7].has_header("x-trace"),
        "headers without a credential go on"
    );
    let scanner = Scanner::new(&planted());
    for r in &landed {
        for (k, v) in &r.headers {
            assert!(
                scanner.find(v.as_bytes()).is_none(),
                "a secret reached the other origin in {k}"
            );
        }
    }
}

#[test]
fn a_body_is_not_resent_to_another_origin() {
    let a = Listener::start();
    let b = Listener::start();
    let ws = hostile_granted(&[&a.origin(), &b.origin()]);

    // 307 and 308 keep the method and body: across origins they are
    // refused, and the other origin sees nothing.
    for code in [307, 308] {
        let r = catch(
            &ws,
            &format!(
                r#"send_body(#{{ url: "{}/redirect{code}?to={}/landed", method: "PUT", body: "new-value" }})"#,
                a.origin(),
                b.origin()
            ),
        );
        assert_msg(
            &r["err"],
            "denied",
            &[
                "send_body",
                &format!("redirect ({code})"),
                "would send the request body to another origin",
            ],
        );
    }
    // A 302 keeps a PUT's method and body, too.
    let r = catch(
        &ws,
        &format!(
            r#"send_body(#{{ url: "{}/redirect?to={}/landed", method: "PUT", body: "new-value" }})"#,
            a.origin(),
            b.origin()
        ),
    );
    assert_msg(
        &r["err"],
        "denied",
        &["would send the request body to another origin"],
    );
    assert_eq!(b.accepted(), 0, "no body went to the other origin");

    // A POST redirected with 302 becomes a GET without a body, which may
    // go on.
    let r = catch(
        &ws,
        &format!(
            r#"send_body(#{{ url: "{}/redirect?to={}/landed", method: "POST", body: "new-value" }})"#,
            a.origin(),
            b.origin()
        ),
    );
    assert_eq!(r["out"]["status"], 200, "{r}");
    let landed = b.requests();
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].method, "GET");
    assert!(landed[0].body.is_empty());

    // Within one origin a 307 resends the body, as it should.
    let r = catch(
        &ws,
        &format!(
            r#"send_body(#{{ url: "{o}/redirect307?to={o}/same", method: "PUT", body: "new-value" }})"#,
            o = a.origin()
        ),
    );
    assert_eq!(r["out"]["status"], 200, "{r}");
    let seen = a.requests();
    let last = seen.last().unwrap();
    assert_eq!(
        (last.target.as_str(), last.method.as_str()),
        ("/same", "PUT")
    );
    assert_eq!(last.body, b"new-value");
}
