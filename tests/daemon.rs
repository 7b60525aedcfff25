//! The daemon as an operator runs it: rotations on schedule, SIGHUP reload (a bad policy
//! keeps the old one running), SIGTERM shutdown.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, Sandbox, signal, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn start(sandbox: &Sandbox) -> Daemon {
    sandbox
        .command(&["run", "--log", "debug"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Daemon)
        .expect("start daemon")
}

fn stop(sandbox: &Sandbox, mut child: Daemon) -> String {
    signal(&child, "TERM");
    let out = wait_for("the daemon to exit", LIMIT, || {
        child.try_wait().expect("wait")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(out.success(), "daemon exit status {out:?}; log:\n{stderr}");
    assert_eq!(
        sandbox
            .audit_entries()
            .iter()
            .filter(|e| e["event"] == "daemon_stopping")
            .count(),
        1
    );
    stderr
}

#[test]
fn secrets_rotate_on_schedule_one_version_per_slot() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "fast"
schedule = { every = "1s" }

[[secrets]]
name = "slow"
schedule = { every = "30d" }
"#,
    );
    let child = start(&sandbox);
    // `fast` is created at start and then rotated on each 1s slot.
    wait_for("three scheduled rotations of fast", LIMIT, || {
        (sandbox.events("rotation_succeeded", "fast").len() >= 4).then_some(())
    });
    stop(&sandbox, child);

    let started = sandbox.events("rotation_started", "fast");
    let mut slots: Vec<&str> = started.iter().filter_map(|e| e["slot"].as_str()).collect();
    let total = slots.len();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), total, "one rotation per slot: {started:?}");
    assert!(
        started
            .iter()
            .skip(1)
            .all(|e| e["trigger"]["kind"] == "schedule" || e["trigger"]["kind"] == "catch_up")
    );
    // `slow` was created once and then left alone.
    assert_eq!(sandbox.events("rotation_succeeded", "slow").len(), 1);
    let out = sandbox.ok(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");
    // The file store keeps only current and previous.
    let record = sandbox.store_record("fast.json");
    assert_eq!(record["versions"].as_array().unwrap().len(), 2, "{record}");
}

#[test]
fn sighup_with_a_bad_policy_keeps_the_old_one_and_a_good_one_is_adopted() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "kept"
schedule = { every = "30d" }
"#,
    );
    let child = start(&sandbox);
    wait_for("kept created", LIMIT, || {
        (!sandbox.events("rotation_succeeded", "kept").is_empty()).then_some(())
    });

    sandbox.write_policy("[[secrets]]\nname = \"kept\"\nschedule = { every = \"soon\" }\n");
    signal(&child, "HUP");
    let rejected = wait_for("policy_rejected", LIMIT, || {
        sandbox
            .audit_entries()
            .into_iter()
            .find(|e| e["event"] == "policy_rejected")
    });
    assert!(
        rejected["first_error"]
            .as_str()
            .unwrap()
            .contains("schedule.every"),
        "{rejected}"
    );

    sandbox.write_policy(
        r#"
[[secrets]]
name = "kept"
schedule = { every = "30d" }

[[secrets]]
name = "added"
schedule = { every = "30d" }
"#,
    );
    signal(&child, "HUP");
    wait_for("the added secret created after reload", LIMIT, || {
        (!sandbox.events("rotation_succeeded", "added").is_empty()).then_some(())
    });
    let loads = sandbox
        .audit_entries()
        .into_iter()
        .filter(|e| e["event"] == "policy_loaded")
        .count();
    assert_eq!(loads, 2, "initial load and the good reload");
    stop(&sandbox, child);
    assert_eq!(
        sandbox.events("rotation_succeeded", "kept").len(),
        1,
        "not rotated again by the reload"
    );
}

