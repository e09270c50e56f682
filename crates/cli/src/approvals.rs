//! Approval gates on the operator's side: who may decide a change request,
//! and the `approvals`, `approve` and `reject` commands that list and
//! decide them. The gate itself is a journaled effect (`journal.rs`).

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use keycycle_store::state::{
    ApprovalDecision, ApprovalRecord, ApprovalState, RunEvent, RunState, StateStore, now_ms,
};

use crate::config::Config;
use crate::exit::Code;
use crate::{durable, out};

pub use keycycle_engine::approvals::{Rules, where_text};

/// The approval rules of runbook `runbook` (its identity), from the config.
pub fn rules_from_config(config: &Config, runbook: &str) -> Rules {
    Rules {
        runbook: config
            .runbooks
            .get(runbook)
            .and_then(|r| r.approvers.clone()),
        default: config.approvals.approvers.clone(),
        environments: config
            .approvals
            .environments
            .iter()
            .map(|(env, a)| (env.clone(), a.approvers.clone()))
            .collect(),
    }
}

/// Why `user` may not decide `record`, if they may not. The requester never
/// may (two people see every change); each recorded requirement must be met
/// by the user's name or one of their groups.
pub fn refusal(record: &ApprovalRecord, user: &str, groups: &BTreeSet<String>) -> Option<String> {
    if user == record.request.requested_by {
        return Some(format!(
            "{user} started run {} and asked for this approval; another person must decide it",
            record.request.run_id
        ));
    }
    for requirement in &record.request.approvers {
        let alternatives: Vec<&str> = requirement.split('|').collect();
        let met = alternatives.iter().any(|a| match a.strip_prefix("group:") {
            Some(group) => groups.contains(group),
            None => *a == user,
        });
        if !met {
            return Some(format!(
                "{user} is not one of the approvers this request needs: one of {}",
                alternatives.join(", ")
            ));
        }
    }
    None
}

/// The groups `user` belongs to, from the system's group and user
/// databases (`/etc/group`, and the primary group from `/etc/passwd`).
pub fn groups_of(user: &str) -> BTreeSet<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let passwd = read("/etc/passwd");
    let primary_gid = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| f.get(3).map(|g| (*g).to_owned()));
    read("/etc/group")
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, gid, members) = (fields.first()?, fields.get(2)?, fields.get(3)?);
            let member = members.split(',').any(|m| m.trim() == user)
                || primary_gid.as_deref() == Some(*gid);
            member.then(|| (*name).to_owned())
        })
        .collect()
}

/// A change request as `--output json` shows it (docs/json.md): times in
/// RFC 3339.
fn record_json(r: &ApprovalRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.request.id,
        "run_id": r.request.run_id,
        "title": r.request.title,
        "summary": r.request.summary,
        "environments": r.request.environments,
        "approvers": r.request.approvers,
        "requested_by": r.request.requested_by,
        "requested_host": r.request.requested_host,
        "requested_at": keycycle_engine::journal::rfc3339(r.request.requested_at),
        "state": r.state.as_str(),
        "decided_by": r.decided_by,
        "decided_host": r.decided_host,
        "decided_at": r.decided_at.map(keycycle_engine::journal::rfc3339),
        "comment": r.comment,
    })
}

fn state_word(state: ApprovalState) -> &'static str {
    state.as_str()
}

