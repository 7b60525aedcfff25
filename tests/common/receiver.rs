//! A real webhook receiver on loopback for the notification tests: the Python script in
//! `tests/support/webhook_receiver.py`, which verifies every delivery with the reference
//! `standardwebhooks` package and logs what it saw. Started on a free port, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/webhook_receiver.py"
);

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Arrival order (1-based).
    pub n: u64,
    /// Arrival time, unix seconds.
    pub at: f64,
    pub path: String,
    /// `webhook-id`.
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    /// The envelope's `type`.
    pub kind: String,
    /// One verdict of the reference verifier per key the receiver was given.
    pub verified: Vec<bool>,
    /// The raw body.
    pub body: String,
    /// The status it answered.
    pub status: u16,
    pub delay_ms: u64,
}

impl Request {
    /// The body, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("body is JSON")
    }
}

pub struct Receiver {
    child: Option<Child>,
    pub port: u16,
    keys: Vec<String>,
    dir: tempfile::TempDir,
}

impl Receiver {
    /// A receiver on a free port that verifies with each of `keys` (answering 200 until
    /// told otherwise).
    pub fn start(keys: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut receiver = Self {
            child: None,
            port: 0,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            dir,
        };
        receiver.script(serde_json::json!({ "default": { "status": 200 } }));
        receiver.spawn(0);
        receiver
    }

    fn spawn(&mut self, port: u16) {
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT)
            .arg("--port")
            .arg(port.to_string())
            .arg("--log")
            .arg(self.log())
            .arg("--script")
            .arg(self.script_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for key in &self.keys {
            cmd.arg("--key").arg(key);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run python3 for the webhook receiver ({e}); install Python 3 and `pip install standardwebhooks`")
        });
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .expect("read the receiver's port");
        let Some(found) = line.trim().strip_prefix("PORT ") else {
            let mut err = String::new();
            let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
            let _ = child.wait();
            panic!(
                "the webhook receiver did not start: {err}\n(the tests need Python 3 and the reference verifier: `pip install standardwebhooks`; .ci/test installs it)"
            );
        };
        self.port = found.parse().expect("port number");
        self.child = Some(child);
    }

    /// Whether it is running (not stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops it: the port refuses connections until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, keeping its log and script.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    fn script_path(&self) -> PathBuf {
        self.dir.path().join("script.json")
    }

    /// Replaces the answers (atomically: a request never sees half a script).
    pub fn script(&self, script: Value) {
        let temp = self.dir.path().join("script.json.tmp");
        std::fs::write(&temp, script.to_string()).expect("write script");
        std::fs::rename(&temp, self.script_path()).expect("install script");
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        super::read_jsonl(&self.log())
            .into_iter()
            .map(|v| Request {
                n: v["n"].as_u64().unwrap(),
                at: v["at"].as_f64().unwrap(),
                path: v["path"].as_str().unwrap_or_default().to_owned(),
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                timestamp: v["timestamp"].as_str().unwrap_or_default().to_owned(),
                signature: v["signature"].as_str().unwrap_or_default().to_owned(),
                content_type: v["content_type"].as_str().unwrap_or_default().to_owned(),
                kind: v["type"].as_str().unwrap_or_default().to_owned(),
                verified: v["verified"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_bool().unwrap())
                    .collect(),
                body: v["body"].as_str().unwrap().to_owned(),
                status: v["status"].as_u64().unwrap() as u16,
                delay_ms: v["delay_ms"].as_u64().unwrap_or(0),
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
