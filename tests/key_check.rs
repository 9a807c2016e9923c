//! The key check end to end: the keygate binary in front of the mock push
//! backend, with requests that carry good, bad and oddly encoded `x-api-key`
//! values. A forwarded push reaches the mock, which returns 404 for every
//! pushId; a rejected one gets keygate's 403 and never reaches the mock.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use common::{api_key, metrics_text, request, ConfigBuilder, Conn, Gateway, MockBackend, Response};

/// Keys of the main test clients: 64 lowercase hex characters, like the keys
/// keygate generates.
const KAROLIN_KEY: &str = "8512aeb9e4193f046e8ae1435332d4b3fd5109840fd112a4559f0b9740e3167c";
const MARTIN_KEY: &str = "724f95cf515f83d2af6b7878e31f5d9ca1b7ee62a0a929349bd6d6da950afa71";

/// A 64-hex key that no test client has.
const WRONG_KEY: &str = "0be9e18521b1e3ad4dcdc34cad335d83f0be082b1146184bf3539c6bc7aa2159";

const PUSH_PATH: &str = "/nps/rest/push/p1";
const PUSH_BODY: &[u8] = br#"{"title":"hello","body":"from the key check tests"}"#;

/// Message of the mock's 404 for `PUSH_PATH`, which shows that the request
/// was forwarded.
const MOCK_PUSH_MESSAGE: &str = "pushId 'p1' is not known";

/// Text that the builder writes for an empty client list, replaced by tests
/// that write `allowedClients` themselves.
const EMPTY_CLIENT_LIST: &str = "allowedClients: []\n";

/// Starts the mock backend and keygate in front of it, with the settings
/// that `configure` makes.
fn start(configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let config = configure(ConfigBuilder::new(mock.addr())).build();
    let gateway = Gateway::start(&config);
    (mock, gateway)
}

/// Starts keygate on the builder's configuration with `allowedClients`
/// replaced by `client_list`, written as YAML text.
fn start_with_client_list(client_list: &str) -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let config = config_with_client_list(&mock, client_list);
    let gateway = Gateway::start(&config);
    (mock, gateway)
}

fn config_with_client_list(mock: &MockBackend, client_list: &str) -> String {
    let built = ConfigBuilder::new(mock.addr()).build();
    assert!(
        built.contains(EMPTY_CLIENT_LIST),
        "the built configuration has no {EMPTY_CLIENT_LIST:?} line to replace:\n{built}"
    );
    built.replace(EMPTY_CLIENT_LIST, client_list)
}

/// Sends a push with the given headers on a new connection.
fn push(gateway: &Gateway, headers: &[(&str, &str)]) -> Response {
    request(gateway.addr(), "POST", PUSH_PATH, headers, PUSH_BODY)
}

/// Asserts that the push reached the mock as `client_id` and that the mock's
/// response reached the client, then clears the mock's records.
fn assert_forwarded(response: &Response, mock: &MockBackend, client_id: &str, case: &str) {
    assert_eq!(
        response.status,
        404,
        "{case}: expected the mock's 404 for an unknown pushId, got {} with body {:?}",
        response.status,
        response.text()
    );
    assert_eq!(
        response.json()["message"],
        MOCK_PUSH_MESSAGE,
        "{case}: the response did not come from the mock backend"
    );
    let recorded = mock.requests();
    assert_eq!(
        recorded.len(),
        1,
        "{case}: the mock recorded {} requests, expected exactly the one push",
        recorded.len()
    );
    assert_eq!(
        recorded[0].header("x-client-id"),
        Some(client_id),
        "{case}: wrong identity sent to the backend"
    );
    assert_eq!(
        recorded[0].path(),
        PUSH_PATH,
        "{case}: wrong path forwarded"
    );
    mock.clear();
}

