//! `keycycle doctor`: the first command an operator runs when something is
//! off. It checks, read-only, everything a run depends on (the config file,
//! the state folder, the master key and the store it must open, the plugin
//! cache, each plugin's load and grants, granted secrets, granted host
//! names the sandbox's resolver will refuse) and says which is wrong.
//!
//! Read-only matters: a doctor that created the state folder, the store or
//! the key would hide the very problem it was run to find. So it opens the
//! store only when the file exists, and loads plugins without the compiled
//! cache when the cache folder is missing or would need its mode fixed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use keycycle_host::one_line;
use keycycle_store::SecretStore;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{self, Config, StateLocation};
use crate::durable;
use crate::exit::Code;
use crate::plugins_cmd;
use crate::run::load_plugins_cached;
use crate::store::{KEY_ENV, StoreAccess};
use keycycle_engine::LoadedPlugin;

/// How bad one finding is. Plain words, so logs and CI output stay
/// readable without a font that has check marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Error,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Serialize)]
struct Check {
    section: &'static str,
    level: Level,
    message: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    /// Section name → its structured facts, for `--output json`.
    facts: serde_json::Map<String, Value>,
}

impl Report {
    fn add(&mut self, section: &'static str, level: Level, message: impl Into<String>) {
        self.checks.push(Check {
            section,
            level,
            message: message.into(),
        });
    }

    fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.level == level).count()
    }

    fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(Level::Ok)
    }
}

/// An error's chain on one line, without the exit-code markers (their text
/// only picks the exit code).
fn describe(err: &anyhow::Error) -> String {
    let markers: Vec<String> = Code::ALL.iter().map(|c| c.to_string()).collect();
    let parts: Vec<String> = err
        .chain()
        .map(|c| c.to_string())
        .filter(|c| !markers.contains(c))
        .collect();
    parts.join(": ")
}

pub async fn doctor(explicit_config: Option<&Path>, as_json: bool) -> Result<()> {
    let mut report = Report::default();
    match config::load(explicit_config) {
        Ok(config) => examine(&config, &mut report).await,
        Err(e) => {
            report.add("config", Level::Error, describe(&e));
            report
                .facts
                .insert("config".into(), json!({ "error": describe(&e) }));
        }
    }
    print(&report, as_json)?;
    let errors = report.count(Level::Error);
    if errors > 0 {
        return Err(anyhow!(
            "keycycle doctor found {errors} error{}; fix the findings marked `error` above",
            if errors == 1 { "" } else { "s" }
        ))
        .context(Code::Config);
    }
    Ok(())
}

async fn examine(config: &Config, report: &mut Report) {
    config_section(config, report);
    state_section(config, report);
    policy_section(config, report);
    process_section(report);
    let store = Arc::new(StoreAccess::new(config));
    let names = if store.kv_settings().is_some() {
        key_and_kv(config, &store, report)
    } else {
        key_and_store(config, &store, report)
    };
    let cache = cache_section(&config.cache_dir, report)
        // Loading through the cache would create its key: a doctor creates
        // nothing.
        .filter(|_| config.cache_key_file.is_file());
    plugins_section(config, store, cache, report).await;
    granted_secrets(config, names.as_ref(), report);
}

