//! Request gates: hold a chosen provider request when it arrives until the
//! test decides its fate, so a test can kill a client at an exact effect
//! boundary and then choose whether the provider acted on the request.
//!
//! A gate matches requests by method and path prefix and fires on the
//! `nth` match (1-based, counted from when the gate was set). The fired
//! request waits until the gate is released: [`Release::Process`] hands it
//! to the provider as usual (the state changes even if the client is gone
//! and never sees the answer); [`Release::Drop`] answers 503 without the
//! provider looking at it. A gate released before its request arrives
//! applies that decision to the request without holding it.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What happens to a held request when its gate is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// Let it through to the provider; its effects happen as usual.
    Process,
    /// Answer it with 503 without processing it; nothing changes.
    Drop,
}

/// What `POST /_sim/gates` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRule {
    /// HTTP method to match (case-insensitive); empty or `*` matches any.
    #[serde(default)]
    pub method: String,
    /// Request paths (without the query string) starting with this match.
    #[serde(default)]
    pub path_prefix: String,
    /// Which matching request to hold, 1-based.
    #[serde(default = "one")]
    pub nth: u32,
}

fn one() -> u32 {
    1
}

impl GateRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.is_empty()
            || self.method == "*"
            || self.method.eq_ignore_ascii_case(method);
        method_ok && path.starts_with(&self.path_prefix)
    }
}

/// How far the gated request got.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// The nth matching request arrived.
    arrived: bool,
    /// Its answer was made: the provider handled it, or it was dropped.
    finished: bool,
    /// The server gave up on the client's side of it (the connection
    /// closed while it was held), so no answer will reach the client.
    abandoned: bool,
}

/// The state one gate shares between the server and the test.
#[derive(Debug)]
pub(crate) struct GateShared {
    progress: Mutex<Progress>,
    /// Signalled on every change of `progress`.
    changed: Condvar,
    /// The test's decision; `None` while undecided.
    decision: watch::Sender<Option<Release>>,
}

impl GateShared {
    fn new() -> GateShared {
        GateShared {
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
            decision: watch::Sender::new(None),
        }
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        // A panicking test thread must not wedge the server.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress());
        self.changed.notify_all();
    }

    pub(crate) fn mark_finished(&self) {
        self.update(|p| p.finished = true);
    }

    pub(crate) fn mark_abandoned(&self) {
        self.update(|p| p.abandoned = true);
    }

    pub(crate) fn has_arrived(&self) -> bool {
        self.progress().arrived
    }

    pub(crate) fn has_finished(&self) -> bool {
        self.progress().finished
    }

    /// Blocks until `reached` holds or `timeout` passes; true when it holds.
    fn wait_until(&self, timeout: Duration, reached: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.progress();
        while !reached(&progress) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            progress = self
                .changed
                .wait_timeout(progress, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Records `mode` unless a decision was already made; the first one wins.
    pub(crate) fn release(&self, mode: Release) {
        self.decision.send_if_modified(|decision| {
            if decision.is_some() {
                return false;
            }
            *decision = Some(mode);
            true
        });
    }

    /// Waits for the test's decision.
    pub(crate) async fn decided(&self) -> Release {
        let mut decision = self.decision.subscribe();
        match decision.wait_for(Option::is_some).await {
            Ok(mode) => mode.unwrap_or(Release::Drop),
            // The sender lives in `self`, so this cannot happen; answering
            // as a dropped request is the harmless reading.
            Err(_) => Release::Drop,
        }
    }
}

/// A gate set on a simulator, held by the test that set it.
///
/// Dropping it releases the request with [`Release::Drop`] (or decides that
/// for a request still to come), so a failing test never leaves the
/// simulator holding a request.
#[derive(Debug)]
pub struct Gate {
    id: u64,
    shared: Arc<GateShared>,
}

impl Gate {
    /// The gate's id, as `/_sim/gates/{id}` names it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the gated request has arrived (and is held, unless released).
    pub fn arrived(&self) -> bool {
        self.shared.has_arrived()
    }

    /// Blocks the calling thread until the gated request arrives or
    /// `timeout` passes; true when it arrived. Call it from a plain thread,
    /// not from inside an async task.
    pub fn wait_arrived(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |p| p.arrived)
    }

    /// Whether the released request has been answered: handled by the
    /// provider (for [`Release::Process`]) or dropped.
    pub fn finished(&self) -> bool {
        self.shared.has_finished()
    }

    /// Blocks until the released request has been answered or `timeout`
    /// passes; true when it was. After a `Process` release this is when
    /// the provider's state holds the request's effects, whether or not
    /// the client was still there to read the answer.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |p| p.finished)
    }

