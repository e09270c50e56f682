//! `keycycle plugins`: what is configured, whether it loads, what each
//! plugin offers, declares and is granted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_host::{
    Plugin, one_line, parse_public_key, sha256_hex, signature_path, verify_signature,
};
use serde_json::{Value, json};

use crate::config::Config;
use crate::exit::Code;
use crate::run::load_plugins;
use crate::store::StoreAccess;
use keycycle_engine::LoadedPlugin;

pub async fn list(config: &Config, as_json: bool) -> Result<()> {
    let store = Arc::new(StoreAccess::new(config));
    let (_sandbox, plugins) = load_plugins(config, None, store).await?;
    let mut rows = Vec::new();
    for (name, loaded) in &plugins {
        let section = &config.plugins[name];
        rows.push(match loaded {
            LoadedPlugin::Ready {
                plugin,
                description,
                ..
            } => json!({
                "name": name,
                "path": section.path.display().to_string(),
                "status": "ok",
                "plugin": description.name,
                "version": description.version,
                "sha256": plugin.sha256(),
                "operations": description.operations.len(),
            }),
            LoadedPlugin::Refused { message, denied } => json!({
                "name": name,
                "path": section.path.display().to_string(),
                "status": if *denied { "refused" } else { "error" },
                "error": message,
            }),
        });
    }
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        errln!("no plugins are configured");
    } else {
        // One line per plugin, tab-separated: every field is escaped, since
        // the plugin's name and version come from the plugin and an error
        // can quote anything.
        let field = |row: &Value, key: &str| one_line(row[key].as_str().unwrap_or(""));
        for row in rows {
            match row["status"].as_str() {
                Some("ok") => {
                    let sha = field(&row, "sha256");
                    outln!(
                        "{}\t{} {}\t{} operations\tsha256:{}",
                        field(&row, "name"),
                        field(&row, "plugin"),
                        field(&row, "version"),
                        row["operations"],
                        &sha[..12.min(sha.len())],
                    )
                }
                _ => outln!(
                    "{}\t{}: {}",
                    field(&row, "name"),
                    field(&row, "status"),
                    field(&row, "error"),
                ),
            }
        }
    }
    Ok(())
}

/// A loaded plugin's effective grants, and the granted hosts whose calls
/// will be refused before they leave the host (see
/// [`Plugin::host_problems`]). Shared by `plugins inspect` and `doctor`.
pub async fn granted(plugin: &Plugin) -> Value {
    let problems: Vec<Value> = plugin
        .host_problems()
        .await
        .into_iter()
        .map(|(host, problem)| json!({ "host": host, "problem": problem.to_string() }))
        .collect();
    json!({
        "hosts": plugin.effective_hosts(),
        "secrets": plugin
            .effective_secrets()
            .into_iter()
            .map(|(k, v)| json!({"name": k, "store": v}))
            .collect::<Vec<_>>(),
        "config": plugin.effective_config_keys(),
        "host_problems": problems,
    })
}

