//! Project CI/CD variables (`doc/api/project_level_variables.md`): read
//! one, check that it can be written, and write a new value. Variables are
//! keyed by `key` and `environment_scope`; when several scopes share a key,
//! `filter[environment_scope]` picks one, and without it GitLab answers
//! 409 "There are multiple variables with provided parameters. Please use
//! 'filter[environment_scope]'", which this plugin passes on unchanged.

use keycycle_plugin_sdk::{Error, Input, Value, http, json, log};

use crate::api::{Api, Call};
use crate::fields;
use crate::masking;
use crate::permissions::require_maintainer;

/// Which variable an operation means.
struct Target {
    project: String,
    key: String,
    /// `key` as one path segment.
    key_segment: String,
    scope: Option<String>,
}

impl Target {
    fn from_input(input: &Value) -> Result<Target, Error> {
        let key = fields::non_blank(input, "key")?.trim().to_owned();
        // A key of `.` or `..` would name the project, not a variable.
        let key_segment = http::segment(&key, "input `key`")?;
        Ok(Target {
            project: fields::resource_ref(input, "project")?,
            key,
            key_segment,
            scope: input.opt_str_field("environment_scope")?.map(str::to_owned),
        })
    }

    fn path(&self) -> String {
        format!("/projects/{}/variables/{}", self.project, self.key_segment)
    }

    /// `call` narrowed to the scope, when one was given.
    fn filtered(&self, call: Call) -> Call {
        match &self.scope {
            Some(scope) => call.query("filter[environment_scope]", scope.clone()),
            None => call,
        }
    }

    fn describe(&self) -> String {
        match &self.scope {
            Some(scope) => format!("`{}` (environment scope `{scope}`)", self.key),
            None => format!("`{}`", self.key),
        }
    }

    fn read(&self, api: &Api) -> Result<Value, Error> {
        api.json(&self.filtered(Call::get(self.path())))
    }
}

/// `GET /projects/:id/variables/:key`, narrowed by
/// `filter[environment_scope]` when a scope is given. A hidden variable's
/// value comes back null.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    let variable = Target::from_input(input)?.read(api)?;
    Ok(json!({
        "key": variable["key"],
        "value": variable["value"],
        "masked": variable["masked"],
        "protected": variable["protected"],
        "raw": variable["raw"],
        "variable_type": variable["variable_type"],
        "environment_scope": variable["environment_scope"],
        "description": variable["description"],
    }))
}

/// Check, without writing, that the variable exists, that the plugin may
/// change it, and, when it is masked and `sample` is given, that a value
/// like `sample` would be accepted.
pub(crate) fn check_writable(api: &Api, input: &Value) -> Result<Value, Error> {
    let target = Target::from_input(input)?;
    let variable = target.read(api)?;
    let masked = variable["masked"].as_bool().unwrap_or(false);
    let raw = variable["raw"].as_bool().unwrap_or(false);
    if let Some(sample) = input.opt_str_field("sample")?
        && masked
        && let Some(why) = masking::violation(sample, raw)
    {
        return Err(masked_refusal(&target, &why));
    }
    require_maintainer(
        api,
        &target.project,
        &format!("update CI/CD variable {}", target.describe()),
    )?;
    Ok(json!({
        "writable": true,
        "masked": masked,
        "protected": variable["protected"],
        "environment_scope": variable["environment_scope"],
    }))
}

/// `PUT /projects/:id/variables/:key` with the new value (and `masked`,
/// `protected` when given). A value GitLab could not mask is refused here,
/// before anything is written.
pub(crate) fn update(api: &Api, input: &Value) -> Result<Value, Error> {
    let target = Target::from_input(input)?;
    let value = input.str_field("value")?;
    let masked = input.opt_bool_field("masked")?;
    let protected = input.opt_bool_field("protected")?;
    check_mask_before_writing(api, &target, value, masked)?;

    let mut body = json!({ "value": value });
    if let Some(masked) = masked {
        body["masked"] = json!(masked);
    }
    if let Some(protected) = protected {
        body["protected"] = json!(protected);
    }
    let call = target.filtered(Call::put(target.path()).json(body));
    let updated = api.json(&call)?;
    log::info(&format!(
        "updated CI/CD variable {} in project {}",
        target.describe(),
        crate::fields::display_ref(&target.project)
    ));
    Ok(json!({
        "key": updated["key"],
        "environment_scope": updated["environment_scope"],
        "masked": updated["masked"],
        "protected": updated["protected"],
    }))
}

/// Refuse `value` when the variable is or will be masked and GitLab would
/// reject the value. Which rule applies depends on the variable's `raw`
/// flag, so when the value passes only the looser rule the variable is
/// read first; a value that passes the strict rule, or a variable being
/// unmasked, needs no read.
fn check_mask_before_writing(
    api: &Api,
    target: &Target,
    value: &str,
    masked: Option<bool>,
) -> Result<(), Error> {
    if masked == Some(false) || masking::violation(value, false).is_none() {
        return Ok(());
    }
    if masked == Some(true)
        && let Some(why) = masking::violation(value, true)
    {
        return Err(masked_refusal(target, &why));
    }
    let current = target.read(api)?;
    let will_be_masked = masked.unwrap_or_else(|| current["masked"].as_bool().unwrap_or(false));
    let raw = current["raw"].as_bool().unwrap_or(false);
    match masking::violation(value, raw) {
        Some(why) if will_be_masked => Err(masked_refusal(target, &why)),
        _ => Ok(()),
    }
}

fn masked_refusal(target: &Target, why: &str) -> Error {
    Error::invalid_input(format!(
        "masked CI/CD variable {} cannot take this value: {why}; nothing was written",
        target.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_encode_the_key_and_carry_the_scope() {
        let t = Target::from_input(&json!({"project": "acme/api", "key": "DEPLOY_TOKEN",
                                           "environment_scope": "production"}))
        .unwrap();
        assert_eq!(t.path(), "/projects/acme%2Fapi/variables/DEPLOY_TOKEN");
        assert_eq!(
            t.describe(),
            "`DEPLOY_TOKEN` (environment scope `production`)"
        );
        let t = Target::from_input(&json!({"project": 7, "key": "K"})).unwrap();
        assert_eq!(t.describe(), "`K`");
        assert!(Target::from_input(&json!({"project": 7, "key": " "})).is_err());
    }

    #[test]
    fn refusals_name_the_variable_and_the_rule() {
        let t = Target::from_input(&json!({"project": 7, "key": "API_KEY"})).unwrap();
        let why = masking::violation("zq#9", false).unwrap();
        let Error::InvalidInput(m) = masked_refusal(&t, &why) else {
            panic!("wrong kind")
        };
        assert!(m.contains("`API_KEY`") && m.contains("8 characters"), "{m}");
        assert!(
            m.contains("Base64") && m.contains("nothing was written"),
            "{m}"
        );
        assert!(!m.contains("zq#9"), "{m}");
    }
}
