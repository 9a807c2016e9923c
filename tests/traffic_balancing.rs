//! Several backends: the spread of requests, health checks that take a
//! backend out and put it back, the retry of a refused connect, a backend
//! list changed by a refresh, and 502 when no backend is left.

mod common;

use std::time::{Duration, Instant};

use common::traffic::{
    key_of, metric_value, push, pushes_received, refusing_port, wait_until, PUSH_BODY,
};
use common::{request, ConfigBuilder, Gateway, MockBackend};

const CLIENT: &str = "pusher";

/// Health check interval of the tests that use checks.
const INTERVAL: Duration = Duration::from_millis(300);

/// Builds a config for `upstreams` (a YAML value) with one client.
fn config(first: &MockBackend, upstreams: &str) -> ConfigBuilder {
    ConfigBuilder::new(first.addr())
        .set("upstream", upstreams)
        .client(CLIENT, &key_of(CLIENT))
}

/// Returns a YAML flow list of the mocks' URLs.
fn url_list(mocks: &[&MockBackend]) -> String {
    let urls: Vec<String> = mocks
        .iter()
        .map(|mock| format!("'{}'", mock.url()))
        .collect();
    format!("[{}]", urls.join(", "))
}

fn health_check_setting() -> String {
    format!("{{ interval: {}ms, timeout: 200ms }}", INTERVAL.as_millis())
}

/// Sends `count` pushes and returns the statuses that are not the mock's 404.
fn push_many(gateway: &Gateway, count: usize) -> Vec<u16> {
    (0..count)
        .map(|_| push(gateway, CLIENT).status)
        .filter(|status| *status != 404)
        .collect()
}

fn backend_up(gateway: &Gateway, mock_url: &str) -> Option<f64> {
    metric_value(
        gateway,
        &format!("keygate_backend_up{{backend=\"{mock_url}\"}}"),
    )
}

#[test]
fn load_spreads_over_three_backends() {
    let mocks = [
        MockBackend::start(),
        MockBackend::start(),
        MockBackend::start(),
    ];
    let list = url_list(&[&mocks[0], &mocks[1], &mocks[2]]);
    let gateway = Gateway::start(&config(&mocks[0], &list).build());

    let unexpected = push_many(&gateway, 60);

    assert_eq!(
        unexpected,
        Vec::<u16>::new(),
        "every push reaches a backend"
    );
    for mock in &mocks {
        let received = pushes_received(mock);
        assert!(
            (15..=25).contains(&received),
            "{} received {received} of 60 pushes",
            mock.url()
        );
        let counted = metric_value(
            &gateway,
            &format!(
                "keygate_backend_requests_total{{backend=\"{}\"}}",
                mock.url()
            ),
        );
        assert_eq!(counted, Some(received as f64), "{}", mock.url());
        assert_eq!(
            backend_up(&gateway, &mock.url()),
            Some(1.0),
            "{}",
            mock.url()
        );
    }
}

#[test]
fn weights_set_the_share() {
    let heavy = MockBackend::start();
    let light = MockBackend::start();
    let list = format!("[{{url: '{}', weight: 3}}, '{}']", heavy.url(), light.url());
    let gateway = Gateway::start(&config(&heavy, &list).build());

    let unexpected = push_many(&gateway, 80);

    assert_eq!(unexpected, Vec::<u16>::new());
    let heavy_count = pushes_received(&heavy);
    let light_count = pushes_received(&light);
    assert!(
        (50..=70).contains(&heavy_count),
        "weight 3 got {heavy_count} of 80"
    );
    assert!(
        (10..=30).contains(&light_count),
        "weight 1 got {light_count} of 80"
    );
}

#[test]
fn failing_health_check_takes_backend_out_and_back() {
    let mocks = [
        MockBackend::start(),
        MockBackend::start(),
        MockBackend::start(),
    ];
    let list = url_list(&[&mocks[0], &mocks[1], &mocks[2]]);
    let config = config(&mocks[0], &list).set("healthCheck", &health_check_setting());
    let gateway = Gateway::start(&config.build());
    let sick = &mocks[2];
    assert!(
        wait_until(Duration::from_secs(5), || sick
            .requests()
            .iter()
            .any(|received| received.path() == "/nps/health")),
        "the gateway sends health checks to {}",
        sick.url()
    );

    // The mock still serves pushes; only its health route fails.
    sick.set_health_status(503);
    std::thread::sleep(INTERVAL * 2);
    sick.clear();
    let unexpected = push_many(&gateway, 30);

    assert_eq!(unexpected, Vec::<u16>::new());
    assert_eq!(
        pushes_received(sick),
        0,
        "a backend failing its checks gets no pushes"
    );
    assert!(pushes_received(&mocks[0]) > 0);
    assert!(pushes_received(&mocks[1]) > 0);
    assert_eq!(backend_up(&gateway, &sick.url()), Some(0.0));
    let readiness = request(gateway.addr(), "GET", "/nps/health/readiness", &[], b"");
    assert_eq!(
        readiness.status, 200,
        "two healthy backends keep the gateway ready"
    );

    sick.set_health_status(200);
    std::thread::sleep(INTERVAL * 2);
    let unexpected = push_many(&gateway, 30);

    assert_eq!(unexpected, Vec::<u16>::new());
    assert!(
        pushes_received(sick) > 0,
        "a recovered backend gets pushes again"
    );
    assert_eq!(backend_up(&gateway, &sick.url()), Some(1.0));
}

