//! The HTTP layer: requests to Vault's API through `vaultrs`'s client, answers parsed
//! leniently, failures classified into [`VaultError`].
//!
//! `vaultrs` builds the HTTP client (rustls with the configured CA, timeouts) and its
//! middleware adds `/v1`, `X-Vault-Token` and `X-Vault-Namespace`. rekeyd describes each
//! request itself and parses only the fields it needs from the answer, because `vaultrs`'s
//! typed responses insist on fields (`request_id`, `accessor`, …) that Vault-API servers
//! such as RustyVault leave out, and one of its paths (`renew-self`) is misspelt.
//!
//! rekeyd zeroizes its own request and response buffers; the copies inside the HTTP stack
//! (rustify, reqwest, hyper, vaultrs's token string) are freed without being wiped.

use std::sync::{Arc, RwLock};

use rustify::endpoint::{Endpoint, MiddleWare};
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vaultrs::api::EndpointMiddleware;

use super::error::{VaultError, server_detail};
use crate::wipe::{WipedVec, json_bytes};

/// One request to Vault's API: a path under `/v1`, a method, an optional JSON body.
#[derive(Clone)]
pub(crate) struct Request {
    method: Method,
    path: String,
    query: Option<String>,
    body: Option<WipedVec>,
}

/// The HTTP methods rekeyd uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// Read.
    Get,
    /// Vault's `LIST`.
    List,
    /// Create or update.
    Post,
    /// Remove.
    Delete,
}

impl Method {
    /// The word for messages, and the ACL capabilities the method needs on the path (a
    /// write needs `create` for a new path, `update` for an existing one).
    fn operation(self) -> (&'static str, &'static str) {
        match self {
            Method::Get => ("read", "\"read\""),
            Method::List => ("list", "\"list\""),
            Method::Post => ("write", "\"create\", \"update\""),
            Method::Delete => ("delete", "\"delete\""),
        }
    }
}

impl Request {
    /// A request without a body.
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: None,
            body: None,
        }
    }

    /// A `POST` with a JSON body.
    pub(crate) fn post(path: impl Into<String>, body: &Value) -> Self {
        let bytes = json_bytes(body);
        Self {
            method: Method::Post,
            path: path.into(),
            query: None,
            body: Some(bytes),
        }
    }

    /// Adds a query string (`version=3`).
    pub(crate) fn query(mut self, query: String) -> Self {
        self.query = Some(query);
        self
    }

    /// The API path, for messages.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

impl Endpoint for Request {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        match self.method {
            Method::Get => RequestMethod::GET,
            Method::List => RequestMethod::LIST,
            Method::Post => RequestMethod::POST,
            Method::Delete => RequestMethod::DELETE,
        }
    }

    fn query(&self) -> Result<Option<String>, rustify::errors::ClientError> {
        Ok(self.query.clone())
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.body.as_ref().map(|b| b.to_vec()))
    }
}

/// A successful answer's body (zeroized on drop: it may hold values).
pub(crate) struct Reply {
    body: WipedVec,
    path: String,
}

/// Vault's response envelope, leniently: only what rekeyd reads.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    // A missing `Option` field deserializes as `None`.
    data: Option<T>,
    auth: Option<Value>,
}

impl Reply {
    /// True when the answer has no body (`204 No Content`).
    pub(crate) fn is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }

    /// The `data` field, parsed as `T`.
    pub(crate) fn data<T: DeserializeOwned>(&self) -> Result<T, VaultError> {
        let envelope: Envelope<T> = serde_json::from_slice(&self.body).map_err(|e| self.bad(e))?;
        envelope.data.ok_or_else(|| VaultError::BadAnswer {
            path: self.path.clone(),
            detail: "the answer has no `data` field".to_owned(),
        })
    }

    /// The whole body parsed as `T` (for the few answers without an envelope).
    pub(crate) fn whole<T: DeserializeOwned>(&self) -> Result<T, VaultError> {
        serde_json::from_slice(&self.body).map_err(|e| self.bad(e))
    }

    /// The `auth` field of a login or renewal, parsed as `T`.
    pub(crate) fn auth<T: DeserializeOwned>(&self) -> Result<T, VaultError> {
        let envelope: Envelope<Value> =
            serde_json::from_slice(&self.body).map_err(|e| self.bad(e))?;
        let auth = envelope.auth.ok_or_else(|| VaultError::BadAnswer {
            path: self.path.clone(),
            detail: "the answer has no `auth` field".to_owned(),
        })?;
        serde_json::from_value(auth).map_err(|e| self.bad(e))
    }

    fn bad(&self, e: serde_json::Error) -> VaultError {
        // serde_json's message names the field and position, never the content.
        VaultError::BadAnswer {
            path: self.path.clone(),
            detail: format!(
                "{} at line {} column {}",
                e.classify_kind(),
                e.line(),
                e.column()
            ),
        }
    }
}

