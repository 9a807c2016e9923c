//! What keygate sends to the backend for a request that passed the key
//! check, what it returns to the client, and how it responds when the
//! backend is down or slow. Each test runs the real gateway in front of the
//! mock push backend, or in front of a small canned HTTP/1.1 server where the
//! mock cannot produce the needed response or count connections.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use common::{
    api_key, free_addr, metrics_text, request, ConfigBuilder, Conn, Gateway, MockBackend,
    ReceivedRequest, Response,
};

const CLIENT_ID: &str = "karolin";
const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
const PUSH_PATH: &str = "/nps/rest/push/p1";

/// Body that the mock returns for a push to `PUSH_PATH`, because it stores
/// no pushIds.
const MOCK_PUSH_BODY: &str =
    r#"{"status":404,"error":"Not Found","message":"pushId 'p1' is not known"}"#;

/// Maximum number of connections that a [`CannedBackend`] accepts, and of
/// requests that it serves on one connection.
const CANNED_MAX_CONNECTIONS: usize = 100;
const CANNED_MAX_REQUESTS_PER_CONNECTION: usize = 100;

/// Read timeout of a [`CannedBackend`] connection, after which it closes.
const CANNED_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum size of a request head that a [`CannedBackend`] reads.
const CANNED_MAX_HEAD_BYTES: usize = 64 * 1024;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Body bytes that are not all the same, so that a dropped or reordered
/// byte changes the hash.
fn patterned_body(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 7 % 251) as u8).collect()
}

fn good_api_key() -> String {
    api_key(CLIENT_ID, KEY)
}

/// Starts a gateway with one client in front of `upstream`, with settings
/// changed by `configure`.
fn start_gateway(
    upstream: SocketAddr,
    configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Gateway {
    let builder = configure(ConfigBuilder::new(upstream).client(CLIENT_ID, KEY));
    Gateway::start(&builder.build())
}

/// Returns the values of every header named `name` that the backend received.
fn received_values<'a>(received: &'a ReceivedRequest, name: &str) -> Vec<&'a str> {
    received
        .headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// Returns the only request that the mock recorded. Panics when it recorded
/// none or several.
fn only_request(mock: &MockBackend) -> ReceivedRequest {
    let requests = mock.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(
        requests.len(),
        1,
        "the mock recorded {} requests, expected exactly one: {:?}",
        requests.len(),
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect::<Vec<_>>()
    );
    requests.into_iter().next().expect("length checked above")
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

/// Returns `keygate_upstream_errors_total{kind}`, 0 when the series is absent.
fn upstream_errors(gateway: &Gateway, kind: &str) -> f64 {
    let text = metrics_text(gateway.metrics_addr());
    metric_value(&text, "keygate_upstream_errors_total", &[("kind", kind)]).unwrap_or(0.0)
}

/// HTTP/1.1 server on a loopback listener that returns the same bytes to
/// every request, keeps connections open, and counts connections and
/// requests. It reads request bodies framed by `Content-Length` only.
struct CannedBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl CannedBackend {
    /// Serves `response` on a new port of 127.0.0.1.
    fn start(response: &'static [u8]) -> CannedBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("failed to bind the canned backend to 127.0.0.1:0");
        Self::serve(listener, response)
    }

    /// Serves `response` on `listener` from a new thread, which ends after
    /// [`CANNED_MAX_CONNECTIONS`] connections.
    fn serve(listener: TcpListener, response: &'static [u8]) -> CannedBackend {
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let served = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(CANNED_MAX_CONNECTIONS) {
                let Ok(stream) = stream else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let served = Arc::clone(&served);
                std::thread::spawn(move || serve_canned_connection(stream, response, &served));
            }
        });
        CannedBackend {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves requests on one connection until the peer closes it, a read
/// times out or fails, or [`CANNED_MAX_REQUESTS_PER_CONNECTION`] were served.
fn serve_canned_connection(mut stream: TcpStream, response: &[u8], served: &AtomicUsize) {
    if stream.set_read_timeout(Some(CANNED_READ_TIMEOUT)).is_err() {
        return;
    }
    let mut buffer = Vec::new();
    for _ in 0..CANNED_MAX_REQUESTS_PER_CONNECTION {
        let Some(head_end) = read_until_head_end(&mut stream, &mut buffer) else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let body_length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut chunk = [0u8; 16 * 1024];
        while buffer.len() < head_end + body_length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
        }
        buffer.drain(..head_end + body_length);
        served.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(response).is_err() {
            return;
        }
    }
}

/// Reads into `buffer` until it contains a whole request head and returns the
/// head's length including the blank line, or `None` when the connection
/// ends first.
fn read_until_head_end(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            return Some(end + 4);
        }
        if buffer.len() > CANNED_MAX_HEAD_BYTES {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
        }
    }
}