    /// Blocks until the server has dropped the client's side of the gated
    /// request (its connection closed while the request was held) or
    /// `timeout` passes; true when it has. The held request itself goes
    /// on waiting for its release.
    pub fn wait_abandoned(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |p| p.abandoned)
    }

    /// Lets the held request go as `mode` says. Only the first release of
    /// a gate counts.
    pub fn release(&self, mode: Release) {
        self.shared.release(mode);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.release(Release::Drop);
    }
}

/// An armed gate: its rule and how many matching requests it has seen.
#[derive(Debug)]
struct Armed {
    rule: GateRule,
    seen: u32,
    shared: Arc<GateShared>,
}

/// Every gate of one simulator.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    last_id: u64,
    /// Gates whose request has not arrived yet.
    armed: Vec<Armed>,
    /// Every gate ever set, for `GET /_sim/gates/{id}` and releases by id.
    all: BTreeMap<u64, Arc<GateShared>>,
}

impl Gates {
    /// Arms a gate that lives until released by id; returns the id.
    pub(crate) fn arm(&mut self, rule: GateRule) -> u64 {
        self.last_id += 1;
        let id = self.last_id;
        let shared = Arc::new(GateShared::new());
        self.all.insert(id, shared.clone());
        self.armed.push(Armed {
            rule,
            seen: 0,
            shared,
        });
        id
    }

