//! Errors of the simulators' library API (seeding and changing the true state).

/// Why a change to a simulator's state was refused. No variant carries a
/// token value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error(
        "{provider} simulator: a token with this value is already stored (token id {existing_id}); \
         seed every value once"
    )]
    DuplicateTokenValue {
        provider: &'static str,
        existing_id: u64,
    },
    #[error("{provider} simulator: {what} {id} does not exist; seed it first")]
    Unknown {
        provider: &'static str,
        what: &'static str,
        id: String,
    },
    #[error("{provider} simulator: invalid seed: {reason}")]
    InvalidSeed {
        provider: &'static str,
        reason: String,
    },
}
