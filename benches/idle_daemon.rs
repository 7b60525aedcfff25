//! `cargo bench --bench idle_daemon`: the real release `rekeyd run` holding a policy of
//! 100,000 secrets with nothing due, observed for 60 s.
//!
//! 1. Writes a production-shaped policy (`[api]` with a tokens file, a webhook target,
//!    `[defaults]` with tags, owners, windows and max ages, cron schedules in three time
//!    zones and interval schedules). Every schedule is chosen so that no slot (plus its
//!    jitter window) falls within two hours of now: "nothing due" is arranged, then checked.
//! 2. Seeds the file store with `rekeyd run --once` on the same secrets (without the API and
//!    the webhook target, so no 200,000 notifications are queued): every secret then holds a
//!    current version for its latest slot, as in a deployment that has run for a while.
//! 3. Starts `rekeyd run`, waits until `rekeyd health --ready` succeeds and the daemon logs
//!    that every secret is planned (its first look at all 100,000 is over), scrapes
//!    `/metrics` once as Prometheus would (it must list a next rotation time for every
//!    secret: the daemon really holds and schedules all of them), then observes
//!    it for two windows (the first minute after it settled, which holds start-up's tail,
//!    then the next): resident memory (VmRSS, VmHWM) at both ends of each, and the context
//!    switches of every thread (`/proc/PID/task/*/status`, sampled each second). A thread
//!    switches out each time it sleeps again, so the sum counts wake-ups; a thread that
//!    ends in the window counts one more (its own count leaves `/proc` with it).
//! 4. The peer, observed over the same window: a minimal tokio process built like rekeyd's
//!    runtime (multi-thread, all drivers) that does nothing — the floor of any tokio daemon.
//!
//! The audit log is compared before and after the window: if anything rotated, the
//! premise ("nothing due") failed and the bench says so. `REKEYD_BENCH_SECRETS` and
//! `REKEYD_BENCH_WINDOW_SECS` shrink a run while developing; recorded numbers use the
//! defaults; `REKEYD_BENCH_KEEP=1` keeps the directory (policy, state, logs) to look into.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Timelike, Utc};
use rekeyd::schedule::Schedule;

const BIN: &str = env!("CARGO_BIN_EXE_rekeyd");
const SECRETS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);
/// No slot of any secret may fall this close to now (seeding, start-up and the window
/// all fit well inside it; the jitter window of one hour is added on top).
const QUIET: chrono::TimeDelta = chrono::TimeDelta::hours(2);
const JITTER_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Generous limits for the phases before the window; a run that exceeds one fails loudly.
const SEED_LIMIT: Duration = Duration::from_secs(30 * 60);
const START_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The daemon logs this once its first look at every secret is done.
const SETTLED: &str = "every secret planned";
/// Set in the environment of the bench binary re-run as the idle tokio peer.
const PEER_ENV: &str = "REKEYD_BENCH_IDLE_PEER";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// The peer: rekeyd's runtime, built the same way, with nothing to do.
fn run_peer() -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(std::future::pending::<()>());
    unreachable!("pending never completes")
}

/// A schedule and whether it leaves `now` well clear of its slots.
fn quiet(schedule: &Schedule, now: DateTime<Utc>) -> bool {
    let next = schedule.next_after(now);
    let latest = schedule.latest_at_or_before(now);
    next.is_none_or(|n| n - now > QUIET) && latest.is_some_and(|l| now - l > QUIET + JITTER_WINDOW)
}

