//! Builders for what a plugin declares about itself: its operations, the
//! origins it calls, the secrets it reads and the config it needs.

use serde_json::Value;

use crate::Error;
use crate::bindings::keycycle::plugin::types as wit;

/// What a plugin is and what it needs, built with chained calls:
///
/// ```ignore
/// Description::new("example", "0.1.0")
///     .host("{config.base_url}")
///     .secret("token")
///     .config("base_url")
///     .operation(Operation::new("whoami", "Who the admin token belongs to"))
/// ```
#[derive(Debug, Clone)]
pub struct Description {
    name: String,
    version: String,
    operations: Vec<Operation>,
    hosts: Vec<String>,
    secrets: Vec<String>,
    config: Vec<String>,
}

impl Description {
    /// A plugin called `name` at `version`, declaring nothing yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Description {
            name: name.into(),
            version: version.into(),
            operations: Vec::new(),
            hosts: Vec::new(),
            secrets: Vec::new(),
            config: Vec::new(),
        }
    }

    /// Declare a network origin, `scheme://host[:port]`, or
    /// `{config.KEY}` for the origin of the config value `KEY`.
    pub fn host(mut self, origin: impl Into<String>) -> Self {
        self.hosts.push(origin.into());
        self
    }

    /// Declare a secret the plugin reads with [`secret`](crate::secret).
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.secrets.push(name.into());
        self
    }

    /// Declare a config value the plugin reads with
    /// [`Context::config`](crate::Context::config).
    pub fn config(mut self, key: impl Into<String>) -> Self {
        self.config.push(key.into());
        self
    }

    /// Declare an operation.
    pub fn operation(mut self, operation: Operation) -> Self {
        self.operations.push(operation);
        self
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared operation called `name`.
    pub fn find(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|op| op.name == name)
    }

    /// The names of all declared operations, in declaration order.
    pub fn operation_names(&self) -> Vec<&str> {
        self.operations.iter().map(|op| op.name.as_str()).collect()
    }
}

/// One thing a plugin can do at its provider. Non-mutating, with no
/// inputs, until told otherwise.
#[derive(Debug, Clone)]
pub struct Operation {
    name: String,
    doc: String,
    inputs: Vec<Field>,
    secret_outputs: Vec<String>,
    mutates: bool,
    recover_with: Option<String>,
    idempotent: bool,
    if_interrupted: Option<String>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    doc: String,
    required: bool,
}

impl Operation {
    /// An operation called `name`; `doc` is the one line shown by
    /// `keycycle plugins inspect`.
    pub fn new(name: impl Into<String>, doc: impl Into<String>) -> Self {
        Operation {
            name: name.into(),
            doc: doc.into(),
            inputs: Vec::new(),
            secret_outputs: Vec::new(),
            mutates: false,
            recover_with: None,
            idempotent: false,
            if_interrupted: None,
        }
    }

    /// Declare an input field. A required field that is missing or null is
    /// refused before [`Plugin::invoke`](crate::Plugin::invoke) runs.
    pub fn input(
        mut self,
        name: impl Into<String>,
        doc: impl Into<String>,
        required: bool,
    ) -> Self {
        self.inputs.push(Field {
            name: name.into(),
            doc: doc.into(),
            required,
        });
        self
    }

    /// Declare a top-level output field whose value is a secret. The host
    /// turns it into an opaque handle before the runbook sees it.
    pub fn secret_output(mut self, name: impl Into<String>) -> Self {
        self.secret_outputs.push(name.into());
        self
    }

    /// Mark the operation as changing something at the provider; a dry run
    /// prints it instead of sending it.
    pub fn mutates(mut self) -> Self {
        self.mutates = true;
        self
    }

    /// Name the non-mutating operation that finds what an interrupted call
    /// of this one created: it takes the same input and call context and
    /// answers with the created object, or fails with provider status 404.
    pub fn recover_with(mut self, operation: impl Into<String>) -> Self {
        self.recover_with = Some(operation.into());
        self
    }

    /// Mark a mutating operation as safe to send twice: the second call has
    /// no further effect (setting a value, deleting what may be gone). The
    /// host re-sends such a call when a run was interrupted mid-call.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// What an operator must know when a call of this operation was
    /// interrupted and its outcome is unknown: what may have happened at
    /// the provider, what to check, and what to run next.
    pub fn if_interrupted(mut self, advice: impl Into<String>) -> Self {
        self.if_interrupted = Some(advice.into());
        self
    }

