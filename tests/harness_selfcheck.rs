//! Checks of the integration-test harness against the mock push backend and
//! a canned TCP server. None of them runs keygate.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use common::{api_key, free_port, request, ConfigBuilder, Conn, MockBackend, ReceivedRequest};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Body bytes that are not all the same, so that a dropped or reordered
/// byte changes the hash.
fn patterned_body(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn mock_records_post_body_exactly() {
    let mock = MockBackend::start();
    let body = patterned_body(100_000);
    let target = "/nps/rest/push/abc%20def?x=1&y=%2F";

    let response = request(
        mock.addr(),
        "POST",
        target,
        &[
            ("X-Test", "alpha"),
            ("Content-Type", "application/octet-stream"),
        ],
        &body,
    );

    assert_eq!(response.status, 404);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("Content-Length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(
        response.text(),
        r#"{"status":404,"error":"Not Found","message":"pushId 'abc%20def' is not known"}"#
    );

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.target, target);
    assert_eq!(recorded.path(), "/nps/rest/push/abc%20def");
    assert_eq!(recorded.body_length, 100_000);
    assert_eq!(recorded.body_sha256, sha256_hex(&body));
    assert!(recorded.body_complete);
    assert_eq!(recorded.header("x-test"), Some("alpha"));
    assert_eq!(recorded.header("content-length"), Some("100000"));
    assert_eq!(
        recorded.header("content-type"),
        Some("application/octet-stream")
    );
}

#[test]
fn mock_records_chunked_body() {
    let mock = MockBackend::start();
    let mut conn = Conn::connect(mock.addr());

    // The body arrives in several writes, so the mock must wait for all
    // chunks before it records the request.
    let parts: [&[u8]; 4] = [
        b"POST /nps/rest/push/p1 HTTP/1.1\r\nHost: mock\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n1;ext=1\r\n \r\n",
        b"6\r\nworld!\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    ];
    for part in parts {
        conn.send(part);
        std::thread::sleep(Duration::from_millis(30));
    }
    let response = conn.read_response();

    assert_eq!(response.status, 404);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body_length, 12);
    assert_eq!(requests[0].body_sha256, sha256_hex(b"hello world!"));
    assert!(requests[0].body_complete);
    assert_eq!(requests[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(requests[0].header("content-length"), None);
}

#[test]
fn mock_keeps_connection_alive() {
    let mock = MockBackend::start();
    let mut conn = Conn::connect(mock.addr());

    // Two pipelined requests in one write.
    conn.send(
        b"POST /nps/rest/refresh HTTP/1.1\r\nHost: mock\r\nContent-Length: 0\r\n\r\n\
          GET /nps/health HTTP/1.1\r\nHost: mock\r\n\r\n",
    );
    let refresh = conn.read_response();
    let health = conn.read_response();

    assert_eq!(refresh.status, 200);
    assert_eq!(refresh.body, b"[]");
    assert_eq!(refresh.header("content-length"), Some("2"));
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({ "status": "UP" }));
    assert!(!conn.is_closed_by_peer());

    conn.send(b"GET /nps/health HTTP/1.1\r\nHost: mock\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);

    let methods: Vec<String> = mock.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["POST", "GET", "GET"]);
}

#[test]
fn mock_routes_and_not_found_messages() {
    let mock = MockBackend::start();
    let cases = [
        (
            "GET",
            "/nps/rest/push/x",
            404,
            "path '/nps/rest/push/x' is not known",
        ),
        (
            "POST",
            "/nps/rest/push/",
            404,
            "path '/nps/rest/push/' is not known",
        ),
        ("POST", "/other?q=1", 404, "path '/other' is not known"),
        ("POST", "/push/id-1", 404, "pushId 'id-1' is not known"),
    ];
    for (method, path, status, message) in cases {
        let response = request(mock.addr(), method, path, &[], b"");
        assert_eq!(response.status, status, "{method} {path}");
        assert_eq!(response.json()["message"], message, "{method} {path}");
        assert_eq!(response.json()["status"], status, "{method} {path}");
    }

    let refresh = request(mock.addr(), "POST", "/any/prefix/refresh", &[], b"{}");
    assert_eq!(refresh.status, 200);
    assert_eq!(refresh.json(), serde_json::json!([]));

    let health = request(mock.addr(), "GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "UP");

    assert_eq!(mock.requests().len(), cases.len() + 2);
}

#[test]
fn mock_health_switch_sets_health_status() {
    let mock = MockBackend::start();

    let switched = request(mock.addr(), "PUT", "/_mock/health/503", &[], b"");
    assert_eq!(switched.status, 200);
    let down = request(mock.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["status"], "DOWN");
    let push = request(mock.addr(), "POST", "/nps/rest/push/p", &[], b"");
    assert_eq!(push.status, 404, "pushes are served while health fails");

    mock.set_health_status(200);
    let up = request(mock.addr(), "GET", "/nps/health", &[], b"");
    assert_eq!(up.status, 200);
    assert_eq!(up.json()["status"], "UP");

    for (method, path, status) in [
        ("GET", "/_mock/health/503", 405),
        ("PUT", "/_mock/health/99", 400),
        ("PUT", "/_mock/health/up", 400),
    ] {
        let response = request(mock.addr(), method, path, &[], b"");
        assert_eq!(response.status, status, "{method} {path}");
    }
    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(
        paths,
        ["/nps/health", "/nps/rest/push/p", "/nps/health"],
        "switch requests are not recorded"
    );
}

#[test]
fn mock_delay_header_delays_response() {
    let mock = MockBackend::start();
    let addr = mock.addr();

    let started = Instant::now();
    let client = std::thread::spawn(move || {
        let headers = [("x-mock-delay-ms", "1500")];
        request(addr, "POST", "/nps/rest/push/slow", &headers, b"abc")
    });

    // The request is recorded when its body has arrived, before the delay.
    let recorded = mock.wait_for_requests(1, Duration::from_millis(1000));
    assert_eq!(recorded[0].body_length, 3);
    assert!(started.elapsed() < Duration::from_millis(1500));

    let response = client.join().expect("client thread panicked");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "response came after {:?}",
        started.elapsed()
    );
    assert_eq!(response.status, 404);

    let invalid = request(
        addr,
        "GET",
        "/nps/health",
        &[("x-mock-delay-ms", "soon")],
        b"",
    );
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.json()["message"],
        "x-mock-delay-ms must be a whole number of milliseconds, got 'soon'"
    );
}

