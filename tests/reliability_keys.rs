//! Key rotation and safer storage end to end: clients with several keys,
//! keys stored as `keyHash`, keys that expire, the generateclient route with
//! `?rotate=true`, and `generate-client --hash`.

mod common;

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use common::metrics::counter;
use common::poll::wait_until;
use common::{api_key, request, ConfigBuilder, Gateway, MockBackend, Response};

const OLD_KEY: &str = "01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d01d0";
const NEW_KEY: &str = "9e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e99e9";
const HASHED_KEY: &str = "4a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a54a5";
const WRONG_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const GENERATE_PATH: &str = "/nps/rest/util/generateclient";

/// Text that the builder writes for an empty client list.
const EMPTY_CLIENT_LIST: &str = "allowedClients: []\n";

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// Returns the config text with `allowedClients` written as `client_list`.
fn config_with(mock: &MockBackend, client_list: &str) -> String {
    let built = ConfigBuilder::new(mock.addr()).build();
    assert!(built.contains(EMPTY_CLIENT_LIST), "{built}");
    built.replace(EMPTY_CLIENT_LIST, client_list)
}

fn push(gateway: &Gateway, client_id: &str, key: &str) -> Response {
    let value = api_key(client_id, key);
    request(
        gateway.addr(),
        "POST",
        "/nps/rest/push/p1",
        &[("x-api-key", &value), ("Content-Type", "application/json")],
        b"{}",
    )
}

fn assert_passes(gateway: &Gateway, client_id: &str, key: &str, case: &str) {
    let response = push(gateway, client_id, key);
    assert_eq!(
        response.status,
        404,
        "{case}: expected the mock's 404, got body {:?}",
        response.text()
    );
    assert!(
        response.text().contains("is not known"),
        "{case}: the response did not come from the backend: {:?}",
        response.text()
    );
}

fn auth_failures(gateway: &Gateway, reason: &str) -> f64 {
    counter(
        gateway.metrics_addr(),
        "keygate_auth_failures_total",
        &[("reason", reason)],
    )
}

/// Returns status, headers other than the request id, and body: everything
/// a refused client sees that must not depend on the reason.
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
fn either_of_two_keys_passes() {
    let mock = MockBackend::start();
    let clients = format!(
        "allowedClients:\n  - clientId: rotating\n    key: {OLD_KEY}\n    keys:\n      - key: {NEW_KEY}\n"
    );
    let gateway = Gateway::start(&config_with(&mock, &clients));

    assert_passes(&gateway, "rotating", OLD_KEY, "the entry's key");
    assert_passes(&gateway, "rotating", NEW_KEY, "the key in keys");
    assert_eq!(push(&gateway, "rotating", WRONG_KEY).status, 403);
    assert_eq!(auth_failures(&gateway, "bad_key"), 1.0);
}

#[test]
fn hashed_key_passes() {
    let mock = MockBackend::start();
    let clients = format!(
        "allowedClients:\n  - clientId: hashed\n    keyHash: {}\n",
        key_hash(HASHED_KEY)
    );
    let gateway = Gateway::start(&config_with(&mock, &clients));

    assert_passes(&gateway, "hashed", HASHED_KEY, "the key behind keyHash");
    let hash_as_key = push(&gateway, "hashed", &key_hash(HASHED_KEY));
    assert_eq!(
        hash_as_key.status, 403,
        "the keyHash value itself is no key"
    );
    assert_eq!(auth_failures(&gateway, "bad_key"), 1.0);
    let log = gateway.log_text();
    assert!(
        !log.contains(&key_hash(HASHED_KEY)[7..]),
        "the key hash must not be logged"
    );
}

