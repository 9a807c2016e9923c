//! `https://` backends: keygate verifies each backend's certificate against
//! `upstreamCa` (or the system's CA store), for requests and health checks,
//! and refuses a backend whose certificate does not verify with 502.

mod common;

use std::time::Duration;

use common::tls::{path_text, PemDir, TestCa};
use common::traffic::{key_of, metric_value, push, pushes_received, wait_until};
use common::{ConfigBuilder, Gateway, MockBackend};

/// The log line of a refused backend handshake.
const TLS_FAILURE_LINE: &str = "TLS handshake with the backend failed";

/// Starts keygate in front of `mock` with `upstreamCa` set to `ca_pem`, when given.
fn gateway_for(mock: &MockBackend, dir: &PemDir, ca_pem: Option<&str>) -> Gateway {
    let mut builder = ConfigBuilder::new(mock.addr())
        .set_string("upstream", &mock.url())
        .client("karolin", &key_of("karolin"));
    if let Some(ca_pem) = ca_pem {
        let path = dir.write("upstream.pem", ca_pem);
        builder = builder.set_string("upstreamCa", &path_text(&path));
    }
    Gateway::start(&builder.build())
}

fn tls_errors(gateway: &Gateway) -> f64 {
    metric_value(gateway, "keygate_upstream_errors_total{kind=\"tls\"}").unwrap_or(0.0)
}

