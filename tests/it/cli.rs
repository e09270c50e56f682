//! The command line as an operator meets it: closed pipes, exit codes (the
//! table in `--help` and in the docs, and a real trigger for each row),
//! `-q`, colour, `-o json` errors, completions and man pages, where the
//! config and state are found, and what read-only commands leave behind.

use std::io::Read;
use std::process::Stdio;

use crate::support::*;

fn rotation_workspace(sim: &DemoSim) -> Workspace {
    let (ws, _) = demo_workspace(sim, "demo-rotate");
    let text = std::fs::read_to_string(repo_root().join("runbooks/demo-rotate.rhai")).unwrap();
    ws.runbook("demo-rotate", &text);
    ws
}

/// Runs keycycle with its stdout closed before it writes anything, as
/// `keycycle … | true` does; returns (exit code, stderr).
fn run_with_closed_stdout(ws: &Workspace, args: &[&str]) -> (i32, String) {
    let mut child = ws
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_clean("stderr", &stderr);
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_closed_stdout_does_not_turn_a_finished_rotation_into_a_crash() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    let old = sim.state.tokens().len();
    let (code, stderr) = run_with_closed_stdout(&ws, &["run", "demo-rotate", "-o", "json"]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    // The rotation really happened: one more token at the provider.
    assert_eq!(sim.state.tokens().len(), old + 1);

    let (code, stderr) = run_with_closed_stdout(&ws, &["plugins", "inspect", "example"]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `| Exit | Kind | Meaning |` rows of `docs/operations.md`.
fn documented_codes() -> Vec<(u8, String)> {
    let text = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let section = text
        .split("## Exit codes")
        .nth(1)
        .expect("docs/operations.md has an Exit codes section");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let code = cells.first()?.trim().parse::<u8>().ok()?;
            let kind = cells.get(1)?.trim().trim_matches(['`', '-']).to_owned();
            Some((code, kind))
        })
        .collect()
}

/// The table `keycycle --help` prints, from the code's own table.
fn help_codes() -> Vec<(u8, String)> {
    let ws = Workspace::new();
    let help = ws.run(&["--help"]);
    help.assert_ok();
    let section = help
        .stdout
        .split("Exit codes:")
        .nth(1)
        .expect("--help lists exit codes");
    section
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let code = words.next()?.parse::<u8>().ok()?;
            let kind = words.next()?.trim_matches('-').to_owned();
            Some((code, kind))
        })
        .collect()
}

#[test]
fn the_documented_exit_codes_are_the_ones_in_the_code() {
    let help = help_codes();
    assert!(help.len() >= 10, "{help:?}");
    assert_eq!(documented_codes(), help);
}

#[test]
fn every_exit_code_has_a_real_trigger() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    // 0
    ws.run(&["--version"]).assert_code(0);
    // 2: usage
    ws.run(&["run", "--no-such-flag"]).assert_code(2);
    // 3: config
    ws.run(&["--config", "missing.toml", "runs"]).assert_code(3);
    // 4: denied (a secret the runbook was not granted)
    ws.runbook("peek", "let s = secret(\"other/thing\"); s");
    ws.run(&["run", "peek"]).assert_code(4);
    // 5: the runbook failed
    ws.runbook("boom", "fail(\"on purpose\")");
    ws.run(&["run", "boom"]).assert_code(5);
    // 6: an answer is missing; the run keeps its lock
    ws.runbook(
        "ask",
        "lock(\"demo:ask\"); let x = prompt(\"label\", \"Label\"); x",
    );
    ws.run(&["run", "ask"]).assert_code(6);
    // 8: locked by that run
    ws.run(&["run", "ask", "--input", "label=x"]).assert_code(8);
    // 7: does not compile
    ws.runbook("broken", "let = ;");
    ws.run(&["run", "broken"]).assert_code(7);
    // 9 is the crash tests' (a lost `/rotate` response, `crash.rs`); 10
    // and 11 are the approval gates' (`approvals.rs`).
    // 1: a bug; debug builds can be made to panic on purpose, and the
    // panic is an internal error, not Rust's 101.
    let out = ws
        .command(&["runs"])
        .env("KEYCYCLE_DEBUG_PANIC", "1")
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("This is a bug"));
}