pub async fn inspect(config: &Config, name: &str, env: Option<&str>, as_json: bool) -> Result<()> {
    let section = config
        .plugins
        .get(name)
        .ok_or_else(|| {
            anyhow!(
                "no plugin `{name}` is configured (configured: {})",
                config
                    .plugins
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .context(Code::Config)?;
    if let Some(env) = env {
        config.check_env(env).context(Code::Config)?;
    }
    let store = Arc::new(StoreAccess::new(config));
    let (_sandbox, mut plugins) = load_plugins(config, env, store).await?;
    let (plugin, d) = match plugins.remove(name) {
        Some(LoadedPlugin::Ready {
            plugin,
            description,
            ..
        }) => (plugin, description),
        Some(LoadedPlugin::Refused { message, denied }) => {
            return Err(anyhow!(message)).context(if denied { Code::Denied } else { Code::Config });
        }
        None => unreachable!("every configured plugin is loaded or refused"),
    };
    let report = json!({
        "name": name,
        "path": section.path.display().to_string(),
        "sha256": plugin.sha256(),
        "plugin": d.name,
        "version": d.version,
        "operations": d.operations,
        "declares": { "hosts": d.hosts, "secrets": d.secrets, "config": d.config },
        "granted": granted(&plugin).await,
        "not_effective": plugin.unmatched(),
    });
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // Everything in the description is the plugin's own text.
    let e = |t: &str| one_line(t);
    outln!(
        "{name}: {} {} ({})",
        e(&d.name),
        e(&d.version),
        section.path.display()
    );
    outln!("sha256: {}", plugin.sha256());
    outln!("\noperations:");
    for op in &d.operations {
        let tag = if op.mutates { "changes" } else { "reads" };
        outln!("  {:<24} [{tag}] {}", e(&op.name), e(&op.doc));
        for f in &op.inputs {
            outln!(
                "      {}{}: {}",
                e(&f.name),
                if f.required { "" } else { " (optional)" },
                e(&f.doc)
            );
        }
        if !op.secret_outputs.is_empty() {
            outln!("      secret outputs: {}", e(&op.secret_outputs.join(", ")));
        }
        if let Some(r) = &op.recover_with {
            outln!("      recovered with: {}", e(r));
        }
        if op.mutates && op.idempotent {
            outln!("      safe to send twice");
        }
        if let Some(advice) = &op.if_interrupted {
            outln!("      if interrupted: {}", e(advice));
        }
    }
    outln!(
        "\ndeclares: hosts [{}], secrets [{}], config [{}]",
        e(&d.hosts.join(", ")),
        e(&d.secrets.join(", ")),
        e(&d.config.join(", "))
    );
    outln!(
        "granted:  hosts [{}], secrets [{}], config [{}]",
        plugin.effective_hosts().join(", "),
        plugin
            .effective_secrets()
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        plugin.effective_config_keys().join(", ")
    );
    for problem in report["granted"]["host_problems"]
        .as_array()
        .into_iter()
        .flatten()
    {
        outln!(
            "  host {}: {}",
            problem["host"].as_str().unwrap_or(""),
            problem["problem"].as_str().unwrap_or("")
        );
    }
    for gap in plugin.unmatched() {
        outln!("  not effective: {}", e(gap));
    }
    Ok(())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))
        .context(Code::Config)
}

/// `keycycle plugins hash FILE`: the digest `[plugins.NAME] sha256` pins.
/// `keycycle plugins check FILE`: what a reviewer needs before granting a
/// component, from the component alone (no config, no grants, no cache).
pub async fn check(file: &Path, as_json: bool) -> Result<()> {
    let sandbox = keycycle_host::Sandbox::new(&keycycle_host::SandboxConfig {
        cache_dir: None,
        cache_key_file: None,
        pooling: false,
    })
    .context(Code::Config)?;
    let checked = sandbox.check_file(file).await.context(Code::Config)?;
    let mut findings: Vec<keycycle_host::Finding> = checked
        .imports
        .iter()
        .filter_map(|i| {
            i.problem.as_ref().map(|why| keycycle_host::Finding {
                // An inert import is the operator's call (`inert_wasi`).
                severity: if i.inert {
                    keycycle_host::Severity::Warning
                } else {
                    keycycle_host::Severity::Error
                },
                operation: None,
                message: format!("imports {}: {why}", i.name),
            })
        })
        .collect();
    match &checked.description {
        Ok(d) => findings.extend(keycycle_host::check_description(d)),
        // Asked only when every import links: a refused import says it.
        Err(why) if findings.is_empty() => findings.push(keycycle_host::Finding {
            severity: keycycle_host::Severity::Error,
            operation: None,
            message: format!("describe failed: {why}"),
        }),
        Err(_) => {}
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == keycycle_host::Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": file.display().to_string(),
                "sha256": checked.sha256,
                "size": checked.size,
                "ok": errors == 0,
                "imports": checked.imports.iter().map(|i| json!({
                    "name": i.name, "allowed": i.problem.is_none(), "inert": i.inert,
                    "problem": i.problem,
                })).collect::<Vec<_>>(),
                "description": checked.description.as_ref().ok(),
                "findings": findings,
            }))?
        );
    } else {
        outln!(
            "{}  sha256 {}  {} bytes",
            file.display(),
            checked.sha256,
            checked.size
        );
        outln!("imports:");
        for i in &checked.imports {
            match (&i.problem, i.inert) {
                (None, _) => outln!("  ok       {}", i.name),
                (Some(_), true) => outln!("  inert    {}", i.name),
                (Some(_), false) => outln!("  REFUSED  {}", i.name),
            }
        }
        if let Ok(d) = &checked.description {
            let e = |t: &str| one_line(t);
            outln!("describes: {} {}", e(&d.name), e(&d.version));
            for op in &d.operations {
                let mut marks = Vec::new();
                if op.mutates {
                    marks.push("mutates".to_owned());
                }
                if op.idempotent {
                    marks.push("idempotent".to_owned());
                }
                if let Some(finder) = &op.recover_with {
                    marks.push(format!("recovered with {}", e(finder)));
                }
                outln!(
                    "  {}{}",
                    e(&op.name),
                    if marks.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", marks.join(", "))
                    }
                );
            }
        }
        for f in &findings {
            let at = f
                .operation
                .as_ref()
                .map(|op| format!("operation `{op}` "))
                .unwrap_or_default();
            let level = match f.severity {
                keycycle_host::Severity::Error => "error",
                keycycle_host::Severity::Warning => "warning",
            };
            outln!("{level}: {at}{}", f.message);
        }
        outln!(
            "{errors} error(s), {warnings} warning(s){}",
            if errors == 0 {
                ""
            } else {
                ": do not grant it as it is"
            }
        );
    }
    if errors > 0 {
        return Err(anyhow!(
            "{} has {errors} problem(s) that will fail whoever grants it (listed above): fix them \
             in the plugin and build it again, and grant it only once this check passes",
            file.display()
        ))
        .context(Code::Config);
    }
    Ok(())
}

