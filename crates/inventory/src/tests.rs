//! The inventory's rules, decided on fixed clocks.

use super::*;

const DAY: i64 = DAY_MS;
/// 2026-11-30T00:00:00Z.
const NOW: i64 = 1_795_996_800_000;

fn plugin_expiry() -> ExpirySection {
    ExpirySection::Plugin {
        plugin: "gitlab".into(),
        operation: "get_pat".into(),
        input: BTreeMap::new(),
        field: Some("expires_at".into()),
        last_used_field: Some("last_used_at".into()),
        idle_days: None,
        hard_end: None,
    }
}

fn section(expiry: Option<ExpirySection>) -> CredentialSection {
    CredentialSection {
        runbook: "gitlab-personal-token".into(),
        expiry,
        ..CredentialSection::default()
    }
}

fn reading(expires_in_days: i64) -> Result<ExpiryReading, String> {
    Ok(ExpiryReading {
        expires_at: Some(NOW + expires_in_days * DAY),
        last_used_at: None,
    })
}

#[test]
fn times_are_dates_rfc3339_or_unix_seconds() {
    assert_eq!(parse_time("2026-11-30").unwrap(), NOW);
    assert_eq!(parse_time("2026-11-30T00:00:01Z").unwrap(), NOW + 1000);
    assert_eq!(parse_time("1795996800").unwrap(), NOW);
    assert!(parse_time("next tuesday").is_err());
    assert_eq!(format_date(NOW + DAY - 1), "2026-11-30");
}

#[test]
fn thresholds_decide_critical_warning_and_ok() {
    let s = section(Some(plugin_expiry()));
    let at = |days| evaluate(&s, None, Some(&reading(days)), NOW);
    assert_eq!(at(-1).state, State::Critical);
    assert!(at(-1).reason.starts_with("expired on 2026-11-29"));
    assert_eq!(at(13).state, State::Critical);
    assert_eq!(at(14).state, State::Warning);
    assert_eq!(at(59).state, State::Warning);
    assert_eq!(at(60).state, State::Ok);
    assert_eq!(at(60).days_left, Some(60));
    let custom = CredentialSection {
        warning_days: Some(30),
        critical_days: Some(7),
        ..s.clone()
    };
    assert_eq!(
        evaluate(&custom, None, Some(&reading(20)), NOW).state,
        State::Warning
    );
    assert_eq!(
        evaluate(&custom, None, Some(&reading(40)), NOW).state,
        State::Ok
    );
}

#[test]
fn policies_make_a_credential_due_before_it_is_in_danger() {
    let before = CredentialSection {
        rotate_before_days: Some(90),
        ..section(Some(plugin_expiry()))
    };
    assert_eq!(
        evaluate(&before, None, Some(&reading(80)), NOW).state,
        State::Due
    );
    assert_eq!(
        evaluate(&before, None, Some(&reading(100)), NOW).state,
        State::Ok
    );
    let aged = CredentialSection {
        max_age_days: Some(30),
        ..section(None)
    };
    let rotated = |days_ago| CredentialRecord {
        last_rotated_at: Some(NOW - days_ago * DAY),
        ..CredentialRecord::default()
    };
    assert_eq!(
        evaluate(&aged, Some(&rotated(31)), None, NOW).state,
        State::Due
    );
    assert_eq!(
        evaluate(&aged, Some(&rotated(29)), None, NOW).state,
        State::Unknown
    );
    // Never rotated by keycycle: due, since its age is unknown.
    assert_eq!(evaluate(&aged, None, None, NOW).state, State::Due);
    assert_eq!(
        evaluate(&section(None), None, None, NOW).state,
        State::Unknown
    );
}

#[test]
fn zendesk_tokens_end_at_the_earliest_of_idle_deactivation_and_the_cut_off() {
    let zendesk = section(Some(ExpirySection::Plugin {
        plugin: "zendesk".into(),
        operation: "list_api_tokens".into(),
        input: BTreeMap::new(),
        field: None,
        last_used_field: Some("last_used_at".into()),
        idle_days: Some(30),
        hard_end: Some("2027-04-30".into()),
    }));
    let used = |days_ago: i64| {
        Ok(ExpiryReading {
            expires_at: None,
            last_used_at: Some(NOW - days_ago * DAY),
        })
    };
    let s = evaluate(&zendesk, None, Some(&used(20)), NOW);
    assert_eq!(s.state, State::Critical, "{s:?}");
    assert_eq!(s.days_left, Some(10));
    assert!(
        s.reason.contains("deactivation after 30 days unused"),
        "{s:?}"
    );
    // Used today, ten days before the cut-off: the cut-off is the end.
    let late = parse_time("2027-04-20").unwrap();
    let today = Ok(ExpiryReading {
        expires_at: None,
        last_used_at: Some(late),
    });
    let s = evaluate(&zendesk, None, Some(&today), late);
    assert_eq!(s.expires_at, Some(parse_time("2027-04-30").unwrap()));
    assert!(
        s.reason.contains("the end of every token of its kind"),
        "{s:?}"
    );
    assert_eq!((s.state, s.days_left), (State::Critical, Some(10)));
    // In use, far from the cut-off: ok, with the idle date reported.
    let s = evaluate(&zendesk, None, Some(&used(0)), NOW);
    assert_eq!(s.state, State::Ok, "{s:?}");
    assert_eq!(s.idle_until, Some(NOW + 30 * DAY));
}

