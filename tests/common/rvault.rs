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
    /// Set when the server speaks TLS: the client side, trusting the test CA.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    pub root_token: String,
    unseal_key: String,
}

/// Where `rvault` is: `$REKEYD_RVAULT`, `PATH`, `$CARGO_HOME/bin` or `~/.cargo/bin`.
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
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        candidates.push(Path::new(&cargo_home).join("bin/rvault"));
    }
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
    /// Starts, initialises (one key share) and unseals a fresh server on plain HTTP.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// As [`start`], with a TLS listener using `tls.cert`/`tls.key`, signed by `tls.ca`.
    pub fn start_tls(tls: &TestCa) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&TestCa>) -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{port}");
        let listener_tls = match tls {
            None => "  tls_disable = true\n".to_owned(),
            // No client certificates: RustyVault's OpenSSL set-up then refuses TLS session
            // resumption with an internal-error alert (no session id context).
            Some(t) => format!(
                "  tls_disable = false\n  tls_disable_client_certs = true\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n",
                t.cert.display(),
                t.key.display()
            ),
        };
        let config = dir.path().join("config.hcl");
        // Loopback only, storage and work dir inside the temp dir (rvault's default work
        // dir is /tmp/rusty_vault).
        std::fs::write(
            &config,
            format!(
                "storage \"file\" {{\n  path = \"{data}\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n{listener_tls}}}\n\
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
            tls: tls.map(TestCa::client_config),
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
            .unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: {e}\nrvault log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("rvault.log")).unwrap_or_default()
                )
            })
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
        let path = format!("/v1/{path}");
        match &self.tls {
            None => http(self.port, method, &path, token, body),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .expect("IP server name")
                    .to_owned();
                let conn = rustls::ClientConnection::new(std::sync::Arc::clone(config), name)
                    .map_err(std::io::Error::other)?;
                let sock = TcpStream::connect(("127.0.0.1", self.port))?;
                sock.set_read_timeout(Some(Duration::from_secs(30)))?;
                exchange(
                    rustls::StreamOwned::new(conn, sock),
                    self.port,
                    method,
                    &path,
                    token,
                    body,
                )
            }
        }
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
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    exchange(stream, port, method, path, token, body)
}

/// One request and its answer over an open stream (plain or TLS).
fn exchange(
    mut stream: impl Read + Write,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
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
    stream.flush()?;
    // Read until the answer is complete rather than until the peer closes: how a TLS
    // server ends a connection varies (close_notify or not, an alert).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    while !complete(&raw) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(_) if complete(&raw) => break,
            Err(e) if raw.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
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

/// Whether `raw` holds a whole HTTP response (headers and the body they announce).
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.contains("0\r\n\r\n");
    }
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        Some(length) => body.len() >= length,
        // No length: a status without a body (204) or one ended by closing.
        None => head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304"),
    }
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

/// A throwaway CA and a server certificate for 127.0.0.1 it signed, made with the
/// `openssl` command (which `.ci/test` installs).
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| {
                    panic!("the TLS test needs the `openssl` command (apt-get install openssl; .ci/test installs it): {e}")
                });
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rekeyd test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            dir,
        }
    }

    fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("read CA") {
            roots.add(cert.expect("CA cert")).expect("add CA");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }
}
