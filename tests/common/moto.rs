//! A `moto_server` of its own per test: started on a free loopback port through
//! `moto_server.py` (moto with the fixes that file lists), ready when `GET /` answers,
//! killed on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The region every AWS test uses.
pub const REGION: &str = "us-east-1";
/// The environment variables the black-box tests put moto's (arbitrary) keys in.
pub const KEY_VAR: &str = "REKEYD_TEST_AWS_KEY_ID";
pub const SECRET_VAR: &str = "REKEYD_TEST_AWS_SECRET";

/// The directory holding `moto_server.py` and `aws_check.py`.
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common")
}

/// A running moto server.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

impl Moto {
    /// Starts a fresh server with `env` added to its environment; panics with how to
    /// install moto when it cannot start.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(support_dir().join("moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect(
            "cannot run python3 for moto_server: install Python 3 and `pip install 'moto[server]' boto3` (.ci/test does)",
        );
        let start = Instant::now();
        while !answers(port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto_server exited ({status}) before answering: is moto installed? Run `pip install 'moto[server]' boto3` (.ci/test does)"
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on port {port} within 60s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a fresh server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The `[backends.aws]` table for this server: static test keys from [`KEY_VAR`] and
    /// [`SECRET_VAR`], so start-up resolves nothing.
    pub fn backend_table(&self, extra: &str) -> String {
        format!(
            "[backends.aws]\ntype = \"aws\"\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\n\
             access_key_id_env = \"{KEY_VAR}\"\nsecret_access_key_env = \"{SECRET_VAR}\"\n{extra}\n",
            self.url
        )
    }

    /// Runs `aws_check.py COMMAND ARGS…` (boto3) against this server; returns stdout.
    pub fn boto3(&self, args: &[&str]) -> String {
        let out = self.boto3_output(args);
        assert!(
            out.status.success(),
            "aws_check.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn boto3_output(&self, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(support_dir().join("aws_check.py"))
            .arg(&self.url)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("run python3 aws_check.py")
    }

    /// What boto3 sees of a secret: `VersionIdsToStages`, rotation settings, and the values
    /// at `AWSCURRENT` and `AWSPREVIOUS` (text, or `b64:` and base64 for binary).
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.boto3(&["inspect", name])).expect("inspect JSON")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL: moto takes over a second to exit on SIGTERM, and holds nothing to flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
