//! Bad keys rejected before the proxy engine on plain HTTP/1 connections.
//! The tests cover the 403 bytes, connections that switch to the engine
//! after a rejection, pipelined requests, heads and bodies that arrive in
//! parts, and the counts and log lines of every rejection.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::metrics::counter;
use common::poll::wait_until;
use common::{api_key, ConfigBuilder, Conn, Gateway, MockBackend};

const KEY: &str = "8512aeb9e4193f046e8ae1435332d4b3fd5109840fd112a4559f0b9740e3167c";
const WRONG_KEY: &str = "0be9e18521b1e3ad4dcdc34cad335d83f0be082b1146184bf3539c6bc7aa2159";
const BODY: &str = r#"{"title":"hello","body":"early refusal tests"}"#;
const FORBIDDEN_BODY: &str =
    "{\"status\":403,\"error\":\"Forbidden\",\"message\":\"Access denied\"}\n";

/// Message of the mock's 404 for pushId p1, which shows the request was forwarded.
const FORWARDED: &str = "pushId 'p1' is not known";

fn start() -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client("karolin", KEY)
        .build();
    let gateway = Gateway::start(&config);
    (mock, gateway)
}

fn push(key: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway\r\nx-api-key: {}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        api_key("karolin", key),
        BODY.len()
    )
    .into_bytes()
}

#[test]
fn rejection_then_good_request() {
    let (mock, gateway) = start();
    let mut conn = Conn::connect(gateway.addr());
    for _ in 0..3 {
        conn.send(&push(WRONG_KEY, ""));
        let refused = conn.read_response();
        assert_eq!(refused.status, 403);
        assert_eq!(refused.text(), FORBIDDEN_BODY);
        assert_eq!(refused.header("connection"), Some("keep-alive"));
        assert!(refused.header("x-request-id").is_some());
    }
    conn.send(&push(KEY, ""));
    let forwarded = conn.read_response();
    assert_eq!(forwarded.status, 404, "{}", forwarded.text());
    assert!(forwarded.text().contains(FORWARDED));
    // The engine serves the connection from here on, refusals included.
    conn.send(&push(WRONG_KEY, ""));
    assert_eq!(conn.read_response().text(), FORBIDDEN_BODY);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn pipelined_rejection_and_good_request() {
    let (mock, gateway) = start();
    let mut conn = Conn::connect(gateway.addr());
    let mut both = push(WRONG_KEY, "");
    both.extend_from_slice(&push(KEY, ""));
    both.extend_from_slice(&push(WRONG_KEY, ""));
    conn.send(&both);
    assert_eq!(conn.read_response().status, 403);
    let forwarded = conn.read_response();
    assert_eq!(forwarded.status, 404);
    assert!(forwarded.text().contains(FORWARDED));
    assert_eq!(conn.read_response().status, 403);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn head_and_body_in_parts() {
    let (mock, gateway) = start();
    let request = push(WRONG_KEY, "");
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;

    // The head in three writes, then the body.
    let mut conn = Conn::connect(gateway.addr());
    conn.send(&request[..10]);
    sleep(Duration::from_millis(50));
    conn.send(&request[10..head_end - 2]);
    sleep(Duration::from_millis(50));
    conn.send(&request[head_end - 2..head_end]);
    sleep(Duration::from_millis(50));
    conn.send(&request[head_end..]);
    let refused = conn.read_response();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), FORBIDDEN_BODY);

    // The next request on the same connection is still read in full.
    conn.send(&push(KEY, ""));
    assert_eq!(conn.read_response().status, 404);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn connection_close_and_http10() {
    let (_mock, gateway) = start();
    let mut conn = Conn::connect(gateway.addr());
    conn.send(&push(WRONG_KEY, "Connection: close\r\n"));
    let refused = conn.read_response();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(conn.is_closed_by_peer());

    let old = format!(
        "POST /nps/rest/push/p1 HTTP/1.0\r\nx-api-key: {}\r\nContent-Length: {}\r\n\r\n{BODY}",
        api_key("karolin", WRONG_KEY),
        BODY.len()
    );
    let mut conn = Conn::connect(gateway.addr());
    conn.send(old.as_bytes());
    let refused = conn.read_response();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(conn.is_closed_by_peer());
}

#[test]
fn client_request_id_kept_and_odd_one_replaced() {
    let (_mock, gateway) = start();
    let mut conn = Conn::connect(gateway.addr());
    conn.send(&push(WRONG_KEY, "X-Request-Id: trace-42\r\n"));
    assert_eq!(
        conn.read_response().header("x-request-id"),
        Some("trace-42")
    );
    conn.send(&push(WRONG_KEY, "X-Request-Id: a\r\nX-Request-Id: b\r\n"));
    let replaced = conn.read_response();
    let id = replaced.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32, "a new id replaces two sent ones: {id}");
}

