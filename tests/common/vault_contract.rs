//! A contract server for the parts of Vault's HTTP API that RustyVault does not serve: the
//! KV v2 engine (`data/`, `metadata/`, `destroy/` with `cas`, `custom_metadata`,
//! `max_versions`), Kubernetes auth login, and token `lookup-self` / `renew-self`.
//!
//! Built from the request and response shapes in Vault's published API documentation,
//! not from Vault's code. It is the documented exception to "real peers only": it proves
//! rekeyd speaks the documented contract, not that a real Vault behaves like it.
//! `docs/vault.md` says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The mount the server serves as KV v2.
pub const MOUNT: &str = "secret";
/// Vault's default `max_versions` when neither the key nor the mount sets one.
const DEFAULT_MAX_VERSIONS: u64 = 10;
/// The JWT the Kubernetes login accepts, and the role it is bound to.
pub const SERVICE_ACCOUNT_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.contract-test-service-account.sig";
pub const KUBERNETES_ROLE: &str = "rekeyd";

/// One version of a key.
#[derive(Clone)]
struct Version {
    data: Value,
    created_time: String,
    deletion_time: String,
    destroyed: bool,
}

/// One key of the KV v2 mount.
#[derive(Clone, Default)]
struct Key {
    versions: BTreeMap<u64, Version>,
    current_version: u64,
    max_versions: u64,
    cas_required: bool,
    custom_metadata: HashMap<String, String>,
    created_time: String,
    updated_time: String,
}

/// A token the server issued.
#[derive(Clone)]
pub struct Token {
    pub ttl: u64,
    pub renewable: bool,
    /// Write and destroy requests are refused (403), to exercise permission errors.
    pub read_only: bool,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub namespace: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct State {
    keys: BTreeMap<String, Key>,
    pub tokens: HashMap<String, Token>,
    pub seen: Vec<Seen>,
    issued: u64,
}

/// A running contract server on a loopback port.
pub struct ContractVault {
    pub addr: String,
    pub port: u16,
    pub state: Arc<Mutex<State>>,
    pub root_token: String,
}

impl ContractVault {
    /// Starts the server on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let root_token = "contract-root-token".to_owned();
        state.lock().unwrap().tokens.insert(
            root_token.clone(),
            Token {
                ttl: 0,
                renewable: false,
                read_only: false,
            },
        );
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        ContractVault {
            addr: format!("http://127.0.0.1:{port}"),
            port,
            state,
            root_token,
        }
    }

    /// Issues a token.
    pub fn token(&self, token: Token) -> String {
        let mut state = self.state.lock().unwrap();
        state.issued += 1;
        let id = format!("contract-token-{}", state.issued);
        state.tokens.insert(id.clone(), token);
        id
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// A request to the server, as a person with the root token would make it.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let port = self.port;
        let token = self.root_token.clone();
        let (method, path) = (method.to_owned(), path.to_owned());
        tokio::task::spawn_blocking(move || {
            super::rvault::http(
                port,
                &method,
                &format!("/v1/{path}"),
                Some(&token),
                body.as_ref(),
            )
            .expect("contract server answers")
        })
        .await
        .expect("request task")
    }
}

/// Serves one connection: HTTP/1.1 with keep-alive.
async fn serve(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (target.clone(), String::new()),
        };
        let token = headers.get("x-vault-token").cloned();
        let (status, answer) = {
            let mut state = state.lock().unwrap();
            state.seen.push(Seen {
                method: method.clone(),
                path: path.clone(),
                token: token.clone(),
                namespace: headers.get("x-vault-namespace").cloned(),
                body: body.clone(),
            });
            handle(&mut state, &method, &path, &query, token.as_deref(), &body)
        };
        let text = match &answer {
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let close = headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        write.write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

fn errors(messages: &[&str]) -> Option<Value> {
    Some(json!({ "errors": messages }))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn envelope(data: Value) -> Option<Value> {
    Some(json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    }))
}

fn version_metadata(key: &Key, n: u64) -> Value {
    let v = &key.versions[&n];
    json!({
        "created_time": v.created_time,
        "custom_metadata": if key.custom_metadata.is_empty() { Value::Null } else { json!(key.custom_metadata) },
        "deletion_time": v.deletion_time,
        "destroyed": v.destroyed,
        "version": n,
    })
}

