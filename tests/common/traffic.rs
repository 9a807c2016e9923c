//! Helpers for the tests of several backends and rate limits: pushes with
//! a key, counts of pushes a mock received, and single metric values.

use std::time::{Duration, Instant};

use super::{api_key, metrics_text, request, Gateway, MockBackend, Response};

/// A generated-style key, 64 hex characters.
pub const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";

/// The path of every push the tests send; the mock responds 404 to it.
pub const PUSH_PATH: &str = "/nps/rest/push/p-1";

/// The body of every push the tests send.
pub const PUSH_BODY: &[u8] = br#"{"title":"hello","body":"world"}"#;

/// Returns the key of `client_id`: [`KEY`] with the clientId in front, so
/// every client of a test has its own key.
pub fn key_of(client_id: &str) -> String {
    format!("{client_id}-{KEY}")
}

/// Sends one push for `client_id` on a new connection and returns the response.
pub fn push(gateway: &Gateway, client_id: &str) -> Response {
    let api_key = api_key(client_id, &key_of(client_id));
    request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", api_key.as_str()),
            ("Content-Type", "application/json"),
        ],
        PUSH_BODY,
    )
}

/// Returns how many pushes `mock` received, leaving out health checks and refreshes.
pub fn pushes_received(mock: &MockBackend) -> usize {
    mock.requests()
        .iter()
        .filter(|received| received.path() == PUSH_PATH)
        .count()
}

/// Returns the value of one series, such as `keygate_backend_up{backend="http://127.0.0.1:1"}`,
/// from the gateway's metrics, or `None` when the series is absent.
pub fn metric_value(gateway: &Gateway, series: &str) -> Option<f64> {
    let text = metrics_text(gateway.metrics_addr());
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Polls `condition` every 50 ms until it is true or `timeout` passes, and returns whether it became true.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Returns a loopback port with nothing listening on it, so connections to it are refused.
pub fn refusing_port() -> u16 {
    // free_port binds and releases the port, and never hands it out again in this process.
    super::free_port()
}
