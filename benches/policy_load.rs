//! `cargo bench --bench policy_load`: load and validate a policy of 100,000 secrets.
//!
//! Peers, in the same process on the same bytes: parsing the TOML into a plain
//! `toml::Table` with no validation (the floor any serde-based TOML loader pays), and
//! `toml::de::DeTable::parse`, the spanned tree rekeyd's checks walk, on one thread.
//! rekeyd reads a large policy in parts on every core (`src/policy/parts.rs`), so its
//! CPU time is printed beside its wall time. Prints the median of several runs, the
//! ratios, the heap the loaded policy holds and the most heap a load held at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes, so the memory a loaded policy holds is measured, not guessed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Counting is on only for the load whose memory is measured: two threads updating shared
/// counters on every allocation would slow the timed loads.
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator unchanged; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
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

/// CPU time of this process so far (user + system), from /proc/self/stat in clock ticks
/// (10 ms on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    let text = policy_text();
    std::fs::write(&path, &text).expect("write policy");

    let mut ours = Vec::new();
    let mut ours_cpu = Vec::new();
    let mut spanned = Vec::new();
    let mut peer = Vec::new();
    for _ in 0..RUNS {
        let (start, cpu) = (Instant::now(), cpu_time());
        let policy = rekeyd::policy::load(&path).expect("valid policy");
        ours.push(start.elapsed());
        ours_cpu.push(cpu_time() - cpu);
        assert_eq!(policy.secrets.len(), SECRETS);
        black_box(policy);

        let start = Instant::now();
        let text = std::fs::read_to_string(&path).unwrap();
        let tree = toml::de::DeTable::parse(&text).unwrap();
        black_box(&tree);
        drop(tree);
        spanned.push(start.elapsed());

        let start = Instant::now();
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        peer.push(start.elapsed());
        black_box(table);
    }
    // Memory, on one more load: the heap it holds when done, and the most it held at once
    // (counted from zero: what was allocated before is not freed during it).
    COUNTING.store(true, Ordering::SeqCst);
    let policy = rekeyd::policy::load(&path).expect("valid policy");
    COUNTING.store(false, Ordering::SeqCst);
    let (held, peak) = (LIVE.load(Ordering::SeqCst), PEAK.load(Ordering::SeqCst));
    black_box(&policy);

    let (ours, ours_cpu, spanned, peer) = (
        median(ours),
        median(ours_cpu),
        median(spanned),
        median(peer),
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "policy load, {SECRETS} secrets ({} KiB), median of {RUNS}, {threads} cores",
        text.len() / 1024
    );
    println!("{:<52} {:>10} {:>10}", "what", "wall", "cpu");
    println!(
        "{:<52} {:>8.1}ms {:>8.0}ms",
        "rekeyd policy::load (read, parse, validate, build)",
        ms(ours),
        ms(ours_cpu)
    );
    println!(
        "{:<52} {:>8.1}ms",
        "peer: toml::de::DeTable::parse (one thread)",
        ms(spanned)
    );
    println!(
        "{:<52} {:>8.1}ms",
        "peer: toml::from_str into toml::Table",
        ms(peer)
    );
    println!(
        "ratio rekeyd / DeTable::parse: {:.2}x; rekeyd / toml::Table: {:.2}x",
        ours.as_secs_f64() / spanned.as_secs_f64(),
        ours.as_secs_f64() / peer.as_secs_f64()
    );
    println!(
        "heap held by the loaded policy: {:.1} MiB ({} bytes per secret); most heap held during a load: {:.0} MiB",
        held as f64 / (1 << 20) as f64,
        held / SECRETS,
        peak as f64 / (1 << 20) as f64
    );
    println!("target (issue 8): under 250 ms");
}
