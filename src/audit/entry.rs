//! The entry codec: how one event becomes one sealed line of bytes, and how a line's seal
//! (its trailing `"hash"`) is checked. The writer, the verifier and the query all go through
//! here, so the byte format is defined in exactly one place (see ADR 0003).

use chrono::{DateTime, SecondsFormat, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};

use super::AuditEvent;

/// The `prev` of the first entry: there is no entry before it.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What precedes the hex digest at the end of every line.
const SEAL_PREFIX: &[u8] = b",\"hash\":\"";
/// What follows the hex digest.
const SEAL_END: &[u8] = b"\"}";
/// Length of `,"hash":"<64 hex>"}`.
const SEAL_LEN: usize = SEAL_PREFIX.len() + 64 + SEAL_END.len();

/// The entry without its hash, in the order its keys are written.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: String,
    host: &'a str,
    /// Absent only when the event carries its own `pid` (see [`event_has_pid`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// One sealed line, ready to be written.
pub(crate) struct Sealed {
    /// The line's bytes, ending in `\n`.
    pub(crate) line: Vec<u8>,
    /// The entry's hash (hex).
    pub(crate) hash: String,
}

/// Whether the event has a `pid` field of its own. Such an event names the writing process
/// itself, so its `pid` doubles as the entry's and the key is written once, not twice.
fn event_has_pid(event: &AuditEvent) -> bool {
    matches!(event, AuditEvent::DaemonStarted { .. })
}

/// Formats a timestamp the way entries carry it: RFC 3339, UTC, milliseconds.
pub(crate) fn format_ts(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serializes and seals one entry.
pub(crate) fn seal(
    seq: u64,
    ts: DateTime<Utc>,
    host: &str,
    pid: u32,
    prev: &str,
    event: &AuditEvent,
) -> Result<Sealed, serde_json::Error> {
    let body = Body {
        seq,
        ts: format_ts(ts),
        host,
        pid: (!event_has_pid(event)).then_some(pid),
        prev,
        event,
    };
    let mut line = serde_json::to_vec(&body)?;
    // The hash covers exactly these bytes; nobody ever re-serializes to check it.
    let hash = crate::hex::encode(digest::digest(&digest::SHA256, &line).as_ref());
    debug_assert_eq!(line.last(), Some(&b'}'));
    line.pop();
    line.reserve(SEAL_LEN + 1);
    line.extend_from_slice(SEAL_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(SEAL_END);
    line.push(b'\n');
    Ok(Sealed { line, hash })
}

/// A line's seal, taken apart.
pub(crate) struct Seal<'a> {
    /// The hash the line claims for itself (64 lowercase hex digits).
    pub(crate) claimed: &'a str,
    /// The hash of the line's bytes, recomputed.
    pub(crate) computed: String,
}

impl Seal<'_> {
    /// Whether the line's bytes are the ones that were hashed.
    pub(crate) fn intact(&self) -> bool {
        self.claimed == self.computed
    }
}

/// Splits the seal off a line (given without its `\n`) and recomputes the hash.
/// `None` if the line does not end in `,"hash":"<64 hex>"}`.
pub(crate) fn unseal(line: &[u8]) -> Option<Seal<'_>> {
    if line.len() < SEAL_LEN + 1 {
        return None;
    }
    let (body, seal) = line.split_at(line.len() - SEAL_LEN);
    let digits = seal.strip_prefix(SEAL_PREFIX)?.strip_suffix(SEAL_END)?;
    if !digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let claimed = std::str::from_utf8(digits).ok()?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(body);
    ctx.update(b"}");
    let computed = crate::hex::encode(ctx.finish().as_ref());
    Some(Seal { claimed, computed })
}

/// The two fields the chain needs, parsed without building the rest of the entry.
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    /// The entry's sequence number.
    pub(crate) seq: u64,
    /// The previous entry's hash.
    #[serde(borrow)]
    pub(crate) prev: &'a str,
}

/// Parses `seq` and `prev` from a line; other keys are skipped unread.
pub(crate) fn head(line: &[u8]) -> Option<Head<'_>> {
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent::Promoted {
            secret: "db/password".into(),
            version: "v2".into(),
            previous: Some("v1".into()),
        }
    }

    #[test]
    fn sealed_line_has_the_documented_shape_and_checks() {
        let ts = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        let sealed = seal(1, ts, "h1", 42, GENESIS, &event()).unwrap();
        let text = String::from_utf8(sealed.line.clone()).unwrap();
        let expected_start = format!(
            "{{\"seq\":1,\"ts\":\"2030-01-02T03:04:05.678Z\",\"host\":\"h1\",\"pid\":42,\"prev\":\"{GENESIS}\",\"event\":\"promoted\",\"secret\":\"db/password\""
        );
        assert!(text.starts_with(&expected_start), "{text}");
        assert!(text.ends_with(&format!(",\"hash\":\"{}\"}}\n", sealed.hash)));

        // The hash is SHA-256 of the line without its seal, closed with `}`.
        let body = format!("{}}}", &text[..text.len() - 1 - SEAL_LEN]);
        let digest = digest::digest(&digest::SHA256, body.as_bytes());
        assert_eq!(sealed.hash, crate::hex::encode(digest.as_ref()));

        let line = &sealed.line[..sealed.line.len() - 1];
        let seal = unseal(line).unwrap();
        assert!(seal.intact());
        assert_eq!(seal.claimed, sealed.hash);
        let head = head(line).unwrap();
        assert_eq!((head.seq, head.prev), (1, GENESIS));
    }

    #[test]
    fn any_changed_byte_breaks_the_seal() {
        let sealed = seal(7, Utc::now(), "h", 1, GENESIS, &event()).unwrap();
        let line = String::from_utf8(sealed.line[..sealed.line.len() - 1].to_vec()).unwrap();
        let edited = line.replace("db/password", "db/passwore");
        assert_ne!(edited, line);
        assert!(!unseal(edited.as_bytes()).unwrap().intact());
        assert!(unseal(b"{\"seq\":1}").is_none());
    }

    #[test]
    fn daemon_started_writes_pid_once() {
        let ev = AuditEvent::DaemonStarted {
            version: "1.0".into(),
            pid: 99,
        };
        let sealed = seal(1, Utc::now(), "h", 99, GENESIS, &ev).unwrap();
        let text = String::from_utf8(sealed.line).unwrap();
        assert_eq!(text.matches("\"pid\"").count(), 1, "{text}");
        let back: AuditEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
    }
}
