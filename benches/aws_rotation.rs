//! `cargo bench --bench aws_rotation`: rotate N = 1,000 secrets in AWS Secrets Manager
//! (moto_server) through rekeyd's engine, against the floor: the same minimal SDK calls
//! issued directly in a tight loop, with the same concurrency, in the same run.
//!
//! Each side runs on a fresh moto with N secrets seeded (moto slows down as its store
//! grows, so neither side may inherit the other's). rekeyd's side is `Engine::rotate_manually`
//! per secret, with a real fsynced audit log; the floor is
//! `ListSecretVersionIds` + `PutSecretValue` + `UpdateSecretVersionStage` per secret. An
//! SDK interceptor on each client counts every call and how many were in flight at once.
//! Rounds alternate the order of the two sides; the median of each side is reported.
//!
//! `REKEYD_BENCH_N`, `REKEYD_BENCH_ROUNDS` and `REKEYD_BENCH_CONCURRENCY` change N, the
//! number of rounds and the rotations in flight. Under `cargo test` (no `--bench`) it runs
//! 20 secrets once, and checks the call counts. docs/aws.md records a result.

#[path = "../tests/common/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;
use moto::{Moto, REGION};
use rekeyd::audit::{AuditLog, Fingerprinter};
use rekeyd::backend::Backend;
use rekeyd::backend::aws::{AwsBackend, client_config};
use rekeyd::policy::{AwsBackendConfig, CredentialsEnv, Policy};
use rekeyd::rotation::Engine;
use ring::rand::SystemRandom;

