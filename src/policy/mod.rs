//! The policy file: parse, validate with positions, and build a [`Policy`].
//!
//! Every problem is reported in one pass with its file, line, column, field path and a hint.

mod model;

pub use model::{
    BackendConfig, DaemonSettings, FileBackendConfig, NotifyTarget, Policy, SecretPolicy,
};

use std::fmt;
use std::path::Path;

/// One problem found in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The policy file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field path, e.g. `secrets[2].schedule.cron`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What would be valid.
    pub hint: String,
}

/// All the problems in a policy file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<Diagnostic>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let _ = path;
    todo!()
}

/// Validates policy text; `file` names it in diagnostics and relative paths resolve
/// against its directory.
pub fn parse(file: &Path, text: &str) -> Result<Policy, PolicyErrors> {
    let _ = (file, text);
    todo!()
}
