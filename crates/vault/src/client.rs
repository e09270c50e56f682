//! The asynchronous KV v2 client: requests with the token, logging in with
//! AppRole and renewing, and the meaning of each answer. It runs only on
//! the backend's own thread (see `lib.rs`), one request at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keycycle_secret::SecretValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::config::{Auth, Location};
use crate::error::{ServerSummary, VaultError};

/// The header every request carries its token in (Vault's, which OpenBao
/// keeps).
const TOKEN_HEADER: &str = "X-Vault-Token";

/// What keycycle knows of a key without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    pub created_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
    pub current_version: u64,
    /// The current version was deleted (or destroyed) by someone; reading
    /// the key finds nothing until a new version is written.
    pub current_deleted: bool,
}

/// What the mount named in the config turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    KvV2,
    /// Another engine, or KV version 1 (`kv version 1`).
    Other(String),
    /// The token may not see the mount's description; reads will tell.
    Unknown(String),
}

/// What `keycycle doctor` shows of the backend.
#[derive(Debug, Clone)]
pub struct Status {
    pub server_version: Option<String>,
    pub sealed: bool,
    /// Where the token came from, never the token.
    pub credential: String,
    /// Seconds the token has left; `None` for a token that does not expire.
    pub ttl_secs: Option<u64>,
    pub policies: Vec<String>,
    pub mount: MountKind,
}

/// The token in use and when to renew it.
struct Session {
    token: SecretValue,
    /// When an AppRole token should be renewed (two thirds of its lease).
    renew_after: Option<Instant>,
    /// When it runs out; a token about to expire is replaced, not used.
    expires: Option<Instant>,
    renewable: bool,
}

/// One answer, its body kept only as long as it is being read.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn summary(&self) -> ServerSummary {
        ServerSummary::new(self.status.as_u16(), &self.body)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // A body may hold a secret value or a token.
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

pub(crate) struct Core {
    loc: Location,
    http: reqwest::Client,
    auth: Auth,
    session: Mutex<Option<Session>>,
    /// The version of each key as this process last read or wrote it: the
    /// `cas` of its next write.
    versions: Mutex<HashMap<String, u64>>,
}

impl Core {
    pub fn new(loc: Location, http: reqwest::Client, auth: Auth) -> Core {
        Core {
            loc,
            http,
            auth,
            session: Mutex::new(None),
            versions: Mutex::new(HashMap::new()),
        }
    }

