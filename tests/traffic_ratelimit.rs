//! Per-client rate limits: 429 with `Retry-After` past the limit, the
//! default limit, limits kept across a refresh, and invalid limits.

mod common;

use std::time::Instant;

use common::traffic::{key_of, metric_value, push};
use common::{request, ConfigBuilder, Gateway, MockBackend, Response};

/// Sends `count` pushes for `client_id` one after another.
fn push_burst(gateway: &Gateway, client_id: &str, count: usize) -> Vec<Response> {
    (0..count).map(|_| push(gateway, client_id)).collect()
}

fn statuses(responses: &[Response]) -> Vec<u16> {
    responses.iter().map(|response| response.status).collect()
}

/// Returns the `Retry-After` seconds of a 429, checking the response on the way.
fn retry_after(response: &Response) -> u64 {
    assert_eq!(response.status, 429);
    let body = response.json();
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "Too Many Requests");
    let value = response
        .header("Retry-After")
        .unwrap_or_else(|| panic!("a 429 carries Retry-After: {:?}", response.headers));
    value
        .parse()
        .unwrap_or_else(|err| panic!("Retry-After {value:?} is not whole seconds: {err}"))
}

fn refresh(gateway: &Gateway) -> Response {
    request(gateway.addr(), "POST", "/nps/refresh", &[], b"")
}

#[test]
fn limited_client_gets_429_past_limit() {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client("limited", &key_of("limited"))
        .client("free", &key_of("free"))
        .client_rate_limit("limited", "10/s");
    let gateway = Gateway::start(&config.build());

    let free_gateway_addr = gateway.addr();
    let free = std::thread::spawn(move || {
        let api_key = common::api_key("free", &key_of("free"));
        let headers = [("x-api-key", api_key.as_str())];
        (0..50)
            .map(|_| {
                request(
                    free_gateway_addr,
                    "POST",
                    common::traffic::PUSH_PATH,
                    &headers,
                    b"",
                )
                .status
            })
            .collect::<Vec<u16>>()
    });
    let started = Instant::now();
    let limited = push_burst(&gateway, "limited", 50);
    let elapsed = started.elapsed();
    let free_statuses = free.join().expect("the unlimited client's thread finishes");

    // A 10/s bucket lets a burst of 10 through, then one more every 100 ms.
    // The burst usually takes well under a second; on a loaded machine it may
    // take longer, and the bucket then refills by the time that passed.
    let refilled = (elapsed.as_secs_f64() * 10.0).ceil() as usize;
    let passed = limited
        .iter()
        .filter(|response| response.status == 404)
        .count();
    assert!(
        (8..=12 + refilled).contains(&passed),
        "{passed} of 50 passed in {elapsed:?}: {:?}",
        statuses(&limited)
    );
    assert!(
        passed < 50,
        "the limit must refuse part of the burst: {:?}",
        statuses(&limited)
    );
    let refused: Vec<&Response> = limited
        .iter()
        .filter(|response| response.status == 429)
        .collect();
    assert_eq!(
        passed + refused.len(),
        50,
        "only 404 and 429: {:?}",
        statuses(&limited)
    );
    for response in &refused {
        assert!(retry_after(response) >= 1);
    }
    assert!(
        free_statuses.iter().all(|status| *status == 404),
        "the unlimited client is never limited: {free_statuses:?}"
    );
    let counted = metric_value(
        &gateway,
        "keygate_rate_limited_total{client_id=\"limited\"}",
    );
    assert_eq!(counted, Some(refused.len() as f64));
    let free_counted = metric_value(&gateway, "keygate_rate_limited_total{client_id=\"free\"}");
    assert_eq!(free_counted, None, "an unlimited client has no series");
}

#[test]
fn default_limit_applies_without_own() {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .set("rateLimit", "3/min")
        .client("plain", &key_of("plain"))
        .client("exempt", &key_of("exempt"))
        .client_rate_limit("exempt", "unlimited");
    let gateway = Gateway::start(&config.build());

    let plain = push_burst(&gateway, "plain", 4);
    let exempt = push_burst(&gateway, "exempt", 10);

    assert_eq!(statuses(&plain), [404, 404, 404, 429]);
    // One request comes back every 20 s.
    let wait = retry_after(&plain[3]);
    assert!((15..=20).contains(&wait), "Retry-After {wait}");
    assert!(
        statuses(&exempt).iter().all(|status| *status == 404),
        "{:?}",
        statuses(&exempt)
    );
}

#[test]
fn refresh_keeps_exhausted_limit() {
    let mock = MockBackend::start();
    let builder = ConfigBuilder::new(mock.addr())
        .client("limited", &key_of("limited"))
        .client_rate_limit("limited", "2/min");
    let gateway = Gateway::start(&builder.build());
    assert_eq!(
        statuses(&push_burst(&gateway, "limited", 3)),
        [404, 404, 429]
    );

    let added = builder.clone().client("other", &key_of("other"));
    gateway.rewrite_config(&added.build());
    assert_eq!(refresh(&gateway).status, 200);
    assert_eq!(
        push(&gateway, "limited").status,
        429,
        "an unchanged limit keeps its bucket"
    );

    let raised = added.client_rate_limit("limited", "5/min");
    gateway.rewrite_config(&raised.build());
    assert_eq!(refresh(&gateway).status, 200);
    assert_eq!(
        push(&gateway, "limited").status,
        404,
        "a changed limit starts a new bucket"
    );
}

#[test]
fn invalid_limit_rejected_with_place() {
    let mock = MockBackend::start();
    let builder = ConfigBuilder::new(mock.addr())
        .client("limited", &key_of("limited"))
        .client_rate_limit("limited", "2/min");
    let gateway = Gateway::start(&builder.build());
    let bad = builder.clone().client_rate_limit("limited", "2 per minute");
    gateway.rewrite_config(&bad.build());

    let response = refresh(&gateway);

    assert_eq!(response.status, 500);
    let body = response.json();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("invalid rate limit \"2 per minute\""),
        "{message}"
    );
    assert!(body["line"].as_u64().is_some(), "{body}");
    assert!(body["column"].as_u64().is_some(), "{body}");
    assert_eq!(
        statuses(&push_burst(&gateway, "limited", 3)),
        [404, 404, 429],
        "the running limit stays"
    );

    let output = Gateway::spawn_raw(&[
        "check-config",
        "--config",
        &gateway.config_path().display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let place = format!("{}:", gateway.config_path().display());
    assert!(stderr.contains(&place), "{stderr}");
    assert!(
        stderr.contains("allowedClients[0].rateLimit: invalid rate limit"),
        "{stderr}"
    );
}