/// The `[[secrets]]` tables: a spread of schedules, owners, tags and generators, each
/// schedule checked to be quiet now.
fn secrets_text(count: usize, now: DateTime<Utc>) -> String {
    // Twelve hours from now on the UTC clock: with zone offsets of at most 9 hours either
    // way, every cron slot stays three hours or more from now.
    let hour = (now.hour() + 12) % 24;
    let crons = [
        (format!("0 {hour} * * *"), None),
        (format!("30 {hour} * * 0"), Some("Europe/Berlin")),
        (format!("15 {hour} 1 * *"), Some("America/New_York")),
        (format!("45 {hour} * * 3"), Some("Asia/Tokyo")),
    ];
    let mut cron_cache = BTreeMap::new();
    for (expr, tz) in &crons {
        let schedule = Schedule::cron(expr, *tz).expect("valid cron");
        assert!(quiet(&schedule, now), "cron {expr} in {tz:?} is not quiet");
        cron_cache.insert(expr.clone(), schedule);
    }
    let mut text = String::with_capacity(count * 160);
    for i in 0..count {
        let team = i % 50;
        let name = format!("team-{team}/service-{i}/db-password");
        text.push_str("[[secrets]]\n");
        text.push_str(&format!("name = \"{name}\"\n"));
        // Half keep the [defaults] schedule (every 30 days, if quiet for this name).
        let every_quiet = quiet(
            &Schedule::every(Duration::from_secs(30 * 86_400), &name),
            now,
        );
        let (expr, tz) = &crons[i % crons.len()];
        if i % 2 == 1 || !every_quiet {
            match tz {
                Some(tz) => text.push_str(&format!(
                    "schedule = {{ cron = \"{expr}\", timezone = \"{tz}\" }}\n"
                )),
                None => text.push_str(&format!("schedule = {{ cron = \"{expr}\" }}\n")),
            }
        }
        if i % 3 == 0 {
            text.push_str(&format!("owner = \"team-{team}\"\n"));
        }
        if i % 5 == 0 {
            text.push_str(&format!(
                "tags = {{ env = \"prod\", service = \"service-{}\" }}\n",
                i % 200
            ));
        }
        if i % 10 == 0 {
            text.push_str("generator = { type = \"bytes\", length = 32, encoding = \"hex\" }\n");
        }
        text.push('\n');
    }
    text
}

