//! Who may decide the change requests of a run's approval gates, as the
//! journal records them with each request.

/// Who may decide the gates of one runbook, from the operator's config: the runbook's
/// own list (or the `[approvals]` default), and one list per environment.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub runbook: Option<Vec<String>>,
    pub default: Vec<String>,
    pub environments: std::collections::BTreeMap<String, Vec<String>>,
}

impl Rules {
    /// The requirements a decider must meet, each a set of alternatives
    /// joined by `|`: one for the runbook (the config's list for it, else
    /// the gate's own, else the default), and one per named environment the
    /// config lists approvers for. Recorded with the request, so the
    /// decision is checked against the rules of the day it was asked.
    pub fn requirements(&self, gate: &[String], environments: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let runbook = self
            .runbook
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| (!gate.is_empty()).then(|| gate.to_vec()))
            .or_else(|| (!self.default.is_empty()).then(|| self.default.clone()));
        if let Some(list) = runbook {
            out.push(list.join("|"));
        }
        for env in environments {
            if let Some(list) = self.environments.get(env).filter(|l| !l.is_empty()) {
                out.push(list.join("|"));
            }
        }
        out
    }
}

/// "in stage, prod", or "" with no environments.
pub fn where_text(environments: &[String]) -> String {
    if environments.is_empty() {
        "no environment named".to_owned()
    } else {
        format!("in {}", environments.join(", "))
    }
}