/// Rotations in flight at once, on both sides (`REKEYD_BENCH_CONCURRENCY`, at least 4).
fn concurrency() -> usize {
    static CONCURRENCY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CONCURRENCY.get_or_init(|| {
        std::env::var("REKEYD_BENCH_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8)
            .max(4)
    })
}

/// Counts calls by operation, and the most that were in flight at once.
#[derive(Debug, Default)]
struct Counter {
    calls: Mutex<BTreeMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Counting(Arc<Counter>);

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "Counting"
    }

    fn read_before_serialization(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map_or("?".to_owned(), |m| m.name().to_owned());
        *self.0.calls.lock().unwrap().entry(op).or_default() += 1;
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Run {
    elapsed: Duration,
    calls: BTreeMap<String, usize>,
    max_in_flight: usize,
    /// CPU seconds of the bench process (the client side) and of moto during the run.
    client_cpu: f64,
    moto_cpu: f64,
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// CPU use of this process and of moto, to take differences of.
fn cpu_now(moto: &Moto) -> (f64, f64) {
    (cpu_seconds("self"), cpu_seconds(&moto.pid().to_string()))
}

fn config(moto: &Moto) -> AwsBackendConfig {
    AwsBackendConfig {
        region: Some(REGION.to_owned()),
        endpoint_url: Some(moto.url.clone()),
        // moto takes any key pair: two variables cargo sets for every bench process.
        credentials_env: Some(CredentialsEnv {
            access_key_id: "CARGO_PKG_NAME".to_owned(),
            secret_access_key: "CARGO_PKG_VERSION".to_owned(),
            session_token: None,
        }),
        ..AwsBackendConfig::default()
    }
}

/// A client exactly as rekeyd builds it, plus the counting interceptor.
async fn client(moto: &Moto) -> (Client, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    let conf = client_config("aws", &config(moto))
        .await
        .expect("client config")
        .interceptor(Counting(Arc::clone(&counter)))
        .build();
    (Client::from_conf(conf), counter)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench/secret-{i:05}")).collect()
}

/// A fresh moto with `n` secrets, each with one current version.
async fn seeded(n: usize) -> Moto {
    let moto = Moto::start();
    let (client, _) = client(&moto).await;
    run_concurrently(names(n), move |name| {
        let client = client.clone();
        async move {
            client
                .create_secret()
                .name(name)
                .secret_string("seed-value-0000000000000000")
                .send()
                .await
                .expect("seed");
        }
    })
    .await;
    moto
}

/// Runs `work` for every item, `concurrency()` at a time.
async fn run_concurrently<F, Fut>(items: Vec<String>, work: F)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency() {
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

fn policy(n: usize, dir: &Path) -> Policy {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[backends.aws]\ntype = \"aws\"\nregion = \"{REGION}\"\n\n\
         [defaults]\nbackend = \"aws\"\ngrace = \"0s\"\nschedule = {{ every = \"30d\" }}\n\
         generator = {{ type = \"password\", length = 32 }}\n\n",
        dir.display()
    );
    for name in names(n) {
        text.push_str(&format!("[[secrets]]\nname = \"{name}\"\n"));
    }
    rekeyd::policy::parse(&dir.join("bench.toml"), &text).expect("bench policy")
}

/// rekeyd: `Engine::rotate_manually` per secret, with an fsynced audit log.
async fn rekeyd_side(n: usize) -> Run {
    let moto = seeded(n).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy(n, dir.path());
    let (client, counter) = client(&moto).await;
    let backend: Arc<dyn Backend> =
        Arc::new(AwsBackend::with_client("aws", client, &config(&moto)));
    let audit = AuditLog::open(&policy.daemon.audit_log)
        .await
        .expect("audit log");
    let (fingerprinter, _) =
        Fingerprinter::load_or_create(&policy.daemon.audit_key_file).expect("fingerprint key");
    let engine = Arc::new(Engine::new(
        BTreeMap::from([("aws".to_owned(), backend)]),
        audit,
        fingerprinter,
    ));
    let secrets: BTreeMap<String, _> = policy
        .secrets
        .iter()
        .map(|s| (s.name.to_string(), s.clone()))
        .collect();
    let secrets = Arc::new(secrets);
    let cpu = cpu_now(&moto);
    let started = Instant::now();
    let work_engine = Arc::clone(&engine);
    run_concurrently(names(n), move |name| {
        let (engine, secrets) = (Arc::clone(&work_engine), Arc::clone(&secrets));
        async move {
            engine
                .rotate_manually(&secrets[&name], "bench", true)
                .await
                .expect("rotation");
        }
    })
    .await;
    let elapsed = started.elapsed();
    let run = finish(elapsed, &counter, &moto, cpu);
    let audit = engine.audit().stats();
    println!(
        "         rekeyd audit: {} entries in {} fsyncs",
        audit.appended, audit.fsyncs
    );
    engine.audit().close().await;
    run
}

/// The floor: the minimal calls, issued directly.
async fn floor_side(n: usize) -> Run {
    let moto = seeded(n).await;
    let (client, counter) = client(&moto).await;
    let rng = Arc::new(SystemRandom::new());
    let spec = policy(1, Path::new("/tmp")).secrets[0].generator.clone();
    let cpu = cpu_now(&moto);
    let started = Instant::now();
    run_concurrently(names(n), move |name| {
        let (client, rng, spec) = (client.clone(), Arc::clone(&rng), spec.clone());
        async move {
            let token = format!("floor-{}-{name}", "0".repeat(20)).replace('/', "-");
            let versions = client
                .list_secret_version_ids()
                .secret_id(&name)
                .send()
                .await
                .expect("list");
            let current = versions
                .versions()
                .iter()
                .find(|v| v.version_stages().iter().any(|s| s == "AWSCURRENT"))
                .and_then(|v| v.version_id())
                .expect("current")
                .to_owned();
            let value = rekeyd::generate::generate(&spec, None, rng.as_ref()).expect("value");
            client
                .put_secret_value()
                .secret_id(&name)
                .client_request_token(&token)
                .secret_string(value.expose_str().expect("text"))
                .version_stages("AWSPENDING")
                .send()
                .await
                .expect("put");
            client
                .update_secret_version_stage()
                .secret_id(&name)
                .version_stage("AWSCURRENT")
                .move_to_version_id(&token)
                .remove_from_version_id(current)
                .send()
                .await
                .expect("promote");
        }
    })
    .await;
    finish(started.elapsed(), &counter, &moto, cpu)
}

fn finish(elapsed: Duration, counter: &Counter, moto: &Moto, before: (f64, f64)) -> Run {
    let after = cpu_now(moto);
    Run {
        elapsed,
        calls: counter.calls.lock().unwrap().clone(),
        max_in_flight: counter.max_in_flight.load(Ordering::SeqCst),
        client_cpu: after.0 - before.0,
        moto_cpu: after.1 - before.1,
    }
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.elapsed);
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn report(label: &str, run: &Run, n: usize) {
    let total: usize = run.calls.values().sum();
    println!(
        "{label:>7}: {:>7.1} rotations/s  {:>6.2}s  {:.3} calls/rotation  max in flight {}  \
         CPU: client {:.2}s, moto {:.2}s",
        n as f64 / run.elapsed.as_secs_f64(),
        run.elapsed.as_secs_f64(),
        total as f64 / n as f64,
        run.max_in_flight,
        run.client_cpu,
        run.moto_cpu
    );
    for (op, count) in &run.calls {
        println!(
            "           {op:<26} {count:>6}  ({:.3}/rotation)",
            *count as f64 / n as f64
        );
    }
}

fn main() {
    let env = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a smoke test of
    // the call counts, on a few secrets.
    let benching = std::env::args().any(|a| a == "--bench");
    let n = env("REKEYD_BENCH_N", if benching { 1000 } else { 20 });
    let rounds = env("REKEYD_BENCH_ROUNDS", if benching { 3 } else { 1 }).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "rotating {n} secrets on moto_server, {} in flight, {rounds} round(s) per side",
        concurrency()
    );
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side goes first, so neither always gets the warmer machine.
        if round % 2 == 0 {
            floor.push(runtime.block_on(floor_side(n)));
            ours.push(runtime.block_on(rekeyd_side(n)));
        } else {
            ours.push(runtime.block_on(rekeyd_side(n)));
            floor.push(runtime.block_on(floor_side(n)));
        }
        println!(
            "round {}: floor {:.2}s, rekeyd {:.2}s (load average {})",
            round + 1,
            floor[round].elapsed.as_secs_f64(),
            ours[round].elapsed.as_secs_f64(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        );
    }
    let (ours, floor) = (median(ours), median(floor));
    report("floor", &floor, n);
    report("rekeyd", &ours, n);
    // The protocol minimum: the floor's calls, plus only the native-rotation sweep.
    let mut ours_per_rotation = ours.calls.clone();
    let sweep = ours_per_rotation.remove("ListSecrets").unwrap_or(0);
    assert_eq!(
        ours_per_rotation, floor.calls,
        "rekeyd makes the floor's calls"
    );
    assert_eq!(
        sweep,
        n.div_ceil(100),
        "one ListSecrets page per 100 secrets"
    );
    assert!(ours.max_in_flight >= 4 && floor.max_in_flight >= 4);
    println!(
        "ratio rekeyd/floor (time): {:.3}",
        ours.elapsed.as_secs_f64() / floor.elapsed.as_secs_f64()
    );
}