/// Asserts a 403 that did not reach the mock and whose body shows none of
/// `secrets`.
fn assert_rejected(response: &Response, mock: &MockBackend, secrets: &[&str], case: &str) {
    assert_eq!(
        response.status,
        403,
        "{case}: expected 403, got {} with body {:?}",
        response.status,
        response.text()
    );
    let recorded = mock.requests();
    assert!(
        recorded.is_empty(),
        "{case}: a rejected request reached the backend: {:?}",
        recorded
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect::<Vec<_>>()
    );
    let body = response.text();
    // Secrets of fewer than 4 bytes, such as the key "0", would match
    // ordinary text like the status "403".
    for secret in secrets.iter().filter(|secret| secret.len() >= 4) {
        assert!(
            !body.contains(secret),
            "{case}: the 403 body contains a key or x-api-key value: {body:?}"
        );
    }
}

/// Returns the value of the sample `name{label="value"}` in Prometheus text,
/// or `None` when the sample is absent.
fn metric_value(metrics: &str, name: &str, label: &str, value: &str) -> Option<f64> {
    let label_pair = format!("{label}=\"{value}\"");
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| line.contains(&label_pair))
        .map(|line| {
            let number = line.rsplit(' ').next().unwrap_or("");
            number
                .parse()
                .unwrap_or_else(|err| panic!("sample value in {line:?} is not a number: {err}"))
        })
}

#[test]
fn header_name_case_ignored() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));
    let good = api_key("karolin", KAROLIN_KEY);

    for name in ["x-api-key", "X-API-KEY", "X-Api-Key"] {
        let response = push(&gateway, &[(name, &good)]);
        assert_forwarded(&response, &mock, "karolin", &format!("header name {name}"));
    }
}

#[test]
fn several_key_headers_rejected() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));
    let good = api_key("karolin", KAROLIN_KEY);
    let bad = api_key("karolin", WRONG_KEY);
    let good_then_bad = format!("{good}, {bad}");
    let good_twice = format!("{good}, {good}");

    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        (
            "good then bad header",
            vec![("x-api-key", &good), ("x-api-key", &bad)],
        ),
        (
            "bad then good header",
            vec![("x-api-key", &bad), ("x-api-key", &good)],
        ),
        (
            "two good headers",
            vec![("x-api-key", &good), ("X-Api-Key", &good)],
        ),
        (
            "one header with good, bad",
            vec![("x-api-key", &good_then_bad)],
        ),
        (
            "one header with good, good",
            vec![("x-api-key", &good_twice)],
        ),
    ];
    for (case, headers) in &cases {
        let response = push(&gateway, headers);
        assert_rejected(&response, &mock, &[KAROLIN_KEY, &good, &bad], case);
    }
}

#[test]
fn shell_made_base64_rejected() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));
    let good = api_key("karolin", KAROLIN_KEY);

    // `echo karolin:KEY | base64 -w0` encodes the newline that echo appends.
    let with_newline = STANDARD.encode(format!("karolin:{KAROLIN_KEY}\n"));
    // Plain `base64` wraps at 76 columns. The wrapped value cannot be one
    // header line, so a client that copies one line sends only the first.
    assert!(good.len() > 76, "the value must be long enough to wrap");
    let first_wrapped_line = &good[..76];
    let with_space = format!("{} {}", &good[..40], &good[40..]);
    let with_tab = format!("{}\t{}", &good[..40], &good[40..]);

    let cases = [
        (
            "base64 of id:key with a trailing newline",
            with_newline.as_str(),
        ),
        ("first 76 columns of the value", first_wrapped_line),
        ("value with a space inside", with_space.as_str()),
        ("value with a tab inside", with_tab.as_str()),
    ];
    for (case, value) in cases {
        let response = push(&gateway, &[("x-api-key", value)]);
        assert_rejected(&response, &mock, &[KAROLIN_KEY, &good, value], case);
    }

    // The same gateway still forwards the value written on one line.
    let response = push(&gateway, &[("x-api-key", &good)]);
    assert_forwarded(&response, &mock, "karolin", "the unwrapped good value");
}

