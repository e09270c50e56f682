//! End-to-end tests of the Signon simulator over HTTP: each pins a
//! behaviour a client or the rotation procedure depends on (the empty 401
//! in every refused case, `client_id` optional, tokens that coexist until
//! revoked, the sync job's choice of an expired token, the gauge's last
//! token winning).

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::date;

use super::*;
use crate::{SimServer, start_signon};

const OLD: &str = "old-token-value-0000000000000000000000000000";
const NEW: &str = "new-token-value-0000000000000000000000000000";

struct World {
    server: SimServer,
    state: SignonState,
    http: reqwest::Client,
    user: u64,
    app: u64,
    oauth_id: String,
}

async fn world() -> World {
    let (server, state) = start_signon(0).await.unwrap();
    state.set_today(Some(date!(2026 - 11 - 02)));
    let user = state
        .add_api_user(SignonUserSeed {
            organisation_slug: Some("government-digital-service".into()),
            ..SignonUserSeed::new("Short URL Manager", "short-url-manager@alphagov.co.uk")
        })
        .unwrap();
    let app = state
        .add_application(SignonAppSeed {
            name: "Publishing API".into(),
            oauth_id: Some("publishing-api-oauth-id".into()),
            oauth_secret: None,
        })
        .unwrap();
    World {
        server,
        state,
        http: reqwest::Client::new(),
        user,
        app,
        oauth_id: "publishing-api-oauth-id".into(),
    }
}

