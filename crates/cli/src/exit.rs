//! Exit codes. Each class of failure has its own code so scripts and CI can
//! tell a typo in `keycycle.toml` from a refused capability from a rotation
//! that failed at the provider.

use std::fmt;

/// Attached to an error as anyhow context; `main` reads it back to pick the
/// process exit code. Its text heads the printed error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: a bug or an environment problem keycycle did not anticipate.
    Internal,
    /// 3: `keycycle.toml`, a plugin file, the master key or the store.
    Config,
    /// 4: the sandbox or a grant refused a capability.
    Denied,
    /// 5: the runbook ran and failed (provider error, `fail()`, a limit).
    RunbookFailed,
    /// 6: an answer the run needs was not given.
    InputRequired,
    /// 7: the runbook does not compile, or imports outside its folder.
    RunbookInvalid,
    /// 8: another run holds the lock on a credential.
    Locked,
    /// 9: a run stopped where an operator must look before it goes on.
    NeedsAttention,
    /// 10: a run stopped at an approval gate until people decide.
    WaitingForApproval,
    /// 11: an approval gate's change request was rejected.
    Rejected,
    /// 12: `keycycle check` found a credential critical (or expired).
    Critical,
}

impl Code {
    pub fn exit_code(self) -> u8 {
        match self {
            Code::Internal => 1,
            Code::Config => 3,
            Code::Denied => 4,
            Code::RunbookFailed => 5,
            Code::InputRequired => 6,
            Code::RunbookInvalid => 7,
            Code::Locked => 8,
            Code::NeedsAttention => 9,
            Code::WaitingForApproval => 10,
            Code::Rejected => 11,
            Code::Critical => 12,
        }
    }

    /// What the code means, for the table.
    pub fn meaning(self) -> &'static str {
        match self {
            Code::Internal => "internal error: a bug, or a fault keycycle did not expect",
            Code::Config => {
                "configuration error: keycycle.toml, a plugin file, the master key, the store, \
                 the state folder, or a wrong argument value"
            }
            Code::Denied => "capability denied: a host, secret or import not granted",
            Code::RunbookFailed => "runbook failed: a provider error, fail(), a limit",
            Code::InputRequired => "input required: an answer was not given with --input",
            Code::RunbookInvalid => {
                "runbook invalid: a syntax error, an unknown plugin operation, an import \
                 outside the runbooks folder"
            }
            Code::Locked => "locked: another run holds the credential, or the run is alive",
            Code::NeedsAttention => {
                "needs attention: a change was interrupted and its outcome is unknown"
            }
            Code::WaitingForApproval => {
                "waiting for approval: the run stopped at an approval gate and keeps its locks"
            }
            Code::Rejected => "rejected: an approval gate's change request was rejected",
            Code::Critical => {
                "critical: `keycycle check` found a credential expired or about to expire"
            }
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Code::Internal => "internal",
            Code::Config => "config",
            Code::Denied => "denied",
            Code::RunbookFailed => "runbook-failed",
            Code::InputRequired => "input-required",
            Code::RunbookInvalid => "runbook-invalid",
            Code::Locked => "locked",
            Code::NeedsAttention => "needs-attention",
            Code::WaitingForApproval => "waiting-for-approval",
            Code::Rejected => "rejected",
            Code::Critical => "critical",
        }
    }
}

impl Code {
    pub const ALL: [Code; 11] = [
        Code::Internal,
        Code::Config,
        Code::Denied,
        Code::RunbookFailed,
        Code::InputRequired,
        Code::RunbookInvalid,
        Code::Locked,
        Code::NeedsAttention,
        Code::WaitingForApproval,
        Code::Rejected,
        Code::Critical,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Code::Internal => "internal error",
            Code::Config => "configuration error",
            Code::Denied => "capability denied",
            Code::RunbookFailed => "runbook failed",
            Code::InputRequired => "input required",
            Code::RunbookInvalid => "runbook is invalid",
            Code::Locked => "credential locked",
            Code::NeedsAttention => "run needs attention",
            Code::WaitingForApproval => "waiting for approval",
            Code::Rejected => "change request rejected",
            Code::Critical => "a credential is critical",
        })
    }
}

/// The code carried by `err`, or [`Code::Internal`].
pub fn code_of(err: &anyhow::Error) -> Code {
    // anyhow finds a context value at any depth of nested contexts.
    err.downcast_ref::<Code>()
        .copied()
        .unwrap_or(Code::Internal)
}

/// The error chain as the operator reads it: each cause once, without the
/// exit-code markers (their text is a label for the code, not news).
pub fn causes(err: &anyhow::Error) -> Vec<String> {
    let markers: Vec<String> = Code::ALL.iter().map(|c| c.to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if !markers.contains(&cause) && !out.contains(&cause) {
            out.push(cause);
        }
    }
    out
}

/// One row of the exit-code table.
pub struct Row {
    pub code: u8,
    /// The `kind` of a JSON error report; empty for 0 and 2.
    pub kind: &'static str,
    pub meaning: &'static str,
}

/// Every exit code keycycle uses. `--help`, the man page and
/// `docs/operations.md` show this table, and a test holds the docs to it.
pub fn table() -> Vec<Row> {
    let mut rows = vec![
        Row {
            code: 0,
            kind: "",
            meaning: "success",
        },
        Row {
            code: 2,
            kind: "",
            meaning: "command-line usage error (an unknown flag, a missing argument)",
        },
    ];
    rows.extend(Code::ALL.iter().map(|c| Row {
        code: c.exit_code(),
        kind: c.word(),
        meaning: c.meaning(),
    }));
    rows.sort_by_key(|r| r.code);
    rows
}

/// The table as `--help` shows it.
pub fn help_table() -> String {
    let mut text = String::from("Exit codes:\n");
    for row in table() {
        let kind = if row.kind.is_empty() { "-" } else { row.kind };
        text.push_str(&format!("  {:<2} {:<16} {}\n", row.code, kind, row.meaning));
    }
    text
}
