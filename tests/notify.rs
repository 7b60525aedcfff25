//! Webhook notifications end to end: the real `rekeyd` binary against a real HTTP receiver
//! on loopback that checks every signature with the reference `standardwebhooks` verifier
//! (Python), never with rekeyd's own code.
//!
//! Signatures and envelopes, retries with backoff and `Retry-After`, final 4xx, 410, the
//! circuit breaker, crash and `kill -9` with undelivered messages, coalescing, and
//! promotion gates (confirmed by a 2xx or by `rekeyd confirm`, refused, timed out,
//! interrupted by a crash).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::receiver::{Receiver, Request};
use common::{Daemon, Sandbox, signal, wait_for};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

/// A `whsec_` key of 32 bytes of `byte`.
fn key(byte: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// A sandbox whose policy is the shared header plus `rest`, with key files written.
fn sandbox(rest: &str, keys: &[(&str, &str)]) -> Sandbox {
    let sandbox = Sandbox::new(rest);
    for (file, key) in keys {
        std::fs::write(sandbox.path(file), format!("{key}\n")).expect("key file");
    }
    sandbox
}

/// Requests grouped by `webhook-id`.
fn by_id(requests: &[Request]) -> BTreeMap<String, Vec<Request>> {
    let mut out: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in requests {
        out.entry(r.id.clone()).or_default().push(r.clone());
    }
    out
}

/// Requests answered 2xx.
fn delivered(requests: &[Request]) -> Vec<Request> {
    requests
        .iter()
        .filter(|r| (200..300).contains(&r.status) && r.delay_ms == 0)
        .cloned()
        .collect()
}

fn current_id(sandbox: &Sandbox, name: &str) -> String {
    sandbox.status(name)["current"]["id"]
        .as_str()
        .expect("a current version")
        .to_owned()
}

fn audit_of(sandbox: &Sandbox, event: &str) -> Vec<Value> {
    sandbox
        .audit_entries()
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

fn queued_files(sandbox: &Sandbox) -> Vec<String> {
    outbox_files(sandbox, "queue")
}

/// The `.json` files of an outbox directory (`queue` or `done`).
fn outbox_files(sandbox: &Sandbox, dir: &str) -> Vec<String> {
    match std::fs::read_dir(sandbox.path(&format!("state/outbox/{dir}"))) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every file under `dir`, as text (the outbox, confirmations, the audit log, stores).
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&all_text(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

fn assert_envelope(r: &Request) -> Value {
    let body = r.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["type", "timestamp", "data"]),
        "{}",
        r.body
    );
    assert_eq!(body["type"], r.kind.as_str());
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap())
        .expect("an RFC 3339 timestamp");
    assert!(r.id.starts_with("msg_") && r.id.len() == 36, "{}", r.id);
    assert_eq!(r.content_type, "application/json");
    body
}

#[test]
fn signatures_verify_with_the_reference_library_and_bodies_never_carry_values() {
    let (new, old, wrong) = (key(1), key(2), key(3));
    let rx = Receiver::start(&[&new, &old, &wrong]);
    let sandbox = sandbox(
        &format!(
            r#"
[notify.hooks]
url = "{}"
secret_file = ["new.whsec", "old.whsec"]

[notify.plain]
url = "{}"
secret_env = "PLAIN_WHSEC"

[[secrets]]
name = "app/db"
schedule = {{ every = "30d" }}
notify = ["hooks", "plain"]
"#,
            rx.url("/hooks"),
            rx.url("/plain")
        ),
        &[("new.whsec", &new), ("old.whsec", &old)],
    );
    let rotate = |args: &[&str]| {
        let out = sandbox
            .command(args)
            .env("PLAIN_WHSEC", &new)
            .output()
            .expect("run rekeyd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let first_run = rotate(&["rotate", "app/db"]);
    let first = current_id(&sandbox, "app/db");
    let second_run = rotate(&["rotate", "app/db", "--force"]);
    let second = current_id(&sandbox, "app/db");
    assert_ne!(first, second);

    // The CLI delivered everything it queued before exiting: 2 events x 2 rotations x 2
    // targets, each once.
    let requests = rx.requests();
    assert_eq!(requests.len(), 8, "{requests:#?}");
    assert!(queued_files(&sandbox).is_empty());
    for r in &requests {
        let body = assert_envelope(r);
        let data = &body["data"];
        assert_eq!(data["secret"], "app/db");
        assert_eq!(data["backend"], "local");
        match r.path.as_str() {
            // Signed with both keys during the rollover: either key verifies, a third does not.
            "/hooks" => {
                assert_eq!(r.verified, [true, true, false], "{}", r.signature);
                assert_eq!(r.signature.split(' ').count(), 2);
                assert!(r.signature.split(' ').all(|s| s.starts_with("v1,")));
            }
            "/plain" => {
                assert_eq!(r.verified, [true, false, false], "{}", r.signature);
                assert_eq!(r.signature.split(' ').count(), 1);
            }
            other => panic!("unexpected path {other}"),
        }
        let version = data["version"].as_str().unwrap();
        match r.kind.as_str() {
            "secret.rotation.pending" => {
                assert_eq!(data["stage"], "pending");
                if version == second {
                    assert_eq!(
                        data["current"],
                        first.as_str(),
                        "the version consumers keep"
                    );
                } else {
                    assert_eq!(version, first);
                    assert!(data.get("current").is_none());
                }
            }
            "secret.rotated" => {
                assert_eq!(data["stage"], "current");
                if version == second {
                    assert_eq!(data["previous"], first.as_str());
                    assert_eq!(data["trigger"], "manual");
                } else {
                    assert_eq!(version, first);
                }
            }
            other => panic!("unexpected type {other}"),
        }
    }
    let ids = by_id(&requests);
    assert_eq!(ids.len(), 8, "every event has its own id");
    let audited: BTreeSet<String> = audit_of(&sandbox, "notification_delivered")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(audited, ids.keys().cloned().collect());

    // Canaries: neither value appears in any body or header, nor in what rekeyd wrote.
    let values = [
        sandbox.get("app/db", "current"),
        sandbox.get("app/db", "previous"),
    ];
    // The outbox, the audit log, the store (sealed) and everything else rekeyd keeps.
    let state = all_text(&sandbox.path("state"));
    for value in &values {
        assert!(value.len() >= 24);
        for r in &requests {
            assert!(!r.body.contains(value.as_str()) && !r.signature.contains(value.as_str()));
        }
        assert!(
            !state.contains(value.as_str()),
            "a value in the outbox or audit log"
        );
        for out in [&first_run, &second_run] {
            assert!(!String::from_utf8_lossy(&out.stderr).contains(value.as_str()));
            assert!(!String::from_utf8_lossy(&out.stdout).contains(value.as_str()));
        }
    }
    // Nor do the signing keys.
    let key_text = new.trim_start_matches("whsec_");
    assert!(!state.contains(key_text));
}

/// `max_in_flight` bounds the deliveries under way to one target, and lets that many go
/// at once. Read from the receiver's arrival times: it answers each request after
/// `DELAY`, and a sender that waits for an answer cannot send into that time.
#[test]
fn a_target_gets_at_most_max_in_flight_deliveries_at_once() {
    const DELAY: f64 = 0.4;
    let k = key(12);
    let rx = Receiver::start(&[&k]);
    rx.script(json!({ "default": {"status": 200, "delay_ms": 400} }));
    let secrets: String = (1..=5)
        .map(|i| {
            format!("\n[[secrets]]\nname = \"app{i}\"\nschedule = {{ every = \"30d\" }}\nnotify = [\"hooks\"]\n")
        })
        .collect();
    let sandbox = sandbox(
        &format!(
            "\n[notify.hooks]\nurl = \"{}\"\nsecret_file = \"k.whsec\"\nmax_in_flight = 2\n{secrets}",
            rx.url("/hooks")
        ),
        &[("k.whsec", &k)],
    );
    sandbox.ok(&["run", "--once"]);

    let requests = rx.requests();
    // Each secret's pending and rotated events, each answered once.
    assert_eq!(requests.len(), 10, "{requests:#?}");
    assert_eq!(by_id(&requests).len(), 10);
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 && r.verified == [true])
    );
    // Each request is under way for at least DELAY from its arrival.
    let arrivals: Vec<f64> = requests.iter().map(|r| r.at).collect();
    let most_at_once = arrivals
        .iter()
        .map(|&start| {
            arrivals
                .iter()
                .filter(|&&at| at >= start && at < start + DELAY)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most_at_once, 2, "arrivals: {arrivals:?}");
}

#[test]
fn failures_are_retried_with_backoff_honouring_retry_after_then_delivered_once() {
    let k = key(7);
    let rx = Receiver::start(&[&k]);
    // The rotated event: slower than the timeout, then 500, then 429 with Retry-After.
    rx.script(json!({
        "rules": [
            {"type": "secret.rotated", "times": 1, "delay_ms": 1500, "status": 200},
            {"type": "secret.rotated", "times": 1, "status": 500},
            {"type": "secret.rotated", "times": 1, "status": 429, "retry_after": "1"}
        ],
        "default": {"status": 200}
    }));
    let sandbox = sandbox(
        &format!(
            r#"
[notify.hooks]
url = "{}"
secret_file = "hooks.whsec"
timeout = "300ms"
backoff = "100ms"
max_backoff = "200ms"
breaker_failures = 100

[[secrets]]
name = "app"
schedule = {{ every = "30d" }}
notify = ["hooks"]
"#,
            rx.url("/hooks")
        ),
        &[("hooks.whsec", &k)],
    );
    sandbox.ok(&["rotate", "app"]);

    let requests = rx.requests();
    let rotated: Vec<&Request> = requests
        .iter()
        .filter(|r| r.kind == "secret.rotated")
        .collect();
    assert_eq!(rotated.len(), 4, "{rotated:#?}");
    assert!(
        rotated.iter().all(|r| r.id == rotated[0].id),
        "one id on every attempt"
    );
    assert!(rotated.iter().all(|r| r.verified == [true]));
    assert_eq!(
        rotated.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 500, 429, 200]
    );
    let gap = |i: usize| rotated[i + 1].at - rotated[i].at;
    // Attempt 1 timed out after 300ms, then waited ~100ms (±20%).
    assert!(gap(0) >= 0.3 + 0.08, "gap after the timeout: {}", gap(0));
    // Attempt 2's 500: ~200ms backoff.
    assert!(gap(1) >= 0.16, "gap after the 500: {}", gap(1));
    // Attempt 3's 429 asked for 1s: more than the backoff would have waited.
    assert!(gap(2) >= 0.99, "gap after Retry-After: 1: {}", gap(2));

    let id = rotated[0].id.as_str();
    let failures: Vec<String> = audit_of(&sandbox, "notification_attempt_failed")
        .iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].contains("timed out"), "{failures:?}");
    assert!(failures[1].contains("HTTP 500") && failures[2].contains("HTTP 429"));
    let done = audit_of(&sandbox, "notification_delivered");
    let done: Vec<&Value> = done.iter().filter(|e| e["id"] == id).collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["attempts"], 4);
    // No URL in the audit log (it may carry a token).
    assert!(
        !std::fs::read_to_string(sandbox.audit_log())
            .unwrap()
            .contains("127.0.0.1")
    );
}