fn config_section(config: &Config, report: &mut Report) {
    const S: &str = "config";
    // The file as found may be relative (`./keycycle.toml`); say which one.
    let file = config
        .file
        .as_ref()
        .map(|f| f.canonicalize().unwrap_or_else(|_| f.clone()));
    match &file {
        Some(file) => report.add(
            S,
            Level::Ok,
            format!(
                "config file {} (found by {})",
                file.display(),
                config.found_by.describe()
            ),
        ),
        None => report.add(
            S,
            Level::Warn,
            "no config file (no --config, no KEYCYCLE_CONFIG, no ./keycycle.toml): built-in \
             defaults are used and no plugins are configured",
        ),
    }
    let state_exists = config.state_dir.is_dir();
    report.add(
        S,
        Level::Ok,
        if state_exists {
            format!("state folder {}", config.state_dir.display())
        } else {
            format!(
                "state folder {} does not exist yet; `keycycle secrets init` or the first run \
                 creates it",
                config.state_dir.display()
            )
        },
    );
    let runbooks_exist = config.runbooks_dir.is_dir();
    if runbooks_exist {
        report.add(
            S,
            Level::Ok,
            format!("runbooks folder {}", config.runbooks_dir.display()),
        );
    } else {
        report.add(
            S,
            Level::Warn,
            format!(
                "runbooks folder {} does not exist; runbooks cannot be run by name (set \
                 runbooks_dir in keycycle.toml, or create the folder)",
                config.runbooks_dir.display()
            ),
        );
    }
    // The inventory's file is read only by the commands that use it, so
    // this is where a broken one shows before the next `rotate`.
    let inventory = match config.credentials() {
        Ok(credentials) => {
            report.add(
                S,
                Level::Ok,
                format!("inventory: {} credentials", credentials.len()),
            );
            Some(credentials.len())
        }
        Err(e) => {
            report.add(S, Level::Error, describe(&e));
            None
        }
    };
    report.facts.insert(
        "config".into(),
        json!({
            "file": file.as_ref().map(|f| f.display().to_string()),
            "credentials": inventory,
            "found_by": config.found_by.describe(),
            "state_dir": { "path": config.state_dir.display().to_string(), "exists": state_exists },
            "runbooks_dir": { "path": config.runbooks_dir.display().to_string(), "exists": runbooks_exist },
        }),
    );
}

/// Where the run state is, and for PostgreSQL whether it answers and at
/// which schema version. The URL shown holds no password (the config
/// refuses one).
fn state_section(config: &Config, report: &mut Report) {
    const S: &str = "state";
    match &config.state {
        StateLocation::Local => {
            let path = config
                .state_dir
                .join(keycycle_store::state::STATE_FILE_NAME);
            report.add(
                S,
                Level::Ok,
                format!(
                    "run state in the local database {}{}",
                    path.display(),
                    if path.is_file() {
                        ""
                    } else {
                        " (not created yet)"
                    }
                ),
            );
            report.facts.insert(
                "state".into(),
                json!({ "backend": "sqlite", "path": path.display().to_string() }),
            );
        }
        StateLocation::Postgres { url, password_file } => {
            let masked = keycycle_store::state::mask_url(url);
            match durable::open_postgres(url, password_file.as_deref()) {
                Ok(state) => {
                    let version = state.schema_version().ok();
                    report.add(
                        S,
                        Level::Ok,
                        format!(
                            "run state in PostgreSQL {masked} (schema version {}); the locks, \
                             journal and deferred actions there are shared by every runner \
                             configured with it",
                            version.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
                        ),
                    );
                    report.facts.insert(
                        "state".into(),
                        json!({ "backend": "postgres", "url": masked, "schema_version": version }),
                    );
                }
                Err(e) => {
                    report.add(S, Level::Error, describe(&e));
                    report.facts.insert(
                        "state".into(),
                        json!({ "backend": "postgres", "url": masked, "error": describe(&e) }),
                    );
                }
            }
        }
    }
}

