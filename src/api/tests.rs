//! Handlers through the router with `oneshot` (no socket), over a real file store and
//! audit log.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::audit::{AuditEvent, AuditLog, Fingerprinter};

const TOKENS: &str = r#"
[[token]]
name = "dashboard"
role = "read"
token = "read-token-0123456789"

[[token]]
name = "runbook-bot"
role = "rotate"
token = "rotate-token-0123456789"

[[token]]
name = "payments"
role = "read"
confirms = ["payments"]
token = "payments-token-0123456789"
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    audit: std::path::PathBuf,
}

async fn fixture(burst: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let text = r#"
[backends.local]
type = "file"

[[secrets]]
name = "app/db"
backend = "local"
schedule = { every = "30d" }
grace = "1h"
generator = { type = "password" }
"#;
    std::fs::write(&path, text).unwrap();
    let policy = crate::policy::parse(&path, text).unwrap();
    let audit = AuditLog::open(&policy.daemon.audit_log).await.unwrap();
    let backends = crate::backend::open_all(&policy).await.unwrap();
    let engine = Engine::new(backends, audit, Fingerprinter::from_key(&[1; 32]));
    let audit_path = policy.daemon.audit_log.clone();
    // A watch receiver keeps the last value after its sender is gone: no reloads here.
    let (_, rx) = watch::channel(Live {
        policy: Arc::new(policy),
        engine: Arc::new(engine),
        tokens: Some(Arc::new(Tokens::parse(TOKENS).unwrap())),
    });
    let state = ApiState::new(
        rx,
        Arc::new(Metrics::new()),
        RateLimiter::new(burst, Duration::from_secs(60)),
    );
    Fixture {
        app: router(state, Duration::from_secs(30)),
        audit: audit_path,
        _dir: dir,
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body, retry)
}

const READ: Option<&str> = Some("read-token-0123456789");
const ROTATE: Option<&str> = Some("rotate-token-0123456789");

#[tokio::test]
async fn probes_and_metrics_need_no_token() {
    let f = fixture(5).await;
    let (status, body, _) = call(&f.app, "GET", "/healthz", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, body, _) = call(&f.app, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["backend:local"], "ok");
    assert_eq!(body["checks"]["audit_log"], "ok");
    let (status, body, _) = call(&f.app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("rekeyd_audit_writes_total"));
}

#[tokio::test]
async fn v1_needs_a_known_token_and_errors_have_one_shape() {
    let f = fixture(5).await;
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body, _) = call(&f.app, "GET", "/v1/secrets", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "unauthorized");
        assert!(body["message"].is_string());
    }
    let (status, body, _) = call(&f.app, "GET", "/v1/secrets/nope", READ).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body, _) = call(&f.app, "GET", "/nowhere", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn status_and_rotation_by_role_audited_with_the_caller() {
    let f = fixture(5).await;
    let (status, body, _) = call(&f.app, "GET", "/v1/secrets", READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], "app/db");
    assert_eq!(body[0]["state"], "missing");

    let (status, body, _) = call(&f.app, "POST", "/v1/secrets/app%2Fdb/rotate", READ).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    let (status, body, _) = call(&f.app, "POST", "/v1/secrets/app%2Fdb/rotate", ROTATE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "rotated");
    assert_eq!(body["requested_by"], "api:runbook-bot");
    let version = body["version"].as_str().unwrap().to_owned();

    let (status, body, _) = call(&f.app, "GET", "/v1/secrets/app%2Fdb", READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["current"]["id"], version.as_str());
    assert!(!body.to_string().contains("value"), "no values in status");

    // A second rotation at once would cut the previous version's grace: refused.
    call(
        &f.app,
        "POST",
        "/v1/secrets/app%2Fdb/rotate?force=true",
        ROTATE,
    )
    .await;
    let (status, body, _) = call(&f.app, "POST", "/v1/secrets/app%2Fdb/rotate", ROTATE).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{body}"
    );

    let started: Vec<String> = crate::audit::read_logs(&[&f.audit])
        .unwrap()
        .entries
        .into_iter()
        .filter_map(|e| match e.event {
            AuditEvent::RotationStarted {
                trigger: crate::audit::Trigger::Manual { by },
                ..
            } => Some(by),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["api:runbook-bot", "api:runbook-bot"]);
}

