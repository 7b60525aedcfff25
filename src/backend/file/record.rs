//! Store file format 2: every new state of a secret is appended as one self-checking line,
//! and a file reads as its last complete, intact line.
//!
//! A record is the state's compact JSON, one space, the lowercase hex SHA-256 of that JSON,
//! and `\n`. Compact JSON never holds a raw newline, so records split cleanly on `\n`, and
//! the checksum tells a whole record from the torn tail of an append that a crash cut
//! short: a reader skips back over such a tail to the record before it. Format 1 (one
//! pretty JSON document, ADR 0004) is still read, and written as format 2 on the next write.

use ring::digest::{SHA256, digest};

use super::SecretFile;

/// The format this rekeyd writes.
pub(super) const FORMAT: u32 = 2;
/// The whole-document format of ADR 0004, still read.
const LEGACY_FORMAT: u32 = 1;
/// Hex digits of a SHA-256.
const SUM_LEN: usize = 64;

/// A store file as read.
pub(super) struct Parsed {
    /// The secret's state: the last intact record.
    pub(super) file: SecretFile,
    pub(super) layout: Layout,
}

/// Where a store file's next write goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// Format 2: the last intact record ends at `end`; anything between it and `len` is a
    /// torn append, cut off before the next record is appended.
    Records { end: u64, len: u64 },
    /// Format 1: one document, replaced whole by the next write.
    Legacy,
}

/// The record of `file`'s state, ending in `\n`.
pub(super) fn encode(file: &SecretFile) -> Vec<u8> {
    debug_assert_eq!(
        file.format, FORMAT,
        "records are written in format {FORMAT}"
    );
    let mut line = serde_json::to_vec(file).expect("store files always serialize");
    let sum = checksum(&line);
    line.reserve(SUM_LEN + 2);
    line.push(b' ');
    line.extend_from_slice(sum.as_bytes());
    line.push(b'\n');
    line
}

/// Reads a store file: its last intact record, or a format 1 document.
///
/// A line whose checksum holds but which is no format 2 state is an error, not a torn tail:
/// falling back to an older record there would silently roll the secret back.
#[cfg(test)]
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    parse_tail(bytes, 0, bytes.len() as u64).expect("a whole file always decides")
}

/// Reads a store file from the end of `tail`, its bytes from `base` to its length `len`.
///
/// Usually the last record lies in the last few KiB, so a reader need not read (and copy)
/// the whole file. `None`: no intact record lies wholly in `tail` and it is not the whole
/// file — read more. For the whole file (`base` 0) the answer is always decided: its last
/// intact record, a format 1 document, or an error.
pub(super) fn parse_tail(tail: &[u8], base: u64, len: u64) -> Option<Result<Parsed, String>> {
    // Only newline-terminated lines are complete; a partial last line is torn.
    let mut end = memchr::memrchr(b'\n', tail).map_or(0, |i| i + 1);
    while end > 0 {
        let start = match memchr::memrchr(b'\n', &tail[..end - 1]) {
            Some(i) => i + 1,
            // The line may begin before the tail: only a whole file's first line is known
            // to be whole.
            None if base > 0 => return None,
            None => 0,
        };
        if let Some(json) = intact(&tail[start..end - 1]) {
            let at = base + start as u64;
            let read = serde_json::from_slice::<SecretFile>(json)
                .map_err(|e| format!("record at byte {at} is not a secret's state: {e}"))
                .and_then(|file| {
                    check_format(file.format, FORMAT)?;
                    Ok(Parsed {
                        file,
                        layout: Layout::Records {
                            end: base + end as u64,
                            len,
                        },
                    })
                });
            return Some(read);
        }
        end = start;
    }
    if base > 0 {
        return None;
    }
    // No intact record: a format 1 file (no line of a pretty document carries a checksum),
    // or a file with nothing readable in it.
    Some(parse_legacy(tail))
}

/// A format 1 document: the state is the same in both formats; the layout says how it
/// lies on disk, and the next write stores it as a format 2 record.
fn parse_legacy(bytes: &[u8]) -> Result<Parsed, String> {
    let mut file: SecretFile = serde_json::from_slice(bytes).map_err(|e| {
        format!("it holds no intact record and is no format {LEGACY_FORMAT} document: {e}")
    })?;
    check_format(file.format, LEGACY_FORMAT)?;
    file.format = FORMAT;
    Ok(Parsed {
        file,
        layout: Layout::Legacy,
    })
}

/// The JSON of `line` (without its `\n`) if its checksum matches.
fn intact(line: &[u8]) -> Option<&[u8]> {
    let split = line.len().checked_sub(SUM_LEN + 1)?;
    let (json, sum) = (&line[..split], &line[split + 1..]);
    (line[split] == b' ' && checksum(json).as_bytes() == sum).then_some(json)
}

fn checksum(json: &[u8]) -> String {
    crate::hex::encode(digest(&SHA256, json).as_ref())
}