/// Teams, and grants that can never apply: a plugin no run may call, a
/// runbook section no runbook file answers to (grants go by the runbook's
/// path inside the runbooks folder, so a section named after a file in a
/// subfolder grants nothing).
fn policy_section(config: &Config, report: &mut Report) {
    const S: &str = "policy";
    let teams: Vec<&str> = config.policy.teams().collect();
    if teams.is_empty() {
        report.add(
            S,
            Level::Ok,
            "one team (no [teams]): every runbook may call every plugin its section allows",
        );
    } else {
        report.add(S, Level::Ok, format!("teams: {}", teams.join(", ")));
    }
    let dead = keycycle_policy::unowned_plugins(&config.policy);
    for plugin in &dead {
        report.add(
            S,
            Level::Warn,
            format!(
                "plugin `{plugin}` belongs to no team and is shared with none, so no run may                  call it; add it to a team's plugins"
            ),
        );
    }
    let mut orphans = Vec::new();
    for id in config.runbooks.keys() {
        if !config.runbooks_dir.join(format!("{id}.rhai")).is_file() {
            report.add(
                S,
                Level::Warn,
                format!(
                    "[runbooks.\"{id}\"] names no runbook: there is no {id}.rhai in {};                      a section is named by the runbook's path inside the runbooks folder",
                    config.runbooks_dir.display()
                ),
            );
            orphans.push(id.clone());
        }
    }
    report.facts.insert(
        "policy".into(),
        json!({ "teams": teams, "uncallable_plugins": dead, "sections_without_runbook": orphans }),
    );
}

/// Whether any secret is granted to anything: without grants, a missing
/// master key is a warning, not an error.
fn any_secret_granted(config: &Config) -> bool {
    config
        .plugins
        .values()
        .any(|p| !p.secrets.is_empty() || p.envs.values().any(|o| !o.secrets.is_empty()))
        || config.runbooks.values().any(|r| !r.secrets.is_empty())
}

/// How the keycycle process protects itself: no core dumps or ptrace, and
/// the master key out of its environment.
fn process_section(report: &mut Report) {
    const S: &str = "process";
    let Some(h) = crate::hardening::applied() else {
        return;
    };
    if h.not_dumpable {
        report.add(
            S,
            Level::Ok,
            "not dumpable: no core files, and other processes of this user cannot ptrace \
             keycycle or read its memory",
        );
    } else {
        report.add(
            S,
            Level::Warn,
            "could not make the process non-dumpable (prctl PR_SET_DUMPABLE); a core file \
             or a debugger of this user could read secrets from its memory",
        );
    }
    let in_env = std::env::var_os(KEY_ENV).is_some();
    if h.key_taken_from_env && !in_env {
        report.add(
            S,
            Level::Ok,
            format!("the master key was read from {KEY_ENV} and removed from the environment"),
        );
    } else if in_env {
        report.add(
            S,
            Level::Error,
            format!("{KEY_ENV} is still in the process's environment"),
        );
    }
    report.facts.insert(
        S.into(),
        json!({
            "dumpable": !h.not_dumpable,
            "master_key_in_environment": in_env,
            "master_key_from_environment": h.key_taken_from_env,
        }),
    );
}

