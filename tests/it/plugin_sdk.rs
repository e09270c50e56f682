//! The plugin SDK outside this repository: a team's plugin crate in a
//! temporary folder, depending on `keycycle-plugin-sdk` by path as it would
//! by version or git, with nothing of this workspace around it, builds
//! with plain `cargo build --target wasm32-wasip2` and runs in the real
//! binary against the demo service.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A plugin as the guide (docs/plugins.md) has a team write it: the
/// prelude only, `serde_json` through it included.
const PLUGIN: &str = r#"
use keycycle_plugin_sdk::prelude::*;

struct Team;

impl Plugin for Team {
    fn describe() -> Description {
        Description::new("team-tokens", "0.1.0")
            .host("{config.base_url}")
            .secret("token")
            .config("base_url")
            .operation(Operation::new("whoami", "Who the token belongs to"))
    }

    fn invoke(ctx: &Context, operation: &str, _input: Value) -> Result<Value, Error> {
        match operation {
            "whoami" => {
                let url = format!("{}/api/whoami", ctx.config("base_url")?);
                let me: serde_json::Map<String, Value> = http::Request::get(url)
                    .bearer(&secret("token")?)
                    .send()?
                    .json()?;
                Ok(json!({ "user": me["user"], "built": "outside" }))
            }
            other => Err(Error::unknown_operation(other)),
        }
    }
}

keycycle_plugin_sdk::export_plugin!(Team);
"#;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_plugin_outside_the_repository_builds_against_the_sdk_and_runs() {
    let team = tempfile::Builder::new()
        .prefix("team-plugin-")
        .tempdir()
        .unwrap();
    let root = repo_root();
    assert!(
        !team.path().starts_with(&root),
        "the plugin must be built outside the repository"
    );
    write(
        team.path(),
        "Cargo.toml",
        &format!(
            "[package]\nname = \"team-tokens\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nkeycycle-plugin-sdk = {{ path = \"{}\" }}\n\n\
             [profile.release]\nopt-level = \"s\"\nstrip = true\n",
            root.join("plugins/sdk").display()
        ),
    );
    write(team.path(), "src/lib.rs", PLUGIN);
    // The versions this repository's plugins were built with, which the
    // machine has already: the build needs no registry.
    std::fs::copy(
        root.join("plugins/Cargo.lock"),
        team.path().join("Cargo.lock"),
    )
    .unwrap();

    // A target folder of its own under this repository's, kept between
    // runs so that only the first one compiles the SDK's dependencies.
    let target = root.join("target/standalone-plugin");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(team.path())
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the team's plugin did not build outside the repository:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/team_tokens.wasm");
    assert!(wasm.is_file(), "{} was not built", wasm.display());

    let sim = DemoSim::start();
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.team]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"demo/admin\" }}\n\
         config = {{ base_url = \"{o}\" }}\n\n[runbooks.who]\nsecrets = [\"demo/admin\"]\n",
        wasm.display(),
        o = sim.origin()
    ));
    let (_, admin) = sim.seed_admin();
    ws.set_secret("demo/admin", &admin);
    ws.runbook("who", "plugin(\"team\").whoami()");
    let run = ws.run(&["run", "who", "--output", "json"]);
    run.assert_ok();
    let result = &run.json()["result"];
    assert_eq!(result["built"], "outside", "{}", run.stdout);
    assert!(
        result["user"].as_str().is_some_and(|u| !u.is_empty()),
        "the plugin reached the demo service: {}",
        run.stdout
    );
    let inspect = ws.run(&["plugins", "inspect", "team", "--output", "json"]);
    inspect.assert_ok();
    assert_eq!(
        inspect.json()["plugin"],
        "team-tokens",
        "{}",
        inspect.stdout
    );
    assert_eq!(inspect.json()["operations"][0]["name"], "whoami");
    ws.assert_files_clean();
}
