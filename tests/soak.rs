//! Soak (issue 8): the real daemon under a dense schedule on the file store and on moto,
//! for `REKEYD_SOAK_SECS` seconds (10 minutes unless set), while the backend and the two
//! webhook receivers fail and recover at random. Beside the daemon that runs throughout
//! (whose memory is sampled), a second one is killed with SIGKILL at random moments and
//! restarted, again and again, while an operator rolls its secrets back with the CLI, some
//! of those commands aborting part way.
//!
//! Afterwards, for both: the daemon that ran throughout stops cleanly; one `run --once`
//! finishes whatever the last kill left; then every secret has one value per version (one
//! version per slot) and its current version is the last one the audit log says was
//! promoted (or rolled back to), nothing is pending, every rotation and rollback has an
//! outcome, every notification was delivered (the receiver saw it, signature checked by
//! the reference verifier) or given up with a reason, the audit log verifies, and the
//! steady daemon's memory did not grow.
//!
//! The faults are real: the file store's directory and its files are made immutable
//! (`chattr -R +i`, so every write, append included, fails with EPERM, as on a read-only
//! or broken mount); moto sits behind a
//! proxy that cuts connections or answers 500; receivers answer 5xx, `Retry-After`, too
//! slowly, or are not running at all. The random seed is printed; `REKEYD_SOAK_SEED`
//! replays one schedule of faults.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::flaky_proxy::{FlakyProxy, Mode};
use common::moto::Moto;
use common::receiver::Receiver;
use common::{Daemon, Sandbox, signal, wait_for};
use rekeyd::notify::EventType;
use rekeyd::secret::{SecretName, VersionId};
use serde_json::{Value, json};

/// How long each soak runs unless `REKEYD_SOAK_SECS` says otherwise.
const DEFAULT_SECS: u64 = 600;
/// The schedule: dense enough for thousands of rotations in ten minutes.
const EVERY: &str = "5s";

fn soak_length() -> Duration {
    let secs = std::env::var("REKEYD_SOAK_SECS")
        .ok()
        .map(|s| s.parse().expect("REKEYD_SOAK_SECS is a number of seconds"))
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

/// A small deterministic generator (xorshift64*): the fault schedule is replayable.
struct Rng(u64);

impl Rng {
    /// Seeded from `REKEYD_SOAK_SEED` (or the clock, printed once so a failing run can be
    /// replayed), mixed with `label` so each thread draws its own sequence.
    fn seeded(label: &str) -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let seed = std::env::var("REKEYD_SOAK_SEED")
                .ok()
                .map(|s| s.parse().expect("REKEYD_SOAK_SEED is a number"))
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64
                });
            eprintln!("soak: REKEYD_SOAK_SEED={seed}");
            seed
        });
        let mixed = label.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        });
        Self(mixed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low))
    }
}

/// The signing key both receivers verify with.
fn hook_key() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([0x5a; 32])
    )
}

/// The policy: `count` secrets named `{prefix}-NNN` every [`EVERY`]; every third one
/// notifies `alpha` (retries for long) and `beta` (gives up after three attempts).
fn policy(
    backend_table: &str,
    backend: &str,
    prefix: &str,
    count: usize,
    ports: (u16, u16),
) -> String {
    let mut text = format!(
        r#"[daemon]
state_dir = "state"
min_interval = "1s"
concurrency = 8
max_retry_backoff = "3s"

{backend_table}

[notify.alpha]
url = "http://127.0.0.1:{alpha}/alpha"
secret_file = "hook.whsec"
timeout = "1s"
backoff = "1s"
max_backoff = "3s"
breaker_failures = 5
breaker_cooldown = "2s"

[notify.beta]
url = "http://127.0.0.1:{beta}/beta"
secret_file = "hook.whsec"
timeout = "1s"
backoff = "1s"
max_backoff = "2s"
max_attempts = 3
breaker_cooldown = "2s"

[defaults]
backend = "{backend}"
generator = {{ type = "password", length = 24 }}
"#,
        alpha = ports.0,
        beta = ports.1,
    );
    for i in 0..count {
        text.push_str(&format!(
            "\n[[secrets]]\nname = \"{prefix}-{i:03}\"\nschedule = {{ every = \"{EVERY}\" }}\n"
        ));
        if i % 3 == 0 {
            text.push_str("notify = [\"alpha\", \"beta\"]\n");
        }
    }
    text
}