/// With the secrets in OpenBao or Vault: the master key (it still seals
/// the journal), and the server: reachable, taking the credentials, KV v2
/// at the mount. Returns the stored names when they could be listed. Reads
/// only: no secret value is fetched, and the token is shown by where it
/// came from.
fn key_and_kv(
    config: &Config,
    store: &StoreAccess,
    report: &mut Report,
) -> Option<BTreeSet<String>> {
    const S: &str = "secrets backend";
    let from_env = crate::hardening::env_master_key().is_some();
    let source = if from_env {
        KEY_ENV.to_owned()
    } else {
        format!("key file {}", config.key_file.display())
    };
    match store.master_key() {
        Ok(_) => report.add(
            "master key",
            Level::Ok,
            format!("from {source}; it seals the journal (the secrets are not in a local file)"),
        ),
        Err(e) => report.add(
            "master key",
            Level::Error,
            format!(
                "{}; runs need it to seal the journal even with the secrets in a server",
                describe(&e)
            ),
        ),
    }
    let where_ = store.describe();
    let settings = store.kv_settings().expect("a KV backend");
    let mut facts = json!({
        "backend": settings.kind,
        "address": settings.address,
        "mount": settings.mount,
        "prefix": settings.prefix,
        "auth": match settings.auth {
            crate::config::KvAuth::Token => "token",
            crate::config::KvAuth::AppRole => "approle",
        },
        "reachable": Value::Null,
        "authenticated": Value::Null,
        "kv_v2": Value::Null,
        "secrets": Value::Null,
    });
    let kv = match store.kv() {
        Ok(Some(kv)) => kv,
        Ok(None) => unreachable!("a KV backend"),
        Err(e) => {
            report.add(S, Level::Error, format!("{where_}: {}", describe(&e)));
            facts["error"] = json!(describe(&e));
            report.facts.insert("secrets_backend".into(), facts);
            return None;
        }
    };
    let status = match kv.status() {
        Ok(status) => status,
        Err(e) => {
            let reachable = !matches!(e, keycycle_vault::VaultError::Unreachable { .. });
            facts["reachable"] = json!(reachable);
            if reachable {
                facts["authenticated"] = json!(false);
            }
            let e = crate::store::kv_error(e);
            report.add(S, Level::Error, format!("{where_}: {}", describe(&e)));
            facts["error"] = json!(describe(&e));
            report.facts.insert("secrets_backend".into(), facts);
            return None;
        }
    };
    facts["reachable"] = json!(true);
    facts["authenticated"] = json!(true);
    facts["server_version"] = json!(status.server_version);
    facts["sealed"] = json!(status.sealed);
    facts["credential"] = json!(status.credential);
    facts["token_ttl_secs"] = json!(status.ttl_secs);
    facts["policies"] = json!(status.policies);
    report.add(
        S,
        if status.sealed {
            Level::Error
        } else {
            Level::Ok
        },
        format!(
            "{where_}: reachable ({}{})",
            status
                .server_version
                .as_deref()
                .map_or("version unknown".to_owned(), |v| format!("version {v}")),
            if status.sealed {
                ", SEALED: unseal it"
            } else {
                ""
            }
        ),
    );
    report.add(
        S,
        Level::Ok,
        format!(
            "authenticated with the {} (policies: {}; {})",
            status.credential,
            if status.policies.is_empty() {
                "none".to_owned()
            } else {
                status.policies.join(", ")
            },
            match status.ttl_secs {
                Some(ttl) => format!("the token expires in {ttl} s"),
                None => "the token does not expire".to_owned(),
            }
        ),
    );
    match &status.mount {
        keycycle_vault::MountKind::KvV2 => {
            facts["kv_v2"] = json!(true);
            report.add(
                S,
                Level::Ok,
                format!("mount `{}` is KV version 2", settings.mount),
            );
        }
        keycycle_vault::MountKind::Other(what) => {
            facts["kv_v2"] = json!(false);
            report.add(
                S,
                Level::Error,
                format!(
                    "mount `{}` is {what}, not KV version 2; point [secrets] mount at a KV v2 mount",
                    settings.mount
                ),
            );
        }
        keycycle_vault::MountKind::Unknown(why) => report.add(
            S,
            Level::Warn,
            format!(
                "cannot tell whether mount `{}` is KV version 2: {why}",
                settings.mount
            ),
        ),
    }
    let names = match kv.list() {
        Ok(names) => names,
        Err(e) => {
            let e = crate::store::kv_error(e);
            report.add(
                S,
                Level::Error,
                format!("cannot list the secrets: {}", describe(&e)),
            );
            facts["error"] = json!(describe(&e));
            report.facts.insert("secrets_backend".into(), facts);
            return None;
        }
    };
    report.add(
        S,
        Level::Ok,
        format!(
            "{} secret{} below the prefix",
            names.len(),
            if names.len() == 1 { "" } else { "s" }
        ),
    );
    facts["secrets"] = json!(names.len());
    report.facts.insert("secrets_backend".into(), facts);
    Some(names.into_iter().collect())
}

