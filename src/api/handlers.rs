//! The endpoints. Status comes from `rotation::status`, the model `rekeyd status` prints,
//! so the CLI and the API never disagree; nothing here ever returns a value.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Caller, Role};
use super::error::ApiError;
use crate::rotation::status::{self, SecretStatus};
use crate::rotation::{Outcome, RotationError};

/// Each readiness check may take this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /healthz`: the process is alive and serving.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
pub(super) struct Readiness {
    status: &'static str,
    checks: std::collections::BTreeMap<String, &'static str>,
}

/// `GET /readyz`: policy loaded, every backend answering, audit log writable. Causes go
/// to the log; the probe only says which check failed.
pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    let live = state.live();
    let mut checks = std::collections::BTreeMap::new();
    checks.insert("policy".to_owned(), "ok");
    let mut ready = true;
    for (name, backend) in live.engine.backends() {
        let ok = match tokio::time::timeout(CHECK_TIMEOUT, backend.health()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(backend = %name, error = %e, "readiness: backend failing");
                false
            }
            Err(_) => {
                tracing::warn!(backend = %name, "readiness: backend did not answer in time");
                false
            }
        };
        ready &= ok;
        checks.insert(format!("backend:{name}"), if ok { "ok" } else { "failing" });
    }
    let path = live.engine.audit().path().to_owned();
    let writable = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new().append(true).open(&path).is_ok()
    })
    .await
    .unwrap_or(false);
    ready &= writable;
    checks.insert(
        "audit_log".to_owned(),
        if writable { "ok" } else { "failing" },
    );
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: OpenMetrics text, which Prometheus scrapes natively (it is what the
/// Prometheus project's Rust encoder writes, `# EOF` and `_total` samples included).
pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    let live = state.live();
    let audit = live.engine.audit().stats();
    let text = state
        .metrics()
        .render(Utc::now(), audit.appended, audit.fsyncs);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/secrets`.
pub(super) async fn list(State(state): State<ApiState>) -> Json<Vec<SecretStatus>> {
    let live = state.live();
    Json(status::collect(&live.policy, live.engine.backends(), Utc::now()).await)
}

fn secret_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|_| ApiError::not_found("no such secret (encode / in names as %2F)"))
}

/// `GET /v1/secrets/{name}` (`/` in names encoded as `%2F`).
pub(super) async fn one(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SecretStatus>, ApiError> {
    let name = secret_name(path)?;
    let live = state.live();
    let secret = live
        .policy
        .secret(&name)
        .ok_or_else(|| ApiError::not_found(format!("secret {name:?} is not in the policy")))?;
    let described = match live.engine.describe(secret).await {
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    };
    Ok(Json(status::status_of(
        secret,
        described.as_ref().map(Option::as_ref).map_err(Clone::clone),
        Utc::now(),
    )))
}

/// Query of the rotate endpoint.
#[derive(Debug, Deserialize)]
pub(super) struct RotateQuery {
    /// Rotate even inside the grace period.
    #[serde(default)]
    force: bool,
}

/// Response of the rotate endpoint.
#[derive(Serialize)]
pub(super) struct Rotated {
    secret: String,
    outcome: &'static str,
    version: String,
    previous: Option<String>,
    requested_by: String,
}

/// `POST /v1/secrets/{name}/rotate[?force=true]`: a manual rotation, audited as
/// `api:<token name>`.
pub(super) async fn rotate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RotateQuery>, QueryRejection>,
) -> Result<Json<Rotated>, ApiError> {
    if caller.role < Role::Rotate {
        return Err(ApiError::forbidden(format!(
            "token {:?} may read status but not rotate",
            caller.name
        )));
    }
    state
        .limiter()
        .check(&caller.name, Instant::now())
        .map_err(ApiError::rate_limited)?;
    let name = secret_name(path)?;
    let Query(query) = query.map_err(|_| ApiError::bad_request("force must be true or false"))?;
    let live = state.live();
    let secret = live
        .policy
        .secret(&name)
        .ok_or_else(|| ApiError::not_found(format!("secret {name:?} is not in the policy")))?;
    let by = format!("api:{}", caller.name);
    let outcome = live
        .engine
        .rotate_manually(secret, &by, query.force)
        .await
        .map_err(|e| match e {
            RotationError::Refused(message) => ApiError::conflict(message),
            e if e.is_not_found() => ApiError::not_found(e.to_string()),
            RotationError::Backend { .. } => ApiError::backend(&e),
            e => ApiError::internal(&e),
        })?;
    let (outcome, version, previous) = match outcome {
        Outcome::Rotated { version, previous } => ("rotated", version, previous),
        Outcome::AlreadyDone { version } => ("already_current", version, None),
        Outcome::Discarded { version } => ("discarded", version, None),
    };
    Ok(Json(Rotated {
        secret: secret.name.to_string(),
        outcome,
        version: version.to_string(),
        previous: previous.map(|p| p.to_string()),
        requested_by: by,
    }))
}

/// The body of `POST /v1/secrets/{name}/confirm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer {
    version: String,
    target: String,
    decision: AnswerDecision,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AnswerDecision {
    Confirm,
    Refuse,
}

#[derive(Serialize)]
pub(super) struct Answered {
    secret: String,
    version: String,
    target: String,
    decision: &'static str,
    by: String,
}

/// `POST /v1/secrets/{name}/confirm`: a consumer confirms (or refuses) the pending version
/// for its notify target, as a 2xx to the pending webhook or `rekeyd confirm` would. Only a
/// token listing the target in `confirms` may; audited as `api:<token name>`.
pub(super) async fn confirm(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Answer>, JsonRejection>,
) -> Result<Json<Answered>, ApiError> {
    state
        .limiter()
        .check(&caller.name, Instant::now())
        .map_err(ApiError::rate_limited)?;
    let name = secret_name(path)?;
    // Not the parser's message: it may quote the body back.
    let Json(answer) = body.map_err(|_| {
        ApiError::bad_request(
            "the body must be JSON: {\"version\": …, \"target\": …, \"decision\": \"confirm\" or \"refuse\"}",
        )
    })?;
    if !caller.confirms.contains(&answer.target) {
        return Err(ApiError::forbidden(format!(
            "token {:?} may not answer for target {:?} (see `confirms` in the tokens file)",
            caller.name, answer.target
        )));
    }
    let live = state.live();
    let secret = live
        .policy
        .secret(&name)
        .ok_or_else(|| ApiError::not_found(format!("secret {name:?} is not in the policy")))?;
    let unanswerable = |e: crate::notify::answer::Unanswerable| ApiError::conflict(e.to_string());
    crate::notify::answer::check_target(secret, &answer.target).map_err(unanswerable)?;
    let Some(notifier) = live.engine.notifier() else {
        return Err(ApiError::unavailable(
            "notifications are not running, so no gate is waiting",
        ));
    };
    let described = live.engine.describe(secret).await.map_err(|e| match e {
        RotationError::Backend { .. } => ApiError::backend(&e),
        e => ApiError::internal(&e),
    })?;
    let pending = described
        .as_ref()
        .and_then(|d| d.stage(crate::secret::Stage::Pending))
        .map(|v| v.id.as_str());
    crate::notify::answer::check_pending(secret, &answer.version, pending).map_err(unanswerable)?;
    let by = format!("api:{}", caller.name);
    let confirmation = crate::notify::Confirmation {
        secret: secret.name.to_string(),
        version: answer.version,
        target: answer.target,
        decision: match answer.decision {
            AnswerDecision::Confirm => crate::notify::Decision::Confirmed,
            AnswerDecision::Refuse => crate::notify::Decision::Refused,
        },
        via: "api".to_owned(),
        by,
        at: Utc::now(),
        // Checked against the backend just now: the answer is for the version pending now.
        fingerprint: None,
    };
    notifier
        .record_confirmation(&confirmation)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(Answered {
        secret: confirmation.secret,
        version: confirmation.version,
        target: confirmation.target,
        decision: confirmation.decision.as_str(),
        by: confirmation.by,
    }))
}

/// Any other path.
pub(super) async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/openapi.yaml")
}

/// A known path with a method it does not take: the error shape every other failure has,
/// rather than axum's empty 405.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
