//! The operations on secrets, each one request or a short fixed sequence
//! of reads before it (secret-manager-go-sdk `secrets_manager_v2.go` for
//! paths and bodies). A secret's value is only ever output in the field
//! the operation declares secret (`payload`, `password`); the metadata
//! shown everywhere else never carries it.

use keycycle_plugin_sdk::{Context, Error, Input, Value, http, json, log};

use crate::api::{Api, Call};

/// The custom metadata key `create_secret` writes its step's idempotency
/// key under, so `find_created_secret` can tell the secret it made from
/// one that was there before.
pub(crate) const STEP_KEY: &str = "keycycle_step";

/// Page size for lists: the API's maximum (reference: at most 1000).
const PAGE: usize = 1000;

/// The metadata fields the operations return.
const METADATA: &[&str] = &[
    "id",
    "name",
    "secret_type",
    "secret_group_id",
    "crn",
    "description",
    "labels",
    "custom_metadata",
    "state",
    "state_description",
    "created_at",
    "updated_at",
    "created_by",
    "versions_total",
    "locks_total",
    "expiration_date",
    "username",
];

/// The metadata of a secret answer, without its value.
pub(crate) fn metadata(secret: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in METADATA {
        if let Some(v) = secret.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// A secret or version id, checked to be one plain path segment (letters,
/// digits and `-` only, so it is never `.` or `..` and needs no encoding).
fn id_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, Error> {
    let id = input.str_field(name)?.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::invalid_input(format!(
            "input `{name}` must be a secret id (letters, digits and `-`)"
        )));
    }
    Ok(id)
}

fn non_blank<'a>(input: &'a Value, name: &str) -> Result<&'a str, Error> {
    let value = input.str_field(name)?;
    if value.trim().is_empty() {
        return Err(Error::invalid_input(format!("input `{name}` is empty")));
    }
    Ok(value)
}

/// `secret_type` (default `arbitrary`) and `group` (a group **name**,
/// default `default`) of an input.
fn type_and_group(input: &Value) -> Result<(String, String), Error> {
    let secret_type = input
        .opt_str_field("secret_type")?
        .unwrap_or("arbitrary")
        .trim();
    let group = input.opt_str_field("group")?.unwrap_or("default").trim();
    if secret_type.is_empty() || group.is_empty() {
        return Err(Error::invalid_input(
            "inputs `secret_type` and `group` cannot be empty",
        ));
    }
    Ok((secret_type.to_owned(), group.to_owned()))
}

/// `GET /api/v2/secret_groups/{group name}/secret_types/{type}/secrets/{name}`
/// (answers with the value, which callers drop unless they output it).
fn by_name(api: &Api, input: &Value) -> Result<Value, Error> {
    api.json(&Call::get(by_name_path(input)?))
}

/// The path of [`by_name`], each input one path segment (a name of `..`
/// would climb to another resource).
fn by_name_path(input: &Value) -> Result<String, Error> {
    let name = non_blank(input, "name")?.trim();
    let (secret_type, group) = type_and_group(input)?;
    Ok(format!(
        "/api/v2/secret_groups/{}/secret_types/{}/secrets/{}",
        http::segment(&group, "input `group`")?,
        http::segment(&secret_type, "input `secret_type`")?,
        http::segment(name, "input `name`")?
    ))
}

/// The secret an input names: by `id`, or by `name` (with `group` and
/// `secret_type`). The answer carries the current value.
fn read(api: &Api, input: &Value) -> Result<Value, Error> {
    match input.opt_str_field("id")? {
        Some(_) => api.json(&Call::get(format!(
            "/api/v2/secrets/{}",
            id_field(input, "id")?
        ))),
        None if input.opt_str_field("name")?.is_some() => by_name(api, input),
        None => Err(Error::invalid_input("give the secret's `id` or its `name`")),
    }
}

/// `find_secret`: the metadata of the secret with a name in a group and
/// type, or provider 404.
pub(crate) fn find(api: &Api, input: &Value) -> Result<Value, Error> {
    Ok(metadata(&by_name(api, input)?))
}

