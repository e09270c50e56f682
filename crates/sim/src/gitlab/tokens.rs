//! Personal, project and group access tokens: list, show, rotate, revoke and
//! (for project and group tokens) create, plus `GET /user`.
//!
//! Sources: GitLab's `lib/api/personal_access_tokens.rb`,
//! `lib/api/resource_access_tokens.rb`, `PersonalAccessTokens::RotateService`
//! and the provider reference's GitLab section.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use super::GitLabState;
use super::api::{
    ApiError, Caller, Need, Req, authenticate, json_created, json_ok, paginate, ts, ts_opt,
    visible_group, visible_project,
};
use super::model::{
    ACCESS_LEVELS, Db, MAINTAINER, OWNER, RESOURCE_BOT_SCOPES, Resource, Token, User,
};
use super::params::Params;
use crate::clock::{date_string, parse_instant};
use crate::values::{random_hex, url_safe_token};

pub(crate) fn routes() -> Router<GitLabState> {
    let mut router = Router::new()
        .route("/user", get(current_user))
        .route("/personal_access_tokens", get(list_personal))
        .route(
            "/personal_access_tokens/self",
            get(show_self).delete(revoke_self),
        )
        .route("/personal_access_tokens/self/rotate", post(rotate_self))
        .route(
            "/personal_access_tokens/{id}",
            get(show_personal).delete(revoke_personal),
        )
        .route("/personal_access_tokens/{id}/rotate", post(rotate_personal));
    for kind in [Kind::Project, Kind::Group] {
        let base = format!("/{}/{{id}}/access_tokens", kind.plural());
        router = router
            .route(
                &base,
                get(move |s: State<GitLabState>, p: Path<String>, r: Req| {
                    list_resource(kind, s, p, r)
                })
                .post(move |s: State<GitLabState>, p: Path<String>, r: Req| {
                    create_resource(kind, s, p, r)
                }),
            )
            .route(
                &format!("{base}/self/rotate"),
                post(move |s: State<GitLabState>, p: Path<String>, r: Req| {
                    self_rotate_resource(kind, s, p, r)
                }),
            )
            .route(
                &format!("{base}/{{token_id}}"),
                get(
                    move |s: State<GitLabState>, p: Path<(String, String)>, r: Req| {
                        show_resource(kind, s, p, r)
                    },
                )
                .delete(
                    move |s: State<GitLabState>, p: Path<(String, String)>, r: Req| {
                        revoke_resource(kind, s, p, r)
                    },
                ),
            )
            .route(
                &format!("{base}/{{token_id}}/rotate"),
                post(
                    move |s: State<GitLabState>, p: Path<(String, String)>, r: Req| {
                        rotate_resource(kind, s, p, r)
                    },
                ),
            );
    }
    router
}

/// `PersonalAccessToken` entity; with `access_level` for resource tokens.
fn token_json(db: &Db, token: &Token, resource_token: bool) -> Value {
    let mut body = json!({
        "id": token.id,
        "name": token.name,
        "revoked": token.revoked,
        "created_at": ts(token.created_at),
        "description": token.description,
        "scopes": token.scopes,
        "user_id": token.user_id,
        "last_used_at": ts_opt(token.last_used_at),
        "active": db.active(token),
        "expires_at": token.expires_at.map(date_string),
    });
    if resource_token {
        body["access_level"] = json!(db.token_access_level(token));
    }
    body
}

/// The entity plus the value: only creation and rotation show it.
fn token_json_with_value(db: &Db, token: &Token, resource_token: bool) -> Value {
    let mut body = token_json(db, token, resource_token);
    body["token"] = json!(token.value.expose());
    body
}

/// A fresh `glpat-` value no other token has.
fn fresh_value(db: &Db) -> keycycle_secret::SecretValue {
    loop {
        let value = url_safe_token("glpat-", 20);
        if !db.value_in_use(value.expose()) {
            return value;
        }
    }
}

