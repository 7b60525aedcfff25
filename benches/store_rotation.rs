//! `cargo bench --bench store_rotation`: rotations per second on the embedded file store
//! with durable audit entries, against the floor of the same number of fsync'd writes done
//! directly with `std::fs`, in the same run on the same disk.
//!
//! rekeyd's side is the daemon's own wiring (`daemon::open_runtime`: file store, audit log,
//! fingerprint key) and `Engine::rotate_manually` per secret, in a tempdir on the real
//! disk: one rotation at a time, and 8 at a time (the daemon's default `concurrency`).
//!
//! The floor needs the number of fsyncs a rotation makes. The audit log counts its own;
//! the store's are counted with `strace -c` on this same binary in a calibration run (two
//! child runs that differ only in the number of rotations), so the floor follows the code
//! if the code changes. The floor then makes that many writes of the same average size,
//! each appended to a file and followed by `fsync`, with the same concurrency.
//!
//! The store appends a record per write and compacts a file that reaches its bound (ADR
//! 0006). So that the measured rotations include compactions at their steady-state rate,
//! seeding first finds the compaction period (rotating one secret until its file shrinks
//! twice) and then rotates each secret a different number of extra times, spreading the
//! files evenly over that period.
//!
//! Each round rotates every secret once, in chunks of 50 that alternate with the floor's
//! share of the same chunk (this machine's fsync latency drifts with other load, so both
//! sides must see the same disk). Each round's ratio compares its two sides; the median
//! and range of those ratios are reported, with the median round's rates.
//! `REKEYD_BENCH_N` (secrets, default 500) and `REKEYD_BENCH_ROUNDS` (default 3) change
//! the run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rekeyd::daemon::{Notifications, open_runtime};
use rekeyd::policy::{Policy, SecretPolicy};
use rekeyd::rotation::Engine;

/// The daemon's default `concurrency`.
const DAEMON_CONCURRENCY: usize = 8;
/// Secrets and measured rounds of the calibration child.
const CALIBRATION_SECRETS: usize = 20;
const CALIBRATION_ROUNDS: usize = 5;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench/secret-{i:05}")).collect()
}

fn policy(n: usize, dir: &Path) -> Policy {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[backends.local]\ntype = \"file\"\n\n\
         [defaults]\nbackend = \"local\"\ngrace = \"0s\"\nschedule = {{ every = \"30d\" }}\n\
         generator = {{ type = \"password\", length = 32 }}\n\n",
        dir.display()
    );
    for name in names(n) {
        text.push_str(&format!("[[secrets]]\nname = \"{name}\"\n"));
    }
    rekeyd::policy::parse(&dir.join("bench.toml"), &text).expect("bench policy")
}

/// A store of `n` secrets, each rotated twice already, so every measured rotation is the
/// steady state: put, promote, and dropping the version that lost its last stage; and with
/// their files spread over the compaction period.
struct Store {
    _dir: tempfile::TempDir,
    policy: Arc<Policy>,
    engine: Arc<Engine>,
    /// Rotations from one compaction of a secret's file to the next.
    compaction_period: usize,
}

impl Store {
    async fn seeded(n: usize, concurrency: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (policy, engine) = open_runtime(policy(n, dir.path()), None, Notifications::Off)
            .await
            .expect("runtime");
        let mut store = Self {
            _dir: dir,
            policy,
            engine,
            compaction_period: 0,
        };
        for _ in 0..2 {
            store.rotate_all(concurrency).await;
        }
        store.compaction_period = store.find_compaction_period().await;
        // Secret i rotated i/n of a period more: files at every point of their cycle.
        let n = store.policy.secrets.len();
        let extra = |i: usize| i * store.compaction_period / n;
        for r in 0..store.compaction_period {
            let behind: Vec<SecretPolicy> = (0..n)
                .filter(|&i| extra(i) > r)
                .map(|i| store.policy.secrets[i].clone())
                .collect();
            store.rotate(&behind, concurrency).await;
        }
        store
    }

    /// Rotates the first secret until its file has shrunk (been compacted) twice; the
    /// rotations between the two shrinks.
    async fn find_compaction_period(&self) -> usize {
        let first = &self.policy.secrets[..1];
        let path = rekeyd::backend::file::secret_file(&self.store_dir(), &first[0].name);
        let len = || std::fs::metadata(&path).expect("store file").len();
        let mut shrinks = Vec::new();
        for rotation in 0..10_000 {
            let before = len();
            self.rotate(first, 1).await;
            if len() < before {
                shrinks.push(rotation);
                if shrinks.len() == 2 {
                    return shrinks[1] - shrinks[0];
                }
            }
        }
        panic!("no compaction in 10,000 rotations of one secret")
    }

