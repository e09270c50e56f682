//! The inventory and `keycycle check`: expiries read through the real
//! GitLab plugin from the GitLab simulator, recorded ones and ones entered
//! by hand, judged against their thresholds, recorded, and printed as a
//! table, JSON and Prometheus metrics, with an exit code a schedule can
//! alert on.

use keycycle_sim::TokenSeed;

use crate::support::*;

/// A workspace whose inventory has a GitLab token expiring in
/// `gitlab_days`, a token entered by hand expiring in `manual_days`, a
/// Signon token whose expiry is recorded at rotation (never rotated yet),
/// and one whose plugin read fails.
fn inventory(sim: &GitLabSim, gitlab_days: i64, manual_days: i64) -> Workspace {
    let ws = gitlab_workspace(sim);
    let expires = sim.state.today() + time::Duration::days(gitlab_days);
    let bot = sim
        .state
        .add_token(
            TokenSeed::personal(sim.ops, "ci-bot")
                .value(&canary("glpat-"))
                .scopes(&["read_api"])
                .expires_at(expires),
        )
        .unwrap();
    let manual = time::OffsetDateTime::now_utc().date() + time::Duration::days(manual_days);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            r#"{config}
[credentials.gitlab-ci-bot]
runbook = "gitlab-personal-token"
params = {{ token_id = "{id}" }}
expiry = {{ from = "plugin", plugin = "gitlab", operation = "get_pat", input = {{ id = {id} }}, field = "expires_at" }}

[credentials.vendor-key]
runbook = "gitlab-personal-token"
provider = "vendor"
expiry = {{ from = "manual", date = "{manual}" }}

[credentials.signon-publisher]
runbook = "signon-api-token"
provider = "signon"
expiry = {{ from = "rotation", lifetime_days = 730 }}

[credentials.gitlab-gone]
runbook = "gitlab-personal-token"
expiry = {{ from = "plugin", plugin = "gitlab", operation = "get_pat", input = {{ id = 999999 }}, field = "expires_at" }}
"#,
            id = bot.id,
        ),
    )
    .unwrap();
    ws
}

fn by_id(report: &serde_json::Value, id: &str) -> serde_json::Value {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))
        .clone()
}

#[test]
fn check_reads_expiries_judges_them_and_exits_critical() {
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 10, 200);
    let run = ws.run(&["check", "--output", "json"]);
    run.assert_code(12)
        .stderr_has("1 credential(s) critical: rotate them now");
    let report = run.json();
    let bot = by_id(&report, "gitlab-ci-bot");
    assert_eq!(bot["state"], "critical", "{bot}");
    // The date is when it stops, at 00:00 UTC: 9 whole days and some.
    assert_eq!(bot["days_left"], 9, "{bot}");
    assert_eq!(bot["provider"], "gitlab");
    let vendor = by_id(&report, "vendor-key");
    assert_eq!(vendor["state"], "ok", "{vendor}");
    assert!(
        (199..=200).contains(&vendor["days_left"].as_i64().unwrap()),
        "{vendor}"
    );
    assert_eq!(by_id(&report, "signon-publisher")["state"], "unknown");
    let gone = by_id(&report, "gitlab-gone");
    assert_eq!(gone["state"], "error", "{gone}");
    assert!(
        gone["reason"]
            .as_str()
            .unwrap()
            .contains("401 Unauthorized"),
        "the provider's refusal is the reason: {gone}"
    );

    // Out of danger, the check passes; an unreadable expiry is exit 5.
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 100, 40);
    let run = ws.run(&["check", "gitlab-ci-bot", "vendor-key", "--output", "json"]);
    run.assert_ok();
    let report = run.json();
    assert_eq!(report.as_array().unwrap().len(), 2);
    assert_eq!(by_id(&report, "gitlab-ci-bot")["state"], "ok");
    assert_eq!(by_id(&report, "vendor-key")["state"], "warning");
    ws.run(&["check", "gitlab-gone"])
        .assert_code(5)
        .stderr_has("could not be read");
    ws.run(&["check", "nope"])
        .assert_code(3)
        .stderr_has("no credential `nope` in the inventory");
}