pub fn hash(file: &Path, as_json: bool) -> Result<()> {
    let digest = sha256_hex(&read_file(file, "component file")?);
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "path": file.display().to_string(), "sha256": digest })
            )?
        );
    } else {
        // The layout of sha256sum, so either can check the other.
        outln!("{digest}  {}", file.display());
    }
    Ok(())
}

/// Set, the secret key of `keygen` is encrypted with it, and `sign`
/// decrypts with it instead of asking.
const PASSWORD_ENV: &str = "KEYCYCLE_SIGNING_KEY_PASSWORD";

fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

/// Writes `bytes` to a new file (never over an existing one) with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
        .context(Code::Config)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// `keycycle plugins keygen OUT`: OUT.key (0600) and OUT.pub.
pub fn keygen(out: &Path, as_json: bool) -> Result<()> {
    let (secret_path, public_path) = (sibling(out, ".key"), sibling(out, ".pub"));
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(anyhow!(
                "{} exists; keycycle does not overwrite a key (remove it, or pick another name)",
                p.display()
            ))
            .context(Code::Config);
        }
    }
    let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    let encrypted = password.is_some();
    let pair = match password {
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow!("cannot make a key pair: {e}"))?;
    let public_box = pair
        .pk
        .to_box()
        .map_err(|e| anyhow!("cannot encode the public key: {e}"))?;
    let secret_box = pair
        .sk
        .to_box(None)
        .map_err(|e| anyhow!("cannot encode the secret key: {e}"))?;
    write_new(&secret_path, &secret_box.to_bytes(), 0o600)?;
    write_new(&public_path, &public_box.to_bytes(), 0o644)?;
    let public = pair.pk.to_base64();
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "secret_key": secret_path.display().to_string(),
                "public_key_file": public_path.display().to_string(),
                "public_key": public,
                "encrypted": encrypted,
            }))?
        );
    } else {
        outln!("{public}");
        errln!(
            "wrote the secret key {} (mode 0600{}) and the public key {}; keep the secret key \
             with the team that signs, and give operators the public key for [trust] keys",
            secret_path.display(),
            if encrypted {
                format!(", encrypted with ${PASSWORD_ENV}")
            } else {
                ", not encrypted".to_owned()
            },
            public_path.display()
        );
    }
    Ok(())
}