    /// The file store's directory.
    fn store_dir(&self) -> std::path::PathBuf {
        self.policy
            .backends
            .values()
            .find_map(|b| match b {
                rekeyd::policy::BackendConfig::File(f) => Some(f.path.clone()),
                _ => None,
            })
            .expect("the bench policy has a file store")
    }

    /// The secrets' store files.
    fn files(&self) -> impl Iterator<Item = std::path::PathBuf> {
        std::fs::read_dir(self.store_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| e.path())
    }

    /// Rotates every secret once, `concurrency` at a time.
    async fn rotate_all(&self, concurrency: usize) -> Duration {
        self.rotate(&self.policy.secrets, concurrency).await
    }

    /// Rotates each of `secrets` once, `concurrency` at a time.
    async fn rotate(&self, secrets: &[SecretPolicy], concurrency: usize) -> Duration {
        let engine = Arc::clone(&self.engine);
        let started = Instant::now();
        run_concurrently(secrets.to_vec(), concurrency, move |secret| {
            let engine = Arc::clone(&engine);
            async move {
                engine
                    .rotate_manually(&secret, "bench", true)
                    .await
                    .expect("rotation");
            }
        })
        .await;
        started.elapsed()
    }

    /// Bytes of the audit log, and of the average record (one store write: a file's last
    /// line).
    fn bytes(&self) -> (u64, u64) {
        let audit = std::fs::metadata(&self.policy.daemon.audit_log).map_or(0, |m| m.len());
        let sizes: Vec<u64> = self
            .files()
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| {
                let body = bytes.strip_suffix(b"\n")?;
                let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                Some((bytes.len() - start) as u64)
            })
            .collect();
        (audit, sizes.iter().sum::<u64>() / sizes.len().max(1) as u64)
    }
}

/// Runs `work` for every item, `concurrency` at a time (as the daemon's dispatcher does).
async fn run_concurrently<T, F, Fut>(items: Vec<T>, concurrency: usize, work: F)
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (items, next, work) = (Arc::clone(&items), Arc::clone(&next), Arc::clone(&work));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                work(item.clone()).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
}

/// The calibration child: seed a store, rotate every secret `rounds` times one at a time,
/// print how many fsyncs the audit log made.
fn calibration_child(rounds: usize) {
    let runtime = runtime();
    runtime.block_on(async {
        let store = Store::seeded(CALIBRATION_SECRETS, 1).await;
        for _ in 0..rounds {
            store.rotate_all(1).await;
        }
        let audit = store.engine.audit().stats().fsyncs;
        store.engine.audit().close().await;
        println!("audit_fsyncs={audit}");
    });
}

/// fsync + fdatasync calls of a calibration child, counted by strace; and the audit's.
fn strace_child(rounds: usize) -> (u64, u64) {
    let exe = std::env::current_exe().expect("own path");
    let summary = tempfile::NamedTempFile::new().expect("strace output file");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(summary.path())
        .arg(&exe)
        .args(["--calibrate", &rounds.to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run strace ({e}): install it with `apt-get install strace`")
        });
    assert!(
        out.status.success(),
        "calibration child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("audit_fsyncs="))
        .and_then(|v| v.trim().parse().ok())
        .expect("the child prints its audit fsyncs");
    // strace -c: "% time  seconds  usecs/call  calls  errors  syscall" rows.
    let table = std::fs::read_to_string(summary.path()).expect("strace summary");
    let calls = table
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            (name == "fsync" || name == "fdatasync")
                .then(|| cols.get(3)?.parse::<u64>().ok())
                .flatten()
        })
        .sum();
    (calls, audit)
}

/// fsyncs one rotation makes, from two strace runs that differ only in rounds: the
/// store's and the audit log's.
fn fsyncs_per_rotation() -> (f64, f64) {
    let (base, base_audit) = strace_child(0);
    let (more, more_audit) = strace_child(CALIBRATION_ROUNDS);
    let rotations = (CALIBRATION_SECRETS * CALIBRATION_ROUNDS) as f64;
    let audit = (more_audit - base_audit) as f64 / rotations;
    let total = (more - base) as f64 / rotations;
    println!(
        "calibration (strace -c, {rotations} sequential rotations): {total:.2} fsyncs per rotation \
         = {:.2} store + {audit:.2} audit",
        total - audit
    );
    (total - audit, audit)
}

/// The floor: `writes` appends of `size` bytes, each followed by fsync, split over
/// `concurrency` threads with a file each.
fn floor(dir: &Path, writes: u64, size: u64, concurrency: usize) -> Duration {
    let block = vec![b'x'; size as usize];
    let per_thread = writes.div_ceil(concurrency as u64);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..concurrency {
            let block = &block;
            let path = dir.join(format!("floor-{t}"));
            scope.spawn(move || {
                let mut file = std::fs::File::create(path).expect("floor file");
                for _ in 0..per_thread {
                    file.write_all(block).expect("write");
                    file.sync_all().expect("fsync");
                }
            });
        }
    });
    started.elapsed()
}

