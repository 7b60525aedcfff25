//! Reading logs back: one or several files (each replica keeps its own) merged by time,
//! filtered by secret, time range and outcome, rendered as a table or as JSON.
//!
//! Query does not check seals or the chain; that is [`verify`](super::verify)'s job. Lines
//! it cannot read (damaged, or an event this version does not know) are skipped and listed
//! in [`QueryResult::unreadable`] rather than failing the whole query.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::entry::format_ts;
use super::verify::snapshot_len;
use super::{AuditError, AuditEvent, Trigger};

/// One entry read back from a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number within its file.
    pub seq: u64,
    /// When it was written.
    pub ts: DateTime<Utc>,
    /// The host that wrote it.
    pub host: String,
    /// The process that wrote it.
    pub pid: u32,
    /// Its hash (hex).
    pub hash: String,
    /// What happened.
    pub event: AuditEvent,
    /// The file it was read from.
    pub source: PathBuf,
    /// Its 1-based line in that file.
    pub line: usize,
}

/// Serialized flat, like the log itself, plus `source` and `line`.
impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut map = match serde_json::to_value(&self.event).map_err(S::Error::custom)? {
            serde_json::Value::Object(map) => map,
            _ => return Err(S::Error::custom("an audit event is not a JSON object")),
        };
        // `pid` may also be an event field (daemon_started); both were read from one key.
        map.insert("seq".into(), self.seq.into());
        map.insert("ts".into(), format_ts(self.ts).into());
        map.insert("host".into(), self.host.clone().into());
        map.insert("pid".into(), self.pid.into());
        map.insert("hash".into(), self.hash.clone().into());
        map.insert("source".into(), self.source.display().to_string().into());
        map.insert("line".into(), self.line.into());
        map.serialize(serializer)
    }
}

/// A line that query skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The file.
    pub source: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// Why it was skipped (`unknown event "…"`, `not JSON`, …).
    pub reason: String,
}

/// Entries read (merged and filtered) and lines skipped.
#[derive(Clone, Debug, Default)]
pub struct QueryResult {
    /// Matching entries, oldest first.
    pub entries: Vec<Entry>,
    /// Lines that could not be read as entries.
    pub unreadable: Vec<Unreadable>,
}

/// How a piece of work turned out; groups events for filtering.
///
/// | outcome       | events                                                                     |
/// |---------------|----------------------------------------------------------------------------|
/// | `succeeded`   | `rotation_succeeded`                                                       |
/// | `failed`      | `rotation_failed`, `rollback_failed`, `policy_rejected`                    |
/// | `manual`      | every event of a rotation started with a manual trigger (matched by secret and version), and every rollback event |
/// | `rolled_back` | `rolled_back`                                                              |
/// | `discarded`   | `pending_discarded`                                                        |
/// | `skipped`     | `slot_already_done`                                                        |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A rotation finished.
    Succeeded,
    /// A rotation or a rollback failed, or a policy was refused.
    Failed,
    /// Someone asked for it: manual rotations and rollbacks (started, failed or done).
    Manual,
    /// A rollback.
    RolledBack,
    /// A pending version was abandoned.
    Discarded,
    /// A slot needed no work (a replica or an earlier run had done it).
    Skipped,
}

impl Outcome {
    /// Every outcome, in the order documented above.
    pub const ALL: [Outcome; 6] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Manual,
        Outcome::RolledBack,
        Outcome::Discarded,
        Outcome::Skipped,
    ];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Manual => "manual",
            Outcome::RolledBack => "rolled_back",
            Outcome::Discarded => "discarded",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an [`Outcome`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown outcome {0:?}: use succeeded, failed, manual, rolled_back, discarded or skipped")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;
    fn from_str(text: &str) -> Result<Self, UnknownOutcome> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| UnknownOutcome(text.to_string()))
    }
}

/// Which entries to keep; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events about this secret.
    pub secret: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries with this outcome (see [`Outcome`]).
    pub outcome: Option<Outcome>,
}

impl Filter {
    /// Keeps the matching entries, in order. Takes the whole list because `manual` needs
    /// to see where each rotation started, which may lie outside the time range.
    pub fn apply(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let manual = manual_rotations(&entries);
        entries
            .into_iter()
            .filter(|e| self.matches(e, &manual))
            .collect()
    }