#[test]
fn refused_connect_retried_on_another_backend() {
    let first = MockBackend::start();
    let second = MockBackend::start();
    let closed = format!("http://127.0.0.1:{}", refusing_port());
    // No health check, so the closed backend stays in the rotation.
    let list = format!("['{}', '{closed}', '{}']", first.url(), second.url());
    let gateway = Gateway::start(&config(&first, &list).build());

    let unexpected = push_many(&gateway, 30);

    assert_eq!(
        unexpected,
        Vec::<u16>::new(),
        "no push gets 502 while one backend refuses"
    );
    assert_eq!(pushes_received(&first) + pushes_received(&second), 30);
    let bodies_intact = first
        .requests()
        .iter()
        .chain(second.requests().iter())
        .all(|received| received.body_length == PUSH_BODY.len() as u64 && received.body_complete);
    assert!(bodies_intact, "a retried push arrives with its whole body");
    let retries = metric_value(&gateway, "keygate_upstream_errors_total{kind=\"connect\"}");
    assert!(
        retries.is_some_and(|count| count >= 5.0),
        "connect errors counted: {retries:?}"
    );
    let closed_requests = metric_value(
        &gateway,
        &format!("keygate_backend_requests_total{{backend=\"{closed}\"}}"),
    );
    assert_eq!(closed_requests, Some(0.0));
}

#[test]
fn refresh_changes_backend_list() {
    let old = MockBackend::start();
    let new_a = MockBackend::start();
    let new_b = MockBackend::start();
    let builder = config(&old, &url_list(&[&old]));
    let gateway = Gateway::start(&builder.build());
    assert_eq!(push_many(&gateway, 4), Vec::<u16>::new());
    assert_eq!(pushes_received(&old), 4);

    gateway.rewrite_config(
        &builder
            .set("upstream", &url_list(&[&new_a, &new_b]))
            .build(),
    );
    let refresh = request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "{}", refresh.text());
    assert_eq!(refresh.json(), serde_json::json!(["gateway"]));
    let unexpected = push_many(&gateway, 10);

    assert_eq!(unexpected, Vec::<u16>::new());
    assert_eq!(
        pushes_received(&old),
        4,
        "the removed backend gets no more pushes"
    );
    assert_eq!(pushes_received(&new_a), 5);
    assert_eq!(pushes_received(&new_b), 5);
    for mock in [&new_a, &new_b] {
        let refreshed = wait_until(Duration::from_secs(5), || {
            mock.requests()
                .iter()
                .any(|received| received.method == "POST" && received.path() == "/nps/refresh")
        });
        assert!(refreshed, "{} gets the forwarded refresh", mock.url());
    }
    assert_eq!(
        backend_up(&gateway, &old.url()),
        None,
        "the removed backend's series is gone"
    );
    assert_eq!(backend_up(&gateway, &new_a.url()), Some(1.0));
}

#[test]
fn refresh_keeps_requests_in_flight() {
    let old = MockBackend::start();
    let new = MockBackend::start();
    let builder = config(&old, &url_list(&[&old]));
    let gateway = Gateway::start(&builder.build());
    let addr = gateway.addr();
    let api_key = common::api_key(CLIENT, &key_of(CLIENT));

    let slow = std::thread::spawn(move || {
        let headers = [("x-api-key", api_key.as_str()), ("x-mock-delay-ms", "1500")];
        request(
            addr,
            "POST",
            common::traffic::PUSH_PATH,
            &headers,
            PUSH_BODY,
        )
    });
    assert!(wait_until(Duration::from_secs(5), || pushes_received(&old) == 1));
    gateway.rewrite_config(&builder.set("upstream", &url_list(&[&new])).build());
    let refresh = request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "{}", refresh.text());

    let slow_response = slow.join().expect("the slow push thread finishes");
    assert_eq!(
        slow_response.status, 404,
        "the push in flight gets the old backend's response"
    );
    assert_eq!(push_many(&gateway, 3), Vec::<u16>::new());
    assert_eq!(pushes_received(&new), 3);
    assert_eq!(pushes_received(&old), 1);
}

#[test]
fn no_healthy_backend_gets_502_promptly() {
    let mock = MockBackend::start();
    let list = format!(
        "['http://127.0.0.1:{}', 'http://127.0.0.1:{}']",
        refusing_port(),
        refusing_port()
    );
    let config = config(&mock, &list).set("healthCheck", &health_check_setting());
    let gateway = Gateway::start(&config.build());
    let all_down = wait_until(Duration::from_secs(5), || {
        request(gateway.addr(), "GET", "/nps/health/readiness", &[], b"").status == 503
    });
    assert!(
        all_down,
        "readiness turns DOWN when every backend fails its checks"
    );

    let started = Instant::now();
    let response = push(&gateway, CLIENT);
    let elapsed = started.elapsed();

    assert_eq!(response.status, 502);
    assert!(elapsed < Duration::from_millis(500), "502 took {elapsed:?}");
    let body = response.json();
    assert_eq!(body["status"], 502);
    assert_eq!(body["error"], "Bad Gateway");
    assert_eq!(body["message"], "no backend is healthy; try again later");
}

#[test]
fn every_backend_refusing_gets_502_promptly() {
    let mock = MockBackend::start();
    let list = format!(
        "['http://127.0.0.1:{}', 'http://127.0.0.1:{}']",
        refusing_port(),
        refusing_port()
    );
    let gateway = Gateway::start(&config(&mock, &list).build());

    let started = Instant::now();
    let response = push(&gateway, CLIENT);
    let elapsed = started.elapsed();

    assert_eq!(response.status, 502);
    assert!(elapsed < Duration::from_secs(1), "502 took {elapsed:?}");
    let readiness = request(gateway.addr(), "GET", "/nps/health/readiness", &[], b"");
    assert_eq!(readiness.status, 503);
    assert_eq!(pushes_received(&mock), 0);
}
