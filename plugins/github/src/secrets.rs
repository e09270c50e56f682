//! Actions secrets of a repository, an environment or an organisation:
//! the scope's public key, writing a value sealed with it, and reading,
//! listing and deleting secrets' metadata. GitHub never returns a value
//! (reference: `GET` gives only `{name, created_at, updated_at}`).

use keycycle_plugin_sdk::{Error, Input, Value, json};

use crate::api::Api;
use crate::scope::Scope;
use crate::seal::seal;

/// At most this many list pages of 100 are read: the host allows 100
/// requests per call, and 5,000 secrets is far beyond GitHub's limits.
const MAX_PAGES: u32 = 50;

/// `{key_id, key}` of the scope's public key, plus the scope.
pub(crate) fn public_key(api: &Api, input: &Value) -> Result<Value, Error> {
    let scope = Scope::from_input(input)?;
    let key = fetch_key(api, &scope)?;
    let mut out = scope.describe();
    out["key_id"] = json!(key.0);
    out["key"] = json!(key.1);
    Ok(out)
}

fn fetch_key(api: &Api, scope: &Scope) -> Result<(String, String), Error> {
    let path = format!("{}/public-key", scope.secrets_path());
    let answer = api.json(api.request("GET", &path))?;
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::provider(200, format!("GitHub's public key has no `{name}`")))
    };
    Ok((field("key_id")?, field("key")?))
}

/// The secret name as GitHub stores it (upper case); refused when empty,
/// so that a blank name never turns into a request on the list path.
fn secret_name(input: &Value) -> Result<String, Error> {
    let name = input.str_field("name")?.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("`name` is empty"));
    }
    Ok(name.to_ascii_uppercase())
}

/// The body of the PUT: the sealed value, the key's id, and for an
/// organisation its `visibility` and `selected_repository_ids`.
pub(crate) fn put_body(
    scope: &Scope,
    input: &Value,
    key_id: &str,
    encrypted_value: &str,
) -> Result<Value, Error> {
    let mut body = json!({ "encrypted_value": encrypted_value, "key_id": key_id });
    let visibility = input.opt_str_field("visibility")?.map(str::trim);
    let selected = input.field("selected_repository_ids");
    if !scope.is_org() {
        if visibility.is_some() || selected.is_some() {
            return Err(Error::invalid_input(
                "`visibility` and `selected_repository_ids` apply to organisation secrets only",
            ));
        }
        return Ok(body);
    }
    let visibility = match visibility {
        Some(v @ ("all" | "private" | "selected")) => v,
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "`visibility` must be all, private or selected, not `{other}`"
            )));
        }
        None => {
            return Err(Error::invalid_input(
                "an organisation secret needs `visibility`: all, private or selected",
            ));
        }
    };
    body["visibility"] = json!(visibility);
    if let Some(selected) = selected {
        if visibility != "selected" {
            return Err(Error::invalid_input(
                "`selected_repository_ids` needs `visibility` = selected",
            ));
        }
        let ids = selected
            .as_array()
            .map(|ids| ids.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .and_then(|ids| ids)
            .ok_or_else(|| {
                Error::invalid_input("`selected_repository_ids` must be an array of repository ids")
            })?;
        body["selected_repository_ids"] = json!(ids);
    }
    Ok(body)
}

/// Seals `value` with the scope's current public key and PUTs it: the same
/// call again stores the same value, so it is safe to repeat.
pub(crate) fn set(api: &Api, input: &Value) -> Result<Value, Error> {
    let scope = Scope::from_input(input)?;
    let name = secret_name(input)?;
    let value = input.str_field("value")?;
    if value.is_empty() {
        return Err(Error::invalid_input("`value` is empty"));
    }
    // Checked before any request, so a bad input costs nothing.
    put_body(&scope, input, "", "")?;
    let (key_id, key) = fetch_key(api, &scope)?;
    let sealed = seal(&key, value.as_bytes())?;
    let body = put_body(&scope, input, &key_id, &sealed)?;
    let response = api.send(api.request("PUT", &scope.secret_path(&name)?).json(&body))?;
    let mut out = scope.describe();
    out["name"] = json!(name);
    out["created"] = json!(response.status == 201);
    out["key_id"] = json!(key_id);
    Ok(out)
}