/// What one rotation writes, for the second floor.
#[derive(Clone, Copy, Default)]
struct Writes {
    /// Store writes (a record appended to the secret's file, then fdatasync) and their size.
    records: usize,
    record_size: u64,
    /// One store write in this many is a compaction instead: the record written whole to a
    /// temporary file, fsync, rename, directory fsync.
    compact_every: usize,
    /// Audit appends followed by fdatasync, and their size.
    appends: usize,
    line_size: u64,
}

/// The second floor: `rotations` times the very file operations a rotation needs (records
/// appended to a secret's file with the store's share of compactions, appends of
/// audit-line size), done directly, `concurrency` threads at a time. Against it, the ratio
/// is rekeyd's own cost; against [`floor`], it also includes the cost of the store's format.
fn same_operations(dir: &Path, rotations: usize, writes: Writes, concurrency: usize) -> Duration {
    let per_thread = rotations.div_ceil(concurrency);
    let (record, line) = (
        vec![b'y'; writes.record_size as usize],
        vec![b'z'; writes.line_size as usize],
    );
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..concurrency {
            let (record, line) = (&record, &line);
            scope.spawn(move || {
                let mut log =
                    std::fs::File::create(dir.join(format!("same-{t}.log"))).expect("floor log");
                let tmp = dir.join(format!("same-{t}.tmp"));
                // Threads start at different points of the compaction cycle.
                let mut store_writes = t * writes.compact_every / concurrency;
                for r in 0..per_thread {
                    let target = dir.join(format!("same-{t}-{}.json", r % CHUNK));
                    // Interleaved as a rotation does: an audit entry, then a store write.
                    for i in 0..writes.appends.max(writes.records) {
                        if i < writes.appends {
                            log.write_all(line).expect("append");
                            log.sync_data().expect("fdatasync");
                        }
                        if i < writes.records {
                            store_writes += 1;
                            if store_writes.is_multiple_of(writes.compact_every.max(1)) {
                                let mut out = std::fs::File::create(&tmp).expect("temp");
                                out.write_all(record).expect("write");
                                out.sync_all().expect("fsync");
                                std::fs::rename(&tmp, &target).expect("rename");
                                std::fs::File::open(dir)
                                    .and_then(|d| d.sync_all())
                                    .expect("directory fsync");
                            } else {
                                let mut out = std::fs::OpenOptions::new()
                                    .create(true)
                                    .append(true)
                                    .open(&target)
                                    .expect("store file");
                                out.write_all(record).expect("append");
                                out.sync_data().expect("fdatasync");
                            }
                        }
                    }
                }
            });
        }
    });
    started.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// How long one of the floor's fsync'd writes took, as each thread saw it: how fast the