#[test]
fn forwarded_request_body_and_headers() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let body = patterned_body(200_000);
    let key = good_api_key();

    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", &key),
            ("Content-Type", "application/json"),
            ("Connection", "keep-alive, x-foo"),
            ("x-foo", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Client-Id", "someone-else"),
            ("x_client_id", "other"),
            ("X-Client_Id", "third"),
            ("X-Custom", "kept as sent"),
            ("Connection", "x-bar"),
            ("x-bar", "2"),
            ("Proxy-Connection", "keep-alive"),
        ],
        &body,
    );
    assert_eq!(response.status, 404, "body {:?}", response.text());

    let received = only_request(&mock);
    assert_eq!(received.method, "POST");
    assert_eq!(received.target, PUSH_PATH);
    assert!(received.body_complete, "the backend received a cut body");
    assert_eq!(received.body_length, body.len() as u64, "body length");
    assert_eq!(received.body_sha256, sha256_hex(&body), "body sha256");
    assert_eq!(
        received_values(&received, "x-client-id"),
        [CLIENT_ID],
        "the backend must see exactly one x-client-id, set by keygate"
    );
    for spelling in ["x_client_id", "x-client_id"] {
        assert_eq!(
            received_values(&received, spelling),
            Vec::<&str>::new(),
            "a client-sent {spelling} must not reach the backend"
        );
    }
    let hop_headers = [
        "connection",
        "keep-alive",
        "te",
        "x-foo",
        "x-bar",
        "proxy-connection",
    ];
    for hop_header in hop_headers {
        assert_eq!(
            received_values(&received, hop_header),
            Vec::<&str>::new(),
            "hop-by-hop header {hop_header} must not reach the backend"
        );
    }
    assert_eq!(
        received_values(&received, "x-api-key"),
        [key.as_str()],
        "x-api-key must reach the backend unchanged by default"
    );
    assert_eq!(received.header("x-custom"), Some("kept as sent"));
    assert_eq!(received.header("content-type"), Some("application/json"));
}

#[test]
fn hide_credentials_removes_only_api_key() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| {
        builder.set("hideCredentials", "true")
    });
    let key = good_api_key();

    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", &key),
            ("Content-Type", "application/json"),
            ("X-Custom", "kept as sent"),
            ("Authorization", "Bearer not-checked-by-keygate"),
            ("User-Agent", "keygate-test/1"),
        ],
        br#"{"title":"t","body":"b"}"#,
    );
    assert_eq!(response.status, 404, "body {:?}", response.text());

    let received = only_request(&mock);
    assert_eq!(
        received_values(&received, "x-api-key"),
        Vec::<&str>::new(),
        "hideCredentials: true must remove x-api-key"
    );
    assert_eq!(received.header("x-custom"), Some("kept as sent"));
    assert_eq!(
        received.header("authorization"),
        Some("Bearer not-checked-by-keygate")
    );
    assert_eq!(received.header("user-agent"), Some("keygate-test/1"));
    assert_eq!(received.header("content-type"), Some("application/json"));
    assert_eq!(received_values(&received, "x-client-id"), [CLIENT_ID]);
    assert_eq!(
        received.body_sha256,
        sha256_hex(br#"{"title":"t","body":"b"}"#)
    );
}

#[test]
fn method_and_target_forwarded_unchanged() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();
    let cases = [
        ("PATCH", "/nps/rest/push/p1?a=1&b=%2F&c"),
        (
            "POST",
            "/nps/rest/push/abc%20def?x-api-key=query-is-not-a-key",
        ),
        ("GET", "/nps/rest/push/p1?q=%E2%9C%93&&empty=&plus=a+b"),
        ("DELETE", "/nps/rest/push/P-1_~x"),
        ("PUT", "/nps/rest/push/p1?a=%41"),
    ];

    for (method, target) in cases {
        mock.clear();
        let response = request(gateway.addr(), method, target, &[("x-api-key", &key)], b"");
        assert_eq!(
            response.status,
            404,
            "{method} {target}: body {:?}",
            response.text()
        );
        let received = only_request(&mock);
        assert_eq!(received.method, method, "method of {method} {target}");
        assert_eq!(received.target, target, "target of {method} {target}");
    }
}

