//! End-to-end tests of the GitLab simulator over HTTP: each one pins a
//! provider behaviour that bites clients (rotation, reuse detection, tokens
//! shown once, short trigger tokens, masked values, rate limits, expiry,
//! pagination, hook token reset).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::Duration;

use super::*;
use crate::{FailRule, SimServer, start_gitlab};

const ALICE: &str = "glpat-aliceAAAAAAAAAAAAAA";
const BOB: &str = "glpat-bobBBBBBBBBBBBBBBBBB";
const CAROL: &str = "glpat-carolCCCCCCCCCCCCCC";
const ROOT: &str = "glpat-rootRRRRRRRRRRRRRRR";
const OUTSIDER: &str = "glpat-outsiderOOOOOOOOOOO";

/// alice: Maintainer of acme/api; bob: Developer; carol: Maintainer through
/// the acme group; root: admin; outsider: no membership.
struct World {
    server: SimServer,
    state: GitLabState,
    http: reqwest::Client,
    alice: u64,
    alice_token: u64,
    project: u64,
    group: u64,
}

async fn world() -> World {
    let (server, state) = start_gitlab(0).await.unwrap();
    let alice = state.add_user(UserSeed::new("alice")).unwrap();
    let bob = state.add_user(UserSeed::new("bob")).unwrap();
    let carol = state.add_user(UserSeed::new("carol")).unwrap();
    let root = state.add_user(UserSeed::new("root").admin()).unwrap();
    let outsider = state.add_user(UserSeed::new("outsider")).unwrap();
    let group = state
        .add_group(GroupSeed {
            path: "acme".into(),
            name: None,
        })
        .unwrap();
    let project = state
        .add_project(ProjectSeed {
            path: "acme/api".into(),
            name: None,
            group_id: Some(group),
        })
        .unwrap();
    state.add_project_member(project, alice, 40).unwrap();
    state.add_project_member(project, bob, 30).unwrap();
    state.add_group_member(group, carol, 40).unwrap();
    let alice_token = state
        .add_token(TokenSeed::personal(alice, "alice-ci").value(ALICE))
        .unwrap()
        .id;
    for (user, value) in [
        (bob, BOB),
        (carol, CAROL),
        (root, ROOT),
        (outsider, OUTSIDER),
    ] {
        state
            .add_token(TokenSeed::personal(user, "pat").value(value))
            .unwrap();
    }
    World {
        server,
        state,
        http: reqwest::Client::new(),
        alice,
        alice_token,
        project,
        group,
    }
}

impl World {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, self.server.url(&format!("/api/v4{path}")))
            .header("PRIVATE-TOKEN", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::from(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, token, None).await
    }
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Answer {
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}", self.status))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

#[tokio::test]
async fn rotation_issues_a_new_id_and_revokes_the_old_token_at_once() {
    let w = world().await;
    let rotated = w
        .post(
            &format!("/personal_access_tokens/{}/rotate", w.alice_token),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let body = rotated.json();
    let new_id = body["id"].as_u64().unwrap();
    let new_value = body["token"].as_str().unwrap().to_owned();
    assert_ne!(new_id, w.alice_token);
    assert_eq!(body["name"], "alice-ci");
    assert_eq!(body["active"], true);
    assert_eq!(body["revoked"], false);
    let rest = new_value.strip_prefix("glpat-").unwrap();
    assert_eq!(rest.len(), 20);
    // Default expiry: one week.
    let week = date_string(w.state.today() + Duration::days(7));
    assert_eq!(body["expires_at"], json!(week));

    let old = w.state.token(w.alice_token).unwrap();
    assert!(old.revoked && !old.active);
    let new = w.state.token(new_id).unwrap();
    assert_eq!(new.family_id, old.family_id);
    assert_eq!(new.previous_id, Some(w.alice_token));
    assert_eq!(new.value.expose(), new_value);

    let me = w.get("/personal_access_tokens/self", &new_value).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["id"], json!(new_id));
}

#[tokio::test]
async fn using_a_rotated_out_token_revokes_the_whole_family() {
    let w = world().await;
    let rotated = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await
        .json();
    let new_value = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.get("/user", &new_value).await.status,
        StatusCode::OK,
        "the new token works until the old one is reused"
    );

    // "Check the old one is dead": exactly what must never be done.
    let reuse = w.get("/personal_access_tokens/self", ALICE).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reuse.json(), json!({"message": "401 Unauthorized"}));

    let killed = w.get("/user", &new_value).await;
    assert_eq!(killed.status, StatusCode::UNAUTHORIZED);
    let family = w.snapshot_family(w.alice_token);
    assert!(
        family.iter().all(|t| t.revoked),
        "every token of the family is revoked"
    );
}