#[test]
fn a_syntax_error_with_json_output_prints_a_json_report() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("broken", "let a = 1;\nlet = ;\n");
    let run = ws.run(&["run", "broken", "-o", "json"]);
    run.assert_code(7);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["kind"], "runbook-invalid");
    assert_eq!(report["error"]["exit_code"], 7);
    assert_eq!(report["error"]["line"], 2, "{report}");
    assert!(
        report.get("run_id").is_none(),
        "no run was recorded: {report}"
    );
}

#[test]
fn every_failing_command_prints_a_json_error_with_output_json() {
    let ws = Workspace::new();
    let run = ws.run(&["--config", "missing.toml", "runs", "-o", "json"]);
    run.assert_code(3);
    let report = run.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["kind"], "config");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.toml"),
        "{report}"
    );
}

#[test]
fn quiet_silences_the_summary_lines() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    let loud = ws.run(&["run", "demo-rotate"]);
    loud.assert_ok().stderr_has("runbook demo-rotate finished");
    let quiet = ws.run(&["-q", "run", "demo-rotate"]);
    quiet.assert_ok();
    assert_eq!(quiet.stderr, "", "-q prints nothing when all went well");
    let store = ws.run_with_stdin(&["-q", "secrets", "set", "demo/extra"], Some("x-value"));
    store.assert_ok();
    assert_eq!(store.stderr, "");
}

#[test]
fn log_colour_follows_color_no_color_and_term() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hello\");");
    let stderr_of = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", "hello"];
        args.extend_from_slice(extra);
        let mut cmd = ws.command(&args);
        cmd.env_remove("NO_COLOR").env("TERM", "xterm");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.timed_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(stderr_of(&["--color", "always"], &[]).contains("\x1b["));
    assert!(!stderr_of(&["--color", "never"], &[]).contains("\x1b["));
    // Not a terminal: auto means no colour.
    assert!(!stderr_of(&[], &[]).contains("\x1b["));
    assert!(stderr_of(&["--color", "always"], &[]).contains("hello"));
}

#[test]
fn json_log_lines_for_ci() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hello from the runbook\");");
    let run = ws.run(&["--log-format", "json", "run", "hello"]);
    run.assert_ok();
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("hello from the runbook"))
        .expect("the info line is logged");
    let event: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["message"], "hello from the runbook");
}

#[test]
fn completions_and_man_pages() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = ws.run(&["completions", shell]);
        run.assert_ok();
        assert!(run.stdout.contains("keycycle"), "{shell}");
        assert!(
            run.stdout.contains("resume"),
            "{shell} completes subcommands"
        );
    }
    let man = ws.path().join("man");
    ws.run(&["man", man.to_str().unwrap()]).assert_ok();
    let page = std::fs::read_to_string(man.join("keycycle.1")).unwrap();
    assert!(page.contains(".TH keycycle"), "{page}");
    assert!(page.contains("needs\\-attention") || page.contains("needs-attention"));
    assert!(man.join("keycycle-run.1").is_file());
    assert!(man.join("keycycle-secrets-set.1").is_file());
}

#[test]
fn the_config_is_found_from_a_subfolder() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hi\");");
    let sub = ws.path().join("runbooks");
    let out = ws
        .command(&["-v", "run", "hello"])
        .current_dir(&sub)
        .timed_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "using config {}",
            ws.path().join("keycycle.toml").display()
        )),
        "{stderr}"
    );
    // The run was recorded in the workspace's state, not the user's.
    assert!(ws.path().join("state/state.db").is_file());
    assert!(!ws.home().join(".local/state").exists());
}

#[test]
fn read_only_commands_create_no_state() {
    let ws = Workspace::new();
    ws.config("");
    for args in [
        &["runs"][..],
        &["pending"],
        &["history"],
        &["secrets", "list"],
    ] {
        ws.run(args).assert_ok();
    }
    assert!(
        !ws.path().join("state").exists(),
        "a read created the state folder"
    );
    assert!(!ws.home().join(".local").exists());
}