#[test]
fn colon_in_key_and_utf8_client_id() {
    // Both keys are shorter than generated keys, which loads with a warning.
    let (mock, gateway) = start(|config| config.client("colon", "ab:cd").client("café", "k1"));

    let passing = [("colon", "ab:cd"), ("café", "k1")];
    for (client_id, key) in passing {
        let response = push(&gateway, &[("x-api-key", &api_key(client_id, key))]);
        assert_forwarded(&response, &mock, client_id, &format!("{client_id}:{key}"));
    }

    let rejected: [(&str, &[u8]); 6] = [
        ("key cut at its colon", b"colon:ab"),
        ("key with a colon moved", b"colon:abcd:"),
        ("Latin-1 clientId", b"caf\xe9:k1"),
        ("truncated UTF-8 sequence in the clientId", b"caf\xc3:k1"),
        ("overlong UTF-8 encoding of '/'", b"\xc0\xaf:k1"),
        ("invalid UTF-8 in the key", b"colon:ab:\xff\xfe"),
    ];
    for (case, decoded) in rejected {
        let value = STANDARD.encode(decoded);
        let response = push(&gateway, &[("x-api-key", &value)]);
        assert_rejected(&response, &mock, &[&value, "ab:cd"], case);
    }
}

#[test]
fn yaml_plain_scalars_read_as_text() {
    // Unquoted, YAML 1.1 would read `no` as false, `0e12345` as 0.0, `0123`
    // as 83 and `1_000` as 1000.
    let (mock, gateway) = start_with_client_list(
        "allowedClients:\n\
         \x20 - clientId: no\n\
         \x20   key: 0e12345\n\
         \x20 - clientId: 0123\n\
         \x20   key: 1_000\n",
    );

    for (client_id, key) in [("no", "0e12345"), ("0123", "1_000")] {
        let response = push(&gateway, &[("x-api-key", &api_key(client_id, key))]);
        assert_forwarded(&response, &mock, client_id, &format!("{client_id}:{key}"));
    }

    let rejected = [
        "false:0",
        "false:0e12345",
        "no:0",
        "123:1000",
        "0123:1000",
        "83:1000",
        "83:1_000",
    ];
    for decoded in rejected {
        let value = STANDARD.encode(decoded);
        let response = push(&gateway, &[("x-api-key", &value)]);
        assert_rejected(
            &response,
            &mock,
            &[&value],
            &format!("x-api-key for {decoded}"),
        );
    }
}

#[test]
fn empty_client_list_rejects_everyone() {
    let (mock, gateway) = start_with_client_list("allowedClients: []\n");
    let presented = api_key("karolin", KAROLIN_KEY);

    let response = push(&gateway, &[("x-api-key", &presented)]);
    assert_rejected(
        &response,
        &mock,
        &[&presented],
        "key of a client not in the list",
    );

    let response = push(&gateway, &[]);
    assert_rejected(&response, &mock, &[], "no x-api-key header");
}

/// Asserts that keygate does not start with `client_list` in place of the
/// client list and that `check-config` rejects the same file, both naming
/// `allowedClients`.
fn assert_client_list_stops_start(client_list: &str, case: &str) {
    let mock = MockBackend::start();
    let config = config_with_client_list(&mock, client_list);

    match Gateway::try_start(&config) {
        Ok(gateway) => {
            let presented = api_key("karolin", KAROLIN_KEY);
            let response = push(&gateway, &[("x-api-key", &presented)]);
            panic!(
                "{case}: keygate started; a push then got {} and the mock recorded {} requests",
                response.status,
                mock.requests().len()
            );
        }
        Err(err) => {
            assert!(
                err.reason.contains("exited"),
                "{case}: keygate did not exit: {}",
                err.reason
            );
            assert!(
                !err.reason.contains("exit status: 0"),
                "{case}: keygate exited with success: {}",
                err.reason
            );
            assert!(
                err.log.contains("allowedClients"),
                "{case}: the start-up error does not name allowedClients:\n{}",
                err.log
            );
        }
    }

    let (_config_dir, config_path) = common::gateway::write_config_file(&config);
    let config_arg = config_path.to_str().expect("temporary paths are UTF-8");
    let output = Gateway::spawn_raw(&["check-config", "--config", config_arg]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{case}: check-config accepted the file:\n{printed}"
    );
    assert!(
        printed.contains("allowedClients"),
        "{case}: check-config does not name allowedClients:\n{printed}"
    );
}

