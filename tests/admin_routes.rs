//! The routes that keygate serves itself: key generation, refresh, health,
//! readiness and the metrics listener, and who may use the admin routes.
//! Each test runs the real gateway in front of the mock push backend.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;
use serde_yaml::Value;

use common::{
    api_key, free_addr, free_port, metrics_text, request, ConfigBuilder, Conn, Gateway,
    MockBackend, ReceivedRequest, Response,
};

const CLIENT_ID: &str = "karolin";
const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
const EXTRA_CLIENT_ID: &str = "extra";
const EXTRA_KEY: &str = "0b6c1f5e9a2d4c7b8e3f1a0d5c9b7e2f4a6d8c0b1e3f5a7c9d2b4e6f8a0c1d3e";
const WRONG_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

const PUSH_PATH: &str = "/nps/rest/push/p1";
const REFRESH_PATH: &str = "/nps/refresh";
const GENERATE_PATH: &str = "/nps/rest/util/generateclient";

/// Body that the mock returns for a push to `PUSH_PATH`, because it stores
/// no pushIds.
const MOCK_PUSH_BODY: &str =
    r#"{"status":404,"error":"Not Found","message":"pushId 'p1' is not known"}"#;

/// Maximum time that a refresh, good or bad, may take to return.
const REFRESH_BOUND: Duration = Duration::from_secs(5);

/// Time to wait for a forwarded refresh that must not arrive.
const ABSENCE_WAIT: Duration = Duration::from_millis(500);

/// Settings of a test gateway in front of `mock`, without clients, so that
/// configurations built from it share the listen addresses.
fn settings(mock: &MockBackend) -> ConfigBuilder {
    ConfigBuilder::new(mock.addr())
}

fn refresh(gateway: &Gateway) -> Response {
    request(gateway.addr(), "POST", REFRESH_PATH, &[], b"")
}

/// Sends a push with `x-api-key: <api_key_value>`.
fn push(gateway: &Gateway, api_key_value: &str) -> Response {
    request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", api_key_value)],
        br#"{"title":"t","body":"b"}"#,
    )
}

/// Asserts that a push for `client_id` reached the mock: the mock's own 404
/// body came back, and the backend saw that identity.
fn assert_push_forwarded(gateway: &Gateway, mock: &MockBackend, client_id: &str, key: &str) {
    mock.clear();
    let response = push(gateway, &api_key(client_id, key));
    assert_eq!(
        response.status,
        404,
        "push by {client_id}: expected the mock's 404, body {:?}",
        response.text()
    );
    assert_eq!(response.text(), MOCK_PUSH_BODY, "push by {client_id}: body");
    let pushes: Vec<ReceivedRequest> = mock
        .wait_for_requests(1, Duration::from_secs(5))
        .into_iter()
        .filter(|received| received.target == PUSH_PATH)
        .collect();
    assert_eq!(
        pushes.len(),
        1,
        "push by {client_id}: pushes the mock recorded"
    );
    assert_eq!(
        pushes[0].header("x-client-id"),
        Some(client_id),
        "push by {client_id}: identity sent to the backend"
    );
}

/// Asserts keygate's JSON error shape `{"status":..,"error":..,"message":..}`.
fn assert_error_shape(response: &Response, status: u16, error: &str, context: &str) {
    assert_eq!(
        response.status,
        status,
        "{context}: status, body {:?}",
        response.text()
    );
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{context}: content type is {content_type:?}, expected application/json"
    );
    let body = response.json();
    assert_eq!(body["status"], status, "{context}: body status field");
    assert_eq!(body["error"], error, "{context}: body error field");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{context}: body message is missing or empty: {body}"
    );
}

/// Returns the value of the series `name` whose labels are exactly `labels`,
/// in any order, or `None` when the metrics text has no such series.
fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut expected: Vec<(&str, &str)> = labels.to_vec();
    expected.sort_unstable();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, label_text) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut found: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(label, value)| (label, value.trim_matches('"')))
            .collect();
        found.sort_unstable();
        if found == expected {
            return value.parse().ok();
        }
    }
    None
}

