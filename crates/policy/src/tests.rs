//! The policy's decisions, one rule at a time.

use super::*;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn plugin(store_names: &[&str], shared_with: &[&str]) -> PluginRules {
    PluginRules {
        shared_with: strings(shared_with),
        store_names: strings(store_names),
    }
}

/// Two teams, each with a GitLab instance, and a shared checker.
fn two_teams() -> PolicyConfig {
    let team = |name: &str, flows: Vec<FlowSection>| TeamSection {
        runbooks: strings(&[name]),
        plugins: strings(&[&format!("gitlab-{name}")]),
        secrets: strings(&[&format!("{name}/*")]),
        flows,
        destinations: BTreeMap::new(),
    };
    let mut config = PolicyConfig::default();
    config.teams.insert(
        "a".into(),
        team(
            "a",
            vec![FlowSection {
                secrets: strings(&["minted:gitlab-a"]),
                to: strings(&["gitlab-a", "check"]),
            }],
        ),
    );
    config.teams.insert("b".into(), team("b", vec![]));
    config
        .teams
        .get_mut("a")
        .unwrap()
        .plugins
        .push("check".into());
    config
        .plugins
        .insert("gitlab-a".into(), plugin(&["a/admin"], &[]));
    config
        .plugins
        .insert("gitlab-b".into(), plugin(&["b/admin"], &[]));
    config.plugins.insert("check".into(), plugin(&[], &["b"]));
    config.runbooks.insert(
        "a/rotate".into(),
        RunbookRules {
            secrets: strings(&["a/token", "b/token"]),
            ..RunbookRules::default()
        },
    );
    config.runbooks.insert(
        "b/rotate".into(),
        RunbookRules {
            secrets: strings(&["b/token"]),
            plugins: Some(strings(&["gitlab-b"])),
            ..RunbookRules::default()
        },
    );
    config
}

#[test]
fn a_run_belongs_to_the_team_that_owns_its_folder() {
    let policy = Arc::new(Policy::new(&two_teams()).unwrap());
    assert_eq!(policy.for_run(Some("a/rotate")).team(), Some("a"));
    assert_eq!(policy.for_run(Some("a/sub/x")).team(), Some("a"));
    assert_eq!(policy.for_run(Some("ab/x")).team(), None);
    assert_eq!(policy.for_run(Some("rotate")).team(), None);
    assert_eq!(policy.for_run(None).team(), None);
}

#[test]
fn a_run_calls_only_its_teams_plugins_and_those_shared_with_it() {
    let policy = Arc::new(Policy::new(&two_teams()).unwrap());
    let a = policy.for_run(Some("a/rotate"));
    assert!(a.may_call("gitlab-a").is_ok());
    assert!(a.may_call("check").is_ok());
    let denied = a.may_call("gitlab-b").unwrap_err().0;
    assert!(
        denied.contains("`gitlab-b`") && denied.contains("team `b`"),
        "{denied}"
    );

    let b = policy.for_run(Some("b/other"));
    assert!(b.may_call("check").is_ok(), "shared with b");
    assert!(b.may_call("gitlab-a").is_err());
    // A runbook section that names its plugins narrows them further.
    let b = policy.for_run(Some("b/rotate"));
    assert!(b.may_call("gitlab-b").is_ok());
    let denied = b.may_call("check").unwrap_err().0;
    assert!(denied.contains("plugins = [\"gitlab-b\"]"), "{denied}");
    // Outside every team folder, or outside the runbooks folder: nothing.
    assert!(policy.for_run(Some("x")).may_call("gitlab-a").is_err());
    assert!(policy.for_run(None).may_call("check").is_err());
}

#[test]
fn a_run_uses_only_granted_store_names_its_team_owns() {
    let policy = Arc::new(Policy::new(&two_teams()).unwrap());
    let a = policy.for_run(Some("a/rotate"));
    assert!(a.may_use_secret("a/token").is_ok());
    // Granted by the runbook section, but team b's name.
    let denied = a.may_use_secret("b/token").unwrap_err().0;
    assert!(denied.contains("team `b`"), "{denied}");
    let denied = a.may_use_secret("a/other").unwrap_err().0;
    assert!(
        denied.contains("[runbooks.\"a/rotate\"] secrets"),
        "{denied}"
    );
    let denied = policy
        .for_run(None)
        .may_use_secret("a/token")
        .unwrap_err()
        .0;
    assert!(denied.contains("outside the runbooks folder"), "{denied}");
}

#[test]
fn secrets_go_to_their_teams_plugins_unless_a_flow_rule_says_where() {
    let policy = Arc::new(Policy::new(&two_teams()).unwrap());
    let a = policy.for_run(Some("a/rotate"));
    let stored = [Label::Stored("a/token".into())];
    assert!(a.may_send(&stored, "gitlab-a").is_ok());
    assert!(a.may_send(&stored, "check").is_ok(), "check is a's own");
    let minted = [Label::Minted("gitlab-a".into())];
    assert!(a.may_send(&minted, "check").is_ok());

    let b = policy.for_run(Some("b/other"));
    let b_token = [Label::Minted("gitlab-b".into())];
    let denied = b.may_send(&b_token, "check").unwrap_err().0;
    assert!(
        denied.contains("`minted:gitlab-b`")
            && denied.contains("`check`")
            && denied.contains("team `a`")
            && denied.contains("[[teams.b.flows]]"),
        "{denied}"
    );
    // Every label must allow it: a value also minted by team a's plugin
    // is still team b's too.
    let both = [Label::Minted("gitlab-b".into()), Label::Input("x".into())];
    assert!(b.may_send(&both, "gitlab-b").is_ok());
    assert!(b.may_send(&both, "gitlab-a").is_err());
}