#[test]
fn check_writes_metrics_for_the_textfile_collector_and_records_what_it_found() {
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 30, 200);
    let prom = ws.path().join("keycycle.prom");
    let run = ws.run(&[
        "check",
        "gitlab-ci-bot",
        "vendor-key",
        "--prometheus",
        prom.to_str().unwrap(),
    ]);
    run.assert_ok();
    // The table names each credential with its state.
    assert!(run.stdout.starts_with("CREDENTIAL"), "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("gitlab-ci-bot"))
        .unwrap();
    assert!(line.contains("warning") && line.contains(" 29 "), "{line}");

    let text = std::fs::read_to_string(&prom).unwrap();
    let labels = r#"credential="gitlab-ci-bot",provider="gitlab",team="""#;
    assert!(
        text.contains(&format!(
            "keycycle_credential_status{{{labels},state=\"warning\"}} 1"
        )),
        "{text}"
    );
    let expiry = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "keycycle_credential_expiry_timestamp_seconds{{{labels}}}"
            ))
        })
        .unwrap_or_else(|| panic!("{text}"));
    let secs: i64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    let expected = (sim.state.today() + time::Duration::days(30))
        .midnight()
        .assume_utc()
        .unix_timestamp();
    assert_eq!(secs, expected);
    assert!(!ws.path().join(".keycycle.prom.tmp").exists());

    // The same metrics on standard output, and nothing else there.
    let run = ws.run(&["check", "vendor-key", "--prometheus", "-"]);
    run.assert_ok();
    assert!(run.stdout.starts_with("# HELP"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("keycycle_credential_status{credential=\"vendor-key\",provider=\"vendor\",team=\"\",state=\"ok\"} 1"));
    assert!(!run.stdout.contains("CREDENTIAL"));

    // Prometheus's own parser reads the file whole, with the types and
    // values the table showed.
    let families = parse_prometheus(&text);
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
    };
    let sample = |family: &serde_json::Value, labels: &[(&str, &str)]| -> f64 {
        family["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .unwrap_or_else(|| panic!("no sample {labels:?} in {family}"))["value"]
            .as_f64()
            .unwrap()
    };
    let expiry_family = family("keycycle_credential_expiry_timestamp_seconds");
    assert_eq!(expiry_family["type"], "gauge");
    assert_eq!(
        sample(expiry_family, &[("credential", "gitlab-ci-bot")]),
        expected as f64
    );
    let status = family("keycycle_credential_status");
    assert_eq!(
        sample(
            status,
            &[("credential", "gitlab-ci-bot"), ("state", "warning")]
        ),
        1.0
    );
    assert_eq!(
        sample(status, &[("credential", "gitlab-ci-bot"), ("state", "ok")]),
        0.0
    );
    assert_eq!(
        sample(status, &[("credential", "vendor-key"), ("state", "ok")]),
        1.0
    );
    let checked = family("keycycle_check_timestamp_seconds");
    assert!(sample(checked, &[]) > 1.7e9);
}