/// Returns `keygate_config_reloads_total{trigger="refresh",result}`, 0 when
/// the series is absent.
fn refresh_reloads(gateway: &Gateway, result: &str) -> f64 {
    let text = metrics_text(gateway.metrics_addr());
    metric_value(
        &text,
        "keygate_config_reloads_total",
        &[("trigger", "refresh"), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Replaces the file at `path` in one rename. Unlike
/// [`Gateway::rewrite_config`], it does not parse the text, which may be a
/// YAML bomb.
fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("yml.tmp");
    std::fs::write(&temporary, text)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", temporary.display()));
    std::fs::rename(&temporary, path)
        .unwrap_or_else(|err| panic!("failed to rename {}: {err}", temporary.display()));
}

/// Returns the configuration text of `settings` with `section` in place of
/// its empty `allowedClients` list.
fn with_clients_section(settings: &ConfigBuilder, section: &str) -> String {
    let text = settings.build();
    assert!(
        text.contains("allowedClients: []\n"),
        "the settings must have no clients for their list to be replaced:\n{text}"
    );
    text.replace("allowedClients: []\n", section)
}

/// A generated client as the generateclient snippet shows it.
struct Snippet {
    lines: Vec<String>,
    header_value: String,
    client_id: String,
    key: String,
}

/// Parses a generateclient snippet and checks its shape: three lines, a
/// header value that decodes to `clientId:key`, and YAML that reads back as
/// one entry with exactly `expected_client_id` and a 64-hex key.
fn parse_snippet(text: &str, expected_client_id: &str) -> Snippet {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "snippet must have three lines:\n{text}");
    let header_value = lines[0]
        .strip_prefix("# X-Api-Key: ")
        .unwrap_or_else(|| {
            panic!(
                "first snippet line is not '# X-Api-Key: <value>': {:?}",
                lines[0]
            )
        })
        .to_owned();
    assert!(
        lines[1].starts_with("- clientId: "),
        "second snippet line: {:?}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("  key: "),
        "third snippet line: {:?}",
        lines[2]
    );

    let entries: Value = serde_yaml::from_str(text)
        .unwrap_or_else(|err| panic!("snippet is not valid YAML ({err}):\n{text}"));
    let entries = entries
        .as_sequence()
        .unwrap_or_else(|| panic!("snippet is not a YAML list:\n{text}"));
    assert_eq!(entries.len(), 1, "snippet must contain one entry:\n{text}");
    let client_id = match &entries[0]["clientId"] {
        Value::String(client_id) => client_id.clone(),
        other => panic!("clientId reads back as {other:?}, not a string:\n{text}"),
    };
    let key = match &entries[0]["key"] {
        Value::String(key) => key.clone(),
        other => panic!("key reads back as {other:?}, not a string:\n{text}"),
    };
    assert_eq!(
        client_id, expected_client_id,
        "clientId read back from the snippet"
    );
    assert_eq!(key.len(), 64, "generated key length");
    assert!(
        key.bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)),
        "generated key is not lowercase hex: {key:?}"
    );

    let decoded = STANDARD
        .decode(&header_value)
        .unwrap_or_else(|err| panic!("X-Api-Key value is not base64 ({err}): {header_value:?}"));
    assert_eq!(
        String::from_utf8(decoded).expect("decoded X-Api-Key value is UTF-8"),
        format!("{expected_client_id}:{key}"),
        "X-Api-Key value must decode to clientId:key"
    );
    Snippet {
        lines,
        header_value,
        client_id,
        key,
    }
}

fn generate(gateway: &Gateway, encoded_client_id: &str) -> Response {
    let path = format!("{GENERATE_PATH}/{encoded_client_id}");
    request(gateway.addr(), "GET", &path, &[], b"")
}

#[test]
fn generateclient_returns_snippet() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let response = generate(&gateway, "newcomer");
    assert_eq!(response.status, 200, "body {:?}", response.text());
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/plain"),
        "content type is {content_type:?}, expected text/plain"
    );
    let snippet = parse_snippet(&response.text(), "newcomer");
    assert_eq!(snippet.lines[1], "- clientId: newcomer");
    // A key that starts like a number, such as `0b...`, is quoted.
    let plain_key_line = format!("  key: {}", snippet.key);
    let quoted_key_line = format!("  key: \"{}\"", snippet.key);
    assert!(
        snippet.lines[2] == plain_key_line || snippet.lines[2] == quoted_key_line,
        "third snippet line: {:?}",
        snippet.lines[2]
    );

    let second = parse_snippet(&generate(&gateway, "newcomer").text(), "newcomer");
    assert_ne!(second.key, snippet.key, "two generated keys are equal");
}