#[test]
fn mock_status_header_overrides_response() {
    let mock = MockBackend::start();

    let unavailable = request(
        mock.addr(),
        "POST",
        "/nps/rest/push/a",
        &[("x-mock-status", "503")],
        b"",
    );
    assert_eq!(unavailable.status, 503);
    assert_eq!(
        unavailable.json(),
        serde_json::json!({
            "status": 503,
            "error": "Service Unavailable",
            "message": "status set by x-mock-status",
        })
    );

    let no_content = request(
        mock.addr(),
        "GET",
        "/nps/health",
        &[("x-mock-status", "204")],
        b"",
    );
    assert_eq!(no_content.status, 204);
    assert!(no_content.body.is_empty());
    assert_eq!(no_content.header("content-length"), None);

    for invalid in ["99", "600", "abc"] {
        let response = request(
            mock.addr(),
            "GET",
            "/nps/health",
            &[("x-mock-status", invalid)],
            b"",
        );
        assert_eq!(response.status, 400, "x-mock-status: {invalid}");
    }

    // Both controls together: the delay applies before the forced status.
    let started = Instant::now();
    let both = request(
        mock.addr(),
        "GET",
        "/nps/health",
        &[("x-mock-status", "502"), ("x-mock-delay-ms", "200")],
        b"",
    );
    assert_eq!(both.status, 502);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn mock_report_routes_list_and_clear() {
    let mock = MockBackend::start();
    request(
        mock.addr(),
        "POST",
        "/nps/rest/push/one",
        &[("X-A", "1")],
        b"first",
    );
    request(mock.addr(), "POST", "/nps/rest/refresh", &[], b"");

    let report = request(mock.addr(), "GET", "/_mock/requests", &[], b"");
    assert_eq!(report.status, 200);
    assert!(report
        .text()
        .starts_with(r#"[{"method":"POST","target":"/nps/rest/push/one","headers":[["#));
    let listed: Vec<ReceivedRequest> =
        serde_json::from_slice(&report.body).expect("report is a JSON list of requests");
    assert_eq!(listed, mock.requests());
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].body_sha256, sha256_hex(b"first"));

    let not_allowed = request(mock.addr(), "PUT", "/_mock/requests", &[], b"");
    assert_eq!(not_allowed.status, 405);
    assert_eq!(not_allowed.header("allow"), Some("GET, DELETE"));

    let cleared = request(mock.addr(), "DELETE", "/_mock/requests", &[], b"");
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.json(), serde_json::json!({ "cleared": 2 }));
    assert!(mock.requests().is_empty());

    request(mock.addr(), "GET", "/nps/health", &[], b"");
    mock.clear();
    assert!(mock.requests().is_empty());
}