fn handle(
    state: &mut State,
    method: &str,
    path: &str,
    query: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Option<Value>) {
    let Some(path) = path.strip_prefix("/v1/") else {
        return (404, errors(&[]));
    };
    // Logins need no token.
    if path == "auth/kubernetes/login" && method == "POST" {
        return kubernetes_login(state, body);
    }
    let Some(token_info) = token.and_then(|t| state.tokens.get(t)).cloned() else {
        return (403, errors(&["permission denied"]));
    };
    let token = token.unwrap_or_default().to_owned();
    match (method, path) {
        ("GET", "auth/token/lookup-self") => {
            return (
                200,
                envelope(json!({
                    "id": token,
                    "ttl": token_info.ttl,
                    "renewable": token_info.renewable,
                    "policies": ["default"],
                    "path": "auth/kubernetes/login",
                })),
            );
        }
        ("POST", "auth/token/renew-self") => {
            if !token_info.renewable {
                return (400, errors(&["lease is not renewable"]));
            }
            return (
                200,
                Some(json!({
                    "auth": {
                        "client_token": token,
                        "accessor": "contract-accessor",
                        "policies": ["default"],
                        "token_policies": ["default"],
                        "lease_duration": token_info.ttl,
                        "renewable": true,
                    }
                })),
            );
        }
        ("GET", p) if p == format!("sys/internal/ui/mounts/{MOUNT}") => {
            return (
                200,
                envelope(json!({
                    "type": "kv",
                    "options": { "version": "2" },
                    "path": format!("{MOUNT}/"),
                })),
            );
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix(&format!("{MOUNT}/")) else {
        return (404, errors(&[]));
    };
    let writes = matches!(method, "POST" | "PUT" | "DELETE");
    if writes && token_info.read_only {
        return (
            403,
            errors(&["1 error occurred:\n\t* permission denied\n\n"]),
        );
    }
    if let Some(key) = rest.strip_prefix("data/") {
        match method {
            "GET" => read_data(state, key, query),
            "POST" | "PUT" => write_data(state, key, body),
            _ => (405, errors(&["unsupported operation"])),
        }
    } else if let Some(key) = rest.strip_prefix("metadata/") {
        match method {
            "GET" => read_metadata(state, key),
            "LIST" => list(state, key),
            "POST" | "PUT" => write_metadata(state, key, body),
            "DELETE" => {
                state.keys.remove(key);
                (204, None)
            }
            _ => (405, errors(&["unsupported operation"])),
        }
    } else if let Some(key) = rest.strip_prefix("destroy/") {
        let Some(k) = state.keys.get_mut(key) else {
            return (204, None);
        };
        for n in body["versions"].as_array().into_iter().flatten() {
            if let Some(v) = n.as_u64().and_then(|n| k.versions.get_mut(&n)) {
                v.destroyed = true;
                v.data = Value::Null;
            }
        }
        (204, None)
    } else {
        // What Vault answers for a KV v1 style path on a KV v2 mount.
        (
            404,
            errors(&[
                "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.",
            ]),
        )
    }
}

fn read_data(state: &State, key: &str, query: &str) -> (u16, Option<Value>) {
    let Some(k) = state.keys.get(key) else {
        return (404, errors(&[]));
    };
    let wanted = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("version="))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(k.current_version);
    let Some(v) = k.versions.get(&wanted) else {
        return (404, errors(&[]));
    };
    let body = json!({ "data": if v.destroyed || !v.deletion_time.is_empty() { Value::Null } else { v.data.clone() }, "metadata": version_metadata(k, wanted) });
    if v.destroyed || !v.deletion_time.is_empty() {
        return (404, envelope(body));
    }
    (200, envelope(body))
}

fn write_data(state: &mut State, key: &str, body: &Value) -> (u16, Option<Value>) {
    let Some(data) = body.get("data").filter(|d| d.is_object()) else {
        return (400, errors(&["no data provided"]));
    };
    let k = state.keys.entry(key.to_owned()).or_insert_with(|| Key {
        created_time: now(),
        ..Key::default()
    });
    let cas = body
        .get("options")
        .and_then(|o| o.get("cas"))
        .and_then(Value::as_u64);
    if k.cas_required && cas.is_none() {
        return (
            400,
            errors(&["check-and-set parameter required for this call"]),
        );
    }
    if let Some(cas) = cas
        && cas != k.current_version
    {
        return (
            400,
            errors(&["check-and-set parameter did not match the current version"]),
        );
    }
    let n = k.current_version + 1;
    k.current_version = n;
    k.updated_time = now();
    k.versions.insert(
        n,
        Version {
            data: data.clone(),
            created_time: now(),
            deletion_time: String::new(),
            destroyed: false,
        },
    );
    let max = if k.max_versions > 0 {
        k.max_versions
    } else {
        DEFAULT_MAX_VERSIONS
    };
    while k.versions.len() as u64 > max {
        let oldest = *k.versions.keys().next().unwrap();
        k.versions.remove(&oldest);
    }
    (200, envelope(version_metadata(k, n)))
}

fn read_metadata(state: &State, key: &str) -> (u16, Option<Value>) {
    let Some(k) = state.keys.get(key) else {
        return (404, errors(&[]));
    };
    let versions: serde_json::Map<String, Value> = k
        .versions
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                json!({
                    "created_time": v.created_time,
                    "deletion_time": v.deletion_time,
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    (
        200,
        envelope(json!({
            "cas_required": k.cas_required,
            "created_time": k.created_time,
            "current_version": k.current_version,
            "custom_metadata": if k.custom_metadata.is_empty() { Value::Null } else { json!(k.custom_metadata) },
            "delete_version_after": "0s",
            "max_versions": k.max_versions,
            "oldest_version": k.versions.keys().next().copied().unwrap_or(0),
            "updated_time": k.updated_time,
            "versions": versions,
        })),
    )
}

fn write_metadata(state: &mut State, key: &str, body: &Value) -> (u16, Option<Value>) {
    if let Some(custom) = body.get("custom_metadata").filter(|c| !c.is_null()) {
        let Some(map) = custom.as_object() else {
            return (400, errors(&["custom_metadata must be a map of strings"]));
        };
        if map.len() > 64 {
            return (400, errors(&["custom_metadata may hold at most 64 keys"]));
        }
        for (k, v) in map {
            let Some(v) = v.as_str() else {
                return (400, errors(&["custom_metadata values must be strings"]));
            };
            if k.len() > 128 || v.len() > 512 {
                return (400, errors(&["custom_metadata key or value too long"]));
            }
        }
    }
    let k = state.keys.entry(key.to_owned()).or_insert_with(|| Key {
        created_time: now(),
        ..Key::default()
    });
    if let Some(max) = body.get("max_versions").and_then(Value::as_u64) {
        k.max_versions = max;
    }
    if let Some(cas_required) = body.get("cas_required").and_then(Value::as_bool) {
        k.cas_required = cas_required;
    }
    // Documented: a provided custom_metadata replaces the whole map.
    if let Some(map) = body.get("custom_metadata").and_then(Value::as_object) {
        k.custom_metadata = map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    k.updated_time = now();
    (204, None)
}

fn list(state: &State, prefix: &str) -> (u16, Option<Value>) {
    let prefix = prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut keys = std::collections::BTreeSet::new();
    for key in state.keys.keys() {
        if let Some(rest) = key.strip_prefix(&prefix) {
            match rest.split_once('/') {
                Some((folder, _)) => keys.insert(format!("{folder}/")),
                None => keys.insert(rest.to_owned()),
            };
        }
    }
    if keys.is_empty() {
        return (404, errors(&[]));
    }
    (200, envelope(json!({ "keys": keys })))
}

fn kubernetes_login(state: &mut State, body: &Value) -> (u16, Option<Value>) {
    let role = body.get("role").and_then(Value::as_str);
    let jwt = body.get("jwt").and_then(Value::as_str);
    match (role, jwt) {
        (None, _) | (_, None) => (400, errors(&["missing role or jwt"])),
        (Some(role), _) if role != KUBERNETES_ROLE => {
            (400, errors(&[&format!("invalid role name \"{role}\"")]))
        }
        (_, Some(jwt)) if jwt != SERVICE_ACCOUNT_JWT => (403, errors(&["permission denied"])),
        _ => {
            state.issued += 1;
            let token = format!("contract-k8s-token-{}", state.issued);
            state.tokens.insert(
                token.clone(),
                Token {
                    ttl: 3600,
                    renewable: true,
                    read_only: false,
                },
            );
            (
                200,
                Some(json!({
                    "auth": {
                        "client_token": token,
                        "accessor": "contract-accessor",
                        "policies": ["default", "rekeyd"],
                        "token_policies": ["default", "rekeyd"],
                        "metadata": {
                            "role": KUBERNETES_ROLE,
                            "service_account_name": "rekeyd",
                            "service_account_namespace": "security",
                            "service_account_secret_name": "",
                            "service_account_uid": "7d0f3b1e-0000-4000-8000-000000000001",
                        },
                        "lease_duration": 3600,
                        "renewable": true,
                    }
                })),
            )
        }
    }
}