impl World {
    fn snapshot_family(&self, family_id: u64) -> Vec<TokenState> {
        self.state
            .snapshot()
            .family(family_id)
            .into_iter()
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn rotation_only_reuse_detection_spares_reads_but_not_rotations() {
    let w = world().await;
    let mut settings = w.state.settings();
    settings.reuse_detection = ReuseDetection::RotationRequests;
    w.state.set_settings(settings);

    let new_value = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(w.get("/user", ALICE).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(w.get("/user", &new_value).await.status, StatusCode::OK);

    let again = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        w.get("/user", &new_value).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rotating_a_revoked_token_by_id_is_400_and_revokes_the_family() {
    let w = world().await;
    let first = w
        .post(
            &format!("/personal_access_tokens/{}/rotate", w.alice_token),
            ALICE,
            json!({}),
        )
        .await
        .json();
    let second_value = first["token"].as_str().unwrap().to_owned();
    // A second, unrelated token of alice's to make the call with.
    w.state
        .add_token(TokenSeed::personal(w.alice, "spare").value("glpat-spareSSSSSSSSSSSSSS"))
        .unwrap();

    let again = w
        .post(
            &format!("/personal_access_tokens/{}/rotate", w.alice_token),
            "glpat-spareSSSSSSSSSSSSSS",
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json(),
        json!({"message": "400 Bad request - Token already revoked"})
    );
    assert_eq!(
        w.get("/user", &second_value).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.get("/user", "glpat-spareSSSSSSSSSSSSSS").await.status,
        StatusCode::OK,
        "other families are untouched"
    );
}

#[tokio::test]
async fn token_values_are_shown_only_when_issued() {
    let w = world().await;
    let rotated = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await
        .json();
    let value = rotated["token"].as_str().unwrap().to_owned();
    let id = rotated["id"].as_u64().unwrap();

    for path in [
        format!("/personal_access_tokens/{id}"),
        "/personal_access_tokens/self".to_owned(),
        "/personal_access_tokens".to_owned(),
    ] {
        let answer = w.get(&path, &value).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(!answer.text.contains(&value), "{path} leaked the value");
        assert!(
            !answer.text.contains("\"token\""),
            "{path} has a token field"
        );
    }
    let listed = w.get("/personal_access_tokens", &value).await.json();
    let ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![w.alice_token, id],
        "non-admins see only their own"
    );
}

#[tokio::test]
async fn personal_token_lookups_hide_other_peoples_tokens() {
    let w = world().await;
    let bobs = w
        .state
        .snapshot()
        .token_by_value(BOB)
        .map(|t| t.id)
        .unwrap();
    let foreign = w
        .get(&format!("/personal_access_tokens/{bobs}"), ALICE)
        .await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED);
    let missing = w.get("/personal_access_tokens/9999", ALICE).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let admin_missing = w.get("/personal_access_tokens/9999", ROOT).await;
    assert_eq!(admin_missing.status, StatusCode::NOT_FOUND);
    let admin_sees = w
        .get(&format!("/personal_access_tokens/{bobs}"), ROOT)
        .await;
    assert_eq!(admin_sees.status, StatusCode::OK);

    let filtered = w.get("/personal_access_tokens?user_id=2", ALICE).await;
    assert_eq!(filtered.status, StatusCode::UNAUTHORIZED);

    let revoke_foreign = w
        .delete(&format!("/personal_access_tokens/{bobs}"), ALICE)
        .await;
    assert_eq!(revoke_foreign.status, StatusCode::BAD_REQUEST);
    assert!(w.state.token(bobs).unwrap().active);
    let revoked = w.delete("/personal_access_tokens/self", BOB).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert!(w.state.token(bobs).unwrap().revoked);
}

#[tokio::test]
async fn expired_tokens_are_401_from_their_expiry_date() {
    let w = world().await;
    let expiry = w.state.today() + Duration::days(3);
    w.state
        .add_token(
            TokenSeed::personal(w.alice, "short-lived")
                .value("glpat-shortLivedXXXXXXXXX")
                .expires_at(expiry),
        )
        .unwrap();
    w.state.set_today(Some(expiry - Duration::days(1)));
    assert_eq!(
        w.get("/user", "glpat-shortLivedXXXXXXXXX").await.status,
        StatusCode::OK
    );

    // Tokens expire at 00:00 UTC on expires_at.
    w.state.set_today(Some(expiry));
    let expired = w.get("/user", "glpat-shortLivedXXXXXXXXX").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json(), json!({"message": "401 Unauthorized"}));

    let mut settings = w.state.settings();
    settings.auth_error_style = AuthErrorStyle::Oauth;
    w.state.set_settings(settings);
    let oauth = w.get("/user", "glpat-shortLivedXXXXXXXXX").await;
    assert_eq!(oauth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(oauth.json()["error"], "invalid_token");
    assert!(oauth.header("www-authenticate").starts_with("Bearer"));

    let listed = w
        .get("/personal_access_tokens?state=inactive", ALICE)
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "short-lived");
    assert_eq!(listed[0]["active"], false);
}

#[tokio::test]
async fn rotation_takes_expires_at_from_json_form_or_query() {
    let w = world().await;
    let target = date_string(w.state.today() + Duration::days(30));

    let by_query = w
        .post(
            &format!("/personal_access_tokens/self/rotate?expires_at={target}"),
            ALICE,
            json!({}),
        )
        .await
        .json();
    assert_eq!(by_query["expires_at"], json!(target));

    let value = by_query["token"].as_str().unwrap().to_owned();
    let by_form = w
        .http
        .post(w.server.url("/api/v4/personal_access_tokens/self/rotate"))
        .bearer_auth(&value)
        .form(&[("expires_at", target.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(by_form.status(), StatusCode::OK);
    let by_form: Value = by_form.json().await.unwrap();
    assert_eq!(by_form["expires_at"], json!(target));

    let value = by_form["token"].as_str().unwrap().to_owned();
    let bad = w
        .post(
            "/personal_access_tokens/self/rotate",
            &value,
            json!({"expires_at": "next tuesday"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json(), json!({"error": "expires_at is invalid"}));
    let too_far = w
        .post(
            "/personal_access_tokens/self/rotate",
            &value,
            json!({"expires_at": date_string(w.state.today() + Duration::days(400))}),
        )
        .await;
    assert_eq!(too_far.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        w.get("/user", &value).await.status,
        StatusCode::OK,
        "a refused rotation leaves the token alone"
    );
}

#[tokio::test]
async fn read_only_scopes_cannot_write() {
    let w = world().await;
    w.state
        .add_token(
            TokenSeed::personal(w.alice, "reader")
                .value("glpat-readerXXXXXXXXXXXXX")
                .scopes(&["read_api"]),
        )
        .unwrap();
    let read = w
        .get(
            &format!("/projects/{}/variables", w.project),
            "glpat-readerXXXXXXXXXXXXX",
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let write = w
        .post(
            &format!("/projects/{}/variables", w.project),
            "glpat-readerXXXXXXXXXXXXX",
            json!({"key": "K", "value": "v"}),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    assert_eq!(write.json()["error"], "insufficient_scope");
}

#[tokio::test]
async fn project_access_tokens_are_bot_members_that_rotate_like_personal_ones() {
    let w = world().await;
    let project = format!("/projects/{}", "acme%2Fapi");
    let created = w
        .post(
            &format!("{project}/access_tokens"),
            ALICE,
            json!({"name": "deployer", "scopes": ["api"], "access_level": 30}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    assert_eq!(created["access_level"], 30);
    let value = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_u64().unwrap();

    // The bot is a Developer of the project: it may read the project...
    assert_eq!(
        w.get(&format!("/projects/{}", w.project), &value)
            .await
            .status,
        StatusCode::OK
    );
    // ...but variables need a Maintainer.
    assert_eq!(
        w.get(&format!("{project}/variables"), &value).await.status,
        StatusCode::FORBIDDEN
    );

    let rotated = w
        .post(
            &format!("{project}/access_tokens/self/rotate"),
            &value,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let rotated = rotated.json();
    assert_ne!(rotated["id"].as_u64().unwrap(), id);
    assert_eq!(rotated["access_level"], 30);
    assert_eq!(rotated["user_id"], created["user_id"], "same bot user");

    let listed = w.get(&format!("{project}/access_tokens"), ALICE).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json().as_array().unwrap().len(), 2);
    assert!(!listed.text.contains(&value));

    let by_id = w
        .post(
            &format!("{project}/access_tokens/{}/rotate", rotated["id"]),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(by_id.status, StatusCode::OK);

    let developer = w.get(&format!("{project}/access_tokens"), BOB).await;
    assert_eq!(developer.status, StatusCode::UNAUTHORIZED);
    let nameless = w
        .post(&format!("{project}/access_tokens"), ALICE, json!({}))
        .await;
    assert_eq!(
        nameless.json(),
        json!({"error": "name is missing, scopes is missing"})
    );
    let personal_self = w
        .post(
            &format!("{project}/access_tokens/self/rotate"),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(personal_self.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn group_tokens_need_an_owner_and_reach_the_groups_projects() {
    let w = world().await;
    let group = format!("/groups/{}", w.group);
    let refused = w
        .post(
            &format!("{group}/access_tokens"),
            CAROL,
            json!({"name": "g", "scopes": ["api"]}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let owner = w.state.add_user(UserSeed::new("owner")).unwrap();
    w.state.add_group_member(w.group, owner, 50).unwrap();
    w.state
        .add_token(TokenSeed::personal(owner, "o").value("glpat-ownerOOOOOOOOOOOOOO"))
        .unwrap();
    let created = w
        .post(
            &format!("{group}/access_tokens"),
            "glpat-ownerOOOOOOOOOOOOOO",
            json!({"name": "group-bot", "scopes": ["api"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    assert_eq!(created["access_level"], 40);
    let value = created["token"].as_str().unwrap();
    let variables = w
        .get(&format!("/projects/{}/variables", w.project), value)
        .await;
    assert_eq!(
        variables.status,
        StatusCode::OK,
        "group Maintainer reaches the project"
    );
}

#[tokio::test]
async fn trigger_tokens_are_full_for_the_owner_and_short_for_others() {
    let w = world().await;
    let path = format!("/projects/{}/triggers", w.project);
    let created = w.post(&path, ALICE, json!({"description": "deploy"})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let full = created["token"].as_str().unwrap().to_owned();
    let hex = full.strip_prefix("glptt-").unwrap();
    assert_eq!(hex.len(), 40);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(created["owner"]["username"], "alice");
    let id = created["id"].as_u64().unwrap();

    let owner_view = w.get(&format!("{path}/{id}"), ALICE).await.json();
    assert_eq!(owner_view["token"], json!(full));
    let other_view = w.get(&format!("{path}/{id}"), CAROL).await.json();
    assert_eq!(other_view["token"], json!(&hex[..4]));
    let listed = w.get(&path, CAROL).await;
    assert!(!listed.text.contains(&full));

    let edit_foreign = w
        .put(&format!("{path}/{id}"), CAROL, json!({"description": "x"}))
        .await;
    assert_eq!(edit_foreign.status, StatusCode::FORBIDDEN);
    let missing_description = w.post(&path, ALICE, json!({})).await;
    assert_eq!(
        missing_description.json(),
        json!({"error": "description is missing"})
    );
    assert_eq!(w.get(&path, BOB).await.status, StatusCode::FORBIDDEN);

    let pipeline = w
        .http
        .post(
            w.server
                .url(&format!("/api/v4/projects/{}/trigger/pipeline", w.project)),
        )
        .form(&[("token", full.as_str()), ("ref", "main")])
        .send()
        .await
        .unwrap();
    assert_eq!(pipeline.status(), StatusCode::CREATED);
    let snapshot = w.state.snapshot();
    assert_eq!(snapshot.pipelines.len(), 1);
    assert!(snapshot.trigger(id).unwrap().last_used.is_some());

    assert_eq!(
        w.delete(&format!("{path}/{id}"), CAROL).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(w.state.snapshot().trigger(id).is_none());
}

#[tokio::test]
async fn masked_variables_follow_gitlabs_value_rule() {
    let w = world().await;
    let path = format!("/projects/{}/variables", w.project);
    let short = w
        .post(
            &path,
            ALICE,
            json!({"key": "SECRET", "value": "short", "masked": true}),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.json(), json!({"message": {"value": ["is invalid"]}}));
    let spaced = w
        .post(
            &path,
            ALICE,
            json!({"key": "SECRET", "value": "has spaces in it", "masked": true}),
        )
        .await;
    assert_eq!(spaced.status, StatusCode::BAD_REQUEST);
    assert!(w.state.snapshot().variables.is_empty());

    let ok = w
        .post(
            &path,
            ALICE,
            json!({"key": "SECRET", "value": "glpat-Ab_c+d/e=f@g:h.i~j", "masked": true}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(ok.json()["masked"], true);

    let unmask_bad = w
        .put(
            &format!("{path}/SECRET"),
            ALICE,
            json!({"value": "bad value"}),
        )
        .await;
    assert_eq!(
        unmask_bad.status,
        StatusCode::BAD_REQUEST,
        "still masked on update"
    );
}

#[tokio::test]
async fn variables_with_one_key_in_several_scopes_need_a_filter() {
    let w = world().await;
    w.state
        .add_variable(
            w.project,
            VariableSeed::new("TOKEN", "prod-value").scope("production"),
        )
        .unwrap();
    w.state
        .add_variable(
            w.project,
            VariableSeed::new("TOKEN", "stage-value").scope("staging"),
        )
        .unwrap();
    let path = format!("/projects/{}/variables/TOKEN", w.project);

    let ambiguous = w.get(&path, ALICE).await;
    assert_eq!(ambiguous.status, StatusCode::CONFLICT);
    assert_eq!(
        ambiguous.json(),
        json!({"message": "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"})
    );
    let put_ambiguous = w.put(&path, ALICE, json!({"value": "x"})).await;
    assert_eq!(put_ambiguous.status, StatusCode::CONFLICT);

    let filtered = format!("{path}?filter%5Benvironment_scope%5D=production");
    let prod = w.get(&filtered, ALICE).await.json();
    assert_eq!(prod["value"], "prod-value");
    let updated = w.put(&filtered, ALICE, json!({"value": "rotated"})).await;
    assert_eq!(updated.status, StatusCode::OK);
    let snapshot = w.state.snapshot();
    assert_eq!(
        snapshot
            .variable(w.project, "TOKEN", "production")
            .unwrap()
            .value
            .expose(),
        "rotated"
    );
    assert_eq!(
        snapshot
            .variable(w.project, "TOKEN", "staging")
            .unwrap()
            .value
            .expose(),
        "stage-value"
    );

    let duplicate = w
        .post(
            &format!("/projects/{}/variables", w.project),
            ALICE,
            json!({"key": "TOKEN", "value": "again", "environment_scope": "staging"}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        duplicate.json(),
        json!({"message": {"key": ["(TOKEN) has already been taken"]}})
    );
    let no_value = w.put(&filtered, ALICE, json!({})).await;
    assert_eq!(no_value.json(), json!({"error": "value is missing"}));
    let missing = w
        .get(&format!("/projects/{}/variables/NOPE", w.project), ALICE)
        .await;
    assert_eq!(missing.json(), json!({"message": "404 Variable Not Found"}));
    let deleted = w
        .delete(&format!("{path}?filter[environment_scope]=staging"), ALICE)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(w.state.snapshot().variables.len(), 1);
}

#[tokio::test]
async fn permissions_are_403_for_low_roles_and_404_for_strangers() {
    let w = world().await;
    let path = format!("/projects/{}/variables", w.project);
    let developer = w.get(&path, BOB).await;
    assert_eq!(developer.status, StatusCode::FORBIDDEN);
    assert_eq!(developer.json(), json!({"message": "403 Forbidden"}));
    let stranger = w.get(&path, OUTSIDER).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    assert_eq!(stranger.json(), json!({"message": "404 Project Not Found"}));
    let unknown = w.get("/projects/4242/hooks", ALICE).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let admin = w.get(&path, ROOT).await;
    assert_eq!(admin.status, StatusCode::OK);
    let no_token = w
        .http
        .get(w.server.url(&format!("/api/v4{path}")))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn lists_paginate_with_gitlabs_headers() {
    let w = world().await;
    for i in 0..25 {
        w.state
            .add_variable(w.project, VariableSeed::new(&format!("VAR_{i:02}"), "v"))
            .unwrap();
    }
    let path = format!("/projects/{}/variables", w.project);
    let first = w.get(&path, ALICE).await;
    assert_eq!(first.json().as_array().unwrap().len(), 20);
    assert_eq!(first.header("x-per-page"), "20");
    assert_eq!(first.header("x-next-page"), "2");

    let page = w.get(&format!("{path}?page=2&per_page=10"), ALICE).await;
    assert_eq!(page.status, StatusCode::OK);
    let items = page.json();
    assert_eq!(items.as_array().unwrap().len(), 10);
    assert_eq!(items[0]["key"], "VAR_10");
    assert_eq!(page.header("x-total"), "25");
    assert_eq!(page.header("x-total-pages"), "3");
    assert_eq!(page.header("x-page"), "2");
    assert_eq!(page.header("x-per-page"), "10");
    assert_eq!(page.header("x-next-page"), "3");
    assert_eq!(page.header("x-prev-page"), "1");
    let link = page.header("link");
    for rel in ["prev", "next", "first", "last"] {
        assert!(link.contains(&format!("rel=\"{rel}\"")), "{link}");
    }
    assert!(link.contains("page=3&per_page=10>; rel=\"next\""), "{link}");
    // GitLab's links are absolute and keep `/api/v4`: clients such as
    // python-gitlab follow them as they are.
    let next = link
        .split(", ")
        .find_map(|part| part.strip_suffix("; rel=\"next\""))
        .and_then(|url| url.strip_prefix('<')?.strip_suffix('>'))
        .unwrap_or_else(|| panic!("no next link in {link}"));
    assert_eq!(
        next,
        w.server
            .url(&format!("/api/v4{path}?page=3&per_page=10"))
            .as_str()
    );
    let followed = w
        .http
        .get(next)
        .header("PRIVATE-TOKEN", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    let followed: Value = followed.json().await.unwrap();
    assert_eq!(followed[0]["key"], "VAR_20");

    let last = w.get(&format!("{path}?page=3&per_page=10"), ALICE).await;
    assert_eq!(last.json().as_array().unwrap().len(), 5);
    assert_eq!(last.header("x-next-page"), "");
    assert!(!last.header("link").contains("rel=\"next\""));

    let capped = w.get(&format!("{path}?per_page=500"), ALICE).await;
    assert_eq!(capped.header("x-per-page"), "100");
}

#[tokio::test]
async fn changing_a_hook_url_without_a_token_clears_the_token() {
    let w = world().await;
    let hook = w
        .state
        .add_hook(
            w.project,
            HookSeed::new("https://ci.example.test/hook").token("hook-secret-1"),
        )
        .unwrap();
    let path = format!("/projects/{}/hooks/{hook}", w.project);

    let shown = w.get(&path, ALICE).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(!shown.text.contains("hook-secret-1"));
    assert!(shown.json().get("token").is_none());

    let same_url = w
        .put(
            &path,
            ALICE,
            json!({"url": "https://ci.example.test/hook", "push_events": false}),
        )
        .await;
    assert_eq!(same_url.status, StatusCode::OK);
    assert_eq!(same_url.json()["push_events"], false);
    let kept = w.state.snapshot().hook(hook).unwrap().token.clone();
    assert_eq!(kept.unwrap().expose(), "hook-secret-1");

    let with_token = w
        .put(
            &path,
            ALICE,
            json!({"url": "https://ci.example.test/v2", "token": "hook-secret-2"}),
        )
        .await;
    assert_eq!(with_token.status, StatusCode::OK);
    assert!(!with_token.text.contains("hook-secret-2"));
    let snapshot = w.state.snapshot();
    let state = snapshot.hook(hook).unwrap();
    assert_eq!(state.url, "https://ci.example.test/v2");
    assert_eq!(state.token.as_ref().unwrap().expose(), "hook-secret-2");

    let without = w
        .put(&path, ALICE, json!({"url": "https://ci.example.test/v3"}))
        .await;
    assert_eq!(without.status, StatusCode::OK);
    assert_eq!(w.state.snapshot().hook(hook).unwrap().token, None);

    let no_url = w.put(&path, ALICE, json!({"token": "x"})).await;
    assert_eq!(no_url.json(), json!({"error": "url is missing"}));
    let bad_url = w.put(&path, ALICE, json!({"url": "not a url"})).await;
    assert_eq!(bad_url.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        w.put(&path, BOB, json!({"url": "https://x.test"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(w.delete(&path, ALICE).await.status, StatusCode::NO_CONTENT);
    let again = w.delete(&path, ALICE).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.json(), json!({"message": "404 Not found"}));

    let created = w
        .post(
            &format!("/projects/{}/hooks", w.project),
            ALICE,
            json!({"url": "https://ci.example.test/new", "token": "s3"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.json().get("token").is_none());
}

#[tokio::test]
async fn rate_limit_switch_answers_429_with_gitlabs_headers() {
    let w = world().await;
    let normal = w.get("/user", ALICE).await;
    assert_eq!(normal.status, StatusCode::OK);
    assert_eq!(
        normal.header("ratelimit-name"),
        "throttle_authenticated_api"
    );
    assert_eq!(normal.header("ratelimit-limit"), "2000");
    assert_eq!(normal.header("ratelimit-observed"), "1");
    assert_eq!(normal.header("ratelimit-remaining"), "1999");
    let reset: i64 = normal.header("ratelimit-reset").parse().unwrap();
    assert!(reset > time::OffsetDateTime::now_utc().unix_timestamp() - 1);

    let switched = w
        .http
        .post(w.server.url("/_sim/rate_limit"))
        .json(&json!({"times": 1, "retry_after": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), StatusCode::NO_CONTENT);
    let limited = w.get("/user", ALICE).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.text, "Retry later");
    assert_eq!(limited.header("retry-after"), "42");
    assert_eq!(limited.header("ratelimit-remaining"), "0");
    assert!(limited.header("ratelimit-resettime").ends_with(" GMT"));
    assert_eq!(w.get("/user", ALICE).await.status, StatusCode::OK);

    // The simulator also throttles by itself past the per-minute limit.
    let mut settings = w.state.settings();
    settings.rate_limit_per_minute = 1;
    w.state.set_settings(settings);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(w.get("/user", ALICE).await.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn injected_failures_change_nothing_and_are_logged() {
    let w = world().await;
    w.state.fail(FailRule::new(
        "POST",
        "/api/v4/personal_access_tokens/self/rotate",
        502,
    ));
    let failed = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.json(), json!({"message": "502 Bad Gateway"}));
    assert!(failed.headers.contains_key("ratelimit-limit"));
    assert!(w.state.token(w.alice_token).unwrap().active);
    assert_eq!(w.state.snapshot().tokens.len(), 5);

    let log = w.state.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/api/v4/personal_access_tokens/self/rotate");
}

#[tokio::test]
async fn control_api_seeds_and_reveals_the_true_state() {
    let w = world().await;
    let control = |path: &str| w.server.url(&format!("/_sim{path}"));
    let user: Value = w
        .http
        .post(control("/users"))
        .json(&json!({"username": "dave"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dave = user["id"].as_u64().unwrap();
    let member = w
        .http
        .post(control(&format!("/projects/{}/members", w.project)))
        .json(&json!({"user_id": dave, "access_level": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(member.status(), StatusCode::NO_CONTENT);
    let seeded = w
        .http
        .post(control("/tokens"))
        .json(
            &json!({"user_id": dave, "name": "d", "token": "glpat-daveDDDDDDDDDDDDDDD",
                      "scopes": ["api"], "expires_at": "2099-01-01"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), StatusCode::CREATED);
    let seeded: SeededToken = seeded.json().await.unwrap();
    assert_eq!(seeded.token.expose(), "glpat-daveDDDDDDDDDDDDDDD");

    let duplicate = w
        .http
        .post(control("/tokens"))
        .json(&json!({"user_id": dave, "name": "again", "token": "glpat-daveDDDDDDDDDDDDDDD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert!(!duplicate.text().await.unwrap().contains("glpat-dave"));

    let trigger: SeededTrigger = w
        .http
        .post(control(&format!("/projects/{}/triggers", w.project)))
        .json(&json!({"owner_id": dave, "description": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(trigger.token.expose().starts_with("glptt-"));

    let hook: Value = w
        .http
        .post(control(&format!("/projects/{}/hooks", w.project)))
        .json(&json!({"url": "https://h.test/", "token": "hook-secret",
                      "events": {"pipeline_events": true}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let variable = w
        .http
        .post(control(&format!("/projects/{}/variables", w.project)))
        .json(&json!({"key": "DEPLOY", "value": "var-secret", "masked": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(variable.status(), StatusCode::CREATED);

    let today = w
        .http
        .post(control("/today"))
        .json(&json!({"date": "2098-12-31"}))
        .send()
        .await
        .unwrap();
    assert_eq!(today.status(), StatusCode::NO_CONTENT);
    let settings: GitLabSettings = w
        .http
        .post(control("/settings"))
        .json(&json!({"reuse_detection": "rotation_requests"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings.reuse_detection, ReuseDetection::RotationRequests);
    assert_eq!(settings.rate_limit_per_minute, 2000);

    let truth: GitLabSnapshot = w
        .http
        .get(control("/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth.today, "2098-12-31");
    let token = truth.token(seeded.id).unwrap();
    assert_eq!(token.value.expose(), "glpat-daveDDDDDDDDDDDDDDD");
    assert!(token.active);
    assert_eq!(
        truth.trigger(trigger.id).unwrap().token.expose(),
        trigger.token.expose()
    );
    let hook = truth.hook(hook["id"].as_u64().unwrap()).unwrap();
    assert_eq!(hook.token.as_ref().unwrap().expose(), "hook-secret");
    assert!(hook.events["pipeline_events"]);
    assert_eq!(
        truth
            .variable(w.project, "DEPLOY", "*")
            .unwrap()
            .value
            .expose(),
        "var-secret"
    );
    assert_eq!(
        truth.settings.reuse_detection,
        ReuseDetection::RotationRequests
    );

    // On the pinned date the token (expiring 2099-01-01) still works.
    assert_eq!(
        w.get("/user", "glpat-daveDDDDDDDDDDDDDDD").await.status,
        StatusCode::OK
    );
    let bad = w
        .http
        .post(control("/tokens"))
        .json(&json!({"project_id": 999, "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn snapshot_debug_output_masks_every_value() {
    let w = world().await;
    w.state
        .add_hook(
            w.project,
            HookSeed::new("https://h.test").token("hook-secret-zz"),
        )
        .unwrap();
    w.state
        .add_variable(w.project, VariableSeed::new("K", "variable-secret-zz"))
        .unwrap();
    let printed = format!("{:?}", w.state.snapshot());
    for secret in [ALICE, "hook-secret-zz", "variable-secret-zz"] {
        assert!(!printed.contains(secret), "Debug output shows a secret");
    }
}

#[tokio::test]
async fn unknown_api_routes_get_grapes_404() {
    let w = world().await;
    let answer = w.get("/no/such/route", ALICE).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json(), json!({"error": "404 Not Found"}));
}

#[tokio::test]
async fn multipart_forms_work_like_curl_form() {
    let w = world().await;
    let boundary = "XsimBoundaryX";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nFROM_FORM\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\nform value\r\n\
         --{boundary}--\r\n"
    );
    let created = w
        .http
        .post(
            w.server
                .url(&format!("/api/v4/projects/{}/variables", w.project)),
        )
        .header("PRIVATE-TOKEN", ALICE)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let snapshot = w.state.snapshot();
    let variable = snapshot.variable(w.project, "FROM_FORM", "*").unwrap();
    assert_eq!(variable.value.expose(), "form value");
}

#[tokio::test]
async fn groups_are_shown_by_id_and_by_encoded_full_path() {
    let w = world().await;
    let sub = w
        .state
        .add_group(GroupSeed {
            path: "acme/platform".into(),
            name: Some("Platform".into()),
        })
        .unwrap();
    w.state.add_group_member(sub, w.alice, 30).unwrap();

    let by_id = w.get(&format!("/groups/{sub}"), ALICE).await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.text);
    let group = by_id.json();
    assert_eq!(group["id"], sub);
    assert_eq!(group["path"], "platform");
    assert_eq!(group["full_path"], "acme/platform");
    assert_eq!(group["name"], "Platform");
    assert_eq!(group["parent_id"], w.group);

    let by_path = w.get("/groups/acme%2Fplatform", ALICE).await;
    assert_eq!(by_path.status, StatusCode::OK, "{}", by_path.text);
    assert_eq!(by_path.json()["id"], sub);

    // Non-members do not learn the group exists: GitLab says 404, not 403.
    let hidden = w.get("/groups/acme%2Fplatform", OUTSIDER).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.json()["message"], "404 Group Not Found");
    let missing = w.get("/groups/nope", ALICE).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let anonymous = w.get(&format!("/groups/{sub}"), "glpat-unknown").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_bot_rotates_its_own_token_only_through_self_rotate() {
    let w = world().await;
    let bot = w
        .state
        .add_token(
            TokenSeed::project(w.project, "maintainer-bot")
                .value("glpat-botMMMMMMMMMMMMMMMM")
                .access_level(40),
        )
        .unwrap();
    let project = format!("/projects/{}", w.project);

    // By id, on itself: 401, and the token is left as it was.
    let by_id = w
        .post(
            &format!("{project}/access_tokens/{}/rotate", bot.id),
            bot.token.expose(),
            json!({}),
        )
        .await;
    assert_eq!(by_id.status, StatusCode::UNAUTHORIZED, "{}", by_id.text);
    assert_eq!(by_id.json()["message"], "401 Unauthorized");
    let snap = w.state.snapshot();
    assert!(snap.token(bot.id).unwrap().active);
    assert_eq!(snap.family(bot.family_id).len(), 1, "no new token");

    // Through `self/rotate` it works.
    let own = w
        .post(
            &format!("{project}/access_tokens/self/rotate"),
            bot.token.expose(),
            json!({}),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert_ne!(own.json()["id"], bot.id);
    assert!(w.state.snapshot().token(bot.id).unwrap().revoked);
}

#[tokio::test]
async fn a_fault_after_processing_changes_state_but_hides_the_answer() {
    let w = world().await;
    w.state.fail(
        FailRule::new("POST", "/api/v4/personal_access_tokens/self/rotate", 502).after_processing(),
    );
    let lost = w
        .post("/personal_access_tokens/self/rotate", ALICE, json!({}))
        .await;
    assert_eq!(lost.status, StatusCode::BAD_GATEWAY);
    assert_eq!(lost.json()["message"], "502 Bad Gateway");
    assert!(!lost.text.contains("glpat-"), "the new value was not shown");
    // GitLab carried it out: the old token is revoked and has a successor.
    let snap = w.state.snapshot();
    let old = snap.token(w.alice_token).unwrap();
    assert!(old.revoked);
    let family = snap.family(old.family_id);
    assert_eq!(family.iter().filter(|t| t.active).count(), 1);
}

/// A hook of acme/api with every setting away from its default.
fn seed_full_hook(w: &World, url: &str, token: &str) -> u64 {
    w.state
        .add_hook(
            w.project,
            HookSeed::new(url)
                .token(token)
                .name("deploys")
                .description("tells the deployer")
                .event("push_events", false)
                .event("pipeline_events", true)
                .event("emoji_events", true)
                .event("enable_ssl_verification", false)
                .branch_filter("release/.*", "regex")
                .template(r#"{"event":"{{object_kind}}"}"#),
        )
        .unwrap()
}

#[tokio::test]
async fn hook_tests_record_the_delivery_instead_of_making_it() {
    let w = world().await;
    let url = "https://receiver.example.test/hook";
    let hook = seed_full_hook(&w, url, "hook-secret-t1");
    let path = format!("/projects/{}/hooks/{hook}/test/push_events", w.project);

    let ok = w.post(&path, ALICE, json!({})).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(ok.json(), json!({"message": "201 Created"}));
    let tests = w.state.hook_tests();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].hook_id, hook);
    assert_eq!(tests[0].url, url);
    assert_eq!(tests[0].trigger, "push_events");
    assert_eq!(tests[0].status, 200);
    assert!(tests[0].sent_token("hook-secret-t1"));
    assert!(!tests[0].sent_token("hook-secret-t2"));
    assert!(!format!("{tests:?}").contains("hook-secret-t1"));

    // A receiver that refuses: GitLab answers 422 with what it said.
    w.state
        .set_endpoint_response(url, 401, "wrong X-Gitlab-Token");
    let refused = w.post(&path, ALICE, json!({})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.json(), json!({"message": "wrong X-Gitlab-Token"}));
    // Nothing answers at all: the connection error is the message.
    w.state.set_endpoint_status(url, 0);
    let unreachable = w
        .post(
            &format!("/projects/{}/hooks/{hook}/test/tag_push_events", w.project),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(unreachable.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unreachable.json()["message"]
            .as_str()
            .unwrap()
            .contains("receiver.example.test"),
        "{}",
        unreachable.text
    );
    let tests = w.state.hook_tests();
    assert_eq!(
        tests.iter().map(|t| t.status).collect::<Vec<_>>(),
        [200, 401, 0]
    );

    let bad = w
        .post(
            &format!("/projects/{}/hooks/{hook}/test/build_events", w.project),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json(),
        json!({"error": "trigger does not have a valid value"})
    );
    assert_eq!(
        w.post(&path, BOB, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    let missing = w
        .post(
            &format!("/projects/{}/hooks/999/test/push_events", w.project),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        w.state.hook_tests().len(),
        3,
        "refused tests deliver nothing"
    );
}

#[tokio::test]
async fn hook_tests_are_limited_to_five_a_minute_per_hook() {
    let w = world().await;
    let hook = seed_full_hook(&w, "https://a.example.test/", "hook-secret-a");
    let other = seed_full_hook(&w, "https://b.example.test/", "hook-secret-b");
    let path = |id: u64| format!("/projects/{}/hooks/{id}/test/push_events", w.project);
    for _ in 0..5 {
        assert_eq!(
            w.post(&path(hook), ALICE, json!({})).await.status,
            StatusCode::CREATED
        );
    }
    let limited = w.post(&path(hook), ALICE, json!({})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited.json(),
        json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}})
    );
    let retry_after: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("ratelimit-remaining"), "0");
    assert!(!limited.header("ratelimit-resettime").is_empty());
    assert_eq!(
        w.state.hook_tests().len(),
        5,
        "the limited test delivered nothing"
    );
    // The limit is per hook.
    assert_eq!(
        w.post(&path(other), ALICE, json!({})).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn hook_settings_are_shown_but_masked_parts_only_by_key() {
    let w = world().await;
    let hook = w
        .state
        .add_hook(
            w.project,
            HookSeed::new("https://receiver.example.test/{path}")
                .token("hook-secret-m")
                .name("masked")
                .url_variable("path", "url-variable-secret")
                .custom_header("X-Auth", "header-secret-value"),
        )
        .unwrap();
    let shown = w
        .get(&format!("/projects/{}/hooks/{hook}", w.project), ALICE)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    for secret in [
        "hook-secret-m",
        "url-variable-secret",
        "header-secret-value",
    ] {
        assert!(!shown.text.contains(secret), "GET shows a write-only value");
    }
    let body = shown.json();
    assert_eq!(body["url_variables"], json!([{"key": "path"}]));
    assert_eq!(body["custom_headers"], json!([{"key": "X-Auth"}]));
    assert_eq!(body["emoji_events"], false);

    // A copy made through the API from what GET shows, plus the values a
    // person would have to supply, has the same settings as the original.
    let full = seed_full_hook(&w, "https://copy.example.test/hook", "hook-secret-c");
    let original = w
        .get(&format!("/projects/{}/hooks/{full}", w.project), ALICE)
        .await
        .json();
    let mut copy = serde_json::Map::new();
    for (key, value) in original.as_object().unwrap() {
        if ![
            "id",
            "project_id",
            "created_at",
            "alert_status",
            "disabled_until",
        ]
        .contains(&key.as_str())
        {
            copy.insert(key.clone(), value.clone());
        }
    }
    copy.insert("token".into(), json!("hook-secret-c"));
    let made = w
        .post(
            &format!("/projects/{}/hooks", w.project),
            ALICE,
            Value::Object(copy),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let snap = w.state.snapshot();
    let new_id = made.json()["id"].as_u64().unwrap();
    assert_eq!(
        snap.hook(new_id).unwrap().settings(),
        snap.hook(full).unwrap().settings()
    );
    let old = snap.hook(full).unwrap().settings();
    assert!(!old.events["push_events"] && old.events["emoji_events"]);
    assert!(!old.events["enable_ssl_verification"]);
    assert_eq!(old.branch_filter_strategy, "regex");
    assert!(old.has_token);

    // URL variables and custom headers sent through the API are kept.
    let with_parts = w
        .post(
            &format!("/projects/{}/hooks", w.project),
            ALICE,
            json!({"url": "https://x.example.test/{p}",
                   "url_variables": [{"key": "p", "value": "v1"}],
                   "custom_headers": [{"key": "X-A", "value": "v2"}]}),
        )
        .await;
    assert_eq!(with_parts.status, StatusCode::CREATED);
    let id = with_parts.json()["id"].as_u64().unwrap();
    let state = w.state.snapshot().hook(id).unwrap().settings();
    assert_eq!(state.url_variables["p"].expose(), "v1");
    assert_eq!(state.custom_headers["X-A"].expose(), "v2");
    let missing_value = w
        .post(
            &format!("/projects/{}/hooks", w.project),
            ALICE,
            json!({"url": "https://x.example.test/", "custom_headers": [{"key": "X-A"}]}),
        )
        .await;
    assert_eq!(missing_value.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing_value.json(),
        json!({"error": "custom_headers[value] is missing"})
    );
    let printed = format!("{:?}", w.state.snapshot());
    for secret in ["url-variable-secret", "header-secret-value", "v1", "v2"] {
        assert!(
            !printed.contains(&format!("\"{secret}\"")),
            "Debug shows {secret}"
        );
    }
}

#[tokio::test]
async fn control_api_sets_endpoint_answers_and_lists_hook_tests() {
    let w = world().await;
    let url = "https://receiver.example.test/ctl";
    let hook = seed_full_hook(&w, url, "hook-secret-ctl");
    let control = |path: &str| w.server.url(&format!("/_sim{path}"));
    let set = w
        .http
        .post(control("/endpoint_status"))
        .json(&json!({"endpoint": url, "status": 500, "body": "boom"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let answer = w
        .post(
            &format!("/projects/{}/hooks/{hook}/test/note_events", w.project),
            ALICE,
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json(), json!({"message": "boom"}));
    let tests: Vec<HookTestState> = w
        .http
        .get(control("/hook_tests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].status, 500);
    assert_eq!(tests[0].trigger, "note_events");
    assert!(tests[0].sent_token("hook-secret-ctl"));
}
