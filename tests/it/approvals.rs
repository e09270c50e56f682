//! Approval gates through the real binary: a run stops at `approval(...)`
//! with its locks, `keycycle approvals` lists the request, the requester
//! cannot approve it, another person can, and `keycycle resume` goes on;
//! a rejection ends the run and releases its locks; a dry run goes on as if
//! approved, saying so; and no `try` can walk past a gate.

use crate::support::*;

/// Creates a token at the demo service only after the gate is approved.
const GATED: &str = r#"
lock("demo:gated");
let demo = plugin("example");
let me = demo.whoami();
let decision = approval(#{
    id: "stage-prod",
    title: "Create a token in stage and prod",
    summary: `token for ${me.user}`,
    environments: ["stage", "prod"],
});
info(`approved by ${decision.by}`);
let fresh = demo.create_token(#{ name: "gated" });
#{ approved_by: decision.by, created: fresh.get("id") }
"#;

fn gated(sim: &DemoSim, extra_config: &str) -> Workspace {
    let (ws, _) = demo_workspace(sim, "gated");
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("{config}\n{extra_config}"),
    )
    .unwrap();
    ws.runbook("gated", GATED);
    ws
}

fn as_user(ws: &Workspace, user: &str, args: &[&str]) -> Run {
    ws.run_env(args, &[("KEYCYCLE_DEBUG_USER", user)])
}

fn tokens(sim: &DemoSim) -> usize {
    sim.state.tokens().len()
}

#[test]
fn a_gate_waits_for_another_person_and_the_run_goes_on_once_approved() {
    let sim = DemoSim::start();
    let ws = gated(&sim, "");
    let before = tokens(&sim);

    let stopped = as_user(&ws, "ops", &["run", "gated", "-o", "json"]);
    stopped
        .assert_code(10)
        .stderr_has("waits for approval of change request")
        .stderr_has("Create a token in stage and prod (in stage, prod)")
        .stderr_has("anyone but ops");
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    let request = format!("{run_id}:stage-prod");
    assert_eq!(
        tokens(&sim),
        before,
        "nothing was created before the approval"
    );
    let runs = ws.unfinished_runs();
    assert_eq!(runs[0]["state"], "waiting-for-approval", "{runs:#?}");
    assert_eq!(ws.held_locks(), ["demo:gated"], "the run keeps its lock");

    let listed = ws.run(&["approvals", "-o", "json"]);
    listed.assert_ok();
    let list = listed.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], request.as_str());
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(
        list[0]["environments"],
        serde_json::json!(["stage", "prod"])
    );
    assert_eq!(list[0]["requested_by"], "ops");

    // Resuming before a decision stops at the same gate, sending nothing.
    as_user(&ws, "ops", &["resume", &run_id]).assert_code(10);
    assert_eq!(tokens(&sim), before);

    // Two people: the requester may not approve.
    as_user(&ws, "ops", &["approve", &request])
        .assert_code(4)
        .stderr_has("another person must decide it")
        .stderr_has("nothing was recorded");
    as_user(
        &ws,
        "alice",
        &["approve", &request, "--comment", "CHG0042 approved in CAB"],
    )
    .assert_ok()
    .stderr_has(&format!("change request {request} approved by alice"));
    as_user(&ws, "bob", &["reject", &request, "--reason", "too late"])
        .assert_code(3)
        .stderr_has("already approved by alice");

    let done = as_user(&ws, "ops", &["resume", &run_id, "-o", "json"]);
    done.assert_ok();
    assert_eq!(done.json()["result"]["approved_by"], "alice");
    assert_eq!(tokens(&sim), before + 1, "the gated change was made once");
    assert!(ws.held_locks().is_empty(), "the lock is released");
    // The decision is in the run's audit trail.
    let show = ws.run(&["show", &run_id, "-o", "json"]);
    show.assert_ok();
    let events = show.json()["events"].to_string();
    assert!(
        events.contains("approved by alice@") && events.contains("CHG0042 approved in CAB"),
        "{events}"
    );
}

#[test]
fn a_rejected_gate_ends_the_run_and_releases_its_locks() {
    let sim = DemoSim::start();
    let ws = gated(&sim, "");
    let before = tokens(&sim);
    let stopped = as_user(&ws, "ops", &["run", "gated", "-o", "json"]);
    stopped.assert_code(10);
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    let request = format!("{run_id}:stage-prod");
    as_user(
        &ws,
        "carol",
        &["reject", &request, "--reason", "change freeze"],
    )
    .assert_ok()
    .stderr_has("ended as rejected and released its locks");
    assert!(ws.held_locks().is_empty(), "the lock is released at once");
    let resumed = as_user(&ws, "ops", &["resume", &run_id]);
    resumed
        .assert_code(11)
        .stderr_has("rejected by carol: change freeze");
    assert_eq!(tokens(&sim), before, "nothing was sent");
    assert!(ws.approvals_waiting().is_empty());
}