/// `keycycle approvals`: the requests waiting, or every one with `all`.
pub fn list(config: &Config, all: bool, json: bool) -> Result<()> {
    // Reading never creates the state folder.
    let records = match durable::open_existing_state(config)? {
        Some(state) => state.approvals(!all).context(Code::Config)?,
        None => Vec::new(),
    };
    if json {
        let value = serde_json::Value::Array(records.iter().map(record_json).collect());
        outln!(
            "{}",
            keycycle_secret::redact(&serde_json::to_string_pretty(&value).context(Code::Internal)?)
        );
        return Ok(());
    }
    if records.is_empty() {
        note!(
            "{}",
            if all {
                "no change requests"
            } else {
                "no change requests are waiting"
            }
        );
        return Ok(());
    }
    for r in &records {
        outln!(
            "{}  {}  {}  ({}; asked by {}@{})",
            r.request.id,
            state_word(r.state),
            r.request.title,
            where_text(&r.request.environments),
            r.request.requested_by,
            r.request.requested_host
        );
        if !r.request.summary.is_empty() {
            outln!("    {}", r.request.summary);
        }
        if !r.request.approvers.is_empty() {
            let needs: Vec<String> = r
                .request
                .approvers
                .iter()
                .map(|a| format!("one of {}", a.replace('|', ", ")))
                .collect();
            outln!("    needs {}", needs.join("; and "));
        }
        if let Some(by) = &r.decided_by {
            outln!(
                "    {} by {by}{}",
                state_word(r.state),
                r.comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `keycycle approve` and `keycycle reject`: records the decision of the
/// person running the command, after the two-person and approver checks,
/// and writes it to the run's audit trail.
pub fn decide(config: &Config, id: &str, approved: bool, comment: Option<&str>) -> Result<()> {
    let state = durable::open_existing_state(config)?.ok_or_else(|| {
        anyhow!(
            "there is no change request {id}: no run has been recorded with this configuration's state folder; \
             check --config, or list the requests with `keycycle approvals`"
        )
            .context(Code::Config)
    })?;
    let state: &dyn StateStore = &*state;
    let record = state
        .approval(id)
        .context(Code::Config)?
        .ok_or_else(|| {
            anyhow!("there is no change request {id}; `keycycle approvals` lists the ones waiting")
        })
        .context(Code::Config)?;
    if record.state != ApprovalState::Pending {
        return Err(anyhow!(
            "change request {id} was already {} by {}; a decision is final",
            state_word(record.state),
            record.decided_by.as_deref().unwrap_or("someone")
        ))
        .context(Code::Config);
    }
    let user = durable::user();
    if let Some(why) = refusal(&record, &user, &groups_of(&user)) {
        return Err(anyhow!("{why}; nothing was recorded")).context(Code::Denied);
    }
    let decision = ApprovalDecision {
        approved,
        by: user.clone(),
        host: durable::host(),
        at: now_ms(),
        comment: comment.map(str::to_owned),
    };
    let decided = state.decide_approval(id, &decision).context(Code::Config)?;
    let verb = if approved { "approved" } else { "rejected" };
    let _ = state.append_event(
        &record.request.run_id,
        &RunEvent {
            at: decision.at,
            kind: verb.to_owned(),
            message: format!(
                "change request {id} {verb} by {}@{}{}",
                decision.by,
                decision.host,
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            ),
        },
    );
    let run = &record.request.run_id;
    // A rejected run that waits at its gate ends now, so its locks do not
    // wait for someone to resume it only to hear the answer.
    let waiting = state
        .run(run)
        .context(Code::Config)?
        .is_some_and(|r| r.state == RunState::WaitingForApproval);
    if !approved && waiting {
        state
            .end_run(
                run,
                RunState::Rejected,
                Some(&format!(
                    "change request {id} was rejected by {user}{}",
                    comment.map(|c| format!(": {c}")).unwrap_or_default()
                )),
            )
            .context(Code::Config)?;
    }
    let next = if approved {
        format!("run {run} goes on with `keycycle resume {run}`")
    } else if waiting {
        format!("run {run} ended as rejected and released its locks")
    } else {
        format!("run {run} ends as rejected when it reaches the gate again")
    };
    out::done(
        record_json(&decided),
        format_args!("change request {id} {verb} by {user}; {next}"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use keycycle_store::state::NewApproval;

    use super::*;

    fn record(approvers: &[&str]) -> ApprovalRecord {
        ApprovalRecord {
            request: NewApproval {
                id: "r:gate".into(),
                run_id: "r".into(),
                title: "t".into(),
                summary: String::new(),
                environments: vec!["prod".into()],
                approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
                requested_by: "ops".into(),
                requested_host: "h".into(),
                requested_at: 0,
            },
            state: ApprovalState::Pending,
            decided_by: None,
            decided_host: None,
            decided_at: None,
            comment: None,
        }
    }

    #[test]
    fn the_requester_never_decides_and_every_requirement_is_met() {
        let none = BTreeSet::new();
        let sre: BTreeSet<String> = ["sre".to_owned()].into();
        assert!(refusal(&record(&[]), "ops", &none).is_some());
        assert!(refusal(&record(&[]), "alice", &none).is_none());
        let r = record(&["alice|group:sre", "bob|carol|group:prod"]);
        assert!(
            refusal(&r, "alice", &none).is_some(),
            "alice meets one of two"
        );
        assert!(refusal(&r, "bob", &sre).is_none(), "sre and bob meet both");
        assert!(
            refusal(&record(&["group:sre"]), "ops", &sre).is_some(),
            "the requester, even in the group"
        );
    }

    #[test]
    fn requirements_take_the_runbook_list_then_the_gate_then_the_default() {
        let mut rules = Rules {
            runbook: None,
            default: vec!["group:sre".into()],
            environments: [("prod".to_owned(), vec!["carol".to_owned()])].into(),
        };
        let envs = ["stage".to_owned(), "prod".to_owned()];
        assert_eq!(rules.requirements(&[], &envs), ["group:sre", "carol"]);
        assert_eq!(
            rules.requirements(&["alice".into(), "bob".into()], &envs),
            ["alice|bob", "carol"]
        );
        rules.runbook = Some(vec!["dave".into()]);
        assert_eq!(rules.requirements(&["alice".into()], &[]), ["dave"]);
    }
}
