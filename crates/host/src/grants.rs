//! What the operator grants a plugin, and how that combines with what the
//! plugin declares: a plugin's effective rights are the intersection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use keycycle_contract::PluginDescription;
use keycycle_secret::SecretValue;
use url::Url;

/// The operator's grants for one plugin, from `keycycle.toml`.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins, `scheme://host[:port]`.
    pub hosts: Vec<String>,
    /// Secret name as the plugin asks for it → name in the secrets store.
    pub secrets: BTreeMap<String, String>,
    /// Config values the plugin receives with every call.
    pub config: BTreeMap<String, String>,
    /// PEM CA certificates that replace the public roots for this plugin's
    /// HTTPS: a cluster with its own CA is trusted for this plugin only, and
    /// nothing else is trusted for it.
    pub ca_pem: Option<Vec<u8>>,
    pub limits: Limits,
    /// Link the interfaces an interpreted runtime imports whether or not
    /// it uses them (see [`crate::INERT_IMPORTS`]), inert: no directory is
    /// preopened, and TCP, UDP and name lookup are refused when called.
    pub inert_wasi: bool,
}

/// Per-call resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory a call may grow to.
    pub memory_bytes: usize,
    /// Wall time of one call, host calls included.
    pub timeout: Duration,
    /// Size of the JSON an operation may return.
    pub max_output_bytes: usize,
    /// Size of one HTTP response body.
    pub max_response_bytes: usize,
    /// Log lines and bytes one call may write.
    pub max_log_lines: usize,
    pub max_log_bytes: usize,
    /// HTTP requests one call may send (redirect hops included).
    pub max_http_requests: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            max_output_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_log_lines: 1_000,
            max_log_bytes: 256 << 10,
            max_http_requests: 100,
        }
    }
}

/// Where granted secrets come from (the secrets store, in the CLI).
pub trait SecretSource: Send + Sync {
    /// The secret stored under `store_name`, `Ok(None)` when there is none.
    fn get(&self, store_name: &str) -> Result<Option<SecretValue>, String>;
}

/// A network origin: what an HTTP grant names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses a grant such as `https://gitlab.example.com` or
    /// `http://127.0.0.1:8080`. Paths, queries and userinfo are refused so a
    /// grant cannot look narrower than it is.
    pub fn parse_grant(text: &str) -> Result<Origin, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not an origin: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("`{text}`: an origin may not contain userinfo"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{text}`: a grant is an origin (scheme://host[:port]) without a path"
            ));
        }
        Origin::of(&url)
            .ok_or_else(|| format!("`{text}`: only http and https origins can be granted"))
    }

    /// The origin a URL belongs to, for `http` and `https` URLs.
    pub fn of(url: &Url) -> Option<Origin> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return None;
        }
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// The IP address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// A plugin's effective rights after intersecting declaration and grants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effective {
    pub origins: BTreeSet<Origin>,
    /// Plugin secret name → store name.
    pub secrets: BTreeMap<String, String>,
    pub config: BTreeMap<String, String>,
    /// Declared or granted rights that did not make it into the
    /// intersection, for `plugins inspect` and warnings.
    pub unmatched: Vec<String>,
}

impl Effective {
    pub fn compute(desc: &PluginDescription, grants: &Grants) -> Result<Effective, String> {
        let mut eff = Effective::default();
        let granted: BTreeSet<Origin> = grants
            .hosts
            .iter()
            .map(|h| Origin::parse_grant(h))
            .collect::<Result<_, _>>()?;

        let mut declared = BTreeSet::new();
        for host in &desc.hosts {
            let text = match host
                .strip_prefix("{config.")
                .and_then(|h| h.strip_suffix('}'))
            {
                Some(key) => match grants.config.get(key) {
                    Some(v) => {
                        origin_text_of_config(v).map_err(|e| format!("config `{key}`: {e}"))?
                    }
                    None => {
                        eff.unmatched
                            .push(format!("host {host}: config `{key}` is not set"));
                        continue;
                    }
                },
                None => host.clone(),
            };
            declared.insert(Origin::parse_grant(&text)?);
        }
        for origin in &declared {
            if granted.contains(origin) {
                eff.origins.insert(origin.clone());
            } else {
                eff.unmatched
                    .push(format!("host {origin} is declared but not granted"));
            }
        }
        for origin in granted.difference(&declared) {
            eff.unmatched.push(format!(
                "host {origin} is granted but the plugin does not declare it"
            ));
        }

        for name in &desc.secrets {
            match grants.secrets.get(name) {
                Some(store_name) => {
                    eff.secrets.insert(name.clone(), store_name.clone());
                }
                None => eff
                    .unmatched
                    .push(format!("secret `{name}` is declared but not granted")),
            }
        }
        for name in grants.secrets.keys() {
            if !desc.secrets.contains(name) {
                eff.unmatched.push(format!(
                    "secret `{name}` is granted but the plugin does not declare it"
                ));
            }
        }

        // Config is not a capability, but a plugin only sees keys it declares,
        // so one plugin's config block cannot carry another's values.
        for key in &desc.config {
            if let Some(v) = grants.config.get(key) {
                eff.config.insert(key.clone(), v.clone());
            }
        }
        Ok(eff)
    }
}

/// `https://gitlab.example.com/api` → `https://gitlab.example.com`.
fn origin_text_of_config(value: &str) -> Result<String, String> {
    let url = Url::parse(value).map_err(|e| format!("`{value}` is not a URL: {e}"))?;
    let origin = Origin::of(&url).ok_or_else(|| format!("`{value}` is not an http(s) URL"))?;
    let default = if origin.scheme == "https" { 443 } else { 80 };
    Ok(if origin.port == default {
        format!("{}://{}", origin.scheme, origin.host)
    } else {
        format!("{}://{}:{}", origin.scheme, origin.host, origin.port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(hosts: &[&str], secrets: &[&str], config: &[&str]) -> PluginDescription {
        PluginDescription {
            name: "p".into(),
            version: "1".into(),
            operations: vec![],
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            config: config.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn grant_parsing_refuses_paths_and_userinfo() {
        assert!(Origin::parse_grant("https://gitlab.com").is_ok());
        assert!(Origin::parse_grant("https://gitlab.com/api").is_err());
        assert!(Origin::parse_grant("https://u:p@gitlab.com").is_err());
        assert!(Origin::parse_grant("ftp://gitlab.com").is_err());
        assert_eq!(
            Origin::parse_grant("https://GitLab.com:443").unwrap(),
            Origin::parse_grant("https://gitlab.com").unwrap()
        );
    }

    #[test]
    fn effective_is_the_intersection() {
        let d = desc(
            &["{config.base_url}", "https://extra.example"],
            &["token", "other"],
            &["base_url"],
        );
        let mut g = Grants {
            hosts: vec![
                "http://127.0.0.1:8080".into(),
                "https://not-declared.example".into(),
            ],
            ..Grants::default()
        };
        g.config
            .insert("base_url".into(), "http://127.0.0.1:8080/api/v4".into());
        g.config.insert("unrelated".into(), "x".into());
        g.secrets.insert("token".into(), "team-a/token".into());
        let e = Effective::compute(&d, &g).unwrap();
        let origins: Vec<String> = e.origins.iter().map(|o| o.to_string()).collect();
        assert_eq!(origins, vec!["http://127.0.0.1:8080"]);
        assert_eq!(e.secrets.len(), 1);
        assert!(!e.config.contains_key("unrelated"));
        assert_eq!(e.unmatched.len(), 3, "{:?}", e.unmatched);
    }
}