#[test]
fn forwarded_for_appended_and_proto_set() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", &key),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    );
    let appended = only_request(&mock);
    assert_eq!(
        received_values(&appended, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"],
        "X-Forwarded-For must get the client's address appended"
    );
    assert_eq!(
        received_values(&appended, "x-forwarded-proto"),
        ["http"],
        "X-Forwarded-Proto must be set by keygate, replacing the client's value"
    );

    mock.clear();
    request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"",
    );
    let fresh = only_request(&mock);
    assert_eq!(received_values(&fresh, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(received_values(&fresh, "x-forwarded-proto"), ["http"]);
}

#[test]
fn forwarded_for_keeps_repeated_fields() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    // Repeated header fields form one comma-separated list (RFC 9110,
    // section 5.3), so every earlier hop must be kept.
    request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", &key),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-For", "198.51.100.2"),
        ],
        b"",
    );
    let repeated = only_request(&mock);
    assert_eq!(
        received_values(&repeated, "x-forwarded-for").join(", "),
        "203.0.113.7, 198.51.100.2, 127.0.0.1",
        "X-Forwarded-For sent as two header fields must keep both earlier hops"
    );
}

#[test]
fn request_id_kept_or_generated() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    let sent_id = "client-chosen-id-42";
    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key), ("X-Request-Id", sent_id)],
        b"",
    );
    let received = only_request(&mock);
    assert_eq!(
        received_values(&received, "x-request-id"),
        [sent_id],
        "a sent request id must reach the backend"
    );
    assert_eq!(
        response.headers_named("x-request-id"),
        [sent_id],
        "the answer must carry the sent request id"
    );

    let mut generated_ids = Vec::new();
    for attempt in 0..2 {
        mock.clear();
        let response = request(
            gateway.addr(),
            "POST",
            PUSH_PATH,
            &[("x-api-key", &key)],
            b"",
        );
        let received = only_request(&mock);
        let upstream_ids = received_values(&received, "x-request-id");
        assert_eq!(
            upstream_ids.len(),
            1,
            "request {attempt} without an id: the backend must get exactly one generated id, got {upstream_ids:?}"
        );
        let generated = upstream_ids[0].to_owned();
        assert!(
            !generated.is_empty(),
            "request {attempt}: the generated request id is empty"
        );
        assert_eq!(
            response.headers_named("x-request-id"),
            [generated.as_str()],
            "request {attempt}: the answer must carry the id sent to the backend"
        );
        generated_ids.push(generated);
    }
    assert_ne!(
        generated_ids[0], generated_ids[1],
        "two requests got the same generated id"
    );
}

#[test]
fn backend_answer_returned_unchanged() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    let push = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"{}",
    );
    assert_eq!(push.status, 404);
    assert_eq!(
        push.text(),
        MOCK_PUSH_BODY,
        "the backend's body must come back unchanged"
    );
    assert_eq!(push.header("content-type"), Some("application/json"));

    let created = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key), ("x-mock-status", "201")],
        b"{}",
    );
    assert_eq!(created.status, 201, "body {:?}", created.text());
    assert_eq!(
        created.text(),
        r#"{"status":201,"error":"Created","message":"status set by x-mock-status"}"#
    );

    let unavailable = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key), ("x-mock-status", "503")],
        b"{}",
    );
    assert_eq!(
        unavailable.status, 503,
        "a backend 503 must be returned as is, not replaced"
    );
    assert_eq!(
        unavailable.text(),
        r#"{"status":503,"error":"Service Unavailable","message":"status set by x-mock-status"}"#
    );
}

#[test]
fn backend_hop_headers_dropped_from_answer() {
    // The mock cannot set response headers, so a canned server sends them.
    let backend = CannedBackend::start(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/plain\r\n\
          Content-Length: 2\r\n\
          Connection: x-backend-hop\r\n\
          x-backend-hop: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          x-kept: yes\r\n\
          \r\n\
          ok",
    );
    let gateway = start_gateway(backend.addr, |builder| builder);
    let key = good_api_key();

    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"",
    );
    assert_eq!(response.status, 200, "body {:?}", response.text());
    assert_eq!(response.body, b"ok");
    assert_eq!(response.header("x-kept"), Some("yes"));
    for hop_header in ["x-backend-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(
            response.header(hop_header),
            None,
            "hop-by-hop header {hop_header} from the backend must not reach the client"
        );
    }
    for connection in response.headers_named("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-backend-hop"),
            "the backend's Connection value reached the client: {connection:?}"
        );
    }
}

#[test]
fn stopped_backend_gives_502() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    let before = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"",
    );
    assert_eq!(before.status, 404, "body {:?}", before.text());

    mock.stop();
    let down = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"",
    );
    assert_error_shape(&down, 502, "Bad Gateway", "push after the backend stopped");

    let health = request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(
        health.status,
        200,
        "health after a 502: {:?}",
        health.text()
    );
}