/// disk was during the round.
fn fsync_us(round: &Round, concurrency: usize) -> f64 {
    round.floor.as_secs_f64() * 1e6 * concurrency as f64 / round.floor_writes.max(1) as f64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One round at one concurrency: rekeyd and the floor, in alternating chunks.
#[derive(Default)]
struct Round {
    rekeyd: Duration,
    floor: Duration,
    same: Duration,
    /// fsyncs rekeyd made (fewer than the floor's writes when audit entries share one).
    fsyncs: u64,
    floor_writes: u64,
    bytes: u64,
}

/// Secrets per chunk.
const CHUNK: usize = 50;

/// fsyncs per rotation, counted by the calibration.
#[derive(Clone, Copy)]
struct Count {
    store: f64,
    audit: f64,
}

fn round(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    count: Count,
    floor_dir: &Path,
    concurrency: usize,
) -> Round {
    let mut round = Round::default();
    // What the floors repeat: the writes and their sizes of the last rekeyd chunk.
    let mut last = (0u64, 0u64, Writes::default());
    for (i, chunk) in store.policy.secrets.chunks(CHUNK).enumerate() {
        let mut floors = |last: (u64, u64, Writes)| {
            round.floor += floor(floor_dir, last.0, last.1, concurrency);
            round.same += same_operations(floor_dir, chunk.len(), last.2, concurrency);
        };
        let floor_first = i % 2 == 1;
        if floor_first {
            floors(last);
        }
        let audit_before = store.engine.audit().stats().fsyncs;
        let (log_before, _) = store.bytes();
        round.rekeyd += runtime.block_on(store.rotate(chunk, concurrency));
        let audit = store.engine.audit().stats().fsyncs - audit_before;
        let (log_after, record_size) = store.bytes();
        let rotations = chunk.len() as f64;
        // Each store fsync but a compaction's second (of the directory) writes one record.
        let store_fsyncs = (count.store * rotations).round() as u64;
        let bytes = log_after - log_before + record_size * store_fsyncs;
        // The floor: every durable write a rotation needs, whether or not group commit let
        // rekeyd share an fsync with another rotation's.
        let writes = ((count.store + count.audit) * rotations).round() as u64;
        round.fsyncs += store_fsyncs + audit;
        round.floor_writes += writes;
        round.bytes += bytes;
        let entries = (count.audit * rotations).round() as u64;
        let same = Writes {
            // put_pending and promote.
            records: 2,
            record_size,
            compact_every: 2 * store.compaction_period,
            appends: count.audit.round() as usize,
            line_size: (log_after - log_before) / entries.max(1),
        };
        last = (writes, bytes / writes.max(1), same);
        if !floor_first {
            floors(last);
        }
    }
    round
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--calibrate") {
        calibration_child(args[i + 1].parse().expect("rounds"));
        return;
    }
    let env = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("REKEYD_BENCH_N", 500);
    let rounds = env("REKEYD_BENCH_ROUNDS", 3).max(1);
    let (store, audit) = fsyncs_per_rotation();
    let count = Count { store, audit };

    let runtime = runtime();
    let store = runtime.block_on(Store::seeded(n, DAEMON_CONCURRENCY));
    let floor_dir = tempfile::tempdir().expect("tempdir");
    let mut results: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    for r in 0..rounds {
        for concurrency in [1, DAEMON_CONCURRENCY] {
            let done = round(&runtime, &store, count, floor_dir.path(), concurrency);
            println!(
                "round {} in flight {concurrency}: rekeyd {:.0} ms ({} fsyncs), floor {:.0} ms \
                 ({} writes, {:.0} us each per thread)",
                r + 1,
                done.rekeyd.as_secs_f64() * 1e3,
                done.fsyncs,
                done.floor.as_secs_f64() * 1e3,
                done.floor_writes,
                fsync_us(&done, concurrency),
            );
            results.entry(concurrency).or_default().push(done);
        }
    }
    runtime.block_on(store.engine.audit().close());

    println!();
    println!(
        "{n} secrets rotated per round on the file store with a durable audit log; median of {rounds}"
    );
    println!(
        "{:<10} {:>13} {:>12} {:>11} {:>13} {:>12} {:>9} {:>16}",
        "in flight",
        "rekeyd rot/s",
        "floor rot/s",
        "fsyncs/rot",
        "floor wr/rot",
        "bytes/write",
        "fsync us",
        "ratio (range)"
    );
    for (concurrency, rounds) in &results {
        let rate = |f: fn(&Round) -> Duration| {
            n as f64 / median(rounds.iter().map(f).collect()).as_secs_f64()
        };
        let total = |f: fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
        let rotations = (n * rounds.len()) as f64;
        let mut fsync: Vec<f64> = rounds.iter().map(|r| fsync_us(r, *concurrency)).collect();
        fsync.sort_by(f64::total_cmp);
        println!(
            "{:<10} {:>13.0} {:>12.0} {:>11.2} {:>13.2} {:>12} {:>9.0} {:>16}",
            concurrency,
            rate(|r| r.rekeyd),
            rate(|r| r.floor),
            total(|r| r.fsyncs) as f64 / rotations,
            total(|r| r.floor_writes) as f64 / rotations,
            total(|r| r.bytes) / total(|r| r.floor_writes).max(1),
            fsync[fsync.len() / 2],
            ratios(rounds, |r| r.floor),
        );
    }
    println!(
        "fsync us: one floor write's time per thread (the disk's speed in that round); ratio = \
         rekeyd time / floor time, median of the rounds' own ratios (target: within 1.3x)"
    );
    println!();
    println!(
        "the same file operations done directly (2 records appended per rotation, one store \
         write in {} a compaction by rename; {:.0} audit appends)",
        2 * store.compaction_period,
        count.audit
    );
    println!(
        "{:<10} {:>13} {:>16} {:>16}",
        "in flight", "direct rot/s", "rekeyd / direct", "direct / floor"
    );
    for (concurrency, rounds) in &results {
        let same = median(rounds.iter().map(|r| r.same).collect());
        let mut by_format: Vec<f64> = rounds
            .iter()
            .map(|r| r.same.as_secs_f64() / r.floor.as_secs_f64())
            .collect();
        by_format.sort_by(f64::total_cmp);
        println!(
            "{:<10} {:>13.0} {:>16} {:>15.2}x",
            concurrency,
            n as f64 / same.as_secs_f64(),
            ratios(rounds, |r| r.same),
            by_format[by_format.len() / 2],
        );
    }
}

/// rekeyd's time over `other`'s, per round (each round's sides ran interleaved on the same
/// disk): the median, and the range.
fn ratios(rounds: &[Round], other: fn(&Round) -> Duration) -> String {
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| r.rekeyd.as_secs_f64() / other(r).as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    format!(
        "{:.2}x ({:.2}–{:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    )
}