#[test]
fn expired_key_gets_same_403() {
    let mock = MockBackend::start();
    let clients = format!(
        "allowedClients:\n  - clientId: rotating\n    keys:\n      - key: {OLD_KEY}\n        expires: 2020-01-31\n      - keyHash: {}\n        expires: 2999-12-31T23:59:59Z\n",
        key_hash(NEW_KEY)
    );
    let gateway = Gateway::start(&config_with(&mock, &clients));
    assert!(
        gateway.wait_for_log(
            "keys[0] expired at 2020-02-01T00:00:00Z",
            Duration::from_secs(5)
        ),
        "an expired key must load with a warning:\n{}",
        gateway.redacted_log_tail(20)
    );

    assert_passes(
        &gateway,
        "rotating",
        NEW_KEY,
        "the key that expires in 2999",
    );
    mock.clear();
    let expired = push(&gateway, "rotating", OLD_KEY);
    let wrong = push(&gateway, "rotating", WRONG_KEY);
    assert_eq!(expired.status, 403);
    assert_eq!(
        visible_parts(&expired),
        visible_parts(&wrong),
        "an expired key must get the same response as a wrong key"
    );
    assert_eq!(auth_failures(&gateway, "expired"), 1.0);
    assert_eq!(auth_failures(&gateway, "bad_key"), 1.0);
    assert!(
        mock.requests().is_empty(),
        "refused pushes must not reach the backend"
    );
    assert!(
        gateway.wait_for_log("reason=\"expired\"", Duration::from_secs(5)),
        "the refusal must be logged with its reason:\n{}",
        gateway.redacted_log_tail(10)
    );
}

#[test]
fn key_expires_while_running() {
    let mock = MockBackend::start();
    let expires = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expires = expires.format(&Rfc3339).unwrap();
    let clients = format!(
        "allowedClients:\n  - clientId: soon\n    key: {OLD_KEY}\n    expires: {expires}\n"
    );
    let gateway = Gateway::start(&config_with(&mock, &clients));

    assert_passes(&gateway, "soon", OLD_KEY, "before expires");
    assert!(
        wait_until(Duration::from_secs(10), || push(&gateway, "soon", OLD_KEY)
            .status
            == 403),
        "the key must stop passing at {expires} without a reload"
    );
    assert_eq!(auth_failures(&gateway, "expired"), 1.0);
}

/// Returns the new key of an extra-key snippet: the second half of its header value.
fn snippet_key(snippet: &str, client_id: &str) -> String {
    let header_value = snippet
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# X-Api-Key: "))
        .unwrap_or_else(|| panic!("no header line in {snippet:?}"));
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, header_value)
        .expect("the header value is base64");
    let decoded = String::from_utf8(decoded).expect("the header value is UTF-8");
    decoded
        .strip_prefix(&format!("{client_id}:"))
        .unwrap_or_else(|| panic!("the header value is not for {client_id}"))
        .to_string()
}

/// Reads `field` of a one-line `keys` item such as `- key: ...`. The value
/// may be quoted, because the snippet quotes keys that YAML could misread.
fn item_field(line: &str, field: &str) -> String {
    let items: Vec<std::collections::BTreeMap<String, String>> = serde_yaml::from_str(line)
        .unwrap_or_else(|err| panic!("{line:?} is not a YAML list item: {err}"));
    assert_eq!(items.len(), 1, "{line:?}");
    let Some(value) = items[0].get(field) else {
        panic!("{line:?} has no {field}");
    };
    assert_eq!(items[0].len(), 1, "{line:?} has more than {field}");
    value.clone()
}