fn notified(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("{prefix}-{i:03}"))
        .collect()
}

fn sandbox(policy_text: &str) -> Sandbox {
    let sandbox = Sandbox::raw(policy_text);
    std::fs::write(sandbox.path("hook.whsec"), hook_key()).expect("key file");
    sandbox
}

/// `rekeyd run` in the background, its output appended to `daemon.log`.
fn spawn_daemon(sandbox: &Sandbox) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sandbox.path("daemon.log"))
        .expect("daemon log");
    sandbox
        .command(&["run"])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .map(Daemon)
        .expect("start rekeyd run")
}

fn count_events(sandbox: &Sandbox, event: &str) -> usize {
    sandbox
        .audit_entries()
        .iter()
        .filter(|e| e["event"] == event)
        .count()
}

/// Waits until the daemon has finished its first rotations: it is up and the store exists.
fn wait_until_rotating(sandbox: &Sandbox, child: &mut Daemon) {
    wait_for(
        "the daemon's first rotations",
        Duration::from_secs(120),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("rekeyd run exited early ({status}): {}", log_text(sandbox));
            }
            (count_events(sandbox, "rotation_succeeded") > 0).then_some(())
        },
    );
}

fn log_text(sandbox: &Sandbox) -> String {
    let text = std::fs::read_to_string(sandbox.path("daemon.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Stops a daemon with SIGTERM and requires a clean exit.
fn stop_cleanly(sandbox: &Sandbox, mut child: Daemon) {
    signal(&child, "TERM");
    let status = wait_for(
        "the daemon to stop after SIGTERM",
        Duration::from_secs(120),
        || child.try_wait().expect("wait"),
    );
    assert!(
        status.success(),
        "rekeyd run exited with {status} after SIGTERM: {}",
        log_text(sandbox)
    );
}

/// Resident set size of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every two seconds until `deadline`.
fn sample_memory(pid: u32, deadline: Instant) -> thread::JoinHandle<Vec<(f64, u64)>> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            if let Some(kib) = rss_kib(pid) {
                samples.push((start.elapsed().as_secs_f64(), kib));
            }
            // The sampling period, not a synchronisation.
            thread::sleep(Duration::from_secs(2));
        }
        samples
    })
}

/// Asserts that RSS in the last fifth of the run is not above RSS after warm-up (the
/// second fifth) by more than a small allowance for allocator noise.
fn assert_memory_flat(label: &str, samples: &[(f64, u64)]) -> (u64, u64) {
    assert!(
        samples.len() >= 10,
        "{label}: too few memory samples: {samples:?}"
    );
    let median = |part: &[(f64, u64)]| {
        let mut v: Vec<u64> = part.iter().map(|s| s.1).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let fifth = samples.len() / 5;
    let warm = median(&samples[fifth..2 * fifth]);
    let end = median(&samples[samples.len() - fifth..]);
    assert!(
        end <= warm + warm / 10 + 2048,
        "{label}: memory grew from {warm} KiB after warm-up to {end} KiB at the end: {samples:?}"
    );
    (warm, end)
}

/// Kills the daemon with SIGKILL at random moments and starts it again, until `deadline`;
/// the last kill lands just before it. Returns how many kills there were.
fn kill_repeatedly(
    sandbox: Arc<Sandbox>,
    mut child: Daemon,
    deadline: Instant,
    mut rng: Rng,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut kills = 0;
        loop {
            // When to strike next: a random point of whatever the daemon is doing.
            let wait = rng.millis(500, 6_000);
            if Instant::now() + wait >= deadline {
                break;
            }
            thread::sleep(wait);
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "rekeyd run died on its own ({status}): {}",
                    log_text(&sandbox)
                );
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            kills += 1;
            child = spawn_daemon(&sandbox);
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills + 1
    })
}

