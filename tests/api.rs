//! The HTTP API as operators and tools use it, against a running daemon: probes through
//! `rekeyd health`, /metrics through the Prometheus project's Python parser, status and
//! manual rotation with bearer tokens, and schemathesis fuzzing the server from
//! docs/openapi.yaml (no 5xx, no response that breaks the schema).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Sandbox, signal, wait_for};
use serde_json::Value;

const READ_TOKEN: &str = "read-token-4f1c9a0b2d7e";
const ROTATE_TOKEN: &str = "rotate-token-8e2d6b1f0c3a";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    sandbox: Sandbox,
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(rotate_burst: u32) -> Daemon {
    start_with(rotate_burst, "", "", &[])
}

/// A daemon serving the API, with `app/db` and `app/cache` created; `policy` and `tokens`
/// are added to the sandbox's policy and tokens file, `files` written beside them.
fn start_with(rotate_burst: u32, policy: &str, tokens: &str, files: &[(&str, &str)]) -> Daemon {
    let port = free_port();
    let sandbox = Sandbox::new(&format!(
        r#"
[api]
listen = "127.0.0.1:{port}"
tokens_file = "tokens.toml"
rotate_burst = {rotate_burst}

[[secrets]]
name = "app/db"
schedule = {{ every = "30d" }}

[[secrets]]
name = "app/cache"
schedule = {{ every = "30d" }}
{policy}"#
    ));
    for (file, text) in files {
        std::fs::write(sandbox.path(file), text).unwrap();
    }
    let tokens_file = sandbox.path("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[token]]\nname = \"dashboard\"\nrole = \"read\"\ntoken = \"{READ_TOKEN}\"\n\n\
             [[token]]\nname = \"runbook-bot\"\nrole = \"rotate\"\ntoken = \"{ROTATE_TOKEN}\"\n{tokens}"
        ),
    )
    .unwrap();
    let tokens = tokens_file;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let child = sandbox
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let daemon = Daemon {
        sandbox,
        child,
        port,
    };
    // `rekeyd health` is the container's probe: it must succeed once the API serves.
    wait_for(
        "the API to answer rekeyd health",
        Duration::from_secs(30),
        || {
            daemon
                .sandbox
                .run(&["health"])
                .status
                .success()
                .then_some(())
        },
    );
    wait_for("both secrets created", Duration::from_secs(30), || {
        (daemon.sandbox.events("rotation_succeeded", "app/db").len() == 1
            && daemon
                .sandbox
                .events("rotation_succeeded", "app/cache")
                .len()
                == 1)
            .then_some(())
    });
    daemon
}

/// A minimal HTTP/1.1 client: the test checks the server, not a client library.
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    http_with(port, method, path, token, "")
}