/// The master key, and the store it must open. Returns the stored names
/// when the store could be read.
fn key_and_store(
    config: &Config,
    store: &StoreAccess,
    report: &mut Report,
) -> Option<BTreeSet<String>> {
    let from_env = crate::hardening::env_master_key().is_some();
    let source = if from_env {
        KEY_ENV.to_owned()
    } else {
        format!("key file {}", config.key_file.display())
    };
    let store_exists = config.store_file.exists();
    let mut key_facts = json!({
        "source": if from_env { KEY_ENV } else { "file" },
        "path": (!from_env).then(|| config.key_file.display().to_string()),
        "opens_store": Value::Null,
    });
    let mut store_facts = json!({
        "path": config.store_file.display().to_string(),
        "exists": store_exists,
        "secrets": Value::Null,
        "damaged": [],
    });
    let names = match store.master_key() {
        Err(e) => {
            let level = if store_exists || any_secret_granted(config) {
                Level::Error
            } else {
                Level::Warn
            };
            report.add("master key", level, describe(&e));
            key_facts["error"] = json!(describe(&e));
            report.add(
                "store",
                if store_exists {
                    Level::Error
                } else {
                    Level::Warn
                },
                format!(
                    "store {} not checked: there is no usable master key",
                    config.store_file.display()
                ),
            );
            None
        }
        Ok(_) if !store_exists => {
            report.add(
                "master key",
                Level::Ok,
                format!("from {source} (no store yet to check it against)"),
            );
            report.add(
                "store",
                Level::Ok,
                format!(
                    "no store yet at {} (0 secrets); `keycycle secrets set` creates it",
                    config.store_file.display()
                ),
            );
            store_facts["secrets"] = json!(0);
            Some(BTreeSet::new())
        }
        Ok(key) => match SecretStore::open(&config.store_file, &key) {
            Err(e) => {
                let e = anyhow::Error::new(e);
                report.add(
                    "master key",
                    Level::Error,
                    format!("from {source}: {}", describe(&e)),
                );
                key_facts["opens_store"] = json!(false);
                store_facts["error"] = json!(describe(&e));
                None
            }
            Ok(opened) => {
                report.add(
                    "master key",
                    Level::Ok,
                    format!("from {source}; it opens the store (key check passed)"),
                );
                key_facts["opens_store"] = json!(true);
                let names: BTreeSet<String> = opened.list().into_iter().map(|i| i.name).collect();
                // Decrypting each entry is the only way to find one that
                // was altered; the values are dropped (and wiped) at once.
                let mut damaged = Vec::new();
                for name in &names {
                    if let Err(e) = opened.get(name) {
                        report.add("store", Level::Error, one_line(&e.to_string()));
                        damaged.push(name.clone());
                    }
                }
                report.add(
                    "store",
                    Level::Ok,
                    format!(
                        "{} secret{} in {}",
                        names.len(),
                        if names.len() == 1 { "" } else { "s" },
                        config.store_file.display()
                    ),
                );
                store_facts["secrets"] = json!(names.len());
                store_facts["damaged"] = json!(damaged);
                Some(names)
            }
        },
    };
    report.facts.insert("master_key".into(), key_facts);
    report.facts.insert("store".into(), store_facts);
    names
}