/// An operator rolling secrets of `sandbox` back with the CLI while its daemon runs (and
/// is killed): a third of the commands abort at a random rollback crash point. Returns
/// the commands run and how many were made to abort.
fn roll_back_repeatedly(
    sandbox: Arc<Sandbox>,
    secrets: Vec<String>,
    deadline: Instant,
    mut rng: Rng,
) -> thread::JoinHandle<(usize, usize)> {
    thread::spawn(move || {
        let (mut ran, mut aborted) = (0, 0);
        loop {
            let wait = rng.millis(500, 3_000);
            if Instant::now() + wait >= deadline {
                break;
            }
            thread::sleep(wait);
            let secret = &secrets[rng.below(secrets.len() as u64) as usize];
            let mut command =
                sandbox.command(&["rollback", secret.as_str(), "--by", "soak-operator"]);
            let crash = (rng.below(3) == 0).then(|| {
                let points = rekeyd::rotation::ROLLBACK_CRASH_POINTS;
                points[rng.below(points.len() as u64) as usize]
            });
            if let Some(point) = crash {
                command.env("REKEYD_CRASH_AT", point);
            }
            let out = command.output().expect("run rekeyd rollback");
            ran += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                // Done, or refused (no previous version yet, a rotation in progress, the
                // daemon's promote first): all fine for an operator's request.
                Some(0 | 6) => {}
                // A backend fault injected right then.
                Some(_) if stderr.contains("rekeyd:") && !stderr.contains("panicked") => {}
                None if crash.is_some() && stderr.contains("REKEYD_CRASH_AT") => aborted += 1,
                _ => panic!("rekeyd rollback {secret}: {:?}: {stderr}", out.status),
            }
        }
        (ran, aborted)
    })
}

/// A component that can be made to fail and then recover.
trait Faulty: Send {
    /// The failure kinds it knows.
    fn kinds(&self) -> &'static [&'static str];
    /// Starts failure `kind` (an index into `kinds`).
    fn fail(&mut self, kind: usize);
    /// Recovers.
    fn heal(&mut self);
}

/// The file store's directories and their files, made immutable (writes fail with EPERM)
/// and back. The files too: an immutable directory still lets its files be appended to.
struct ImmutableDirs(Vec<PathBuf>);

impl ImmutableDirs {
    fn chattr(&self, flag: &str) {
        for dir in &self.0 {
            let out = Command::new("chattr")
                .args(["-R", flag])
                .arg(dir)
                .output()
                .expect("chattr (e2fsprogs) is needed for the file store's fault injection");
            assert!(
                out.status.success(),
                "chattr {flag} {} failed (the soak needs root on ext4/xfs): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Faulty for ImmutableDirs {
    fn kinds(&self) -> &'static [&'static str] {
        &["store:immutable"]
    }
    fn fail(&mut self, _: usize) {
        self.chattr("+i");
    }
    fn heal(&mut self) {
        self.chattr("-i");
    }
}

impl Drop for ImmutableDirs {
    fn drop(&mut self) {
        // Whatever happened, leave the directories deletable.
        for dir in &self.0 {
            let _ = Command::new("chattr").args(["-R", "-i"]).arg(dir).status();
        }
    }
}

impl Faulty for Arc<FlakyProxy> {
    fn kinds(&self) -> &'static [&'static str] {
        &["aws:connection_cut", "aws:500"]
    }
    fn fail(&mut self, kind: usize) {
        self.set([Mode::Refuse, Mode::Error][kind]);
    }
    fn heal(&mut self) {
        self.set(Mode::Pass);
    }
}

/// A webhook receiver that answers errors, throttles, stalls or is not running.
struct FlakyReceiver(Arc<Mutex<Receiver>>);

impl Faulty for FlakyReceiver {
    fn kinds(&self) -> &'static [&'static str] {
        &[
            "hook:500",
            "hook:503_retry_after",
            "hook:timeout",
            "hook:down",
        ]
    }
    fn fail(&mut self, kind: usize) {
        let mut receiver = self.0.lock().unwrap();
        match kind {
            0 => receiver.script(json!({ "default": { "status": 500 } })),
            1 => receiver.script(json!({ "default": { "status": 503, "retry_after": "1" } })),
            // Longer than the targets' one-second timeout.
            2 => receiver.script(json!({ "default": { "status": 200, "delay_ms": 1500 } })),
            _ => receiver.stop(),
        }
    }
    fn heal(&mut self) {
        let mut receiver = self.0.lock().unwrap();
        receiver.script(json!({ "default": { "status": 200 } }));
        if !receiver.running() {
            receiver.restart();
        }
    }
}

