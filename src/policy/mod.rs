//! The policy file: parse, validate with positions, and build a [`Policy`].
//!
//! Every problem is reported in one pass with its file, line, column, field path and a hint.
//! The file format is described in `docs/policy.md`.
//!
//! - `parse`: typed reads from the spanned TOML tree;
//! - `parts`: a large policy read in parts, in parallel, falling back to the whole file;
//! - `diagnostic`: positions, field paths, suggestions;
//! - `validate`: the whole file, `[daemon]`, `[backends.*]`;
//! - `notify`: `[notify.*]` webhook targets;
//! - `secrets`: `[defaults]`, `[[secrets]]`, schedules and cross-field checks;
//! - `generator`: generator tables;
//! - `vault`: `type = "vault"` backend tables.

mod api;
mod diagnostic;
mod generator;
mod model;
mod notify;
mod parse;
mod parts;
mod secrets;
#[cfg(test)]
mod tests;
mod validate;
mod vault;

pub use model::{
    ApiSettings, AssumeRole, AwsBackendConfig, BackendConfig, Confirm, CredentialsEnv,
    DaemonSettings, FileBackendConfig, KeySource, NotifyTarget, Policy, SecretPolicy,
    SecretSettings,
};
pub use vault::{CredentialSource, KvVersion, VaultAuth, VaultBackendConfig};

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
    /// One `{file}:{line}:{column}: {path}: {message}` line and a `  help: {hint}` line per
    /// problem, then `{N} problem(s) in {file}`. The path is left out when there is none
    /// (syntax errors, unreadable files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            write!(f, "{}:{}:{}: ", d.file, d.line, d.column)?;
            if !d.path.is_empty() {
                write!(f, "{}: ", d.path)?;
            }
            writeln!(f, "{}", d.message)?;
            writeln!(f, "  help: {}", d.hint)?;
        }
        let count = self.0.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        match self.0.first() {
            Some(first) => write!(f, "{count} {noun} in {}", first.file),
            None => write!(f, "{count} {noun}"),
        }
    }
}

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        PolicyErrors(vec![unreadable(
            path,
            1,
            1,
            format!("cannot read the policy file: {e}"),
            "check the path and that rekeyd may read it",
        )])
    })?;
    from_bytes(path, &bytes)
}

/// Validates the bytes of a policy file, as [`load`] does once it has read them: text
/// that is not UTF-8 is refused at its first bad byte. `file` names it in diagnostics and
/// relative paths resolve against its directory.
pub fn from_bytes(file: &Path, bytes: &[u8]) -> Result<Policy, PolicyErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(file, text),
        Err(e) => {
            // Point at the first bad byte: the valid prefix gives its line and column.
            let valid = &bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err(PolicyErrors(vec![unreadable(
                file,
                line,
                column,
                "the policy file is not valid UTF-8".to_owned(),
                "save the file as UTF-8",
            )]))
        }
    }
}

/// A problem with the file as a whole (unreadable, not text): it has no field path.
fn unreadable(file: &Path, line: usize, column: usize, message: String, hint: &str) -> Diagnostic {
    Diagnostic {
        file: file.display().to_string(),
        line,
        column,
        path: String::new(),
        message,
        hint: hint.to_owned(),
    }
}

/// Validates policy text; `file` names it in diagnostics and relative paths resolve
/// against its directory.
pub fn parse(file: &Path, text: &str) -> Result<Policy, PolicyErrors> {
    validate::policy(file, text).map_err(PolicyErrors)
}
