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
        }
    }
}

impl Code {
    pub const ALL: [Code; 8] = [
        Code::Internal,
        Code::Config,
        Code::Denied,
        Code::RunbookFailed,
        Code::InputRequired,
        Code::RunbookInvalid,
        Code::Locked,
        Code::NeedsAttention,
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

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  internal error
  2  command-line usage error
  3  configuration error (keycycle.toml, plugin file, master key, store)
  4  capability denied (host, secret or import not granted)
  5  runbook failed (provider error, fail(), a limit)
  6  input required (an answer was not given with --input)
  7  runbook invalid (syntax error, import outside the runbooks folder)
  8  credential locked by another run (see `keycycle runs`)
  9  run needs attention: a change was interrupted and its outcome is unknown";
