//! `keycycle secrets`: create the master key and manage stored secrets.
//! Values come from stdin, a file or an environment variable, never from
//! the command line, where every user of the machine can read them.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use keycycle_secret::SecretValue;
use keycycle_store::MasterKey;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::exit::Code;
use crate::store::{KEY_ENV, StoreAccess};

pub fn init(config: &Config) -> Result<()> {
    let store = StoreAccess::new(config);
    let path = store.key_file();
    if path.exists() {
        bail!(
            "the key file {} already exists; a new key would make every stored secret unreadable",
            path.display()
        );
    }
    let key = MasterKey::generate();
    key.write_new_file(path).context(Code::Config)?;
    errln!(
        "created master key {} (mode 0600). Back it up: without it the secrets store cannot be read.\n\
         To use the key elsewhere, set {KEY_ENV} to its contents instead.",
        path.display()
    );
    Ok(())
}

pub fn set(
    config: &Config,
    name: &str,
    from_file: Option<&Path>,
    from_env: Option<&str>,
) -> Result<()> {
    let raw = Zeroizing::new(match (from_file, from_env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the value from {}", path.display()))?,
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?
        }
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
        bail!("the value for `{name}` is empty; nothing was stored");
    }
    let value = SecretValue::new(value);
    let store = StoreAccess::new(config);
    store.with(|s| Ok(s.set(name, &value)?))?;
    note!("stored secret `{name}`");
    Ok(())
}

pub fn list(config: &Config, json: bool) -> Result<()> {
    let store = StoreAccess::new(config);
    let items = store.with(|s| Ok(s.list()))?;
    if json {
        let rows: Vec<_> = items
            .iter()
            .map(|i| serde_json::json!({"name": i.name, "created_at": rfc3339(i.created_at), "updated_at": rfc3339(i.updated_at)}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else if items.is_empty() {
        note!("the store is empty");
    } else {
        for i in items {
            outln!("{}\t(updated {})", i.name, rfc3339(i.updated_at));
        }
    }
    Ok(())
}

pub fn rm(config: &Config, name: &str) -> Result<()> {
    let store = StoreAccess::new(config);
    if store.with(|s| Ok(s.remove(name)?))? {
        note!("removed secret `{name}`");
        Ok(())
    } else {
        Err(anyhow!("there is no secret `{name}` in the store")).context(Code::Config)
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
