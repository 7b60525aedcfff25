//! The command line as a security engineer and a service entrypoint use it.

mod common;

use common::Sandbox;
use serde_json::Value;

const ONE_SECRET: &str = r#"
[[secrets]]
name = "app/db"
schedule = { every = "30d" }
"#;

#[test]
fn check_validates_and_prints_a_plan_without_touching_anything() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/db"
schedule = { cron = "30 2 * * *", timezone = "Europe/Berlin" }

[[secrets]]
name = "app/token"
schedule = { every = "7d" }
enabled = false
"#,
    );
    let out = sandbox.ok(&["check", "-n", "4"]);
    assert!(out.contains("valid; 2 secrets"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("app/db"))
        .expect("app/db row");
    assert_eq!(line.matches("Z").count(), 4, "four upcoming times: {line}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("app/token") && l.contains("disabled"))
    );
    assert!(
        !sandbox.path("state").exists(),
        "check must not create state"
    );

    let json: Value =
        serde_json::from_str(&sandbox.ok(&["check", "--format", "json", "-n", "2"])).expect("json");
    let times = json[0]["next"].as_array().expect("next");
    assert_eq!(times.len(), 2);
    // 02:30 in Berlin is 00:30 or 01:30 UTC depending on the season.
    for t in times {
        let t = t.as_str().unwrap();
        assert!(t.contains("T00:30:00") || t.contains("T01:30:00"), "{t}");
    }
}

#[test]
fn an_invalid_policy_exits_3_and_names_every_problem() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/db"
schedule = { every = "30x" }
backend = "nowhere"