#[test]
fn a_4xx_is_final_and_a_410_disables_the_endpoint_for_good() {
    let k = key(9);
    let rx = Receiver::start(&[&k]);
    rx.script(json!({
        "rules": [{"path": "/strict", "status": 400}, {"path": "/gone", "status": 410}],
        "default": {"status": 200}
    }));
    let sandbox = sandbox(
        &format!(
            r#"
[notify.strict]
url = "{}"
secret_file = "k.whsec"
backoff = "10ms"

[notify.gone]
url = "{}"
secret_file = "k.whsec"
backoff = "10ms"

[[secrets]]
name = "app"
schedule = {{ every = "30d" }}
notify = ["strict", "gone"]
"#,
            rx.url("/strict"),
            rx.url("/gone")
        ),
        &[("k.whsec", &k)],
    );
    sandbox.ok(&["rotate", "app"]);
    let gone_before = rx.requests().iter().filter(|r| r.path == "/gone").count();
    assert!(gone_before >= 1);
    assert!(!audit_of(&sandbox, "endpoint_disabled").is_empty());
    assert!(sandbox.path("state/outbox/disabled/gone.json").exists());

    // A later run (another process) sends nothing more to the disabled endpoint.
    sandbox.ok(&["rotate", "app", "--force"]);
    let requests = rx.requests();
    assert_eq!(
        requests.iter().filter(|r| r.path == "/gone").count(),
        gone_before
    );
    let failed = audit_of(&sandbox, "notification_failed");
    let disabled_reasons = failed
        .iter()
        .filter(|e| e["target"] == "gone" && e["reason"].as_str().unwrap().contains("disabled"))
        .count();
    assert!(disabled_reasons >= 2, "{failed:#?}");

    // Each 400 was final: one request per message, given up with the status.
    let strict: Vec<Request> = requests
        .iter()
        .filter(|r| r.path == "/strict")
        .cloned()
        .collect();
    assert_eq!(strict.len(), 4, "pending + rotated, twice");
    for (id, attempts) in by_id(&strict) {
        assert_eq!(attempts.len(), 1, "{id} was retried");
        let reason = failed
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not audited as failed"))["reason"]
            .clone();
        assert!(reason.as_str().unwrap().contains("HTTP 400"), "{reason}");
    }
    assert!(audit_of(&sandbox, "notification_attempt_failed").is_empty());
}