/// Parses metrics with `tests/clients/prometheus_parse.py`, which uses
/// prometheus_client's parser (installed by `cargo xtask setup`; missing,
/// the test fails rather than skips).
pub fn parse_prometheus(text: &str) -> Vec<serde_json::Value> {
    let mut child = std::process::Command::new("python3")
        .arg(repo_root().join("tests/clients/prometheus_parse.py"))
        .env("PYTHONPATH", repo_root().join("target/python-clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    feed(&mut child, text);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics (run `cargo xtask setup` if it is missing):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two of ops's own tokens, one expiring in 10 days and one in 200, in an
/// inventory that rotates them with `gitlab-personal-token` and follows
/// each new token's id; and one whose rotation must fail.
fn fleet(sim: &GitLabSim) -> (Workspace, u64, u64) {
    let ws = gitlab_workspace(sim);
    let seed = |name: &str, days: i64| {
        sim.state
            .add_token(
                TokenSeed::personal(sim.ops, name)
                    .value(&canary("glpat-"))
                    .scopes(&["read_api"])
                    .expires_at(sim.state.today() + time::Duration::days(days)),
            )
            .unwrap()
            .id
    };
    let (soon, later) = (seed("bot-soon", 10), seed("bot-later", 200));
    let credential = |id: &str, token: u64| {
        format!(
            r#"
[credentials.{id}]
runbook = "gitlab-personal-token"
params = {{ token_id = "{token}", expires_in_days = "90" }}
follow = {{ token_id = "new_id" }}
expiry = {{ from = "plugin", plugin = "gitlab", operation = "get_pat", input = {{ id = "${{token_id}}" }}, field = "expires_at" }}
"#
        )
    };
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let broken = format!(
        "\n[credentials.broken]\nrunbook = \"gitlab-personal-token\"\nparams = {{ token_id = \"999999\" }}\n\
         expiry = {{ from = \"manual\", date = \"{}\" }}\n",
        time::OffsetDateTime::now_utc().date() + time::Duration::days(3)
    );
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "{config}{}{}{broken}",
            credential("soon", soon),
            credential("later", later)
        ),
    )
    .unwrap();
    (ws, soon, later)
}

#[test]
fn rotate_due_rotates_what_is_due_each_in_its_own_run_and_follows_the_new_token() {
    let sim = GitLabSim::start();
    let (ws, soon, later) = fleet(&sim);

    // The plan first: nothing changes.
    let plan = ws.run(&["rotate", "--due", "--dry-run", "--output", "json"]);
    plan.assert_code(5);
    let planned = plan.json();
    let outcomes: Vec<(&str, &str)> = planned
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [("broken", "runbook-failed"), ("soon", "dry-run")]
    );
    assert!(sim.changes().is_empty(), "{:?}", sim.changes());

    let run = ws.run(&["rotate", "--due", "--output", "json"]);
    run.assert_code(5)
        .stderr_has("1 of 2 rotation(s) did not succeed");
    let summary = run.json();
    let rotated = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "soon")
        .unwrap()
        .clone();
    assert_eq!(rotated["outcome"], "succeeded", "{summary}");
    let run_id = rotated["run_id"].as_str().unwrap().to_owned();
    let broken = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "broken")
        .unwrap()
        .clone();
    assert!(
        broken["error"].as_str().unwrap().contains("401"),
        "the failure stays with its credential, with its cause: {summary}"
    );
    // The due token was rotated, the other left alone.
    let snap = sim.state.snapshot();
    assert!(snap.token(soon).unwrap().revoked, "bot-soon was rotated");
    assert!(!snap.token(later).unwrap().revoked, "bot-later was not due");

    // The next check reads the new token (its id followed the rotation):
    // 90 days left, and the run that rotated it.
    let check = ws.run(&["check", "soon", "later", "--output", "json"]);
    check.assert_ok();
    let report = check.json();
    let soon_now = by_id(&report, "soon");
    assert_eq!(soon_now["state"], "ok", "{soon_now}");
    assert!(
        (89..=90).contains(&soon_now["days_left"].as_i64().unwrap()),
        "{soon_now}"
    );
    assert_eq!(soon_now["last_run_id"], run_id.as_str());
    assert_eq!(soon_now["last_run_state"], "succeeded");
    // The run is an ordinary run in the audit history.
    ws.run(&["show", &run_id]).assert_ok();

    // Nothing is due any more but the broken one.
    let again = ws.run(&["rotate", "--due", "later", "soon", "--output", "json"]);
    again.assert_ok();
    assert_eq!(again.json(), serde_json::json!([]));
}

#[test]
fn rotate_needs_to_be_told_what() {
    let sim = GitLabSim::start();
    let (ws, _, _) = fleet(&sim);
    ws.run(&["rotate"])
        .assert_code(3)
        .stderr_has("say what to rotate: credential ids, --team TEAM, or --due");
    ws.run(&["rotate", "nope"])
        .assert_code(3)
        .stderr_has("no credential `nope` in the inventory");
}