#[test]
fn a_new_state_folder_is_announced() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hi\");");
    ws.run(&["run", "hello"])
        .assert_ok()
        .stderr_has("creating a new state folder");
    let again = ws.run(&["run", "hello"]);
    again.assert_ok();
    assert!(!again.stderr.contains("creating a new state folder"));
}

#[test]
fn a_folder_given_as_config_says_so() {
    let ws = Workspace::new();
    ws.config("");
    let run = ws.run(&["--config", ws.path().to_str().unwrap(), "runs"]);
    run.assert_code(3).stderr_has("is a folder");
    run.stderr_has("keycycle.toml instead");
}

#[test]
fn a_bad_input_source_is_refused_before_the_run_starts() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    ws.runbook(
        "ask",
        "lock(\"demo:ask\"); let x = prompt(\"label\", \"Label\"); x",
    );
    let run = ws.run(&["run", "ask", "--input", "label=@missing-file"]);
    run.assert_code(3).stderr_has("missing-file");
    let run = ws.run(&["run", "ask", "--input", "label=env:KEYCYCLE_TEST_UNSET_VAR"]);
    run.assert_code(3).stderr_has("KEYCYCLE_TEST_UNSET_VAR");
    // No run was recorded and nothing is locked: a good answer works now.
    let runs = ws.run(&["runs", "-o", "json"]);
    runs.assert_ok();
    assert_eq!(runs.json(), serde_json::json!([]));
    ws.run(&["run", "ask", "--input", "label=fine"]).assert_ok();
}

#[test]
fn a_wrong_master_key_is_a_configuration_error_before_the_run() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    let snapshot = |sim: &DemoSim| -> Vec<(u64, bool)> {
        sim.state
            .tokens()
            .iter()
            .map(|t| (t.id, t.active))
            .collect()
    };
    let before = snapshot(&sim);
    let run = ws
        .command(&["run", "demo-rotate"])
        .env(
            "KEYCYCLE_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .timed_output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    assert_eq!(snapshot(&sim), before, "nothing was created or revoked");
    let runs = ws.run(&["history", "-o", "json"]);
    runs.assert_ok();
    assert_eq!(runs.json(), serde_json::json!([]), "no run was recorded");
}

#[test]
fn answers_that_do_not_fit_their_prompt_are_refused_before_the_run() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    ws.runbook(
        "asks",
        "lock(\"demo:asks\");\nlet code = prompt_secret(\"code\", \"Approval code\");\nif confirm(\"go\", \"Go?\") { info(\"going\"); }\n",
    );
    let secret_on_argv = ws.run(&[
        "run",
        "asks",
        "--input",
        "code=hunter2-literal",
        "--input",
        "go=yes",
    ]);
    secret_on_argv
        .assert_code(3)
        .stderr_has("`code` is a secret (")
        .stderr_has("asks.rhai:2")
        .stderr_has("--input code=@FILE");
    let maybe = ws.run(&["run", "asks", "--input", "go=maybe"]);
    maybe
        .assert_code(3)
        .stderr_has("--input go: answer `maybe` is not yes or no");
    let typo = ws.run(&["run", "asks", "--input", "og=yes"]);
    typo.assert_code(3)
        .stderr_has("the runbook never asks for `og`")
        .stderr_has("code, go");
    // None of them started a run or took the lock.
    let runs = ws.run(&["history", "-o", "json"]);
    runs.assert_ok();
    assert_eq!(runs.json(), serde_json::json!([]), "no run was recorded");
    let code = ws.file("code.txt", "a-good-code\n");
    ws.run(&[
        "run",
        "asks",
        "--input",
        &format!("code=@{}", code.display()),
        "--input",
        "go=yes",
    ])
    .assert_ok();
}

