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
    /// Whether the line's bytes hash to it.
    intact: bool,
}

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

impl Seal<'_> {
    /// Whether the line's bytes are the ones that were hashed.
    pub(crate) fn intact(&self) -> bool {
        self.intact
    }
}

/// Checks a line's seal (the line given without its `\n`): the hash the line claims, and
/// whether its bytes hash to it. `None` if the line does not end in `,"hash":"<64 hex>"}`.
pub(crate) fn check_seal(line: &[u8]) -> Option<(Digest, bool)> {
    if line.len() < SEAL_LEN + 1 {
        return None;
    }
    let (body, seal) = line.split_at(line.len() - SEAL_LEN);
    let digits = seal.strip_prefix(SEAL_PREFIX)?.strip_suffix(SEAL_END)?;
    let claimed = lowercase_hex_digest(digits)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(body);
    ctx.update(b"}");
    Some((claimed, ctx.finish().as_ref() == claimed))
}

/// Splits the seal off a line (given without its `\n`) and recomputes the hash.
/// `None` if the line does not end in `,"hash":"<64 hex>"}`.
pub(crate) fn unseal(line: &[u8]) -> Option<Seal<'_>> {
    let (_, intact) = check_seal(line)?;
    let digits = &line[line.len() - SEAL_LEN + SEAL_PREFIX.len()..][..64];
    Some(Seal {
        claimed: std::str::from_utf8(digits).ok()?,
        intact,
    })
}