#[test]
fn a_batch_killed_mid_rotation_is_finished_by_resume_all() {
    // Where the rotation is in the journal: learnt from a rotation that
    // runs to its end, on a simulator of its own.
    let probe = GitLabSim::start();
    let (pws, _, _) = fleet(&probe);
    let done = pws.run(&["rotate", "later", "--output", "json"]);
    done.assert_ok();
    let probe_run = done.json()[0]["run_id"].as_str().unwrap().to_owned();
    let shown = pws.run(&["show", &probe_run, "--output", "json"]).json();
    let seq = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "gitlab.rotate_pat")
        .unwrap_or_else(|| panic!("{shown}"))["seq"]
        .as_u64()
        .unwrap();

    // The batch dies just after GitLab answered the rotation of its first
    // credential: the new token exists, the run has not finished.
    let sim = GitLabSim::start();
    let (ws, soon, later) = fleet(&sim);
    ws.run_aborting(
        &["rotate", "soon", "later", "--concurrency", "1"],
        &format!("{seq}:result"),
    );
    // Which credential went first is the scheduler's choice: exactly one
    // was rotated, the other never started.
    let snap = sim.state.snapshot();
    let (first, second) = match (
        snap.token(later).unwrap().revoked,
        snap.token(soon).unwrap().revoked,
    ) {
        (true, false) => ("later", "soon"),
        (false, true) => ("soon", "later"),
        other => panic!("exactly one rotation happened before the kill: {other:?}"),
    };
    let rotations = || {
        sim.state
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/rotate"))
            .count()
    };
    assert_eq!(rotations(), 1);

    let resumed = ws.run(&["resume", "--all", "--output", "json"]);
    resumed.assert_ok();
    let report = resumed.json();
    assert_eq!(report.as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report[0]["outcome"], "succeeded", "{report}");
    assert_eq!(rotations(), 1, "the rotation was not sent twice");
    // The credential's record knows its run ended, and follows the new token.
    let check = ws.run(&["check", first, "--output", "json"]).json();
    assert_eq!(check[0]["last_run_state"], "succeeded", "{check}");
    assert_eq!(check[0]["last_run_id"], report[0]["run_id"]);
    assert_eq!(check[0]["state"], "ok", "{check}");
    // Nothing is left to resume; the second credential is for the next batch.
    let again = ws.run(&["resume", "--all", "--output", "json"]);
    again.assert_ok();
    assert_eq!(again.json(), serde_json::json!([]));
    ws.run(&["rotate", second]).assert_ok();
    assert_eq!(rotations(), 2);
}

/// `GET path` over plain HTTP/1.1; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn the_exporter_serves_the_checks_metrics_and_refreshes_them() {
    use std::io::BufRead;
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 30, 200);
    let mut child = ws
        .command(&["exporter", "--listen", "127.0.0.1:0", "--interval", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut seen = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("serving http://").nth(1) {
            addr = Some(rest.split('/').next().unwrap().to_owned());
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the exporter did not say where it serves:\n{seen}")
    });
    let first = http_get(&addr, "/metrics");
    assert!(
        first.contains(
            "keycycle_credential_status{credential=\"gitlab-ci-bot\",provider=\"gitlab\",team=\"\",state=\"warning\"} 1"
        ),
        "{first}"
    );
    // What Prometheus scrapes, it can parse.
    let families = parse_prometheus(&first);
    assert!(
        families
            .iter()
            .any(|f| f["name"] == "keycycle_credential_status" && f["type"] == "gauge"),
        "{families:?}"
    );
    let stamp = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("keycycle_check_timestamp_seconds "))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // A scrape does not check again; the interval does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refreshed = loop {
        let now = http_get(&addr, "/metrics");
        if stamp(&now) > stamp(&first) {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(refreshed.contains("keycycle_credential_expiry_timestamp_seconds"));
    let _ = child.kill();
    let _ = child.wait();
    // Each check was recorded like `keycycle check`'s.
    let check = ws.run(&["check", "vendor-key", "--output", "json"]).json();
    assert_eq!(check[0]["state"], "ok");
}