#[test]
fn the_breaker_opens_and_stops_hammering_a_failing_receiver() {
    let k = key(11);
    let rx = Receiver::start(&[&k]);
    rx.script(json!({
        "rules": [{"times": 6, "status": 500}],
        "default": {"status": 200}
    }));
    let sandbox = sandbox(
        &format!(
            r#"
[notify.hooks]
url = "{}"
secret_file = "k.whsec"
backoff = "10ms"
max_backoff = "20ms"
max_attempts = 100
breaker_failures = 3
breaker_cooldown = "1s"

[[secrets]]
name = "app"
schedule = {{ every = "30d" }}
notify = ["hooks"]
"#,
            rx.url("/hooks")
        ),
        &[("k.whsec", &k)],
    );
    sandbox.ok(&["run", "--once"]);

    let requests = rx.requests();
    // Six scripted failures, then each of the two messages delivered once.
    assert_eq!(requests.len(), 8, "{requests:#?}");
    assert_eq!(delivered(&requests).len(), 2);
    assert!(by_id(&delivered(&requests)).values().all(|v| v.len() == 1));
    // Retries are 10-20ms apart, yet once the breaker opened only one probe went out per
    // second: the six failures took at least three cooldowns.
    let long_gaps = requests
        .windows(2)
        .filter(|w| w[1].at - w[0].at >= 0.95)
        .count();
    assert!(long_gaps >= 3, "gaps: {:?}", gaps(&requests));
    let opened = audit_of(&sandbox, "endpoint_breaker_opened");
    assert!(opened.len() >= 2, "{opened:#?}");
    assert_eq!(opened[0]["failures"], 3);
    assert_eq!(audit_of(&sandbox, "endpoint_breaker_closed").len(), 1);
}

