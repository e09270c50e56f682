//! `keycycle secrets`: create the master key and manage stored secrets, in
//! the local encrypted file or in OpenBao/Vault (`[secrets] backend`).
//! Values come from stdin, a file or an environment variable, never from
//! the command line, where every user of the machine can read them.
//!
//! Mistakes an operator can fix (a bad name, an empty value, a missing
//! file, an existing key, a wrong key, a damaged store) exit with
//! [`Code::Config`], never as internal errors.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use keycycle_secret::SecretValue;
use keycycle_store::{MasterKey, SecretInfo, validate_name};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::exit::Code;
use crate::store::{KEY_ENV, StoreAccess, kv_error};

pub fn init(config: &Config) -> Result<()> {
    let store = StoreAccess::new(config);
    let path = store.key_file();
    if path.exists() {
        return Err(anyhow!(
            "the key file {} already exists; a new key would make every stored secret \
             unreadable. Keep using it (`keycycle secrets list` checks it), or move it aside \
             first if you really mean to start a new store",
            path.display()
        ))
        .context(Code::Config);
    }
    let key = MasterKey::generate();
    key.write_new_file(path).context(Code::Config)?;
    crate::out::done(
        serde_json::json!({"ok": true, "created": "master-key", "key_file": path.display().to_string()}),
        format_args!(
            "created master key {} (mode 0600). Back it up: without it the secrets store cannot be read.\n\
             To use the key elsewhere, set {KEY_ENV} to its contents instead.",
            path.display()
        ),
    );
    Ok(())
}

pub fn set(
    config: &Config,
    name: &str,
    from_file: Option<&Path>,
    from_env: Option<&str>,
) -> Result<()> {
    // Checked before the value is read, so nobody types a secret in vain.
    validate_name(name).context(Code::Config)?;
    let raw = Zeroizing::new(match (from_file, from_env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| {
                format!(
                    "cannot read the value from {}; check the path given to --from-file",
                    path.display()
                )
            })
            .context(Code::Config)?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| {
                anyhow!(
                    "environment variable {var} is not set (or not valid text); export it first"
                )
            })
            .context(Code::Config)?,
        (None, None) => {
            if std::io::stdin().is_terminal() {
                rpassword::prompt_password(format!("value for {name} (input hidden): "))?
            } else {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read the value from stdin")?;
                s
            }
        }
    });
    // A trailing newline from `echo` or an editor is never part of a token.
    let value = raw.strip_suffix('\n').unwrap_or(&raw);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(anyhow!(
            "the value for `{name}` is empty; nothing was stored. Give the value on stdin \
             (`printf %s \"$TOKEN\" | keycycle secrets set {name}`), with --from-file or with \
             --from-env"
        ))
        .context(Code::Config);
    }
    if value.len() < keycycle_secret::MIN_MASKED_LEN {
        return Err(anyhow!(
            "the value for `{name}` is {} bytes; nothing was stored. A secret must be at least {} \
             bytes, or keycycle could not mask it in output",
            value.len(),
            keycycle_secret::MIN_MASKED_LEN
        ))
        .context(Code::Config);
    }
    let value = SecretValue::new(value);
    let store = StoreAccess::new(config);
    store.set(name, &value)?;
    crate::out::done(
        serde_json::json!({"ok": true, "stored": name}),
        format_args!("stored secret `{name}`"),
    );
    Ok(())
}

pub fn list(config: &Config, json: bool) -> Result<()> {
    let store = StoreAccess::new(config);
    if let Some(kv) = store.kv()? {
        return list_kv(&store, &kv, json);
    }
    let items = store.with(|s| Ok(s.list()))?;
    if json {
        let rows: Vec<_> = items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "created_at": i.created_at.map(rfc3339),
                    "updated_at": i.updated_at.map(rfc3339),
                    "damaged": i.damage.map(|d| d.to_string()),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if items.is_empty() {
        note!("the store is empty");
    } else {
        for i in &items {
            match i.damage {
                None => outln!("{}\t(updated {})", i.name, updated(i)),
                Some(damage) => outln!("{}\tDAMAGED: {damage}", i.name),
            }
        }
    }
    // Listing still succeeds, so scripts see every entry; the damage is
    // said on stderr whatever the output format, with what to run.
    for i in items.iter().filter(|i| i.damage.is_some()) {
        let damage = i.damage.expect("filtered above");
        errln!(
            "warning: secret `{name}` is damaged ({damage}) and cannot be read; replace it with \
             `keycycle secrets set {name}` or remove it with `keycycle secrets rm {name}`",
            name = i.name
        );
    }
    Ok(())
}

/// `list` on OpenBao/Vault: the names below the prefix, each with its
/// metadata (times, and whether someone deleted its current version).
fn list_kv(store: &StoreAccess, kv: &keycycle_vault::KvStore, json: bool) -> Result<()> {
    let names = kv.list().map_err(kv_error)?;
    let mut items = Vec::with_capacity(names.len());
    for name in &names {
        // A key deleted between the list and this read is left out, as it
        // would be from a list made a moment later.
        if let Some(info) = kv.info(name).map_err(kv_error)? {
            items.push(info);
        }
    }
    if json {
        let rows: Vec<_> = items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "created_at": i.created_at.map(rfc3339),
                    "updated_at": i.updated_at.map(rfc3339),
                    "version": i.current_version,
                    "deleted": i.current_deleted,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if items.is_empty() {
        note!("no secrets in {}", store.describe());
    } else {
        for i in &items {
            let when = i
                .updated_at
                .map(rfc3339)
                .unwrap_or_else(|| "unknown".to_owned());
            if i.current_deleted {
                outln!(
                    "{}\t(version {} deleted {when}; reading it finds nothing)",
                    i.name,
                    i.current_version
                );
            } else {
                outln!(
                    "{}\t(updated {when}, version {})",
                    i.name,
                    i.current_version
                );
            }
        }
    }
    Ok(())
}

fn updated(info: &SecretInfo) -> String {
    info.updated_at
        .map(rfc3339)
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn rm(config: &Config, name: &str) -> Result<()> {
    validate_name(name).context(Code::Config)?;
    let store = StoreAccess::new(config);
    if store.remove(name)? {
        crate::out::done(
            serde_json::json!({"ok": true, "removed": name}),
            format_args!("removed secret `{name}`"),
        );
        Ok(())
    } else {
        let place = if store.kv_settings().is_some() {
            store.describe()
        } else {
            "the store".to_owned()
        };
        Err(anyhow!(
            "there is no secret `{name}` in {place}; see the stored names with `keycycle secrets list`"
        ))
        .context(Code::Config)
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
