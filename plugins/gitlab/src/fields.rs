//! Reading this plugin's inputs: ids that may come as numbers or digit
//! strings, projects and groups named by id or full path, dates, scopes.
//! Errors name the field and never quote a value.

use keycycle_plugin_sdk::{Error, Input, Value, http};

/// A project or group as GitLab's `:id` takes it: a numeric id, or the
/// full path URL-encoded (`acme/api` → `acme%2Fapi`,
/// `doc/api/rest/_index.md`, "Namespaced paths").
pub(crate) fn resource_ref(input: &Value, name: &str) -> Result<String, Error> {
    match input.field(name) {
        Some(Value::Number(n)) => n.as_u64().map(|id| id.to_string()).ok_or_else(|| {
            Error::invalid_input(format!(
                "input `{name}` must be a positive id or a full path"
            ))
        }),
        Some(Value::String(text)) => encode_ref(text).ok_or_else(|| {
            Error::invalid_input(format!(
                "input `{name}` must be a numeric id or a full path such as `group/project`"
            ))
        }),
        Some(_) => Err(Error::invalid_input(format!(
            "input `{name}` must be a numeric id or a full path such as `group/project`"
        ))),
        None => Err(Error::invalid_input(format!("input `{name}` is missing"))),
    }
}

/// `text` as one URL path segment, or `None` when it names nothing. A path
/// someone already encoded (`group%2Fproject`) is taken as meant, not
/// encoded twice. A part that is empty, `.` or `..` names no project or
/// group and is refused: `..` as the whole reference would turn
/// `/projects/../hooks` into the instance-wide `/hooks` (system hooks).
pub(crate) fn encode_ref(text: &str) -> Option<String> {
    let decoded = text.trim().replace("%2F", "/").replace("%2f", "/");
    let path = decoded.trim_matches('/');
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return None;
    }
    http::segment(path, "the reference").ok()
}

/// A reference from [`resource_ref`] as an operator would write it, for
/// messages: `acme%2Fapi` → `acme/api`. GitLab paths hold only letters,
/// digits, `_`, `-`, `.` and `/`, so `/` is the only character encoded.
pub(crate) fn display_ref(encoded: &str) -> String {
    encoded.replace("%2F", "/")
}

/// A numeric id given as a number or a string of digits.
pub(crate) fn id(input: &Value, name: &str) -> Result<u64, Error> {
    let wrong = || Error::invalid_input(format!("input `{name}` must be a numeric id"));
    match input.field(name) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(wrong),
        Some(Value::String(text)) => text.trim().parse::<u64>().map_err(|_| wrong()),
        Some(_) => Err(wrong()),
        None => Err(Error::invalid_input(format!("input `{name}` is missing"))),
    }
}

/// An optional numeric id.
pub(crate) fn opt_id(input: &Value, name: &str) -> Result<Option<u64>, Error> {
    match input.field(name) {
        None => Ok(None),
        Some(_) => id(input, name).map(Some),
    }
}

/// An optional `YYYY-MM-DD` date, as GitLab's `expires_at` takes it.
pub(crate) fn opt_date(input: &Value, name: &str) -> Result<Option<String>, Error> {
    let Some(text) = input.opt_str_field(name)? else {
        return Ok(None);
    };
    let text = text.trim();
    if is_date(text) {
        Ok(Some(text.to_owned()))
    } else {
        Err(Error::invalid_input(format!(
            "input `{name}` must be a date written YYYY-MM-DD"
        )))
    }
}

/// Whether `text` is a plausible `YYYY-MM-DD` date (GitLab checks the
/// calendar itself).
pub(crate) fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month: u32 = text[5..7].parse().unwrap_or(0);
    let day: u32 = text[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// A non-empty list of non-empty strings, such as `scopes`.
/// An optional array of strings; absent is empty.
pub(crate) fn string_list_opt(input: &Value, name: &str) -> Result<Vec<String>, Error> {
    match input.field(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.is_empty() => Ok(Vec::new()),
        Some(_) => string_list(input, name),
    }
}

pub(crate) fn string_list(input: &Value, name: &str) -> Result<Vec<String>, Error> {
    let wrong = || {
        Error::invalid_input(format!(
            "input `{name}` must be a non-empty array of strings, such as [\"api\"]"
        ))
    };
    let Some(Value::Array(items)) = input.field(name) else {
        return Err(match input.field(name) {
            None => Error::invalid_input(format!("input `{name}` is missing")),
            Some(_) => wrong(),
        });
    };
    let list: Vec<String> = items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .collect::<Option<_>>()
        .ok_or_else(wrong)?;
    if list.is_empty() {
        return Err(wrong());
    }
    Ok(list)
}

/// A string field that must be present and not blank.
pub(crate) fn non_blank<'a>(input: &'a Value, name: &str) -> Result<&'a str, Error> {
    let text = input.str_field(name)?;
    if text.trim().is_empty() {
        Err(Error::invalid_input(format!("input `{name}` is empty")))
    } else {
        Ok(text)
    }
}

