//! Harness for keygate's integration tests.
//!
//! Tests run the real `keygate` binary as a child process ([`Gateway`]) in
//! front of the mock push backend, which runs inside the test process
//! ([`MockBackend`]). [`ConfigBuilder`] writes keygate's YAML configuration,
//! and [`Conn`] is a raw HTTP/1.1 client for checks on exact bytes.
//! Everything listens on and connects to loopback addresses only.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod mock;
pub mod poll;
pub mod tls;
pub mod traffic;

// The same file is the `mock_push_backend` example, so that tests and manual
// runs use one mock.
#[path = "../../examples/mock_push_backend.rs"]
pub mod mock_push_backend;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub use config::ConfigBuilder;
pub use gateway::{Gateway, Ready, StartError};
pub use http::{metrics_text, request, Conn, Response};
pub use mock::MockBackend;
pub use mock_push_backend::ReceivedRequest;

/// Ports returned by [`free_port`] or bound by a [`MockBackend`] in this
/// test process.
static HANDED_OUT_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Maximum number of ephemeral ports that [`free_port`] binds while looking
/// for one that it has not handed out before.
const FREE_PORT_ATTEMPTS: usize = 1000;

/// Returns a loopback TCP port that was free a moment ago and that this test
/// process has not handed out before.
///
/// NOTE: the port is released before the caller binds it, so another process
/// can take it in between. Tests running in parallel in this process cannot,
/// because no port is handed out twice.
pub fn free_port() -> u16 {
    for _ in 0..FREE_PORT_ATTEMPTS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|err| panic!("failed to bind 127.0.0.1:0 to find a free port: {err}"));
        let port = listener
            .local_addr()
            .expect("a bound listener has a local address")
            .port();
        if reserve_port(port) {
            return port;
        }
    }
    panic!("found no free loopback port in {FREE_PORT_ATTEMPTS} attempts that was not handed out before");
}

/// Returns `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// Marks `port` as handed out and returns whether it was new.
pub(crate) fn reserve_port(port: u16) -> bool {
    HANDED_OUT_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(port)
}

/// Builds the `x-api-key` value for a client: standard base64 of
/// `client_id:key`.
pub fn api_key(client_id: &str, key: &str) -> String {
    STANDARD.encode(format!("{client_id}:{key}"))
}

/// Returns the folder for gateway logs, `target/test-logs`, and creates it.
pub fn test_logs_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, so its parent is the target
    // folder even when CARGO_TARGET_DIR moves it.
    let target_dir = option_env!("CARGO_TARGET_TMPDIR")
        .and_then(|tmp| PathBuf::from(tmp).parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target_dir.join("test-logs");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|err| panic!("failed to create log folder {}: {err}", dir.display()));
    dir
}

/// Replaces every secret of at least 4 bytes in `text` with `[REDACTED]`.
/// Shorter secrets are left alone because replacing them would garble the
/// text.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut redacted = text.to_owned();
    for secret in secrets {
        if secret.len() >= 4 {
            redacted = redacted.replace(secret.as_str(), "[REDACTED]");
        }
    }
    redacted
}