/// How often each failure kind was injected.
type FaultCounts = BTreeMap<&'static str, usize>;

/// Fails and heals the components at random until `deadline`, then heals them all.
/// Returns how often each failure kind was injected.
fn inject_faults(
    mut parts: Vec<Box<dyn Faulty>>,
    deadline: Instant,
    mut rng: Rng,
) -> thread::JoinHandle<(Vec<Box<dyn Faulty>>, FaultCounts)> {
    thread::spawn(move || {
        let mut failing = vec![false; parts.len()];
        let mut counts = BTreeMap::new();
        loop {
            let wait = rng.millis(300, 4_000);
            if Instant::now() + wait >= deadline {
                break;
            }
            thread::sleep(wait);
            let i = rng.below(parts.len() as u64) as usize;
            if failing[i] {
                parts[i].heal();
            } else {
                let kinds = parts[i].kinds();
                let kind = rng.below(kinds.len() as u64) as usize;
                parts[i].fail(kind);
                *counts.entry(kinds[kind]).or_insert(0) += 1;
            }
            failing[i] = !failing[i];
        }
        for (part, failing) in parts.iter_mut().zip(failing) {
            if failing {
                part.heal();
            }
        }
        (parts, counts)
    })
}

/// What one sandbox's audit log and outbox add up to after the soak.
#[derive(Debug, Default)]
struct Tally {
    rotations: usize,
    /// Rollbacks recorded as done, and as failed.
    rolled_back: usize,
    rollbacks_failed: usize,
    /// Failed rotation attempts, by the step that failed.
    failed_steps: BTreeMap<String, usize>,
    delivered: usize,
    given_up: usize,
    attempt_failures: usize,
}