/// The cache folder: missing is fine (the first load creates it); a folder
/// someone else owns makes every plugin load fail. Returns the cache to
/// load plugins with, `None` when using it would create or change it.
fn cache_section(dir: &Path, report: &mut Report) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    const S: &str = "cache";
    let me = rustix::process::geteuid().as_raw();
    let shown = dir.display();
    let (facts, usable) = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.add(
                S,
                Level::Ok,
                format!("plugin cache {shown} does not exist yet; the first plugin load creates it (mode 0700)"),
            );
            (json!({ "path": shown.to_string(), "exists": false }), false)
        }
        Err(e) => {
            report.add(
                S,
                Level::Error,
                format!("cannot read plugin cache {shown}: {e}; check cache_dir in keycycle.toml"),
            );
            (
                json!({ "path": shown.to_string(), "exists": Value::Null, "error": e.to_string() }),
                false,
            )
        }
        Ok(meta) => {
            let mode = meta.mode() & 0o7777;
            let facts = json!({
                "path": shown.to_string(),
                "exists": true,
                "mode": format!("{mode:04o}"),
                "owner_uid": meta.uid(),
                "owned_by_you": meta.uid() == me,
            });
            if meta.file_type().is_symlink() {
                report.add(
                    S,
                    Level::Error,
                    format!(
                        "plugin cache {shown} is a symbolic link, which plugin loads refuse; \
                         point cache_dir at the real folder"
                    ),
                );
                (facts, false)
            } else if !meta.is_dir() {
                report.add(
                    S,
                    Level::Error,
                    format!("plugin cache {shown} is not a folder; point cache_dir elsewhere or remove it"),
                );
                (facts, false)
            } else if meta.uid() != me {
                report.add(
                    S,
                    Level::Error,
                    format!(
                        "plugin cache {shown} belongs to uid {}, not you (uid {me}); every plugin \
                         load refuses it: remove it, or set cache_dir in keycycle.toml",
                        meta.uid()
                    ),
                );
                (facts, false)
            } else if mode & 0o022 != 0 {
                report.add(
                    S,
                    Level::Error,
                    format!(
                        "plugin cache {shown} has mode {mode:04o}: others could have planted \
                         machine code in it, and every plugin load refuses it; remove it \
                         (`rm -r {shown}`, it is only a cache) or, if you trust its contents, \
                         `chmod 700 {shown}`"
                    ),
                );
                (facts, false)
            } else if mode & 0o777 != 0o700 {
                report.add(
                    S,
                    Level::Warn,
                    format!("plugin cache {shown} has mode {mode:04o}; expected 0700 (run `chmod 700 {shown}`)"),
                );
                (facts, true)
            } else {
                report.add(
                    S,
                    Level::Ok,
                    format!("plugin cache {shown}: mode 0700, owned by you"),
                );
                (facts, true)
            }
        }
    };
    report.facts.insert("cache".into(), facts);
    usable.then(|| dir.to_owned())
}

