//! Shutdown: SIGTERM lets a request in flight finish before the gateway exits.

mod common;

use std::thread;
use std::time::Duration;

use common::{api_key, request, ConfigBuilder, Gateway, MockBackend};

const KEY: &str = "4b7d1e8f0a2c3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";

#[test]
fn sigterm_finishes_request_in_flight() {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client("karolin", KEY)
        .build();
    let mut gateway = Gateway::start(&config);
    let addr = gateway.addr();
    let key = api_key("karolin", KEY);

    // The backend delays this response by 2 s; SIGTERM arrives after 0.5 s.
    let in_flight = thread::spawn(move || {
        request(
            addr,
            "POST",
            "/nps/rest/push/slow",
            &[("x-api-key", &key), ("x-mock-delay-ms", "2000")],
            b"{}",
        )
    });
    thread::sleep(Duration::from_millis(500));
    gateway.signal("TERM");

    let response = in_flight.join().expect("the request thread panicked");
    assert_eq!(
        response.status, 404,
        "the request in flight must get the backend's response, not a dropped connection"
    );
    let exit = gateway.wait_exit(Duration::from_secs(15));
    assert!(
        exit.is_some(),
        "the gateway must exit after the grace period"
    );
}
