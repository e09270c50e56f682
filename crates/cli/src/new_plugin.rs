//! `keycycle plugins new NAME --lang rust|python|js`: writes a plugin
//! project that builds and passes its own smoke test as it is: a
//! description, one read, one change with its recovery pair, a stand-in
//! provider on 127.0.0.1 with a test that runs the plugin through keycycle,
//! and a README. The templates live in `crates/cli/templates`; the SDK, the
//! contract and the Python and JavaScript helpers are the repository's own
//! files, embedded, so a project matches the keycycle that made it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::exit::Code;

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// One file of a new project.
struct File {
    path: String,
    text: String,
    executable: bool,
}

const CONTRACT: &str = include_str!("../../../wit/plugin.wit");

/// The SDK as `plugins/sdk` has it, for a Rust project's `sdk/`.
const SDK: &[(&str, &str)] = &[
    (
        "sdk/Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "sdk/README.md",
        include_str!("../../../plugins/sdk/README.md"),
    ),
    (
        "sdk/wit/plugin.wit",
        include_str!("../../../plugins/sdk/wit/plugin.wit"),
    ),
    (
        "sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/context.rs",
        include_str!("../../../plugins/sdk/src/context.rs"),
    ),
    (
        "sdk/src/description.rs",
        include_str!("../../../plugins/sdk/src/description.rs"),
    ),
    (
        "sdk/src/error.rs",
        include_str!("../../../plugins/sdk/src/error.rs"),
    ),
    (
        "sdk/src/http.rs",
        include_str!("../../../plugins/sdk/src/http.rs"),
    ),
    (
        "sdk/src/input.rs",
        include_str!("../../../plugins/sdk/src/input.rs"),
    ),
    (
        "sdk/src/log.rs",
        include_str!("../../../plugins/sdk/src/log.rs"),
    ),
];

/// The JavaScript example, whose first part is the helpers every plugin
/// copies.
const JS_EXAMPLE: &str = include_str!("../../../plugins/example-js/app.js");
const JS_PLUGIN_MARK: &str = "// ---- the plugin";

/// A plugin name: lowercase letters, digits and `-`, starting with a letter
/// (it is also the cargo package and the `[plugins.NAME]` section).
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "`{}` cannot name a plugin: use lowercase letters, digits and `-`, starting with a \
             letter (for example `acme-tokens`)",
            keycycle_host::one_line(name)
        ))
    }
}

