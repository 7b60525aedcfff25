//! `cargo bench --bench policy_load`: load and validate a policy of 100,000 secrets.
//!
//! Peer, in the same process on the same bytes: parsing the TOML into a plain
//! `toml::Table` with no validation — the floor any TOML-based loader pays. Prints the
//! median of several runs, the ratio to the peer, and the resident memory the loaded
//! policy holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes, so the memory a loaded policy holds is measured, not guessed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SECRETS: usize = 100_000;
const RUNS: usize = 5;

fn policy_text() -> String {
    let mut text = String::from(
        "[backends.local]\ntype = \"file\"\n\n[defaults]\nbackend = \"local\"\n\
         generator = { type = \"password\", length = 32 }\n\n",
    );
    let schedules = [
        "{ every = \"30d\" }",
        "{ every = \"7d\" }",
        "{ cron = \"30 2 * * *\", timezone = \"Europe/Berlin\" }",
        "{ cron = \"0 4 * * 1\", timezone = \"America/New_York\" }",
        "{ cron = \"15 3 1 * *\" }",
    ];
    for i in 0..SECRETS {
        text.push_str(&format!(
            "[[secrets]]\nname = \"team-{}/service-{i}/db-password\"\nschedule = {}\nowner = \"team-{}\"\n\n",
            i % 50,
            schedules[i % schedules.len()],
            i % 50
        ));
    }
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    let text = policy_text();
    std::fs::write(&path, &text).expect("write policy");

    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let policy = rekeyd::policy::load(&path).expect("valid policy");
        ours.push(start.elapsed());
        assert_eq!(policy.secrets.len(), SECRETS);
        black_box(policy);

        let start = Instant::now();
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        peer.push(start.elapsed());
        black_box(table);
    }
    let before = LIVE.load(Ordering::Relaxed);
    let policy = rekeyd::policy::load(&path).expect("valid policy");
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    black_box(&policy);

    let (ours, peer) = (median(ours), median(peer));
    println!(
        "policy load, {SECRETS} secrets ({} KiB), median of {RUNS}",
        text.len() / 1024
    );
    println!("{:<44} {:>10}", "what", "time");
    println!(
        "{:<44} {:>8.1}ms",
        "rekeyd policy::load (parse + validate)",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>8.1}ms",
        "peer: toml::from_str into toml::Table",
        peer.as_secs_f64() * 1e3
    );
    println!(
        "ratio rekeyd / peer: {:.2}x",
        ours.as_secs_f64() / peer.as_secs_f64()
    );
    println!(
        "heap held by the loaded policy: {:.1} MiB ({} bytes per secret)",
        held as f64 / (1 << 20) as f64,
        held / SECRETS
    );
    println!("target: load well under 1 s (issue 8: under 250 ms)");
}