#[test]
fn a_missing_plugin_file_is_a_configuration_error_before_the_run() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    let config = std::fs::read_to_string(ws.path().join("keycycle.toml")).unwrap();
    let broken = config.replace(
        &wasm("example").display().to_string(),
        "/nonexistent/example.wasm",
    );
    assert_ne!(config, broken);
    std::fs::write(ws.path().join("keycycle.toml"), broken).unwrap();
    let run = ws.run(&["run", "demo-rotate"]);
    run.assert_code(3)
        .stderr_has("the runbook uses plugin `example`, which did not load");
    let history = ws.run(&["history", "-o", "json"]);
    history.assert_ok();
    assert_eq!(history.json(), serde_json::json!([]), "no run was recorded");
}

#[test]
fn commands_that_act_report_in_json() {
    let ws = Workspace::new();
    ws.config("");
    let set = ws.run_with_stdin(
        &["secrets", "set", "team/token", "-o", "json"],
        Some("a-value-1234"),
    );
    set.assert_ok();
    assert_eq!(
        set.json(),
        serde_json::json!({"ok": true, "stored": "team/token"})
    );
    assert_eq!(set.stderr, "", "the JSON replaces the summary line");
    let rm = ws.run(&["secrets", "rm", "team/token", "-o", "json"]);
    rm.assert_ok();
    assert_eq!(
        rm.json(),
        serde_json::json!({"ok": true, "removed": "team/token"})
    );

    // A run stopped for an answer keeps its lock: unlock and abandon it.
    ws.runbook(
        "ask",
        "lock(\"demo:one\");\nlock(\"demo:two\");\nprompt(\"label\", \"Label\")\n",
    );
    ws.run(&["run", "ask"]).assert_code(6);
    let run_id = ws.only_unfinished_run();
    let unlock = ws.run(&["unlock", "demo:one", "--yes", "-o", "json"]);
    unlock.assert_ok();
    assert_eq!(
        unlock.json(),
        serde_json::json!({"ok": true, "released": "demo:one", "run_id": run_id})
    );
    let abandon = ws.run(&["abandon", &run_id, "--yes", "-o", "json"]);
    abandon.assert_ok();
    assert_eq!(
        abandon.json(),
        serde_json::json!({"ok": true, "abandoned": run_id, "state": "failed", "released_locks": ["demo:two"]})
    );
}

#[test]
fn the_docs_list_every_command() {
    let ws = Workspace::new();
    let help = ws.run(&["--help"]);
    help.assert_ok();
    let commands: Vec<&str> = help
        .stdout
        .split("Commands:")
        .nth(1)
        .expect("--help lists commands")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    let docs = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).unwrap();
    let table = docs.split("## Commands").nth(1).unwrap();
    for command in commands {
        assert!(
            table.contains(&format!("`keycycle {command}")),
            "docs/runbooks.md's command table lacks `keycycle {command}`"
        );
    }
}

/// Runs `keycycle ARGS` on a pseudo-terminal (util-linux `script`), so that
/// `--color auto` sees a terminal; returns what the terminal showed.
fn on_a_terminal(ws: &Workspace, args: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.current_dir(ws.path())
        .args(["-qec", &format!("{} {args}", bin().display()), "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .env("HOME", ws.home())
        .env("KEYCYCLE_MASTER_KEY", ws.master_key());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.timed_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("hello"), "{shown}");
    shown
}

#[test]
fn log_colour_on_a_terminal_honours_no_color_and_dumb_terminals() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hello\");");
    assert!(
        on_a_terminal(&ws, "run hello", &[]).contains("\x1b["),
        "auto colours a terminal"
    );
    assert!(!on_a_terminal(&ws, "run hello", &[("NO_COLOR", "1")]).contains("\x1b["));
    assert!(!on_a_terminal(&ws, "run hello", &[("TERM", "dumb")]).contains("\x1b["));
    assert!(!on_a_terminal(&ws, "--color never run hello", &[]).contains("\x1b["));
}

#[test]
fn a_simulator_on_a_busy_port_is_a_usage_mistake() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let ws = Workspace::new();
    ws.run(&["sim", "demo", "--port", &port])
        .assert_code(3)
        .stderr_has("--port 0 for a free one");
}

