//! `keycycle plugins`: what is configured, whether it loads, what each
//! plugin offers, declares and is granted.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use serde_json::json;

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
        for row in rows {
            match row["status"].as_str() {
                Some("ok") => outln!(
                    "{}\t{} {}\t{} operations\tsha256:{}",
                    row["name"].as_str().unwrap_or(""),
                    row["plugin"].as_str().unwrap_or(""),
                    row["version"].as_str().unwrap_or(""),
                    row["operations"],
                    &row["sha256"].as_str().unwrap_or("")
                        [..12.min(row["sha256"].as_str().unwrap_or("").len())],
                ),
                _ => outln!(
                    "{}\t{}: {}",
                    row["name"].as_str().unwrap_or(""),
                    row["status"].as_str().unwrap_or(""),
                    row["error"].as_str().unwrap_or("")
                ),
            }
        }
    }
    Ok(())
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
        "granted": {
            "hosts": plugin.effective_hosts(),
            "secrets": plugin.effective_secrets().into_iter().map(|(k, v)| json!({"name": k, "store": v})).collect::<Vec<_>>(),
            "config": plugin.effective_config_keys(),
        },
        "not_effective": plugin.unmatched(),
    });
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    outln!(
        "{name}: {} {} ({})",
        d.name,
        d.version,
        section.path.display()
    );
    outln!("sha256: {}", plugin.sha256());
    outln!("\noperations:");
    for op in &d.operations {
        let tag = if op.mutates { "changes" } else { "reads" };
        outln!("  {:<24} [{tag}] {}", op.name, op.doc);
        for f in &op.inputs {
            outln!(
                "      {}{}: {}",
                f.name,
                if f.required { "" } else { " (optional)" },
                f.doc
            );
        }
        if !op.secret_outputs.is_empty() {
            outln!("      secret outputs: {}", op.secret_outputs.join(", "));
        }
        if let Some(r) = &op.recover_with {
            outln!("      recovered with: {r}");
        }
        if op.mutates && op.idempotent {
            outln!("      safe to send twice");
        }
        if let Some(advice) = &op.if_interrupted {
            outln!("      if interrupted: {advice}");
        }
    }
    outln!(
        "\ndeclares: hosts [{}], secrets [{}], config [{}]",
        d.hosts.join(", "),
        d.secrets.join(", "),
        d.config.join(", ")
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
    for gap in plugin.unmatched() {
        outln!("  not effective: {gap}");
    }
    Ok(())
}
