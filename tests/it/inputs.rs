//! Answers to a runbook's `prompt()` read from a file or an environment
//! variable are secrets, since that is how a shared runner hands secrets
//! over: the runbook gets a secret handle, the journal seals the answer, and
//! no output or file holds it. `--plain-input NAME` says such an answer is
//! ordinary text; `--secret-input NAME` makes any answer a secret.

use std::path::Path;

use crate::support::*;

/// Asks `label` with `prompt()` and `go` with `confirm()`, logs the label
/// and returns what the runbook was given.
const ASK: &str = r#"
let label = prompt("label", "Label for the change");
let proceed = confirm("go", "Go ahead?");
info(`label is ${label}`);
#{ secret: is_secret(label), label: label, proceed: proceed }
"#;

/// A workspace with no plugins and the runbook `ask`.
fn ask_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook("ask", ASK);
    ws
}

/// A file holding `text`, outside the workspace: the workspace's file
/// scans would otherwise find the canary in the answer file itself.
fn answer_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn at(file: &tempfile::NamedTempFile) -> String {
    format!("@{}", file.path().display())
}

/// Whether any file in the workspace's state folder holds `needle`, read
/// as raw bytes.
fn state_holds(ws: &Workspace, needle: &str) -> bool {
    fn walk(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle)
            }
        })
    }
    walk(&ws.path().join("state"), needle.as_bytes())
}

/// The run went through, the runbook was handed a secret for `label` and a
/// plain yes for `go`, and the text and JSON outputs show it masked. (The
/// harness has already scanned both for the planted value.)
#[track_caller]
fn assert_given_a_secret(text: &Run, json: &Run) {
    text.assert_ok().stderr_has("label is ***");
    assert!(text.stdout.contains("\"***\""), "{}", text.stdout);
    json.assert_ok();
    let result = &json.json()["result"];
    assert_eq!(result["secret"], true, "{result:#}");
    assert_eq!(result["label"], "***", "{result:#}");
    assert_eq!(
        result["proceed"], true,
        "a yes/no from a file stays a yes/no"
    );
}

/// The journal holds a sealed answer, and no file of the workspace (the
/// state database included) holds a planted value in any spelling.
#[track_caller]
fn assert_sealed_and_clean(ws: &Workspace) {
    assert!(
        state_holds(ws, "$keycycle_sealed"),
        "no sealed value in the state folder"
    );
    ws.assert_files_clean_including(&["state/state.db"]);
}

#[test]
fn a_prompt_answered_from_a_file_is_a_secret_in_every_output_and_file() {
    let ws = ask_workspace();
    let label = answer_file(&format!("{}\n", hard_canary("label-")));
    let go = answer_file("yes\n");
    let (label, go) = (format!("label={}", at(&label)), format!("go={}", at(&go)));
    let args = ["run", "ask", "-vvv", "--input", &label, "--input", &go];
    let text = ws.run(&args);
    let json = ws.run(&[&args[..], &["--output", "json"]].concat());
    assert_given_a_secret(&text, &json);
    let run_id = json.json()["run_id"].as_str().unwrap().to_owned();
    ws.run(&["show", &run_id, "--output", "json"]).assert_ok();
    ws.run(&["show", &run_id]).assert_ok();
    assert_sealed_and_clean(&ws);
}

#[test]
fn a_prompt_answered_from_an_environment_variable_is_a_secret() {
    let ws = ask_workspace();
    let value = canary("label-");
    let env = [("KC_TEST_LABEL", value.as_str()), ("KC_TEST_GO", "y")];
    let args = [
        "run",
        "ask",
        "-vvv",
        "--input",
        "label=env:KC_TEST_LABEL",
        "--input",
        "go=env:KC_TEST_GO",
    ];
    let text = ws.run_env(&args, &env);
    let json = ws.run_env(&[&args[..], &["--output", "json"]].concat(), &env);
    assert_given_a_secret(&text, &json);
    assert_sealed_and_clean(&ws);
}

#[test]
fn plain_input_gives_the_runbook_the_text_of_a_file_or_variable() {
    let ws = ask_workspace();
    // Not a canary: the runbook is meant to see it. It is journaled as it
    // is, so the state scan below finds it: the scans of the tests above
    // would find an unsealed answer.
    let value = "CHG-1042 rollout of the deploy token";
    let label = answer_file(&format!("{value}\n"));
    let run = ws.run(&[
        "run",
        "ask",
        "--input",
        &format!("label={}", at(&label)),
        "--input",
        "go=yes",
        "--plain-input",
        "label",
        "--output",
        "json",
    ]);
    run.assert_ok().stderr_has(&format!("label is {value}"));
    let result = &run.json()["result"];
    assert_eq!(result["secret"], false, "{result:#}");
    assert_eq!(result["label"], value, "{result:#}");
    assert!(
        state_holds(&ws, value),
        "the plain answer is journaled as text"
    );

    // From a variable too; short is fine for text, only a secret must be
    // long enough to be masked.
    let run = ws.run_env(
        &[
            "run",
            "ask",
            "--input",
            "label=env:KC_TEST_LABEL",
            "--input",
            "go=no",
            "--plain-input",
            "label",
            "--output",
            "json",
        ],
        &[("KC_TEST_LABEL", "ops")],
    );
    run.assert_ok();
    assert_eq!(run.json()["result"]["label"], "ops");
    assert_eq!(run.json()["result"]["secret"], false);
    assert_eq!(run.json()["result"]["proceed"], false);
}