/// The digest written as 64 lowercase hex digits, or `None` for anything else (so two
/// digests compare equal exactly when their texts do).
pub(crate) fn lowercase_hex_digest(digits: &[u8]) -> Option<Digest> {
    /// Each byte's value as a lowercase hex digit, or 0x10 (a bit no digit has) if it is
    /// not one: a table and an OR per digit, no branch, since every line has two digests.
    const VALUE: [u8; 256] = {
        let mut table = [0x10; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    let digits: &[u8; 64] = digits.try_into().ok()?;
    let mut out = [0; 32];
    let mut invalid = 0;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (VALUE[pair[0] as usize], VALUE[pair[1] as usize]);
        invalid |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    (invalid & 0x10 == 0).then_some(out)
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

/// Parses `seq` and `prev` from a line; other keys are skipped unread. `None` for a line
/// that is not a JSON object with exactly one of each (a `u64`, and a string without
/// escapes), which is what serde_json decides.
pub(crate) fn head(line: &[u8]) -> Option<Head<'_>> {
    match plain_head(line) {
        Some(head) => Some(head),
        None => serde_json::from_slice(line).ok(),
    }
}

/// `seq`, and `prev` as a digest when it is one, of a line [`check_seal`] accepted.
/// The same as [`head`] gives, without reading the seal again.
pub(crate) fn sealed_head(line: &[u8]) -> Option<(u64, Option<Digest>)> {
    let body = &line[..line.len() - SEAL_LEN];
    match plain_fields(body, true) {
        Some((seq, prev)) => Some((seq, lowercase_hex_digest(prev))),
        None => head(line).map(|h| (h.seq, lowercase_hex_digest(h.prev.as_bytes()))),
    }
}

/// The head of a line written the way the writer writes lines: JSON without whitespace,
/// escapes or non-ASCII text, integers without sign, fraction or exponent, nesting at most
/// `MAX_DEPTH` deep. Every such line is JSON serde_json accepts, and this gives the same
/// `seq` and `prev` it would (including refusing a second `seq` or `prev`); any other
/// line gives `None` and is left to serde_json. One pass with nothing built: `audit
/// verify` reads a million lines against a floor of only hashing them.
fn plain_head(line: &[u8]) -> Option<Head<'_>> {
    let (seq, prev) = plain_fields(line, false)?;
    Some(Head {
        seq,
        prev: std::str::from_utf8(prev).ok()?,
    })
}

/// [`plain_head`]'s reading of `text`: a whole line, or with `sealed`, a line without its
/// seal, which [`check_seal`] found to be `,"hash":"<64 hex>"}`: one more plain member
/// and the closing brace, so the object may end after any top-level member.
fn plain_fields(text: &[u8], sealed: bool) -> Option<(u64, &[u8])> {
    let mut scan = Scan { line: text, at: 0 };
    scan.byte(b'{')?;
    let (mut seq, mut prev) = (None, None);
    loop {
        let key = scan.string()?;
        scan.byte(b':')?;
        match key {
            b"seq" if seq.is_none() => seq = Some(decimal(scan.integer()?)?),
            b"prev" if prev.is_none() => prev = Some(scan.string()?),
            b"seq" | b"prev" => return None,
            _ => scan.value(0)?,
        }
        if sealed && scan.at == text.len() {
            break;
        }
        match scan.next()? {
            b',' => {}
            b'}' if !sealed => break,
            _ => return None,
        }
    }
    if scan.at != text.len() {
        return None;
    }
    Some((seq?, prev?))
}

/// The value of ASCII digits, if it fits a `u64` (as `str::parse` would give it).
fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Deepest nesting [`plain_head`] follows (the writer's entries nest two deep).
const MAX_DEPTH: usize = 8;

/// A cursor over a line for [`plain_head`].
struct Scan<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.line.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// A string of printable ASCII without escapes; its contents.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let rest = &self.line[self.at..];
        let end = memchr::memchr(b'"', rest)?;
        let text = &rest[..end];
        // Folded rather than short-circuited, so the check runs on whole vectors.
        let plain = text
            .iter()
            .fold(true, |ok, &c| ok & (0x20..0x7f).contains(&c) & (c != b'\\'));
        if !plain {
            return None;
        }
        self.at += end + 1;
        Some(text)
    }

    /// Digits without a leading zero (unless the number is 0), then no fraction or
    /// exponent; its digits.
    fn integer(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while self.line.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.line[start..self.at];
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        if digits.is_empty() || leading_zero {
            return None;
        }
        if matches!(self.line.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(digits)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.line.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.line.get(self.at)? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.integer().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'{' if depth < MAX_DEPTH => {
                self.at += 1;
                if self.line.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.byte(b':')?;
                    self.value(depth + 1)?;
                    match self.next()? {
                        b',' => {}
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' if depth < MAX_DEPTH => {
                self.at += 1;
                if self.line.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    match self.next()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
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

    /// Events of several shapes: nested objects, arrays, numbers, `null`s and text that
    /// JSON has to escape.
    fn events() -> Vec<AuditEvent> {
        use crate::audit::Trigger;
        vec![
            event(),
            AuditEvent::RotationStarted {
                secret: "team-7/service-70/db-password".into(),
                backend: "primary".into(),
                version: "m20261125T023000.123456Z-0123456789abcdef".into(),
                slot: Some(Utc::now()),
                trigger: Trigger::Manual {
                    by: "alice@host".into(),
                },
            },
            AuditEvent::RotationFailed {
                secret: "s".into(),
                version: None,
                step: "put_pending".into(),
                error: "throttled: \"slow down\" \u{e9}".into(),
                will_retry: true,
            },
            AuditEvent::NotificationDelivered {
                id: "msg_1".into(),
                target: "hooks".into(),
                notification: "secret.rotated".into(),
                secrets: vec!["a".into(), "b".into()],
                attempts: 2,
                status: 200,
            },
            AuditEvent::DaemonStarted {
                version: "1.0".into(),
                pid: 99,
            },
        ]
    }

    fn serde_head(line: &[u8]) -> Option<(u64, String)> {
        serde_json::from_slice::<Head>(line)
            .ok()
            .map(|h| (h.seq, h.prev.to_owned()))
    }

    fn plain(line: &[u8]) -> Option<(u64, String)> {
        plain_head(line).map(|h| (h.seq, h.prev.to_owned()))
    }

    /// The writer's own lines are read without serde_json (that is the point), except
    /// where JSON had to escape text.
    #[test]
    fn the_writers_lines_take_the_plain_path() {
        for (i, event) in events().iter().enumerate() {
            let sealed = seal(40 + i as u64, Utc::now(), "host-a", 7, GENESIS, event).unwrap();
            let line = &sealed.line[..sealed.line.len() - 1];
            assert_eq!(serde_head(line), Some((40 + i as u64, GENESIS.to_owned())));
            let escaped = line.contains(&b'\\') || !line.is_ascii();
            assert_eq!(
                plain(line).is_some(),
                !escaped,
                "{}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(head(line).map(|h| h.seq), Some(40 + i as u64));
        }
    }

    /// Lines serde_json refuses, or reads differently, are never read the plain way.
    #[test]
    fn the_plain_path_refuses_what_serde_json_refuses() {
        let hex = "a".repeat(64);
        for line in [
            format!("{{\"seq\":1,\"prev\":\"{hex}\",\"seq\":2}}"),
            format!("{{\"seq\":1,\"prev\":\"{hex}\",\"prev\":\"x\"}}"),
            format!("{{\"seq\":01,\"prev\":\"{hex}\"}}"),
            format!("{{\"seq\":1.0,\"prev\":\"{hex}\"}}"),
            format!("{{\"seq\":1e3,\"prev\":\"{hex}\"}}"),
            format!("{{\"seq\":-1,\"prev\":\"{hex}\"}}"),
            format!("{{\"seq\":18446744073709551616,\"prev\":\"{hex}\"}}"),
            format!("{{\"seq\":1,\"prev\":\"{hex}\",\"x\":[1,}}"),
            format!("{{\"seq\":1,\"prev\":\"{hex}\"}}x"),
            format!(
                "{{\"seq\":1,\"prev\":\"{hex}\",\"n\":{}}}",
                "[".repeat(200) + &"]".repeat(200)
            ),
            "{\"seq\":1}".to_owned(),
            "{}".to_owned(),
        ] {
            assert_eq!(plain(line.as_bytes()), None, "{line}");
        }
        // Deep but within reach, and whitespace, are left to serde_json, which reads them.
        let deep = format!(
            "{{\"seq\":1,\"prev\":\"{hex}\",\"n\":{}}}",
            "[".repeat(20) + &"]".repeat(20)
        );
        assert_eq!(plain(deep.as_bytes()), None);
        assert_eq!(serde_head(deep.as_bytes()), Some((1, hex.clone())));
        let spaced = format!("{{ \"seq\": 1, \"prev\": \"{hex}\" }}");
        assert_eq!(head(spaced.as_bytes()).map(|h| h.seq), Some(1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever edits are made to a line, the plain reading is serde_json's or none.
        #[test]
        fn the_plain_path_agrees_with_serde_json(
            which in 0..5usize,
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), 0..3u8, 0..INTERESTING.len()),
                1..4,
            ),
        ) {
            let sealed = seal(9, Utc::now(), "host-a", 7, GENESIS, &events()[which]).unwrap();
            let mut line = sealed.line[..sealed.line.len() - 1].to_vec();
            for (at, kind, byte) in edits {
                let at = at.index(line.len() + 1);
                let byte = INTERESTING[byte];
                match kind {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => line[at] = byte,
                    _ if at < line.len() => { line.remove(at); }
                    _ => line.push(byte),
                }
            }
            if let Some(found) = plain(&line) {
                proptest::prop_assert_eq!(Some(found), serde_head(&line));
            }
            // Once the seal is checked, the head read without it is serde_json's too.
            if check_seal(&line).is_some() {
                let expected = serde_head(&line)
                    .map(|(seq, prev)| (seq, lowercase_hex_digest(prev.as_bytes())));
                proptest::prop_assert_eq!(sealed_head(&line), expected);
            }
        }
    }

    /// Bytes that matter to JSON, or to the plain reading.
    const INTERESTING: &[u8] = b"\"\\{}[],:019etrunflas-.E x\x01\x7f\xc3\xa9";
}