#[test]
fn generateclient_quotes_yaml_lookalikes() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    for client_id in ["no", "0123", "true", "on", "1e5", "null"] {
        let response = generate(&gateway, client_id);
        assert_eq!(
            response.status,
            200,
            "{client_id}: body {:?}",
            response.text()
        );
        let snippet = parse_snippet(&response.text(), client_id);
        assert!(
            snippet.lines[1] == format!("- clientId: \"{client_id}\"")
                || snippet.lines[1] == format!("- clientId: '{client_id}'"),
            "clientId {client_id:?} must be quoted in the snippet: {:?}",
            snippet.lines[1]
        );
    }
}

#[test]
fn generateclient_decodes_percent_encoding() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let response = generate(&gateway, "caf%C3%A9");
    assert_eq!(response.status, 200, "body {:?}", response.text());
    let snippet = parse_snippet(&response.text(), "café");
    assert_eq!(snippet.client_id, "café");
}

#[test]
fn generateclient_rejects_bad_client_ids() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());
    let too_long = "a".repeat(129);

    for encoded in ["a%3Ab", too_long.as_str(), "%20", "a%09b", "a%0Ab", ""] {
        let response = generate(&gateway, encoded);
        assert_error_shape(
            &response,
            400,
            "Bad Request",
            &format!("generateclient/{encoded}"),
        );
    }

    let longest = "a".repeat(128);
    let response = generate(&gateway, &longest);
    assert_eq!(
        response.status, 200,
        "a clientId of exactly 128 bytes is valid"
    );
}

#[test]
fn generateclient_configured_client_conflicts() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let response = generate(&gateway, CLIENT_ID);
    assert_error_shape(
        &response,
        409,
        "Conflict",
        "generateclient for a configured client",
    );
    assert!(
        !response.text().contains(KEY),
        "the 409 body must not contain the configured key"
    );
}

#[test]
fn generateclient_post_not_allowed() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let path = format!("{GENERATE_PATH}/newcomer");
    let response = request(gateway.addr(), "POST", &path, &[], b"");
    assert_error_shape(&response, 405, "Method Not Allowed", "POST generateclient");
    let allow = response.header("allow").unwrap_or("");
    assert!(
        allow.split(',').any(|method| method.trim() == "GET"),
        "Allow must list GET, got {allow:?}"
    );
}

#[test]
fn generated_client_workflow() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(&base.build());

    let response = generate(&gateway, "newcomer");
    assert_eq!(response.status, 200, "body {:?}", response.text());
    let snippet_text = response.text();
    let snippet = parse_snippet(&snippet_text, "newcomer");

    // Paste the snippet under allowedClients, which the builder writes last.
    let mut pasted = base.build();
    for line in snippet_text.lines() {
        pasted.push_str("  ");
        pasted.push_str(line);
        pasted.push('\n');
    }
    gateway.rewrite_config(&pasted);

    let refreshed = refresh(&gateway);
    assert_eq!(
        refreshed.status,
        200,
        "refresh: body {:?}",
        refreshed.text()
    );
    assert_eq!(refreshed.json(), json!(["allowedClients"]));

    mock.clear();
    let response = push(&gateway, &snippet.header_value);
    assert_eq!(
        response.status,
        404,
        "push with the snippet's X-Api-Key value: body {:?}",
        response.text()
    );
    assert_eq!(response.text(), MOCK_PUSH_BODY);
    let pushes: Vec<ReceivedRequest> = mock
        .wait_for_requests(1, Duration::from_secs(5))
        .into_iter()
        .filter(|received| received.target == PUSH_PATH)
        .collect();
    assert_eq!(pushes.len(), 1, "pushes the mock recorded");
    assert_eq!(pushes[0].header("x-client-id"), Some("newcomer"));

    let wrong = push(&gateway, &api_key("newcomer", WRONG_KEY));
    assert_error_shape(&wrong, 403, "Forbidden", "push with a wrong key");

    assert_error_shape(
        &generate(&gateway, "newcomer"),
        409,
        "Conflict",
        "generateclient after the client was added",
    );
}

#[test]
fn refresh_unchanged_file_returns_empty_list() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert_eq!(response.json(), json!([]));
}

#[test]
fn refresh_get_not_allowed() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());
    let reloads_before = refresh_reloads(&gateway, "ok");

    let response = request(gateway.addr(), "GET", REFRESH_PATH, &[], b"");
    assert_error_shape(&response, 405, "Method Not Allowed", "GET refresh");
    assert_eq!(response.header("allow"), Some("POST"));
    assert_eq!(
        refresh_reloads(&gateway, "ok"),
        reloads_before,
        "GET refresh must not reload"
    );
}