#[test]
fn a_429_met_by_one_rotation_holds_back_the_next_one_on_that_plugin_instance() {
    let sim = DemoSim::start();
    let (ws, _) = demo_workspace(&sim, "mint");
    ws.runbook(
        "mint",
        r#"let t = plugin("example").create_token(#{ name: param("name") }); #{ new_id: t.id }"#,
    );
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!(
            "{config}\n[credentials.a]\nrunbook = \"mint\"\nparams = {{ name = \"a\" }}\n\
             \n[credentials.b]\nrunbook = \"mint\"\nparams = {{ name = \"b\" }}\n"
        ),
    )
    .unwrap();
    // The provider limits the first rotation's one change, with
    // Retry-After: 2. A change is not sent again, so that run fails at once.
    sim.state
        .fail(keycycle_sim::FailRule::new("POST", "/api/tokens", 429).retry_after(2));
    // One at a time: the second rotation starts only once the first has
    // failed, so it can only wait because the limit is shared.
    let run = ws.run(&["rotate", "a", "b", "--concurrency", "1", "--output", "json"]);
    run.assert_code(5);
    let summary = run.json();
    let outcomes: Vec<&str> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"runbook-failed") && outcomes.contains(&"succeeded"),
        "{summary}"
    );
    assert!(
        summary.to_string().contains("429 Too Many Requests"),
        "{summary}"
    );
    // Each log line of a batch says whose run it is.
    let logged: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("example.create_token"))
        .collect();
    assert!(
        logged.len() >= 2
            && logged
                .iter()
                .all(|l| l.contains("credential{id=a}") || l.contains("credential{id=b}")),
        "{}",
        run.stderr
    );
    let posts: Vec<keycycle_sim::RequestRecord> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let gap = posts[1].at_ms - posts[0].at_ms;
    assert!(
        gap >= 1_900,
        "the second rotation's change came {gap} ms after the first met the limit"
    );
}

#[test]
fn discover_lists_the_tokens_nobody_rotates() {
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 30, 200);
    let trigger = sim.seed_trigger("deploy from Zendesk");
    let project_token = sim.seed_project_token();
    let args = ["discover", "gitlab", "--project", "acme/api"];
    let run = ws.run(&[&args[..], &["--output", "json"]].concat());
    run.assert_ok();
    let found = run.json();
    let find = |kind: &str, id: u64| {
        found
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind && f["id"] == serde_json::json!(id.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {id} in {found}"))
            .clone()
    };
    // The plugin's own token and the project's token and trigger are
    // in no inventory entry.
    let own = find("personal_access_token", sim.ops_token.id);
    assert_eq!(own["covered_by"], serde_json::json!([]), "{own}");
    let t = find("project_access_token", project_token.id);
    assert_eq!(t["owner"], "acme/api");
    assert_eq!(t["runbook"], "gitlab-project-token");
    assert_eq!(t["params"]["token_id"], project_token.id.to_string());
    let trig = find("pipeline_trigger", trigger.id);
    assert_eq!(trig["expires_at"], serde_json::Value::Null);
    assert_eq!(trig["params"]["trigger_id"], trigger.id.to_string());
    // The inventory's ci-bot token is covered, by its entry.
    let bots: Vec<&serde_json::Value> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "ci-bot")
        .collect();
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0]["covered_by"], serde_json::json!(["gitlab-ci-bot"]));
    assert!(bots[0]["expires_at"].is_string());

    // The table shows only what nothing covers.
    let table = ws.run(&args);
    table.assert_ok();
    assert!(
        table.stdout.contains("pipeline_trigger"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("ci-bot"), "{}", table.stdout);
    // `--toml` writes sections that, added to the inventory, cover them.
    let toml = ws.run(&[&args[..], &["--toml"]].concat());
    toml.assert_ok();
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("{config}\n{}", toml.stdout),
    )
    .unwrap();
    let after = ws.run(&[&args[..], &["--output", "json"]].concat());
    after.assert_ok();
    let left: Vec<serde_json::Value> = after
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["covered_by"] == serde_json::json!([]))
        .cloned()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Values never appear; the run output is checked for planted ones too.
    assert!(!toml.stdout.contains("glpat-") && !toml.stdout.contains("glptt-"));
}