#[test]
fn configured_approvers_are_required_per_runbook_and_per_environment() {
    let sim = DemoSim::start();
    let ws = gated(
        &sim,
        "[approvals]\napprovers = [\"nobody-by-default\"]\n[approvals.environments.prod]\napprovers = [\"carol\", \"dave\"]\n",
    );
    // The runbook section's list replaces the default.
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        config.replace(
            "[runbooks.gated]\n",
            "[runbooks.gated]\napprovers = [\"alice\", \"carol\"]\n",
        ),
    )
    .unwrap();
    let stopped = as_user(&ws, "ops", &["run", "gated", "-o", "json"]);
    stopped
        .assert_code(10)
        .stderr_has("one of alice, carol; and one of carol, dave");
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    let request = format!("{run_id}:stage-prod");
    // alice may approve the runbook but not prod; dave prod but not the runbook.
    for user in ["alice", "dave", "mallory"] {
        as_user(&ws, user, &["approve", &request])
            .assert_code(4)
            .stderr_has("is not one of the approvers this request needs");
    }
    as_user(&ws, "carol", &["approve", &request]).assert_ok();
    as_user(&ws, "ops", &["resume", &run_id]).assert_ok();
}

#[test]
fn a_dry_run_goes_on_as_if_approved_and_says_so() {
    let sim = DemoSim::start();
    let ws = gated(&sim, "");
    let before = tokens(&sim);
    let dry = as_user(&ws, "ops", &["run", "gated", "--dry-run", "-o", "json"]);
    dry.assert_ok()
        .stderr_has("dry run: would ask for approval `stage-prod`: Create a token in stage and prod (in stage, prod); going on as if approved");
    assert_eq!(dry.json()["result"]["approved_by"], "(dry run)");
    assert_eq!(tokens(&sim), before);
    assert!(
        ws.approvals_waiting().is_empty(),
        "a dry run records no request"
    );
}

#[test]
fn no_try_walks_past_a_gate() {
    let sim = DemoSim::start();
    let ws = gated(&sim, "");
    ws.runbook(
        "sneaky",
        "lock(\"demo:sneaky\");\nlet ok = false;\ntry { approval(#{ id: \"g\", title: \"t\" }); ok = true; } catch (e) { ok = true; }\nif ok { plugin(\"example\").create_token(#{ name: \"sneaky\" }); }\n",
    );
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("{config}\n[runbooks.sneaky]\nsecrets = [\"demo/admin\"]\n"),
    )
    .unwrap();
    let before = tokens(&sim);
    as_user(&ws, "ops", &["run", "sneaky"]).assert_code(10);
    assert_eq!(tokens(&sim), before, "the catch did not run past the gate");
    // A malformed gate is a runbook error that names the field.
    ws.runbook(
        "badgate",
        "approval(#{ id: \"has space\", title: \"t\" });\n",
    );
    as_user(&ws, "ops", &["run", "badgate"])
        .assert_code(5)
        .stderr_has("`id` must be 1 to 64 letters, digits");
}

/// A change board behind `GET /changes/{number}`: answers the JSON the
/// test sets, and counts the questions.
struct ChangeBoard {
    origin: String,
    answer: std::sync::Arc<std::sync::Mutex<String>>,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ChangeBoard {
    fn start(first: &str) -> ChangeBoard {
        use std::io::{Read, Write};
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", socket.local_addr().unwrap());
        let answer = std::sync::Arc::new(std::sync::Mutex::new(first.to_owned()));
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, n) = (answer.clone(), asked.clone());
        // The thread outlives the test; it only ever blocks in accept.
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = a.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        ChangeBoard {
            origin,
            answer,
            asked,
        }
    }

    fn set(&self, body: &str) {
        *self.answer.lock().unwrap() = body.to_owned();
    }
}

fn polled(sim: &DemoSim, board: &ChangeBoard, wait_secs: u64, deadline_secs: u64) -> Workspace {
    let ws = gated(
        sim,
        &format!(
            "[plugins.change-board]\npath = \"{}\"\nhosts = [\"{o}\"]\nconfig = {{ base_url = \"{o}\" }}\n",
            wasm("change_board").display(),
            o = board.origin
        ),
    );
    ws.runbook(
        "polled",
        &format!(
            "lock(\"demo:polled\");\nlet board = plugin(\"change-board\");\nlet d = approval(#{{ id: \"chg\", title: \"Rotate in prod\", environments: [\"prod\"], poll: #{{ plugin: board, operation: \"change_state\", input: #{{ number: \"CHG0042\" }}, every_secs: 1, wait_secs: {wait_secs}, deadline_secs: {deadline_secs} }} }});\nplugin(\"example\").create_token(#{{ name: \"polled\" }});\n#{{ by: d.by, comment: d.comment }}\n"
        ),
    );
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    std::fs::write(
        ws.path().join("keycycle.toml"),
        format!("{config}\n[runbooks.polled]\nsecrets = [\"demo/admin\"]\n"),
    )
    .unwrap();
    ws
}