#[test]
fn refresh_forwarded_to_backend() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());

    let received = mock.wait_for_requests(1, Duration::from_secs(5));
    let refreshes: Vec<&ReceivedRequest> = received
        .iter()
        .filter(|request| request.target == REFRESH_PATH)
        .collect();
    assert_eq!(refreshes.len(), 1, "refreshes the backend received");
    assert_eq!(refreshes[0].method, "POST");
}

#[test]
fn refresh_not_forwarded_when_disabled() {
    let mock = MockBackend::start();
    let config = settings(&mock)
        .client(CLIENT_ID, KEY)
        .set("forwardRefresh", "false");
    let gateway = Gateway::start(&config.build());

    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());

    // A push after the refresh shows that the backend is reachable.
    assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
    std::thread::sleep(ABSENCE_WAIT);
    let refreshes: Vec<ReceivedRequest> = mock
        .requests()
        .into_iter()
        .filter(|request| request.path().ends_with("/refresh"))
        .collect();
    assert!(
        refreshes.is_empty(),
        "forwardRefresh: false, but the backend received {refreshes:?}"
    );
}

#[test]
fn refresh_names_changed_backend_key() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(
        &base
            .clone()
            .top_level("spring:\n  application:\n    name: nps\n")
            .top_level("server:\n  port: 20280\n")
            .build(),
    );

    gateway.rewrite_config(
        &base
            .top_level("spring:\n  application:\n    name: nps-renamed\n")
            .top_level("server:\n  port: 20280\n")
            .build(),
    );
    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert_eq!(response.json(), json!(["spring"]));
}

/// A file that a refresh must reject.
struct BadFile {
    name: &'static str,
    /// File text, or `None` to delete the file.
    text: Option<String>,
    /// First and last line, counted from 1, of the text that breaks the
    /// file, when the error must give a line and column.
    error_lines: Option<(u64, u64)>,
}

/// Returns the 1-based number of the first line of `text` that satisfies
/// `matches`. Panics when no line does.
fn line_number(text: &str, matches: impl Fn(&str) -> bool) -> u64 {
    let index = text
        .lines()
        .position(matches)
        .unwrap_or_else(|| panic!("no matching line in:\n{text}"));
    index as u64 + 1
}

/// Returns an alias bomb of ten levels, each with ten aliases of the level
/// below, so that expanding it would build 10^10 scalars.
fn alias_bomb() -> String {
    let mut text = String::from("bomb:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let aliases = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("  l{level}: &l{level} [{aliases}]\n"));
    }
    text
}

fn bad_files(settings: &ConfigBuilder) -> Vec<BadFile> {
    let entry = format!("  - clientId: {CLIENT_ID}\n    key: {KEY}\n");
    let tab_indented = with_clients_section(
        settings,
        &format!("allowedClients:\n\t- clientId: {CLIENT_ID}\n\t  key: {KEY}\n"),
    );
    let tab_line = line_number(&tab_indented, |line| line.starts_with('\t'));
    let key_twice = with_clients_section(
        settings,
        &format!("allowedClients:\n{entry}    key: {EXTRA_KEY}\n"),
    );
    let entry_line = line_number(&key_twice, |line| line.starts_with("  - clientId:"));
    let second_key_line = line_number(&key_twice, |line| line.contains(EXTRA_KEY));
    vec![
        BadFile {
            name: "tab indentation",
            text: Some(tab_indented),
            error_lines: Some((tab_line, tab_line)),
        },
        BadFile {
            name: "key written twice in one entry",
            text: Some(key_twice),
            error_lines: Some((entry_line, second_key_line)),
        },
        BadFile {
            name: "nested alias bomb",
            text: Some(with_clients_section(
                settings,
                &format!("allowedClients:\n{entry}{}", alias_bomb()),
            )),
            error_lines: None,
        },
        BadFile {
            name: "two entries with one clientId",
            text: Some(with_clients_section(
                settings,
                &format!(
                    "allowedClients:\n{entry}  - clientId: {CLIENT_ID}\n    key: {EXTRA_KEY}\n"
                ),
            )),
            error_lines: None,
        },
        BadFile {
            name: "allowedClients without a value",
            text: Some(with_clients_section(settings, "allowedClients:\n")),
            error_lines: None,
        },
        BadFile {
            name: "deleted file",
            text: None,
            error_lines: None,
        },
    ]
}