fn check_format(found: u32, expected: u32) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "it has format {found}, this rekeyd reads formats {LEGACY_FORMAT} and {FORMAT}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::file::Sealed;
    use crate::backend::versions::StoredVersion;
    use crate::secret::{SecretName, Stage, VersionId};

    fn state(format: u32, ids: &[&str]) -> SecretFile {
        SecretFile {
            format,
            name: SecretName::new("app/db").unwrap(),
            key_id: "0011223344556677".to_owned(),
            versions: ids
                .iter()
                .map(|id| StoredVersion {
                    id: VersionId::new(id.repeat(32)),
                    created_at: chrono::Utc::now(),
                    stages: vec![Stage::Current],
                    value: Sealed {
                        nonce: "bm9uY2Ugd2l0aCBz".to_owned(),
                        ciphertext: "c2VhbGVkIGJ5dGVzIHdpdGggYSB0YWc=".to_owned(),
                    },
                })
                .collect(),
        }
    }

    fn ids(parsed: &Parsed) -> Vec<String> {
        parsed
            .file
            .versions
            .iter()
            .map(|v| v.id.to_string())
            .collect()
    }

    #[test]
    fn a_record_is_one_line_of_json_and_its_checksum() {
        let line = encode(&state(FORMAT, &["a"]));
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let text = std::str::from_utf8(&line).unwrap();
        let (json, sum) = text.trim_end().rsplit_once(' ').unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["format"], 2);
        assert_eq!(value["name"], "app/db");
        assert_eq!(
            sum,
            crate::hex::encode(digest(&SHA256, json.as_bytes()).as_ref())
        );
    }

    #[test]
    fn the_last_intact_record_wins() {
        let mut bytes = encode(&state(FORMAT, &["a"]));
        bytes.extend(encode(&state(FORMAT, &["a", "b"])));
        let parsed = parse(&bytes).unwrap();
        assert_eq!(ids(&parsed), ["a".repeat(32), "b".repeat(32)]);
        let len = bytes.len() as u64;
        assert_eq!(parsed.layout, Layout::Records { end: len, len });
    }

    #[test]
    fn a_torn_tail_reads_as_the_record_before_it() {
        let first = encode(&state(FORMAT, &["a"]));
        let second = encode(&state(FORMAT, &["a", "b"]));
        let end = first.len() as u64;
        // Cut anywhere inside the second record, its newline included.
        for cut in [1, second.len() / 2, second.len() - 1] {
            let bytes = [&first[..], &second[..cut]].concat();
            let parsed = parse(&bytes).unwrap();
            assert_eq!(ids(&parsed), ["a".repeat(32)], "cut at {cut}");
            let len = bytes.len() as u64;
            assert_eq!(parsed.layout, Layout::Records { end, len }, "cut at {cut}");
        }
        // Complete lines that are not intact: a flipped byte, garbage, zeros with newlines.
        let mut flipped = second.clone();
        flipped[10] ^= 0x20;
        for tail in [
            flipped,
            b"garbage\n".to_vec(),
            vec![0u8; 5000],
            b"\n\n".to_vec(),
        ] {
            let bytes = [&first[..], &tail[..]].concat();
            let parsed = parse(&bytes).unwrap();
            assert_eq!(ids(&parsed), ["a".repeat(32)]);
            assert_eq!(
                parsed.layout,
                Layout::Records {
                    end,
                    len: bytes.len() as u64
                }
            );
        }
    }

    #[test]
    fn a_format_1_document_is_read() {
        let bytes = serde_json::to_vec_pretty(&state(LEGACY_FORMAT, &["a", "b"])).unwrap();
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.layout, Layout::Legacy);
        assert_eq!(parsed.file.format, FORMAT, "written back as format 2");
        assert_eq!(ids(&parsed), ["a".repeat(32), "b".repeat(32)]);
    }

    #[test]
    fn an_intact_record_of_another_format_is_refused_not_skipped() {
        let mut bytes = encode(&state(FORMAT, &["a"]));
        let mut future = state(FORMAT, &["a", "b"]);
        future.format = 3;
        let json = serde_json::to_vec(&future).unwrap();
        bytes.extend_from_slice(&json);
        bytes.push(b' ');
        bytes.extend_from_slice(checksum(&json).as_bytes());
        bytes.push(b'\n');
        let err = parse(&bytes).err().expect("format 3");
        assert!(err.contains("format 3"), "{err}");
    }

    #[test]
    fn nothing_readable_is_an_error() {
        for bytes in [&b""[..], b"{\"format\":2", b"not json\n"] {
            let err = parse(bytes).err().expect("unreadable");
            assert!(err.contains("no intact record"), "{err}");
        }
    }

    #[test]
    fn a_tail_decides_only_with_a_whole_intact_record_in_it() {
        let mut bytes = Vec::new();
        for n in 1..=5 {
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            bytes.extend(encode(&state(FORMAT, &ids)));
        }
        let len = bytes.len() as u64;
        let whole = parse(&bytes).unwrap();
        // Every tail that holds the last record whole, and the newline before it, reads the
        // same as the whole file (without that newline the tail cannot know the line whole).
        let last_start = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        for base in 1..last_start {
            let parsed = parse_tail(&bytes[base..], base as u64, len)
                .unwrap_or_else(|| panic!("base {base} holds the last record"))
                .unwrap();
            assert_eq!(ids(&parsed), ids(&whole), "base {base}");
            assert_eq!(parsed.layout, whole.layout, "base {base}");
        }
        // A tail that cuts into the last record cannot decide, even with a torn tail after
        // the record (never mistaking a record's end for a whole record).
        for base in last_start..bytes.len() {
            assert!(
                parse_tail(&bytes[base..], base as u64, len).is_none(),
                "base {base}"
            );
        }
        let mut torn = bytes.clone();
        torn.extend_from_slice(b"{\"format\":2,\"na");
        let base = last_start + 1;
        assert!(parse_tail(&torn[base..], base as u64, torn.len() as u64).is_none());
        // A format 1 document is decided only from the whole file.
        let legacy = serde_json::to_vec_pretty(&state(LEGACY_FORMAT, &["a"])).unwrap();
        assert!(parse_tail(&legacy[1..], 1, legacy.len() as u64).is_none());
    }
}
