//! Admin access with `gateway.adminToken` from a peer outside
//! `adminAllowFrom`. The allowlist is `10.0.0.0/8`, so the loopback peer of
//! the tests is outside it.

mod common;

use sha2::{Digest, Sha256};

use common::metrics::reloads;
use common::{request, ConfigBuilder, Gateway, MockBackend, Response};

const TOKEN: &str = "admin-token-5f0c1e8e2b7d4a9c8e3f6a1b2c3d4e5f";
const REFRESH_PATH: &str = "/nps/refresh";
const GENERATE_PATH: &str = "/nps/rest/util/generateclient/newclient";

fn token_digest(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

fn settings(mock: &MockBackend, with_token: bool) -> ConfigBuilder {
    let builder = ConfigBuilder::new(mock.addr()).set("adminAllowFrom", "['10.0.0.0/8']");
    if with_token {
        builder.set_string("adminToken", &token_digest(TOKEN))
    } else {
        builder
    }
}

fn admin(gateway: &Gateway, method: &str, path: &str, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    request(gateway.addr(), method, path, &headers, b"")
}

/// Returns status, headers other than the request id, and body.
fn visible_parts(response: &Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("x-request-id"))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    headers.sort();
    (response.status, headers, response.body.clone())
}

#[test]
fn token_admits_outside_peer() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock, true).build());
    let bearer = format!("Bearer {TOKEN}");

    let refresh = admin(&gateway, "POST", REFRESH_PATH, Some(&bearer));
    assert_eq!(refresh.status, 200, "{:?}", refresh.text());
    assert_eq!(reloads(gateway.metrics_addr(), "refresh", "ok"), 1.0);

    let generated = admin(&gateway, "GET", GENERATE_PATH, Some(&bearer));
    assert_eq!(generated.status, 200, "{:?}", generated.text());
    assert!(generated.text().contains("- clientId: newclient"));

    let lowercase = format!("bearer {TOKEN}");
    let refresh = admin(&gateway, "POST", REFRESH_PATH, Some(&lowercase));
    assert_eq!(refresh.status, 200, "the scheme is case-insensitive");
}

#[test]
fn wrong_or_missing_token_rejected() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock, true).build());
    let missing = admin(&gateway, "POST", REFRESH_PATH, None);
    assert_eq!(missing.status, 403);

    let wrong_token = format!("Bearer {TOKEN}x");
    let digest_as_token = format!("Bearer {}", token_digest(TOKEN));
    let basic = format!("Basic {TOKEN}");
    let cases = [
        ("wrong token", wrong_token.as_str()),
        ("the digest sent as the token", digest_as_token.as_str()),
        ("another scheme", basic.as_str()),
        ("no scheme", TOKEN),
        ("empty token", "Bearer "),
    ];
    for (case, value) in cases {
        let response = admin(&gateway, "POST", REFRESH_PATH, Some(value));
        assert_eq!(
            visible_parts(&response),
            visible_parts(&missing),
            "{case}: a rejected token must get the same 403 as no token"
        );
        let generate = admin(&gateway, "GET", GENERATE_PATH, Some(value));
        assert_eq!(generate.status, 403, "{case}: generateclient");
    }

    // Two headers, one of them right: rejected, as one value is expected.
    let bearer = format!("Bearer {TOKEN}");
    let two = request(
        gateway.addr(),
        "POST",
        REFRESH_PATH,
        &[("Authorization", &bearer), ("Authorization", &wrong_token)],
        b"",
    );
    assert_eq!(two.status, 403, "two Authorization headers");
    assert_eq!(reloads(gateway.metrics_addr(), "refresh", "ok"), 0.0);
    assert!(
        mock.requests().is_empty(),
        "rejected admin requests must not reach the backend"
    );
}

#[test]
fn no_token_configured_same_403() {
    let mock = MockBackend::start();
    let without = Gateway::start(&settings(&mock, false).build());
    let with = Gateway::start(&settings(&mock, true).build());
    let bearer = format!("Bearer {TOKEN}");

    let unconfigured = admin(&without, "POST", REFRESH_PATH, Some(&bearer));
    let missing = admin(&with, "POST", REFRESH_PATH, None);
    assert_eq!(
        unconfigured.status, 403,
        "a token is no use without adminToken"
    );
    assert_eq!(visible_parts(&unconfigured), visible_parts(&missing));
}

#[test]
fn token_never_logged() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock, true).build());
    for value in [format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}-wrong")] {
        admin(&gateway, "POST", REFRESH_PATH, Some(&value));
        admin(&gateway, "GET", GENERATE_PATH, Some(&value));
    }
    assert!(
        gateway.wait_for_log("admitted_by", std::time::Duration::from_secs(5)),
        "an admission by token must be logged"
    );
    let log = gateway.log_text();
    let digest_hex = &token_digest(TOKEN)["sha256:".len()..];
    assert!(!log.contains(TOKEN), "the log contains the admin token");
    assert!(
        !log.contains(digest_hex),
        "the log contains the token digest"
    );
    let metrics = common::metrics_text(gateway.metrics_addr());
    assert!(
        !metrics.contains(TOKEN),
        "the metrics contain the admin token"
    );
    assert!(
        !metrics.contains(digest_hex),
        "the metrics contain the token digest"
    );
}