/// `get_secret`: metadata plus the value, as `payload` (arbitrary) or
/// `password` (username_password); `version` reads an older one.
pub(crate) fn get(api: &Api, input: &Value) -> Result<Value, Error> {
    let Some(version) = input.opt_str_field("version")? else {
        let secret = read(api, input)?;
        let mut out = metadata(&secret);
        out["payload"] = secret["payload"].clone();
        out["password"] = secret["password"].clone();
        return Ok(out);
    };
    let version = match version.trim() {
        v @ ("current" | "previous") => v.to_owned(),
        _ => id_field(input, "version")?.to_owned(),
    };
    let id = match input.opt_str_field("id")? {
        Some(_) => id_field(input, "id")?.to_owned(),
        None => metadata(&by_name(api, input)?)["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let v = api.json(&Call::get(format!(
        "/api/v2/secrets/{id}/versions/{version}"
    )))?;
    Ok(json!({
        "id": v["secret_id"],
        "name": v["secret_name"],
        "secret_type": v["secret_type"],
        "version_id": v["id"],
        "alias": v["alias"],
        "created_at": v["created_at"],
        "payload": v["payload"],
        "password": v["password"],
    }))
}

/// `check_secret`: whether the current value of a secret equals `value`,
/// read back from Secrets Manager; the value itself is never output.
pub(crate) fn check(api: &Api, input: &Value) -> Result<Value, Error> {
    let expected = input.str_field("value")?;
    let secret = read(api, input)?;
    let stored = secret["payload"]
        .as_str()
        .or_else(|| secret["password"].as_str())
        .ok_or_else(|| {
            Error::provider(
                200,
                "the secret's answer holds no payload or password to compare",
            )
        })?;
    let mut out = metadata(&secret);
    out["matches"] = json!(same_secret(stored, expected));
    Ok(out)
}

/// The id of the group named `group`: `default` as it is, any other looked
/// up in the instance's groups (create takes an id, get-by-name a name).
fn group_id(api: &Api, group: &str) -> Result<String, Error> {
    if group == "default" {
        return Ok(group.to_owned());
    }
    let groups = api.json(&Call::get("/api/v2/secret_groups"))?;
    groups["secret_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"].as_str() == Some(group))
        .and_then(|g| g["id"].as_str().map(str::to_owned))
        .ok_or_else(|| Error::provider(404, format!("there is no secret group named `{group}`")))
}

/// `create_secret`: a new secret under `name`, its step's idempotency key
/// in its custom metadata.
pub(crate) fn create(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let name = non_blank(input, "name")?.trim();
    let (secret_type, group) = type_and_group(input)?;
    let mut body = json!({
        "secret_type": secret_type,
        "name": name,
        "secret_group_id": group_id(api, &group)?,
    });
    if let Some(description) = input.opt_str_field("description")? {
        body["description"] = json!(description);
    }
    if input.field("labels").is_some_and(|v| !v.is_null()) {
        body["labels"] = json!(input.parse_field::<Vec<String>>("labels")?);
    }
    if !ctx.idempotency_key().is_empty() {
        body["custom_metadata"] = json!({ STEP_KEY: ctx.idempotency_key() });
    }
    match secret_type.as_str() {
        "arbitrary" => body["payload"] = json!(non_blank(input, "payload")?),
        "username_password" => {
            body["username"] = json!(non_blank(input, "username")?);
            if let Some(password) = input.opt_str_field("password")? {
                body["password"] = json!(password);
            }
        }
        other => {
            return Err(Error::invalid_input(format!(
                "secret_type `{other}` is not supported: use arbitrary or username_password"
            )));
        }
    }
    let created = api.json(&Call::post("/api/v2/secrets", &body))?;
    log::info(&format!(
        "created secret {} named `{name}` in group `{group}`",
        created["id"].as_str().unwrap_or("?")
    ));
    let mut out = metadata(&created);
    out["password"] = created["password"].clone();
    Ok(out)
}

/// `find_created_secret`: the secret an interrupted `create_secret` with
/// this input made in this step, or provider 404. A secret with the name
/// that this step did not make is not it.
pub(crate) fn find_created(api: &Api, ctx: &Context, input: &Value) -> Result<Value, Error> {
    let key = ctx.idempotency_key();
    let found = by_name(api, input)?;
    let name = input.str_field("name")?.trim();
    if key.is_empty() || found["custom_metadata"][STEP_KEY].as_str() != Some(key) {
        return Err(Error::provider(
            404,
            format!(
                "a secret named `{name}` exists, but this step did not create it (its \
                 custom_metadata.{STEP_KEY} is not this step's key)"
            ),
        ));
    }
    let mut out = metadata(&found);
    out["password"] = found["password"].clone();
    Ok(out)
}

/// `create_version`: a new current version; the old current one becomes
/// `previous`.
pub(crate) fn create_version(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = id_field(input, "id")?;
    let mut body = json!({});
    if let Some(payload) = input.opt_str_field("payload")? {
        body["payload"] = json!(payload);
    }
    if let Some(password) = input.opt_str_field("password")? {
        body["password"] = json!(password);
    }
    let v = api.json(&Call::post(format!("/api/v2/secrets/{id}/versions"), &body))?;
    log::info(&format!(
        "created version {} of secret {id}",
        v["id"].as_str().unwrap_or("?")
    ));
    Ok(json!({
        "id": v["secret_id"],
        "name": v["secret_name"],
        "version_id": v["id"],
        "alias": v["alias"],
        "created_at": v["created_at"],
        "password": v["password"],
    }))
}