[[secrets]]
name = "app/db"
schedule = { cron = "61 * * * *" }
"#,
    );
    let out = sandbox.run(&["check"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "secrets[0].schedule.every",
        "secrets[0].backend",
        "secrets[1].name",
        "secrets[1].schedule.cron",
        "policy.toml:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn rotate_get_rollback_and_status_round_trip() {
    let sandbox = Sandbox::new(ONE_SECRET);
    let out = sandbox.ok(&["rotate", "app/db", "--by", "alice"]);
    assert!(out.contains("rotated app/db"), "{out}");
    let first = sandbox.get("app/db", "current");
    assert_eq!(first.chars().count(), 24, "policy length");

    sandbox.ok(&["rotate", "app/db", "--by", "alice", "--force"]);
    let second = sandbox.get("app/db", "current");
    assert_ne!(first, second);
    assert_eq!(
        sandbox.get("app/db", "previous"),
        first,
        "previous stays readable"
    );

    let status = sandbox.status("app/db");
    assert_eq!(status["state"], "ok");
    assert!(status["previous"]["id"].is_string());
    assert!(status["pending"].is_null());

    sandbox.ok(&["rollback", "app/db", "--by", "bob"]);
    assert_eq!(sandbox.get("app/db", "current"), first);
    assert_eq!(sandbox.get("app/db", "previous"), second);
    // The daemon's next look keeps the rollback (until the next scheduled slot).
    sandbox.ok(&["run", "--once"]);
    assert_eq!(sandbox.get("app/db", "current"), first, "rollback held");

    let manual = sandbox.events("rotation_started", "app/db");
    assert_eq!(manual.len(), 2);
    assert!(
        manual
            .iter()
            .all(|e| e["trigger"]["kind"] == "manual" && e["trigger"]["by"] == "alice")
    );
    let rolled = sandbox.events("rolled_back", "app/db");
    assert_eq!(rolled.len(), 1);
    assert_eq!(rolled[0]["by"], "bob");
    sandbox.ok(&["audit", "verify", sandbox.audit_log().to_str().unwrap()]);
}

#[test]
fn rotation_inside_the_grace_period_is_refused_without_force() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/db"
schedule = { every = "30d" }
grace = "1h"
"#,
    );
    sandbox.ok(&["rotate", "app/db"]);
    sandbox.ok(&["rotate", "app/db", "--force"]);
    let before = sandbox.get("app/db", "previous");
    let out = sandbox.run(&["rotate", "app/db"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(sandbox.get("app/db", "previous"), before, "nothing changed");
}

#[test]
fn dry_run_says_what_would_happen_and_changes_nothing() {
    let sandbox = Sandbox::new(ONE_SECRET);
    sandbox.ok(&["rotate", "app/db"]);
    let current = sandbox.get("app/db", "current");
    let audit_before = std::fs::read(sandbox.audit_log()).unwrap();
    let out = sandbox.ok(&["rotate", "app/db", "--dry-run"]);
    for needle in [
        "dry run",
        "24-character password",
        "becomes current",
        "becomes previous",
        "notify:",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    assert!(!out.contains(&current), "a dry run never prints a value");
    assert_eq!(sandbox.get("app/db", "current"), current);
    assert_eq!(
        std::fs::read(sandbox.audit_log()).unwrap(),
        audit_before,
        "nothing audited"
    );
}

#[test]
fn a_rollback_dry_run_names_the_swap_and_changes_nothing() {
    let sandbox = Sandbox::new(ONE_SECRET);
    sandbox.ok(&["rotate", "app/db"]);
    let refused = sandbox.run(&["rollback", "app/db", "--dry-run"]);
    assert_eq!(refused.status.code(), Some(6), "refused like the rollback");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no previous version"));

    sandbox.ok(&["rotate", "app/db", "--force"]);
    let id = |stage: &str| {
        sandbox.status("app/db")[stage]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (previous, current) = (id("previous"), id("current"));
    let value = sandbox.get("app/db", "current");
    let audit_before = std::fs::read(sandbox.audit_log()).unwrap();

    let out = sandbox.ok(&["rollback", "app/db", "--dry-run"]);
    for needle in [
        "dry run".to_owned(),
        format!("{previous} becomes current again; {current} becomes previous"),
        "audit:     rollback_started, rolled_back".to_owned(),
    ] {
        assert!(out.contains(&needle), "missing {needle:?}:\n{out}");
    }
    assert!(!out.contains(&value), "a dry run never prints a value");
    assert_eq!((id("previous"), id("current")), (previous, current));
    assert_eq!(
        std::fs::read(sandbox.audit_log()).unwrap(),
        audit_before,
        "nothing audited"
    );
}

#[test]
fn get_prints_exactly_the_value_or_one_json_field() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/login"
schedule = { every = "30d" }
generator = { type = "json", template = { username = "app", host = "db.internal" }, field = "password", generate = { type = "password", length = 20 } }
"#,
    );
    sandbox.ok(&["rotate", "app/login"]);
    let whole: Value =
        serde_json::from_str(&sandbox.get("app/login", "current")).expect("json secret");
    assert_eq!(whole["username"], "app");
    let password = sandbox.ok(&["get", "app/login", "--field", "password"]);
    assert_eq!(
        password,
        whole["password"].as_str().unwrap(),
        "no trailing newline, no quotes"
    );
    let out = sandbox.run(&["get", "app/login", "--field", "nope"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn missing_things_exit_4() {
    let sandbox = Sandbox::new(ONE_SECRET);
    assert_eq!(
        sandbox.run(&["get", "not/in/policy"]).status.code(),
        Some(4)
    );
    assert_eq!(
        sandbox.run(&["get", "app/db"]).status.code(),
        Some(4),
        "never rotated yet"
    );
    sandbox.ok(&["rotate", "app/db"]);
    let out = sandbox.run(&["get", "app/db", "--stage", "previous"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = sandbox.run(&["rollback", "app/db"]);
    assert_eq!(out.status.code(), Some(6), "nothing to roll back to");
}

#[test]
fn audit_verify_reports_the_tampered_line_and_exits_5() {
    let sandbox = Sandbox::new(ONE_SECRET);
    for _ in 0..3 {
        sandbox.ok(&["rotate", "app/db", "--force"]);
    }
    let log = sandbox.audit_log();
    let log_arg = log.to_str().unwrap();
    let ok = sandbox.ok(&["audit", "verify", log_arg]);
    assert!(ok.contains("OK"), "{ok}");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let edited = lines[4].replace("\"app/db\"", "\"app/other\"");
    lines[4] = &edited;
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = sandbox.run(&["audit", "verify", log_arg]);
    assert_eq!(out.status.code(), Some(5));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{log_arg}:5:")),
        "line 5 named:\n{stdout}"
    );
}

#[test]
fn audit_export_copies_the_log_byte_for_byte_and_one_anchor_fits_one_log() {
    let sandbox = Sandbox::new(ONE_SECRET);
    sandbox.ok(&["rotate", "app/db"]);
    let exported = sandbox.run(&["audit", "export"]);
    assert!(exported.status.success());
    assert_eq!(exported.stdout, std::fs::read(sandbox.audit_log()).unwrap());
    let log = sandbox.audit_log();
    let log = log.to_str().unwrap();
    let out = sandbox.run(&["audit", "verify", log, log, "--anchor", "1:00"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an anchor with two logs is a usage error"
    );
}

#[test]
fn audit_query_filters_by_secret_and_outcome() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/db"
schedule = { every = "30d" }

[[secrets]]
name = "app/cache"
schedule = { every = "30d" }
"#,
    );
    sandbox.ok(&["rotate", "app/db"]);
    sandbox.ok(&["rotate", "app/cache"]);
    let out = sandbox.ok(&["audit", "query", "--secret", "app/db", "--format", "json"]);
    let entries: Value = serde_json::from_str(&out).expect("json");
    let entries = entries.as_array().expect("array");
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["secret"] == "app/db"), "{out}");
    let table = sandbox.ok(&["audit", "query", "--outcome", "succeeded"]);
    assert!(
        table.contains("app/db") && table.contains("app/cache"),
        "{table}"
    );
    assert!(
        !table.contains("rotation_started"),
        "only outcomes: {table}"
    );
}

#[test]
fn help_lists_exit_codes() {
    let out = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Exit codes") && text.contains("3  the policy file is invalid"),
        "{text}"
    );
}

#[test]
fn exec_runs_a_command_with_secrets_in_its_environment() {
    let sandbox = Sandbox::new(
        r#"
[[secrets]]
name = "app/db"
schedule = { every = "30d" }

[[secrets]]
name = "app/login"
schedule = { every = "30d" }
generator = { type = "json", template = { username = "svc" }, field = "password", generate = { type = "password", length = 20 } }
"#,
    );
    sandbox.ok(&["rotate", "app/db"]);
    sandbox.ok(&["rotate", "app/login"]);
    let db = sandbox.get("app/db", "current");
    let password = sandbox.ok(&["get", "app/login", "--field", "password"]);
    // A real child process prints what it received; its exit code becomes ours.
    let out = sandbox.run(&[
        "exec",
        "--secret",
        "app/db=DB_PASSWORD",
        "--secret",
        "app/login#password=LOGIN_PASSWORD",
        "--",
        "sh",
        "-c",
        "printf '%s\\n%s' \"$DB_PASSWORD\" \"$LOGIN_PASSWORD\"; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "the command's exit code");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{db}\n{password}")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&db) && !stderr.contains(&password),
        "no value logged"
    );
}

#[test]
fn exec_runs_nothing_when_a_secret_cannot_be_read() {
    let sandbox = Sandbox::new(ONE_SECRET);
    let marker = sandbox.path("ran");
    let touch = format!("touch {}", marker.display());
    let out = sandbox.run(&["exec", "-s", "app/db=X", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(4), "never rotated: not found");
    let out = sandbox.run(&["exec", "-s", "nope=X", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(4), "not in the policy");
    assert!(!marker.exists(), "the command never ran");
}

#[test]
fn replicas_can_share_the_fingerprint_key_through_the_environment() {
    let sandbox = Sandbox::new(ONE_SECRET);
    let text = std::fs::read_to_string(sandbox.policy()).unwrap().replace(
        "concurrency = 4",
        "concurrency = 4\naudit_key_env = \"REKEYD_TEST_AUDIT_KEY\"",
    );
    sandbox.write_raw_policy(&text);
    let key = [0x5au8; 32];
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let out = sandbox
        .command(&["rotate", "app/db"])
        .env("REKEYD_TEST_AUDIT_KEY", &hex)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = sandbox.get("app/db", "current");
    // The same HMAC computed here, independently of rekeyd's fingerprint code.
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        value.as_bytes(),
    );
    let expected: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let stored = sandbox.events("pending_stored", "app/db");
    assert_eq!(stored[0]["fingerprint"], format!("hmac-sha256:{expected}"));
    assert!(
        !sandbox.path("state/audit.key").exists(),
        "no key file when the variable is set"
    );
}
