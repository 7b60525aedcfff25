//! `cargo bench --bench webhook_fanout`: time from a promotion to all 100 loopback consumers
//! having received its `secret.rotated` event, against a peer in the same run: 100
//! concurrent bare POSTs of the same body with reqwest.
//!
//! rekeyd's side is the daemon's own wiring (`daemon::open_runtime` with notifications, the
//! delivery worker in daemon mode) on the file store in a tempdir on the real disk, with one
//! secret whose `notify` lists 100 targets, each an HTTP server on its own loopback port in
//! this process. Each server records when a request arrives and answers 204; nothing heavy.
//! The clock starts when the `promoted` audit entry is durable (an audit observer), and
//! stops at the 100th arrival of that version's `secret.rotated`. Each rotation also sends a
//! `secret.rotation.pending` to all 100 before its promotion, as it does in production.
//!
//! The peer's clock starts before 100 tasks each POST the same body to one consumer, and
//! stops at the 100th arrival. `REKEYD_BENCH_ROTATIONS` (default 20) sets the samples.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rekeyd::audit::AuditEvent;
use rekeyd::daemon::{Notifications, open_runtime};
use rekeyd::notify::Mode;
use tokio::sync::Notify;

const CONSUMERS: usize = 100;
const TARGET: Duration = Duration::from_millis(250);
/// How long one rotation's deliveries may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(60);

/// Arrivals of `secret.rotated` events, by version (or by the peer's round id).
#[derive(Default)]
struct Arrivals {
    by_version: Mutex<HashMap<String, Vec<Instant>>>,
    changed: Notify,
    /// The last body received, for the peer to send.
    body: Mutex<String>,
}

impl Arrivals {
    fn record(&self, version: String) {
        let now = Instant::now();
        self.by_version
            .lock()
            .unwrap()
            .entry(version)
            .or_default()
            .push(now);
        self.changed.notify_waiters();
    }

    /// Waits until `version` has reached every consumer; returns the first and last arrival.
    async fn all(&self, version: &str) -> (Instant, Instant) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let changed = self.changed.notified();
            {
                let seen = self.by_version.lock().unwrap();
                if let Some(times) = seen.get(version).filter(|t| t.len() >= CONSUMERS) {
                    let first = *times.iter().min().unwrap();
                    let last = *times.iter().max().unwrap();
                    return (first, last);
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let got = self
                    .by_version
                    .lock()
                    .unwrap()
                    .get(version)
                    .map_or(0, Vec::len);
                panic!("{version}: only {got} of {CONSUMERS} consumers notified within {LIMIT:?}");
            }
        }
    }
}

/// A consumer: records each `secret.rotated` (keyed by `data.version`) and answers 204.
async fn consume(State(arrivals): State<Arc<Arrivals>>, body: axum::body::Bytes) -> StatusCode {
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if event["type"] == "secret.rotated"
        && let Some(version) = event["data"]["version"].as_str()
    {
        arrivals.record(version.to_owned());
        *arrivals.body.lock().unwrap() = String::from_utf8_lossy(&body).into_owned();
    }
    StatusCode::NO_CONTENT
}

/// Starts the consumers; returns their ports.
async fn consumers(arrivals: &Arc<Arrivals>) -> Vec<u16> {
    let mut ports = Vec::with_capacity(CONSUMERS);
    for _ in 0..CONSUMERS {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        ports.push(listener.local_addr().expect("address").port());
        let app = axum::Router::new()
            .route("/hook", post(consume))
            .with_state(Arc::clone(arrivals));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    ports
}

fn policy(dir: &Path, ports: &[u16]) -> rekeyd::policy::Policy {
    let key = dir.join("hooks.whsec");
    std::fs::write(&key, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("key");
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[backends.local]\ntype = \"file\"\n\n",
        dir.display()
    );
    let mut names = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("consumer-{i:03}");
        text.push_str(&format!(
            "[notify.{name}]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\n\n",
            key.display()
        ));
        names.push(format!("\"{name}\""));
    }
    text.push_str(&format!(
        "[[secrets]]\nname = \"bench/fanout\"\nbackend = \"local\"\ngrace = \"0s\"\n\
         schedule = {{ every = \"30d\" }}\ngenerator = {{ type = \"password\", length = 32 }}\n\
         notify = [{}]\n",
        names.join(", ")
    ));
    rekeyd::policy::parse(&dir.join("bench.toml"), &text).expect("bench policy")
}

