//! `cargo bench --bench audit_log`: the audit log's two hot paths against their floors,
//! measured in the same run on the same disk.
//!
//! 1. Durable appends from 64 concurrent writers with group commit, against the naive
//!    peer: one write + fsync per entry (what a log without group commit does).
//! 2. `audit verify` over N entries, against the floor of hashing the same bytes with
//!    ring's SHA-256 alone (no parsing, no chain checks).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use rekeyd::audit::{AuditEvent, AuditLog};

const WRITERS: usize = 64;
const APPENDS: usize = 20_000;
const VERIFY_ENTRIES: usize = 1_000_000;

fn event(i: usize) -> AuditEvent {
    AuditEvent::RotationSucceeded {
        secret: format!("team-{}/service-{i}/db-password", i % 50),
        version: format!("s20261125T023000Z-{i:016x}"),
        duration_ms: 12,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    // 1a. rekeyd: 64 writers, group commit.
    let path = dir.path().join("grouped.jsonl");
    let (ours, fsyncs) = runtime.block_on(async {
        let log = AuditLog::open(&path).await.expect("open");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..APPENDS).step_by(WRITERS) {
                    log.append(event(i)).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let elapsed = start.elapsed();
        let fsyncs = log.stats().fsyncs;
        log.close().await;
        (elapsed, fsyncs)
    });

    // 1b. Peer: the same lines, one write and one fsync each (fewer, to bound the run).
    let peer_count = 2_000;
    let line = format!("{}\n", serde_json::to_string(&event(1)).unwrap());
    let mut naive = std::fs::File::create(dir.path().join("naive.jsonl")).expect("create");
    let start = Instant::now();
    for _ in 0..peer_count {
        naive.write_all(line.as_bytes()).expect("write");
        naive.sync_data().expect("fsync");
    }
    let peer = start.elapsed();

    let ours_rate = APPENDS as f64 / ours.as_secs_f64();
    let peer_rate = peer_count as f64 / peer.as_secs_f64();
    println!("durable audit appends, {WRITERS} concurrent writers");
    println!("{:<46} {:>12} {:>10}", "what", "appends/s", "fsyncs");
    println!(
        "{:<46} {:>12.0} {:>10}",
        format!("rekeyd group commit ({APPENDS} appends)"),
        ours_rate,
        fsyncs
    );
    println!(
        "{:<46} {:>12.0} {:>10}",
        format!("peer: write+fsync per entry ({peer_count})"),
        peer_rate,
        peer_count
    );
    println!(
        "ratio rekeyd / peer: {:.1}x faster (target: at least 100,000 appends/s)",
        ours_rate / peer_rate
    );

    // 2. verify over VERIFY_ENTRIES, written once through the real writer.
    let big = dir.path().join("big.jsonl");
    runtime.block_on(async {
        let log = Arc::new(AuditLog::open(&big).await.expect("open"));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                for i in (w..VERIFY_ENTRIES).step_by(WRITERS) {
                    log.append(event(i)).await.expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        log.close().await;
    });
    let bytes = std::fs::read(&big).expect("read");
    let start = Instant::now();
    let report = rekeyd::audit::verify(&big).expect("verify");
    let verify = start.elapsed();
    assert!(report.problems.is_empty() && report.entries == VERIFY_ENTRIES as u64);
    let start = Instant::now();
    for line in bytes.split(|b| *b == b'\n') {
        black_box(ring::digest::digest(&ring::digest::SHA256, line));
    }
    let floor = start.elapsed();
    println!();
    println!(
        "audit verify, {VERIFY_ENTRIES} entries ({} MiB)",
        bytes.len() >> 20
    );
    println!(
        "{:<46} {:>10.0}ms",
        "rekeyd audit::verify (read, parse, chain)",
        verify.as_secs_f64() * 1e3
    );
    println!(
        "{:<46} {:>10.0}ms",
        "floor: ring SHA-256 of each line in memory",
        floor.as_secs_f64() * 1e3
    );
    println!(
        "ratio rekeyd / floor: {:.2}x (target: within 1.5x)",
        verify.as_secs_f64() / floor.as_secs_f64()
    );
}