#[test]
fn rotate_gives_extra_key() {
    let mock = MockBackend::start();
    let entry = format!("allowedClients:\n  - clientId: karolin\n    key: {OLD_KEY}\n");
    let config = config_with(&mock, &entry);
    let gateway = Gateway::start(&config);

    let conflict = request(
        gateway.addr(),
        "GET",
        &format!("{GENERATE_PATH}/karolin"),
        &[],
        b"",
    );
    assert_eq!(conflict.status, 409, "a configured client without rotate");
    let rotate_false = request(
        gateway.addr(),
        "GET",
        &format!("{GENERATE_PATH}/karolin?rotate=false"),
        &[],
        b"",
    );
    assert_eq!(rotate_false.status, 409, "rotate=false");
    let invalid = request(
        gateway.addr(),
        "GET",
        &format!("{GENERATE_PATH}/karolin?rotate=yes"),
        &[],
        b"",
    );
    assert_eq!(invalid.status, 400, "rotate=yes");

    let extra = request(
        gateway.addr(),
        "GET",
        &format!("{GENERATE_PATH}/karolin?rotate=true"),
        &[],
        b"",
    );
    assert_eq!(extra.status, 200, "rotate=true: {:?}", extra.text());
    let snippet = extra.text();
    let lines: Vec<&str> = snippet.lines().collect();
    assert_eq!(lines.len(), 3, "{snippet}");
    assert!(lines[1].starts_with("# "), "{snippet}");
    let new_key = snippet_key(&snippet, "karolin");
    assert_eq!(item_field(lines[2], "key"), new_key, "{snippet}");

    let hashed = request(
        gateway.addr(),
        "GET",
        &format!("{GENERATE_PATH}/karolin?rotate=true&hash=true"),
        &[],
        b"",
    );
    assert_eq!(hashed.status, 200);
    let hashed_snippet = hashed.text();
    let hashed_key = snippet_key(&hashed_snippet, "karolin");
    let hashed_line = hashed_snippet
        .lines()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert_eq!(hashed_line, format!("- keyHash: {}", key_hash(&hashed_key)));

    // Paste both items under keys in the entry, following the comment in the snippet.
    let rotated = format!(
        "{}    keys:\n      {}\n      {hashed_line}\n",
        entry, lines[2]
    );
    gateway.rewrite_config(&config_with(&mock, &rotated));
    let refresh = request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "{:?}", refresh.text());
    assert_passes(&gateway, "karolin", OLD_KEY, "the old key after rotation");
    assert_passes(&gateway, "karolin", &new_key, "the extra key");
    assert_passes(&gateway, "karolin", &hashed_key, "the extra hashed key");
}

#[test]
fn cli_hash_entry_loads() {
    let output = Gateway::spawn_raw(&["generate-client", "--hash", "karolin"]);
    assert!(output.status.success(), "{output:?}");
    let snippet = String::from_utf8(output.stdout).expect("the snippet is UTF-8");
    let lines: Vec<&str> = snippet.lines().collect();
    assert_eq!(lines.len(), 3, "{snippet}");
    let key = snippet_key(&snippet, "karolin");
    assert_eq!(lines[1], "- clientId: karolin");
    assert_eq!(lines[2], format!("  keyHash: {}", key_hash(&key)));
    assert!(
        !lines[1..].join("\n").contains(&key),
        "the plain key may appear only in the header comment"
    );

    let mock = MockBackend::start();
    let entry: String = lines[1..]
        .iter()
        .map(|line| format!("  {line}\n"))
        .collect();
    let gateway = Gateway::start(&config_with(&mock, &format!("allowedClients:\n{entry}")));
    let header_value = lines[0].trim_start_matches("# X-Api-Key: ");
    let response = request(
        gateway.addr(),
        "POST",
        "/nps/rest/push/p1",
        &[("x-api-key", header_value)],
        b"{}",
    );
    assert_eq!(
        response.status,
        404,
        "the printed header value must pass: {:?}",
        response.text()
    );
}

#[test]
fn cli_rotate_prints_item() {
    let output = Gateway::spawn_raw(&["generate-client", "--rotate", "karolin"]);
    assert!(output.status.success(), "{output:?}");
    let snippet = String::from_utf8(output.stdout).expect("the snippet is UTF-8");
    let key = snippet_key(&snippet, "karolin");
    let lines: Vec<&str> = snippet.lines().collect();
    assert_eq!(lines.len(), 3, "{snippet}");
    assert_eq!(item_field(lines[2], "key"), key, "{snippet}");
}
