//! Never leak a secret: rotate every kind of secret with the most verbose logs, then look
//! for every generated value in everything rekeyd wrote or printed. Zero hits.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Sandbox, signal, wait_for};
use serde_json::Value;

const SECRETS: &str = r#"
[[secrets]]
name = "pw"
schedule = { every = "1s" }
generator = { type = "password", length = 32 }

[[secrets]]
name = "token"
schedule = { every = "1s" }
generator = { type = "bytes", length = 32, encoding = "hex" }

[[secrets]]
name = "signing/ed25519"
schedule = { every = "1s" }
generator = { type = "ed25519" }

[[secrets]]
name = "signing/p256"
schedule = { every = "30d" }
generator = { type = "ecdsa-p256" }

[[secrets]]
name = "db/login"
schedule = { every = "1s" }
generator = { type = "json", template = { username = "svc", host = "db.example" }, field = "password", generate = { type = "password", length = 28 } }
"#;

const NAMES: [&str; 5] = ["pw", "token", "signing/ed25519", "signing/p256", "db/login"];

/// The secret parts of a value: the value itself, and for JSON values every long string
/// leaf and every base64 line of a private key PEM.
fn canaries(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    if let Ok(json) = serde_json::from_str::<Value>(value) {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) if s.contains("PRIVATE KEY") => {
                    out.extend(
                        s.lines()
                            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                            .map(str::to_owned),
                    );
                }
                Value::String(s) if s.len() >= 16 && !s.contains("PUBLIC KEY") => {
                    out.push(s.clone())
                }
                Value::Object(map) => {
                    for (key, v) in map {
                        // The public half is meant to be published.
                        if key != "public_jwk" {
                            walk(v, out);
                        }
                    }
                }
                _ => {}
            }
        }
        walk(&json, &mut out);
    }
    out
}

#[test]
fn no_generated_value_appears_in_logs_audit_output_or_errors() {
    let sandbox = Sandbox::new(SECRETS);
    let mut child = sandbox
        .command(&["run", "--log", "trace", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    wait_for(
        "several rotations of every fast secret",
        Duration::from_secs(30),
        || {
            ["pw", "token", "signing/ed25519", "db/login"]
                .iter()
                .all(|s| sandbox.events("rotation_succeeded", s).len() >= 3)
                .then_some(())
        },
    );
    // Collect values while the daemon runs: current and previous of each.
    let mut values = Vec::new();
    for name in NAMES {
        for stage in ["current", "previous"] {
            let out = sandbox.run(&["get", name, "--stage", stage]);
            if out.status.success() {
                values.push(String::from_utf8(out.stdout).unwrap());
            }
        }
    }
    signal(&child, "TERM");
    let status = wait_for("exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert!(status.success());
    let mut daemon_output = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut daemon_output).unwrap();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut daemon_output).unwrap();
    assert!(
        daemon_output.contains("rotation succeeded"),
        "trace logs were captured"
    );

    // Everything else a person or a program sees.
    let mut seen = vec![
        daemon_output,
        std::fs::read_to_string(sandbox.audit_log()).unwrap(),
    ];
    for args in [
        vec!["status", "--format", "json"],
        vec!["status"],
        vec!["check"],
        vec!["rotate", "pw", "--dry-run"],
        vec!["audit", "query", "--format", "json"],
    ] {
        let out = sandbox.run(&args);
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // Error paths: a refused rollback, a bad field, a rotation with trace logs.
    for args in [
        vec!["get", "pw", "--field", "x"],
        vec!["rotate", "pw", "--force", "--log", "trace"],
    ] {
        let out = sandbox.run(&args);
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // The store files hold only ciphertext.
    for entry in std::fs::read_dir(sandbox.path("state/store-local")).unwrap() {
        seen.push(
            String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned(),
        );
    }

    assert!(
        values.len() >= 9,
        "read current and previous values: {}",
        values.len()
    );
    let mut checked = 0;
    for value in &values {
        for canary in canaries(value) {
            checked += 1;
            for text in &seen {
                assert!(
                    !text.contains(&canary),
                    "a secret value leaked ({} chars)",
                    canary.len()
                );
            }
        }
    }
    assert!(checked > values.len(), "JSON leaves were checked too");
}
