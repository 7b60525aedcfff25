//! The HTTP API (axum): probes, Prometheus metrics, secret status and manual rotation.
//!
//! Off unless the policy has an `[api]` table. Everything under `/v1` needs a bearer
//! token; `/healthz`, `/readyz` and `/metrics` do not (probes and scrapers carry none).
//! The contract is `docs/openapi.yaml`, exercised by schemathesis in `tests/api.rs`.

mod auth;
mod error;
mod handlers;
mod limit;

pub use auth::{Caller, Role, Tokens};
pub use error::ApiError;
pub use limit::RateLimiter;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::Metrics;
use crate::policy::{ApiSettings, Policy};
use crate::rotation::Engine;

/// What the API serves from: the running policy and engine, replaced on reload.
#[derive(Clone, Debug)]
pub struct Live {
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// The engine for it.
    pub engine: Arc<Engine>,
    /// Bearer tokens from `[api] tokens_file` (`None`: every `/v1` request is refused);
    /// re-read with the policy on reload.
    pub tokens: Option<Arc<Tokens>>,
}

/// Shared by every request.
#[derive(Clone, Debug)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: watch::Receiver<Live>,
    metrics: Arc<Metrics>,
    limiter: RateLimiter,
}

impl ApiState {
    /// State over a live view (replaced on reload) and the metrics registry.
    pub fn new(live: watch::Receiver<Live>, metrics: Arc<Metrics>, limiter: RateLimiter) -> Self {
        Self {
            inner: Arc::new(Inner {
                live,
                metrics,
                limiter,
            }),
        }
    }

    fn live(&self) -> Live {
        self.inner.live.borrow().clone()
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }
}

/// Resolves the bearer token to a [`Caller`] for anything under `/v1`. It runs before
/// routing, so a caller without a token learns nothing about `/v1` (not which paths exist,
/// nor which methods they take): every answer is 401.
async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return Ok(next.run(request).await);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let caller = state
        .live()
        .tokens
        .and_then(|tokens| tokens.authenticate(presented.trim()))
        .ok_or_else(ApiError::unauthorized)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The routes, with authentication on `/v1` and a request timeout on everything.
pub fn router(state: ApiState, request_timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/secrets", get(handlers::list))
        .route("/v1/secrets/{name}", get(handlers::one))
        .route("/v1/secrets/{name}/rotate", post(handlers::rotate))
        .route("/v1/secrets/{name}/confirm", post(handlers::confirm))
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::fallback)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .with_state(state)
}

/// Binds the API's port now, so a port in use fails start-up instead of a background task.
pub fn bind(settings: &ApiSettings) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(settings.listen)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Loads the tokens file the settings name, if any.
pub fn load_tokens(settings: &ApiSettings) -> Result<Option<Arc<Tokens>>, String> {
    settings
        .tokens_file
        .as_deref()
        .map(|path| Tokens::load(path).map(Arc::new))
        .transpose()
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes requests in
/// flight.
pub async fn serve(
    listener: std::net::TcpListener,
    settings: &ApiSettings,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state, settings.request_timeout);
    match &settings.tls {
        None => {
            tracing::info!(listen = %settings.listen, "API listening (HTTP)");
            axum::serve(tokio::net::TcpListener::from_std(listener)?, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some((cert, key)) => {
            // One crypto provider for the process: ring, already used everywhere else.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
            });
            tracing::info!(listen = %settings.listen, "API listening (HTTPS)");
            axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}

#[cfg(test)]
mod tests;