#[test]
fn refresh_bad_file_keeps_old_clients() {
    let mock = MockBackend::start();
    let base = settings(&mock);
    let good = base.clone().client(CLIENT_ID, KEY).build();
    let gateway = Gateway::start(&good);
    let config_path = gateway.config_path().to_path_buf();

    for (index, bad_file) in bad_files(&base).into_iter().enumerate() {
        let name = bad_file.name;
        let errors_before = refresh_reloads(&gateway, "error");
        match &bad_file.text {
            Some(text) => replace_file(&config_path, text),
            None => std::fs::remove_file(&config_path)
                .unwrap_or_else(|err| panic!("failed to delete {}: {err}", config_path.display())),
        }

        let started = Instant::now();
        let response = refresh(&gateway);
        let elapsed = started.elapsed();
        assert!(
            elapsed < REFRESH_BOUND,
            "{name}: refresh took {elapsed:?}, expected under {REFRESH_BOUND:?}"
        );
        assert_eq!(
            response.status,
            500,
            "{name}: refresh status, body {:?}",
            response.text()
        );
        let body = response.json();
        assert_eq!(body["status"], 500, "{name}: body status field: {body}");
        assert_eq!(
            body["file"].as_str(),
            Some(config_path.display().to_string().as_str()),
            "{name}: body file field: {body}"
        );
        if let Some((first_line, last_line)) = bad_file.error_lines {
            let line = body["line"].as_u64();
            assert!(
                line.is_some_and(|line| (first_line..=last_line).contains(&line)),
                "{name}: body must give a line from {first_line} to {last_line}: {body}"
            );
            assert!(
                body["column"].as_u64().is_some_and(|column| column > 0),
                "{name}: body must give the column: {body}"
            );
        }
        assert_eq!(
            refresh_reloads(&gateway, "error"),
            errors_before + 1.0,
            "{name}: keygate_config_reloads_total{{result=\"error\",trigger=\"refresh\"}}"
        );

        assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
        let unknown = push(&gateway, &api_key(EXTRA_CLIENT_ID, EXTRA_KEY));
        assert_eq!(
            unknown.status, 403,
            "{name}: a client that was never loaded must stay rejected (case {index})"
        );
    }

    // The running snapshot is still the first file, so restoring it changes nothing.
    replace_file(&config_path, &good);
    let restored = refresh(&gateway);
    assert_eq!(restored.status, 200, "body {:?}", restored.text());
    assert_eq!(restored.json(), json!([]));
}

/// Maximum number of pushes that each thread sends while refreshes run.
const RACE_REQUESTS_PER_THREAD: usize = 700;
/// Time after which each push thread stops even if refreshes still run.
const RACE_TIME_LIMIT: Duration = Duration::from_secs(20);
const RACE_THREADS: usize = 3;
const RACE_REFRESHES: usize = 100;

/// Sends good pushes on one kept-alive connection until `stop` is set or a
/// bound is reached. Returns the number sent and a description of each push
/// whose response was not the mock's.
fn send_pushes_until(addr: SocketAddr, stop: &AtomicBool, key: &str) -> (usize, Vec<String>) {
    let deadline = Instant::now() + RACE_TIME_LIMIT;
    let head = format!(
        "POST {PUSH_PATH} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {key}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut failures = Vec::new();
    let mut sent = 0;
    let mut conn = Conn::connect(addr);
    while sent < RACE_REQUESTS_PER_THREAD && Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        sent += 1;
        if let Err(err) = conn.try_send(head.as_bytes()) {
            failures.push(format!("request {sent}: send failed: {err}"));
            conn = Conn::connect(addr);
            continue;
        }
        match conn.try_read_response() {
            Ok(response) => {
                if response.status != 404 || response.text() != MOCK_PUSH_BODY {
                    failures.push(format!(
                        "request {sent}: status {} body {:?}",
                        response.status,
                        response.text()
                    ));
                }
                let closing = response
                    .header("connection")
                    .is_some_and(|value| value.eq_ignore_ascii_case("close"));
                if closing {
                    conn = Conn::connect(addr);
                }
            }
            Err(err) => {
                failures.push(format!("request {sent}: no response: {err}"));
                conn = Conn::connect(addr);
            }
        }
    }
    (sent, failures)
}