/// [`http`] with a JSON `body`.
fn http_with(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head[9..12].parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

#[test]
fn probes_status_rotation_and_metrics_through_the_api() {
    let d = start(5);
    assert!(
        d.sandbox.run(&["health", "--ready"]).status.success(),
        "ready"
    );

    let (status, body) = http(d.port, "GET", "/v1/secrets", None);
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // The API and `rekeyd status` share one status model.
    let (status, listed) = http(d.port, "GET", "/v1/secrets", Some(READ_TOKEN));
    assert_eq!(status, 200);
    let cli = d.sandbox.status("app/db");
    let api = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app/db")
        .unwrap()
        .clone();
    for field in [
        "state",
        "current",
        "previous",
        "pending",
        "last_rotated",
        "schedule",
    ] {
        assert_eq!(
            api[field], cli[field],
            "{field} differs between API and CLI"
        );
    }

    let (status, _) = http(
        d.port,
        "POST",
        "/v1/secrets/app%2Fdb/rotate",
        Some(READ_TOKEN),
    );
    assert_eq!(status, 403, "a read token cannot rotate");
    let before = d.sandbox.get("app/db", "current");
    let (status, rotated) = http(
        d.port,
        "POST",
        "/v1/secrets/app%2Fdb/rotate",
        Some(ROTATE_TOKEN),
    );
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["requested_by"], "api:runbook-bot");
    assert_eq!(d.sandbox.get("app/db", "previous"), before);
    let manual = d.sandbox.events("rotation_started", "app/db");
    assert_eq!(manual.last().unwrap()["trigger"]["by"], "api:runbook-bot");

    let metrics_url = format!("http://127.0.0.1:{}/metrics", d.port);
    let out = Command::new("python3")
        .args(["tests/support/parse_metrics.py", &metrics_url])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics (pip install prometheus-client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sample = |family: &str, secret: &str, outcome: Option<&str>| -> Option<f64> {
        families[family].as_array()?.iter().find_map(|s| {
            let labels = &s[0];
            (labels["secret"] == secret && outcome.is_none_or(|o| labels["outcome"] == o))
                .then(|| s[1].as_f64())
                .flatten()
        })
    };
    let succeeded = families["rekeyd_rotations"].as_array().and_then(|samples| {
        samples
            .iter()
            .find(|s| s[0]["outcome"] == "succeeded" && s[0].get("secret").is_none())
            .and_then(|s| s[1].as_f64())
    });
    // Counted by outcome (not per secret): every success the audit log holds.
    let audited = ["app/db", "app/cache"]
        .iter()
        .map(|name| d.sandbox.events("rotation_succeeded", name).len())
        .sum::<usize>();
    assert!(audited >= 3, "two for app/db, one for app/cache");
    assert_eq!(succeeded, Some(audited as f64), "{families}");
    let next = sample("rekeyd_secret_next_rotation_seconds", "app/cache", None).expect("next due");
    assert!(next > 0.0 && next <= 30.0 * 86_400.0, "{next}");
    let age = sample("rekeyd_secret_current_version_age_seconds", "app/db", None).expect("age");
    assert!((0.0..600.0).contains(&age), "{age}");
    assert!(
        families["rekeyd_audit_writes"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{families}"
    );
    assert!(families["rekeyd_secrets_overdue"].is_array());
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let d = start(1000);
    let out = Command::new("schemathesis")
        .args([
            "run",
            "docs/openapi.yaml",
            "--url",
            &format!("http://127.0.0.1:{}", d.port),
            "--header",
            &format!("Authorization: Bearer {ROTATE_TOKEN}"),
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--workers",
            "1",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis is installed (pip install schemathesis; .ci/test does)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really exercised every operation with many cases (not a vacuous pass).
    assert!(report.contains("7 selected / 7 total"), "{report}");
    let generated: u32 = report
        .split_once("Test cases:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(generated >= 100, "only {generated} cases:\n{report}");
    drop(d);
}

#[test]
fn sigterm_stops_the_api_with_the_daemon() {
    let mut d = start(5);
    signal(&d.child, "TERM");
    let status = wait_for("daemon exit", Duration::from_secs(30), || {
        d.child.try_wait().unwrap()
    });
    assert!(status.success());
    assert!(
        TcpStream::connect(("127.0.0.1", d.port)).is_err(),
        "the port is released"
    );
}

#[test]
fn the_api_serves_https_when_a_certificate_is_configured() {
    let port = free_port();
    let sandbox = Sandbox::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\n\
         [[secrets]]\nname = \"app/db\"\nschedule = {{ every = \"30d\" }}\n"
    ));
    // A self-signed certificate for 127.0.0.1, made by openssl (independent of rekeyd).
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(sandbox.dir.path())
        .output()
        .expect("openssl (apt-get install openssl; .ci/test does)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut child = sandbox
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Python's ssl module verifies the chain and the IP against the certificate.
    let probe = format!(
        "import ssl, urllib.request\n\
         ctx = ssl.create_default_context(cafile='cert.pem')\n\
         r = urllib.request.urlopen('https://127.0.0.1:{port}/healthz', context=ctx, timeout=5)\n\
         print(r.status, r.read().decode())\n"
    );
    let answer = wait_for("the API over HTTPS", Duration::from_secs(30), || {
        let out = Command::new("python3")
            .args(["-c", &probe])
            .current_dir(sandbox.dir.path())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(
        answer.starts_with("200") && answer.contains("\"ok\""),
        "{answer}"
    );
    // Plain HTTP to the TLS port is not served.
    let plain = std::panic::catch_unwind(|| http(port, "GET", "/healthz", None));
    assert!(
        plain.map_or(true, |(status, _)| status != 200),
        "no plaintext answer"
    );
    signal(&child, "TERM");
    wait_for("exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
}

/// A consumer confirms a gated rotation through the API with its own token: only for its
/// target, only the pending version, and the rotation (started through the API too, and
/// waiting on the gate) then promotes it.
#[test]
fn a_consumer_confirms_a_gated_rotation_through_the_api() {
    use common::receiver::Receiver;
    const PAYMENTS_TOKEN: &str = "payments-token-5a7c3e9d1b2f";
    let key = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let rx = Receiver::start(&[key]);
    let d = start_with(
        1000,
        &format!(
            "\n[notify.payments]\nurl = \"{}\"\nsecret_file = \"k.whsec\"\nbackoff = \"100ms\"\n\
             max_backoff = \"200ms\"\nbreaker_failures = 1000\n\n\
             [[secrets]]\nname = \"pay/key\"\nschedule = {{ every = \"30d\" }}\n\
             notify = [\"payments\"]\nconfirm = [\"payments\"]\nconfirm_timeout = \"60s\"\n",
            rx.url("/payments")
        ),
        &format!(
            "\n[[token]]\nname = \"payments\"\nrole = \"read\"\nconfirms = [\"payments\"]\n\
             token = \"{PAYMENTS_TOKEN}\"\n"
        ),
        &[("k.whsec", &format!("{key}\n"))],
    );
    // Created at start, confirmed by a plain 2xx.
    wait_for("pay/key created", Duration::from_secs(30), || {
        (!d.sandbox.events("rotation_succeeded", "pay/key").is_empty()).then_some(())
    });
    let first = d.sandbox.status("pay/key")["current"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // From now on the consumer answers its webhook 503: only an explicit answer opens the gate.
    rx.script(serde_json::json!({
        "rules": [{"type": "secret.rotation.pending", "status": 503}],
        "default": {"status": 200}
    }));
    let port = d.port;
    let rotation = std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/v1/secrets/pay%2Fkey/rotate?force=true",
            Some(ROTATE_TOKEN),
        )
    });
    let pending = wait_for("the pending event", Duration::from_secs(30), || {
        rx.requests()
            .iter()
            .filter(|r| r.kind == "secret.rotation.pending")
            .map(|r| r.json()["data"]["version"].as_str().unwrap().to_owned())
            .find(|v| *v != first)
    });
    let confirm = |token: &str, body: String| {
        http_with(
            port,
            "POST",
            "/v1/secrets/pay%2Fkey/confirm",
            Some(token),
            &body,
        )
    };
    let answer = |version: &str, target: &str| {
        format!(r#"{{"version": "{version}", "target": "{target}", "decision": "confirm"}}"#)
    };
    // A token that may not answer for the target; the current (not pending) version; a
    // target the secret does not wait on; a body that is not an answer.
    let (status, body) = confirm(READ_TOKEN, answer(&pending, "payments"));
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = confirm(PAYMENTS_TOKEN, answer(&first, "payments"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not pending"),
        "{body}"
    );
    let (status, body) = confirm(PAYMENTS_TOKEN, answer(&pending, "billing"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = confirm(PAYMENTS_TOKEN, r#"{"version": 1}"#.to_owned());
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert_eq!(d.sandbox.status("pay/key")["current"]["id"], first.as_str());

    let (status, body) = confirm(PAYMENTS_TOKEN, answer(&pending, "payments"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "confirmed");
    assert_eq!(body["by"], "api:payments");
    let (status, rotated) = rotation.join().unwrap();
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["version"], pending.as_str());
    assert_eq!(
        d.sandbox.status("pay/key")["current"]["id"],
        pending.as_str()
    );
    let recorded: Vec<Value> = d
        .sandbox
        .events("confirmation_recorded", "pay/key")
        .into_iter()
        .filter(|e| e["version"] == pending.as_str())
        .collect();
    assert_eq!(recorded.len(), 1, "only the accepted answer: {recorded:?}");
    assert_eq!(recorded[0]["via"], "api");
    assert_eq!(recorded[0]["by"], "api:payments");
}