#[test]
fn secret_input_refuses_an_answer_on_the_command_line_before_the_run() {
    let ws = ask_workspace();
    let literal = plant("chg-typed-on-argv-5d1e");
    let answer = format!("label={literal}");
    let refused = ws.run(&[
        "run",
        "ask",
        "--secret-input",
        "label",
        "--input",
        &answer,
        "--input",
        "go=yes",
    ]);
    refused
        .assert_code(3)
        .stderr_has("--input label: `label` is declared a secret with --secret-input (")
        .stderr_has("ask.rhai:2)")
        .stderr_has("readable by every user of this machine")
        .stderr_has("pass --input label=@FILE or --input label=env:VAR");
    let json = ws.run(&[
        "run",
        "ask",
        "--secret-input",
        "label",
        "--input",
        &answer,
        "--output",
        "json",
    ]);
    json.assert_code(3);
    assert_eq!(json.json()["error"]["kind"], "config");

    // The two declarations at once, and a declaration for a prompt the
    // runbook does not have, are refused as well.
    ws.run(&[
        "run",
        "ask",
        "--secret-input",
        "label",
        "--plain-input",
        "label",
    ])
    .assert_code(3)
    .stderr_has("`label` is given both --plain-input and --secret-input");
    ws.run(&["run", "ask", "--plain-input", "lable"])
        .assert_code(3)
        .stderr_has(
            "--plain-input lable: the runbook never asks for `lable`; it asks for go, label",
        );
    ws.run(&["run", "ask", "--secret-input", "go"])
        .assert_code(3)
        .stderr_has("--secret-input go: `go` is a yes/no question (confirm)");
    // None of them started a run.
    let history = ws.run(&["history", "--output", "json"]);
    history.assert_ok();
    assert_eq!(history.json(), serde_json::json!([]), "no run was recorded");

    // From a file, the declared secret is taken, and kept secret.
    let label = answer_file(&canary("declared-"));
    let run = ws.run(&[
        "run",
        "ask",
        "--secret-input",
        "label",
        "--input",
        &format!("label={}", at(&label)),
        "--input",
        "go=yes",
        "--output",
        "json",
    ]);
    run.assert_ok();
    assert_eq!(run.json()["result"]["secret"], true);
    assert_sealed_and_clean(&ws);
}

#[test]
fn a_short_answer_from_a_file_or_variable_is_refused_as_a_secret() {
    let ws = ask_workspace();
    let short = answer_file("ab\n");
    let answer = format!("label={}", at(&short));
    ws.run(&["run", "ask", "--input", &answer, "--input", "go=yes"])
        .assert_code(3)
        .stderr_has("--input label: the secret answer is 2 bytes; a secret must be at least 4")
        .stderr_has("the answer is a secret unless --plain-input label is given")
        .stderr_has("ask.rhai:2");
    ws.run_env(
        &[
            "run",
            "ask",
            "--input",
            "label=env:KC_TEST_LABEL",
            "--input",
            "go=yes",
        ],
        &[("KC_TEST_LABEL", "xyz")],
    )
    .assert_code(3)
    .stderr_has("the secret answer is 3 bytes");
    let history = ws.run(&["history", "--output", "json"]);
    assert_eq!(history.json(), serde_json::json!([]), "no run was recorded");
    // Declared plain, the same answer is fine.
    let run = ws.run(&[
        "run",
        "ask",
        "--input",
        &answer,
        "--input",
        "go=yes",
        "--plain-input",
        "label",
        "--output",
        "json",
    ]);
    run.assert_ok();
    assert_eq!(run.json()["result"]["label"], "ab");
}

#[test]
fn a_run_resumed_with_an_answer_from_a_file_keeps_it_sealed() {
    let ws = ask_workspace();
    let stopped = ws.run(&["run", "ask", "--input", "go=yes"]);
    stopped.assert_code(6);
    let run_id = ws.only_unfinished_run();
    let label = answer_file(&format!("{}\n", hard_canary("resumed-")));
    let resumed = ws.run(&[
        "resume",
        &run_id,
        "--input",
        &format!("label={}", at(&label)),
        "--input",
        "go=yes",
        "--output",
        "json",
    ]);
    resumed.assert_ok();
    assert_eq!(resumed.json()["result"]["secret"], true);
    assert_eq!(resumed.json()["result"]["label"], "***");
    ws.run(&["show", &run_id, "--output", "json"]).assert_ok();
    assert_sealed_and_clean(&ws);
}

#[test]
fn a_runbook_using_such_an_answer_as_text_is_pointed_at_plain_input() {
    let ws = Workspace::new();
    ws.config("");
    ws.runbook(
        "upper",
        "let label = prompt(\"label\", \"Label\");\nlabel.to_upper()\n",
    );
    ws.runbook(
        "joined",
        "let label = prompt(\"label\", \"Label\");\n\"change \" + label\n",
    );
    let label = answer_file(&canary("text-"));
    let answer = format!("label={}", at(&label));
    for runbook in ["upper", "joined"] {
        ws.run(&["run", runbook, "--input", &answer])
            .assert_code(5)
            .stderr_has("the answer to `label` came from a file or an environment variable")
            .stderr_has("run again with --plain-input label")
            .stderr_has(&format!("{runbook}.rhai:2"));
    }
    let plain = answer_file("chg-1042");
    let run = ws.run(&[
        "run",
        "upper",
        "--input",
        &format!("label={}", at(&plain)),
        "--plain-input",
        "label",
    ]);
    run.assert_ok();
    assert!(run.stdout.contains("CHG-1042"), "{}", run.stdout);
}
