//! Where Actions secrets live, as the operation's input names it: a
//! repository (`owner` + `repo`, or `repo` as `owner/name`), one of its
//! environments (plus `environment`), or an organisation (`org`). Each has
//! its own public key and its own paths (reference, "Actions secrets" and
//! "Environment").

use keycycle_plugin_sdk::{Error, Input, Value, http, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Repo {
        owner: String,
        repo: String,
    },
    Environment {
        owner: String,
        repo: String,
        environment: String,
    },
    Org {
        org: String,
    },
}

fn non_blank<'a>(input: &'a Value, name: &str) -> Result<Option<&'a str>, Error> {
    match input.opt_str_field(name)? {
        Some(v) if v.trim().is_empty() => Err(Error::invalid_input(format!("`{name}` is empty"))),
        Some(v) => Ok(Some(v.trim())),
        None => Ok(None),
    }
}

impl Scope {
    /// The scope named by the input's `org`, `owner`, `repo` and
    /// `environment` fields.
    pub(crate) fn from_input(input: &Value) -> Result<Scope, Error> {
        let org = non_blank(input, "org")?;
        let owner = non_blank(input, "owner")?;
        let repo = non_blank(input, "repo")?;
        let environment = non_blank(input, "environment")?;
        if let Some(org) = org {
            if owner.is_some() || repo.is_some() || environment.is_some() {
                return Err(Error::invalid_input(
                    "give either `org` (an organisation secret) or `owner` and `repo` (a \
                     repository or environment secret), not both",
                ));
            }
            http::segment(org, "`org`")?;
            return Ok(Scope::Org { org: org.into() });
        }
        let Some(repo) = repo else {
            return Err(Error::invalid_input(
                "name where the secret lives: `org`, or `owner` and `repo` (plus \
                 `environment` for an environment secret)",
            ));
        };
        let (owner, repo) = match (owner, repo.split_once('/')) {
            (Some(owner), None) => (owner, repo),
            (None, Some((owner, name))) if !owner.is_empty() && !name.is_empty() => (owner, name),
            (Some(_), Some(_)) => {
                return Err(Error::invalid_input(
                    "`repo` is `owner/name` and `owner` is given too; give one of them",
                ));
            }
            _ => {
                return Err(Error::invalid_input(
                    "`owner` is missing (or give `repo` as `owner/name`)",
                ));
            }
        };
        // Each becomes one path segment; `..` would climb out of the
        // repository (`/repos/acme/../actions/secrets`).
        http::segment(owner, "`owner`")?;
        http::segment(repo, "`repo`")?;
        if let Some(environment) = environment {
            http::segment(environment, "`environment`")?;
        }
        let (owner, repo) = (owner.to_owned(), repo.to_owned());
        Ok(match environment {
            Some(environment) => Scope::Environment {
                owner,
                repo,
                environment: environment.to_owned(),
            },
            None => Scope::Repo { owner, repo },
        })
    }

    /// The path the scope's secrets live under, without a trailing slash.
    /// Each part was checked by [`http::segment`] in `from_input`, so
    /// encoding it gives one segment.
    pub(crate) fn secrets_path(&self) -> String {
        let e = http::encode;
        match self {
            Scope::Repo { owner, repo } => {
                format!("/repos/{}/{}/actions/secrets", e(owner), e(repo))
            }
            Scope::Environment {
                owner,
                repo,
                environment,
            } => format!(
                "/repos/{}/{}/environments/{}/secrets",
                e(owner),
                e(repo),
                e(environment)
            ),
            Scope::Org { org } => format!("/orgs/{}/actions/secrets", e(org)),
        }
    }

    /// The path of one secret.
    pub(crate) fn secret_path(&self, name: &str) -> Result<String, Error> {
        Ok(format!(
            "{}/{}",
            self.secrets_path(),
            http::segment(name, "`name`")?
        ))
    }

    pub(crate) fn is_org(&self) -> bool {
        matches!(self, Scope::Org { .. })
    }

    /// The scope as outputs show it.
    pub(crate) fn describe(&self) -> Value {
        match self {
            Scope::Repo { owner, repo } => json!({"scope": "repo", "owner": owner, "repo": repo}),
            Scope::Environment {
                owner,
                repo,
                environment,
            } => json!({"scope": "environment", "owner": owner, "repo": repo,
                        "environment": environment}),
            Scope::Org { org } => json!({"scope": "org", "org": org}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(input: Value) -> Result<Scope, Error> {
        Scope::from_input(&input)
    }

    #[test]
    fn inputs_name_one_scope_and_its_paths() {
        let repo = scope(json!({"owner": "acme", "repo": "qa-analyzer"})).unwrap();
        assert_eq!(
            repo.secrets_path(),
            "/repos/acme/qa-analyzer/actions/secrets"
        );
        assert_eq!(
            scope(json!({"repo": "acme/qa-analyzer"})).unwrap(),
            repo,
            "owner/name in `repo`"
        );
        let env = scope(json!({"owner": "acme", "repo": "qa", "environment": "stg 1"})).unwrap();
        assert_eq!(
            env.secret_path("QA_GIT_TOKEN").unwrap(),
            "/repos/acme/qa/environments/stg%201/secrets/QA_GIT_TOKEN"
        );
        let org = scope(json!({"org": "acme"})).unwrap();
        assert!(org.is_org());
        assert_eq!(
            org.secret_path("X").unwrap(),
            "/orgs/acme/actions/secrets/X"
        );
        assert!(org.secret_path("..").is_err());
        assert_eq!(org.describe(), json!({"scope": "org", "org": "acme"}));
    }

    #[test]
    fn ambiguous_or_incomplete_scopes_are_refused() {
        for bad in [
            json!({}),
            json!({"org": "acme", "repo": "x"}),
            json!({"repo": "qa"}),
            json!({"owner": "acme"}),
            json!({"owner": "acme", "repo": "acme/qa"}),
            json!({"repo": "/qa"}),
            json!({"org": " "}),
            json!({"org": ".."}),
            json!({"owner": "..", "repo": "qa"}),
            json!({"owner": "acme", "repo": "."}),
            json!({"repo": "acme/.."}),
            json!({"owner": "acme", "repo": "qa", "environment": ".."}),
        ] {
            assert!(
                matches!(scope(bad.clone()), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }
}
