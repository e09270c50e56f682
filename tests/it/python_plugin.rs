//! A plugin written in Python: `plugins/example-py`, built with
//! componentize-py against `wit/plugin.wit`, in the real binary. It is the
//! Rust example's equal (see `interpreted.rs`). Its runtime imports
//! `wasi:filesystem` and `wasi:sockets`, which load only with
//! `inert_wasi = true`.

use crate::interpreted::*;
use crate::support::*;

#[test]
fn without_inert_wasi_the_python_plugin_is_refused_naming_the_setting() {
    let sim = DemoSim::start();
    let ws = workspace(&sim, &python_example(), false);
    let list = ws.run(&["plugins", "list", "--output", "json"]);
    list.assert_ok();
    let row = list.json()[0].clone();
    assert_eq!(row["status"], "refused", "{row}");
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("it imports wasi:") && error.contains("`inert_wasi = true`"),
        "{error}"
    );
    ws.run(&["run", "demo-rotate"]).assert_code(4);
    assert!(sim.state.requests().is_empty(), "nothing was sent");
}

#[test]
fn the_python_plugin_describes_itself_as_the_rust_one_does() {
    describes_as_the_rust_example(&python_example(), true);
}

#[test]
fn the_demo_rotation_runs_on_the_python_plugin_as_on_the_rust_one() {
    rotates_as_the_rust_example(&python_example(), true);
}

#[test]
fn a_lost_create_is_found_again_by_the_python_find_token() {
    recovers_a_lost_create_as_the_rust_example(&python_example(), true);
}