#[test]
fn a_flow_rule_narrows_even_within_the_team() {
    let mut config = two_teams();
    config.teams.get_mut("a").unwrap().flows = vec![FlowSection {
        secrets: strings(&["minted:gitlab-a"]),
        to: strings(&["check"]),
    }];
    let policy = Arc::new(Policy::new(&config).unwrap());
    let a = policy.for_run(Some("a/rotate"));
    let minted = [Label::Minted("gitlab-a".into())];
    assert!(a.may_send(&minted, "check").is_ok());
    let denied = a.may_send(&minted, "gitlab-a").unwrap_err().0;
    assert!(
        denied.contains("[[teams.a.flows]] #1") && denied.contains("[\"check\"]"),
        "{denied}"
    );
}

#[test]
fn without_teams_everything_is_as_before_but_global_flows_hold() {
    let mut config = PolicyConfig::default();
    config.plugins.insert("gitlab".into(), plugin(&["x"], &[]));
    config.plugins.insert("hook".into(), plugin(&[], &[]));
    config.runbooks.insert(
        "rotate".into(),
        RunbookRules {
            secrets: strings(&["gitlab/token"]),
            ..RunbookRules::default()
        },
    );
    let policy = Arc::new(Policy::new(&config).unwrap());
    let run = policy.for_run(Some("rotate"));
    assert!(run.may_call("hook").is_ok());
    assert!(policy.for_run(None).may_call("hook").is_ok());
    assert!(run.may_use_secret("gitlab/token").is_ok());
    assert!(policy.for_run(None).may_use_secret("gitlab/token").is_err());
    assert!(
        run.may_send(&[Label::Stored("gitlab/token".into())], "hook")
            .is_ok()
    );

    config.flows = vec![FlowSection {
        secrets: strings(&["gitlab/*"]),
        to: strings(&["gitlab"]),
    }];
    let policy = Arc::new(Policy::new(&config).unwrap());
    let run = policy.for_run(Some("rotate"));
    let denied = run
        .may_send(&[Label::Stored("gitlab/token".into())], "hook")
        .unwrap_err()
        .0;
    assert!(denied.contains("[[flows]] #1"), "{denied}");
}

#[test]
fn destinations_are_pinned_by_runbook_then_team_then_globally() {
    let mut config = two_teams();
    config
        .destinations
        .insert("store_as".into(), strings(&["*"]));
    config
        .teams
        .get_mut("a")
        .unwrap()
        .destinations
        .insert("store_as".into(), strings(&["a/*"]));
    config
        .runbooks
        .get_mut("a/rotate")
        .unwrap()
        .destinations
        .insert("gitlab_variable".into(), strings(&["a-group/*:TOKEN"]));
    let policy = Arc::new(Policy::new(&config).unwrap());
    let a = policy.for_run(Some("a/rotate"));
    assert!(
        a.destination("gitlab_variable", "a-group/app:TOKEN")
            .is_ok()
    );
    let denied = a
        .destination("gitlab_variable", "b-group/app:TOKEN")
        .unwrap_err()
        .0;
    assert!(
        denied.contains("[runbooks.\"a/rotate\".destinations] gitlab_variable")
            && denied.contains("`b-group/app:TOKEN`"),
        "{denied}"
    );
    assert!(a.destination("store_as", "a/new").is_ok());
    let denied = a.destination("store_as", "b/new").unwrap_err().0;
    assert!(
        denied.contains("[teams.a.destinations] store_as"),
        "{denied}"
    );
    // Team b pins nothing of its own: the global list applies.
    assert!(
        policy
            .for_run(Some("b/x"))
            .destination("store_as", "b/new")
            .is_ok()
    );
    // Nobody pinned this kind.
    assert!(a.destination("zendesk_webhook", "123").is_ok());
}

#[test]
fn a_policy_that_cannot_be_right_is_refused_at_load() {
    let mut config = two_teams();
    config
        .teams
        .get_mut("b")
        .unwrap()
        .plugins
        .push("gitlab-a".into());
    let e = Policy::new(&config).unwrap_err().0;
    assert!(e.contains("owned by both"), "{e}");

    let mut config = two_teams();
    config.teams.get_mut("b").unwrap().runbooks = strings(&["a/sub"]);
    let e = Policy::new(&config).unwrap_err().0;
    assert!(e.contains("overlaps"), "{e}");

    let mut config = two_teams();
    config.teams.get_mut("b").unwrap().runbooks = strings(&["../x"]);
    assert!(Policy::new(&config).is_err());

    // A team's plugin granted another team's store name.
    let mut config = two_teams();
    config
        .plugins
        .insert("gitlab-a".into(), plugin(&["b/admin"], &[]));
    let e = Policy::new(&config).unwrap_err().0;
    assert!(e.contains("`b/admin`") && e.contains("team `b`"), "{e}");

    let mut config = two_teams();
    config
        .plugins
        .insert("check".into(), plugin(&[], &["nobody"]));
    let e = Policy::new(&config).unwrap_err().0;
    assert!(e.contains("no team `nobody`"), "{e}");

    let mut config = two_teams();
    config
        .runbooks
        .insert("../etc".into(), RunbookRules::default());
    assert!(Policy::new(&config).is_err());
}