fn parse_time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// Checks every invariant the issue names on one sandbox, after its last run.
fn check_invariants(
    label: &str,
    sandbox: &Sandbox,
    secrets: &[String],
    notified: &BTreeSet<String>,
    requests: &BTreeMap<String, Vec<common::receiver::Request>>,
) -> Tally {
    // The audit log verifies: nothing edited, removed or reordered.
    let verify = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{label}: audit verify failed: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let entries = sandbox.audit_entries();
    let mut tally = Tally::default();
    // One value per version id (so one per slot): a stored value is never replaced unless
    // it was discarded first, and a version succeeds at most once.
    let mut values: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut succeeded: BTreeSet<(String, String)> = BTreeSet::new();
    let mut settled: BTreeMap<String, String> = BTreeMap::new();
    let mut open: BTreeSet<(String, String)> = BTreeSet::new();
    // Open rollbacks by secret: (from, to, whether a promotion came after the start).
    let mut rollbacks: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    let field = |e: &Value, name: &str| e[name].as_str().unwrap_or_default().to_owned();
    for e in &entries {
        let secret = e["secret"].as_str().unwrap_or_default().to_owned();
        let version = e["version"].as_str().unwrap_or_default().to_owned();
        let key = (secret.clone(), version.clone());
        match e["event"].as_str().unwrap() {
            "rotation_started" => {
                let slot = parse_time(&e["slot"]);
                let name = SecretName::new(secret.clone()).unwrap();
                assert_eq!(
                    version,
                    VersionId::for_slot(&name, slot).to_string(),
                    "{label}: a scheduled rotation writes its slot's version: {e}"
                );
                open.insert(key);
            }
            "pending_stored" => {
                let fingerprint = e["fingerprint"].as_str().unwrap().to_owned();
                if let Some(before) = values.get(&key) {
                    assert_eq!(
                        before, &fingerprint,
                        "{label}: {secret} {version} was stored with a second value: {e}"
                    );
                }
                values.insert(key, fingerprint);
            }
            "pending_discarded" => {
                values.remove(&key);
                open.remove(&key);
            }
            "promoted" => {
                if let Some((_, _, promoted_since)) = rollbacks.get_mut(&secret) {
                    *promoted_since = true;
                }
            }
            "rollback_started" => {
                let (from, to) = (field(e, "from"), field(e, "to"));
                // The operator runs one at a time, and each closes what a stopped one left
                // before it starts: two open at once means one was never closed.
                let earlier = rollbacks.insert(secret.clone(), (from, to, false));
                assert!(
                    earlier.is_none(),
                    "{label}: a rollback of {secret} started while {earlier:?} was open: {e}"
                );
            }
            "rolled_back" | "rollback_failed" => {
                let (from, to) = (field(e, "from"), field(e, "to"));
                let started = rollbacks.remove(&secret);
                if started
                    .as_ref()
                    .is_none_or(|(f, t, _)| (f, t) != (&from, &to))
                {
                    let history: Vec<String> = entries
                        .iter()
                        .filter(|h| h["secret"] == secret.as_str())
                        .filter(|h| !h["event"].as_str().unwrap_or("").starts_with("notif"))
                        .map(|h| {
                            format!(
                                "{} pid {} {} {} from {} to {} {}",
                                h["seq"],
                                h["pid"],
                                h["event"],
                                h["version"],
                                h["from"],
                                h["to"],
                                h["action"]
                            )
                        })
                        .collect();
                    panic!(
                        "{label}: a rollback ended that was not started: {e}\n{}",
                        history.join("\n")
                    );
                }
                if e["event"] == "rolled_back" {
                    tally.rolled_back += 1;
                    // The secret is `to` now, unless a rotation promoted after it (then
                    // that rotation's own entries settle it, in log order).
                    if started.is_some_and(|(_, _, promoted_since)| !promoted_since) {
                        settled.insert(secret, to);
                    }
                } else {
                    tally.rollbacks_failed += 1;
                }
            }
            "rotation_succeeded" => {
                assert!(
                    succeeded.insert(key.clone()),
                    "{label}: {secret} {version} succeeded twice"
                );
                tally.rotations += 1;
                settled.insert(secret, version);
                open.remove(&key);
            }
            "slot_already_done" => {
                settled.insert(secret, version);
                open.remove(&key);
            }
            "rotation_failed" => {
                *tally
                    .failed_steps
                    .entry(e["step"].as_str().unwrap_or_default().to_owned())
                    .or_insert(0) += 1;
                if e["step"] == "describe" {
                    // The backend could not be asked about the secret: no rotation of
                    // this reconcile started, so none is closed.
                } else if version.is_empty() {
                    open.retain(|(s, _)| s != &secret);
                } else {
                    open.remove(&key);
                }
            }
            "notification_attempt_failed" => tally.attempt_failures += 1,
            _ => {}
        }
    }
    assert!(
        open.is_empty(),
        "{label}: rotations started but never ended: {open:?}"
    );
    assert!(
        rollbacks.is_empty(),
        "{label}: rollbacks started but never ended: {rollbacks:?}"
    );

    // The backend: each secret's current version is the last one the audit log settled,
    // and nothing is left pending.
    let status: Value =
        serde_json::from_str(&sandbox.ok(&["status", "--format", "json"])).expect("status JSON");
    let status: BTreeMap<String, Value> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s.clone()))
        .collect();
    for name in secrets {
        let s = &status[name];
        let current = s["current"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: {name} has no current version: {s}"));
        assert_eq!(
            Some(current),
            settled.get(name).map(String::as_str),
            "{label}: {name}'s current version is not the last one the audit log promoted"
        );
        let pending = s["pending"]["id"].as_str();
        assert!(
            pending.is_none() || pending == Some(current),
            "{label}: {name} still has a pending version: {s}"
        );
    }

    // Nothing half-written is left behind by the kills.
    let litter = temporary_files(&sandbox.path("state"));
    assert!(
        litter.is_empty(),
        "{label}: temporary files left behind: {litter:?}"
    );

    // Notifications: nothing queued; each one delivered (seen by the receiver, signature
    // verified) or given up with a reason.
    let queue: Vec<_> = std::fs::read_dir(sandbox.path("state/outbox/queue"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        queue.is_empty(),
        "{label}: notifications still queued: {queue:?}"
    );
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    for entry in std::fs::read_dir(sandbox.path("state/outbox/done"))
        .expect("done/")
        .flatten()
    {
        let record = std::fs::read_to_string(entry.path()).expect("done record");
        let record: Value = serde_json::from_str(&record).expect("done record JSON");
        done.insert(record["id"].as_str().unwrap().to_owned(), record);
    }
    let failed_audit: BTreeMap<String, Value> = entries
        .iter()
        .filter(|e| e["event"] == "notification_failed")
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    for (id, record) in &done {
        match record["outcome"].as_str().unwrap() {
            "delivered" => {
                tally.delivered += 1;
                let seen = requests.get(id).map(Vec::as_slice).unwrap_or_default();
                assert!(
                    seen.iter()
                        .any(|r| (200..300).contains(&r.status) && r.verified == [true]),
                    "{label}: {id} is recorded as delivered but no receiver accepted it: {record}"
                );
            }
            "given_up" | "cancelled" => {
                tally.given_up += 1;
                assert!(
                    !record["reason"].as_str().unwrap_or_default().is_empty(),
                    "{label}: {id} given up without a reason: {record}"
                );
                assert!(
                    failed_audit.contains_key(id),
                    "{label}: {id} given up but not in the audit log: {record}"
                );
            }
            other => panic!("{label}: {id} left the queue as {other}: {record}"),
        }
    }
    // Every promotion of a notified secret produced a `secret.rotated` for both targets,
    // and each of those reached a final outcome.
    for (secret, version) in &succeeded {
        if !notified.contains(secret) {
            continue;
        }
        for target in ["alpha", "beta"] {
            let id =
                rekeyd::notify::event::derived_id(EventType::Rotated, secret, version, target, "");
            assert!(
                done.contains_key(&id),
                "{label}: no final outcome for {target}'s secret.rotated of {secret} {version}"
            );
        }
    }
    tally
}

/// Files under `dir` (recursively) named like a temporary file of an atomic write.
fn temporary_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("state dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temporary_files(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp") {
            found.push(path);
        }
    }
    found
}

