//! `cargo xtask setup`: installs what the build and the tests need beyond
//! rustup and cargo. Each need is a [`Requirement`] that knows how to check
//! itself, so a second run installs nothing and new kinds (Python packages,
//! test servers) join the list without changing the flow.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Something the build or the tests need installed.
enum Requirement {
    /// A Rust compilation target of the active toolchain.
    RustTarget(&'static str),
}

/// Everything `setup` installs, in order.
const REQUIREMENTS: &[Requirement] = &[
    // Plugins are WebAssembly components built for WASI preview 2.
    Requirement::RustTarget("wasm32-wasip2"),
];

impl Requirement {
    fn describe(&self) -> String {
        match self {
            Requirement::RustTarget(target) => format!("the Rust target {target}"),
        }
    }

    fn is_met(&self) -> Result<bool> {
        match self {
            Requirement::RustTarget(target) => {
                Ok(sysroot()?.join("lib/rustlib").join(target).is_dir())
            }
        }
    }

    fn install(&self) -> Result<()> {
        match self {
            Requirement::RustTarget(target) => {
                let mut rustup = Command::new("rustup");
                rustup
                    .current_dir(cmd::repo_root())
                    .args(["target", "add", target]);
                cmd::run(&mut rustup).with_context(|| {
                    format!(
                        "cannot install the {target} target with rustup; with a toolchain not managed by \
                         rustup, install its {target} standard library by hand"
                    )
                })
            }
        }
    }
}

/// The active toolchain's sysroot, as `rustc` in the repository sees it
/// (a `rust-toolchain` file there would choose the toolchain).
fn sysroot() -> Result<PathBuf> {
    let output = Command::new("rustc")
        .current_dir(cmd::repo_root())
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run `rustc --print sysroot`; is the Rust toolchain installed?")?;
    if !output.status.success() {
        bail!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

pub fn run() -> Result<()> {
    cmd::say("Checking what the build and the tests need installed");
    for requirement in REQUIREMENTS {
        let what = requirement.describe();
        if requirement.is_met()? {
            cmd::note(&format!("{what}: already installed"));
            continue;
        }
        cmd::note(&format!("{what}: installing"));
        requirement.install()?;
        if !requirement.is_met()? {
            bail!("{what} is still missing after installing it; check the output above");
        }
    }
    Ok(())
}