    /// Arms a gate; the returned handle releases it with `Drop` when dropped.
    pub(crate) fn add(&mut self, rule: GateRule) -> Gate {
        let id = self.arm(rule);
        let shared = self.all[&id].clone();
        Gate { id, shared }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<GateShared>> {
        self.all.get(&id).cloned()
    }

    /// Counts this request against every armed gate and returns the gates
    /// that fire on it (marked arrived and disarmed). The request must wait
    /// for all of their decisions.
    pub(crate) fn arrive(&mut self, method: &str, path: &str) -> Vec<Arc<GateShared>> {
        let mut fired = Vec::new();
        self.armed.retain_mut(|armed| {
            if !armed.rule.matches(method, path) {
                return true;
            }
            armed.seen += 1;
            if armed.seen < armed.rule.nth.max(1) {
                return true;
            }
            armed.shared.update(|p| p.arrived = true);
            fired.push(armed.shared.clone());
            false
        });
        fired
    }
}

/// Waits for every fired gate's decision: the request goes on only when all
/// of them say `Process`.
pub(crate) async fn decide(fired: &[Arc<GateShared>]) -> Release {
    let mut outcome = Release::Process;
    for gate in fired {
        if gate.decided().await == Release::Drop {
            outcome = Release::Drop;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailRule, GitLabState, ProjectSeed, TokenSeed, UserSeed};
    use serde_json::{Value, json};

    const WAIT: Duration = Duration::from_secs(10);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A demo simulator with an admin token, and a runtime for the client.
    fn demo() -> (
        tokio::runtime::Runtime,
        crate::SimServer,
        crate::DemoState,
        reqwest::Client,
    ) {
        let rt = runtime();
        let (server, state) = rt.block_on(crate::start_demo(0)).unwrap();
        state.seed_token("admin", "demo-admin-token").unwrap();
        (rt, server, state, reqwest::Client::new())
    }

    fn create(
        rt: &tokio::runtime::Runtime,
        http: &reqwest::Client,
        server: &crate::SimServer,
        name: &str,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = http
            .post(server.url("/api/tokens"))
            .bearer_auth("demo-admin-token")
            .json(&json!({ "name": name }));
        rt.spawn(request.send())
    }

    #[test]
    fn a_gated_request_waits_and_process_lets_it_change_state() {
        let (rt, server, state, http) = demo();
        let gate = state.gate("POST", "/api/tokens", 1);
        assert!(!gate.arrived());
        let pending = create(&rt, &http, &server, "deploy");
        assert!(gate.wait_arrived(WAIT), "the request never arrived");
        // Held: the provider has not seen it, and no answer came back.
        assert!(state.active_tokens_named("deploy").is_empty());
        assert!(!pending.is_finished());
        // Other requests are not held.
        let other = rt
            .block_on(
                http.get(server.url("/api/whoami"))
                    .bearer_auth("demo-admin-token")
                    .send(),
            )
            .unwrap();
        assert_eq!(other.status(), 200);
        assert!(!pending.is_finished());

        gate.release(Release::Process);
        let response = rt.block_on(pending).unwrap().unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(state.active_tokens_named("deploy").len(), 1);
        assert_eq!(
            state
                .requests()
                .iter()
                .filter(|r| r.method == "POST")
                .count(),
            1,
            "logged once"
        );
    }

    #[test]
    fn drop_answers_503_and_changes_nothing() {
        let (rt, server, state, http) = demo();
        let gate = state.gate("post", "/api/tokens", 1);
        let pending = create(&rt, &http, &server, "deploy");
        assert!(gate.wait_arrived(WAIT));
        gate.release(Release::Drop);
        assert!(gate.wait_finished(WAIT));
        let response = rt.block_on(pending).unwrap().unwrap();
        assert_eq!(response.status(), 503);
        let body: Value = rt.block_on(response.json()).unwrap();
        assert_eq!(body, json!({ "message": "503 Service Unavailable" }));
        assert!(state.active_tokens_named("deploy").is_empty());
        // A later release changes nothing: the first decision stands.
        gate.release(Release::Process);
        assert!(state.active_tokens_named("deploy").is_empty());
    }

    #[test]
    fn dropping_the_gate_releases_the_request_as_dropped() {
        let (rt, server, state, http) = demo();
        let gate = state.gate("POST", "/api/tokens", 1);
        let pending = create(&rt, &http, &server, "deploy");
        assert!(gate.wait_arrived(WAIT));
        drop(gate);
        let response = rt.block_on(pending).unwrap().unwrap();
        assert_eq!(response.status(), 503);
        assert!(state.active_tokens_named("deploy").is_empty());
    }

    #[test]
    fn the_nth_matching_request_is_held_counting_from_when_the_gate_is_set() {
        let (rt, server, state, http) = demo();
        // Requests before the gate do not count.
        let before = rt
            .block_on(create(&rt, &http, &server, "a"))
            .unwrap()
            .unwrap();
        assert_eq!(before.status(), 201);
        let gate = state.gate("POST", "/api/tokens", 2);
        let first = rt
            .block_on(create(&rt, &http, &server, "b"))
            .unwrap()
            .unwrap();
        assert_eq!(first.status(), 201);
        assert!(!gate.arrived());
        let second = create(&rt, &http, &server, "c");
        assert!(gate.wait_arrived(WAIT));
        assert!(state.active_tokens_named("c").is_empty());
        gate.release(Release::Process);
        assert_eq!(rt.block_on(second).unwrap().unwrap().status(), 201);
        // The gate fired once; the third request goes straight through.
        let third = rt
            .block_on(create(&rt, &http, &server, "d"))
            .unwrap()
            .unwrap();
        assert_eq!(third.status(), 201);
    }

    #[test]
    fn wait_arrived_times_out_when_nothing_comes() {
        let (_rt, _server, state, _http) = demo();
        let gate = state.gate("DELETE", "/api/tokens/", 1);
        assert!(!gate.wait_arrived(Duration::from_millis(50)));
    }

    #[test]
    fn a_gate_released_before_its_request_applies_the_decision_without_holding() {
        let (rt, server, state, http) = demo();
        let gate = state.gate("POST", "/api/tokens", 1);
        gate.release(Release::Drop);
        let response = rt
            .block_on(create(&rt, &http, &server, "x"))
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(gate.arrived());
        assert!(state.active_tokens_named("x").is_empty());
    }

    #[test]
    fn process_changes_state_even_when_the_client_is_gone() {
        use std::io::Write;
        let (_rt, server, state, _http) = demo();
        let gate = state.gate("POST", "/api/tokens", 1);
        // A raw connection, so the test controls when it closes.
        let mut client = std::net::TcpStream::connect(server.addr).unwrap();
        let body = r#"{"name":"orphan"}"#;
        write!(
            client,
            "POST /api/tokens HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer demo-admin-token\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.addr,
            body.len()
        )
        .unwrap();
        assert!(gate.wait_arrived(WAIT));
        // The client dies: its connection closes while the request is held.
        client.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        // The release must come after the server noticed the closed
        // connection and dropped the request's future.
        assert!(
            gate.wait_abandoned(WAIT),
            "the server never noticed the closed connection"
        );
        assert!(state.active_tokens_named("orphan").is_empty());
        assert!(!gate.finished());
        gate.release(Release::Process);
        assert!(
            gate.wait_finished(WAIT),
            "the held request was never processed"
        );
        assert_eq!(state.active_tokens_named("orphan").len(), 1);
    }

    #[test]
    fn fail_rules_apply_to_a_processed_request() {
        let (rt, server, state, http) = demo();
        let gate = state.gate("POST", "/api/tokens", 1);
        state.fail(FailRule::new("POST", "/api/tokens", 500));
        let pending = create(&rt, &http, &server, "x");
        assert!(gate.wait_arrived(WAIT));
        gate.release(Release::Process);
        assert_eq!(rt.block_on(pending).unwrap().unwrap().status(), 500);
        assert!(state.active_tokens_named("x").is_empty());
        // The processed request used the rule up.
        let again = rt
            .block_on(create(&rt, &http, &server, "x"))
            .unwrap()
            .unwrap();
        assert_eq!(again.status(), 201);
    }

    #[test]
    fn gates_over_http() {
        let (rt, server, state, http) = demo();
        let id: u64 = rt.block_on(async {
            let created = http
                .post(server.url("/_sim/gates"))
                .json(&json!({ "method": "POST", "path_prefix": "/api/tokens", "nth": 1 }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
            let body: Value = created.json().await.unwrap();
            body["id"].as_u64().unwrap()
        });
        let show = |rt: &tokio::runtime::Runtime| -> Value {
            rt.block_on(async {
                http.get(server.url(&format!("/_sim/gates/{id}")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            })
        };
        let arrived = |rt: &tokio::runtime::Runtime| show(rt)["arrived"].as_bool().unwrap();
        assert!(!arrived(&rt));
        let pending = create(&rt, &http, &server, "deploy");
        let deadline = Instant::now() + WAIT;
        while !arrived(&rt) {
            assert!(Instant::now() < deadline, "the request never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(state.active_tokens_named("deploy").is_empty());
        rt.block_on(async {
            let bad = http
                .post(server.url(&format!("/_sim/gates/{id}/release")))
                .json(&json!({ "mode": "later" }))
                .send()
                .await
                .unwrap();
            assert_eq!(bad.status(), 400);
            let released = http
                .post(server.url(&format!("/_sim/gates/{id}/release")))
                .json(&json!({ "mode": "process" }))
                .send()
                .await
                .unwrap();
            assert_eq!(released.status(), 204);
            let unknown = http
                .get(server.url("/_sim/gates/999"))
                .send()
                .await
                .unwrap();
            assert_eq!(unknown.status(), 404);
        });
        assert_eq!(rt.block_on(pending).unwrap().unwrap().status(), 201);
        assert_eq!(state.active_tokens_named("deploy").len(), 1);
        assert_eq!(
            show(&rt),
            json!({ "id": id, "arrived": true, "finished": true })
        );
    }

    #[test]
    fn gitlab_requests_are_gated_too() {
        let rt = runtime();
        let (server, state): (crate::SimServer, GitLabState) =
            rt.block_on(crate::start_gitlab(0)).unwrap();
        let user = state.add_user(UserSeed::new("ops")).unwrap();
        let project = state
            .add_project(ProjectSeed {
                path: "acme/api".into(),
                ..ProjectSeed::default()
            })
            .unwrap();
        state.add_project_member(project, user, 40).unwrap();
        let token = state
            .add_token(TokenSeed::personal(user, "ci").value("glpat-gate-test-value-0001"))
            .unwrap();
        let http = reqwest::Client::new();
        let path = format!("/api/v4/projects/{project}/triggers");
        let send = |description: &str| {
            rt.spawn(
                http.post(server.url(&path))
                    .header("PRIVATE-TOKEN", token.token.expose())
                    .json(&json!({ "description": description }))
                    .send(),
            )
        };

        let gate = state.gate("POST", &path, 1);
        let dropped = send("dropped");
        assert!(gate.wait_arrived(WAIT));
        gate.release(Release::Drop);
        assert_eq!(rt.block_on(dropped).unwrap().unwrap().status(), 503);
        assert!(state.snapshot().triggers.is_empty());

        let gate = state.gate("POST", &path, 1);
        let processed = send("processed");
        assert!(gate.wait_arrived(WAIT));
        assert!(state.snapshot().triggers.is_empty());
        gate.release(Release::Process);
        assert_eq!(rt.block_on(processed).unwrap().unwrap().status(), 201);
        assert_eq!(state.snapshot().triggers.len(), 1);
    }

    #[test]
    fn a_request_matching_two_gates_waits_for_both() {
        let mut gates = Gates::default();
        let a = gates.add(GateRule {
            method: "*".into(),
            path_prefix: "/api/".into(),
            nth: 1,
        });
        let b = gates.add(GateRule {
            method: String::new(),
            path_prefix: "/api/x".into(),
            nth: 1,
        });
        let fired = gates.arrive("GET", "/api/x");
        assert_eq!(fired.len(), 2);
        assert!(a.arrived() && b.arrived());
        assert!(gates.arrive("GET", "/api/x").is_empty(), "each fires once");
        a.release(Release::Process);
        b.release(Release::Drop);
        let rt = runtime();
        assert_eq!(rt.block_on(decide(&fired)), Release::Drop);
        assert!(gates.get(a.id()).is_some());
        assert!(gates.get(99).is_none());
    }
}