#[test]
fn a_failed_read_is_an_error_and_a_recorded_expiry_serves_without_one() {
    let s = section(Some(plugin_expiry()));
    let failed = evaluate(&s, None, Some(&Err("401 Unauthorized".into())), NOW);
    assert_eq!(failed.state, State::Error);
    assert!(failed.reason.contains("401 Unauthorized"));
    let signon = section(Some(ExpirySection::Rotation {
        lifetime_days: Some(730),
        result_field: None,
    }));
    let (at, _) = signon
        .expiry_after_rotation(&serde_json::json!({}), NOW - 720 * DAY)
        .unwrap();
    let record = CredentialRecord {
        expires_at: Some(at),
        ..CredentialRecord::default()
    };
    let st = evaluate(&signon, Some(&record), None, NOW);
    assert_eq!((st.state, st.days_left), (State::Critical, Some(10)));
    // A runbook that returns the new expiry is believed first.
    let gitlab = section(Some(ExpirySection::Rotation {
        lifetime_days: Some(365),
        result_field: Some("token.expires_at".into()),
    }));
    assert_eq!(
        gitlab.expiry_after_rotation(
            &serde_json::json!({ "token": { "expires_at": "2027-01-14" } }),
            NOW
        ),
        Some((parse_time("2027-01-14").unwrap(), "rotation"))
    );
}

#[test]
fn readings_pick_dotted_fields_and_refuse_what_is_not_a_time() {
    let answer = serde_json::json!({ "expires_at": "2027-01-01", "last_used_at": null });
    let r = ExpiryReading::from_answer(&plugin_expiry(), &answer).unwrap();
    assert_eq!(r.expires_at, Some(parse_time("2027-01-01").unwrap()));
    assert_eq!(r.last_used_at, None);
    let listed = serde_json::json!({ "api_tokens": [
        { "id": 7, "last_used": "2026-01-01T10:00:00Z" },
        { "id": 42, "last_used": "2026-11-01T10:00:00Z" },
    ] });
    assert_eq!(
        field(&listed, "api_tokens[id=42].last_used"),
        Some(&serde_json::json!("2026-11-01T10:00:00Z"))
    );
    assert_eq!(field(&listed, "api_tokens[id=9].last_used"), None);
    assert_eq!(
        field(&listed, "api_tokens.0.id"),
        Some(&serde_json::json!(7))
    );
    let bad = serde_json::json!({ "expires_at": "soon" });
    let e = ExpiryReading::from_answer(&plugin_expiry(), &bad).unwrap_err();
    assert!(e.contains("expiry field `expires_at`"), "{e}");
}

#[test]
fn a_section_that_cannot_work_is_refused() {
    let mut s = section(None);
    s.critical_days = Some(90);
    assert!(
        s.validate("x")
            .unwrap_err()
            .problem
            .contains("critical_days")
    );
    let s = section(Some(ExpirySection::Manual {
        date: "someday".into(),
    }));
    assert!(s.validate("x").is_err());
    assert!(section(None).validate("bad id").is_err());
    assert!(section(None).validate("gl-deploy.prod").is_ok());
}

#[test]
fn metrics_are_in_the_exposition_format_with_escaped_labels() {
    let status = evaluate(
        &section(Some(plugin_expiry())),
        None,
        Some(&reading(30)),
        NOW,
    );
    let record = CredentialRecord {
        last_rotated_at: Some(NOW - DAY),
        last_run_state: Some(RunState::Succeeded),
        ..CredentialRecord::default()
    };
    let text = prometheus(
        &[Metric {
            id: "gl\"x",
            provider: "gitlab",
            team: "pay\\ments",
            status: &status,
            record: Some(&record),
        }],
        NOW,
    );
    let labels = r#"credential="gl\"x",provider="gitlab",team="pay\\ments""#;
    assert!(
        text.contains(&format!(
            "keycycle_credential_expiry_timestamp_seconds{{{labels}}} {}",
            (NOW + 30 * DAY) / 1000
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "keycycle_credential_status{{{labels},state=\"warning\"}} 1"
    )));
    assert!(text.contains(&format!(
        "keycycle_credential_status{{{labels},state=\"ok\"}} 0"
    )));
    assert!(text.contains(&format!(
        "keycycle_credential_last_run_success{{{labels}}} 1"
    )));
    assert!(text.contains(&format!("keycycle_check_timestamp_seconds {}", NOW / 1000)));
    assert!(text.contains("# TYPE keycycle_credential_status gauge"));
}

#[test]
fn parameters_follow_a_rotation_into_the_next_one_and_the_expiry_read() {
    let mut s = section(Some(ExpirySection::Plugin {
        plugin: "gitlab".into(),
        operation: "get_pat".into(),
        input: BTreeMap::from([
            ("id".to_owned(), serde_json::json!("${token_id}")),
            ("note".to_owned(), serde_json::json!("${nothing}")),
        ]),
        field: Some("expires_at".into()),
        last_used_field: None,
        idle_days: None,
        hard_end: None,
    }));
    s.params.insert("token_id".into(), "7".into());
    s.follow.insert("token_id".into(), "new_id".into());
    let followed = s.followed(&serde_json::json!({ "new_id": 8, "other": 1 }));
    assert_eq!(
        followed,
        BTreeMap::from([("token_id".to_owned(), "8".to_owned())])
    );
    assert_eq!(s.params(None)["token_id"], "7");
    let record = CredentialRecord {
        params: followed,
        ..CredentialRecord::default()
    };
    let params = s.params(Some(&record));
    assert_eq!(params["token_id"], "8");
    assert_eq!(
        s.expiry_input(&params),
        serde_json::json!({ "id": 8, "note": "${nothing}" })
    );
}
