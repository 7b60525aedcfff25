//! The HTTP API on arbitrary requests: the real router (`api::router`) over a real file
//! store, audit log and tokens file in a fresh temporary directory per input, driven with
//! `tower::ServiceExt::oneshot` (no socket).
//!
//! An input is up to eight requests written like HTTP/1.1 — a request line `METHOD
//! TARGET` (no version), header lines, an empty line, the body — separated by a line `~~~`. Requests that hyper would refuse
//! before the router sees them (a method, target, header name or value it cannot parse)
//! are left out. Tokens `read-token-0123456789` (role read) and `rotate-token-0123456789`
//! (role rotate) are valid.
//!
//! Asserts: no panic; no 5xx (everything a client can send is a client error or served);
//! every error carries the API's one JSON shape `{"code", "message"}` as JSON; a 429 says
//! when to retry; a success body is JSON (OpenMetrics text for `/metrics`); no response
//! holds a value of any secret the requests made rotate; and the audit log the requests
//! wrote verifies.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;
use rekeyd::api::{self, ApiState, Live, RateLimiter};
use rekeyd::audit::{AuditLog, Fingerprinter};
use rekeyd::backend::Selector;
use rekeyd::rotation::Engine;
use rekeyd::secret::Stage;
use tokio::sync::watch;
use tower::ServiceExt;

const POLICY: &str = r#"
[daemon]
state_dir = "state"
min_interval = "1m"

[api]
listen = "127.0.0.1:9464"
tokens_file = "tokens.toml"
rotate_burst = 3

[backends.local]
type = "file"

[[secrets]]
name = "app/db"
backend = "local"
schedule = { every = "30d" }
grace = "1h"
generator = { type = "password", length = 24, classes = ["lower", "upper", "digit"] }

[[secrets]]
name = "app/signing"
backend = "local"
schedule = { every = "1m" }
grace = "10s"
generator = { type = "bytes", length = 16, encoding = "hex" }
"#;

const TOKENS: &str = r#"
[[token]]
name = "dashboard"
role = "read"
token = "read-token-0123456789"

[[token]]
name = "runbook-bot"
role = "rotate"
token = "rotate-token-0123456789"
"#;

/// The error codes `ApiError` has (`src/api/error.rs`, docs/openapi.yaml).
const CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "rate_limited",
    "unavailable",
    "internal",
    "backend_error",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fuzz_target!(|input: &[u8]| {
    let requests: Vec<Request<Body>> = input
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .split(|line| *line == b"~~~\n" || *line == b"~~~")
        .take(8)
        .filter_map(|lines| request(&lines.concat()))
        .collect();
    if requests.is_empty() {
        return;
    }
    runtime().block_on(serve(requests));
});

/// One request from its text, or `None` when hyper would not have accepted it.
fn request(text: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match text.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (text, &b""[..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

async fn serve(requests: Vec<Request<Body>>) {
    let dir = scratch_dir();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, POLICY).expect("write policy");
    write_private(&dir.path().join("tokens.toml"), TOKENS);
    let policy = rekeyd::policy::load(&policy_path).expect("the fuzz policy is valid");
    let settings = policy.api.clone().expect("[api]");
    let audit = AuditLog::open(&policy.daemon.audit_log)
        .await
        .expect("audit log");
    let backends = rekeyd::backend::open_all(&policy)
        .await
        .expect("file store");
    let engine = Arc::new(Engine::new(
        backends,
        audit,
        Fingerprinter::from_key(&[7; 32]),
    ));
    let tokens = api::load_tokens(&settings).expect("tokens file");
    let policy = Arc::new(policy);
    let (_reloads, live) = watch::channel(Live {
        policy: Arc::clone(&policy),
        engine: Arc::clone(&engine),
        tokens,
    });
    let state = ApiState::new(
        live,
        Arc::new(rekeyd::metrics::Metrics::new()),
        RateLimiter::new(settings.rotate_burst, settings.rotate_every),
    );
    let app = api::router(state, settings.request_timeout);

    let mut bodies = Vec::new();
    for request in requests {
        let shown = format!("{} {}", request.method(), request.uri());
        let head = request.method() == Method::HEAD;
        let response = app.clone().oneshot(request).await.expect("infallible");
        bodies.push(check(&shown, head, response).await);
    }

    // No response may hold a value the requests made the store keep.
    for secret in &policy.secrets {
        let backend = &engine.backends()[&secret.backend];
        for stage in [Stage::Current, Stage::Previous, Stage::Pending] {
            let Ok(value) = backend.read(&secret.name, &Selector::Stage(stage)).await else {
                continue;
            };
            let value = value.expose();
            for body in &bodies {
                assert!(
                    !body.windows(value.len()).any(|w| w == value),
                    "a response holds the {} value of {}",
                    stage.as_str(),
                    secret.name.as_str()
                );
            }
        }
    }
    engine.audit().close().await;
    let verified = rekeyd::audit::verify(&policy.daemon.audit_log).expect("verify");
    assert!(verified.is_clean(), "{:?}", verified.problems);
}

/// Checks one response; returns its body.
async fn check(request: &str, head: bool, response: Response<Body>) -> Vec<u8> {
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("the body is read");
    let shown = String::from_utf8_lossy(&body);
    assert!(!status.is_server_error(), "{request} -> {status}: {shown}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            wait.is_some_and(|s| s >= 1),
            "{request}: 429 without Retry-After"
        );
    }
    if head && body.is_empty() {
        return body.to_vec();
    }
    if status.is_client_error() {
        assert_eq!(
            content_type, "application/json",
            "{request} -> {status}: {shown}"
        );
        let value: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{request} -> {status}: not JSON ({e}): {shown}"));
        let object = value.as_object().expect("an error is a JSON object");
        let code = object.get("code").and_then(|c| c.as_str());
        let message = object.get("message").and_then(|m| m.as_str());
        assert!(
            object.len() == 2 && code.is_some_and(|c| CODES.contains(&c)) && message.is_some(),
            "{request} -> {status}: not the error shape: {shown}"
        );
    } else if content_type.starts_with("application/openmetrics-text") {
        assert!(shown.ends_with("# EOF\n"), "{request}: metrics cut short");
    } else {
        assert_eq!(
            content_type, "application/json",
            "{request} -> {status}: {shown}"
        );
        serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("{request} -> {status}: not JSON ({e}): {shown}"));
    }
    body.to_vec()
}

/// A fresh directory, in memory when the machine has /dev/shm: each input fsyncs its audit
/// log and store several times, which on a disk would take most of the time.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temp dir")
}

/// Writes a file only its owner may read, as a tokens file must be.
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
