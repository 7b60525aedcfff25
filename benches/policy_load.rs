//! `cargo bench --bench policy_load`: load and validate a policy of 100,000 secrets.
//!
//! Peers, in the same process on the same bytes: parsing the TOML into a plain
//! `toml::Table` with no validation (the floor any serde-based TOML loader pays), and
//! `toml::de::DeTable::parse`, the spanned tree rekeyd's checks walk, on one thread.
//! rekeyd reads a large policy in parts on every core (`src/policy/parts.rs`), so its
//! CPU time is printed beside its wall time, and each run times the load once more held
//! to one core (CPU affinity, which the loader's thread count follows): what a one-core
//! machine, or a machine whose other cores are busy, would see. Prints
//! the median of several runs, the ratios, the heap the loaded policy holds and the most
//! heap a load held at once.

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

/// CPU time of this process so far (user + system, every thread), to the nanosecond
/// (`libc` is a dependency on Linux with glibc, where this bench runs).
fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `f` with this thread, and any thread it starts, held to the core it is running
/// on.
fn on_one_core<T>(f: impl FnOnce() -> T) -> T {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: each call gets a zeroed (valid) cpu_set_t of the size passed.
    let all = unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size, &mut all),
            0,
            "sched_getaffinity"
        );
        let cpu = usize::try_from(libc::sched_getcpu()).expect("sched_getcpu");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size, &one),
            0,
            "hold to core {cpu}"
        );
        all
    };
    assert_eq!(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        1,
        "held to one core, the loader must see one"
    );
    let out = f();
    // SAFETY: `all` is the set sched_getaffinity filled in above.
    assert_eq!(
        unsafe { libc::sched_setaffinity(0, size, &all) },
        0,
        "release"
    );
    out
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
    let mut one = Vec::new();
    let mut one_cpu = Vec::new();
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

        // The loader sizes its threads by the cores it may use: held to one, it uses one.
        let (start, cpu) = (Instant::now(), cpu_time());
        let policy = on_one_core(|| rekeyd::policy::load(&path).expect("valid policy"));
        one.push(start.elapsed());
        one_cpu.push(cpu_time() - cpu);
        assert_eq!(policy.secrets.len(), SECRETS);
        black_box(policy);
    }
    // Memory, on one more load: the heap it holds when done, and the most it held at once
    // (counted from zero: what was allocated before is not freed during it).
    COUNTING.store(true, Ordering::SeqCst);
    let policy = rekeyd::policy::load(&path).expect("valid policy");
    COUNTING.store(false, Ordering::SeqCst);
    let (held, peak) = (LIVE.load(Ordering::SeqCst), PEAK.load(Ordering::SeqCst));
    black_box(&policy);
    drop(policy);

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ours, ours_cpu, spanned, peer, one, one_cpu) = (
        median(ours),
        median(ours_cpu),
        median(spanned),
        median(peer),
        median(one),
        median(one_cpu),
    );
    println!(
        "policy load, {SECRETS} secrets ({} KiB), median of {RUNS}, {threads} cores",
        text.len() / 1024
    );
    println!("{:<64} {:>10} {:>10}", "what", "wall", "cpu");
    println!(
        "{:<64} {:>8.1}ms {:>8.0}ms",
        format!("rekeyd policy::load (read, parse, validate, build), {threads} threads"),
        ms(ours),
        ms(ours_cpu)
    );
    println!(
        "{:<64} {:>8.1}ms {:>8.0}ms",
        "rekeyd policy::load held to one core",
        ms(one),
        ms(one_cpu)
    );
    println!(
        "{:<64} {:>8.1}ms",
        "peer: toml::de::DeTable::parse (one thread)",
        ms(spanned)
    );
    println!(
        "{:<64} {:>8.1}ms",
        "peer: toml::from_str into toml::Table",
        ms(peer)
    );
    println!(
        "ratio rekeyd / DeTable::parse: {:.2}x; rekeyd / toml::Table: {:.2}x",
        ours.as_secs_f64() / spanned.as_secs_f64(),
        ours.as_secs_f64() / peer.as_secs_f64()
    );
    println!(
        "ratio on one core, rekeyd / DeTable::parse: {:.2}x",
        one.as_secs_f64() / spanned.as_secs_f64()
    );
    println!(
        "heap held by the loaded policy: {:.1} MiB ({} bytes per secret); most heap held during a load: {:.0} MiB",
        held as f64 / (1 << 20) as f64,
        held / SECRETS,
        peak as f64 / (1 << 20) as f64
    );
    println!("target (issue 8): under 250 ms, also on one core");
}