/// Percentile `p` (0..=100) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn row(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<44} {:>8.1} {:>8.1} {:>8.1}",
        ms(percentile(samples, 50)),
        ms(percentile(samples, 95)),
        ms(*samples.last().unwrap())
    );
}

fn main() {
    let rotations = std::env::var("REKEYD_BENCH_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let arrivals = Arc::new(Arrivals::default());
        let ports = consumers(&arrivals).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (policy, engine) = open_runtime(policy(dir.path(), &ports), None, Notifications::Open)
            .await
            .expect("runtime");
        let notifier = engine.notifier().expect("notifier").clone();
        notifier.start(Mode::Daemon).await.expect("delivery worker");
        let promoted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen = Arc::clone(&promoted);
        engine.audit().observe(Arc::new(move |event| {
            if let AuditEvent::Promoted { version, .. } = event {
                seen.lock().unwrap().insert(version.clone(), Instant::now());
            }
        }));
        let secret = policy.secrets[0].clone();

        // rekeyd: one rotation at a time; the next starts once the outbox is empty.
        let (mut ours, mut first) = (Vec::new(), Vec::new());
        let mut last_version = String::new();
        for rotation in 0..=rotations {
            let outcome = engine
                .rotate_manually(&secret, "bench", true)
                .await
                .expect("rotation");
            let rekeyd::rotation::Outcome::Rotated { version, .. } = outcome else {
                panic!("not rotated: {outcome:?}");
            };
            let version = version.to_string();
            let (first_at, last_at) = arrivals.all(&version).await;
            let at = promoted.lock().unwrap()[&version];
            assert_eq!(notifier.drain(LIMIT).await, 0, "undelivered messages");
            // The first rotation creates the secret and opens the worker's connections: not
            // a sample (the peer's first round is not either).
            if rotation > 0 {
                ours.push(last_at - at);
                first.push(first_at - at);
            }
            last_version = version;
        }
        notifier.stop().await;

        // Peer: 100 concurrent bare POSTs of the last event's body (its version renamed, so
        // its arrivals are told apart), from one client.
        let sent = arrivals.body.lock().unwrap().clone();
        let client = reqwest::Client::new();
        let mut peer = Vec::new();
        for round in 0..=rotations {
            let version = format!("peer-{round:04}");
            let body = sent.replace(&last_version, &version);
            let started = Instant::now();
            for port in &ports {
                let (client, body) = (client.clone(), body.clone());
                let url = format!("http://127.0.0.1:{port}/hook");
                tokio::spawn(async move {
                    client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("peer POST")
                });
            }
            let (_, last_at) = arrivals.all(&version).await;
            if round > 0 {
                peer.push(last_at - started);
            }
        }

        println!(
            "promotion to all {CONSUMERS} loopback consumers notified, {rotations} rotations (ms)"
        );
        println!("{:<44} {:>8} {:>8} {:>8}", "what", "p50", "p95", "max");
        row("rekeyd: promotion → last consumer", &mut ours);
        row("rekeyd: promotion → first consumer", &mut first);
        row("peer: 100 concurrent reqwest POSTs → last", &mut peer);
        let p50 = |s: &[Duration]| percentile(s, 50).as_secs_f64();
        println!(
            "ratio rekeyd/peer (p50): {:.1}x; target: under {} ms → {}",
            p50(&ours) / p50(&peer),
            TARGET.as_millis(),
            if percentile(&ours, 95) < TARGET {
                "met (p95)"
            } else {
                "NOT met (p95)"
            }
        );
        engine.audit().close().await;
    });
}