    fn credential_origin(&self) -> String {
        match &self.auth {
            Auth::Token(c) => format!("token from {}", c.origin()),
            Auth::AppRole {
                role_id, secret_id, ..
            } => format!(
                "AppRole login (role id from {}, secret id from {})",
                role_id.origin(),
                secret_id.origin()
            ),
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request, without a token when `token` is `None`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        token: Option<&SecretValue>,
        doing: &str,
    ) -> Result<Answer, VaultError> {
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.expose()).map_err(|_| {
                    VaultError::Setting {
                        setting: "auth",
                        problem: format!(
                            "the {} is not usable as a header value (it has a character a token \
                         never has)",
                            self.credential_origin()
                        ),
                    }
                })?;
            value.set_sensitive(true);
            request = request.header(TOKEN_HEADER, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| VaultError::Unreachable {
            address: self.loc.address.clone(),
            doing: doing.to_owned(),
            cause: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?.to_vec();
        if status.is_redirection() {
            // Redirects are not followed: the token header would go along
            // to wherever the answer points. A standby node redirects to the
            // active one.
            return Err(VaultError::Server {
                address: self.loc.address.clone(),
                doing: doing.to_owned(),
                summary: ServerSummary {
                    status: status.as_u16(),
                    errors: vec![
                        "the server redirects (a standby node?); point [secrets] address at the \
                         active node or its load balancer"
                            .to_owned(),
                    ],
                },
            });
        }
        Ok(Answer { status, body })
    }

    /// The token to send now: logged in, renewed or read as needed.
    async fn token(&self) -> Result<SecretValue, VaultError> {
        let now = Instant::now();
        let (current, renew) = {
            let session = self.session();
            match &*session {
                Some(s) if s.expires.is_none_or(|e| e > now + Duration::from_secs(5)) => (
                    Some(s.token.clone()),
                    s.renewable && s.renew_after.is_some_and(|r| now >= r),
                ),
                _ => (None, false),
            }
        };
        match (current, &self.auth) {
            (Some(token), _) if !renew => Ok(token),
            (Some(token), Auth::AppRole { .. }) => {
                // A renewal that fails (the lease hit its max TTL) is not an
                // error: logging in again gives a fresh token.
                match self.renew(&token).await {
                    Ok(token) => Ok(token),
                    Err(_) => self.login().await,
                }
            }
            (Some(token), Auth::Token(_)) => Ok(token),
            (None, Auth::Token(credential)) => {
                let token = credential.load("token", true)?;
                *self.session() = Some(Session {
                    token: token.clone(),
                    renew_after: None,
                    expires: None,
                    renewable: false,
                });
                Ok(token)
            }
            (None, Auth::AppRole { .. }) => self.login().await,
        }
    }

    /// Logs in with AppRole and keeps the token.
    async fn login(&self) -> Result<SecretValue, VaultError> {
        let Auth::AppRole {
            mount,
            role_id,
            secret_id,
        } = &self.auth
        else {
            unreachable!("login is only for AppRole");
        };
        let role = role_id.load("AppRole role id", false)?;
        let secret = secret_id.load("AppRole secret id", true)?;
        let body = json!({ "role_id": role.expose(), "secret_id": secret.expose() });
        let doing = "the AppRole login";
        let answer = self
            .send(
                Method::POST,
                self.loc.api_url(&format!("auth/{mount}/login")),
                Some(&body),
                None,
                doing,
            )
            .await?;
        drop(body);
        if !answer.status.is_success() {
            return Err(if matches!(answer.status.as_u16(), 400 | 401 | 403) {
                VaultError::AuthRefused {
                    address: self.loc.address.clone(),
                    credential: self.credential_origin(),
                    summary: answer.summary(),
                }
            } else {
                self.server_error(doing, &answer)
            });
        }
        self.keep_auth(&answer, doing)
    }

    /// Renews the AppRole token's lease.
    async fn renew(&self, token: &SecretValue) -> Result<SecretValue, VaultError> {
        let doing = "renewing the token";
        let answer = self
            .send(
                Method::POST,
                self.loc.api_url("auth/token/renew-self"),
                Some(&json!({})),
                Some(token),
                doing,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.server_error(doing, &answer));
        }
        self.keep_auth(&answer, doing)
    }

    /// Keeps the token of a login or renewal answer (`auth.client_token`,
    /// `auth.lease_duration`, `auth.renewable`).
    fn keep_auth(&self, answer: &Answer, doing: &str) -> Result<SecretValue, VaultError> {
        let json = answer.json().unwrap_or(Value::Null);
        let auth = &json["auth"];
        let Some(token) = auth["client_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(self.unexpected(doing, "no auth.client_token"));
        };
        let token = SecretValue::new(token);
        let lease = auth["lease_duration"].as_u64().unwrap_or(0);
        let now = Instant::now();
        let (renew_after, expires) = if lease == 0 {
            (None, None)
        } else {
            (
                Some(now + Duration::from_secs(lease * 2 / 3)),
                Some(now + Duration::from_secs(lease)),
            )
        };
        *self.session() = Some(Session {
            token: token.clone(),
            renew_after,
            expires,
            renewable: auth["renewable"].as_bool().unwrap_or(false),
        });
        Ok(token)
    }

    /// After a 403: a fresh credential, when there may be one. AppRole logs
    /// in again; a token file is read again (an agent may have replaced
    /// it). Whether a retry can help.
    async fn refresh(&self, refused: &SecretValue) -> Result<bool, VaultError> {
        match &self.auth {
            Auth::AppRole { .. } => {
                self.login().await?;
                Ok(true)
            }
            Auth::Token(credential @ crate::config::Credential::File(_)) => {
                let fresh = credential.load("token", true)?;
                if &fresh == refused {
                    return Ok(false);
                }
                *self.session() = Some(Session {
                    token: fresh,
                    renew_after: None,
                    expires: None,
                    renewable: false,
                });
                Ok(true)
            }
            Auth::Token(_) => Ok(false),
        }
    }

    /// A request with the token, sent again once with a fresh credential
    /// when the server refuses the first one.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        doing: &str,
    ) -> Result<Answer, VaultError> {
        let token = self.token().await?;
        let answer = self
            .send(method.clone(), url.clone(), body, Some(&token), doing)
            .await?;
        if answer.status != StatusCode::FORBIDDEN || !self.refresh(&token).await? {
            return Ok(answer);
        }
        let token = self.token().await?;
        self.send(method, url, body, Some(&token), doing).await
    }