    fn matches(&self, entry: &Entry, manual: &HashSet<(String, String)>) -> bool {
        if let Some(secret) = &self.secret
            && !entry.event.concerns(secret)
        {
            return false;
        }
        if self.since.is_some_and(|since| entry.ts < since)
            || self.until.is_some_and(|until| entry.ts >= until)
        {
            return false;
        }
        match self.outcome {
            None => true,
            Some(outcome) => has_outcome(&entry.event, outcome, manual),
        }
    }
}

/// `(secret, version)` of every rotation started by hand.
fn manual_rotations(entries: &[Entry]) -> HashSet<(String, String)> {
    entries
        .iter()
        .filter_map(|e| match &e.event {
            AuditEvent::RotationStarted {
                secret,
                version,
                trigger: Trigger::Manual { .. },
                ..
            } => Some((secret.clone(), version.clone())),
            _ => None,
        })
        .collect()
}

fn has_outcome(event: &AuditEvent, outcome: Outcome, manual: &HashSet<(String, String)>) -> bool {
    use AuditEvent as E;
    match outcome {
        Outcome::Succeeded => matches!(event, E::RotationSucceeded { .. }),
        Outcome::Failed => matches!(
            event,
            E::RotationFailed { .. } | E::RollbackFailed { .. } | E::PolicyRejected { .. }
        ),
        Outcome::RolledBack => matches!(event, E::RolledBack { .. }),
        Outcome::Discarded => matches!(event, E::PendingDiscarded { .. }),
        Outcome::Skipped => matches!(event, E::SlotAlreadyDone { .. }),
        Outcome::Manual => {
            matches!(
                event,
                E::RollbackStarted { .. } | E::RollbackFailed { .. } | E::RolledBack { .. }
            ) || match (event.secret(), version_of(event)) {
                (Some(secret), Some(version)) => {
                    manual.contains(&(secret.to_string(), version.to_string()))
                }
                _ => false,
            }
        }
    }
}

/// Reads every log in `paths` and merges their entries by time (stable: ties keep file
/// order, then argument order).
pub fn read_logs<P: AsRef<Path>>(paths: &[P]) -> Result<QueryResult, AuditError> {
    let mut result = QueryResult::default();
    for path in paths {
        read_one(path.as_ref(), &mut result)?;
    }
    result.entries.sort_by_key(|e| e.ts);
    Ok(result)
}

/// Reads, filters and merges by time, holding only the matching entries: a query over a
/// log of millions of entries needs memory for what it prints, not for the whole log.
///
/// With a secret to match, lines that do not name it are passed over unparsed (see
/// [`for_each_entry_about`]), so only unreadable lines that name it are reported; `audit
/// verify` checks every line.
pub fn query<P: AsRef<Path>>(paths: &[P], filter: &Filter) -> Result<QueryResult, AuditError> {
    let manual = match filter.outcome {
        Some(Outcome::Manual) => manual_rotations_in(paths)?,
        _ => HashSet::new(),
    };
    let mentions = filter.secret.as_deref().map(MayHold::string);
    let keep = |line: &[u8]| mentions.as_ref().is_none_or(|m| m.in_line(line));
    let (mut entries, mut unreadable) = (Vec::new(), Vec::new());
    for path in paths {
        scan(
            path.as_ref(),
            keep,
            |entry| {
                if filter.matches(&entry, &manual) {
                    entries.push(entry);
                }
            },
            |skipped| unreadable.push(skipped),
        )?;
    }
    entries.sort_by_key(|e| e.ts);
    Ok(QueryResult {
        entries,
        unreadable,
    })
}

/// `(secret, version)` of every rotation started by hand in `paths`; only the lines of
/// `rotation_started` entries are parsed.
fn manual_rotations_in<P: AsRef<Path>>(
    paths: &[P],
) -> Result<HashSet<(String, String)>, AuditError> {
    let started = MayHold::string("rotation_started");
    let mut manual = HashSet::new();
    for path in paths {
        scan(
            path.as_ref(),
            |line| started.in_line(line),
            |entry| {
                if let AuditEvent::RotationStarted {
                    secret,
                    version,
                    trigger: Trigger::Manual { .. },
                    ..
                } = entry.event
                {
                    manual.insert((secret, version));
                }
            },
            |_| {},
        )?;
    }
    Ok(manual)
}

