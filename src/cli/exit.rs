//! Exit codes scripts can rely on (listed under `rekeyd --help`), and the error type that
//! carries one to `main`.

use std::fmt;

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: i32,
    /// What to print (already complete: `main` adds only the `rekeyd: ` prefix).
    pub message: String,
}

/// A rotation, backend or I/O operation failed.
pub const FAILED: i32 = 1;
/// The policy file is invalid.
pub const INVALID_POLICY: i32 = 3;
/// The secret, stage or version does not exist.
pub const NOT_FOUND: i32 = 4;
/// The audit log failed verification.
pub const AUDIT_BROKEN: i32 = 5;
/// Refused (grace period, nothing to roll back).
pub const REFUSED: i32 = 6;

impl Failure {
    /// A failure with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<crate::policy::PolicyErrors> for Failure {
    fn from(errors: crate::policy::PolicyErrors) -> Self {
        Failure::new(INVALID_POLICY, errors.to_string())
    }
}

impl From<crate::rotation::RotationError> for Failure {
    fn from(error: crate::rotation::RotationError) -> Self {
        let code = match &error {
            e if e.is_not_found() => NOT_FOUND,
            crate::rotation::RotationError::Refused(_) => REFUSED,
            _ => FAILED,
        };
        Failure::new(code, error.to_string())
    }
}

impl From<crate::daemon::DaemonError> for Failure {
    fn from(error: crate::daemon::DaemonError) -> Self {
        let code = match error {
            crate::daemon::DaemonError::Policy(_) => INVALID_POLICY,
            _ => FAILED,
        };
        Failure::new(code, error.to_string())
    }
}

impl From<crate::backend::Error> for Failure {
    fn from(error: crate::backend::Error) -> Self {
        let code = if error.is_not_found() {
            NOT_FOUND
        } else {
            FAILED
        };
        Failure::new(code, error.to_string())
    }
}