/// `rename_secret`: `PATCH .../metadata {"name"}` as a merge patch.
pub(crate) fn rename(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = id_field(input, "id")?;
    let name = non_blank(input, "name")?.trim();
    let renamed = api.json(&Call::merge_patch(
        format!("/api/v2/secrets/{id}/metadata"),
        &json!({ "name": name }),
    ))?;
    log::info(&format!("renamed secret {id} to `{name}`"));
    Ok(metadata(&renamed))
}

/// `delete_secret`: 204 is done, and so is 404 (already gone); 412 means
/// locks hold the secret, which the error says in plain words.
pub(crate) fn delete(api: &Api, input: &Value) -> Result<Value, Error> {
    let id = id_field(input, "id")?;
    match api.send(&Call::delete(format!("/api/v2/secrets/{id}"))) {
        Ok(_) => {
            log::info(&format!("deleted secret {id}"));
            Ok(json!({ "id": id, "deleted": true }))
        }
        Err(Error::Provider { status: 404, .. }) => {
            Ok(json!({ "id": id, "deleted": true, "already_gone": true }))
        }
        Err(Error::Provider {
            status: 412,
            message,
        }) => Err(Error::provider(
            412,
            format!(
                "secret {id} is locked, so Secrets Manager will not delete it ({message}); the \
                 applications that hold its locks still use it: list them with GET \
                 /api/v2/secrets/{id}/locks, and delete the secret once they have let go"
            ),
        )),
        Err(other) => Err(other),
    }
}

/// `list_secrets`: every page of the metadata list.
pub(crate) fn list(api: &Api, input: &Value) -> Result<Value, Error> {
    let mut filters = Vec::new();
    for key in ["search", "groups", "secret_types"] {
        if let Some(value) = input.opt_str_field(key)? {
            filters.push(format!("&{key}={}", http::encode(value)));
        }
    }
    let filters = filters.concat();
    let mut secrets = Vec::new();
    let mut offset = 0;
    loop {
        let page = api.json(&Call::get(format!(
            "/api/v2/secrets?limit={PAGE}&offset={offset}{filters}"
        )))?;
        let items = page["secrets"].as_array().cloned().unwrap_or_default();
        let total = page["total_count"].as_u64().unwrap_or(0) as usize;
        let got = items.len();
        secrets.extend(items.iter().map(metadata));
        offset += got;
        if got == 0 || offset >= total {
            break;
        }
    }
    Ok(json!({ "secrets": secrets }))
}

/// Equality that takes the same time wherever the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_never_carries_a_value() {
        let answer = json!({
            "id": "a", "name": "n", "payload": "the-value", "password": "pw",
            "versions_total": 2, "username": "u",
        });
        let shown = metadata(&answer);
        assert_eq!(shown["versions_total"], 2);
        assert_eq!(shown["username"], "u");
        let text = shown.to_string();
        assert!(
            !text.contains("the-value") && !text.contains("pw"),
            "{text}"
        );
    }

    #[test]
    fn names_in_paths_are_single_segments() {
        assert_eq!(
            by_name_path(&json!({"name": "db/pw", "group": "a b"})).unwrap(),
            "/api/v2/secret_groups/a%20b/secret_types/arbitrary/secrets/db%2Fpw"
        );
        for bad in [
            json!({"name": ".."}),
            json!({"name": "."}),
            json!({"name": "x", "group": ".."}),
            json!({"name": "x", "secret_type": ".."}),
        ] {
            assert!(
                matches!(by_name_path(&bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_single_path_segments() {
        assert!(id_field(&json!({"id": "0f1e-AB12"}), "id").is_ok());
        for bad in ["", "../x", "a/b", "a?b"] {
            assert!(id_field(&json!({ "id": bad }), "id").is_err(), "{bad}");
        }
    }

    #[test]
    fn type_and_group_default_to_arbitrary_in_default() {
        assert_eq!(
            type_and_group(&json!({})).unwrap(),
            ("arbitrary".to_owned(), "default".to_owned())
        );
        assert_eq!(
            type_and_group(&json!({"secret_type": "username_password", "group": "ops"})).unwrap(),
            ("username_password".to_owned(), "ops".to_owned())
        );
        assert!(type_and_group(&json!({"group": " "})).is_err());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