#[test]
fn a_change_board_decides_a_gate_it_is_asked_about() {
    let sim = DemoSim::start();
    let board = ChangeBoard::start(r#"{"state":"assess"}"#);
    let ws = polled(&sim, &board, 0, 3600);
    let before = tokens(&sim);
    let stopped = ws.run(&["run", "polled", "-o", "json"]);
    stopped
        .assert_code(10)
        .stderr_has("change-board.change_state says change request")
        .stderr_has("is assess");
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    assert_eq!(tokens(&sim), before);
    board.set(r#"{"state":"approved","by":"cab","comment":"CAB of 30 November"}"#);
    let done = ws.run(&["resume", &run_id, "-o", "json"]);
    done.assert_ok();
    assert_eq!(
        done.json()["result"]["by"],
        "cab (through change-board.change_state)"
    );
    assert_eq!(done.json()["result"]["comment"], "CAB of 30 November");
    assert_eq!(tokens(&sim), before + 1);
    // Decided once: a later question would change nothing.
    let asked = board.asked.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(asked, 2, "asked once per attempt");
}

#[test]
fn a_change_board_rejection_or_its_silence_past_the_deadline_ends_the_run() {
    let sim = DemoSim::start();
    let board =
        ChangeBoard::start(r#"{"state":"rejected","by":"cab","comment":"not in a freeze"}"#);
    let ws = polled(&sim, &board, 0, 3600);
    let before = tokens(&sim);
    ws.run(&["run", "polled"])
        .assert_code(11)
        .stderr_has("rejected by cab (through change-board.change_state): not in a freeze");
    assert!(ws.held_locks().is_empty(), "the lock is released");

    assert_eq!(tokens(&sim), before, "nothing was sent");

    let silent = ChangeBoard::start(r#"{"state":"scheduled"}"#);
    let ws = polled(&sim, &silent, 0, 1);
    let before = tokens(&sim);
    let stopped = ws.run(&["run", "polled", "-o", "json"]);
    stopped.assert_code(10);
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    ws.run(&["resume", &run_id]).assert_code(11).stderr_has(
        "rejected by the deadline: change-board.change_state gave no decision within 1 s",
    );
    assert_eq!(tokens(&sim), before, "nothing was sent");
}

#[test]
fn a_run_may_wait_at_the_gate_for_the_change_board() {
    let sim = DemoSim::start();
    let board = std::sync::Arc::new(ChangeBoard::start(r#"{"state":"assess"}"#));
    let ws = polled(&sim, &board, 20, 3600);
    let flip = {
        let board = board.clone();
        std::thread::spawn(move || {
            // Approve once the run has asked at least twice.
            while board.asked.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            board.set(r#"{"state":"approved"}"#);
        })
    };
    let done = ws.run(&["run", "polled", "-o", "json"]);
    flip.join().unwrap();
    done.assert_ok();
    assert_eq!(done.json()["result"]["by"], "change-board.change_state");
}

/// Who keycycle acts for comes from the operating system: setting `$USER`
/// or `$LOGNAME` to someone else neither changes the name in the audit
/// trail nor lets the requester approve their own change.
#[test]
fn the_user_is_the_operating_systems_not_dollar_user() {
    let sim = DemoSim::start();
    let ws = gated(&sim, "");
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let spoof = |name: &'static str| [("USER", name), ("LOGNAME", name)];
    let stopped = ws.run_env(&["run", "gated", "-o", "json"], &spoof("mallory"));
    stopped.assert_code(10);
    let run_id = stopped.json()["run_id"].as_str().unwrap().to_owned();
    let listed = ws.run(&["approvals", "-o", "json"]).json();
    assert_eq!(listed[0]["requested_by"], me.as_str(), "not mallory");
    // The same account claiming to be someone else is still the requester.
    ws.run_env(
        &["approve", &format!("{run_id}:stage-prod")],
        &spoof("alice"),
    )
    .assert_code(4)
    .stderr_has("another person must decide it");
    let show = ws.run(&["show", &run_id, "-o", "json"]).json();
    assert_eq!(show["user"], me.as_str(), "{show}");
}