    /// A 403 on a KV path: the token itself refused, or its policy not
    /// covering the path. Asking the server about the token tells which.
    async fn forbidden(&self, doing: &str, path: &str, answer: &Answer) -> VaultError {
        let token_ok = match self.token().await {
            Ok(token) => self
                .send(
                    Method::GET,
                    self.loc.api_url("auth/token/lookup-self"),
                    None,
                    Some(&token),
                    "looking up the token",
                )
                .await
                .is_ok_and(|a| a.status.is_success()),
            Err(e) => return e,
        };
        if token_ok {
            VaultError::Denied {
                address: self.loc.address.clone(),
                doing: doing.to_owned(),
                path: path.to_owned(),
                summary: answer.summary(),
            }
        } else {
            VaultError::AuthRefused {
                address: self.loc.address.clone(),
                credential: self.credential_origin(),
                summary: answer.summary(),
            }
        }
    }

    fn server_error(&self, doing: &str, answer: &Answer) -> VaultError {
        VaultError::Server {
            address: self.loc.address.clone(),
            doing: doing.to_owned(),
            summary: answer.summary(),
        }
    }

    fn unexpected(&self, doing: &str, problem: &str) -> VaultError {
        VaultError::Unexpected {
            address: self.loc.address.clone(),
            doing: doing.to_owned(),
            mount: self.loc.mount.clone(),
            problem: problem.to_owned(),
        }
    }

    /// A failed answer on a KV path (`KIND/PATH`, KIND `data` or
    /// `metadata`) as an error; a denial names the path as a policy
    /// spells it.
    async fn failure(&self, doing: &str, kind: &str, path: &str, answer: &Answer) -> VaultError {
        if answer.status == StatusCode::FORBIDDEN {
            self.forbidden(doing, &format!("{}/{kind}/{path}", self.loc.mount), answer)
                .await
        } else {
            self.server_error(doing, answer)
        }
    }

    /// Remembers `version` as the one this process saw of `name`, unless
    /// it saw one before. The first version read is the one a rotation
    /// started from: a plugin reads its granted secret at every call, and a
    /// later read that found another writer's value must not make this
    /// process's write pass over it. Only this process's own writes move
    /// the remembered version on.
    fn remember(&self, name: &str, version: u64) {
        self.versions().entry(name.to_owned()).or_insert(version);
    }

    /// The value of secret `name`, remembering the version read.
    pub async fn get(&self, name: &str) -> Result<Option<SecretValue>, VaultError> {
        let path = self.loc.key_path(name)?;
        let doing = format!("reading secret `{name}`");
        let answer = self
            .request(Method::GET, self.loc.kv_url("data", &path), None, &doing)
            .await?;
        match answer.status {
            StatusCode::OK => {
                let json = answer
                    .json()
                    .ok_or_else(|| self.unexpected(&doing, "the body is not JSON"))?;
                let version = json["data"]["metadata"]["version"]
                    .as_u64()
                    .ok_or_else(|| self.unexpected(&doing, "no data.metadata.version"))?;
                let value = json["data"]["data"]["value"].as_str().ok_or_else(|| {
                    // The other fields are not named: they may be secrets of
                    // something else's.
                    self.unexpected(
                        &doing,
                        "the key has no text field `value`; keycycle keeps each secret as \
                         {\"value\": \"...\"}",
                    )
                })?;
                let value = SecretValue::new(value);
                self.remember(name, version);
                Ok(Some(value))
            }
            StatusCode::NOT_FOUND => {
                // A deleted current version answers 404 with its metadata:
                // the next write must name that version.
                let version = answer
                    .json()
                    .and_then(|j| j["data"]["metadata"]["version"].as_u64())
                    .unwrap_or(0);
                self.remember(name, version);
                Ok(None)
            }
            _ => Err(self.failure(&doing, "data", &path, &answer).await),
        }
    }