#[test]
fn refused_backend_connection_gives_502() {
    let backend_addr = free_addr();
    let gateway = start_gateway(backend_addr, |builder| builder);
    let key = good_api_key();
    let connect_errors_before = upstream_errors(&gateway, "connect");

    for attempt in 0..2 {
        let response = request(
            gateway.addr(),
            "POST",
            PUSH_PATH,
            &[("x-api-key", &key)],
            b"{}",
        );
        assert_error_shape(
            &response,
            502,
            "Bad Gateway",
            &format!("push {attempt} with nothing listening on {backend_addr}"),
        );
    }
    assert_eq!(
        upstream_errors(&gateway, "connect"),
        connect_errors_before + 2.0,
        "keygate_upstream_errors_total{{kind=\"connect\"}} must count both refused connections"
    );

    let health = request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(
        health.status,
        200,
        "health after a 502: {:?}",
        health.text()
    );

    let listener = TcpListener::bind(backend_addr)
        .unwrap_or_else(|err| panic!("failed to bind {backend_addr} for the late backend: {err}"));
    let backend = CannedBackend::serve(listener, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"{}",
    );
    assert_eq!(
        response.status,
        200,
        "push after the backend started: body {:?}",
        response.text()
    );
    assert_eq!(response.body, b"ok");
    assert_eq!(backend.requests(), 1);
}

#[test]
fn slow_backend_gives_504() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder.set("timeouts.read", "500ms"));
    let key = good_api_key();
    let timeouts_before = upstream_errors(&gateway, "timeout");

    let response = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key), ("x-mock-delay-ms", "3000")],
        b"{}",
    );
    assert_error_shape(
        &response,
        504,
        "Gateway Timeout",
        "push to a backend that waits 3 s",
    );
    assert_eq!(
        upstream_errors(&gateway, "timeout"),
        timeouts_before + 1.0,
        "keygate_upstream_errors_total{{kind=\"timeout\"}} must count the timeout"
    );

    let fast = request(
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[("x-api-key", &key)],
        b"{}",
    );
    assert_eq!(
        fast.status,
        404,
        "push after a timeout: body {:?}",
        fast.text()
    );
}

#[test]
fn upstream_connections_reused() {
    // The mock does not report connections, so a canned server counts them.
    let backend = CannedBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let gateway = start_gateway(backend.addr, |builder| builder);
    let key = good_api_key();
    let request_count = 20;

    let mut conn = Conn::connect(gateway.addr());
    for index in 0..request_count {
        let head = format!(
            "POST {PUSH_PATH} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {key}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        conn.send(head.as_bytes());
        let response = conn.read_response();
        assert_eq!(
            response.status,
            200,
            "request {index}: body {:?}",
            response.text()
        );
    }

    assert_eq!(
        backend.requests(),
        request_count,
        "requests the backend served"
    );
    let connections = backend.connections();
    assert!(
        connections < request_count,
        "{request_count} sequential requests used {connections} backend connections; \
         pooled connections must be reused"
    );
}

#[test]
fn paths_outside_context_get_404() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    for path in ["/", "/other", "/nps", "/npsx", "/npsx/rest/push/p1"] {
        let response = request(gateway.addr(), "POST", path, &[("x-api-key", &key)], b"{}");
        assert_error_shape(&response, 404, "Not Found", &format!("POST {path}"));
    }
    assert_eq!(
        mock.requests(),
        Vec::<ReceivedRequest>::new(),
        "requests outside the context path must never reach the backend"
    );
}

#[test]
fn paths_hiding_structure_get_400() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    for path in [
        "/nps/rest/../refresh",
        "/nps/%2e%2e/x",
        "/nps/rest%2Fpush",
        "/nps;x/rest/push/p1",
        "/nps/rest/./push/p1",
        "/nps/rest/%5Cpush/p1",
        "/nps/rest/.%2e/refresh",
        "/nps/rest/push/%2E%2E",
        "/nps/rest/push/p1/..",
        "/nps/..;x/refresh",
    ] {
        let response = request(gateway.addr(), "POST", path, &[("x-api-key", &key)], b"{}");
        assert_error_shape(&response, 400, "Bad Request", &format!("POST {path}"));
    }
    assert_eq!(
        mock.requests(),
        Vec::<ReceivedRequest>::new(),
        "paths with dot segments or encoded separators must never reach the backend"
    );
}

#[test]
fn request_without_host_rejected() {
    let mock = MockBackend::start();
    let gateway = start_gateway(mock.addr(), |builder| builder);
    let key = good_api_key();

    let mut conn = Conn::connect(gateway.addr());
    conn.send(format!("GET /nps/rest/push/p1 HTTP/1.1\r\nx-api-key: {key}\r\n\r\n").as_bytes());
    let response = conn.read_response();
    assert_eq!(response.status, 400, "HTTP/1.1 without Host must get 400");
    assert!(
        mock.requests().is_empty(),
        "a request without Host must not be forwarded"
    );
}