fn files(name: &str, lang: Lang) -> Vec<File> {
    let crate_name = name.replace('-', "_");
    let (language, build_needs, inert) = match lang {
        Lang::Rust => (
            "Rust",
            "It needs Rust 1.95 or newer with the `wasm32-wasip2` target \
             (`rustup target add wasm32-wasip2`). The SDK is in `sdk/`, as this keycycle ships it.",
            "",
        ),
        Lang::Python => (
            "Python",
            "It needs componentize-py (`pip install componentize-py==0.25.1`). \
             `keycycle_plugin.py` is the Python counterpart of the Rust SDK; \
             `wit/plugin.wit` is the contract this keycycle speaks.",
            // CPython imports the filesystem and socket interfaces.
            "inert_wasi = true\n",
        ),
        Lang::Js => (
            "JavaScript",
            "It needs Node.js 18 or newer and componentize-js (`npm install`). \
             The first part of `app.js` is the helpers every plugin copies; \
             `wit/plugin.wit` is the contract this keycycle speaks.",
            "",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{language}}", language)
            .replace("{{build_needs}}", build_needs)
            .replace("{{inert_wasi}}", inert)
    };
    let file = |path: &str, text: &str, executable: bool| File {
        path: path.to_owned(),
        text: fill(text),
        executable,
    };
    let mut out = vec![
        file(
            "README.md",
            include_str!("../templates/common/README.md"),
            false,
        ),
        file(
            ".gitignore",
            include_str!("../templates/common/gitignore"),
            false,
        ),
        file(
            "test/server.py",
            include_str!("../templates/common/test/server.py"),
            false,
        ),
        file(
            "test/smoke.rhai",
            include_str!("../templates/common/test/smoke.rhai"),
            false,
        ),
        file(
            "test/run.sh",
            include_str!("../templates/common/test/run.sh"),
            true,
        ),
    ];
    match lang {
        Lang::Rust => {
            out.push(file(
                "Cargo.toml",
                include_str!("../templates/rust/Cargo.toml"),
                false,
            ));
            out.push(file(
                "build.sh",
                include_str!("../templates/rust/build.sh"),
                true,
            ));
            out.push(file(
                "src/lib.rs",
                include_str!("../templates/rust/src/lib.rs"),
                false,
            ));
            // Copied as they are: the SDK is not a template.
            out.extend(SDK.iter().map(|(path, text)| File {
                path: (*path).to_owned(),
                text: (*text).to_owned(),
                executable: false,
            }));
        }
        Lang::Python => {
            out.push(file(
                "app.py",
                include_str!("../templates/python/app.py"),
                false,
            ));
            out.push(file(
                "build.sh",
                include_str!("../templates/python/build.sh"),
                true,
            ));
            out.push(File {
                path: "keycycle_plugin.py".to_owned(),
                text: include_str!("../../../plugins/example-py/keycycle_plugin.py").to_owned(),
                executable: false,
            });
            out.push(File {
                path: "wit/plugin.wit".to_owned(),
                text: CONTRACT.to_owned(),
                executable: false,
            });
        }
        Lang::Js => {
            let helpers = JS_EXAMPLE
                .split(JS_PLUGIN_MARK)
                .next()
                .unwrap_or(JS_EXAMPLE)
                .split("import {")
                .skip(1)
                .collect::<Vec<_>>()
                .join("import {");
            let app = format!(
                "// {name}: a keycycle plugin in JavaScript. The first part is the helpers\n\
                 // every plugin copies; the plugin follows them.\n\nimport {{{helpers}{}",
                fill(include_str!("../templates/js/plugin.js"))
            );
            out.push(File {
                path: "app.js".to_owned(),
                text: app,
                executable: false,
            });
            out.push(file(
                "build.sh",
                include_str!("../templates/js/build.sh"),
                true,
            ));
            out.push(file(
                "package.json",
                include_str!("../templates/js/package.json"),
                false,
            ));
            out.push(File {
                path: "wit/plugin.wit".to_owned(),
                text: CONTRACT.to_owned(),
                executable: false,
            });
        }
    }
    out
}

/// Writes the project for plugin `name` into `dir` (default `./NAME`),
/// which must not exist or be empty.
pub fn new_plugin(name: &str, lang: Lang, dir: Option<&Path>, as_json: bool) -> Result<()> {
    check_name(name).context(Code::Config)?;
    let dir: PathBuf = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(anyhow!(
            "{} already holds files; choose another folder with --dir, or remove it",
            dir.display()
        ))
        .context(Code::Config);
    }
    let written = files(name, lang);
    for f in &written {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))
                .context(Code::Config)?;
        }
        std::fs::write(&path, &f.text)
            .with_context(|| format!("cannot write {}", path.display()))
            .context(Code::Config)?;
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))
                .context(Code::Config)?;
        }
    }
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "dir": dir.display().to_string(),
                "files": written.iter().map(|f| &f.path).collect::<Vec<_>>(),
            }))?
        );
    } else {
        outln!("wrote {} ({} files)", dir.display(), written.len());
        outln!("next:");
        outln!("  cd {}", dir.display());
        outln!("  ./build.sh                         # plugin.wasm");
        outln!("  KEYCYCLE=$(command -v keycycle) ./test/run.sh");
        outln!("  keycycle plugins check plugin.wasm");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_every_placeholder_is_filled() {
        assert!(check_name("acme-tokens").is_ok());
        for bad in ["", "Acme", "1x", "a_b", "a-", "a b", "x/../y"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = files("acme-tokens", lang);
            for f in &files {
                assert!(
                    !f.text.contains("{{"),
                    "{lang:?} {}: a placeholder is left",
                    f.path
                );
            }
            assert!(
                files
                    .iter()
                    .any(|f| f.path == "test/run.sh" && f.executable)
            );
        }
        let js = files("acme-tokens", Lang::Js);
        let app = &js.iter().find(|f| f.path == "app.js").unwrap().text;
        assert!(app.contains("function dispatch(") && app.contains("name: 'acme-tokens'"));
        assert_eq!(app.matches("import {").count(), 1, "{app}");
    }
}