fn read_one(path: &Path, out: &mut QueryResult) -> Result<(), AuditError> {
    scan(
        path,
        |_| true,
        |entry| out.entries.push(entry),
        |skipped| out.unreadable.push(skipped),
    )
}

/// Reads one log entry by entry, in file order, without holding the whole log, for the
/// entries about `secret` and possibly a few others: a line
/// that does not hold the name as a JSON string is passed over unparsed. Parsing is most
/// of a read's time, so finding one secret's entries in a long log (a CLI rollback looking
/// for a stopped process's open work) takes a fraction of reading them all.
///
/// Every entry about the secret is kept (see [`MayHold`]).
pub(crate) fn for_each_entry_about(
    path: &Path,
    secret: &str,
    each: impl FnMut(Entry),
) -> Result<(), AuditError> {
    let mentions = MayHold::string(secret);
    scan(path, |line| mentions.in_line(line), each, |_| {})
}

/// Reads one log entry by entry, in file order, without holding the whole log (start-up
/// reads a log that may hold millions of entries), except the entries of the events named
/// in `skip`: their lines are passed over unparsed. A line with any JSON escape is parsed anyway (an escape can spell
/// an event name another way), and so is one with no `"event"` key where rekeyd writes it.
pub(crate) fn for_each_entry_except(
    path: &Path,
    skip: &[&str],
    each: impl FnMut(Entry),
) -> Result<(), AuditError> {
    let key = memchr::memmem::Finder::new(b"\"event\":\"");
    let keep = |line: &[u8]| {
        if has_escape(line) {
            return true;
        }
        let Some(at) = key.find(line) else {
            return true;
        };
        let name = &line[at + key.needle().len()..];
        let name = name.split(|&b| b == b'"').next().unwrap_or(name);
        !skip.iter().any(|s| s.as_bytes() == name)
    };
    scan(path, keep, each, |_| {})
}

/// Finds the lines that may hold a JSON string, without parsing them: those that hold it
/// as written, and any line with an escape (`\u0064b`, `\/` spell the same string another
/// way). rekeyd writes names and event tags as they are, so only lines it did not write,
/// or that carry an escaped quote in an error message, are parsed needlessly.
struct MayHold(memchr::memmem::Finder<'static>);

impl MayHold {
    fn string(text: &str) -> Self {
        Self(memchr::memmem::Finder::new(format!("\"{text}\"").as_bytes()).into_owned())
    }

    fn in_line(&self, line: &[u8]) -> bool {
        self.0.find(line).is_some() || has_escape(line)
    }
}

/// Whether a line holds a JSON escape, which can spell any name another way: such a line
/// must be parsed to know what it holds.
fn has_escape(line: &[u8]) -> bool {
    memchr::memchr(b'\\', line).is_some()
}

/// Reads `path` line by line; lines `keep` refuses are passed over without parsing.
fn scan(
    path: &Path,
    keep: impl Fn(&[u8]) -> bool,
    mut on_entry: impl FnMut(Entry),
    mut on_unreadable: impl FnMut(Unreadable),
) -> Result<(), AuditError> {
    let io = |e| AuditError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let len = snapshot_len(&file).map_err(io)?;
    let mut reader = BufReader::new(file.take(len));
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(());
        }
        line += 1;
        let skip = |reason: String| Unreadable {
            source: path.to_path_buf(),
            line,
            reason,
        };
        let Some(bytes) = buf.strip_suffix(b"\n") else {
            on_unreadable(skip("incomplete last line".into()));
            continue;
        };
        if !keep(bytes) {
            continue;
        }
        match parse(bytes) {
            Ok(parsed) => on_entry(Entry {
                source: path.to_path_buf(),
                line,
                ..parsed
            }),
            Err(reason) => on_unreadable(skip(reason)),
        }
    }
}

/// The header keys every entry has.
#[derive(Deserialize)]
struct Header {
    seq: u64,
    ts: DateTime<Utc>,
    host: String,
    pid: u32,
    hash: String,
    event: String,
}

/// One line as an entry. The header and the event are each read straight from the bytes
/// (both ignore the other's fields): building a `serde_json::Value` first and reading both
/// from it cost half again as much.
fn parse(bytes: &[u8]) -> Result<Entry, String> {
    let header: Header = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "not JSON".to_string()
        }
        _ => format!("not an audit entry ({e})"),
    })?;
    // An event name from a newer rekeyd must not break reading the rest.
    let event: AuditEvent = serde_json::from_slice(bytes)
        .map_err(|e| format!("unknown event {:?} ({e})", header.event))?;
    Ok(Entry {
        seq: header.seq,
        ts: header.ts,
        host: header.host,
        pid: header.pid,
        hash: header.hash,
        event,
        source: PathBuf::new(),
        line: 0,
    })
}