    /// Check `input` against the declared fields: a JSON object holding
    /// every required field (not null) and nothing undeclared. Errors name
    /// the field, never its value, which may be a secret.
    pub fn check_input(&self, input: &Value) -> Result<(), Error> {
        let Value::Object(fields) = input else {
            return Err(Error::invalid_input(format!(
                "the input of `{}` must be a JSON object",
                self.name
            )));
        };
        for field in self.inputs.iter().filter(|f| f.required) {
            if fields.get(&field.name).is_none_or(Value::is_null) {
                return Err(Error::invalid_input(format!(
                    "operation `{}` needs input `{}` ({})",
                    self.name, field.name, field.doc
                )));
            }
        }
        if let Some(unknown) = fields
            .keys()
            .find(|key| !self.inputs.iter().any(|f| &f.name == *key))
        {
            let accepted: Vec<&str> = self.inputs.iter().map(|f| f.name.as_str()).collect();
            return Err(Error::invalid_input(format!(
                "operation `{}` does not take input `{unknown}`; it takes: {}",
                self.name,
                if accepted.is_empty() {
                    "nothing".to_owned()
                } else {
                    accepted.join(", ")
                }
            )));
        }
        Ok(())
    }
}

impl From<Description> for wit::Description {
    fn from(d: Description) -> Self {
        wit::Description {
            name: d.name,
            version: d.version,
            operations: d.operations.into_iter().map(Into::into).collect(),
            hosts: d.hosts,
            secrets: d.secrets,
            config: d.config,
        }
    }
}

impl From<Operation> for wit::Operation {
    fn from(op: Operation) -> Self {
        wit::Operation {
            name: op.name,
            doc: op.doc,
            inputs: op
                .inputs
                .into_iter()
                .map(|f| wit::Field {
                    name: f.name,
                    doc: f.doc,
                    required: f.required,
                })
                .collect(),
            secret_outputs: op.secret_outputs,
            mutates: op.mutates,
            recover_with: op.recover_with,
            idempotent: op.idempotent,
            if_interrupted: op.if_interrupted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create() -> Operation {
        Operation::new("create_token", "Create a token")
            .input("name", "token name", true)
            .input("note", "free text", false)
            .secret_output("token")
            .mutates()
            .recover_with("find_token")
    }

    #[test]
    fn accepts_required_and_optional_inputs() {
        create().check_input(&json!({"name": "ci"})).unwrap();
        create()
            .check_input(&json!({"name": "ci", "note": null}))
            .unwrap();
    }

    #[test]
    fn refuses_missing_null_unknown_and_non_objects() {
        for input in [json!({}), json!({"name": null})] {
            let err = create().check_input(&input).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains("`name`")),
                "{err}"
            );
        }
        let err = create()
            .check_input(&json!({"name": "x", "nmae": "hunter2"}))
            .unwrap_err();
        let Error::InvalidInput(m) = err else {
            panic!("wrong kind")
        };
        assert!(m.contains("`nmae`") && m.contains("name, note"), "{m}");
        assert!(!m.contains("hunter2"));
        assert!(create().check_input(&json!(["name"])).is_err());
    }

    #[test]
    fn converts_to_the_wit_record() {
        let d: wit::Description = Description::new("example", "0.1.0")
            .host("{config.base_url}")
            .secret("token")
            .config("base_url")
            .operation(create())
            .operation(Operation::new("find_token", "Find a token"))
            .into();
        assert_eq!(d.name, "example");
        assert_eq!(d.hosts, ["{config.base_url}"]);
        assert_eq!(d.secrets, ["token"]);
        assert_eq!(d.config, ["base_url"]);
        let op = &d.operations[0];
        assert!(op.mutates);
        assert_eq!(op.secret_outputs, ["token"]);
        assert_eq!(op.recover_with.as_deref(), Some("find_token"));
        assert_eq!(op.inputs.len(), 2);
        assert!(op.inputs[0].required && !op.inputs[1].required);
        assert!(!d.operations[1].mutates);
        assert_eq!(d.operations[1].recover_with, None);
    }
}
