//! `keycycle plugins`: what is configured, whether it loads, what each
//! plugin offers, declares and is granted.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_host::{Plugin, one_line};
use serde_json::{Value, json};

use crate::config::Config;
use crate::effects::LoadedPlugin;
use crate::exit::Code;
use crate::run::load_plugins;
use crate::store::StoreAccess;

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