#[test]
fn verified_backend_gets_requests() {
    let ca = TestCa::new("backend CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let gateway = gateway_for(&mock, &dir, Some(&ca.cert_pem));

    for round in 0..3 {
        let response = push(&gateway, "karolin");
        assert_eq!(response.status, 404, "round {round}: {}", response.text());
        assert!(
            response.text().contains("is not known"),
            "{}",
            response.text()
        );
    }
    let received = mock.wait_for_requests(3, Duration::from_secs(5));
    assert_eq!(received[0].header("x-client-id"), Some("karolin"));
    assert_eq!(received[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(tls_errors(&gateway), 0.0);
}

/// Sends one push to a backend whose certificate must not verify, and
/// checks the 502, the log line and the metric.
fn check_refused(mock: &MockBackend, gateway: &Gateway, case: &str, reason: &str) {
    let response = push(gateway, "karolin");
    assert_eq!(response.status, 502, "{case}: {}", response.text());
    assert_eq!(
        response.json()["message"],
        "the backend could not be reached or broke the connection",
        "{case}"
    );
    assert_eq!(
        pushes_received(mock),
        0,
        "{case}: the push reached the backend"
    );
    assert!(
        gateway.wait_for_log(TLS_FAILURE_LINE, Duration::from_secs(5)),
        "{case}: no log line:\n{}",
        gateway.redacted_log_tail(20)
    );
    assert!(
        gateway.log_text().contains(reason),
        "{case}: the log does not give the reason {reason:?}:\n{}",
        gateway.redacted_log_tail(20)
    );
    assert_eq!(tls_errors(gateway), 1.0, "{case}");
}

#[test]
fn backend_from_another_ca_refused() {
    let ca = TestCa::new("backend CA");
    let stranger = TestCa::new("a CA keygate does not trust");
    let server = stranger.server(&["localhost", "127.0.0.1"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let gateway = gateway_for(&mock, &dir, Some(&ca.cert_pem));
    check_refused(&mock, &gateway, "wrong CA", "UnknownIssuer");
}

#[test]
fn expired_backend_certificate_refused() {
    let ca = TestCa::new("backend CA");
    let server = ca.expired_server(&["localhost", "127.0.0.1"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let gateway = gateway_for(&mock, &dir, Some(&ca.cert_pem));
    check_refused(&mock, &gateway, "expired", "certificate expired");
}

#[test]
fn backend_for_another_host_refused() {
    let ca = TestCa::new("backend CA");
    let server = ca.server(&["nps.example", "192.0.2.7"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let gateway = gateway_for(&mock, &dir, Some(&ca.cert_pem));
    check_refused(
        &mock,
        &gateway,
        "wrong host",
        "certificate not valid for name",
    );
}

#[test]
fn system_store_without_upstream_ca() {
    // The test CA is in no system store, so without upstreamCa the backend
    // must be refused: verification is on by default.
    let ca = TestCa::new("backend CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let gateway = gateway_for(&mock, &dir, None);
    check_refused(&mock, &gateway, "system store", "UnknownIssuer");
}

#[test]
fn plain_backend_behind_https_url_refused() {
    let mock = MockBackend::start();
    let ca = TestCa::new("backend CA");
    let dir = PemDir::new();
    let path = dir.write("upstream.pem", &ca.cert_pem);
    let text = ConfigBuilder::new(mock.addr())
        .set_string("upstream", &format!("https://{}", mock.addr()))
        .set_string("upstreamCa", &path_text(&path))
        .client("karolin", &key_of("karolin"))
        .build();
    let gateway = Gateway::start(&text);
    let response = push(&gateway, "karolin");
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        gateway.wait_for_log(TLS_FAILURE_LINE, Duration::from_secs(5)),
        "{}",
        gateway.redacted_log_tail(20)
    );
}

#[test]
fn health_checks_verify_backend() {
    let ca = TestCa::new("backend CA");
    let stranger = TestCa::new("a CA keygate does not trust");
    let good = ca.server(&["127.0.0.1"]);
    let bad = stranger.server(&["127.0.0.1"]);
    let trusted = MockBackend::start_tls(&good.cert_pem, &good.key_pem);
    let untrusted = MockBackend::start_tls(&bad.cert_pem, &bad.key_pem);
    let dir = PemDir::new();
    let path = dir.write("upstream.pem", &ca.cert_pem);
    let text = ConfigBuilder::new(trusted.addr())
        .set(
            "upstream",
            &format!("['{}', '{}']", trusted.url(), untrusted.url()),
        )
        .set_string("upstreamCa", &path_text(&path))
        .set("healthCheck", "{ interval: 200ms, timeout: 500ms }")
        .client("karolin", &key_of("karolin"))
        .build();
    let gateway = Gateway::start(&text);

    let trusted_up = format!("keygate_backend_up{{backend=\"{}\"}}", trusted.url());
    let untrusted_up = format!("keygate_backend_up{{backend=\"{}\"}}", untrusted.url());
    assert!(
        wait_until(Duration::from_secs(10), || {
            metric_value(&gateway, &untrusted_up) == Some(0.0)
        }),
        "the backend with an untrusted certificate stays up:\n{}",
        gateway.redacted_log_tail(20)
    );
    assert_eq!(metric_value(&gateway, &trusted_up), Some(1.0));
    assert!(
        trusted
            .requests()
            .iter()
            .any(|request| request.path() == "/nps/health"),
        "the trusted backend got no health check over TLS"
    );

    // Every push goes to the verified backend.
    for round in 0..4 {
        let response = push(&gateway, "karolin");
        assert_eq!(response.status, 404, "round {round}: {}", response.text());
    }
    assert_eq!(pushes_received(&trusted), 4);
    assert_eq!(pushes_received(&untrusted), 0);
}

#[test]
fn refresh_with_new_ca_drops_pooled_connections() {
    let ca = TestCa::new("backend CA");
    let server = ca.server(&["127.0.0.1"]);
    let mock = MockBackend::start_tls(&server.cert_pem, &server.key_pem);
    let dir = PemDir::new();
    let path = dir.write("upstream.pem", &ca.cert_pem);
    let builder = ConfigBuilder::new(mock.addr())
        .set_string("upstream", &mock.url())
        .set_string("upstreamCa", &path_text(&path))
        .client("karolin", &key_of("karolin"));
    let gateway = Gateway::start(&builder.build());

    let response = push(&gateway, "karolin");
    assert_eq!(response.status, 404, "{}", response.text());

    // The pooled connection was verified against the old bundle. After the
    // refresh only the new bundle counts, so the backend is refused.
    let other = TestCa::new("another CA");
    dir.write("upstream.pem", &other.cert_pem);
    let refresh = common::request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "{}", refresh.text());
    assert_eq!(refresh.text().trim(), "[\"gateway\"]");

    let response = push(&gateway, "karolin");
    assert_eq!(
        response.status,
        502,
        "a pooled connection was reused: {}",
        response.text()
    );
    assert_eq!(pushes_received(&mock), 1);

    // And back: the original bundle works again.
    dir.write("upstream.pem", &ca.cert_pem);
    let refresh = common::request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "{}", refresh.text());
    let response = push(&gateway, "karolin");
    assert_eq!(response.status, 404, "{}", response.text());
}