#[test]
fn an_empty_state_database_is_not_taken_silently() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("hello", "info(\"hi\");");
    std::fs::create_dir_all(ws.path().join("state")).unwrap();
    std::fs::write(ws.path().join("state/state.db"), "").unwrap();
    ws.run(&["run", "hello"])
        .assert_ok()
        .stderr_has("state.db is empty (0 bytes)")
        .stderr_has("no earlier runs, locks or deferred actions are in it");
}

#[test]
fn quiet_and_keycycle_log_show_and_hide_what_they_promise() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook(
        "levels",
        "info(\"an-info-line\");\nwarn(\"a-warn-line\");\nif params.get(\"fail\") == \"yes\" { fail(\"a-fail-line\"); }\n\"the-result\"\n",
    );
    let run = |flags: &[&str], log: Option<&str>, fail: bool| {
        let mut args = flags.to_vec();
        args.extend_from_slice(&["run", "levels"]);
        if fail {
            args.extend_from_slice(&["--set", "fail=yes"]);
        }
        let mut cmd = ws.command(&args);
        if let Some(filter) = log {
            cmd.env("KEYCYCLE_LOG", filter);
        }
        let out = cmd.timed_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_clean("stderr", &stderr);
        assert_eq!(
            out.status.code(),
            Some(if fail { 5 } else { 0 }),
            "{args:?}: {stderr}"
        );
        // The result is stdout's, whatever the logging.
        if !fail {
            assert_eq!(stdout.trim(), "\"the-result\"", "{args:?}");
        }
        stderr
    };
    let shows = |stderr: &str, what: &[(&str, bool)], case: &str| {
        for (needle, shown) in what {
            assert_eq!(
                stderr.contains(needle),
                *shown,
                "{case}: {needle:?} should be {}:\n{stderr}",
                if *shown { "shown" } else { "hidden" }
            );
        }
    };
    let info = "an-info-line";
    let warn = "a-warn-line";
    let summary = "runbook levels finished";
    let error = "error: ";
    let debug = "using config";

    shows(
        &run(&[], None, false),
        &[(info, true), (warn, true), (summary, true), (debug, false)],
        "default",
    );
    shows(
        &run(&["-q"], None, false),
        &[(info, false), (warn, true), (summary, false)],
        "-q",
    );
    shows(
        &run(&["-q"], None, true),
        &[
            (info, false),
            (warn, true),
            (error, true),
            ("a-fail-line", true),
        ],
        "-q, failing",
    );
    assert_eq!(run(&["-qq"], None, false), "", "-qq on success");
    shows(
        &run(&["-qq"], None, true),
        &[(info, false), (warn, false), ("a-fail-line", true)],
        "-qq, failing",
    );
    // KEYCYCLE_LOG replaces the levels -v and -q set; the summary and the
    // final error are not log lines and follow -q alone.
    shows(
        &run(&[], Some("error"), false),
        &[(info, false), (warn, false), (summary, true)],
        "KEYCYCLE_LOG=error",
    );
    shows(
        &run(&["-qq"], Some("keycycle=debug,runbook=info"), false),
        &[(debug, true), (info, true), (summary, false)],
        "KEYCYCLE_LOG=keycycle=debug,runbook=info with -qq",
    );
}

/// A failing command, its exit code and error kind, where in which runbook
/// it failed (name, line, column), and part of its message.
type JsonErrorCase<'a> = (
    &'a [&'a str],
    i64,
    &'a str,
    Option<(&'a str, i64, i64)>,
    &'a str,
);

