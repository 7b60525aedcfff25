//! `rekeyd health`: the container HEALTHCHECK. Distroless images carry no curl, so the
//! binary probes its own API: a plain HTTP/1.1 GET over loopback with std sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::exit::{self, Failure};
use crate::policy;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Probes `path` (`/healthz` or `/readyz`) on the API the policy configures.
pub(super) fn probe(policy_path: &Path, path: &str) -> Result<(), Failure> {
    let policy = policy::load(policy_path)?;
    let api = policy.api.ok_or_else(|| {
        Failure::new(
            exit::FAILED,
            "the policy has no [api] table, so there is nothing to probe",
        )
    })?;
    if api.tls.is_some() {
        return Err(Failure::new(
            exit::FAILED,
            "the API serves HTTPS; probe it with the orchestrator's HTTPS check instead",
        ));
    }
    // A wildcard listener is reached on loopback.
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr = match addr {
            SocketAddr::V4(a) => SocketAddr::from(([127, 0, 0, 1], a.port())),
            SocketAddr::V6(a) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        };
    }
    let status = get(addr, path)
        .map_err(|e| Failure::new(exit::FAILED, format!("GET http://{addr}{path}: {e}")))?;
    if (200..300).contains(&status) {
        println!("{path}: {status}");
        Ok(())
    } else {
        Err(Failure::new(exit::FAILED, format!("{path}: HTTP {status}")))
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}