    /// Writes `value` as secret `name` with check-and-set: against the
    /// version this process read, or, for a key it never read, the version
    /// there is now (0 when there is none, which only creates).
    pub async fn put(&self, name: &str, value: &SecretValue) -> Result<u64, VaultError> {
        let known = self.versions().get(name).copied();
        let cas = match known {
            Some(v) => v,
            None => self.info(name).await?.map_or(0, |i| i.current_version),
        };
        self.put_cas(name, value, cas).await
    }

    /// Writes `value` as secret `name` if its current version is `cas`.
    pub async fn put_cas(
        &self,
        name: &str,
        value: &SecretValue,
        cas: u64,
    ) -> Result<u64, VaultError> {
        let path = self.loc.key_path(name)?;
        let doing = format!("writing secret `{name}`");
        let body = json!({ "options": { "cas": cas }, "data": { "value": value.expose() } });
        let answer = self
            .request(
                Method::POST,
                self.loc.kv_url("data", &path),
                Some(&body),
                &doing,
            )
            .await;
        // The request body held the value in clear; it goes now.
        drop(body);
        let answer = answer?;
        if answer.status.is_success() {
            let version = answer
                .json()
                .and_then(|j| j["data"]["version"].as_u64())
                .ok_or_else(|| self.unexpected(&doing, "no data.version"))?;
            self.versions().insert(name.to_owned(), version);
            return Ok(version);
        }
        let summary = answer.summary();
        if answer.status == StatusCode::BAD_REQUEST && summary.mentions("check-and-set") {
            return Err(VaultError::Conflict {
                name: name.to_owned(),
                expected: cas,
            });
        }
        Err(self.failure(&doing, "data", &path, &answer).await)
    }

