//! A TCP proxy on loopback that can fail on command, put between rekeyd and a real server
//! (moto) to make that server's network unreliable without touching the server itself.
//!
//! Modes: `Pass` forwards bytes both ways; `Refuse` closes every connection as it arrives
//! and cuts the open ones (an outage); `Error` answers each request with an HTTP 500 in the
//! AWS JSON error shape (`InternalServiceError`), as a struggling service would.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass = 0,
    Refuse = 1,
    Error = 2,
}

struct Shared {
    mode: AtomicU8,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Open forwarded connections (client side), so an outage can cut them.
    open: Mutex<HashMap<u64, TcpStream>>,
}

pub struct FlakyProxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FlakyProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass as u8),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accept_shared);
                thread::spawn(move || handle(client, upstream, &shared));
            }
        });
        Self {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches mode; leaving `Pass` cuts every open connection.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        if mode != Mode::Pass {
            for (_, stream) in self.shared.open.lock().unwrap().drain() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn mode(shared: &Shared) -> Mode {
    match shared.mode.load(Ordering::SeqCst) {
        0 => Mode::Pass,
        1 => Mode::Refuse,
        _ => Mode::Error,
    }
}

fn handle(client: TcpStream, upstream: u16, shared: &Shared) {
    match mode(shared) {
        Mode::Refuse => drop(client),
        Mode::Error => answer_500(client),
        Mode::Pass => forward(client, upstream, shared),
    }
}

/// Reads one request (head and `Content-Length` body) and answers 500 in AWS's JSON shape.
fn answer_500(client: TcpStream) {
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let payload = r#"{"__type":"InternalServiceError","message":"injected by the soak test"}"#;
    let response = format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/x-amz-json-1.1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    );
    let mut client = client;
    let _ = client.write_all(response.as_bytes());
    let _ = client.shutdown(Shutdown::Both);
}

fn forward(client: TcpStream, upstream: u16, shared: &Shared) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (Ok(client_w), Ok(server_w), Ok(tracked)) =
        (client.try_clone(), server.try_clone(), client.try_clone())
    else {
        return;
    };
    shared.open.lock().unwrap().insert(id, tracked);
    let upload = thread::spawn(move || pump(client, server_w));
    pump(server, client_w);
    let _ = upload.join();
    shared.open.lock().unwrap().remove(&id);
}

/// Copies until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.set(Mode::Refuse);
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