async fn plugins_section(
    config: &Config,
    store: Arc<StoreAccess>,
    cache: Option<std::path::PathBuf>,
    report: &mut Report,
) {
    const S: &str = "plugins";
    if config.plugins.is_empty() {
        report.facts.insert("plugins".into(), json!([]));
        return;
    }
    // The same loading `plugins list` and `plugins inspect` do (base
    // grants, no --env overlay).
    let (_sandbox, plugins) =
        match load_plugins_cached(config, None, store, cache, None, None).await {
            Ok(loaded) => loaded,
            Err(e) => {
                report.add(S, Level::Error, describe(&e));
                report
                    .facts
                    .insert("plugins".into(), json!({ "error": describe(&e) }));
                return;
            }
        };
    let mut rows = Vec::new();
    for (name, loaded) in &plugins {
        let path = config.plugins[name].path.display().to_string();
        match loaded {
            LoadedPlugin::Ready {
                plugin,
                description,
                ..
            } => {
                let granted = plugins_cmd::granted(plugin).await;
                let list = |key: &str| {
                    granted[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| match v.as_str() {
                            Some(s) => s.to_owned(),
                            None => format!(
                                "{} = {}",
                                v["name"].as_str().unwrap_or(""),
                                v["store"].as_str().unwrap_or("")
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                report.add(
                    S,
                    Level::Ok,
                    one_line(&format!(
                        "{name}: {} {} loads; granted hosts [{}], secrets [{}], config [{}]",
                        description.name,
                        description.version,
                        list("hosts"),
                        list("secrets"),
                        list("config"),
                    )),
                );
                for problem in granted["host_problems"].as_array().into_iter().flatten() {
                    report.add(
                        S,
                        Level::Warn,
                        format!(
                            "{name}: host {}: {}",
                            problem["host"].as_str().unwrap_or(""),
                            problem["problem"].as_str().unwrap_or("")
                        ),
                    );
                }
                for gap in plugin.unmatched() {
                    report.add(
                        S,
                        Level::Warn,
                        one_line(&format!("{name}: not effective: {gap}")),
                    );
                }
                rows.push(json!({
                    "name": name,
                    "path": path,
                    "status": "ok",
                    "plugin": description.name,
                    "version": description.version,
                    "sha256": plugin.sha256(),
                    "granted": granted,
                    "not_effective": plugin.unmatched(),
                }));
            }
            LoadedPlugin::Refused { message, denied } => {
                report.add(S, Level::Error, one_line(message));
                rows.push(json!({
                    "name": name,
                    "path": path,
                    "status": if *denied { "refused" } else { "error" },
                    "error": message,
                }));
            }
        }
    }
    report.facts.insert("plugins".into(), json!(rows));
}

/// Secrets granted to plugins (base and `--env` overlays) and runbooks that
/// are not in the store. A plugin's missing secret is an error: the plugin
/// reads it. A runbook's is a warning: runbooks also write secrets that do
/// not exist yet (`store_secret()` when adopting or creating a credential).
fn granted_secrets(config: &Config, names: Option<&BTreeSet<String>>, report: &mut Report) {
    const S: &str = "secrets";
    let mut wanted: Vec<(String, String, Level)> = Vec::new();
    for (plugin, section) in &config.plugins {
        for (as_name, store_name) in &section.secrets {
            wanted.push((
                store_name.clone(),
                format!("plugin `{plugin}` (as `{as_name}`)"),
                Level::Error,
            ));
        }
        for (env, overlay) in &section.envs {
            for (as_name, store_name) in &overlay.secrets {
                wanted.push((
                    store_name.clone(),
                    format!("plugin `{plugin}` with --env {env} (as `{as_name}`)"),
                    Level::Error,
                ));
            }
        }
    }
    for (runbook, section) in &config.runbooks {
        for store_name in &section.secrets {
            wanted.push((
                store_name.clone(),
                format!("runbook `{runbook}`"),
                Level::Warn,
            ));
        }
    }
    let Some(names) = names else {
        if !wanted.is_empty() {
            report.add(
                S,
                Level::Warn,
                "granted secrets not checked: the store could not be read",
            );
        }
        report.facts.insert("missing_secrets".into(), Value::Null);
        return;
    };
    let mut missing = Vec::new();
    for (store_name, granted_to, level) in &wanted {
        if names.contains(store_name) {
            continue;
        }
        let advice = if *level == Level::Error {
            format!("add it with `keycycle secrets set {store_name}`")
        } else {
            format!(
                "fine if the runbook creates it with store_secret(); otherwise add it with \
                 `keycycle secrets set {store_name}`"
            )
        };
        report.add(
            S,
            *level,
            format!(
                "secret `{store_name}`, granted to {granted_to}, is not in the store; {advice}"
            ),
        );
        missing.push(json!({ "secret": store_name, "granted_to": granted_to, "level": level }));
    }
    if !wanted.is_empty() && missing.is_empty() {
        report.add(
            S,
            Level::Ok,
            format!("all {} granted secrets are in the store", wanted.len()),
        );
    }
    report
        .facts
        .insert("missing_secrets".into(), json!(missing));
}

fn print(report: &Report, as_json: bool) -> Result<()> {
    let out = if as_json {
        let mut doc = report.facts.clone();
        doc.insert("status".into(), json!(report.worst()));
        doc.insert("checks".into(), json!(report.checks));
        serde_json::to_string_pretty(&Value::Object(doc)).context("cannot write the report")? + "\n"
    } else {
        let mut text = String::new();
        let mut section = "";
        for check in &report.checks {
            if check.section != section {
                if !section.is_empty() {
                    text.push('\n');
                }
                section = check.section;
                text.push_str(section);
                text.push('\n');
            }
            text.push_str(&format!(
                "  {:<5}  {}\n",
                check.level.word(),
                one_line(&check.message)
            ));
        }
        let (errors, warnings) = (report.count(Level::Error), report.count(Level::Warn));
        text.push_str(&format!(
            "\n{errors} error{}, {warnings} warning{}\n",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        ));
        text
    };
    // Decrypting entries registered every stored value with the redactor.
    out!("{}", keycycle_secret::redact(&out));
    Ok(())
}