#[test]
fn zendesk_api_tokens_are_judged_by_idle_deactivation_and_the_cut_off() {
    let zd = crate::zendesk::ZendeskSim::start();
    let today = time::OffsetDateTime::now_utc().date();
    let seed = |what: &str, used_days_ago: i64| {
        let mut seed = keycycle_sim::ApiTokenSeed::new(zd.admin_user, what);
        seed.last_used = Some(today - time::Duration::days(used_days_ago));
        zd.state.add_api_token(seed).unwrap().id
    };
    let (idle, busy) = (seed("idle integration", 20), seed("busy integration", 0));
    let ws = Workspace::new();
    let credential = |name: &str, id: u64| {
        format!(
            "\n[credentials.{name}]\nrunbook = \"zendesk-api-token-migrate\"\nprovider = \"zendesk\"\n\
             expiry = {{ from = \"plugin\", plugin = \"zendesk\", operation = \"list_api_tokens\", \
             last_used_field = \"api_tokens[id={id}].last_used\", idle_days = 30, hard_end = \"2027-04-30\" }}\n"
        )
    };
    ws.config(&format!(
        "runbooks_dir = \"{}\"\n[plugins.zendesk]\npath = \"{}\"\nhosts = [\"{o}\"]\n\
         secrets = {{ token = \"zendesk/admin\" }}\nconfig = {{ base_url = \"{o}\" }}\n{}{}",
        repo_root().join("runbooks").display(),
        wasm("zendesk").display(),
        credential("zd-idle", idle),
        credential("zd-busy", busy),
        o = zd.origin
    ));
    ws.set_secret("zendesk/admin", &zd.admin_token);
    let run = ws.run(&["check", "--output", "json"]);
    run.assert_code(12);
    let report = run.json();
    let idle = by_id(&report, "zd-idle");
    assert_eq!(idle["state"], "critical", "{idle}");
    assert!(
        (9..=10).contains(&idle["days_left"].as_i64().unwrap()),
        "deactivated 30 days after its last use, 20 days ago: {idle}"
    );
    assert!(
        idle["reason"]
            .as_str()
            .unwrap()
            .contains("deactivation after 30 days unused"),
        "{idle}"
    );
    // In use: its end is the cut-off, and the idle date is still shown.
    let busy = by_id(&report, "zd-busy");
    assert_eq!(busy["expires_at"], "2027-04-30", "{busy}");
    assert!(
        busy["reason"]
            .as_str()
            .unwrap()
            .contains("the end of every token of its kind"),
        "{busy}"
    );
    assert_eq!(
        busy["idle_until"],
        (today + time::Duration::days(30)).to_string()
    );
}

#[test]
fn a_credentials_file_is_read_only_by_the_commands_that_use_it() {
    let sim = GitLabSim::start();
    let ws = inventory(&sim, 100, 200);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    // A top-level key, so before the first table.
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("credentials_file = \"team-inventory.toml\"\n{config}"),
    )
    .unwrap();
    let manual = time::OffsetDateTime::now_utc().date() + time::Duration::days(300);
    let team_file = ws.path().join("team-inventory.toml");
    std::fs::write(
        &team_file,
        format!(
            "[credentials.team-key]\nrunbook = \"gitlab-personal-token\"\nprovider = \"vendor\"\n\
             expiry = {{ from = \"manual\", date = \"{manual}\" }}\n"
        ),
    )
    .unwrap();
    let run = ws.run(&["check", "team-key", "vendor-key", "--output", "json"]);
    run.assert_ok();
    let report = run.json();
    assert_eq!(by_id(&report, "team-key")["state"], "ok");
    assert_eq!(by_id(&report, "vendor-key")["state"], "ok");
    ws.run(&["doctor"]).stdout_has("inventory: 5 credentials");

    // A broken file stops the inventory's commands, saying where, and
    // `doctor`; the others never read it.
    std::fs::write(&team_file, "[credentials.team-key]\nrunbok = \"x\"\n").unwrap();
    ws.run(&["check", "vendor-key"])
        .assert_code(3)
        .stderr_has("team-inventory.toml")
        .stderr_has("runbok");
    ws.run(&["rotate", "--due", "--dry-run"])
        .assert_code(3)
        .stderr_has("team-inventory.toml");
    let doctor = ws.run(&["doctor"]);
    doctor.assert_code(3).stdout_has("team-inventory.toml");
    ws.run(&["runs"]).assert_ok();

    // An id in both places names two credentials: refused.
    std::fs::write(
        &team_file,
        "[credentials.vendor-key]\nrunbook = \"gitlab-personal-token\"\n\
         expiry = { from = \"manual\", date = \"2030-01-01\" }\n",
    )
    .unwrap();
    ws.run(&["check"])
        .assert_code(3)
        .stderr_has("[credentials.vendor-key] is in both this file and");
}