#[tokio::test]
async fn the_rotate_endpoint_is_rate_limited_per_client() {
    let f = fixture(1).await;
    let (status, _, _) = call(&f.app, "POST", "/v1/secrets/app%2Fdb/rotate", ROTATE).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, retry) = call(
        &f.app,
        "POST",
        "/v1/secrets/app%2Fdb/rotate?force=true",
        ROTATE,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(retry.as_deref(), Some("60"));
    let (status, body, _) = call(
        &f.app,
        "POST",
        "/v1/secrets/app%2Fdb/rotate?force=maybe",
        ROTATE,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the limit applies before parsing: {body}"
    );
}

/// Regression (issue 8, found by the `api` fuzz target): a known path with a method it
/// does not take answered axum's bare 405 with an empty body instead of the error shape.
#[tokio::test]
async fn a_wrong_method_gets_405_in_the_error_shape_with_allow() {
    let f = fixture(5).await;
    for (method, uri, token, allow) in [
        ("DELETE", "/v1/secrets/app%2Fdb", ROTATE, "GET,HEAD"),
        ("GET", "/v1/secrets/app%2Fdb/rotate", READ, "POST"),
        ("POST", "/healthz", None, "GET,HEAD"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(
                "authorization",
                format!("Bearer {}", token.unwrap_or("none")),
            )
            .body(Body::empty())
            .unwrap();
        let response = f.app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("allow").as_deref(), Some(allow), "{method} {uri}");
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{method} {uri}: {body}");
        assert!(body["message"].is_string());
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    }
}

/// Without a valid token nothing under `/v1` says what exists: not which paths, not which
/// methods they take. Outside `/v1` routing answers as usual.
#[tokio::test]
async fn without_a_token_everything_under_v1_is_401() {
    let f = fixture(50).await;
    for (method, uri) in [
        ("GET", "/v1/secrets"),
        ("DELETE", "/v1/secrets/app%2Fdb"),
        ("GET", "/v1/secrets/app%2Fdb/rotate"),
        ("GET", "/v1/no-such-thing"),
        ("GET", "/v1"),
    ] {
        for token in [None, Some("not-a-token-0123456789")] {
            let (status, body, _) = call(&f.app, method, uri, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert_eq!(body["code"], "unauthorized", "{method} {uri}: {body}");
        }
    }
    // With a token, the same requests get their real answers.
    let (status, _, _) = call(&f.app, "GET", "/v1/no-such-thing", READ).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&f.app, "DELETE", "/v1/secrets/app%2Fdb", READ).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Outside /v1: probes need no token, and an unknown path is a 404.
    let (status, _, _) = call(&f.app, "POST", "/healthz", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = call(&f.app, "GET", "/v1x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Answers for a gated rotation: what the request itself gets wrong is refused before
/// anything is read or written (the whole flow runs against a daemon in tests/api.rs).
#[tokio::test]
async fn an_answer_names_a_target_the_token_may_answer_for_and_a_gated_secret() {
    let f = fixture(50).await;
    let post = |uri: &'static str, token: &'static str, body: &'static str| {
        let app = f.app.clone();
        async move {
            let request = Request::builder()
                .method("POST")
                .uri(uri)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let answer = r#"{"version": "v1", "target": "payments", "decision": "confirm"}"#;
    let payments = "payments-token-0123456789";
    for (uri, token, body, status, code) in [
        // A rotate token is not a consumer's token.
        (
            "/v1/secrets/app%2Fdb/confirm",
            ROTATE.unwrap(),
            answer,
            403,
            "forbidden",
        ),
        (
            "/v1/secrets/app%2Fdb/confirm",
            payments,
            "not json",
            400,
            "bad_request",
        ),
        (
            "/v1/secrets/app%2Fdb/confirm",
            payments,
            r#"{"version": "v1", "target": "payments", "decision": "maybe"}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/secrets/nope/confirm",
            payments,
            answer,
            404,
            "not_found",
        ),
        // app/db has no `confirm`: nothing waits for an answer.
        (
            "/v1/secrets/app%2Fdb/confirm",
            payments,
            answer,
            409,
            "conflict",
        ),
    ] {
        let (got, body) = post(uri, token, body).await;
        assert_eq!(got.as_u16(), status, "{uri}: {body}");
        assert_eq!(body["code"], code, "{uri}: {body}");
    }
    assert!(
        !std::fs::read_to_string(&f.audit)
            .unwrap_or_default()
            .contains("confirmation_recorded"),
        "nothing was recorded"
    );
}
