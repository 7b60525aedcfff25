//! The tamper-evident audit log: hash-chained JSON Lines, group-committed, verifiable.
//!
//! Reads and verifies with no backend; records ids and keyed fingerprints, never values.
//! The byte format is described in `docs/adr/0003-audit-log-format.md`. `entry.rs` seals
//! lines, [`AuditLog`] writes them, [`verify`] checks the chain, [`query`] reads and filters
//! one or several logs, [`Fingerprinter`] keys value digests.

mod entry;
mod event;
mod fingerprint;
mod query;
mod verify;
mod writer;

pub use event::{AuditEvent, Trigger};
pub use fingerprint::Fingerprinter;
pub use query::{
    Entry, Filter, Outcome, QueryResult, UnknownOutcome, Unreadable, query, read_logs, render_json,
    render_table,
};
pub(crate) use query::{for_each_entry_about, for_each_entry_except};
pub use verify::{Anchor, InvalidAnchor, Problem, VerifyReport, verify, verify_anchored};
pub use writer::{AuditLog, AuditStats, Observer, Receipt};

/// Errors from writing or reading the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O failure, naming the file.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log's last line is not an intact entry, so the chain cannot be continued.
    #[error("audit log {path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The fingerprint key file is unusable (malformed, or readable by others).
    #[error("audit key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The writer task has stopped.
    #[error("the audit log writer has stopped")]
    Closed,
}
