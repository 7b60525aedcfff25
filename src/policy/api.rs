//! The `[api]` table: where the HTTP API listens, its tokens and TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::diagnostic::{Diags, Loc};
use super::model::ApiSettings;
use super::parse::{Table, check_keys, duration, integer, non_empty, table};

const API_KEYS: &[&str] = &[
    "listen",
    "tokens_file",
    "tls_cert",
    "tls_key",
    "request_timeout",
    "rotate_burst",
    "rotate_every",
];

const LISTEN_HINT: &str =
    "an address and port, e.g. \"127.0.0.1:9464\" (or \"0.0.0.0:9464\" in a container)";
const PATH_HINT: &str = "a file path; relative paths resolve against the policy file's directory";

/// `[api]`, or `None` when absent (the API is off) or invalid (problems reported).
pub(super) fn api(d: &mut Diags<'_>, root: &Table<'_>, base: &Path) -> Option<ApiSettings> {
    let top = Loc::Root;
    let loc = top.key("api");
    let value = root.get("api")?;
    let t = table(d, value, &loc, "a table", "write [api] settings as a table")?;
    check_keys(d, t, API_KEYS, &loc);

    let listen = match t.get("listen") {
        None => {
            d.report(
                value.span(),
                &loc.key("listen"),
                "[api] needs `listen`",
                LISTEN_HINT,
            );
            None
        }
        Some(v) => non_empty(d, v, &loc.key("listen"), "a string", LISTEN_HINT).and_then(|text| {
            match text.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    d.report(
                        v.span(),
                        &loc.key("listen"),
                        format!("{text:?} is not an address and port"),
                        LISTEN_HINT,
                    );
                    None
                }
            }
        }),
    };
    let path = |d: &mut Diags<'_>, key: &str| -> Option<Option<std::path::PathBuf>> {
        match t.get(key) {
            None => Some(None),
            Some(v) => non_empty(d, v, &loc.key(key), "a path string", PATH_HINT)
                .map(|p| Some(base.join(p))),
        }
    };
    let tokens_file = path(d, "tokens_file");
    let tls_cert = path(d, "tls_cert");
    let tls_key = path(d, "tls_key");
    let request_timeout = match t.get("request_timeout") {
        None => Some(Duration::from_secs(60)),
        Some(v) => duration(d, v, &loc.key("request_timeout")),
    };
    let rotate_burst = match t.get("rotate_burst") {
        None => Some(5),
        Some(v) => integer(
            d,
            v,
            &loc.key("rotate_burst"),
            1..=1000,
            "how many rotation requests a client may make at once",
        )
        .map(|n| n as u32),
    };
    let rotate_every = match t.get("rotate_every") {
        None => Some(Duration::from_secs(12)),
        Some(v) => duration(d, v, &loc.key("rotate_every")),
    };
    let (listen, tokens_file, tls_cert, tls_key, request_timeout, rotate_burst, rotate_every) = (
        listen?,
        tokens_file?,
        tls_cert?,
        tls_key?,
        request_timeout?,
        rotate_burst?,
        rotate_every?,
    );
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            d.report(
                value.span(),
                &loc.key("tls_cert"),
                "tls_cert and tls_key go together",
                "set both (PEM files) to serve HTTPS, or neither for plain HTTP",
            );
            return None;
        }
    };
    if !listen.ip().is_loopback() && tokens_file.is_none() {
        let at = t.get("listen").map_or(value.span(), |v| v.span());
        d.report(
            at,
            &loc.key("listen"),
            format!("the API listens beyond loopback ({listen}) without tokens_file"),
            "set tokens_file so /v1 requests are authenticated, or listen on 127.0.0.1",
        );
        return None;
    }
    Some(ApiSettings {
        listen,
        tokens_file,
        tls,
        request_timeout,
        rotate_burst,
        rotate_every,
    })
}