/// The version an event is about, if any (for a rollback's events, the one to be made
/// current).
fn version_of(event: &AuditEvent) -> Option<&str> {
    use AuditEvent as E;
    match event {
        E::RotationStarted { version, .. }
        | E::PendingStored { version, .. }
        | E::Promoted { version, .. }
        | E::RotationSucceeded { version, .. }
        | E::PendingDiscarded { version, .. }
        | E::RecoveryFound { version, .. }
        | E::SlotAlreadyDone { version, .. } => Some(version),
        E::RotationFailed { version, .. } => version.as_deref(),
        E::RollbackStarted { to, .. } | E::RollbackFailed { to, .. } | E::RolledBack { to, .. } => {
            Some(to)
        }
        E::ConfirmationRecorded { version, .. } => Some(version),
        E::NotificationDelivered { .. }
        | E::NotificationAttemptFailed { .. }
        | E::NotificationFailed { .. }
        | E::NotificationsCoalesced { .. }
        | E::EndpointDisabled { .. }
        | E::EndpointBreakerOpened { .. }
        | E::EndpointBreakerClosed { .. } => None,
        E::DaemonStarted { .. }
        | E::DaemonStopping { .. }
        | E::PolicyLoaded { .. }
        | E::PolicyRejected { .. } => None,
    }
}

/// The rest of what an event says, in a few words.
fn detail_of(event: &AuditEvent) -> String {
    use AuditEvent as E;
    match event {
        E::DaemonStarted { version, pid } => format!("rekeyd {version}, pid {pid}"),
        E::DaemonStopping { reason, in_flight } => {
            format!("{reason}, {in_flight} rotation(s) in flight")
        }
        E::PolicyLoaded {
            path,
            digest,
            secrets,
        } => format!("{path}: {secrets} secret(s), sha256 {digest}"),
        E::PolicyRejected {
            path,
            errors,
            first_error,
        } => format!("{path}: {errors} error(s), first: {first_error}"),
        E::RotationStarted {
            backend,
            slot,
            trigger,
            ..
        } => {
            let trigger = match trigger {
                Trigger::Schedule => "schedule".to_string(),
                Trigger::CatchUp => "catch-up".to_string(),
                Trigger::MaxAge => "max age".to_string(),
                Trigger::Recovery => "recovery".to_string(),
                Trigger::Manual { by } => format!("manual by {by}"),
                Trigger::Initial => "initial".to_string(),
            };
            match slot {
                Some(slot) => format!("{trigger}, slot {}, backend {backend}", format_ts(*slot)),
                None => format!("{trigger}, backend {backend}"),
            }
        }
        E::PendingStored {
            outcome,
            fingerprint,
            ..
        } => format!("{outcome}, {fingerprint}"),
        E::Promoted { previous, .. } => match previous {
            Some(previous) => format!("previous {previous}"),
            None => "first version".to_string(),
        },
        E::RotationSucceeded { duration_ms, .. } => format!("in {duration_ms} ms"),
        E::RotationFailed {
            step,
            error,
            will_retry,
            ..
        } => {
            let retry = if *will_retry {
                "will retry"
            } else {
                "no retry"
            };
            format!("at {step}: {error} ({retry})")
        }
        E::PendingDiscarded { reason, .. } => reason.clone(),
        E::RecoveryFound { action, .. } => action.clone(),
        E::RollbackStarted { from, by, .. } => format!("from {from}, by {by}"),
        E::RollbackFailed { from, error, .. } => format!("{from} stays current: {error}"),
        E::RolledBack { from, by, .. } => format!("from {from}, by {by}"),
        E::SlotAlreadyDone { .. } => "slot already done".to_string(),
        E::NotificationDelivered {
            id,
            target,
            notification,
            attempts,
            status,
            ..
        } => format!("{notification} {id} to {target}: HTTP {status} after {attempts} attempt(s)"),
        E::NotificationAttemptFailed {
            id,
            target,
            notification,
            attempt,
            error,
            retry_in_ms,
        } => format!(
            "{notification} {id} to {target}: attempt {attempt}: {error}; retry in {retry_in_ms} ms"
        ),
        E::NotificationFailed {
            id,
            target,
            notification,
            reason,
            ..
        } => format!("{notification} {id} to {target}: {reason}"),
        E::NotificationsCoalesced { id, target, parts } => {
            format!("{} events to {target} as batch {id}", parts.len())
        }
        E::EndpointDisabled { target, status } => format!("{target} disabled by HTTP {status}"),
        E::EndpointBreakerOpened {
            target,
            failures,
            cooldown_ms,
        } => format!("{target}: {failures} failure(s) in a row; paused {cooldown_ms} ms"),
        E::EndpointBreakerClosed { target } => format!("{target}: deliveries resumed"),
        E::ConfirmationRecorded {
            target,
            decision,
            via,
            by,
            ..
        } => format!("{decision} by {target} via {via} ({by})"),
    }
}