/// Every request the receivers saw, by `webhook-id`; each carries a valid signature.
fn requests_by_id(receivers: &[&Receiver]) -> BTreeMap<String, Vec<common::receiver::Request>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for receiver in receivers {
        for r in receiver.requests() {
            assert_eq!(
                r.verified,
                [true],
                "a delivery failed the reference verifier: {:?}",
                r.id
            );
            out.entry(r.id.clone()).or_default().push(r);
        }
    }
    out
}

/// One soak: a steady daemon and a killed one, each in its own sandbox on the same kind of
/// backend, sharing the two receivers.
struct Soak {
    label: &'static str,
    steady: Sandbox,
    killed: Arc<Sandbox>,
    /// Secret names and the notified ones, per sandbox (steady, killed).
    secrets: [(Vec<String>, BTreeSet<String>); 2],
    receivers: [Arc<Mutex<Receiver>>; 2],
}

impl Soak {
    fn run(self, store_faults: Box<dyn Faulty>) {
        let label = self.label;
        let length = soak_length();
        let mut steady = spawn_daemon(&self.steady);
        let mut killed = spawn_daemon(&self.killed);
        wait_until_rotating(&self.steady, &mut steady);
        wait_until_rotating(&self.killed, &mut killed);

        let deadline = Instant::now() + length;
        let memory = sample_memory(steady.id(), deadline);
        let kills = kill_repeatedly(
            Arc::clone(&self.killed),
            killed,
            deadline,
            Rng::seeded(&format!("{label} kills")),
        );
        let operator = roll_back_repeatedly(
            Arc::clone(&self.killed),
            self.secrets[1].0.clone(),
            deadline,
            Rng::seeded(&format!("{label} rollbacks")),
        );
        let mut parts: Vec<Box<dyn Faulty>> = vec![store_faults];
        for receiver in &self.receivers {
            parts.push(Box::new(FlakyReceiver(Arc::clone(receiver))));
        }
        let faults = inject_faults(parts, deadline, Rng::seeded(&format!("{label} faults")));

        let samples = memory.join().expect("memory sampler");
        let kills = kills.join().expect("killer");
        let (rollbacks, aborted) = operator.join().expect("operator");
        let (parts, injected) = faults.join().expect("fault injector");
        drop(parts); // every component is healthy again
        if let Ok(Some(status)) = steady.try_wait() {
            panic!(
                "{label}: the steady daemon died ({status}): {}",
                log_text(&self.steady)
            );
        }
        stop_cleanly(&self.steady, steady);

        // The next start finishes whatever the last kill (or the shutdown) left.
        for sandbox in [&self.steady, &*self.killed] {
            sandbox.ok(&["run", "--once"]);
            let log = std::fs::read_to_string(sandbox.path("daemon.log")).unwrap_or_default();
            assert!(!log.contains("panicked"), "{label}: a daemon panicked");
        }

        let receivers: Vec<_> = self.receivers.iter().map(|r| r.lock().unwrap()).collect();
        let requests = requests_by_id(&receivers.iter().map(|r| &**r).collect::<Vec<_>>());
        let steady_tally = check_invariants(
            &format!("{label} steady"),
            &self.steady,
            &self.secrets[0].0,
            &self.secrets[0].1,
            &requests,
        );
        let killed_tally = check_invariants(
            &format!("{label} killed"),
            &self.killed,
            &self.secrets[1].0,
            &self.secrets[1].1,
            &requests,
        );
        let (warm, end) = assert_memory_flat(label, &samples);
        eprintln!(
            "soak {label}: {length:?}; faults injected {injected:?}; {kills} kills\n  \
             steady: {steady_tally:?}; RSS {warm} KiB after warm-up, {end} KiB at the end\n  \
             killed: {killed_tally:?}; {rollbacks} rollback commands, {aborted} aborted"
        );

        // The soak did what it claims: thousands of rotations (over the full ten minutes),
        // and the failure paths really ran.
        let minutes = length.as_secs_f64() / 60.0;
        let rotations = steady_tally.rotations + killed_tally.rotations;
        assert!(
            rotations as f64 >= 150.0 * minutes,
            "{label}: only {rotations} rotations in {length:?}"
        );
        if length >= Duration::from_secs(120) {
            let backend_faults = if label == "file" { "store:" } else { "aws:" };
            for part in [backend_faults, "hook:"] {
                assert!(
                    injected.keys().any(|k| k.starts_with(part)),
                    "{label}: no {part} fault was injected"
                );
            }
            assert!(kills >= 10, "{label}: only {kills} kills");
            assert!(
                aborted > 0 && killed_tally.rolled_back > 0,
                "{label}: no rollback was made, or none was interrupted"
            );
            // A backend fault fails a rotation, or the look before one (`describe`): both
            // are audited as `rotation_failed`.
            assert!(
                !steady_tally.failed_steps.is_empty(),
                "{label}: no rotation or describe ever failed"
            );
            assert!(
                steady_tally.attempt_failures > 0,
                "{label}: no delivery ever failed"
            );
            assert!(steady_tally.delivered > 0 && killed_tally.delivered > 0);
        }
    }
}