#[test]
fn refresh_during_requests_fails_none() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let with_extra = base.clone().client(EXTRA_CLIENT_ID, EXTRA_KEY).build();
    let without_extra = base.build();
    let gateway = Gateway::start(&without_extra);
    let key = api_key(CLIENT_ID, KEY);
    let stop = Arc::new(AtomicBool::new(false));

    let senders: Vec<_> = (0..RACE_THREADS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let key = key.clone();
            let addr = gateway.addr();
            std::thread::spawn(move || send_pushes_until(addr, &stop, &key))
        })
        .collect();

    let mut refresh_failures = Vec::new();
    for round in 0..RACE_REFRESHES {
        let text = if round % 2 == 0 {
            &with_extra
        } else {
            &without_extra
        };
        replace_file(gateway.config_path(), text);
        let response = refresh(&gateway);
        if response.status != 200 {
            refresh_failures.push(format!(
                "refresh {round}: status {} body {:?}",
                response.status,
                response.text()
            ));
        }
    }
    stop.store(true, Ordering::SeqCst);

    let mut sent = 0;
    let mut failures = Vec::new();
    for sender in senders {
        let (count, thread_failures) = sender.join().expect("a request thread panicked");
        sent += count;
        failures.extend(thread_failures);
    }
    assert!(
        refresh_failures.is_empty(),
        "{} of {RACE_REFRESHES} refreshes failed, first: {:?}",
        refresh_failures.len(),
        &refresh_failures[..refresh_failures.len().min(5)]
    );
    assert!(sent > 0, "no request was sent while the refreshes ran");
    assert!(
        failures.is_empty(),
        "{} of {sent} pushes sent during {RACE_REFRESHES} refreshes did not get the mock's response, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn refresh_applies_on_open_connection() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(&base.build());
    let extra_push = format!(
        "POST {PUSH_PATH} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        api_key(EXTRA_CLIENT_ID, EXTRA_KEY)
    );
    let mut conn = Conn::connect(gateway.addr());

    // Each request on the kept-alive connection is checked against the
    // clients loaded at its own moment.
    let steps = [
        ("before the client is added", None, 403),
        (
            "after the client is added",
            Some(base.clone().client(EXTRA_CLIENT_ID, EXTRA_KEY)),
            404,
        ),
        ("after the client is removed", Some(base), 403),
    ];
    for (step, config, expected_status) in steps {
        if let Some(config) = config {
            gateway.rewrite_config(&config.build());
            let refreshed = refresh(&gateway);
            assert_eq!(
                refreshed.status,
                200,
                "{step}: refresh body {:?}",
                refreshed.text()
            );
        }
        conn.send(extra_push.as_bytes());
        let response = conn.read_response();
        assert_eq!(
            response.status,
            expected_status,
            "push by {EXTRA_CLIENT_ID} {step} on one connection: body {:?}",
            response.text()
        );
    }
}

#[test]
fn hide_credentials_applies_on_refresh() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(&base.build());
    let key = api_key(CLIENT_ID, KEY);

    mock.clear();
    push(&gateway, &key);
    let before = mock.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(before[0].header("x-api-key"), Some(key.as_str()));

    gateway.rewrite_config(&base.set("hideCredentials", "true").build());
    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert_eq!(response.json(), json!(["gateway"]));

    mock.clear();
    let after_push = push(&gateway, &key);
    assert_eq!(after_push.status, 404, "body {:?}", after_push.text());
    let after: Vec<ReceivedRequest> = mock
        .wait_for_requests(1, Duration::from_secs(5))
        .into_iter()
        .filter(|received| received.target == PUSH_PATH)
        .collect();
    assert_eq!(after.len(), 1, "pushes the mock recorded after the refresh");
    assert_eq!(
        after[0].header("x-api-key"),
        None,
        "hideCredentials: true must apply to the next request after a refresh"
    );
}

#[test]
fn listen_change_waits_for_restart() {
    let mock = MockBackend::start();
    let base = settings(&mock).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(&base.build());
    let new_addr = free_addr();

    gateway.rewrite_config(&base.set_string("listen", &new_addr.to_string()).build());
    let response = refresh(&gateway);
    assert_eq!(response.status, 200, "body {:?}", response.text());

    let health = request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(health.status, 200, "the old address must keep serving");
    assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
    assert!(
        TcpStream::connect_timeout(&new_addr, Duration::from_secs(2)).is_err(),
        "the new listen address {new_addr} must wait for a restart"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let log = gateway.log_text();
        let found = log
            .lines()
            .any(|line| line.contains("gateway.listen") && line.contains("restart"));
        if found || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logged,
        "the log has no line naming gateway.listen as waiting for a restart; last lines:\n{}",
        gateway.redacted_log_tail(20)
    );
}