/// The rotation rules shared by every rotate endpoint. A revoked token
/// revokes its family *and* fails with 400: the provider reference says
/// rotating a revoked token triggers family revocation, while GitLab's
/// `RotateService` answers "Token already revoked"; the simulator does both.
fn rotate_checked(db: &mut Db, id: u64, params: &Params) -> Result<u64, ApiError> {
    let revoked = db.tokens.get(&id).is_none_or(|t| t.revoked);
    if revoked {
        db.revoke_descendants(id);
        return Err(ApiError::bad_request(Some("Token already revoked")));
    }
    let expires_at = match params.date("expires_at")? {
        Some(date) => {
            // GitLab checks only the upper bound (`expires_at_before_instance_
            // max_expiry_date`); a date in the past is accepted and yields a
            // token that is dead on arrival.
            let max = db.clock.days_from_today(db.settings.max_lifetime_days);
            if date > max {
                return Err(ApiError::bad_request(Some(&format!(
                    "Expires at must be before {}",
                    date_string(max)
                ))));
            }
            date
        }
        None => db.clock.days_from_today(db.settings.rotation_default_days),
    };
    let value = fresh_value(db);
    Ok(db.rotate(id, expires_at, value))
}

/// The filters of `GET /personal_access_tokens` and `GET .../access_tokens`.
struct TokenFilter {
    revoked: Option<bool>,
    active: Option<bool>,
    search: Option<String>,
    created_before: Option<OffsetDateTime>,
    created_after: Option<OffsetDateTime>,
    last_used_before: Option<OffsetDateTime>,
    last_used_after: Option<OffsetDateTime>,
    expires_before: Option<Date>,
    expires_after: Option<Date>,
    sort: Option<String>,
}

impl TokenFilter {
    fn parse(params: &Params) -> Result<TokenFilter, ApiError> {
        let active = match params.str("state").as_deref() {
            None => None,
            Some("active") => Some(true),
            Some("inactive") => Some(false),
            Some(_) => return Err(ApiError::not_a_valid_value("state")),
        };
        let instant = |key: &str| -> Result<Option<OffsetDateTime>, ApiError> {
            match params.str(key) {
                None => Ok(None),
                Some(text) => parse_instant(&text)
                    .map(Some)
                    .ok_or_else(|| ApiError::invalid(key)),
            }
        };
        Ok(TokenFilter {
            revoked: params.bool("revoked")?,
            active,
            search: params.str("search").map(|s| s.to_lowercase()),
            created_before: instant("created_before")?,
            created_after: instant("created_after")?,
            last_used_before: instant("last_used_before")?,
            last_used_after: instant("last_used_after")?,
            expires_before: params.date("expires_before")?,
            expires_after: params.date("expires_after")?,
            sort: params.str("sort"),
        })
    }

    fn keeps(&self, db: &Db, token: &Token) -> bool {
        let before = |at: Option<OffsetDateTime>, limit: Option<OffsetDateTime>| {
            limit.is_none_or(|l| at.is_some_and(|at| at < l))
        };
        let after = |at: Option<OffsetDateTime>, limit: Option<OffsetDateTime>| {
            limit.is_none_or(|l| at.is_some_and(|at| at >= l))
        };
        self.revoked.is_none_or(|r| token.revoked == r)
            && self.active.is_none_or(|a| db.active(token) == a)
            && self
                .search
                .as_deref()
                .is_none_or(|s| token.name.to_lowercase().contains(s))
            && before(Some(token.created_at), self.created_before)
            && after(Some(token.created_at), self.created_after)
            && before(token.last_used_at, self.last_used_before)
            && after(token.last_used_at, self.last_used_after)
            && self
                .expires_before
                .is_none_or(|d| token.expires_at.is_some_and(|e| e < d))
            && self
                .expires_after
                .is_none_or(|d| token.expires_at.is_some_and(|e| e >= d))
    }

    /// Applies the filter and `sort` (`created_asc`, `created_at_desc`,
    /// `expires_asc`, `last_used_desc`, `name_asc`, ...; default: id).
    fn apply<'a>(&self, db: &Db, tokens: impl Iterator<Item = &'a Token>) -> Vec<&'a Token> {
        let mut kept: Vec<&Token> = tokens.filter(|t| self.keeps(db, t)).collect();
        let sort = self
            .sort
            .as_deref()
            .unwrap_or("id_asc")
            .replace("_at_", "_");
        let descending = sort.ends_with("_desc");
        match sort.trim_end_matches("_desc").trim_end_matches("_asc") {
            "created" => kept.sort_by_key(|t| (t.created_at, t.id)),
            "expires" => kept.sort_by_key(|t| (t.expires_at, t.id)),
            "last_used" => kept.sort_by_key(|t| (t.last_used_at, t.id)),
            "name" => kept.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
            _ => kept.sort_by_key(|t| t.id),
        }
        if descending {
            kept.reverse();
        }
        kept
    }
}