/// A secret's metadata as GitHub shows it, plus the scope.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    let scope = Scope::from_input(input)?;
    let name = secret_name(input)?;
    let answer = api.json(api.request("GET", &scope.secret_path(&name)?))?;
    let mut out = scope.describe();
    merge(&mut out, &answer);
    Ok(out)
}

/// Every secret's metadata in the scope, following GitHub's pages.
pub(crate) fn list(api: &Api, input: &Value) -> Result<Value, Error> {
    let scope = Scope::from_input(input)?;
    let mut secrets = Vec::new();
    for page in 1..=MAX_PAGES {
        let answer = api.json(
            api.request("GET", &scope.secrets_path())
                .query("per_page", "100")
                .query("page", &page.to_string()),
        )?;
        let items = answer["secrets"].as_array().cloned().unwrap_or_default();
        let total = answer["total_count"].as_u64().unwrap_or(0);
        let last = items.is_empty();
        secrets.extend(items);
        if last || secrets.len() as u64 >= total {
            let mut out = scope.describe();
            out["total_count"] = json!(secrets.len());
            out["secrets"] = Value::Array(secrets);
            return Ok(out);
        }
    }
    Err(Error::provider(
        200,
        format!(
            "more than {} secrets in {}; the plugin stops listing there",
            MAX_PAGES * 100,
            scope.secrets_path()
        ),
    ))
}

/// Deletes a secret; one already gone (404) counts as deleted.
pub(crate) fn delete(api: &Api, input: &Value) -> Result<Value, Error> {
    let scope = Scope::from_input(input)?;
    let name = secret_name(input)?;
    let mut out = scope.describe();
    out["name"] = json!(name);
    out["deleted"] = json!(true);
    match api.send(api.request("DELETE", &scope.secret_path(&name)?)) {
        Ok(_) => Ok(out),
        Err(Error::Provider { status: 404, .. }) => {
            out["already_gone"] = json!(true);
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

fn merge(out: &mut Value, answer: &Value) {
    if let (Some(out), Some(answer)) = (out.as_object_mut(), answer.as_object()) {
        for (k, v) in answer {
            out.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bodies_carry_org_fields_only_for_orgs() {
        let env = Scope::from_input(&json!({"repo": "acme/qa", "environment": "stg"})).unwrap();
        assert_eq!(
            put_body(&env, &json!({}), "k1", "c2VhbGVk").unwrap(),
            json!({"encrypted_value": "c2VhbGVk", "key_id": "k1"})
        );
        assert!(put_body(&env, &json!({"visibility": "all"}), "k", "v").is_err());

        let org = Scope::from_input(&json!({"org": "acme"})).unwrap();
        assert!(
            put_body(&org, &json!({}), "k", "v").is_err(),
            "visibility is required"
        );
        assert!(put_body(&org, &json!({"visibility": "public"}), "k", "v").is_err());
        assert_eq!(
            put_body(
                &org,
                &json!({"visibility": "selected", "selected_repository_ids": [1, 2]}),
                "k",
                "v"
            )
            .unwrap(),
            json!({"encrypted_value": "v", "key_id": "k", "visibility": "selected",
                   "selected_repository_ids": [1, 2]})
        );
        for bad in [
            json!({"visibility": "all", "selected_repository_ids": [1]}),
            json!({"visibility": "selected", "selected_repository_ids": ["1"]}),
            json!({"visibility": "selected", "selected_repository_ids": 1}),
        ] {
            assert!(put_body(&org, &bad, "k", "v").is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_upper_cased_and_never_blank() {
        assert_eq!(
            secret_name(&json!({"name": " qa_git_token "})).unwrap(),
            "QA_GIT_TOKEN"
        );
        assert!(secret_name(&json!({"name": "  "})).is_err());
    }
}