#[test]
fn admin_from_outside_allow_list_forbidden() {
    let mock = MockBackend::start();
    let base = settings(&mock)
        .client(CLIENT_ID, KEY)
        .set("adminAllowFrom", "['10.0.0.0/8']");
    let gateway = Gateway::start(&base.build());

    // A changed file shows whether any of the requests below reloaded it.
    gateway.rewrite_config(&base.client(EXTRA_CLIENT_ID, EXTRA_KEY).build());
    let generate_path = format!("{GENERATE_PATH}/newcomer");
    let cases = [
        ("POST", REFRESH_PATH),
        ("GET", REFRESH_PATH),
        ("PUT", REFRESH_PATH),
        ("GET", generate_path.as_str()),
        ("POST", generate_path.as_str()),
        ("GET", GENERATE_PATH),
    ];
    for (method, path) in cases {
        let plain = request(gateway.addr(), method, path, &[], b"");
        assert_error_shape(&plain, 403, "Forbidden", &format!("{method} {path}"));
        let forwarded = request(
            gateway.addr(),
            method,
            path,
            &[("X-Forwarded-For", "127.0.0.1")],
            b"",
        );
        assert_error_shape(
            &forwarded,
            403,
            "Forbidden",
            &format!("{method} {path} with X-Forwarded-For: 127.0.0.1"),
        );
    }

    let text = metrics_text(gateway.metrics_addr());
    for result in ["ok", "error"] {
        let reloads = metric_value(
            &text,
            "keygate_config_reloads_total",
            &[("trigger", "refresh"), ("result", result)],
        );
        assert!(
            reloads.unwrap_or(0.0) == 0.0,
            "refresh reloads with result {result}: {reloads:?}, expected none"
        );
    }
    let extra = push(&gateway, &api_key(EXTRA_CLIENT_ID, EXTRA_KEY));
    assert_eq!(
        extra.status, 403,
        "a client only in the unloaded file must be rejected"
    );
    assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
    assert!(
        mock.requests()
            .iter()
            .all(|received| !received.path().ends_with("/refresh")),
        "a forbidden refresh must not be forwarded to the backend"
    );

    let health = request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(health.status, 200, "health is open to anyone");
}

#[test]
fn mapped_ipv4_peer_read_as_ipv4() {
    // A listener on an IPv4-mapped IPv6 address gets IPv4 peers as
    // ::ffff:127.0.0.1, which adminAllowFrom must match as 127.0.0.1.
    let mock = MockBackend::start();
    let listen = format!("[::ffff:127.0.0.1]:{}", free_port());
    let base = settings(&mock)
        .client(CLIENT_ID, KEY)
        .set_string("listen", &listen);
    let gateway = Gateway::start(
        &base
            .clone()
            .set("adminAllowFrom", "['127.0.0.1/32']")
            .build(),
    );

    let allowed = refresh(&gateway);
    assert_eq!(
        allowed.status,
        200,
        "refresh from 127.0.0.1 through {listen} with adminAllowFrom 127.0.0.1/32: body {:?}",
        allowed.text()
    );
    mock.clear();
    push(&gateway, &api_key(CLIENT_ID, KEY));
    let pushes: Vec<ReceivedRequest> = mock
        .wait_for_requests(1, Duration::from_secs(5))
        .into_iter()
        .filter(|received| received.target == PUSH_PATH)
        .collect();
    assert_eq!(pushes.len(), 1, "pushes the mock recorded");
    assert_eq!(
        pushes[0].header("x-forwarded-for"),
        Some("127.0.0.1"),
        "X-Forwarded-For must carry the peer as IPv4"
    );

    gateway.rewrite_config(&base.set("adminAllowFrom", "['::1/128']").build());
    assert_eq!(refresh(&gateway).status, 200, "refresh to ::1/128 only");
    let refused = refresh(&gateway);
    assert_error_shape(
        &refused,
        403,
        "Forbidden",
        "refresh from 127.0.0.1 with adminAllowFrom ::1/128",
    );
}

