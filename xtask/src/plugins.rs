//! `cargo xtask plugins`: builds the two plugin workspaces (the real plugins
//! and the hostile test plugins) for wasm32-wasip2 into the repository's
//! target folder, where the host's tests and the demo look for them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The plugin workspaces, relative to the repository root. They are not
/// members of the host workspace: nothing in them runs on the host.
pub const WORKSPACES: &[(&str, &str)] = &[
    ("plugins/Cargo.toml", "the plugin SDK and the real plugins"),
    (
        "tests/plugins/Cargo.toml",
        "the hostile plugins the sandbox tests run",
    ),
];

pub const TARGET: &str = "wasm32-wasip2";

/// Where a plugin's component lands, e.g. `example` →
/// `target/wasm32-wasip2/release/example.wasm`.
pub fn wasm_path(name: &str) -> PathBuf {
    cmd::repo_root()
        .join("target")
        .join(TARGET)
        .join("release")
        .join(format!("{name}.wasm"))
}

/// Builds every plugin workspace (release) and returns the components built.
pub fn build() -> Result<Vec<PathBuf>> {
    cmd::say("Building the plugins (WebAssembly components, release)");
    let mut produced = Vec::new();
    for (manifest, what) in WORKSPACES {
        cmd::note(&format!("{manifest}: {what}"));
        produced.extend(build_workspace(manifest)?);
    }
    if produced.is_empty() {
        bail!("the plugin builds produced no .wasm file; check that the plugin crates are cdylibs");
    }
    for path in &produced {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cargo reported {} but it is not there", path.display()))?
            .len();
        let shown = path.strip_prefix(cmd::repo_root()).unwrap_or(path);
        cmd::note(&format!(
            "{:>8.1} KiB  {}",
            size as f64 / 1024.0,
            shown.display()
        ));
    }
    Ok(produced)
}

/// Builds one workspace, reading cargo's JSON messages to learn exactly
/// which components it produced (rather than trusting what happens to be
/// in the target folder).
fn build_workspace(manifest: &str) -> Result<Vec<PathBuf>> {
    let mut command = cmd::cargo();
    command
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--manifest-path",
            manifest,
        ])
        .args([
            "--target-dir",
            "target",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    cmd::note(&format!("$ {}", cmd::shown(&command)));
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::shown(&command)))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo's output was not captured")?;
    let mut produced = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's build messages")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        produced.extend(
            files
                .filter_map(|f| f.as_str())
                .filter(|f| f.ends_with(".wasm"))
                .map(PathBuf::from),
        );
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if !status.success() {
        bail!(
            "building {manifest} failed ({status}); if the {TARGET} target is missing, run `cargo xtask setup`"
        );
    }
    Ok(produced)
}