#[test]
fn json_errors_carry_ok_kind_exit_code_message_and_the_runbook_position() {
    let sim = DemoSim::start();
    let ws = rotation_workspace(&sim);
    let runbook = |name: &str| ws.path().join("runbooks").join(format!("{name}.rhai"));
    ws.runbook("invalid", "let a = 1;\nlet b = a +;\n");
    ws.runbook("fails", "info(\"x\");\n  fail(\"on purpose\");\n");
    ws.runbook("peek", "let s = secret(\"other/thing\");\n");
    ws.runbook(
        "ask",
        "lock(\"demo:ask\");\nlet x = prompt(\"label\", \"Label\");\n",
    );
    let cases: [JsonErrorCase; 6] = [
        (
            &["--config", "missing.toml", "runs"],
            3,
            "config",
            None,
            "missing.toml",
        ),
        (
            &["run", "invalid"],
            7,
            "runbook-invalid",
            Some(("invalid", 2, 12)),
            "Unexpected ';'",
        ),
        (
            &["run", "fails"],
            5,
            "runbook-failed",
            Some(("fails", 2, 3)),
            "on purpose",
        ),
        (
            &["run", "peek"],
            4,
            "denied",
            Some(("peek", 1, 9)),
            "not granted secret `other/thing`",
        ),
        (
            &["run", "ask"],
            6,
            "input-required",
            Some(("ask", 2, 9)),
            "missing input `label`",
        ),
        (
            &["run", "ask", "--input", "label=x"],
            8,
            "locked",
            Some(("ask", 1, 1)),
            "demo:ask is locked by run ",
        ),
    ];
    for (args, code, kind, at, part) in cases {
        let mut with_json = args.to_vec();
        with_json.extend_from_slice(&["-o", "json"]);
        let run = ws.run(&with_json);
        run.assert_code(code as i32);
        let doc = run.json();
        assert_eq!(doc["ok"], false, "{args:?}: {doc}");
        let error = &doc["error"];
        assert_eq!(error["kind"], kind, "{args:?}: {doc}");
        assert_eq!(error["exit_code"], code, "{args:?}: {doc}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(part), "{args:?}: {message}");
        // The same message is on stderr (for a kept run, as the cause under
        // the resume advice).
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        if kind == "input-required" {
            let run_id = doc["run_id"].as_str().unwrap();
            assert_eq!(
                error["resume_command"],
                format!("keycycle resume {run_id} --input label=VALUE"),
                "{doc}"
            );
        }
        match at {
            Some((name, line, column)) => {
                let file = runbook(name);
                assert_eq!(error["file"], file.to_str().unwrap(), "{args:?}: {doc}");
                assert_eq!(error["line"], line, "{args:?}: {doc}");
                assert_eq!(error["column"], column, "{args:?}: {doc}");
                assert!(
                    message.starts_with(&format!("{}:{line}:{column}: ", file.display())),
                    "{args:?}: {message}"
                );
            }
            None => {
                for field in ["file", "line", "column"] {
                    assert!(error.get(field).is_none(), "{args:?}: {field} in {doc}");
                }
            }
        }
    }
}

#[test]
fn escape_sequences_from_a_provider_never_reach_the_terminal() {
    let sim = DemoSim::start();
    let (ws, _) = demo_workspace(&sim, "who");
    // A provider's error text with a colour change, a title change and a
    // text-direction override in it.
    sim.state.fail(keycycle_sim::FailRule {
        message: Some("bad \u{1b}[31mRED\u{1b}]0;owned\u{7} \u{202e}txet".into()),
        // Once for the text run, once for the JSON one.
        ..keycycle_sim::FailRule::new("GET", "/api/whoami", 400).times(2)
    });
    ws.runbook(
        "who",
        "let r = plugin(\"example\").whoami();\ninfo(`user ${r.user}`);\n",
    );
    let run = ws.run(&["run", "who"]);
    run.assert_code(5);
    for (what, text) in [("stderr", &run.stderr), ("stdout", &run.stdout)] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
            "{what} carries a raw control character: {text:?}"
        );
    }
    run.stderr_has("bad \\u{1b}[31mRED\\u{1b}]0;owned\\u{7} \\u{202e}txet");
    // JSON output stays a valid document, with the text escaped as the
    // host escaped it when the plugin reported it.
    let json = ws.run(&["run", "who", "-o", "json"]);
    json.assert_code(5);
    assert!(!json.stdout.contains('\u{1b}') && !json.stdout.contains('\u{202e}'));
    assert!(
        json.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad \\u{1b}[31mRED"),
        "{}",
        json.stdout
    );
}