#[test]
fn rejections_counted_and_logged() {
    let (_mock, gateway) = start();
    let metrics = gateway.metrics_addr();
    let before = counter(
        metrics,
        "keygate_auth_failures_total",
        &[("reason", "bad_key")],
    );
    let mut conn = Conn::connect(gateway.addr());
    for _ in 0..4 {
        conn.send(&push(WRONG_KEY, ""));
        assert_eq!(conn.read_response().status, 403);
    }
    let after = counter(
        metrics,
        "keygate_auth_failures_total",
        &[("reason", "bad_key")],
    );
    assert_eq!(after - before, 4.0);
    // A request is counted once its response is written, which may be just
    // after the client has read it.
    let counted = wait_until(Duration::from_secs(5), || {
        counter(
            metrics,
            "keygate_requests_total",
            &[("route", "proxy"), ("status", "403")],
        ) >= 4.0
    });
    assert!(counted, "four 403s counted in keygate_requests_total");
    assert!(gateway.wait_for_log("request refused by the key check", Duration::from_secs(5)));
    let log = gateway.log_text();
    assert!(log.contains("reason=\"bad_key\"") || log.contains("\"reason\":\"bad_key\""));
    assert!(!log.contains(WRONG_KEY));
    assert!(!log.contains(&api_key("karolin", WRONG_KEY)));
}

#[test]
fn trickled_head_gets_408_within_client_read() {
    let (mock, gateway) = start_with_client_read("1s");

    // One byte every 250 ms: each read is well within clientRead, the
    // whole head is not.
    let request = push(WRONG_KEY, "");
    let bytes: Vec<&[u8]> = request[..40].chunks(1).collect();
    let (answer, sent) = trickle(gateway.addr(), b"", &bytes);

    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "answer after {sent} bytes: {answer:?}"
    );
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(
        sent < bytes.len(),
        "the connection stayed open for the whole trickle"
    );
    assert!(mock.requests().is_empty());
    assert!(
        gateway.wait_for_log(
            "did not arrive within timeouts.clientRead",
            Duration::from_secs(5)
        ),
        "no log line for the 408"
    );
}

fn start_with_client_read(client_read: &str) -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client("karolin", KEY)
        .set("timeouts.clientRead", client_read)
        .build();
    let gateway = Gateway::start(&config);
    (mock, gateway)
}

/// Sends `start`, then one of `pieces` every 250 ms until a response
/// arrives or the pieces run out. Returns the response text and how many
/// pieces were sent.
fn trickle(addr: std::net::SocketAddr, start: &[u8], pieces: &[&[u8]]) -> (String, usize) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    stream.write_all(start).unwrap();

    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut sent = 0;
    while sent < pieces.len() {
        if stream.write_all(pieces[sent]).is_ok() {
            sent += 1;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), sent)
}

#[test]
fn trickled_head_with_many_fields_gets_408() {
    let (_mock, gateway) = start_with_client_read("1s");

    // More fields than the early parse has room for, then one more every 250 ms.
    let mut start = format!(
        "POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway\r\nx-api-key: {}\r\n",
        api_key("karolin", WRONG_KEY)
    );
    for index in 0..70 {
        start.push_str(&format!("X-Field-{index}: v\r\n"));
    }
    let lines: Vec<&[u8]> = vec![b"X-Slow: v\r\n"; 40];
    let (answer, sent) = trickle(gateway.addr(), start.as_bytes(), &lines);

    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "answer after {sent} lines: {answer:?}"
    );
    assert!(
        sent < lines.len(),
        "the connection stayed open for the whole trickle"
    );
}

#[test]
fn unfinished_head_over_limit_gets_431() {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client("karolin", KEY)
        .set("limits.maxHeaderSize", "4KiB")
        .build();
    let gateway = Gateway::start(&config);
    let mut head = b"POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway\r\n".to_vec();
    while head.len() <= 5000 {
        head.extend_from_slice(b"X-Padding: 0123456789abcdef0123456789abcdef\r\n");
    }
    let mut conn = Conn::connect(gateway.addr());
    conn.send(&head);
    let answer = conn.read_response();
    assert_eq!(answer.status, 431);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(conn.is_closed_by_peer());
    assert!(mock.requests().is_empty());
    assert!(
        gateway.wait_for_log("grew past limits.maxHeaderSize", Duration::from_secs(5)),
        "no log line for the 431"
    );
}

/// Requests whose framing or connection fields are unusual. The early path
/// leaves them to the engine, so the response is the same whether the
/// request is the first on its connection or follows a forwarded one.
#[test]
fn unusual_fields_answered_as_by_engine() {
    let (_mock, gateway) = start();
    let wrong = api_key("karolin", WRONG_KEY);
    let cases = [
        format!("POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway\r\nx-api-key: {wrong}\r\nContent-Length: +2\r\n\r\n{{}}"),
        format!("POST /nps/rest/push/p1 HTTP/1.1\r\nHost: user@gateway\r\nx-api-key: {wrong}\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway\r\nConnection: keep-alive\r\nConnection: close\r\nx-api-key: {wrong}\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("POST /nps/rest/push/p1 HTTP/1.0\r\nConnection: ,keep-alive,\r\nx-api-key: {wrong}\r\nContent-Length: 2\r\n\r\n{{}}"),
    ];
    for case in &cases {
        let mut first = Conn::connect(gateway.addr());
        first.send(case.as_bytes());
        let early = first.read_response();

        let mut after = Conn::connect(gateway.addr());
        after.send(&push(KEY, ""));
        assert_eq!(after.read_response().status, 404);
        after.send(case.as_bytes());
        let engine = after.read_response();

        assert_eq!(early.status, engine.status, "status for {case:?}");
        assert_eq!(
            early.header("connection"),
            engine.header("connection"),
            "Connection for {case:?}"
        );
        assert_eq!(early.text(), engine.text(), "body for {case:?}");
    }
}
