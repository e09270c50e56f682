//! What the backend is told: where the server is, which KV v2 mount and
//! prefix hold keycycle's secrets, and how it authenticates. Credentials
//! arrive already chosen (the CLI decides between environment and files);
//! this module reads credential files, refusing ones others can read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keycycle_secret::SecretValue;
use url::Url;
use zeroize::Zeroizing;

use crate::error::VaultError;

/// The mount a dev server and most installations have KV v2 at.
pub const DEFAULT_MOUNT: &str = "secret";
/// Where the AppRole auth method is mounted unless told otherwise.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// How long one request may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A credential: a value given directly (from an environment variable), or
/// a file read when it is needed (and read again when the server refuses
/// the value, since an agent may have replaced it).
#[derive(Clone)]
pub enum Credential {
    Given {
        value: SecretValue,
        /// Where it came from, for messages: `VAULT_TOKEN`.
        from: String,
    },
    File(PathBuf),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.origin())
    }
}

impl Credential {
    /// Where the value comes from, never the value.
    pub fn origin(&self) -> String {
        match self {
            Credential::Given { from, .. } => from.clone(),
            Credential::File(path) => format!("file {}", path.display()),
        }
    }

    /// The value. A file is read now; `private` refuses a file that group
    /// or others may read or write, as the master key file is refused.
    pub(crate) fn load(
        &self,
        what: &'static str,
        private: bool,
    ) -> Result<SecretValue, VaultError> {
        match self {
            Credential::Given { value, .. } => Ok(value.clone()),
            Credential::File(path) => read_credential_file(what, path, private),
        }
    }
}

fn read_credential_file(
    what: &'static str,
    path: &Path,
    private: bool,
) -> Result<SecretValue, VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |problem: String| VaultError::CredentialFile {
        what,
        path: path.to_owned(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".to_owned()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(fail(format!(
            "it has mode {mode:04o}, which lets group or others read or write it; run \
             `chmod 600 {}` and try again",
            path.display()
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?,
    );
    // An editor's or `echo`'s trailing newline is never part of a token.
    let value = text.trim();
    if value.is_empty() {
        return Err(fail("it is empty".to_owned()));
    }
    Ok(SecretValue::new(value))
}

/// How the backend gets its token.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A token given to keycycle (`VAULT_TOKEN`, a token file an agent
    /// keeps fresh).
    Token(Credential),
    /// AppRole: keycycle logs in with the role id and secret id, and logs
    /// in again when the token runs out or is refused.
    AppRole {
        /// The auth method's mount, `approle` by default.
        mount: String,
        role_id: Credential,
        secret_id: Credential,
    },
}

/// Everything the backend needs to know.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// The server, `https://bao.example.com:8200`. Plain `http` only to a
    /// loopback address: a token must not cross a network in clear.
    pub address: String,
    /// The KV v2 mount, without slashes: `secret`.
    pub mount: String,
    /// Prepended to every secret name to make its KV path: `keycycle/`
    /// (a trailing `/` is added when missing; empty means the mount's root).
    pub prefix: String,
    /// PEM certificates that replace the public roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    pub auth: Auth,
    pub timeout: Duration,
}