#[test]
fn a_daemon_that_starts_with_a_bad_policy_exits_3() {
    let sandbox = Sandbox::new("[[secrets]]\nname = \"x\"\n");
    let out = sandbox.run(&["run"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn run_once_catches_up_and_exits() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "a"
schedule = { every = "30d" }

[[secrets]]
name = "b"
schedule = { every = "30d" }
enabled = false
"#,
    );
    sandbox.ok(&["run", "--once"]);
    assert_eq!(sandbox.events("rotation_succeeded", "a").len(), 1);
    assert!(
        sandbox.events("rotation_started", "b").is_empty(),
        "disabled secrets are left alone"
    );
    // Nothing is due on a second pass: the slot is done.
    sandbox.ok(&["run", "--once"]);
    assert_eq!(sandbox.events("rotation_succeeded", "a").len(), 1);
}

#[test]
fn json_logs_on_request() {
    let sandbox = Sandbox::new("[[secrets]]\nname = \"a\"\nschedule = { every = \"30d\" }\n");
    let out = sandbox
        .command(&["run", "--once", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string());
    }
}

#[test]
fn concurrency_is_bounded_and_sigterm_drains_in_flight_rotations() {
    let mut secrets = String::from(
        "[daemon]\nstate_dir = \"state\"\nmin_interval = \"1s\"\nconcurrency = 2\n\n[backends.local]\ntype = \"file\"\n\n",
    );
    for i in 0..30 {
        secrets.push_str(&format!(
            "[[secrets]]\nname = \"busy/{i}\"\nbackend = \"local\"\nschedule = {{ every = \"1s\" }}\ngrace = \"0s\"\ngenerator = {{ type = \"ecdsa-p256\" }}\n\n"
        ));
    }
    let sandbox = Sandbox::new("");
    sandbox.write_raw_policy(&secrets);
    let child = start(&sandbox);
    wait_for("a steady stream of rotations", LIMIT, || {
        (sandbox
            .audit_entries()
            .iter()
            .filter(|e| e["event"] == "rotation_succeeded")
            .count()
            >= 60)
            .then_some(())
    });
    // Stop while rotations are still being dispatched.
    stop(&sandbox, child);

    let entries = sandbox.audit_entries();
    let stopping = entries
        .iter()
        .position(|e| e["event"] == "daemon_stopping")
        .expect("daemon_stopping recorded");
    let mut open = std::collections::HashSet::new();
    let mut most = 0;
    for e in &entries {
        let key = (e["secret"].to_string(), e["version"].to_string());
        match e["event"].as_str().unwrap() {
            "rotation_started" => {
                open.insert(key);
            }
            "rotation_succeeded" | "rotation_failed" | "slot_already_done" => {
                open.remove(&key);
            }
            _ => {}
        }
        most = most.max(open.len());
    }
    assert!(
        most <= 2,
        "at most `concurrency` rotations in flight, saw {most}"
    );
    assert!(
        open.is_empty(),
        "every started rotation finished before exit: {open:?}"
    );
    assert!(
        entries[stopping + 1..]
            .iter()
            .all(|e| e["event"] != "rotation_started"),
        "nothing new starts after the stop request"
    );
    for i in 0..30 {
        let record = sandbox.store_record(&format!("busy%2F{i}.json"));
        let pending = record["versions"].as_array().unwrap().iter().any(|v| {
            v["stages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "pending")
        });
        assert!(!pending, "busy/{i} left a pending version");
    }
}

/// Regression (found in review of issue 7): a relative policy path such as `p.toml` made
/// the state directory `state`, whose parent is the empty path, and start-up failed.
#[test]
fn a_relative_policy_path_creates_its_state_directory() {
    let sandbox = Sandbox::new("[[secrets]]\nname = \"a\"\nschedule = { every = \"30d\" }\n");
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--once", "--policy", "policy.toml"])
        .current_dir(sandbox.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sandbox.events("rotation_succeeded", "a").len(), 1);
}

#[test]
fn the_daemon_says_when_every_secret_is_planned_and_nothing_is_due() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "a"
schedule = { every = "30d" }

[[secrets]]
name = "b"
schedule = { every = "30d" }
"#,
    );
    let log = sandbox.path("daemon.log");
    let mut daemon = Daemon(
        sandbox
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start daemon"),
    );
    let line = wait_for("the daemon to report it is idle", LIMIT, || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("every secret planned"))
            .map(str::to_owned)
    });
    // By then both secrets were created, and the next due time is a slot away.
    for name in ["a", "b"] {
        assert_eq!(
            sandbox.events("rotation_succeeded", name).len(),
            1,
            "{name}"
        );
    }
    assert!(
        line.contains("secrets=2") && line.contains("queued=2"),
        "{line}"
    );
    assert!(!line.contains("next_due=never"), "{line}");
    signal(&daemon.0, "TERM");
    let status = wait_for("the daemon to exit", LIMIT, || daemon.0.try_wait().unwrap());
    assert!(status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("every secret planned").count(), 1, "{log}");
}

/// A secret the store cannot read (its file damaged) is retried with backoff; the audit
/// log records the outage once, with the store's reason, not once per retry.
#[test]
fn a_secret_the_store_cannot_read_is_audited_once_while_it_is_retried() {
    let sandbox = Sandbox::raw(&format!(
        "{}\n[[secrets]]\nname = \"damaged\"\nschedule = {{ every = \"30d\" }}\n",
        common::HEADER.replace(
            "concurrency = 4",
            "concurrency = 4\nmax_retry_backoff = \"1s\""
        )
    ));
    sandbox.ok(&["run", "--once"]);
    assert_eq!(sandbox.events("rotation_succeeded", "damaged").len(), 1);
    let file = sandbox.path("state/store-local/damaged.json");
    std::fs::write(&file, b"not a store record\n").expect("damage the store file");

    let log = sandbox.path("daemon.log");
    let child = sandbox
        .command(&["run", "--log", "debug"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .map(Daemon)
        .expect("start daemon");
    wait_for("three tries of the damaged secret", LIMIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tries = text
            .lines()
            .filter(|l| l.contains("will retry") && l.contains("damaged"))
            .count();
        (tries >= 3).then_some(())
    });
    let mut child = child;
    signal(&child, "TERM");
    let status = wait_for("the daemon to exit", LIMIT, || {
        child.try_wait().expect("wait")
    });
    assert!(status.success(), "daemon exit status {status:?}");

    let failures = sandbox.events("rotation_failed", "damaged");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["step"], "describe");
    assert_eq!(failures[0]["will_retry"], true);
    let error = failures[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a valid store file"), "{error}");
}