async fn current_user(State(state): State<GitLabState>, req: Req) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let user = &db.users[&caller.user_id];
    let mut body = super::api::user_basic(&db, &req, user.id);
    body["bot"] = json!(user.bot_of.is_some());
    if caller.admin {
        body["is_admin"] = json!(true);
    }
    Ok(json_ok(body))
}

async fn list_personal(State(state): State<GitLabState>, req: Req) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let filter = TokenFilter::parse(&req.params)?;
    // Admins see everyone's tokens; others only their own, and naming
    // another user is a 401 (`restrict_non_admins!`).
    let owner = match req.params.int("user_id")? {
        Some(uid) if caller.admin => {
            let uid = u64::try_from(uid).map_err(|_| ApiError::not_found(None))?;
            if !db.users.contains_key(&uid) {
                return Err(ApiError::not_found(None));
            }
            Some(uid)
        }
        Some(uid) if uid != caller.user_id as i64 => return Err(ApiError::unauthorized()),
        _ if caller.admin => None,
        _ => Some(caller.user_id),
    };
    let tokens = db
        .tokens
        .values()
        .filter(|t| owner.is_none_or(|o| t.user_id == o));
    let items: Vec<Value> = filter
        .apply(&db, tokens)
        .into_iter()
        .map(|t| token_json(&db, t, false))
        .collect();
    paginate(&req, items)
}

/// Token `raw` as the caller may address it through the PAT API. Only
/// admins learn that a token does not exist (404); everyone else gets 401.
fn own_token(db: &Db, caller: &Caller, raw: &str) -> Result<u64, ApiError> {
    let found = raw
        .parse::<u64>()
        .ok()
        .and_then(|id| db.tokens.get(&id))
        .filter(|t| caller.admin || t.user_id == caller.user_id)
        .map(|t| t.id);
    match found {
        Some(id) => Ok(id),
        None if caller.admin => Err(ApiError::not_found(None)),
        None => Err(ApiError::unauthorized()),
    }
}

async fn show_self(State(state): State<GitLabState>, req: Req) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::AnyScope)?;
    Ok(json_ok(token_json(
        &db,
        &db.tokens[&caller.token_id],
        false,
    )))
}

async fn show_personal(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let id = own_token(&db, &caller, &raw)?;
    Ok(json_ok(token_json(&db, &db.tokens[&id], false)))
}

async fn rotate_self(State(state): State<GitLabState>, req: Req) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::SelfRotate)?;
    let new_id = rotate_checked(&mut db, caller.token_id, &req.params)?;
    Ok(json_ok(token_json_with_value(
        &db,
        &db.tokens[&new_id],
        false,
    )))
}

async fn rotate_personal(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    let id = own_token(&db, &caller, &raw)?;
    let new_id = rotate_checked(&mut db, id, &req.params)?;
    Ok(json_ok(token_json_with_value(
        &db,
        &db.tokens[&new_id],
        false,
    )))
}

async fn revoke_self(State(state): State<GitLabState>, req: Req) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    if let Some(token) = db.tokens.get_mut(&caller.token_id) {
        token.revoked = true;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_personal(
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    // `PersonalAccessToken.find` raises RecordNotFound for a missing id;
    // `RevokeService` refusing someone else's token is a bare 400.
    let token = raw
        .parse::<u64>()
        .ok()
        .and_then(|id| db.tokens.get_mut(&id))
        .ok_or_else(ApiError::record_not_found)?;
    if !caller.admin && token.user_id != caller.user_id {
        return Err(ApiError::bad_request(None));
    }
    token.revoked = true;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Project or group, for the resource access token endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Project,
    Group,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Project => "projects",
            Kind::Group => "groups",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::Group => "group",
        }
    }

    /// Reading and managing access tokens needs Maintainer in a project and
    /// Owner in a group.
    fn manage_level(self) -> u8 {
        match self {
            Kind::Project => MAINTAINER,
            Kind::Group => OWNER,
        }
    }

    fn resolve(self, db: &Db, caller: &Caller, raw: &str) -> Result<Resource, ApiError> {
        match self {
            Kind::Project => visible_project(db, caller, raw).map(Resource::Project),
            Kind::Group => visible_group(db, caller, raw).map(Resource::Group),
        }
    }
}