impl Soak {
    /// Two receivers, and a steady and a killed sandbox on `backend_table` with
    /// `counts.0` and `counts.1` secrets.
    fn new(
        label: &'static str,
        backend_table: &str,
        backend: &str,
        counts: (usize, usize),
    ) -> Self {
        let receivers = [
            Arc::new(Mutex::new(Receiver::start(&[&hook_key()]))),
            Arc::new(Mutex::new(Receiver::start(&[&hook_key()]))),
        ];
        let ports = (
            receivers[0].lock().unwrap().port,
            receivers[1].lock().unwrap().port,
        );
        let side = |prefix: &str, count: usize| {
            let text = policy(backend_table, backend, prefix, count, ports);
            let names = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
            (sandbox(&text), (names, notified(prefix, count)))
        };
        let (steady, steady_secrets) = side("s", counts.0);
        let (killed, killed_secrets) = side("k", counts.1);
        Self {
            label,
            steady,
            killed: Arc::new(killed),
            secrets: [steady_secrets, killed_secrets],
            receivers,
        }
    }
}

#[test]
fn soak_on_the_file_store_with_faults_and_kills() {
    let soak = Soak::new(
        "file",
        "[backends.local]\ntype = \"file\"\n",
        "local",
        (60, 30),
    );
    let store_dirs = ImmutableDirs(vec![
        soak.steady.path("state/store-local"),
        soak.killed.path("state/store-local"),
    ]);
    soak.run(Box::new(store_dirs));
}

#[test]
fn soak_on_moto_with_faults_and_kills() {
    let moto = Moto::start();
    let proxy = Arc::new(FlakyProxy::start(moto.port));
    // rekeyd reaches moto only through the proxy.
    let table = moto
        .backend_table("create_missing = true")
        .replace(&moto.url, &proxy.url());
    let soak = Soak::new("moto", &table, "aws", (30, 15));
    soak.run(Box::new(Arc::clone(&proxy)));
}