fn gaps(requests: &[Request]) -> Vec<f64> {
    requests.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// One secret, `app` (every 30 days), notifying target `hooks` at `url` signed with key
/// `k`; `extra` holds the target's other settings, a line each.
fn app_notifying_hooks(url: &str, k: &str, extra: &str) -> Sandbox {
    sandbox(
        &format!(
            "\n[notify.hooks]\nurl = \"{url}\"\nsecret_file = \"k.whsec\"\n{extra}\n\
             [[secrets]]\nname = \"app\"\nschedule = {{ every = \"30d\" }}\nnotify = [\"hooks\"]\n"
        ),
        &[("k.whsec", k)],
    )
}

fn start_daemon(sandbox: &Sandbox) -> Daemon {
    sandbox
        .command(&["run", "--log", "debug"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Daemon)
        .expect("start daemon")
}

#[test]
fn kill_9_with_undelivered_notifications_then_restart_delivers_each_once() {
    let k = key(13);
    let mut rx = Receiver::start(&[&k]);
    let url = rx.url("/hooks");
    // The receiver is down: connections are refused.
    rx.stop();
    let sandbox = sandbox(
        &format!(
            r#"
[notify.hooks]
url = "{url}"
secret_file = "k.whsec"
backoff = "200ms"
max_backoff = "500ms"
breaker_failures = 1000

[[secrets]]
name = "a"
schedule = {{ every = "30d" }}
notify = ["hooks"]

[[secrets]]
name = "b"
schedule = {{ every = "30d" }}
notify = ["hooks"]

[[secrets]]
name = "c"
schedule = {{ every = "30d" }}
notify = ["hooks"]
"#
        ),
        &[("k.whsec", &k)],
    );
    let mut daemon = start_daemon(&sandbox);
    // Every rotation done and every one of the six messages tried at least once.
    wait_for("six messages to fail at least once", LIMIT, || {
        let tried: BTreeSet<String> = audit_of(&sandbox, "notification_attempt_failed")
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        (tried.len() >= 6 && audit_of(&sandbox, "rotation_succeeded").len() == 3).then_some(())
    });
    let errors = audit_of(&sandbox, "notification_attempt_failed");
    assert!(errors[0]["error"].as_str().unwrap().contains("connection"));
    daemon.kill().expect("kill -9");
    daemon.wait().unwrap();
    let undelivered = queued_files(&sandbox);
    assert_eq!(undelivered.len(), 6, "{undelivered:?}");

    rx.restart();
    let daemon = start_daemon(&sandbox);
    wait_for("the outbox to empty", LIMIT, || {
        queued_files(&sandbox).is_empty().then_some(())
    });
    let mut daemon = daemon;
    signal(&daemon, "TERM");
    wait_for("the daemon to exit", LIMIT, || daemon.try_wait().unwrap());

    let requests = rx.requests();
    assert!(requests.iter().all(|r| r.verified == [true]));
    let ok = by_id(&delivered(&requests));
    // Exactly the messages left undelivered by the kill, each delivered once.
    let expected: BTreeSet<String> = undelivered
        .iter()
        .map(|f| f.trim_end_matches(".json").to_owned())
        .collect();
    assert_eq!(ok.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(ok.values().all(|v| v.len() == 1), "a 2xx twice: {ok:#?}");
    // One pending and one rotated event per secret, the rotated one naming the version
    // that is current.
    for name in ["a", "b", "c"] {
        let current = current_id(&sandbox, name);
        for kind in ["secret.rotation.pending", "secret.rotated"] {
            let ids: BTreeSet<&str> = requests
                .iter()
                .filter(|r| r.kind == kind && r.json()["data"]["secret"] == name)
                .map(|r| r.id.as_str())
                .collect();
            assert_eq!(ids.len(), 1, "{name} {kind}: {ids:?}");
            let r = &ok[*ids.iter().next().unwrap()][0];
            assert_eq!(r.json()["data"]["version"], current.as_str());
        }
    }
}

#[test]
fn a_crash_at_each_notification_step_loses_nothing_and_duplicates_only_under_one_id() {
    for point in [
        "after_pending_notified",
        "after_rotated_notified",
        "notify_after_send",
        "notify_after_outcome_audited",
    ] {
        let k = key(17);
        let rx = Receiver::start(&[&k]);
        let sandbox = sandbox(
            &format!(
                r#"
[notify.hooks]
url = "{}"
secret_file = "k.whsec"

[[secrets]]
name = "app"
schedule = {{ every = "30d" }}
notify = ["hooks"]
"#,
                rx.url("/hooks")
            ),
            &[("k.whsec", &k)],
        );
        let out = sandbox
            .command(&["run", "--once"])
            .env("REKEYD_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(6), "{point}: expected an abort");
        sandbox.ok(&["run", "--once"]);

        let current = current_id(&sandbox, "app");
        let requests = rx.requests();
        assert!(requests.iter().all(|r| r.verified == [true]), "{point}");
        assert!(
            queued_files(&sandbox).is_empty(),
            "{point}: left in the outbox"
        );
        let ok = by_id(&delivered(&requests));
        for kind in ["secret.rotation.pending", "secret.rotated"] {
            let ids: Vec<&String> = ok
                .iter()
                .filter(|(_, rs)| rs[0].kind == kind)
                .map(|(id, _)| id)
                .collect();
            assert_eq!(ids.len(), 1, "{point}: {kind} under one id: {ok:#?}");
            assert_eq!(ok[ids[0]][0].json()["data"]["version"], current.as_str());
        }
        // A repeat is the same message: same id, same bytes.
        for (id, rs) in &ok {
            assert!(
                rs.iter().all(|r| r.body == rs[0].body),
                "{point}: {id}: {:#?}",
                rs.iter()
                    .map(|r| (&r.body, r.status, r.at))
                    .collect::<Vec<_>>()
            );
        }
        // At least once: a message the crash caught between its 2xx and the record of it
        // is sent again (once, by the restart), never under a new id.
        assert!(ok.values().all(|rs| rs.len() <= 2), "{point}: {ok:#?}");
        if point == "notify_after_send" || point == "notify_after_outcome_audited" {
            // That is exactly where these points crash.
            assert!(ok.values().any(|rs| rs.len() == 2), "{point}: {ok:#?}");
        }
        // Every outcome the outbox recorded is in the audit log, crash or not.
        let audited: BTreeSet<String> = audit_of(&sandbox, "notification_delivered")
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        for done in outbox_files(&sandbox, "done") {
            let id = done.trim_end_matches(".json");
            assert!(audited.contains(id), "{point}: {id} done but not audited");
        }
    }
}

/// Secrets `a`, `b` and `c` notifying one receiver that coalesces within 2 s.
fn coalescing(k: &str) -> (Receiver, Sandbox) {
    let rx = Receiver::start(&[k]);
    let mut policy = format!(
        "\n[notify.hooks]\nurl = \"{}\"\nsecret_file = \"k.whsec\"\nwindow = \"2s\"\n",
        rx.url("/hooks")
    );
    for name in ["a", "b", "c"] {
        policy.push_str(&format!(
            "\n[[secrets]]\nname = \"{name}\"\nschedule = {{ every = \"30d\" }}\nnotify = [\"hooks\"]\n"
        ));
    }
    let sandbox = sandbox(&policy, &[("k.whsec", k)]);
    (rx, sandbox)
}

#[test]
fn rotations_within_a_window_are_coalesced_into_one_signed_batch() {
    let (rx, sandbox) = coalescing(&key(19));
    sandbox.ok(&["run", "--once"]);

    let requests = rx.requests();
    assert!(requests.len() < 6, "{requests:#?}");
    let mut inner = Vec::new();
    for r in &requests {
        assert_eq!(r.verified, [true]);
        let body = assert_envelope(r);
        if r.kind == "secret.batch" {
            let events = body["data"]["events"].as_array().unwrap();
            assert!(events.len() >= 2);
            for e in events {
                assert!(e["id"].as_str().unwrap().starts_with("msg_"));
                inner.push((
                    e["id"].as_str().unwrap().to_owned(),
                    e["type"].clone(),
                    e["data"].clone(),
                ));
            }
        } else {
            inner.push((r.id.clone(), body["type"].clone(), body["data"].clone()));
        }
    }
    assert!(requests.iter().any(|r| r.kind == "secret.batch"));
    // Every one of the six events, once.
    assert_eq!(inner.len(), 6, "{inner:#?}");
    let ids: BTreeSet<&String> = inner.iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids.len(), 6);
    for name in ["a", "b", "c"] {
        for kind in ["secret.rotation.pending", "secret.rotated"] {
            assert_eq!(
                inner
                    .iter()
                    .filter(|(_, t, d)| *t == kind && d["secret"] == name)
                    .count(),
                1,
                "{name} {kind}"
            );
        }
    }
    assert!(!audit_of(&sandbox, "notifications_coalesced").is_empty());
}

/// A crash after a batch replaced its parts in the outbox, before the link was audited:
/// the restart sends the batch and the audit log still says which messages it carries.
#[test]
fn a_crash_before_a_batch_is_audited_still_links_it_to_its_parts() {
    let (rx, sandbox) = coalescing(&key(23));
    let out = sandbox
        .command(&["run", "--once"])
        .env("REKEYD_CRASH_AT", "notify_after_batch_stored")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(6), "expected an abort");
    assert!(audit_of(&sandbox, "notifications_coalesced").is_empty());
    sandbox.ok(&["run", "--once"]);

    assert!(queued_files(&sandbox).is_empty(), "left in the outbox");
    let links: BTreeMap<String, BTreeSet<String>> = audit_of(&sandbox, "notifications_coalesced")
        .iter()
        .map(|e| {
            let parts = e["parts"].as_array().unwrap();
            let parts = parts.iter().map(|p| p.as_str().unwrap().to_owned());
            (e["id"].as_str().unwrap().to_owned(), parts.collect())
        })
        .collect();
    let requests = rx.requests();
    let batches: Vec<&Request> = requests
        .iter()
        .filter(|r| r.kind == "secret.batch")
        .collect();
    assert!(!batches.is_empty(), "{requests:#?}");
    for batch in batches {
        assert_eq!(batch.verified, [true]);
        let carried: BTreeSet<String> = batch.json()["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            links.get(&batch.id),
            Some(&carried),
            "batch {} is audited with the parts it carries",
            batch.id
        );
    }
    let out = sandbox.run(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(out.status.success());
}

/// A gated secret: `payments` must confirm before promotion.
fn gated(rx: &Receiver, k: &str, timeout: &str) -> Sandbox {
    let sandbox = sandbox(
        &format!(
            r#"
[notify.payments]
url = "{}"
secret_file = "k.whsec"
backoff = "100ms"
max_backoff = "200ms"
breaker_failures = 1000

[[secrets]]
name = "pay/key"
schedule = {{ every = "30d" }}
notify = ["payments"]
confirm = ["payments"]
confirm_timeout = "{timeout}"
"#,
            rx.url("/payments")
        ),
        &[("k.whsec", k)],
    );
    // The first version, confirmed by a plain 2xx.
    sandbox.ok(&["rotate", "pay/key"]);
    sandbox
}

fn store_versions(sandbox: &Sandbox) -> Vec<(String, Vec<String>)> {
    let record = sandbox.store_record("pay%2Fkey.json");
    record["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["stages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// The secret is exactly as it was: same current value and id, nothing pending.
fn assert_untouched(sandbox: &Sandbox, id: &str, value: &str, before: &[(String, Vec<String>)]) {
    assert_eq!(current_id(sandbox, "pay/key"), id);
    assert_eq!(sandbox.get("pay/key", "current"), value);
    assert_eq!(store_versions(sandbox), before);
}

#[test]
fn a_gate_confirmed_by_a_2xx_promotes_after_the_confirmation() {
    let k = key(23);
    let rx = Receiver::start(&[&k]);
    let sandbox = gated(&rx, &k, "10s");
    let first = current_id(&sandbox, "pay/key");
    sandbox.ok(&["rotate", "pay/key", "--force"]);
    let second = current_id(&sandbox, "pay/key");
    assert_ne!(first, second);

    let pending: Vec<Request> = rx
        .requests()
        .into_iter()
        .filter(|r| {
            r.kind == "secret.rotation.pending" && r.json()["data"]["version"] == second.as_str()
        })
        .collect();
    assert_eq!(pending.len(), 1);
    let data = pending[0].json()["data"].clone();
    assert_eq!(data["confirm"], json!(["payments"]));
    assert_eq!(data["current"], first.as_str());
    assert!(data["confirm_by"].is_string());

    // The confirmation is audited before the promotion.
    let entries = sandbox.audit_entries();
    let position = |event: &str| {
        entries
            .iter()
            .position(|e| e["event"] == event && e["version"] == second.as_str())
            .unwrap_or_else(|| panic!("no {event} for {second}"))
    };
    let confirmed = &entries[position("confirmation_recorded")];
    assert_eq!(
        (&confirmed["decision"], &confirmed["via"]),
        (&json!("confirmed"), &json!("response"))
    );
    assert!(position("confirmation_recorded") < position("promoted"));
}

#[test]
fn a_refused_or_unconfirmed_gate_leaves_the_current_version_untouched() {
    for (case, answer, timeout) in [
        ("refused", json!({"status": 409}), "30s"),
        ("timed out", json!({"status": 503}), "2s"),
    ] {
        let k = key(29);
        let rx = Receiver::start(&[&k]);
        let sandbox = gated(&rx, &k, timeout);
        let (id, value) = (
            current_id(&sandbox, "pay/key"),
            sandbox.get("pay/key", "current"),
        );
        let before = store_versions(&sandbox);
        let mut rule = answer.clone();
        rule["type"] = json!("secret.rotation.pending");
        rx.script(json!({"rules": [rule], "default": {"status": 200}}));

        let out = sandbox.run(&["rotate", "pay/key", "--force"]);
        assert_eq!(out.status.code(), Some(1), "{case}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not promoted"), "{case}: {stderr}");
        assert_untouched(&sandbox, &id, &value, &before);

        // The consumers are told, with the version that stays current.
        let requests = rx.requests();
        let asked: Vec<&Request> = requests
            .iter()
            .filter(|r| {
                r.kind == "secret.rotation.pending" && r.json()["data"]["version"] != id.as_str()
            })
            .collect();
        assert!(!asked.is_empty(), "{case}");
        let attempted = asked[0].json()["data"]["version"]
            .as_str()
            .unwrap()
            .to_owned();
        let failed: Vec<Value> = delivered(&requests)
            .iter()
            .filter(|r| r.kind == "secret.rotation.failed")
            .map(|r| r.json()["data"].clone())
            .collect();
        assert_eq!(failed.len(), 1, "{case}: {requests:#?}");
        assert_eq!(failed[0]["version"], attempted.as_str());
        assert_eq!(failed[0]["current"], id.as_str());
        assert_eq!(failed[0]["stage"], "discarded");
        let reason = failed[0]["reason"].as_str().unwrap();
        match case {
            "refused" => assert!(
                reason.contains("refused") && reason.contains("409"),
                "{reason}"
            ),
            _ => assert!(reason.contains("no confirmation"), "{reason}"),
        }
        assert!(
            !requests
                .iter()
                .any(|r| r.kind == "secret.rotated"
                    && r.json()["data"]["version"] == attempted.as_str()),
            "{case}: announced as rotated"
        );
        let discarded = sandbox.events("pending_discarded", "pay/key");
        assert_eq!(discarded.len(), 1);
        assert!(
            discarded[0]["reason"]
                .as_str()
                .unwrap()
                .contains("not confirmed")
        );
        assert!(
            sandbox
                .events("rotation_failed", "pay/key")
                .iter()
                .any(|e| e["step"] == "confirm" && e["version"] == attempted.as_str())
        );
        assert!(queued_files(&sandbox).is_empty(), "{case}");
    }
}

#[test]
fn rekeyd_confirm_lets_a_waiting_rotation_promote() {
    let k = key(31);
    let rx = Receiver::start(&[&k]);
    let sandbox = gated(&rx, &k, "30s");
    let first = current_id(&sandbox, "pay/key");
    // The consumer never answers 2xx: only an explicit confirmation can open the gate.
    rx.script(json!({
        "rules": [{"type": "secret.rotation.pending", "status": 503}],
        "default": {"status": 200}
    }));
    let mut rotation = sandbox
        .command(&["rotate", "pay/key", "--force"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let version = wait_for("the pending event", LIMIT, || {
        rx.requests()
            .iter()
            .filter(|r| r.kind == "secret.rotation.pending")
            .map(|r| r.json()["data"]["version"].as_str().unwrap().to_owned())
            .find(|v| *v != first)
    });
    // Only the pending version can be confirmed, and only by a confirm target.
    let wrong = sandbox.run(&["confirm", "pay/key", &first, "--target", "payments"]);
    assert_eq!(wrong.status.code(), Some(4));
    let not_target = sandbox.run(&["confirm", "pay/key", &version, "--target", "billing"]);
    assert_eq!(not_target.status.code(), Some(6));

    // A confirmation cut short by a crash between its audit entry and its record: the
    // gate never acts on an answer the audit log lacks, so the rotation goes on waiting.
    let cut = sandbox
        .command(&[
            "confirm", "pay/key", &version, "--target", "payments", "--by", "mallory",
        ])
        .env("REKEYD_CRASH_AT", "after_confirmation_audited")
        .output()
        .unwrap();
    assert_eq!(cut.status.signal(), Some(6), "expected an abort");
    assert!(
        sandbox
            .events("confirmation_recorded", "pay/key")
            .iter()
            .any(|e| e["by"] == "mallory"),
        "audited before it counts"
    );
    assert!(
        rotation.try_wait().unwrap().is_none(),
        "the rotation went on without a recorded confirmation"
    );
    assert_eq!(current_id(&sandbox, "pay/key"), first);

    let out = sandbox.ok(&[
        "confirm", "pay/key", &version, "--target", "payments", "--by", "alice",
    ]);
    assert!(out.contains("confirmed"), "{out}");
    let status = wait_for("the rotation to finish", LIMIT, || {
        rotation.try_wait().unwrap()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(rotation.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(current_id(&sandbox, "pay/key"), version);
    let recorded: Vec<Value> = sandbox.events("confirmation_recorded", "pay/key");
    assert!(
        recorded
            .iter()
            .any(|e| e["via"] == "cli" && e["by"] == "alice" && e["version"] == version.as_str())
    );
}

#[test]
fn a_gated_rotation_interrupted_by_a_crash_waits_for_confirmation_again() {
    let k = key(37);
    let rx = Receiver::start(&[&k]);
    let sandbox = gated(&rx, &k, "10s");
    let pending_rule = |status: u16| {
        json!({
            "rules": [{"type": "secret.rotation.pending", "status": status}],
            "default": {"status": 200}
        })
    };
    // A manual rotation that aborts at `point`.
    let rotate_until = |point: &str| {
        let out = sandbox
            .command(&["rotate", "pay/key", "--force"])
            .env("REKEYD_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(6), "{point}: expected an abort");
    };
    let crash = |point: &str| {
        rotate_until(point);
        store_versions(&sandbox)
            .into_iter()
            .find(|(_, stages)| stages == &["pending"])
            .map(|(id, _)| id)
            .expect("a pending version survives the crash")
    };
    let pending_requests = |version: &str| {
        rx.requests()
            .iter()
            .filter(|r| {
                r.kind == "secret.rotation.pending" && r.json()["data"]["version"] == version
            })
            .count()
    };

    // 1. Crash while waiting, consumer silent; after the restart it refuses: not promoted.
    rx.script(pending_rule(503));
    let (id, value) = (
        current_id(&sandbox, "pay/key"),
        sandbox.get("pay/key", "current"),
    );
    let v1 = crash("after_pending_notified");
    let mut before = store_versions(&sandbox);
    before.retain(|(vid, _)| *vid != v1);
    rx.script(pending_rule(409));
    let out = sandbox.run(&["run", "--once"]);
    assert!(!out.status.success(), "a refused resume is a failure");
    assert_untouched(&sandbox, &id, &value, &before);
    assert!(
        sandbox
            .events("recovery_found", "pay/key")
            .iter()
            .any(|e| e["version"] == v1.as_str() && e["action"] == "resume")
    );
    assert!(
        sandbox
            .events("promoted", "pay/key")
            .iter()
            .all(|e| e["version"] != v1.as_str())
    );

    // 2. Crash while waiting; after the restart the consumer confirms: promoted.
    rx.script(pending_rule(503));
    let v2 = crash("after_pending_notified");
    rx.script(pending_rule(200));
    sandbox.ok(&["run", "--once"]);
    assert_eq!(current_id(&sandbox, "pay/key"), v2);
    assert_eq!(
        rx.requests()
            .iter()
            .filter(|r| r.kind == "secret.rotation.pending"
                && r.json()["data"]["version"] == v2.as_str())
            .map(|r| r.id.clone())
            .collect::<BTreeSet<_>>()
            .len(),
        1,
        "the resume asked again under the same id"
    );

    // 3. Crash after the confirmation: it was durable, so the restart promotes without
    //    asking again.
    let v3 = crash("after_confirmed");
    let asked = pending_requests(&v3);
    assert!(asked >= 1);
    sandbox.ok(&["run", "--once"]);
    assert_eq!(current_id(&sandbox, "pay/key"), v3);
    assert_eq!(pending_requests(&v3), asked, "asked again after confirming");

    // 4. Crash after the refusal was decided and announced, before the discard: the
    //    restart finishes the discard without asking again.
    rx.script(pending_rule(409));
    let (id, value) = (
        current_id(&sandbox, "pay/key"),
        sandbox.get("pay/key", "current"),
    );
    let v4 = crash("after_failed_notified");
    let mut before = store_versions(&sandbox);
    before.retain(|(vid, _)| *vid != v4);
    let asked = pending_requests(&v4);
    let out = sandbox.run(&["run", "--once"]);
    assert!(!out.status.success());
    assert_untouched(&sandbox, &id, &value, &before);
    assert_eq!(pending_requests(&v4), asked, "asked again after refusing");
    let failed: Vec<Request> = delivered(&rx.requests())
        .into_iter()
        .filter(|r| {
            r.kind == "secret.rotation.failed" && r.json()["data"]["version"] == v4.as_str()
        })
        .collect();
    assert!(
        !failed.is_empty(),
        "the failure queued before the crash is delivered"
    );
    assert!(queued_files(&sandbox).is_empty());

    // 5 and 6 crash in the delivery worker after the consumer's 2xx came back; the rotation
    // may promote on the answer before the crash, which is fine: the crash must leave it
    // able to, never ask the consumer twice, and never lose the delivery.
    let crash_after_answer = |point: &str| {
        rx.script(pending_rule(200));
        let asked_before: BTreeSet<String> = rx.requests().iter().map(|r| r.id.clone()).collect();
        rotate_until(point);
        let asked = rx
            .requests()
            .into_iter()
            .find(|r| r.kind == "secret.rotation.pending" && !asked_before.contains(&r.id))
            .expect("the pending event was sent before the crash");
        let version = asked.json()["data"]["version"].as_str().unwrap().to_owned();
        assert_eq!(pending_requests(&version), 1);
        sandbox.ok(&["run", "--once"]);
        assert_eq!(current_id(&sandbox, "pay/key"), version, "{point}");
        assert_eq!(
            pending_requests(&version),
            1,
            "{point}: asked again after answering"
        );
        assert!(
            audit_of(&sandbox, "notification_delivered")
                .iter()
                .any(|e| e["id"] == asked.id.as_str()),
            "{point}: the delivery is audited"
        );
        assert!(queued_files(&sandbox).is_empty(), "{point}");
    };
    // 5. After the answer was recorded, before its message was closed: the restart closes
    //    the message as delivered instead of sending it again.
    crash_after_answer("notify_after_answer_recorded");
    // 6. Right after the message was closed: the answer was recorded before the close (it
    //    used to be recorded after it, and was lost here: the gate timed out).
    crash_after_answer("notify_after_outcome_recorded");
}

#[test]
fn sigterm_stops_delivery_cleanly_and_leaves_undelivered_messages_queued() {
    let k = key(41);
    let mut rx = Receiver::start(&[&k]);
    let url = rx.url("/hooks");
    rx.stop();
    let sandbox = app_notifying_hooks(&url, &k, "backoff = \"100ms\"\nmax_backoff = \"200ms\"\n");
    let mut daemon = start_daemon(&sandbox);
    wait_for("both messages to fail once", LIMIT, || {
        let tried: BTreeSet<String> = audit_of(&sandbox, "notification_attempt_failed")
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        (tried.len() == 2).then_some(())
    });
    signal(&daemon, "TERM");
    let status = wait_for("the daemon to exit", LIMIT, || daemon.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    assert_eq!(
        queued_files(&sandbox).len(),
        2,
        "undelivered messages stay queued"
    );
    assert!(
        audit_of(&sandbox, "notification_failed").is_empty(),
        "nothing given up"
    );
    assert_eq!(audit_of(&sandbox, "daemon_stopping").len(), 1);

    // The next start delivers them.
    rx.restart();
    sandbox.ok(&["run", "--once"]);
    assert!(queued_files(&sandbox).is_empty());
    assert_eq!(by_id(&delivered(&rx.requests())).len(), 2);
}

#[test]
fn a_cli_rotate_stops_delivering_in_bounded_time_and_the_daemon_takes_over() {
    let k = key(43);
    let mut rx = Receiver::start(&[&k]);
    let url = rx.url("/hooks");
    rx.stop();
    // After the first failure the next attempt is 30s away: past the CLI's delivery bound.
    let sandbox = app_notifying_hooks(&url, &k, "backoff = \"30s\"\n");
    let started = std::time::Instant::now();
    sandbox.ok(&["rotate", "app"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "rotate waited for a retry it could not make in time: {:?}",
        started.elapsed()
    );
    assert_eq!(queued_files(&sandbox).len(), 2, "left for the daemon");

    // The daemon delivers what the CLI left (its owner has exited), at once on start.
    rx.restart();
    sandbox.ok(&["run", "--once"]);
    assert!(queued_files(&sandbox).is_empty());
    let ok = by_id(&delivered(&rx.requests()));
    assert_eq!(ok.len(), 2);
    assert!(
        ok.values()
            .all(|rs| rs.len() == 1 && rs[0].verified == [true])
    );
}

#[test]
fn a_running_daemon_takes_over_what_a_cli_rotate_left_without_waiting_for_a_timer() {
    let k = key(44);
    let mut rx = Receiver::start(&[&k]);
    let url = rx.url("/hooks");
    let sandbox = app_notifying_hooks(&url, &k, "backoff = \"30s\"\n");
    let mut daemon = start_daemon(&sandbox);
    // The daemon's first rotation is delivered: it is up and idle from here on.
    wait_for("the first rotation's two messages", LIMIT, || {
        (delivered(&rx.requests()).len() == 2 && queued_files(&sandbox).is_empty()).then_some(())
    });

    // A CLI rotation while the receiver is down leaves its two messages queued (its next
    // attempt is 30s away, past the CLI's delivery bound).
    rx.stop();
    sandbox.ok(&["rotate", "app"]);
    let left: BTreeSet<String> = queued_files(&sandbox)
        .iter()
        .map(|f| f.trim_end_matches(".json").to_owned())
        .collect();
    assert_eq!(left.len(), 2, "left for the daemon");

    // The idle daemon saw them arrive and takes them over once their owner has exited:
    // well within its old once-a-minute look at the queue.
    rx.restart();
    wait_for("the daemon to deliver what the CLI left", TAKE_OVER, || {
        queued_files(&sandbox).is_empty().then_some(())
    });
    signal(&daemon, "TERM");
    wait_for("the daemon to exit", LIMIT, || daemon.try_wait().unwrap());
    let ok = by_id(&delivered(&rx.requests()));
    for id in &left {
        assert_eq!(ok.get(id).map(Vec::len), Some(1), "{id} delivered once");
    }
}

/// Longer than a takeover needs (the watch reacts within a second, a live owner is
/// looked at again every 5 s), shorter than the minute an unwatched queue could wait.
const TAKE_OVER: Duration = Duration::from_secs(20);

/// A receiver, and a sandbox whose `app` notifies it (signing with `key(seed)`) and was
/// rotated twice: the two versions' ids, (previous, current).
fn notified_app_rotated_twice(seed: u8) -> (Receiver, Sandbox, String, String) {
    let k = key(seed);
    let rx = Receiver::start(&[&k]);
    let sandbox = sandbox(
        &format!(
            "\n[notify.hooks]\nurl = \"{}\"\nsecret_file = \"k.whsec\"\n\n\
             [[secrets]]\nname = \"app\"\nschedule = {{ every = \"30d\" }}\nnotify = [\"hooks\"]\n",
            rx.url("/hooks")
        ),
        &[("k.whsec", &k)],
    );
    sandbox.ok(&["rotate", "app"]);
    let first = current_id(&sandbox, "app");
    sandbox.ok(&["rotate", "app", "--force"]);
    let second = current_id(&sandbox, "app");
    (rx, sandbox, first, second)
}

/// `rekeyd rollback` tells consumers, signed, which version is current again; with the
/// webhook key unreadable it still rolls back, and says that nobody was told.
#[test]
fn a_rollback_is_announced_and_does_not_depend_on_the_webhook_key() {
    let (rx, sandbox, first, second) = notified_app_rotated_twice(29);

    sandbox.ok(&["rollback", "app", "--by", "alice"]);
    assert_eq!(current_id(&sandbox, "app"), first);
    let requests = rx.requests();
    let rolled: Vec<&Request> = requests
        .iter()
        .filter(|r| r.kind == "secret.rolled_back")
        .collect();
    assert_eq!(rolled.len(), 1, "{requests:#?}");
    assert_eq!(rolled[0].verified, [true]);
    let data = &assert_envelope(rolled[0])["data"];
    assert_eq!(data["secret"], "app");
    assert_eq!(data["version"], first.as_str());
    assert_eq!(data["previous"], second.as_str());
    assert_eq!(data["stage"], "current");
    let delivered = audit_of(&sandbox, "notification_delivered");
    assert!(delivered.iter().any(|e| e["id"] == rolled[0].id.as_str()));

    // With the key gone, rolling back again (to `second`) still happens; the operator is
    // warned that nobody was told.
    std::fs::remove_file(sandbox.path("k.whsec")).unwrap();
    let out = sandbox.run(&["rollback", "app", "--by", "bob"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rolling back without telling hooks"),
        "{out:?}"
    );
    assert_eq!(current_id(&sandbox, "app"), second);
    assert_eq!(audit_of(&sandbox, "rolled_back").len(), 2);
    let rolled_again = rx
        .requests()
        .iter()
        .filter(|r| r.kind == "secret.rolled_back")
        .count();
    assert_eq!(rolled_again, 1, "nothing could be signed without the key");
}

/// A rollback killed after the backend made the previous version current, before it was
/// audited or announced: the next start records it and tells consumers once, signed.
#[test]
fn a_rollback_a_crash_left_unrecorded_is_announced_by_the_next_start() {
    let (rx, sandbox, first, second) = notified_app_rotated_twice(31);
    let out = sandbox
        .command(&["rollback", "app", "--by", "alice"])
        .env("REKEYD_CRASH_AT", "rollback_after_promote")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(6), "expected an abort");
    let rolled = |rx: &Receiver| -> Vec<Request> {
        rx.requests()
            .into_iter()
            .filter(|r| r.kind == "secret.rolled_back")
            .collect()
    };
    assert!(rolled(&rx).is_empty(), "stopped before announcing");

    sandbox.ok(&["run", "--once"]);
    sandbox.ok(&["run", "--once"]);

    assert_eq!(current_id(&sandbox, "app"), first);
    let rolled = rolled(&rx);
    assert_eq!(rolled.len(), 1, "announced once: {rolled:#?}");
    assert_eq!(rolled[0].verified, [true]);
    let data = &assert_envelope(&rolled[0])["data"];
    assert_eq!(data["version"], first.as_str());
    assert_eq!(data["previous"], second.as_str());
    let done = audit_of(&sandbox, "rolled_back");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["by"], "alice");
}