/// Project or group, for the access token operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerType {
    Project,
    Group,
}

impl OwnerType {
    pub(crate) fn from_input(input: &Value) -> Result<OwnerType, Error> {
        match input.str_field("owner_type")? {
            "project" => Ok(OwnerType::Project),
            "group" => Ok(OwnerType::Group),
            _ => Err(Error::invalid_input(
                "input `owner_type` must be \"project\" or \"group\"",
            )),
        }
    }

    /// The collection in GitLab's paths.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            OwnerType::Project => "projects",
            OwnerType::Group => "groups",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            OwnerType::Project => "project",
            OwnerType::Group => "group",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycycle_plugin_sdk::json;

    fn invalid(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn resources_by_id_or_path() {
        let v = json!({"n": 42, "s": "42", "p": "acme/api", "e": "acme%2Fapi", "deep": "/a/b/c/"});
        assert_eq!(resource_ref(&v, "n").unwrap(), "42");
        assert_eq!(resource_ref(&v, "s").unwrap(), "42");
        assert_eq!(resource_ref(&v, "p").unwrap(), "acme%2Fapi");
        assert_eq!(resource_ref(&v, "e").unwrap(), "acme%2Fapi");
        assert_eq!(resource_ref(&v, "deep").unwrap(), "a%2Fb%2Fc");
        assert_eq!(display_ref("a%2Fb%2Fc"), "a/b/c");
        // Encoded dots are not decoded, so they stay a literal name.
        assert_eq!(
            resource_ref(&json!({"e": "%2e%2e"}), "e").unwrap(),
            "%252e%252e"
        );
        let bad = json!({"x": "a//b", "y": " ", "z": true, "neg": -1,
                         "up": "..", "here": ".", "mid": "a/../b",
                         "tail": "a/.", "slash_up": "/../"});
        for name in [
            "x", "y", "z", "neg", "absent", "up", "here", "mid", "tail", "slash_up",
        ] {
            let m = invalid(resource_ref(&bad, name));
            assert!(m.contains(&format!("`{name}`")), "{m}");
        }
    }

    #[test]
    fn ids_from_numbers_or_digits() {
        let v = json!({"a": 7, "b": " 8 ", "c": "x9", "d": -1, "e": 1.5});
        assert_eq!(id(&v, "a").unwrap(), 7);
        assert_eq!(id(&v, "b").unwrap(), 8);
        for name in ["c", "d", "e", "missing"] {
            assert!(invalid(id(&v, name)).contains(&format!("`{name}`")));
        }
        assert_eq!(opt_id(&v, "missing").unwrap(), None);
        assert_eq!(opt_id(&v, "a").unwrap(), Some(7));
    }

    #[test]
    fn dates_are_yyyy_mm_dd() {
        assert!(is_date("2030-01-31"));
        for bad in [
            "2030-1-31",
            "2030-13-01",
            "2030-00-10",
            "2030-01-32",
            "20300131",
            "2030-01-3x",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        let v = json!({"d": "2031-02-03", "bad": "next week"});
        assert_eq!(opt_date(&v, "d").unwrap().as_deref(), Some("2031-02-03"));
        assert_eq!(opt_date(&v, "none").unwrap(), None);
        assert!(invalid(opt_date(&v, "bad")).contains("`bad`"));
    }

    #[test]
    fn scopes_and_owner_types() {
        let v = json!({"s": ["api", "read_api"], "e": [], "n": ["api", 3], "t": "api",
                       "owner_type": "group"});
        assert_eq!(string_list(&v, "s").unwrap(), ["api", "read_api"]);
        for name in ["e", "n", "t", "missing"] {
            assert!(invalid(string_list(&v, name)).contains(&format!("`{name}`")));
        }
        assert_eq!(OwnerType::from_input(&v).unwrap(), OwnerType::Group);
        assert_eq!(OwnerType::Group.plural(), "groups");
        let m = invalid(OwnerType::from_input(&json!({"owner_type": "user"})));
        assert!(m.contains("`owner_type`"), "{m}");
    }
}
