//! Shared harness for the black-box tests: a scratch directory with a policy, the real
//! `rekeyd` binary, and readers for what it leaves behind (audit log, store files).
#![allow(dead_code, unreachable_pub)]

pub mod flaky_proxy;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod receiver;

/// A background `rekeyd` process, killed if the test lets go of it while it runs: a
/// failed test must not leave daemons behind (they would go on rotating, and signing
/// requests to ports a later test reuses).
pub struct Daemon(pub std::process::Child);

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A scratch deployment: policy file, state directory, audit log.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_rekeyd");

/// The policy header every test shares: file store under `state/`, a 1s interval floor.
pub const HEADER: &str = r#"
[daemon]
state_dir = "state"
min_interval = "1s"
concurrency = 4

[backends.local]
type = "file"

[defaults]
backend = "local"
grace = "0s"
generator = { type = "password", length = 24 }
"#;

impl Sandbox {
    /// A sandbox whose policy is `HEADER` followed by `secrets`.
    pub fn new(secrets: &str) -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        sandbox.write_policy(secrets);
        sandbox
    }

    /// A sandbox whose policy is exactly `text`.
    pub fn raw(text: &str) -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        sandbox.write_raw_policy(text);
        sandbox
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn policy(&self) -> PathBuf {
        self.path("policy.toml")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("state/audit.jsonl")
    }

    pub fn write_policy(&self, secrets: &str) {
        std::fs::write(self.policy(), format!("{HEADER}\n{secrets}")).expect("write policy");
    }

    pub fn write_raw_policy(&self, text: &str) {
        std::fs::write(self.policy(), text).expect("write policy");
    }

    /// A `rekeyd` command with `--policy` set, run from the sandbox.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with_policy(args, &self.policy())
    }

    /// A `rekeyd` command on another policy file, run from the sandbox.
    pub fn command_with_policy(&self, args: &[&str], policy: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        // Global flags first, so nothing lands after an `exec --` separator.
        cmd.arg("--policy")
            .arg(policy)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("REKEYD_CRASH_AT")
            .env_remove("RUST_LOG")
            // Webhooks go straight to the loopback receiver.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            // The AWS tests' keys for moto, and no AWS profile of the machine's.
            .env(moto::KEY_VAR, "testing")
            .env(moto::SECRET_VAR, "testing")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `rekeyd ARGS --policy P` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run rekeyd")
    }

    /// Runs and requires exit code 0, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rekeyd {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// The secret's value at a stage, via `rekeyd get`.
    pub fn get(&self, name: &str, stage: &str) -> String {
        self.ok(&["get", name, "--stage", stage])
    }

    /// `rekeyd status --format json`, by secret name.
    pub fn status(&self, name: &str) -> Value {
        let out = self.ok(&["status", "--format", "json"]);
        let all: Value = serde_json::from_str(&out).expect("status JSON");
        all.as_array()
            .expect("array")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from status: {out}"))
    }

    /// Every audit entry, parsed.
    pub fn audit_entries(&self) -> Vec<Value> {
        read_jsonl(&self.audit_log())
    }

    /// Audit entries of one event kind for one secret.
    pub fn events(&self, event: &str, secret: &str) -> Vec<Value> {
        self.audit_entries()
            .into_iter()
            .filter(|e| e["event"] == event && e["secret"] == secret)
            .collect()
    }

    /// The file store's record of a secret (versions and stages; values are sealed): the
    /// last record of its file.
    pub fn store_record(&self, file_name: &str) -> Value {
        self.store_records(file_name)
            .pop()
            .expect("a store file holds at least one record")
    }

    /// Every record of a secret's store file (format 2), oldest first. Each line must be
    /// intact (compact JSON, a space, the hex SHA-256 of that JSON) and in format 2: with
    /// no rekeyd running, no torn append may be left between or after the records.
    pub fn store_records(&self, file_name: &str) -> Vec<Value> {
        let path = self.path(&format!("state/store-local/{file_name}"));
        let text = std::fs::read_to_string(&path).expect("store file");
        assert!(
            text.ends_with('\n'),
            "{}: the last record is torn",
            path.display()
        );
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                let (json, sum) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("{}: line {i} has no checksum", path.display()));
                let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
                assert_eq!(
                    sum,
                    rekeyd::hex::encode(digest.as_ref()),
                    "{}: line {i} is not intact",
                    path.display()
                );
                let record: Value = serde_json::from_str(json).expect("store record JSON");
                assert_eq!(record["format"], 2, "{}: line {i}", path.display());
                record
            })
            .collect()
    }
}

/// The complete lines of a JSON Lines file another process may be appending to. A last
/// line without its newline is a write still in progress (or one a crash cut short, which
/// rekeyd cuts off when it next opens its log): nobody was told of it, so it is not read.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let complete = &bytes[..bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1)];
    std::str::from_utf8(complete)
        .expect("complete lines are UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a complete line is JSON"))
        .collect()
}

/// Waits for a condition the system under test brings about, failing after `limit`.
/// Polling a condition with a deadline (not sleeping a guessed time) is the synchronisation.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

pub mod rvault;
pub mod vault_contract;

/// Runs `command` with crash point `point` armed; it must abort there (`REKEYD_CRASH_AT`,
/// as abrupt as `kill -9`).
pub fn run_to_crash(mut command: Command, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = command
        .env("REKEYD_CRASH_AT", point)
        .output()
        .expect("run rekeyd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{point}: expected an abort, got {:?}; stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("REKEYD_CRASH_AT={point}")),
        "{stderr}"
    );
}
