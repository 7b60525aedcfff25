//! Tampering with a real audit log: a log rekeyd wrote (`corpus/audit_read/rekeyd.jsonl`,
//! made by `rekeyd run --once`, `rotate --force` and `rollback`) with a list of edits
//! chosen by the fuzzer — byte flips, inserted and deleted bytes, truncation, and removed,
//! copied, swapped and moved lines.
//!
//! Asserts the verifier's promise (ADR 0003, `rekeyd audit verify`): anchored at the log's
//! recorded head, any change to the bytes is reported, and the first problem is on the
//! first line that differs (the line after the end, for lines cut from the end); without
//! an anchor, only a cut at a line boundary can pass, which is the documented reason
//! for anchors.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rekeyd::audit::{self, Anchor};

const LOG: &[u8] = include_bytes!("../corpus/audit_read/rekeyd.jsonl");

/// One change to the log's bytes; positions wrap around the current length.
#[derive(Arbitrary, Debug)]
enum Edit {
    /// XOR one byte with a non-zero mask.
    Flip { at: u16, mask: std::num::NonZeroU8 },
    /// Insert bytes.
    Insert { at: u16, bytes: Vec<u8> },
    /// Remove up to `len` bytes.
    Delete { at: u16, len: u8 },
    /// Cut the file short.
    Truncate { at: u16 },
    /// Remove a whole line.
    RemoveLine { line: u8 },
    /// Put a copy of a line before another one.
    CopyLine { line: u8, before: u8 },
    /// Exchange two lines.
    SwapLines { a: u8, b: u8 },
    /// Take a line out and put it back elsewhere.
    MoveLine { line: u8, before: u8 },
}

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    head: Anchor,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, LOG).expect("write");
        let report = audit::verify(&path).expect("verify");
        assert!(
            report.is_clean() && report.entries > 3,
            "the committed seed log no longer verifies; regenerate it (docs/fuzzing.md): {:?}",
            report.problems
        );
        let (seq, hash) = report.head.expect("a head");
        Scratch {
            _dir: dir,
            path,
            head: Anchor { seq, hash },
        }
    })
}

fuzz_target!(|edits: Vec<Edit>| {
    let s = scratch();
    let mut bytes = LOG.to_vec();
    for edit in edits.iter().take(8) {
        apply(&mut bytes, edit);
    }
    std::fs::write(&s.path, &bytes).expect("write the scratch log");

    let anchored = audit::verify_anchored(&s.path, Some(&s.head)).expect("verify");
    let plain = audit::verify(&s.path).expect("verify");
    if bytes == LOG {
        assert!(anchored.is_clean() && plain.is_clean(), "{anchored:?}");
        return;
    }
    let first = first_changed_line(LOG, &bytes);
    let reported = anchored.problems.iter().map(|p| p.line).min();
    assert_eq!(
        reported,
        Some(first),
        "changed from line {first}, problems: {:#?}",
        anchored.problems
    );
    if plain.is_clean() {
        let cut_at_a_line = LOG.starts_with(&bytes) && (bytes.is_empty() || bytes.ends_with(b"\n"));
        assert!(
            cut_at_a_line,
            "an edited log verified clean without an anchor"
        );
    } else {
        assert_eq!(plain.problems.iter().map(|p| p.line).min(), Some(first));
    }
});

/// The 1-based line (of `edited`) where `edited` first differs from `original`.
fn first_changed_line(original: &[u8], edited: &[u8]) -> usize {
    let mut a = original.split_inclusive(|&b| b == b'\n');
    let mut b = edited.split_inclusive(|&b| b == b'\n');
    let mut line = 1;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            _ => return line,
        }
    }
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: u16, len: usize| usize::from(i) % (len + 1);
    match edit {
        Edit::Flip { at: i, mask } => {
            if !bytes.is_empty() {
                let i = usize::from(*i) % bytes.len();
                bytes[i] ^= mask.get();
            }
        }
        Edit::Insert { at: i, bytes: new } => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, new.iter().copied().take(512));
        }
        Edit::Delete { at: i, len } => {
            let i = at(*i, bytes.len());
            let end = (i + usize::from(*len)).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Truncate { at: i } => bytes.truncate(at(*i, bytes.len())),
        Edit::RemoveLine { line } => edit_lines(bytes, |l| {
            let i = usize::from(*line) % l.len();
            l.remove(i);
        }),
        Edit::CopyLine { line, before } => edit_lines(bytes, |l| {
            let copy = l[usize::from(*line) % l.len()].clone();
            let to = usize::from(*before) % (l.len() + 1);
            l.insert(to, copy);
        }),
        Edit::SwapLines { a, b } => edit_lines(bytes, |l| {
            let n = l.len();
            l.swap(usize::from(*a) % n, usize::from(*b) % n);
        }),
        Edit::MoveLine { line, before } => edit_lines(bytes, |l| {
            let moved = l.remove(usize::from(*line) % l.len());
            let to = usize::from(*before) % (l.len() + 1);
            l.insert(to, moved);
        }),
    }
}

/// Runs `f` on the lines (each with its `\n`, if it has one) when there is at least one.
fn edit_lines(bytes: &mut Vec<u8>, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut l = lines(bytes);
    if l.is_empty() {
        return;
    }
    f(&mut l);
    *bytes = l.concat();
}