fn can_manage(db: &Db, caller: &Caller, kind: Kind, resource: Resource) -> bool {
    db.resource_level(caller.user_id, resource)
        .is_some_and(|level| level >= kind.manage_level())
}

/// The token `raw` if it is an access token of `resource`.
fn resource_token(db: &Db, resource: Resource, raw: &str) -> Option<u64> {
    let id = raw.parse::<u64>().ok()?;
    let token = db.tokens.get(&id)?;
    (db.resource_of(token) == Some(resource)).then_some(id)
}

async fn list_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    if !can_manage(&db, &caller, kind, resource) {
        return Err(ApiError::unauthorized());
    }
    let filter = TokenFilter::parse(&req.params)?;
    let tokens = db
        .tokens
        .values()
        .filter(|t| db.resource_of(t) == Some(resource));
    let items: Vec<Value> = filter
        .apply(&db, tokens)
        .into_iter()
        .map(|t| token_json(&db, t, true))
        .collect();
    paginate(&req, items)
}

async fn show_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path((raw, token_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Read)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    if !can_manage(&db, &caller, kind, resource) {
        return Err(ApiError::unauthorized());
    }
    // `not_found!("#{source_type} Access Token")`, lower case and all.
    let id = resource_token(&db, resource, &token_raw)
        .ok_or_else(|| ApiError::not_found(Some(&format!("{} Access Token", kind.name()))))?;
    Ok(json_ok(token_json(&db, &db.tokens[&id], true)))
}

async fn create_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    let params = &req.params;

    let mut problems = Vec::new();
    let name = params.str("name").filter(|n| !n.trim().is_empty());
    if name.is_none() {
        problems.push("name is missing".to_owned());
    }
    let scopes = params.list("scopes").filter(|s| !s.is_empty());
    match &scopes {
        None => problems.push("scopes is missing".to_owned()),
        Some(scopes)
            if scopes
                .iter()
                .any(|s| !RESOURCE_BOT_SCOPES.contains(&s.as_str())) =>
        {
            problems.push("scopes does not have a valid value".to_owned())
        }
        Some(_) => {}
    }
    let access_level = params.int("access_level")?.unwrap_or(i64::from(MAINTAINER));
    if !ACCESS_LEVELS.iter().any(|l| i64::from(*l) == access_level) {
        problems.push("access_level does not have a valid value".to_owned());
    }
    if !problems.is_empty() {
        return Err(ApiError::grape(problems.join(", ")));
    }
    let (Some(name), Some(scopes)) = (name, scopes) else {
        return Err(ApiError::bad_request(None));
    };
    let access_level = u8::try_from(access_level).unwrap_or(MAINTAINER);

    // Bots cannot create access tokens: the API wants a personal token.
    if caller.bot_of.is_some() || !can_manage(&db, &caller, kind, resource) {
        return Err(ApiError::bad_request(Some(&format!(
            "User does not have permission to create {} access token",
            kind.name()
        ))));
    }
    let caller_level = db.resource_level(caller.user_id, resource).unwrap_or(0);
    if !caller.admin && access_level > caller_level {
        // Message inferred; GitLab refuses tokens above the creator's role.
        return Err(ApiError::bad_request(Some(
            "Access level of the token can't be greater than the access level of the user who created the token",
        )));
    }
    let expires_at = match params.date("expires_at")? {
        Some(date) => date,
        // Expiry is enforced by default: an omitted date means the maximum.
        None => db.clock.days_from_today(db.settings.max_lifetime_days),
    };
    let max = db.clock.days_from_today(db.settings.max_lifetime_days);
    if expires_at > max {
        return Err(ApiError::bad_request(Some(&format!(
            "Expires at must be before {}",
            date_string(max)
        ))));
    }

    let bot_id = create_bot(&mut db, resource, &name, access_level);
    let value = fresh_value(&db);
    let description = params.str("description");
    let id = db.insert_token(
        bot_id,
        name,
        description,
        scopes,
        Some(expires_at),
        value,
        None,
    );
    Ok(json_created(token_json_with_value(
        &db,
        &db.tokens[&id],
        true,
    )))
}