    /// The metadata of secret `name`, `None` when there is none.
    pub async fn info(&self, name: &str) -> Result<Option<KeyInfo>, VaultError> {
        let path = self.loc.key_path(name)?;
        let doing = format!("reading the metadata of secret `{name}`");
        let answer = self
            .request(
                Method::GET,
                self.loc.kv_url("metadata", &path),
                None,
                &doing,
            )
            .await?;
        match answer.status {
            StatusCode::OK => {
                let json = answer
                    .json()
                    .ok_or_else(|| self.unexpected(&doing, "the body is not JSON"))?;
                let data = &json["data"];
                let current = data["current_version"]
                    .as_u64()
                    .ok_or_else(|| self.unexpected(&doing, "no data.current_version"))?;
                let version = &data["versions"][current.to_string()];
                let current_deleted = version["destroyed"].as_bool().unwrap_or(false)
                    || version["deletion_time"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty());
                let time = |field: &str| {
                    data[field]
                        .as_str()
                        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                };
                Ok(Some(KeyInfo {
                    name: name.to_owned(),
                    created_at: time("created_time"),
                    updated_at: time("updated_time"),
                    current_version: current,
                    current_deleted,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(&doing, "metadata", &path, &answer).await),
        }
    }

    /// Every secret name below the prefix, sorted.
    pub async fn list(&self) -> Result<Vec<String>, VaultError> {
        let mut names = Vec::new();
        // Folders still to list, relative to the prefix ("" is the prefix).
        let mut folders = vec![String::new()];
        while let Some(folder) = folders.pop() {
            let path = format!("{}{folder}", self.loc.prefix);
            let doing = format!(
                "listing secrets under `{}`",
                if path.is_empty() { "/" } else { &path }
            );
            let mut url = self.loc.kv_url("metadata", &path);
            // `?list=true` is the API's spelling of the LIST verb, which
            // proxies do not all pass on.
            url.set_query(Some("list=true"));
            let answer = self.request(Method::GET, url, None, &doing).await?;
            match answer.status {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => continue,
                _ => return Err(self.failure(&doing, "metadata", &path, &answer).await),
            }
            let json = answer
                .json()
                .ok_or_else(|| self.unexpected(&doing, "the body is not JSON"))?;
            let keys = json["data"]["keys"]
                .as_array()
                .ok_or_else(|| self.unexpected(&doing, "no data.keys"))?;
            for key in keys.iter().filter_map(Value::as_str) {
                match key.strip_suffix('/') {
                    Some(sub) => folders.push(format!("{folder}{sub}/")),
                    None => names.push(format!("{folder}{key}")),
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes secret `name` with every version and its metadata. Whether
    /// there was one.
    pub async fn remove(&self, name: &str) -> Result<bool, VaultError> {
        if self.info(name).await?.is_none() {
            return Ok(false);
        }
        let path = self.loc.key_path(name)?;
        let doing = format!("deleting secret `{name}`");
        let answer = self
            .request(
                Method::DELETE,
                self.loc.kv_url("metadata", &path),
                None,
                &doing,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.failure(&doing, "metadata", &path, &answer).await);
        }
        self.versions().remove(name);
        Ok(true)
    }

    /// Reachable, authenticated, and the mount is KV v2.
    pub async fn status(&self) -> Result<Status, VaultError> {
        let mut health = self.loc.api_url("sys/health");
        // Every state answers 200, so the body says which it is.
        health.set_query(Some(
            "standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200",
        ));
        let doing = "checking the server's health";
        let answer = self.send(Method::GET, health, None, None, doing).await?;
        let health = answer.json().unwrap_or(Value::Null);
        let server_version = health["version"].as_str().map(crate::error::one_line);
        let sealed = health["sealed"].as_bool().unwrap_or(false);

        let doing = "looking up the token";
        let answer = self
            .request(
                Method::GET,
                self.loc.api_url("auth/token/lookup-self"),
                None,
                doing,
            )
            .await?;
        if matches!(answer.status.as_u16(), 401 | 403) {
            return Err(VaultError::AuthRefused {
                address: self.loc.address.clone(),
                credential: self.credential_origin(),
                summary: answer.summary(),
            });
        }
        if !answer.status.is_success() {
            return Err(self.server_error(doing, &answer));
        }
        // The answer holds the token itself (`data.id`): only the fields
        // below are taken from it.
        let json = answer.json().unwrap_or(Value::Null);
        let ttl_secs = json["data"]["ttl"].as_u64().filter(|t| *t > 0);
        let policies = json["data"]["policies"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(crate::error::one_line)
                    .collect()
            })
            .unwrap_or_default();
        drop(json);

        let doing = "reading the mount's description";
        let answer = self
            .request(
                Method::GET,
                self.loc
                    .api_url(&format!("sys/internal/ui/mounts/{}", self.loc.mount)),
                None,
                doing,
            )
            .await?;
        let mount = if answer.status.is_success() {
            let json = answer.json().unwrap_or(Value::Null);
            let kind = json["data"]["type"].as_str().unwrap_or("");
            let version = json["data"]["options"]["version"].as_str().unwrap_or("1");
            match (kind, version) {
                ("kv", "2") => MountKind::KvV2,
                ("kv", v) => MountKind::Other(format!("kv version {}", crate::error::one_line(v))),
                ("", _) => MountKind::Unknown("the answer names no engine".to_owned()),
                (other, _) => MountKind::Other(crate::error::one_line(other)),
            }
        } else if answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST
        {
            MountKind::Other(format!("nothing is mounted at `{}`", self.loc.mount))
        } else {
            MountKind::Unknown(format!(
                "the token may not read the mount's description ({})",
                answer.summary()
            ))
        };
        Ok(Status {
            server_version,
            sealed,
            credential: self.credential_origin(),
            ttl_secs,
            policies,
            mount,
        })
    }
}

/// An error and its causes on one line. reqwest's messages name the URL
/// (address and path), never a header.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    crate::error::one_line(&parts.join(": "))
}