impl World {
    /// `GET /user.json` with `token`, and `client_id` when given.
    async fn check(&self, token: &str, client_id: Option<&str>) -> (StatusCode, String) {
        let mut url = self.server.url("/user.json");
        if let Some(id) = client_id {
            url.push_str(&format!("?client_id={id}"));
        }
        let response = self.http.get(url).bearer_auth(token).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    fn token(&self, value: &str) -> SignonCreatedToken {
        self.state
            .create_token(SignonTokenSeed::new(self.user, self.app).value(value))
            .unwrap()
    }
}

#[tokio::test]
async fn a_created_token_answers_for_its_app_with_the_users_permissions() {
    let w = world().await;
    let created = w.token(NEW);
    assert_eq!(created.token.expose(), NEW);
    // Two ActiveSupport years after now (2026-11-02 + 730.485 days).
    assert!(
        created.expires_at.starts_with("2028-11-0"),
        "{}",
        created.expires_at
    );
    w.state
        .set_permissions(w.user, w.app, &["signin", "view_all"])
        .unwrap();

    let (status, body) = w.check(NEW, Some(&w.oauth_id)).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    let user = &body["user"];
    assert_eq!(user["name"], "Short URL Manager");
    assert_eq!(user["email"], "short-url-manager@alphagov.co.uk");
    assert_eq!(user["permissions"], json!(["signin", "view_all"]));
    assert_eq!(user["organisation_slug"], "government-digital-service");
    assert_eq!(user["organisation_content_id"], Value::Null);
    assert_eq!(user["disabled"], false);
    assert_eq!(user["uid"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn creating_a_token_grants_signin() {
    let w = world().await;
    assert!(w.state.snapshot().api_users[0].permissions.is_empty());
    w.token(NEW);
    assert_eq!(
        w.state.snapshot().api_users[0].permissions[&w.app],
        vec!["signin".to_owned()]
    );
}

#[tokio::test]
async fn every_refusal_is_401_with_an_empty_body() {
    let w = world().await;
    let old = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(OLD)
                .created_on(date!(2024 - 10 - 01)),
        )
        .unwrap();
    let new = w.token(NEW);
    let other_app = w
        .state
        .add_application(SignonAppSeed {
            name: "Content Store".into(),
            oauth_id: Some("content-store-oauth-id".into()),
            oauth_secret: None,
        })
        .unwrap();
    let _ = other_app;

    // Expired: created two years (and a month) ago.
    assert!(!w.state.token(old.id).unwrap().accessible);
    assert_eq!(
        w.check(OLD, Some(&w.oauth_id)).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    // Unknown.
    assert_eq!(
        w.check("no-such-token", Some(&w.oauth_id)).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    // Another application's client_id.
    assert_eq!(
        w.check(NEW, Some("content-store-oauth-id")).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    // No signin on the app.
    w.state
        .set_permissions(w.user, w.app, &["view_all"])
        .unwrap();
    assert_eq!(
        w.check(NEW, Some(&w.oauth_id)).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    w.state.set_permissions(w.user, w.app, &["signin"]).unwrap();
    assert_eq!(w.check(NEW, Some(&w.oauth_id)).await.0, StatusCode::OK);
    // Revoked.
    w.state.revoke_token(new.id).unwrap();
    assert!(w.state.token(new.id).unwrap().revoked_at.is_some());
    assert_eq!(
        w.check(NEW, Some(&w.oauth_id)).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    // No Authorization header at all.
    let response = w.http.get(w.server.url("/user.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_client_id_signon_still_answers() {
    let w = world().await;
    w.token(NEW);
    let (status, body) = w.check(NEW, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"permissions\":[\"signin\"]"), "{body}");
}

#[tokio::test]
async fn a_token_expires_two_years_after_creation_on_the_clock() {
    let w = world().await;
    w.token(NEW);
    w.state.set_today(Some(date!(2028 - 10 - 31)));
    assert_eq!(w.check(NEW, Some(&w.oauth_id)).await.0, StatusCode::OK);
    w.state.set_today(Some(date!(2028 - 11 - 03)));
    assert_eq!(
        w.check(NEW, Some(&w.oauth_id)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_suspended_user_is_answered_disabled_with_no_permissions() {
    let w = world().await;
    w.token(NEW);
    w.state.set_suspended(w.user, true).unwrap();
    let (status, body) = w.check(NEW, Some(&w.oauth_id)).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["user"]["permissions"], json!([]));
    assert_eq!(body["user"]["disabled"], true);
}

#[tokio::test]
async fn old_and_new_tokens_coexist_until_the_old_is_revoked() {
    let w = world().await;
    let old = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(OLD)
                .created_on(date!(2025 - 01 - 10)),
        )
        .unwrap();
    w.token(NEW);
    assert_eq!(w.check(OLD, Some(&w.oauth_id)).await.0, StatusCode::OK);
    assert_eq!(w.check(NEW, Some(&w.oauth_id)).await.0, StatusCode::OK);
    w.state.revoke_token(old.id).unwrap();
    assert_eq!(
        w.check(OLD, Some(&w.oauth_id)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(w.check(NEW, Some(&w.oauth_id)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_sync_takes_the_unrevoked_token_with_the_latest_expiry_even_expired() {
    let w = world().await;
    let older = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(OLD)
                .created_on(date!(2024 - 01 - 05)),
        )
        .unwrap();
    let newer = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(NEW)
                .created_on(date!(2024 - 06 - 05)),
        )
        .unwrap();
    // Both have expired by 2026-11-02; the job still writes the later one.
    let synced = w.state.sync();
    assert_eq!(synced.len(), 1);
    assert_eq!(
        synced[0].name,
        "signon-token-short-url-manager-publishing-api"
    );
    assert_eq!(synced[0].token_id, newer.id);
    assert!(synced[0].expired);
    assert_eq!(synced[0].bearer_token.expose(), NEW);
    // Revoking the later one hands the Secret back to the earlier one.
    w.state.revoke_token(newer.id).unwrap();
    assert_eq!(w.state.sync()[0].token_id, older.id);
    // A suspended user's Secrets are left alone.
    w.state.set_suspended(w.user, true).unwrap();
    assert!(w.state.sync().is_empty());

    // Served the same way, values in clear (control API only).
    w.state.set_suspended(w.user, false).unwrap();
    let served: Value = w
        .http
        .get(w.server.url("/_sim/sync"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served[0]["bearer_token"], OLD);
}

#[tokio::test]
async fn the_gauge_shows_the_newest_unrevoked_token_per_user_and_app() {
    let w = world().await;
    let old = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(OLD)
                .created_on(date!(2024 - 11 - 10)),
        )
        .unwrap();
    let metrics = |w: &World| {
        let url = w.server.url("/metrics");
        let http = w.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let old_expiry = OffsetDateTime::parse(
        &w.state.token(old.id).unwrap().expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let text = metrics(&w).await;
    assert!(text.contains("# TYPE signon_api_user_token_expiry_timestamp_seconds gauge"));
    assert_eq!(
        series(&text),
        [format!(
            "signon_api_user_token_expiry_timestamp_seconds{{api_user=\"short-url-manager@alphagov.co.uk\",application=\"publishing-api\"}} {old_expiry}"
        )]
    );

    // A new token clears the alert before the old one is revoked, once the
    // hour-long cache has gone.
    let new = w.token(NEW);
    assert_eq!(
        series(&metrics(&w).await),
        series(&text),
        "cached for an hour"
    );
    w.state.clear_metrics_cache();
    let new_expiry = OffsetDateTime::parse(
        &new.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let after = series(&metrics(&w).await);
    assert_eq!(after.len(), 1);
    assert!(after[0].ends_with(&format!(" {new_expiry}")), "{after:?}");
    // Revoked tokens are not observed at all.
    w.state.revoke_token(new.id).unwrap();
    w.state.revoke_token(old.id).unwrap();
    w.state.clear_metrics_cache();
    assert!(series(&metrics(&w).await).is_empty());
}

#[tokio::test]
async fn the_control_api_plays_the_person_creating_and_revoking() {
    let w = world().await;
    let created: Value = w
        .http
        .post(w.server.url("/_sim/tokens"))
        .json(&json!({"api_user_id": w.user, "application_id": w.app}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = created["token"].as_str().unwrap().to_owned();
    assert_eq!(value.len(), 43);
    assert_eq!(w.check(&value, Some(&w.oauth_id)).await.0, StatusCode::OK);
    let id = created["id"].as_u64().unwrap();
    let revoked = w
        .http
        .post(w.server.url(&format!("/_sim/tokens/{id}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        w.check(&value, Some(&w.oauth_id)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let missing = w
        .http
        .post(w.server.url("/_sim/tokens"))
        .json(&json!({"api_user_id": 999, "application_id": w.app}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // The provider API only saw the checks, not the control calls.
    assert!(w.state.requests().iter().all(|r| r.path == "/user.json"));
}

#[tokio::test]
async fn debug_output_never_shows_a_token() {
    let w = world().await;
    let created = w.token(NEW);
    let text = format!("{created:?} {:?} {:?}", w.state.snapshot(), w.state.sync());
    assert!(!text.contains(NEW), "{text}");
}

#[tokio::test]
async fn the_control_api_seeds_and_shows_the_true_state_over_http() {
    let (server, state) = start_signon(0).await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(server.url(path)).json(&body).send();
    let user: Value = post(
        "/_sim/api_users",
        json!({"name": "Content Publisher", "email": "cp@publishing.service.gov.uk"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let app: Value = post("/_sim/applications", json!({"name": "Publishing API"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oauth_id = app["oauth_id"].as_str().unwrap().to_owned();
    assert_eq!(oauth_id.len(), 43, "a Doorkeeper uid");
    let (user, app) = (user["id"].as_u64().unwrap(), app["id"].as_u64().unwrap());
    let created = post(
        "/_sim/tokens",
        json!({"api_user_id": user, "application_id": app, "token": NEW}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    // The same value twice is refused, without echoing it.
    let again = post(
        "/_sim/tokens",
        json!({"api_user_id": user, "application_id": app, "token": NEW}),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(!again.text().await.unwrap().contains(NEW));

    let permissions = http
        .put(server.url("/_sim/permissions"))
        .json(&json!({"api_user_id": user, "application_id": app, "permissions": ["signin", "gds_editor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(permissions.status(), StatusCode::NO_CONTENT);
    let suspended = post(
        &format!("/_sim/api_users/{user}/suspended"),
        json!({"suspended": true}),
    )
    .await
    .unwrap();
    assert_eq!(suspended.status(), StatusCode::NO_CONTENT);
    let today = post("/_sim/today", json!({"date": "2027-03-04"}))
        .await
        .unwrap();
    assert_eq!(today.status(), StatusCode::NO_CONTENT);

    let snapshot: Value = http
        .get(server.url("/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(snapshot["now"].as_str().unwrap().starts_with("2027-03-04T"));
    assert_eq!(snapshot["tokens"][0]["value"], NEW);
    assert_eq!(snapshot["tokens"][0]["accessible"], true);
    assert_eq!(snapshot["api_users"][0]["suspended"], true);
    assert_eq!(
        snapshot["api_users"][0]["permissions"][app.to_string()],
        json!(["gds_editor", "signin"])
    );
    assert_eq!(state.snapshot().applications[0].oauth_id, oauth_id);
    // None of it was a provider request.
    assert!(state.requests().is_empty());
}

#[tokio::test]
async fn signon_renews_internal_users_tokens_expiring_within_a_month() {
    let w = world().await;
    let outside = w
        .state
        .add_api_user(SignonUserSeed::new("HMRC Tariffs", "tariffs@hmrc.example"))
        .unwrap();
    // Expires 2026-11-20 or so: within a month of 2026-11-02.
    let expiring = w
        .state
        .create_token(
            SignonTokenSeed::new(w.user, w.app)
                .value(OLD)
                .created_on(date!(2024 - 11 - 20)),
        )
        .unwrap();
    let external = w
        .state
        .create_token(SignonTokenSeed::new(outside, w.app).created_on(date!(2024 - 11 - 20)))
        .unwrap();
    // Far from expiry: left alone.
    w.state
        .create_token(SignonTokenSeed::new(outside, w.app).created_on(date!(2026 - 01 - 01)))
        .unwrap();

    let created = w.state.renew_expiring_internal_tokens();
    assert_eq!(created.len(), 1, "only the internal user's token");
    let renewed = w.state.token(created[0]).unwrap();
    assert_eq!(
        (renewed.api_user_id, renewed.application_id),
        (w.user, w.app)
    );
    assert!(renewed.accessible && renewed.expires_at.starts_with("2028-11-0"));
    // The old one stays until someone revokes it; a second run finds the
    // newer token and adds nothing.
    assert!(w.state.token(expiring.id).unwrap().accessible);
    assert!(w.state.renew_expiring_internal_tokens().is_empty());
    assert!(w.state.token(external.id).unwrap().accessible);
    // The sync now hands out the renewed token.
    let synced = w.state.sync();
    let ours = synced
        .iter()
        .find(|s| s.name == "signon-token-short-url-manager-publishing-api")
        .unwrap();
    assert_eq!(ours.token_id, created[0]);
}

#[test]
fn one_month_from_now_is_a_calendar_month() {
    use time::macros::datetime;
    assert_eq!(
        one_month_after(datetime!(2026-01-31 10:00 UTC)),
        datetime!(2026-02-28 10:00 UTC)
    );
    assert_eq!(
        one_month_after(datetime!(2028-01-31 10:00 UTC)),
        datetime!(2028-02-29 10:00 UTC)
    );
    assert_eq!(
        one_month_after(datetime!(2026-12-15 00:00 UTC)),
        datetime!(2027-01-15 00:00 UTC)
    );
}

/// A server application behind gds-sso keeps accepting a revoked token
/// for the cache's life, while Signon refuses it at once; a token it never
/// saw is checked with Signon, for its own client_id only.
#[tokio::test]
async fn a_server_app_caches_lookups_so_a_revoked_token_works_there_for_a_while() {
    let w = world().await;
    let old = w.token(OLD);
    w.token(NEW);
    let (app, app_state) = start_signon_app(&w.state, &w.oauth_id, 0).unwrap();
    let call = |token: &'static str| {
        let http = w.http.clone();
        let url = app.url("/api/content");
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = call(OLD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["authenticated_as"], "short-url-manager@alphagov.co.uk");

    w.state.revoke_token(old.id).unwrap();
    assert_eq!(
        w.check(OLD, Some(&w.oauth_id)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(OLD).await.0, StatusCode::OK, "cached by gds-sso");
    assert_eq!(call(NEW).await.0, StatusCode::OK);

    app_state.set_cache_ttl(std::time::Duration::ZERO);
    let (status, body) = call(OLD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("not accepted"));
    let calls = app_state.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.status, c.cached))
            .collect::<Vec<_>>(),
        [(200, false), (200, true), (200, false), (401, false)]
    );
    let log = serde_json::to_string(&calls).unwrap();
    assert!(!log.contains(OLD) && !log.contains(NEW), "{log}");

    // Another app's token is refused here: the lookup sends this app's id.
    let other = w
        .state
        .add_application(SignonAppSeed {
            name: "Content Store".into(),
            oauth_id: Some("content-store-oauth-id".into()),
            oauth_secret: None,
        })
        .unwrap();
    w.state
        .create_token(
            SignonTokenSeed::new(w.user, other).value("elsewhere-token-00000000000000000000000000"),
        )
        .unwrap();
    let response = w
        .http
        .get(app.url("/api/x"))
        .bearer_auth("elsewhere-token-00000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// `keycycle sim signon` has no Rust caller: the control API starts the
/// server application and says where it listens.
#[tokio::test]
async fn the_control_api_starts_a_server_app() {
    let w = world().await;
    w.token(NEW);
    let response = w
        .http
        .post(w.server.url("/_sim/server_apps"))
        .json(&json!({ "client_id": w.oauth_id, "cache_ttl_secs": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let base_url = response.json::<Value>().await.unwrap()["base_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    let ok = w
        .http
        .get(format!("{base_url}/api/x"))
        .bearer_auth(NEW)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = w
        .http
        .get(format!("{base_url}/api/x"))
        .bearer_auth(OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let calls: Value = w
        .http
        .get(format!("{base_url}/_sim/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls.as_array().map(Vec::len), Some(2), "{calls}");
}
