//! Checks a plugin's self-description before anyone grants it
//! (`keycycle plugins check`): names a runbook can call, inputs and secret
//! outputs without clashes, recovery pairs that can work, and hosts that
//! can be granted. The host loads a plugin whatever it claims; these are
//! the mistakes that show up later, mid-rotation, as a resume that cannot
//! recover or a call no runbook can make.

use std::collections::BTreeSet;

use keycycle_contract::{OperationSpec, PluginDescription};
use serde::Serialize;

use crate::grants::Origin;
use crate::text::echo;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The plugin will fail someone: do not grant it as it is.
    Error,
    /// Legal, but probably not what the author meant.
    Warning,
}

/// One thing [`check_description`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The operation it is about, if one.
    pub operation: Option<String>,
    pub message: String,
}

/// Everything wrong with `d`, errors first. Names in messages are the
/// plugin's own text, escaped.
pub fn check_description(d: &PluginDescription) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |severity, operation: Option<&OperationSpec>, message: String| {
        out.push(Finding {
            severity,
            operation: operation.map(|op| echo(&op.name)),
            message,
        });
    };
    if !is_name(&d.name, true) {
        add(
            Severity::Error,
            None,
            format!(
                "the plugin's name `{}` is not a name: use lowercase letters, digits, `-` and `_`",
                echo(&d.name)
            ),
        );
    }
    if d.version.trim().is_empty() {
        add(Severity::Warning, None, "the plugin has no version".into());
    }
    if d.operations.is_empty() {
        add(
            Severity::Error,
            None,
            "the plugin declares no operation".into(),
        );
    }
    for dup in duplicates(d.secrets.iter()) {
        add(
            Severity::Warning,
            None,
            format!("secret `{}` is declared twice", echo(dup)),
        );
    }
    for dup in duplicates(d.config.iter()) {
        add(
            Severity::Warning,
            None,
            format!("config key `{}` is declared twice", echo(dup)),
        );
    }
    for host in &d.hosts {
        match host
            .strip_prefix("{config.")
            .and_then(|k| k.strip_suffix('}'))
        {
            Some(key) if !d.config.iter().any(|c| c == key) => add(
                Severity::Error,
                None,
                format!(
                    "host `{}` names config key `{}`, which the plugin does not declare \
                     (`.config(\"{}\")`)",
                    echo(host),
                    echo(key),
                    echo(key)
                ),
            ),
            Some(_) => {}
            None => {
                if let Err(why) = Origin::parse_grant(host) {
                    add(
                        Severity::Error,
                        None,
                        format!(
                            "host `{}` can never be granted: {}; declare \
                             `scheme://host[:port]` or `{{config.KEY}}`",
                            echo(host),
                            echo(&why)
                        ),
                    );
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for op in &d.operations {
        if !seen.insert(op.name.as_str()) {
            add(
                Severity::Error,
                Some(op),
                "is declared twice; a runbook could reach only one of them".into(),
            );
        }
        if !is_name(&op.name, false) {
            add(
                Severity::Error,
                Some(op),
                "is not a name a runbook can call (`p.NAME(...)`): use lowercase letters, \
                 digits and `_`, starting with a letter"
                    .into(),
            );
        }
        for dup in duplicates(op.inputs.iter().map(|f| &f.name)) {
            add(
                Severity::Error,
                Some(op),
                format!("input `{}` is declared twice", echo(dup)),
            );
        }
        for dup in duplicates(op.secret_outputs.iter()) {
            add(
                Severity::Warning,
                Some(op),
                format!("secret output `{}` is declared twice", echo(dup)),
            );
        }
        for field in op.inputs.iter().map(|f| &f.name).chain(&op.secret_outputs) {
            if field.is_empty() {
                add(
                    Severity::Error,
                    Some(op),
                    "declares a field with no name".into(),
                );
            }
        }
        check_recovery(d, op, &mut add);
    }
    out.sort_by_key(|f| f.severity != Severity::Error);
    out
}

/// The rules of `recover_with`, `idempotent` and `if_interrupted`.
fn check_recovery(
    d: &PluginDescription,
    op: &OperationSpec,
    add: &mut impl FnMut(Severity, Option<&OperationSpec>, String),
) {
    if let Some(target) = &op.recover_with {
        match d.operation(target) {
            None => add(
                Severity::Error,
                Some(op),
                format!(
                    "recovers with `{}`, which the plugin does not declare",
                    echo(target)
                ),
            ),
            Some(finder) if finder.name == op.name => add(
                Severity::Error,
                Some(op),
                "recovers with itself; the finder must be a read-only operation".into(),
            ),
            Some(finder) if finder.mutates => add(
                Severity::Error,
                Some(op),
                format!(
                    "recovers with `{}`, which mutates; a resume calls the finder to look, so it \
                     must only read",
                    echo(target)
                ),
            ),
            Some(finder) => {
                // The finder gets the interrupted call's input.
                for field in finder.inputs.iter().filter(|f| f.required) {
                    if !op.inputs.iter().any(|i| i.name == field.name) {
                        add(
                            Severity::Error,
                            Some(op),
                            format!(
                                "recovers with `{}`, which requires input `{}` that this \
                                 operation does not take; the finder is called with this \
                                 operation's input",
                                echo(target),
                                echo(&field.name)
                            ),
                        );
                    }
                }
            }
        }
        if !op.mutates {
            add(
                Severity::Warning,
                Some(op),
                "has recover_with but does not mutate; only an interrupted change is recovered"
                    .into(),
            );
        }
    }
    if op.idempotent && !op.mutates {
        add(
            Severity::Warning,
            Some(op),
            "is marked idempotent but does not mutate; reads are sent again anyway".into(),
        );
    }
    if op.mutates && !op.idempotent && op.recover_with.is_none() && op.if_interrupted.is_none() {
        add(
            Severity::Warning,
            Some(op),
            "mutates, and declares no way to settle an interrupted call (idempotent, \
             recover_with or if_interrupted): a resume that finds it cut off stops with \
             generic advice"
                .into(),
        );
    }
}

/// A plugin name (`-` allowed) or an operation name (a Rhai identifier).
fn is_name(name: &str, plugin: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (plugin && c == '-')
        })
}

fn duplicates<'a>(names: impl Iterator<Item = &'a String>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    names
        .filter(|n| !seen.insert(n.as_str()))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_contract::FieldSpec;

    fn op(name: &str) -> OperationSpec {
        OperationSpec {
            name: name.into(),
            doc: "doc".into(),
            inputs: Vec::new(),
            secret_outputs: Vec::new(),
            mutates: false,
            recover_with: None,
            idempotent: false,
            if_interrupted: None,
        }
    }

    fn input(name: &str, required: bool) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            doc: String::new(),
            required,
        }
    }

    fn desc(operations: Vec<OperationSpec>) -> PluginDescription {
        PluginDescription {
            name: "tokens".into(),
            version: "1.0.0".into(),
            operations,
            hosts: vec!["{config.base_url}".into(), "https://api.example.com".into()],
            secrets: vec!["token".into()],
            config: vec!["base_url".into()],
        }
    }

    fn messages(d: &PluginDescription) -> Vec<String> {
        check_description(d)
            .into_iter()
            .map(|f| {
                format!(
                    "{:?} {}: {}",
                    f.severity,
                    f.operation.unwrap_or_default(),
                    f.message
                )
            })
            .collect()
    }

    #[test]
    fn a_sound_description_has_nothing_to_say() {
        let create = OperationSpec {
            inputs: vec![input("name", true)],
            secret_outputs: vec!["token".into()],
            mutates: true,
            recover_with: Some("find".into()),
            ..op("create")
        };
        let find = OperationSpec {
            inputs: vec![input("name", true)],
            ..op("find")
        };
        let revoke = OperationSpec {
            mutates: true,
            idempotent: true,
            ..op("revoke")
        };
        assert_eq!(
            messages(&desc(vec![create, find, revoke])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn broken_recovery_pairs_are_errors() {
        let create = OperationSpec {
            mutates: true,
            recover_with: Some("missing".into()),
            ..op("create")
        };
        let rotate = OperationSpec {
            mutates: true,
            recover_with: Some("delete".into()),
            ..op("rotate")
        };
        let delete = OperationSpec {
            mutates: true,
            idempotent: true,
            ..op("delete")
        };
        let mint = OperationSpec {
            mutates: true,
            recover_with: Some("lookup".into()),
            ..op("mint")
        };
        let lookup = OperationSpec {
            inputs: vec![input("label", true)],
            ..op("lookup")
        };
        let found = messages(&desc(vec![create, rotate, delete, mint, lookup]));
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].contains("create: recovers with `missing`, which the plugin does not declare")
        );
        assert!(found[1].contains("rotate: recovers with `delete`, which mutates"));
        assert!(found[2].contains("mint: recovers with `lookup`, which requires input `label`"));
    }

    #[test]
    fn names_duplicates_and_hosts_are_checked() {
        let mut d = desc(vec![
            op("list"),
            op("list"),
            op("Bad-Name"),
            OperationSpec {
                inputs: vec![input("id", true), input("id", false)],
                ..op("get")
            },
        ]);
        d.name = "My Plugin".into();
        d.hosts.push("{config.other}".into());
        d.hosts.push("https://x.example/path".into());
        let found = messages(&d);
        let errors = found.iter().filter(|m| m.starts_with("Error")).count();
        assert_eq!(errors, 6, "{found:#?}");
        for want in [
            "the plugin's name `My Plugin` is not a name",
            "list: is declared twice",
            "Bad-Name: is not a name a runbook can call",
            "get: input `id` is declared twice",
            "names config key `other`, which the plugin does not declare",
            "host `https://x.example/path` can never be granted",
        ] {
            assert!(found.iter().any(|m| m.contains(want)), "{want}: {found:#?}");
        }
    }

    #[test]
    fn questionable_declarations_are_warnings() {
        let found = messages(&desc(vec![
            OperationSpec {
                mutates: true,
                ..op("delete")
            },
            OperationSpec {
                idempotent: true,
                ..op("read")
            },
        ]));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|m| m.starts_with("Warning")));
        assert!(found[0].contains("delete: mutates, and declares no way to settle"));
        assert!(found[1].contains("read: is marked idempotent but does not mutate"));
    }
}