/// serde_json's error category as words.
trait Classify {
    fn classify_kind(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_kind(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
            serde_json::error::Category::Eof => "the answer ends early",
        }
    }
}

/// The connection to one Vault server: `vaultrs`'s HTTP client and middleware, with a
/// token that the auth layer swaps when it logs in again.
pub(crate) struct Api {
    http: rustify::clients::reqwest::Client,
    middleware: RwLock<Arc<EndpointMiddleware>>,
    address: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The middleware holds the token: never print it.
        f.debug_struct("Api")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Wraps a `vaultrs` client (its token is replaced by [`Api::set_token`]).
    pub(crate) fn new(client: vaultrs::client::VaultClient, address: String) -> Self {
        let mut middleware = client.middle.clone();
        middleware.token.clear();
        Self {
            http: client.http,
            middleware: RwLock::new(Arc::new(middleware)),
            address,
        }
    }

    /// The server's address, for messages.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Uses `token` for every later request.
    pub(crate) fn set_token(&self, token: &str) {
        let mut guard = self.middleware.write().unwrap_or_else(|p| p.into_inner());
        // The old token's copy is freed, not wiped, once in-flight requests drop it:
        // vaultrs keeps tokens in plain strings.
        let mut next = EndpointMiddleware::clone(&guard);
        next.token = token.to_owned();
        *guard = Arc::new(next);
    }

    /// Whether a token is set.
    pub(crate) fn has_token(&self) -> bool {
        !self
            .middleware
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .token
            .is_empty()
    }

    fn current_middleware(&self) -> Arc<EndpointMiddleware> {
        Arc::clone(&self.middleware.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends `request` with the current token.
    pub(crate) async fn send(&self, request: &Request) -> Result<Reply, VaultError> {
        let middleware = self.current_middleware();
        self.send_with(request, &*middleware).await
    }

    /// Sends `request` with no token (logins).
    pub(crate) async fn send_anonymous(&self, request: &Request) -> Result<Reply, VaultError> {
        let mut middleware = EndpointMiddleware::clone(&self.current_middleware());
        middleware.token.clear();
        self.send_with(request, &middleware).await
    }

    async fn send_with(
        &self,
        request: &Request,
        middleware: &impl MiddleWare,
    ) -> Result<Reply, VaultError> {
        let result = request
            .clone()
            .with_middleware(middleware)
            .exec(&self.http)
            .await;
        match result {
            Ok(result) => Ok(Reply {
                body: WipedVec::new(result.response.into_body()),
                path: request.path.clone(),
            }),
            Err(e) => Err(self.classify(request, e)),
        }
    }

    fn classify(&self, request: &Request, e: rustify::errors::ClientError) -> VaultError {
        use rustify::errors::ClientError as E;
        let (operation, capability) = request.method.operation();
        let path = request.path.clone();
        match e {
            E::ServerResponseError { code, content } => {
                let detail = server_detail(content.as_deref());
                let lower = detail.to_lowercase();
                match code {
                    403 => VaultError::PermissionDenied {
                        operation,
                        path,
                        capability,
                        detail,
                    },
                    404 if lower.contains("invalid path for a versioned k/v") => {
                        wrong_v1_call(&path)
                    }
                    404 => VaultError::NotFound { path },
                    400 if lower.contains("check-and-set") => VaultError::CasMismatch { path },
                    400 | 405 if lower.contains("invalid path for a versioned k/v") => {
                        wrong_v1_call(&path)
                    }
                    503 if lower.contains("sealed") => VaultError::Sealed {
                        address: self.address.clone(),
                    },
                    status => VaultError::Http {
                        operation,
                        path,
                        status,
                        detail,
                    },
                }
            }
            other => {
                // The transport's own words are in the source chain (reqwest, hyper,
                // rustls): "connection refused", "invalid peer certificate: UnknownIssuer".
                let mut causes = Vec::new();
                let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&other);
                while let Some(c) = cause {
                    causes.push(c.to_string());
                    cause = c.source();
                }
                causes.dedup();
                let mut what = format!("{operation} of `{path}`");
                if !causes.is_empty() {
                    what.push_str(": ");
                    what.push_str(&causes.join(": "));
                }
                if causes.iter().any(|c| c.contains("certificate")) {
                    what.push_str(
                        "; the server's TLS certificate is not trusted: set ca_cert to the CA that signed it",
                    );
                }
                VaultError::Unreachable {
                    address: self.address.clone(),
                    what,
                    source: Box::new(other),
                }
            }
        }
    }
}

fn wrong_v1_call(path: &str) -> VaultError {
    VaultError::WrongMount(format!(
        "`{path}` is on a KV version 2 mount, but the backend is configured with kv_version = 1: set kv_version = 2"
    ))
}
