//! The GitHub plugin through the real binary against the GitHub simulator:
//! a personal access token a person created is checked (valid, scopes,
//! expiry) before it is written, sealed, to an environment's Actions
//! secret; the simulator's true state shows what the sealed box opened to.
//! Tokens with the wrong scopes or past their expiry are stopped before
//! anything is written.

use keycycle_sim::{GitHubOrgSeed, GitHubRepoSeed, GitHubTokenSeed, GitHubUserSeed, SecretScope};

use crate::support::*;

/// The GitHub simulator in the test process, with the functional user
/// `aihelp` (owner of the organisation `acme`), the repository
/// `acme/qa-analyzer` with environment `qa-analyzer-stg`, and the token the
/// plugin acts with.
struct GitHubSim {
    rt: tokio::runtime::Runtime,
    server: Option<keycycle_sim::SimServer>,
    state: keycycle_sim::GitHubState,
    origin: String,
    admin_token: String,
}

impl GitHubSim {
    fn start() -> GitHubSim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (server, state) = rt.block_on(keycycle_sim::start_github(0)).unwrap();
        let origin = server.base_url.trim_end_matches('/').to_owned();
        state.set_today(Some(time::macros::date!(2026 - 10 - 01)));
        state.add_user(GitHubUserSeed::new("aihelp")).unwrap();
        state
            .add_org(GitHubOrgSeed {
                login: "acme".into(),
                admins: vec!["aihelp".into()],
            })
            .unwrap();
        state
            .add_repo(GitHubRepoSeed {
                owner: "acme".into(),
                name: "qa-analyzer".into(),
                admins: vec![],
                environments: vec!["qa-analyzer-stg".into()],
            })
            .unwrap();
        let admin_token = state
            .add_token(
                GitHubTokenSeed::classic("aihelp", &["repo", "admin:org"])
                    .value(&canary("ghp_admin-")),
            )
            .unwrap()
            .value
            .expose()
            .to_owned();
        GitHubSim {
            rt,
            server: Some(server),
            state,
            origin,
            admin_token,
        }
    }

    /// A token as the person on the settings page would make it, planted.
    fn person_creates(&self, scopes: &[&str], expires: time::OffsetDateTime) -> String {
        let seed = GitHubTokenSeed {
            note: "qa-analyzer-stg".into(),
            ..GitHubTokenSeed::classic("aihelp", scopes)
        };
        self.state
            .add_token(seed.value(&canary("ghp_new-")).expires(expires))
            .unwrap()
            .value
            .expose()
            .to_owned()
    }

    fn stored(&self) -> Option<keycycle_sim::ActionsSecretState> {
        let scope = SecretScope::environment("acme", "qa-analyzer", "qa-analyzer-stg");
        self.state.secret(&scope, "QA_GIT_TOKEN")
    }
}

impl Drop for GitHubSim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// Checks the pasted token, then writes it to the environment's secret.
const PUSH: &str = r#"
let gh = plugin("github");
let pat = prompt_secret("new_pat", "Paste the new personal access token");
let check = gh.check_token(#{ token: pat });
if !check.valid { fail("the pasted token does not authenticate: it is unknown, revoked or expired"); }
if check.scopes == () || !("repo" in check.scopes) { fail(`the pasted token lacks the repo scope: ${check.scopes}`); }
if check.expires_at == () { fail("the pasted token never expires; make one that does"); }
let written = gh.set_actions_secret(#{
    owner: params.owner, repo: params.repo, environment: params.environment,
    name: "qa_git_token", value: pat,
});
#{ login: check.login, scopes: check.scopes, expires_at: check.expires_at,
   name: written.name, created: written.created }
"#;

fn workspace(sim: &GitHubSim) -> Workspace {
    let ws = Workspace::new();
    ws.config(&format!(
        "[plugins.github]\npath = \"{}\"\nhosts = [\"{o}\"]\nsecrets = {{ token = \"github/aihelp\" }}\nconfig = {{ base_url = \"{o}\" }}\n",
        wasm("github").display(),
        o = sim.origin
    ));
    ws.set_secret("github/aihelp", &sim.admin_token);
    ws.runbook("gh-push", PUSH);
    ws
}

fn push(ws: &Workspace, pat: &str) -> Run {
    ws.run_env(
        &[
            "run",
            "gh-push",
            "--set",
            "owner=acme",
            "--set",
            "repo=qa-analyzer",
            "--set",
            "environment=qa-analyzer-stg",
            "--input",
            "new_pat=env:NEW_PAT",
            "-o",
            "json",
        ],
        &[("NEW_PAT", pat)],
    )
}

#[test]
fn a_checked_token_is_sealed_into_an_environment_secret() {
    let sim = GitHubSim::start();
    let ws = workspace(&sim);
    let pat = sim.person_creates(&["repo"], time::macros::datetime!(2026-12-30 09:00:00 UTC));

    let run = push(&ws, &pat);
    run.assert_ok();
    let result = &run.json()["result"];
    assert_eq!(result["login"], "aihelp");
    assert_eq!(result["scopes"], serde_json::json!(["repo"]));
    assert_eq!(result["expires_at"], "2026-12-30T09:00:00Z");
    assert_eq!(result["name"], "QA_GIT_TOKEN");
    assert_eq!(result["created"], true);

    // What GitHub opened is the pasted token, in the environment's scope.
    let stored = sim.stored().expect("the environment secret at GitHub");
    assert!(
        stored.value.expose() == pat,
        "the secret does not hold the pasted token"
    );
    let repo_scope = SecretScope::repo("acme", "qa-analyzer");
    assert!(sim.state.secret(&repo_scope, "QA_GIT_TOKEN").is_none());

    // Writing the same value again is an update, not a second secret.
    let again = push(&ws, &pat);
    again.assert_ok();
    assert_eq!(again.json()["result"]["created"], false);
    assert!(sim.stored().unwrap().value.expose() == pat);
    assert_eq!(sim.state.snapshot().secrets.len(), 1);
    ws.assert_files_clean_including(&["state/state.db", "state/secrets.json"]);
}

#[test]
fn a_token_without_the_repo_scope_is_refused_before_anything_is_written() {
    let sim = GitHubSim::start();
    let ws = workspace(&sim);
    let pat = sim.person_creates(
        &["read:user", "workflow"],
        time::macros::datetime!(2026-12-30 09:00:00 UTC),
    );
    let run = push(&ws, &pat);
    run.assert_code(5)
        .stderr_has("lacks the repo scope")
        .stderr_has("read:user");
    assert!(sim.stored().is_none());
    ws.assert_files_clean();
}

#[test]
fn an_expired_token_is_reported_as_not_authenticating() {
    let sim = GitHubSim::start();
    let ws = workspace(&sim);
    let pat = sim.person_creates(&["repo"], time::macros::datetime!(2026-09-30 09:00:00 UTC));
    let run = push(&ws, &pat);
    run.assert_code(5).stderr_has("does not authenticate");
    assert!(sim.stored().is_none());
    // No request tried to write: the run stopped at the check.
    assert!(
        sim.state.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        sim.state.requests()
    );
    ws.assert_files_clean();
}