#[test]
fn null_client_list_stops_start() {
    assert_client_list_stops_start("allowedClients:\n", "allowedClients with no value");
    assert_client_list_stops_start("allowedClients: ~\n", "allowedClients: ~");
}

#[test]
fn missing_client_list_stops_start() {
    assert_client_list_stops_start("", "no allowedClients key");
}

/// Requests that fail the key check for each reason, with the reason label
/// that keygate counts them under.
fn failure_cases() -> Vec<(&'static str, &'static str, Option<String>)> {
    vec![
        ("no x-api-key header", "missing", None),
        ("empty x-api-key value", "missing", Some(String::new())),
        (
            "value that is not base64",
            "malformed",
            Some("not base64!".to_owned()),
        ),
        (
            "base64 without a colon",
            "malformed",
            Some(STANDARD.encode("karolin")),
        ),
        (
            "unknown clientId",
            "unknown_client",
            Some(api_key("nobody", KAROLIN_KEY)),
        ),
        ("wrong key", "bad_key", Some(api_key("karolin", WRONG_KEY))),
    ]
}

fn send_with_optional_key(gateway: &Gateway, value: Option<&str>) -> Response {
    match value {
        Some(value) => push(gateway, &[("x-api-key", value)]),
        None => push(gateway, &[]),
    }
}

/// Returns the header fields with lowercase names, leaving out those that
/// differ between any two responses: `Date` and the request id.
fn comparable_headers(response: &Response) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| name != "date" && name != "x-request-id")
        .collect()
}

#[test]
fn failure_reasons_share_one_response() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));

    let mut responses = Vec::new();
    for (case, _reason, value) in failure_cases() {
        let response = send_with_optional_key(&gateway, value.as_deref());
        let mut secrets = vec![KAROLIN_KEY];
        secrets.extend(value.as_deref());
        assert_rejected(&response, &mock, &secrets, case);
        assert!(
            response.header("www-authenticate").is_none(),
            "{case}: the 403 carries WWW-Authenticate: {:?}",
            response.header("www-authenticate")
        );
        responses.push((case, response));
    }

    let (first_case, first) = &responses[0];
    for (case, response) in &responses[1..] {
        assert_eq!(
            response.status, first.status,
            "status differs between {first_case:?} and {case:?}"
        );
        assert_eq!(
            response.body,
            first.body,
            "body differs between {first_case:?} ({:?}) and {case:?} ({:?})",
            first.text(),
            response.text()
        );
        assert_eq!(
            comparable_headers(response),
            comparable_headers(first),
            "headers other than Date and X-Request-Id differ between {first_case:?} and {case:?}"
        );
    }
}

#[test]
fn failure_reasons_counted_in_metrics() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));

    // Each case is sent a different number of times, so a count filed under
    // the wrong reason shows up as a wrong total.
    let mut expected = std::collections::BTreeMap::new();
    for (index, (case, reason, value)) in failure_cases().into_iter().enumerate() {
        let times = index + 1;
        for _ in 0..times {
            let response = send_with_optional_key(&gateway, value.as_deref());
            assert_rejected(&response, &mock, &[KAROLIN_KEY], case);
        }
        *expected.entry(reason).or_insert(0usize) += times;
    }

    let metrics = metrics_text(gateway.metrics_addr());
    for (reason, count) in expected {
        let counted = metric_value(&metrics, "keygate_auth_failures_total", "reason", reason);
        assert_eq!(
            counted,
            Some(count as f64),
            "keygate_auth_failures_total{{reason=\"{reason}\"}} does not match the requests sent"
        );
    }
}