#[test]
fn mock_stop_closes_listener_and_connections() {
    let mock = MockBackend::start();
    let addr = mock.addr();
    let mut conn = Conn::connect(addr);
    conn.send(b"GET /nps/health HTTP/1.1\r\nHost: mock\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);

    mock.stop();

    assert!(conn.is_closed_by_peer());
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect_err("connecting to a stopped mock must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn free_port_never_repeats() {
    let mock = MockBackend::start();
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let port = free_port();
        assert!(seen.insert(port), "free_port returned {port} twice");
        assert_ne!(port, mock.addr().port());
    }
    assert_eq!(seen.len(), 300);

    let port = free_port();
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("a port from free_port can be bound");
}

#[test]
fn api_key_encodes_id_and_key() {
    assert_eq!(api_key("karolin", "abc"), "a2Fyb2xpbjphYmM=");
    assert_eq!(
        api_key("id:with", "colons:kéy"),
        "aWQ6d2l0aDpjb2xvbnM6a8OpeQ=="
    );
    let decoded = STANDARD
        .decode(api_key("a", "b"))
        .expect("api_key is valid base64");
    assert_eq!(decoded, b"a:b");
}

#[test]
fn config_builder_yaml_carries_settings_and_clients() {
    let upstream: SocketAddr = "127.0.0.1:20280".parse().unwrap();
    let clients = [
        (
            "karolin",
            "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936",
        ),
        (
            "odd: id # not a comment",
            "'single' \"double\" \\ backslash",
        ),
        ("yes", "null"),
        ("  spaced  ", "multi\nline\n\nkey"),
        ("ünïcödé", "0123"),
        ("-dash", "~"),
        ("[list]", "{map: 1}"),
    ];
    let builder = ConfigBuilder::new(upstream).clients(&clients);
    let text = builder.build();
    let config: Value = serde_yaml::from_str(&text).expect("built configuration is valid YAML");
    let gateway = &config["gateway"];

    assert_eq!(gateway["upstream"].as_str(), Some("http://127.0.0.1:20280"));
    let listen: SocketAddr = gateway["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(listen, builder.listen_addr());
    assert!(listen.ip().is_loopback());
    let metrics: SocketAddr = gateway["metrics"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(metrics, builder.metrics_addr());
    assert!(metrics.ip().is_loopback());
    assert_ne!(listen.port(), metrics.port());
    assert_eq!(gateway["threads"].as_u64(), Some(1));
    assert_eq!(gateway["log"]["level"].as_str(), Some("trace"));
    assert_eq!(gateway["contextPath"].as_str(), Some("/nps"));
    assert_eq!(gateway["uriBase"].as_str(), Some("/rest"));
    assert_eq!(gateway["timeouts"]["connect"].as_str(), Some("1s"));
    assert_eq!(gateway["limits"]["maxBodySize"].as_str(), Some("10MiB"));
    let admin: Vec<&str> = gateway["adminAllowFrom"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|net| net.as_str().unwrap())
        .collect();
    assert_eq!(admin, ["127.0.0.1/32", "::1/128"]);

    let parsed_clients: Vec<(&str, &str)> = config["allowedClients"]
        .as_sequence()
        .expect("allowedClients is a list")
        .iter()
        .map(|client| {
            (
                client["clientId"].as_str().expect("clientId is a string"),
                client["key"].as_str().expect("key is a string"),
            )
        })
        .collect();
    assert_eq!(parsed_clients, clients);
}

#[test]
fn config_builder_overrides_gateway_settings() {
    let upstream: SocketAddr = "127.0.0.1:20280".parse().unwrap();
    let builder = ConfigBuilder::new(upstream)
        .set("timeouts.read", "2s")
        .set("listen", "['127.0.0.1:20300', '[::1]:20301']")
        .set_string("clientIdHeader", "X-Who: #1")
        .set("newSection.inner", "5")
        .remove("hideCredentials")
        .remove("log.access")
        .remove("no.such.setting")
        .gateway_line("extraSetting: 7")
        .top_level("spring:\n  application:\n    name: nps");
    let config: Value =
        serde_yaml::from_str(&builder.build()).expect("built configuration is valid YAML");
    let gateway = &config["gateway"];

    assert_eq!(gateway["timeouts"]["read"].as_str(), Some("2s"));
    assert_eq!(gateway["timeouts"]["connect"].as_str(), Some("1s"));
    assert_eq!(builder.listen_addr(), "127.0.0.1:20300".parse().unwrap());
    assert_eq!(gateway["listen"][1].as_str(), Some("[::1]:20301"));
    assert_eq!(gateway["clientIdHeader"].as_str(), Some("X-Who: #1"));
    assert_eq!(gateway["newSection"]["inner"].as_u64(), Some(5));
    assert!(gateway.get("hideCredentials").is_none());
    assert!(gateway["log"].get("access").is_none());
    assert_eq!(gateway["log"]["level"].as_str(), Some("trace"));
    assert_eq!(gateway["extraSetting"].as_u64(), Some(7));
    assert_eq!(
        config["spring"]["application"]["name"].as_str(),
        Some("nps")
    );
    assert_eq!(
        config["allowedClients"].as_sequence().map(Vec::len),
        Some(0)
    );
}

/// Serves one connection on a new loopback port: reads one request head and
/// writes `response_bytes`, then closes.
fn serve_canned(response_bytes: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream.write_all(response_bytes).unwrap();
    });
    addr
}

#[test]
fn conn_reads_chunked_length_and_close_delimited() {
    let addr = serve_canned(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          4;name=value\r\nWiki\r\n7\r\npedia i\r\n0\r\nX-Checksum: abc\r\n\r\n\
          HTTP/1.1 201 Created\r\nset-cookie: a=1\r\nContent-Length: 5\r\nSet-Cookie: b=2\r\n\r\nhello\
          HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\ntail bytes",
    );
    let mut conn = Conn::connect(addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: canned\r\n\r\n");

    let chunked = conn.read_response();
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.body, b"Wikipedia i");
    assert_eq!(
        chunked.trailers,
        [("X-Checksum".to_owned(), "abc".to_owned())]
    );

    let sized = conn.read_response();
    assert_eq!(sized.status, 201);
    assert_eq!(sized.reason, "Created");
    assert_eq!(sized.body, b"hello");
    assert_eq!(sized.headers_named("Set-Cookie"), ["a=1", "b=2"]);
    assert_eq!(sized.header("SET-COOKIE"), Some("a=1"));

    let close_delimited = conn.read_response();
    assert_eq!(close_delimited.status, 502);
    assert_eq!(close_delimited.body, b"tail bytes");
    assert!(conn.is_closed_by_peer());
}

#[test]
fn conn_reports_truncated_body() {
    let addr = serve_canned(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    let mut conn = Conn::connect(addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: canned\r\n\r\n");

    let err = conn
        .try_read_response()
        .expect_err("a body cut short is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}