fn secret_key(path: &Path) -> Result<minisign::SecretKey> {
    let text = String::from_utf8(read_file(path, "secret key")?)
        .map_err(|_| anyhow!("{} is not a minisign secret key", path.display()))
        .context(Code::Config)?;
    let sk_box = minisign::SecretKeyBox::from_string(&text)
        .map_err(|e| anyhow!("{} is not a minisign secret key: {e}", path.display()))
        .context(Code::Config)?;
    if let Ok(sk) = minisign::SecretKey::from_unencrypted_box(sk_box.clone()) {
        return Ok(sk);
    }
    // An encrypted key (what `minisign -G` makes): the password from the
    // environment, or asked for on the terminal.
    let password = match std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
        Some(pw) => pw,
        None => rpassword::prompt_password(format!("password of {}: ", path.display()))
            .with_context(|| {
                format!(
                    "{} is encrypted: give its password on a terminal or in ${PASSWORD_ENV}",
                    path.display()
                )
            })
            .context(Code::InputRequired)?,
    };
    minisign::SecretKey::from_box(sk_box, Some(password))
        .map_err(|e| anyhow!("cannot open the secret key {}: {e}", path.display()))
        .context(Code::Config)
}

/// `keycycle plugins sign FILE --key SECRET_KEY_FILE`: FILE.minisig, a
/// signature of the file's exact bytes.
pub fn sign(file: &Path, key: &Path, as_json: bool) -> Result<()> {
    let bytes = read_file(file, "component file")?;
    let sk = secret_key(key)?;
    let digest = sha256_hex(&bytes);
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The trusted comment is signed too: it says which file, by digest.
    let trusted = format!("file:{} sha256:{digest}", one_line(&file_name));
    let signature = minisign::sign(
        None,
        &sk,
        std::io::Cursor::new(&bytes),
        Some(&trusted),
        None,
    )
    .map_err(|e| anyhow!("cannot sign {}: {e}", file.display()))?;
    let sig_path = signature_path(file);
    // Written beside the file and moved into place, so a reader never sees
    // half a signature.
    let tmp = sibling(&sig_path, &format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, signature.to_string().as_bytes(), 0o644)?;
    std::fs::rename(&tmp, &sig_path)
        .with_context(|| format!("cannot write {}", sig_path.display()))?;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": file.display().to_string(),
                "signature": sig_path.display().to_string(),
                "sha256": digest,
            }))?
        );
    } else {
        outln!("{}", sig_path.display());
    }
    Ok(())
}

/// `keycycle plugins verify FILE --key PUBLIC_KEY`: whether FILE.minisig
/// is that key's signature of the file.
pub fn verify(file: &Path, key: &str, as_json: bool) -> Result<()> {
    let key_text = if parse_public_key(key).is_ok() {
        key.to_owned()
    } else {
        let text = String::from_utf8(read_file(Path::new(key), "public key")?)
            .map_err(|_| anyhow!("{key} is not a minisign public key"))
            .context(Code::Config)?;
        parse_public_key(&text)
            .map_err(|e| anyhow!("{key}: {e}"))
            .context(Code::Config)?;
        text
    };
    let bytes = read_file(file, "component file")?;
    let sig_path = signature_path(file);
    let signature = match std::fs::read_to_string(&sig_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "{} is not signed: there is no {}",
                file.display(),
                sig_path.display()
            ))
            .context(Code::Denied);
        }
        Err(e) => {
            return Err(anyhow!("cannot read {}: {e}", sig_path.display())).context(Code::Config);
        }
    };
    if let Err(why) = verify_signature(&bytes, &signature, &key_text) {
        return Err(anyhow!(
            "{}: the signature {} does not verify with this key: {why}",
            file.display(),
            sig_path.display()
        ))
        .context(Code::Denied);
    }
    let digest = sha256_hex(&bytes);
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": file.display().to_string(),
                "signature": sig_path.display().to_string(),
                "verified": true,
                "sha256": digest,
            }))?
        );
    } else {
        outln!("{}: signature ok (sha256 {digest})", file.display());
    }
    Ok(())
}
