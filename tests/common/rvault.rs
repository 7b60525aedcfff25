//! A real RustyVault server (`rvault`, a Vault-API-compatible server) for one test: started
//! on a free loopback port with its own config and file storage in a temp dir, initialised
//! and unsealed, killed when dropped.
//!
//! A missing binary fails the test with the command that installs it; it never skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running, unsealed RustyVault.
pub struct RustyVault {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    pub root_token: String,
    unseal_key: String,
}

/// Where `rvault` is: `$REKEYD_RVAULT`, `PATH`, or `~/.cargo/bin`.
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKEYD_RVAULT") {
        return PathBuf::from(path);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("rvault"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/rvault"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "RustyVault (`rvault`) is not installed, and the Vault backend tests need a real server: \
                 install it with `cargo install rusty_vault --locked` (or run .ci/test, which does), \
                 or point REKEYD_RVAULT at the binary"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

impl RustyVault {
    /// Starts, initialises (one key share) and unseals a fresh server.
    pub fn start() -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("config.hcl");
        // Loopback only, plain HTTP, storage and work dir inside the temp dir (rvault's
        // default work dir is /tmp/rusty_vault).
        std::fs::write(
            &config,
            format!(
                "storage \"file\" {{\n  path = \"{data}\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"{addr}\"\nwork_dir = \"{work}\"\nlog_level = \"warn\"\n",
                data = dir.path().join("data").display(),
                work = dir.path().join("work").display(),
            ),
        )
        .expect("write rvault config");
        let log = std::fs::File::create(dir.path().join("rvault.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = RustyVault {
            child,
            dir,
            port,
            addr,
            root_token: String::new(),
            unseal_key: String::new(),
        };
        server.wait_ready();
        let (status, body) = server.call(
            "PUT",
            "sys/init",
            None,
            Some(&json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        assert_eq!(status, 200, "init: {body}");
        server.unseal_key = body["keys"][0].as_str().expect("unseal key").to_owned();
        server.root_token = body["root_token"].as_str().expect("root token").to_owned();
        server.unseal();
        server
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll rvault") {
                panic!(
                    "rvault exited at start ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("rvault.log")).unwrap_or_default()
                );
            }
            if let Ok((_, body)) = self.try_call("GET", "sys/seal-status", None, None)
                && !body.is_null()
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "rvault did not answer on {} within 30s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `PUT sys/unseal` with the key from init.
    pub fn unseal(&self) {
        let (status, body) = self.call(
            "PUT",
            "sys/unseal",
            None,
            Some(&json!({ "key": self.unseal_key })),
        );
        assert_eq!(status, 200, "unseal: {body}");
        assert_eq!(body["sealed"], false, "still sealed: {body}");
    }

    /// `PUT sys/seal`.
    pub fn seal(&self) {
        let (status, body) = self.call("PUT", "sys/seal", Some(&self.root_token), None);
        assert!(status < 300, "seal: {status} {body}");
    }

    /// One API call: `(status, JSON body or Null)`. Panics if the server is unreachable.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`call`] with the root token.
    pub fn root(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.root_token), body)
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        http(self.port, method, &format!("/v1/{path}"), token, body)
    }

    /// Enables AppRole and creates `role` with the given token TTLs; returns
    /// `(role_id, secret_id)`.
    pub fn approle(&self, role: &str, token_ttl: &str, token_max_ttl: &str) -> (String, String) {
        let (status, _) = self.root("GET", "sys/auth", None);
        assert_eq!(status, 200);
        let (_, auths) = self.root("GET", "sys/auth", None);
        if auths.get("approle/").is_none() {
            let (status, body) = self.root(
                "POST",
                "sys/auth/approle",
                Some(&json!({"type": "approle"})),
            );
            assert!(status < 300, "enable approle: {status} {body}");
        }
        let (status, body) = self.root(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(&json!({
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
                "token_policies": ["rekeyd"],
            })),
        );
        assert!(status < 300, "create role: {status} {body}");
        let (_, body) = self.root("GET", &format!("auth/approle/role/{role}/role-id"), None);
        let role_id = body["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
        let (_, body) = self.root(
            "POST",
            &format!("auth/approle/role/{role}/secret-id"),
            Some(&json!({})),
        );
        let secret_id = body["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_owned();
        (role_id, secret_id)
    }
}

impl Drop for RustyVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for the harness (plain HTTP on loopback, one request per
/// connection), so tests need no HTTP library of their own.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("X-Vault-Token: {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let content = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let value = if content.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&content).unwrap_or(Value::String(content))
    };
    Ok((status, value))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}