/// The policy: production-shaped; `serving` adds the API and the webhook target.
fn policy_text(port: u16, serving: bool, secrets: &str) -> String {
    let mut text = String::from("[daemon]\nstate_dir = \"state\"\nconcurrency = 16\n\n");
    if serving {
        text.push_str(&format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"tokens.toml\"\n\n"
        ));
    }
    text.push_str(
        "[defaults]\nbackend = \"primary\"\nschedule = { every = \"30d\" }\ngrace = \"24h\"\n\
         window = \"1h\"\nmax_age = \"35d\"\ngenerator = { type = \"password\", length = 32 }\n\
         owner = \"platform-security\"\ntags = { managed_by = \"rekeyd\" }\n",
    );
    if serving {
        text.push_str("notify = [\"platform\"]\n");
    }
    text.push_str("\n[backends.primary]\ntype = \"file\"\n\n");
    if serving {
        // Nothing is sent while idle; the target only has to be valid.
        text.push_str(
            "[notify.platform]\nurl = \"http://127.0.0.1:9/rekeyd\"\n\
             secret_env = \"PLATFORM_WHSEC\"\nwindow = \"1m\"\n\n",
        );
    }
    text.push_str(secrets);
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` every 100 ms until it returns true; fails after `limit`.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Resident memory in KiB: now, at its peak, and now split into anonymous (heap, stacks)
/// and file-backed (the binary's pages that were touched).
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| status_field(&status, name).unwrap_or_else(|| panic!("{name}"));
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Context switches per thread id, with the thread's name.
fn switches(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may exit between listing and reading: skip it this time.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let total = status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
            + status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        out.insert(tid, (name, total));
    }
    out
}

/// One process over one window: its threads at the start, the latest count seen for
/// every thread, and which threads ended.
struct Observed {
    pid: u32,
    start: BTreeMap<u32, (String, u64)>,
    last: BTreeMap<u32, (String, u64)>,
    ended: usize,
    memory_start: Memory,
    memory_end: Memory,
}

impl Observed {
    fn begin(pid: u32) -> Self {
        let start = switches(pid);
        let memory_start = memory(pid);
        Self {
            pid,
            last: start.clone(),
            start,
            ended: 0,
            memory_start,
            memory_end: memory_start,
        }
    }

    fn sample(&mut self) {
        let now = switches(self.pid);
        self.ended += self.last.keys().filter(|t| !now.contains_key(t)).count();
        self.last.retain(|tid, _| now.contains_key(tid));
        self.last.extend(now);
    }

    fn finish(&mut self) {
        self.sample();
        self.memory_end = memory(self.pid);
    }

    /// Switches per live thread during the window (threads that started in it count
    /// whole).
    fn per_thread(&self) -> Vec<(u32, String, u64)> {
        self.last
            .iter()
            .map(|(tid, (name, last))| {
                let before = self.start.get(tid).map_or(0, |(_, n)| *n);
                (*tid, name.clone(), last - before)
            })
            .collect()
    }

    /// Wake-ups: context switches of live threads, plus one for each thread that ended
    /// (it woke to exit; its own count leaves /proc with it).
    fn wakeups(&self) -> u64 {
        self.per_thread().iter().map(|(_, _, n)| n).sum::<u64>() + self.ended as u64
    }
}

/// Observes the daemon and the peer over one window, sampling threads every second.
fn observe(daemon: u32, peer: u32, window: Duration) -> (Observed, Observed) {
    let mut ours = Observed::begin(daemon);
    let mut floor = Observed::begin(peer);
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        ours.sample();
        floor.sample();
    }
    ours.finish();
    floor.finish();
    (ours, floor)
}

fn print_window(title: &str, ours: &Observed, floor: &Observed, count: usize) {
    println!("{title}");
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "what", "VmRSS", "VmRSS", "anon", "file", "VmHWM", "threads", "wake-ups"
    );
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "", "start", "end", "end", "end", "end", "end", ""
    );
    let ours_name = format!("rekeyd run ({}k secrets)", count / 1000);
    for (what, o) in [
        (ours_name.as_str(), ours),
        ("peer: idle tokio runtime", floor),
    ] {
        println!(
            "{:<30} {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB {:>8} {:>8}",
            what,
            mib(o.memory_start.rss),
            mib(o.memory_end.rss),
            mib(o.memory_end.anon),
            mib(o.memory_end.file),
            mib(o.memory_end.hwm),
            o.last.len(),
            o.wakeups()
        );
    }
    println!(
        "ratio rekeyd / peer: {:.1}x resident; {} more wake-ups",
        ours.memory_end.rss as f64 / floor.memory_end.rss as f64,
        ours.wakeups() as i64 - floor.wakeups() as i64
    );
    let ran: Vec<_> = ours.per_thread().into_iter().filter(|t| t.2 > 0).collect();
    for (tid, name, n) in &ran {
        let new = if ours.start.contains_key(tid) {
            ""
        } else {
            " (started in the window)"
        };
        println!("  rekeyd thread {name} (tid {tid}): {n} context switches{new}");
    }
    if ours.ended > 0 {
        println!(
            "  rekeyd threads that ended (idle blocking-pool threads retiring): {}",
            ours.ended
        );
    }
    if ran.is_empty() && ours.ended == 0 {
        println!("  no rekeyd thread ran");
    }
}

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn audit_entries(path: &Path) -> usize {
    BufReader::new(std::fs::File::open(path).expect("audit log"))
        .lines()
        .count()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    if std::env::var_os(PEER_ENV).is_some() {
        run_peer();
    }
    let count = env_number("REKEYD_BENCH_SECRETS", SECRETS as u64) as usize;
    let window = Duration::from_secs(env_number("REKEYD_BENCH_WINDOW_SECS", WINDOW.as_secs()));
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |rel: &str| -> PathBuf { dir.path().join(rel) };
    let now = Utc::now();
    let port = free_port();
    let secrets = secrets_text(count, now);
    let policy = policy_text(port, true, &secrets);
    std::fs::write(at("policy.toml"), &policy).expect("policy");
    std::fs::write(at("seed.toml"), policy_text(port, false, &secrets)).expect("seed policy");
    drop(secrets);
    let token = "idle-bench-token-not-used-for-requests";
    std::fs::write(
        at("tokens.toml"),
        format!("[[token]]\nname = \"dashboard\"\nrole = \"read\"\ntoken = \"{token}\"\n"),
    )
    .expect("tokens");
    std::fs::set_permissions(at("tokens.toml"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );

    // 2. Seed: every secret gets its current version, through rekeyd itself.
    let started = Instant::now();
    let mut seed = Command::new(BIN)
        .args(["run", "--once", "--policy"])
        .arg(at("seed.toml"))
        .args(["--log", "warn"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(at("seed.log")).expect("log"))
        .spawn()
        .expect("start rekeyd run --once");
    let status = wait_exit(&mut seed, SEED_LIMIT, "seeding (rekeyd run --once)");
    assert!(
        status.success(),
        "seeding failed ({status}); see {}",
        at("seed.log").display()
    );
    let seeded = started.elapsed();
    let audit = at("state/audit.jsonl");

    // The peer starts first, so it is as settled as it will ever be when the window opens.
    let mut peer = Command::new(std::env::current_exe().expect("bench binary"))
        .env(PEER_ENV, "1")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the peer");

    // 3. The daemon.
    let log_path = at("daemon.log");
    let started = Instant::now();
    let mut daemon = Command::new(BIN)
        .args(["run", "--policy"])
        .arg(at("policy.toml"))
        .current_dir(dir.path())
        .env("PLATFORM_WHSEC", &whsec)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start rekeyd run");
    let alive = |daemon: &mut Child| {
        if let Some(status) = daemon.try_wait().expect("wait") {
            panic!(
                "rekeyd exited ({status}); log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
    };
    wait_for("rekeyd health --ready", START_LIMIT, || {
        alive(&mut daemon);
        Command::new(BIN)
            .args(["health", "--ready", "--policy"])
            .arg(at("policy.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let ready = started.elapsed();
    let settled_line = format!("secrets={count}");
    wait_for("the daemon to plan every secret", START_LIMIT, || {
        alive(&mut daemon);
        std::fs::read_to_string(&log_path).is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains(SETTLED) && l.contains(&settled_line))
        })
    });
    let settled = started.elapsed();

    // One scrape, as Prometheus would make, before the windows: it must show a next
    // rotation time for every secret (the daemon holds and schedules all of them), and
    // whatever it leaves behind is measured.
    let metrics = scrape(port);
    let scheduled = metrics
        .lines()
        .filter(|l| l.starts_with("rekeyd_secret_next_rotation_seconds{"))
        .count();
    assert_eq!(
        scheduled, count,
        "secrets with a next rotation time in /metrics"
    );

    // 4. Two windows: the first minute after the daemon settled (start-up's tail, such as
    // blocking-pool threads retiring, falls in it), then the next, the steady state.
    let entries_before = audit_entries(&audit);
    let (first_ours, first_floor) = observe(daemon.id(), peer.id(), window);
    alive(&mut daemon);
    let (ours, floor) = observe(daemon.id(), peer.id(), window);
    alive(&mut daemon);
    let entries_after = audit_entries(&audit);

    // Stop both; the daemon drains and exits 0 on SIGTERM.
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    let status = wait_exit(&mut daemon, Duration::from_secs(120), "rekeyd shutdown");
    let _ = peer.kill();
    let _ = peer.wait();

    println!(
        "idle daemon, {count} secrets (policy {} KiB), API and webhook target on",
        policy.len() / 1024
    );
    println!(
        "seeding (run --once): {:.1}s; start to /readyz: {:.1}s; start to every secret planned: {:.1}s",
        seeded.as_secs_f64(),
        ready.as_secs_f64(),
        settled.as_secs_f64()
    );
    println!(
        "one /metrics scrape before the windows: {} KiB, {scheduled} secrets with a next rotation",
        metrics.len() / 1024
    );
    println!();
    let secs = window.as_secs();
    print_window(
        &format!("window 1: the first {secs}s after every secret was planned"),
        &first_ours,
        &first_floor,
        count,
    );
    println!();
    print_window(
        &format!("window 2: the next {secs}s (steady state)"),
        &ours,
        &floor,
        count,
    );
    println!();
    println!(
        "audit entries during both windows: {} (0: nothing was due, as arranged)",
        entries_after - entries_before
    );
    println!("rekeyd exit on SIGTERM: {status}");
    println!("targets (issue 8): under 32 MiB resident; at most one wake-up a minute while idle");
    if std::env::var_os("REKEYD_BENCH_KEEP").is_some() {
        println!("kept the bench's directory: {}", dir.keep().display());
    }
    assert_eq!(
        entries_after, entries_before,
        "something rotated during the window: the schedules were meant to be quiet"
    );
}