/// Makes log text safe to print: control characters (newlines, terminal escapes) from a
/// damaged or hostile log are shown escaped, never interpreted.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Renders entries as an aligned table: time, host, event, secret, version, detail.
pub fn render_table(entries: &[Entry]) -> String {
    const HEADINGS: [&str; 6] = ["TIME", "HOST", "EVENT", "SECRET", "VERSION", "DETAIL"];
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                format_ts(e.ts),
                printable(&e.host),
                e.event.name().to_string(),
                printable(e.event.secret().unwrap_or("-")),
                printable(version_of(&e.event).unwrap_or("-")),
                printable(&detail_of(&e.event)),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headings = HEADINGS.map(String::from);
    for row in std::iter::once(&headings).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders entries as a JSON array (each entry flat, as in the log, plus `source` and `line`).
pub fn render_json(entries: &[Entry]) -> String {
    serde_json::to_string_pretty(entries).expect("entries always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{self, GENESIS};
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 5, 1, 12, minute, 0).unwrap()
    }

    /// Writes a sealed log of `(minute, event)` as host `host`.
    fn log(
        dir: &tempfile::TempDir,
        name: &str,
        host: &str,
        events: &[(u32, AuditEvent)],
    ) -> PathBuf {
        let mut prev = GENESIS.to_string();
        let mut text = Vec::new();
        for (i, (minute, event)) in events.iter().enumerate() {
            let sealed = entry::seal(i as u64 + 1, at(*minute), host, 10, &prev, event).unwrap();
            prev = sealed.hash;
            text.extend(sealed.line);
        }
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn started(secret: &str, version: &str, trigger: Trigger) -> AuditEvent {
        AuditEvent::RotationStarted {
            secret: secret.into(),
            backend: "vault".into(),
            version: version.into(),
            slot: None,
            trigger,
        }
    }

    fn succeeded(secret: &str, version: &str) -> AuditEvent {
        AuditEvent::RotationSucceeded {
            secret: secret.into(),
            version: version.into(),
            duration_ms: 12,
        }
    }

    fn failed(secret: &str, version: &str) -> AuditEvent {
        AuditEvent::RotationFailed {
            secret: secret.into(),
            version: Some(version.into()),
            step: "put_pending".into(),
            error: "backend timed out".into(),
            will_retry: true,
        }
    }

    /// Two replicas' logs, interleaved in time.
    fn two_logs(dir: &tempfile::TempDir) -> Vec<PathBuf> {
        let manual = Trigger::Manual {
            by: "ana@laptop".into(),
        };
        let a = log(
            dir,
            "a.jsonl",
            "replica-a",
            &[
                (0, started("db", "v1", Trigger::Schedule)),
                (2, succeeded("db", "v1")),
                (4, started("api", "m1", manual)),
                (6, succeeded("api", "m1")),
            ],
        );
        let b = log(
            dir,
            "b.jsonl",
            "replica-b",
            &[
                (1, started("cache", "c1", Trigger::MaxAge)),
                (3, failed("cache", "c1")),
                (
                    5,
                    AuditEvent::RolledBack {
                        secret: "db".into(),
                        from: "v1".into(),
                        to: "v0".into(),
                        by: "ana@laptop".into(),
                    },
                ),
            ],
        );
        vec![a, b]
    }

    fn names(result: &QueryResult) -> Vec<(String, &'static str)> {
        result
            .entries
            .iter()
            .map(|e| (e.host.clone(), e.event.name()))
            .collect()
    }

    /// Reading only one secret's entries keeps every entry about it, in order, and passes
    /// over those about names it is a part of.
    #[test]
    fn one_secrets_entries_are_read_without_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let delivered = |secrets: &[&str]| AuditEvent::NotificationDelivered {
            id: "msg_1".into(),
            target: "hooks".into(),
            notification: "secret.rotated".into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            attempts: 1,
            status: 200,
        };
        let path = log(
            &dir,
            "a.jsonl",
            "h",
            &[
                (0, started("db", "v1", Trigger::Schedule)),
                (1, started("db-2", "w1", Trigger::Schedule)),
                (2, started("app/db", "x1", Trigger::Schedule)),
                (3, succeeded("db", "v1")),
                (4, delivered(&["app", "db"])),
                (5, failed("db-2", "w1")),
                (
                    6,
                    AuditEvent::RollbackStarted {
                        secret: "db".into(),
                        from: "v1".into(),
                        to: "v0".into(),
                        by: "db".into(),
                    },
                ),
            ],
        );
        // Not written by rekeyd: the name spelled with an escape (`\u0062` is `b`).
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(
            br#"{"seq":8,"ts":"2030-05-01T12:07:00Z","host":"h","pid":1,"prev":"0","event":"rotation_succeeded","secret":"d\u0062","version":"v0","duration_ms":1,"hash":"0"}"#,
        );
        text.push(b'\n');
        std::fs::write(&path, text).unwrap();

        let mut all = Vec::new();
        for_each_entry_except(&path, &[], |e| all.push(e)).unwrap();
        let mut about = Vec::new();
        for_each_entry_about(&path, "db", |e| about.push(e)).unwrap();
        let expected: Vec<&Entry> = all.iter().filter(|e| e.event.concerns("db")).collect();
        assert_eq!(expected.len(), 5);
        assert_eq!(about.iter().collect::<Vec<_>>(), expected);
        assert_eq!(
            about.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 4, 5, 7, 8],
            "file order and line numbers are kept"
        );
    }

    /// Skipped events' lines are passed over; every other entry is read, in order, and a
    /// skipped name spelled with an escape is read too.
    #[test]
    fn entries_of_skipped_events_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(
            &dir,
            "a.jsonl",
            "h",
            &[
                (0, started("db", "v1", Trigger::Schedule)),
                (
                    1,
                    AuditEvent::PendingStored {
                        secret: "db".into(),
                        version: "v1".into(),
                        outcome: "created".into(),
                        fingerprint: "f".into(),
                    },
                ),
                (2, succeeded("db", "v1")),
            ],
        );
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(
            br#"{"seq":4,"ts":"2030-05-01T12:03:00Z","host":"h","pid":1,"prev":"0","event":"pending_st\u006fred","secret":"db","version":"v2","outcome":"created","fingerprint":"f","hash":"0"}"#,
        );
        text.push(b'\n');
        std::fs::write(&path, text).unwrap();
        let mut read = Vec::new();
        for_each_entry_except(&path, &["pending_stored", "rotation_failed"], |e| {
            read.push((e.line, e.event.name()))
        })
        .unwrap();
        assert_eq!(
            read,
            [
                (1, "rotation_started"),
                (3, "rotation_succeeded"),
                (4, "pending_stored")
            ]
        );
    }

    #[test]
    fn unreadable_lines_say_why() {
        assert_eq!(parse(b"{\"seq\": 1,").unwrap_err(), "not JSON");
        assert_eq!(parse(b"garbage").unwrap_err(), "not JSON");
        let why = parse(br#"{"seq": 1}"#).unwrap_err();
        assert!(
            why.starts_with("not an audit entry (missing field"),
            "{why}"
        );
        let newer = br#"{"seq":1,"ts":"2030-05-01T12:00:00Z","host":"h","pid":1,"prev":"0","event":"from_the_future","hash":"0"}"#;
        let why = parse(newer).unwrap_err();
        assert!(
            why.starts_with("unknown event \"from_the_future\""),
            "{why}"
        );
    }

    #[test]
    fn two_logs_merge_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let paths = two_logs(&dir);
        let result = read_logs(&paths).unwrap();
        let minutes: Vec<_> = result.entries.iter().map(|e| e.ts).collect();
        assert_eq!(minutes, (0..7).map(at).collect::<Vec<_>>());
        assert_eq!(result.entries[1].host, "replica-b");
        assert_eq!(result.entries[1].source, paths[1]);
        assert_eq!(result.entries[1].line, 1);
        assert_eq!(result.entries[3].line, 2);
        assert_eq!(
            result.entries[0].event,
            started("db", "v1", Trigger::Schedule)
        );
        assert!(result.unreadable.is_empty());
    }

    #[test]
    fn every_rollback_event_is_manual_and_a_failed_rollback_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to, by) = ("v1".to_owned(), "v0".to_owned(), "ana@laptop".to_owned());
        let secret = "db".to_owned();
        let path = log(
            &dir,
            "a.jsonl",
            "replica-a",
            &[
                (
                    0,
                    AuditEvent::RollbackStarted {
                        secret: secret.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        by: by.clone(),
                    },
                ),
                (
                    1,
                    AuditEvent::RollbackFailed {
                        secret: secret.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        error: "refused".into(),
                    },
                ),
                (
                    2,
                    AuditEvent::RollbackStarted {
                        secret: secret.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        by: by.clone(),
                    },
                ),
                (
                    3,
                    AuditEvent::RolledBack {
                        secret,
                        from,
                        to,
                        by,
                    },
                ),
            ],
        );
        let outcome = |o: Outcome| {
            let filter = Filter {
                outcome: Some(o),
                ..Filter::default()
            };
            let result = query(&[&path], &filter).unwrap();
            result
                .entries
                .iter()
                .map(|e| e.event.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(outcome(Outcome::Failed), ["rollback_failed"]);
        assert_eq!(outcome(Outcome::RolledBack), ["rolled_back"]);
        assert_eq!(
            outcome(Outcome::Manual),
            [
                "rollback_started",
                "rollback_failed",
                "rollback_started",
                "rolled_back"
            ]
        );
    }

    #[test]
    fn filters_by_secret_time_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let paths = two_logs(&dir);

        let by_secret = query(
            &paths,
            &Filter {
                secret: Some("db".into()),
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(
            names(&by_secret),
            [
                ("replica-a".to_string(), "rotation_started"),
                ("replica-a".to_string(), "rotation_succeeded"),
                ("replica-b".to_string(), "rolled_back"),
            ]
        );

        // `since` is inclusive, `until` exclusive.
        let window = query(
            &paths,
            &Filter {
                since: Some(at(2)),
                until: Some(at(4)),
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(
            window.entries.iter().map(|e| e.ts).collect::<Vec<_>>(),
            [at(2), at(3)]
        );

        let outcome = |o: Outcome| {
            query(
                &paths,
                &Filter {
                    outcome: Some(o),
                    ..Filter::default()
                },
            )
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.event.name(), e.event.secret().unwrap().to_string()))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            outcome(Outcome::Succeeded),
            [
                ("rotation_succeeded", "db".to_string()),
                ("rotation_succeeded", "api".to_string()),
            ]
        );
        assert_eq!(
            outcome(Outcome::Failed),
            [("rotation_failed", "cache".to_string())]
        );
        assert_eq!(
            outcome(Outcome::RolledBack),
            [("rolled_back", "db".to_string())]
        );
        // Manual: the whole manual rotation (start and success) and the rollback.
        assert_eq!(
            outcome(Outcome::Manual),
            [
                ("rotation_started", "api".to_string()),
                ("rolled_back", "db".to_string()),
                ("rotation_succeeded", "api".to_string()),
            ]
        );

        // Filters combine.
        let both = query(
            &paths,
            &Filter {
                secret: Some("api".into()),
                outcome: Some(Outcome::Succeeded),
                since: Some(at(6)),
                until: None,
            },
        )
        .unwrap();
        assert_eq!(both.entries.len(), 1);
        assert_eq!(both.entries[0].ts, at(6));
    }

    #[test]
    fn table_has_aligned_rows_for_each_entry() {
        let dir = tempfile::tempdir().unwrap();
        let result = read_logs(&two_logs(&dir)).unwrap();
        let table = render_table(&result.entries);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 1 + 7);
        assert!(lines[0].starts_with("TIME"));
        let column = |heading: &str| lines[0].find(heading).unwrap();
        for line in &lines[1..] {
            // Every row's host starts under HOST and its event under EVENT.
            assert!(line[column("HOST")..].starts_with("replica-"), "{line}");
            assert!(!line[column("EVENT")..].starts_with(' '), "{line}");
        }
        let failed_row = lines
            .iter()
            .find(|l| l.contains("rotation_failed"))
            .unwrap();
        for cell in [
            "2030-05-01T12:03:00.000Z",
            "replica-b",
            "cache",
            "c1",
            "at put_pending: backend timed out (will retry)",
        ] {
            assert!(failed_row.contains(cell), "{failed_row}");
        }
        assert!(table.contains("manual by ana@laptop"));
    }

    #[test]
    fn json_is_an_array_of_flat_entries() {
        let dir = tempfile::tempdir().unwrap();
        let result = read_logs(&two_logs(&dir)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&result.entries)).unwrap();
        let array = json.as_array().unwrap();
        assert_eq!(array.len(), 7);
        assert_eq!(array[1]["event"], "rotation_started");
        assert_eq!(array[1]["secret"], "cache");
        assert_eq!(array[1]["host"], "replica-b");
        assert_eq!(array[1]["ts"], "2030-05-01T12:01:00.000Z");
        assert_eq!(array[1]["line"], 1);
        assert_eq!(array[1]["trigger"]["kind"], "max_age");
        let back = AuditEvent::deserialize(&array[1]).unwrap();
        assert_eq!(back, result.entries[1].event);
    }

    #[test]
    fn unknown_events_and_garbage_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(&dir, "a.jsonl", "h", &[(0, succeeded("db", "v1"))]);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "{{\"seq\":2,\"ts\":\"2030-05-01T12:01:00.000Z\",\"host\":\"h\",\"pid\":1,\"prev\":\"{GENESIS}\",\"event\":\"quantum_rekeyed\",\"secret\":\"db\",\"hash\":\"{GENESIS}\"}}\n"
        ));
        text.push_str("not json\n");
        std::fs::write(&path, text).unwrap();
        let result = read_logs(&[&path]).unwrap();
        assert_eq!(result.entries.len(), 1);
        assert_eq!(result.unreadable.len(), 2);
        assert_eq!(result.unreadable[0].line, 2);
        assert!(result.unreadable[0].reason.contains("quantum_rekeyed"));
        assert_eq!(result.unreadable[1].line, 3);

        // A query for one secret parses only the lines that name it, so it reports only
        // those of the unreadable ones.
        let about_db = query(
            &[&path],
            &Filter {
                secret: Some("db".into()),
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(about_db.entries.len(), 1);
        assert_eq!(about_db.unreadable.len(), 1);
        assert!(about_db.unreadable[0].reason.contains("quantum_rekeyed"));
    }

    /// A manual rotation's later steps count as manual in whichever log they are, and
    /// whatever the order the logs are given in (another replica may close it).
    #[test]
    fn manual_rotations_are_found_across_logs() {
        let dir = tempfile::tempdir().unwrap();
        let manual = Trigger::Manual { by: "ana".into() };
        let a = log(
            &dir,
            "a.jsonl",
            "replica-a",
            &[(0, started("db", "m1", manual))],
        );
        let b = log(&dir, "b.jsonl", "replica-b", &[(1, failed("db", "m1"))]);
        let filter = Filter {
            outcome: Some(Outcome::Manual),
            ..Filter::default()
        };
        for paths in [[&b, &a], [&a, &b]] {
            let found = query(&paths, &filter).unwrap();
            assert_eq!(
                names(&found),
                [
                    ("replica-a".to_string(), "rotation_started"),
                    ("replica-b".to_string(), "rotation_failed"),
                ]
            );
        }
    }

    #[test]
    fn control_characters_are_not_printed_raw() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(
            &dir,
            "a.jsonl",
            "h",
            &[(
                0,
                AuditEvent::RotationFailed {
                    secret: "db".into(),
                    version: None,
                    step: "promote".into(),
                    error: "line one\n\u{1b}[31mred".into(),
                    will_retry: false,
                },
            )],
        );
        let table = render_table(&read_logs(&[path]).unwrap().entries);
        assert_eq!(table.lines().count(), 2);
        assert!(!table.contains('\u{1b}'));
        assert!(table.contains("line one\\n"));
    }

    #[test]
    fn outcome_names_round_trip() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{outcome}\"")
            );
        }
        assert!("won".parse::<Outcome>().is_err());
    }
}