/// The checked form of [`KvConfig`]'s location settings.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// The address as given, for messages.
    pub address: String,
    /// `ADDRESS/v1/`, which every API path is joined to.
    pub api: Url,
    pub mount: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl Location {
    pub fn new(config: &KvConfig) -> Result<Location, VaultError> {
        let address = config.address.trim().trim_end_matches('/').to_owned();
        let bad = |problem: String| VaultError::Setting {
            setting: "address",
            problem,
        };
        let url = Url::parse(&address).map_err(|e| {
            bad(format!(
                "`{address}` is not a URL ({e}); write it as https://HOST:PORT"
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "the address carries a user name or password; give credentials with auth instead"
                    .to_owned(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(format!(
                "`{address}` has a query or fragment; give only https://HOST:PORT"
            )));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(bad(format!(
                    "`{address}` is plain http to a host that is not this machine; the token \
                     would cross the network in clear. Use https (with ca_cert for a private CA)"
                )));
            }
            other => {
                return Err(bad(format!(
                    "`{address}` has scheme `{other}`; use https (or http to 127.0.0.1)"
                )));
            }
        }
        // A server behind a path (`https://host/vault`) keeps it.
        let api = Url::parse(&format!("{address}/v1/")).map_err(|e| bad(e.to_string()))?;
        let mount = config.mount.trim().trim_matches('/').to_owned();
        if mount.is_empty() {
            return Err(VaultError::Setting {
                setting: "mount",
                problem: "it is empty; the KV v2 mount is usually `secret`".to_owned(),
            });
        }
        check_segments(&mount).map_err(|problem| VaultError::Setting {
            setting: "mount",
            problem: format!("`{mount}` {problem}"),
        })?;
        let mut prefix = config.prefix.trim().trim_start_matches('/').to_owned();
        if !prefix.is_empty() {
            if !prefix.ends_with('/') {
                prefix.push('/');
            }
            check_segments(prefix.trim_end_matches('/')).map_err(|problem| {
                VaultError::Setting {
                    setting: "prefix",
                    problem: format!("`{prefix}` {problem}"),
                }
            })?;
        }
        Ok(Location {
            address,
            api,
            mount,
            prefix,
        })
    }

    /// The KV path of secret `name`: prefix and name, checked so that no
    /// name can reach outside the prefix or change the request's meaning.
    pub fn key_path(&self, name: &str) -> Result<String, VaultError> {
        check_segments(name).map_err(|problem| VaultError::InvalidName {
            name: crate::error::one_line(name),
            problem,
        })?;
        Ok(format!("{}{name}", self.prefix))
    }

    /// `ADDRESS/v1/MOUNT/KIND/PATH` (KIND: `data`, `metadata`).
    pub fn kv_url(&self, kind: &str, path: &str) -> Url {
        self.api_url(&format!("{}/{kind}/{path}", self.mount))
    }

    /// `ADDRESS/v1/PATH`.
    pub fn api_url(&self, path: &str) -> Url {
        // Paths here are checked segments of `[A-Za-z0-9._-]`, so joining
        // cannot escape `/v1/` or add a query.
        self.api.join(path).expect("a checked path joins")
    }
}

/// Refuses what could make a KV path mean something else: empty segments,
/// `.` and `..`, and any character outside `[A-Za-z0-9._-]` (no `?`, `#`,
/// `%`, spaces or controls). The secret names keycycle accepts already
/// fit; this is the backend's own guard.
fn check_segments(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err("it has an empty segment (`//`, or `/` at an end)");
        }
        if segment == "." || segment == ".." {
            return Err("it has a `.` or `..` segment");
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("it has a character other than letters, digits, `.`, `_`, `-` and `/`");
        }
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, mount: &str, prefix: &str) -> KvConfig {
        KvConfig {
            address: address.to_owned(),
            mount: mount.to_owned(),
            prefix: prefix.to_owned(),
            ca_pem: None,
            auth: Auth::Token(Credential::File("/nonexistent".into())),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    #[test]
    fn paths_are_the_prefix_and_the_name() {
        let loc = Location::new(&config("http://127.0.0.1:8200/", "/secret/", "keycycle")).unwrap();
        assert_eq!(
            loc.key_path("gitlab/ci-bot").unwrap(),
            "keycycle/gitlab/ci-bot"
        );
        assert_eq!(
            loc.kv_url("data", "keycycle/gitlab/ci-bot").as_str(),
            "http://127.0.0.1:8200/v1/secret/data/keycycle/gitlab/ci-bot"
        );
        let root = Location::new(&config("https://vault.example.com/base", "kv", "")).unwrap();
        assert_eq!(root.key_path("a").unwrap(), "a");
        assert_eq!(
            root.kv_url("metadata", "a").as_str(),
            "https://vault.example.com/base/v1/kv/metadata/a"
        );
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        let loc = Location::new(&config("http://localhost:8200", "secret", "kc/")).unwrap();
        for bad in [
            "", "a//b", "a/", "../x", "a/./b", "a?b", "a#b", "a%2e", "a b", "a\nb",
        ] {
            let e = loc.key_path(bad).unwrap_err();
            assert!(matches!(e, VaultError::InvalidName { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn plain_http_is_only_for_this_machine() {
        assert!(Location::new(&config("http://[::1]:8200", "secret", "")).is_ok());
        let e = Location::new(&config("http://vault.internal:8200", "secret", "")).unwrap_err();
        assert!(e.to_string().contains("in clear"), "{e}");
        let e = Location::new(&config("https://u:p@vault.internal", "secret", "")).unwrap_err();
        assert!(e.to_string().contains("user name"), "{e}");
        assert!(Location::new(&config("ftp://x", "secret", "")).is_err());
    }

    #[test]
    fn an_open_credential_file_is_refused_and_a_private_one_trimmed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s.tokentokentoken\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cred = Credential::File(path.clone());
        let e = cred.load("token", true).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            cred.load("token", true).unwrap().expose(),
            "s.tokentokentoken"
        );
        assert_eq!(format!("{cred:?}"), format!("file {}", path.display()));
    }
}