#[test]
fn health_open_without_key() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let headers: [&[(&str, &str)]; 2] = [&[], &[("x-api-key", "not-a-valid-key")]];
    for sent in headers {
        let response = request(gateway.addr(), "GET", "/nps/health", sent, b"");
        assert_eq!(
            response.status,
            200,
            "headers {sent:?}: body {:?}",
            response.text()
        );
        assert_eq!(response.json(), json!({"status": "UP"}), "headers {sent:?}");
    }
    assert!(
        mock.requests().is_empty(),
        "health must be served by keygate, not forwarded"
    );
}

#[test]
fn readiness_follows_backend() {
    let mock = MockBackend::start();
    let gateway = Gateway::start(&settings(&mock).client(CLIENT_ID, KEY).build());

    let up = request(gateway.addr(), "GET", "/nps/health/readiness", &[], b"");
    assert_eq!(
        up.status,
        200,
        "readiness with the backend up: {:?}",
        up.text()
    );
    assert_eq!(up.json(), json!({"status": "UP"}));

    mock.stop();
    let down = request(gateway.addr(), "GET", "/nps/health/readiness", &[], b"");
    assert_eq!(
        down.status,
        503,
        "readiness with the backend stopped: {:?}",
        down.text()
    );
    assert_eq!(down.json(), json!({"status": "DOWN"}));

    let health = request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(
        health.status, 200,
        "liveness does not depend on the backend"
    );
}

#[test]
fn metrics_list_every_family() {
    let mock = MockBackend::start();
    let base = settings(&mock).clients(&[(CLIENT_ID, KEY), (EXTRA_CLIENT_ID, EXTRA_KEY)]);
    let gateway = Gateway::start(&base.build());

    assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
    assert_eq!(push(&gateway, &api_key(CLIENT_ID, WRONG_KEY)).status, 403);
    assert_eq!(refresh(&gateway).status, 200);

    let text = metrics_text(gateway.metrics_addr());
    for family in [
        "keygate_requests_total",
        "keygate_auth_failures_total",
        "keygate_request_duration_seconds",
        "keygate_upstream_errors_total",
        "keygate_config_reloads_total",
        "keygate_config_last_reload_success_timestamp_seconds",
        "keygate_allowed_clients",
    ] {
        let type_line = format!("# TYPE {family} ");
        assert!(
            text.lines().any(|line| line.starts_with(&type_line)),
            "metrics have no {family} family:\n{text}"
        );
    }
    assert_eq!(
        metric_value(&text, "keygate_allowed_clients", &[]),
        Some(2.0),
        "keygate_allowed_clients must equal the configured client count"
    );
    assert_eq!(
        metric_value(
            &text,
            "keygate_requests_total",
            &[("route", "proxy"), ("status", "404")]
        ),
        Some(1.0),
        "the forwarded push"
    );
    assert_eq!(
        metric_value(
            &text,
            "keygate_auth_failures_total",
            &[("reason", "bad_key")]
        ),
        Some(1.0),
        "the push with a wrong key"
    );
    let last_reload = metric_value(
        &text,
        "keygate_config_last_reload_success_timestamp_seconds",
        &[],
    )
    .unwrap_or(0.0);
    assert!(
        last_reload > 1.6e9,
        "last reload timestamp is {last_reload}"
    );

    gateway.rewrite_config(
        &base
            .client("third", "third-client-key-0123456789abcdef")
            .build(),
    );
    assert_eq!(refresh(&gateway).status, 200);
    let text = metrics_text(gateway.metrics_addr());
    assert_eq!(
        metric_value(&text, "keygate_allowed_clients", &[]),
        Some(3.0),
        "keygate_allowed_clients after a refresh added a client"
    );
}

#[test]
fn per_client_metrics_use_configured_ids() {
    let mock = MockBackend::start();
    let config = settings(&mock)
        .client(CLIENT_ID, KEY)
        .set("metrics.perClient", "true");
    let gateway = Gateway::start(&config.build());

    for _ in 0..3 {
        assert_push_forwarded(&gateway, &mock, CLIENT_ID, KEY);
    }
    let unknown_client = "unconfigured-client-id";
    let unknown = push(&gateway, &api_key(unknown_client, KEY));
    assert_eq!(unknown.status, 403);

    let text = metrics_text(gateway.metrics_addr());
    assert_eq!(
        metric_value(
            &text,
            "keygate_client_requests_total",
            &[("client_id", CLIENT_ID)]
        ),
        Some(3.0),
        "keygate_client_requests_total for {CLIENT_ID}"
    );
    assert!(
        !text.contains(unknown_client),
        "metrics contain the unknown clientId {unknown_client} sent in a request"
    );
}