/// GitLab creates one bot user per resource access token and makes it a
/// member of the project or group at the token's access level.
pub(crate) fn create_bot(db: &mut Db, resource: Resource, name: &str, access_level: u8) -> u64 {
    let id = db.ids.user();
    let suffix = random_hex(4);
    let (prefix, rid) = match resource {
        Resource::Project(rid) => ("project", rid),
        Resource::Group(rid) => ("group", rid),
    };
    db.users.insert(
        id,
        User {
            id,
            username: format!("{prefix}_{rid}_bot_{suffix}"),
            name: name.to_owned(),
            admin: false,
            bot_of: Some(resource),
        },
    );
    match resource {
        Resource::Project(pid) => {
            if let Some(project) = db.projects.get_mut(&pid) {
                project.members.insert(id, access_level);
            }
        }
        Resource::Group(gid) => {
            if let Some(group) = db.groups.get_mut(&gid) {
                group.members.insert(id, access_level);
            }
        }
    }
    id
}

async fn revoke_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path((raw, token_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    let id = resource_token(&db, resource, &token_raw)
        .ok_or_else(|| ApiError::not_found(Some(&format!("{} Access Token", kind.name()))))?;
    if !can_manage(&db, &caller, kind, resource) {
        // `ResourceAccessTokens::RevokeService`: "<user> cannot delete <bot>".
        let bot = db
            .users
            .get(&db.tokens[&id].user_id)
            .map(|u| u.name.clone());
        return Err(ApiError::bad_request(Some(&format!(
            "{} cannot delete {}",
            caller.name,
            bot.unwrap_or_default()
        ))));
    }
    if let Some(token) = db.tokens.get_mut(&id) {
        token.revoked = true;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path((raw, token_raw)): Path<(String, String)>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::Write)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    let id = can_manage(&db, &caller, kind, resource)
        .then(|| resource_token(&db, resource, &token_raw))
        .flatten();
    let Some(id) = id else {
        // "Only admins should be informed if the token doesn't exist".
        return Err(if caller.admin {
            ApiError::not_found(None)
        } else {
            ApiError::unauthorized()
        });
    };
    // A bot rotating the token it authenticates with must use `self/rotate`;
    // GitLab answers this form with 401 (as python-gitlab users found).
    if id == caller.token_id {
        return Err(ApiError::unauthorized());
    }
    let caller_level = db.resource_level(caller.user_id, resource).unwrap_or(0);
    let token_level = db.token_access_level(&db.tokens[&id]).unwrap_or(0);
    if !caller.admin && token_level > caller_level {
        return Err(ApiError::bad_request(Some(
            "Not eligible to rotate tokens with permissions not held by the user",
        )));
    }
    let new_id = rotate_checked(&mut db, id, &req.params)?;
    Ok(json_ok(token_json_with_value(
        &db,
        &db.tokens[&new_id],
        true,
    )))
}

async fn self_rotate_resource(
    kind: Kind,
    State(state): State<GitLabState>,
    Path(raw): Path<String>,
    req: Req,
) -> Result<Response, ApiError> {
    let mut db = state.lock();
    let caller = authenticate(&mut db, &req, Need::SelfRotate)?;
    let resource = kind.resolve(&db, &caller, &raw)?;
    match caller.bot_of {
        // A personal token cannot rotate itself through this endpoint.
        None => return Err(ApiError::not_allowed()),
        Some(own) if own != resource => return Err(ApiError::unauthorized()),
        Some(_) => {}
    }
    let new_id = rotate_checked(&mut db, caller.token_id, &req.params)?;
    Ok(json_ok(token_json_with_value(
        &db,
        &db.tokens[&new_id],
        true,
    )))
}