#[test]
fn key_only_read_from_header() {
    let (mock, gateway) = start(|config| config.client("karolin", KAROLIN_KEY));
    let good = api_key("karolin", KAROLIN_KEY);

    let in_query = format!("{PUSH_PATH}?x-api-key={good}");
    let response = request(gateway.addr(), "POST", &in_query, &[], PUSH_BODY);
    assert_rejected(
        &response,
        &mock,
        &[KAROLIN_KEY, &good],
        "key in the query string",
    );

    let cookie = format!("x-api-key={good}");
    let response = push(&gateway, &[("Cookie", &cookie)]);
    assert_rejected(&response, &mock, &[KAROLIN_KEY, &good], "key in a cookie");

    let body = format!("x-api-key: {good}\r\n");
    let response = request(gateway.addr(), "POST", PUSH_PATH, &[], body.as_bytes());
    assert_rejected(
        &response,
        &mock,
        &[KAROLIN_KEY, &good],
        "key as a header line in the body",
    );

    let json_body = format!(r#"{{"x-api-key":"{good}","title":"t","body":"b"}}"#);
    let response = request(gateway.addr(), "POST", PUSH_PATH, &[], json_body.as_bytes());
    assert_rejected(
        &response,
        &mock,
        &[KAROLIN_KEY, &good],
        "key in a JSON body",
    );

    let response = push(&gateway, &[("x_api_key", &good)]);
    assert_rejected(
        &response,
        &mock,
        &[KAROLIN_KEY, &good],
        "key under header x_api_key",
    );
}

#[test]
fn padding_optional() {
    // "alpha:" + 64 characters is 70 bytes, encoded with "==";
    // "bravo1:" + 64 characters is 71 bytes, encoded with "=".
    let (mock, gateway) = start(|config| {
        config
            .client("alpha", KAROLIN_KEY)
            .client("bravo1", MARTIN_KEY)
    });

    for (client_id, key, padding) in [("alpha", KAROLIN_KEY, "=="), ("bravo1", MARTIN_KEY, "=")] {
        let padded = api_key(client_id, key);
        assert!(
            padded.ends_with(padding) && !padded.ends_with(&format!("{padding}=")),
            "the value for {client_id} must end with exactly {padding:?}: {padded}"
        );
        let unpadded = padded.trim_end_matches('=');

        let response = push(&gateway, &[("x-api-key", unpadded)]);
        assert_forwarded(
            &response,
            &mock,
            client_id,
            &format!("{client_id} without padding"),
        );

        let response = push(&gateway, &[("x-api-key", &padded)]);
        assert_forwarded(
            &response,
            &mock,
            client_id,
            &format!("{client_id} with padding"),
        );

        let extra_padding = format!("{padded}=");
        let response = push(&gateway, &[("x-api-key", &extra_padding)]);
        assert_rejected(
            &response,
            &mock,
            &[key, &padded],
            &format!("{client_id} with one '=' too many"),
        );
    }
}

/// Formats a push with a two-byte body for a raw connection.
fn raw_push(api_key_value: &str) -> Vec<u8> {
    format!(
        "POST {PUSH_PATH} HTTP/1.1\r\nHost: keygate\r\nx-api-key: {api_key_value}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

#[test]
fn identity_per_request_on_keep_alive() {
    let (mock, gateway) = start(|config| {
        config
            .client("karolin", KAROLIN_KEY)
            .client("martin", MARTIN_KEY)
    });
    let mut conn = Conn::connect(gateway.addr());

    conn.send(&raw_push(&api_key("karolin", KAROLIN_KEY)));
    let first = conn.read_response();
    assert_eq!(first.status, 404, "first push (karolin): {}", first.text());

    let bad = api_key("martin", KAROLIN_KEY);
    conn.send(&raw_push(&bad));
    let second = conn.read_response();
    assert_eq!(
        second.status,
        403,
        "second push (bad key): {}",
        second.text()
    );
    assert_ne!(
        second
            .header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "a 403 to a request without a body must keep the connection open"
    );
    assert!(
        !second.text().contains(&bad),
        "the 403 body contains the x-api-key value"
    );

    conn.send(&raw_push(&api_key("martin", MARTIN_KEY)));
    let third = conn.read_response();
    assert_eq!(third.status, 404, "third push (martin): {}", third.text());

    let identities: Vec<Option<String>> = mock
        .requests()
        .iter()
        .map(|recorded| recorded.header("x-client-id").map(str::to_owned))
        .collect();
    assert_eq!(
        identities,
        [Some("karolin".to_owned()), Some("martin".to_owned())],
        "the backend must see each good request with its own clientId, and not the rejected one"
    );
}
