//! Connection handling around the responses that keygate sends itself (403,
//! 413, 431): which connections stay open, which close, and that body bytes of a
//! rejected request are never read as the next request. Requests are written
//! as raw bytes on one connection, and the mock backend records what keygate
//! forwards.

mod common;

use std::io::{self, Read};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::{api_key, metrics_text, ConfigBuilder, Conn, Gateway, MockBackend, Response};

const KEY: &str = "8512aeb9e4193f046e8ae1435332d4b3fd5109840fd112a4559f0b9740e3167c";

/// A 64-hex key that differs from `KEY`.
const WRONG_KEY: &str = "0be9e18521b1e3ad4dcdc34cad335d83f0be082b1146184bf3539c6bc7aa2159";

const CLIENT_ID: &str = "karolin";

/// Size of the large bodies, under the default `maxBodySize` of 10 MiB.
const LARGE_BODY_BYTES: usize = 5_000_000;

/// Time within which a local response counts as prompt. The bound is
/// generous because it only detects a gateway that waits for a body that
/// never comes.
const PROMPT_RESPONSE: Duration = Duration::from_secs(5);

/// Read timeout for responses to requests with a large body, which a debug
/// build moves through two hops.
const LARGE_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Time that the client waits for `100 Continue` before it sends the body
/// anyway, as curl does.
const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// Time given to the mock to record a request that keygate might still be
/// forwarding, before checking that it recorded nothing.
const FORWARD_SETTLE: Duration = Duration::from_millis(500);

fn good_key() -> String {
    api_key(CLIENT_ID, KEY)
}

fn bad_key() -> String {
    api_key(CLIENT_ID, WRONG_KEY)
}

/// Starts the mock backend and keygate in front of it with one client, and
/// the settings that `configure` makes.
fn start(configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let builder = ConfigBuilder::new(mock.addr()).client(CLIENT_ID, KEY);
    let gateway = Gateway::start(&configure(builder).build());
    (mock, gateway)
}

/// Formats the head of a push to `/nps/rest/push/{push_id}` with the given
/// `x-api-key` value and extra header lines, each ending in CRLF.
fn push_head(push_id: &str, api_key_value: &str, extra_lines: &str) -> Vec<u8> {
    format!(
        "POST /nps/rest/push/{push_id} HTTP/1.1\r\nHost: keygate\r\nx-api-key: {api_key_value}\r\n\
         Content-Type: application/json\r\n{extra_lines}\r\n"
    )
    .into_bytes()
}

/// Formats a whole push with a `Content-Length` body.
fn push_request(push_id: &str, api_key_value: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = push_head(
        push_id,
        api_key_value,
        &format!("Content-Length: {}\r\n", body.len()),
    );
    bytes.extend_from_slice(body);
    bytes
}

/// Returns a JSON push body of exactly `length` bytes whose bytes vary, so
/// that a lost or reordered byte changes its hash.
fn json_body(length: usize) -> Vec<u8> {
    let prefix = br#"{"title":"large","body":""#;
    let suffix = br#""}"#;
    assert!(
        length >= prefix.len() + suffix.len(),
        "body length {length} is too small"
    );
    let filler_length = length - prefix.len() - suffix.len();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";

    let mut body = Vec::with_capacity(length);
    body.extend_from_slice(prefix);
    body.extend((0..filler_length).map(|i| alphabet[(i * 7 + i / 97) % alphabet.len()]));
    body.extend_from_slice(suffix);
    body
}

/// Encodes `body` with the chunked transfer coding in chunks of `chunk_size`.
fn chunked(body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / chunk_size * 12 + 16);
    for chunk in body.chunks(chunk_size) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` on a second handle of the connection from a new thread,
/// so the test can read an early response while the gateway is still
/// receiving. Write errors are returned, because a gateway that responded
/// and closed may reset the rest of the upload.
fn send_in_background(conn: &Conn, bytes: Vec<u8>) -> JoinHandle<io::Result<()>> {
    let mut stream = conn
        .stream()
        .try_clone()
        .expect("failed to clone the client socket");
    std::thread::spawn(move || io::Write::write_all(&mut stream, &bytes))
}

/// Reads from the socket until the peer closes it and returns how many bytes
/// came before the close. Returns the error of a reset or a timeout.
fn read_until_closed(conn: &mut Conn, wait: Duration) -> io::Result<usize> {
    conn.set_read_timeout(wait);
    let mut stream = conn.stream();
    let mut chunk = [0u8; 4096];
    let mut received = 0;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(received),
            Ok(count) => received += count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn connection_header(response: &Response) -> Option<String> {
    response.header("connection").map(str::to_ascii_lowercase)
}

/// Asserts the mock's 404 for `push_id`, which shows that keygate forwarded
/// the push.
fn assert_forwarded(response: &Response, push_id: &str, case: &str) {
    assert_eq!(
        response.status,
        404,
        "{case}: expected the mock's 404 for an unknown pushId, got {} with body {:?}",
        response.status,
        response.text()
    );
    assert_eq!(
        response.json()["message"],
        format!("pushId '{push_id}' is not known"),
        "{case}: the response did not come from the mock backend for this push"
    );
}

fn assert_status(response: &Response, status: u16, case: &str) {
    assert_eq!(
        response.status,
        status,
        "{case}: unexpected status, body {:?}",
        response.text()
    );
}

fn assert_mock_recorded_nothing(mock: &MockBackend, case: &str) {
    std::thread::sleep(FORWARD_SETTLE);
    let recorded = mock.requests();
    assert!(
        recorded.is_empty(),
        "{case}: the backend received {:?}",
        recorded
            .iter()
            .map(|r| format!("{} {} ({} body bytes)", r.method, r.target, r.body_length))
            .collect::<Vec<_>>()
    );
}

/// Returns the sum of all samples of the metric `name`, 0 when it is absent.
fn metric_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .map(|line| {
            let number = line.rsplit(' ').next().unwrap_or("");
            number
                .parse::<f64>()
                .unwrap_or_else(|err| panic!("sample value in {line:?} is not a number: {err}"))
        })
        .sum()
}

/// Reads the response to a request that was written in one write with the
/// requests before it.
fn read_pipelined(conn: &mut Conn, case: &str) -> Response {
    conn.try_read_response().unwrap_or_else(|err| {
        panic!("{case}: no response, so a pipelined request was dropped: {err}")
    })
}

#[test]
fn small_rejected_body_keeps_connection() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    conn.send(&push_request("p1", &bad_key(), &json_body(1000)));
    let rejected = conn.read_response();
    assert_status(&rejected, 403, "bad key with a 1000-byte body");
    assert_eq!(
        connection_header(&rejected).as_deref(),
        Some("keep-alive"),
        "a 403 after a small body that arrived whole must keep the connection"
    );

    conn.send(&push_request("p2", &good_key(), b"{}"));
    let forwarded = conn.read_response();
    assert_forwarded(&forwarded, "p2", "good push after the 403");

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1, "the backend must see only the good push");
    assert_eq!(recorded[0].header("x-client-id"), Some(CLIENT_ID));
    assert_eq!(recorded[0].body_sha256, sha256_hex(b"{}"));
}

/// A request for the admin refresh route, sent as the body of a rejected
/// push. Parsed as a request, it would reload the configuration and forward
/// a refresh to the backend.
const REFRESH_REQUEST: &[u8] =
    b"POST /nps/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";

/// Asserts that the backend received only the good push and that no refresh
/// ran, neither in keygate nor on the backend.
fn assert_no_refresh(mock: &MockBackend, gateway: &Gateway) {
    let recorded = mock.requests();
    let targets: Vec<&str> = recorded.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/nps/rest/push/good"],
        "the backend must receive exactly the good push"
    );

    let metrics = metrics_text(gateway.metrics_addr());
    assert_eq!(
        metric_total(&metrics, "keygate_config_reloads_total"),
        0.0,
        "a refresh ran, so the rejected request's body was read as a request"
    );
}

#[test]
fn rejected_body_never_parsed_as_request() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    conn.send(&push_request("bad", &bad_key(), REFRESH_REQUEST));
    let rejected = conn.read_response();
    assert_status(&rejected, 403, "bad key with a request as its body");

    conn.send(&push_request("good", &good_key(), b"{}"));
    let next = conn.read_response();
    assert_forwarded(&next, "good", "good push after the rejected one");

    assert_no_refresh(&mock, &gateway);
}

#[test]
fn rejected_body_never_parsed_when_pipelined() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    let mut bytes = push_request("bad", &bad_key(), REFRESH_REQUEST);
    bytes.extend_from_slice(&push_request("good", &good_key(), b"{}"));
    conn.send(&bytes);

    let rejected = conn.read_response();
    assert_status(&rejected, 403, "bad key with a request as its body");
    let case = "good push written right after the rejected one";
    let next = read_pipelined(&mut conn, case);
    assert_forwarded(&next, "good", case);

    assert_no_refresh(&mock, &gateway);
}

#[test]
fn expect_continue_rejected_without_continue() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());
    conn.set_read_timeout(PROMPT_RESPONSE * 2);

    let framing = format!("Content-Length: {LARGE_BODY_BYTES}\r\nExpect: 100-continue\r\n");
    conn.send(&push_head("bad", &bad_key(), &framing));
    let started = Instant::now();
    let first = conn.try_read_response().unwrap_or_else(|err| {
        panic!("no response to a bad-key head with Expect: 100-continue: {err}")
    });
    let elapsed = started.elapsed();

    assert_ne!(
        first.status, 100,
        "keygate sent 100 Continue to a request it rejects"
    );
    assert_status(&first, 403, "bad key with Expect: 100-continue");
    assert!(
        elapsed < PROMPT_RESPONSE,
        "the 403 took {elapsed:?}, so keygate waited for a body that the client holds back"
    );
    assert_eq!(
        connection_header(&first).as_deref(),
        Some("close"),
        "the unsent body cannot be drained, so the connection must close"
    );

    match read_until_closed(&mut conn, PROMPT_RESPONSE) {
        Ok(extra) => assert_eq!(extra, 0, "keygate sent {extra} bytes after the 403"),
        Err(err) => panic!("the connection was not closed cleanly after the 403: {err}"),
    }
    assert_mock_recorded_nothing(&mock, "bad key with Expect: 100-continue");

    // The gateway keeps serving on new connections.
    let mut next = Conn::connect(gateway.addr());
    next.send(&push_request("good", &good_key(), b"{}"));
    assert_forwarded(
        &next.read_response(),
        "good",
        "good push on a new connection",
    );
}

#[test]
fn expect_continue_large_body_forwarded() {
    let (mock, gateway) = start(|config| config);
    let body = json_body(LARGE_BODY_BYTES);
    let mut conn = Conn::connect(gateway.addr());

    let framing = format!("Content-Length: {LARGE_BODY_BYTES}\r\nExpect: 100-continue\r\n");
    conn.send(&push_head("large", &good_key(), &framing));

    conn.set_read_timeout(CONTINUE_WAIT);
    match conn.try_read_response() {
        Ok(interim) => assert_eq!(
            interim.status,
            100,
            "expected 100 Continue or nothing before the body, got {} with body {:?}",
            interim.status,
            interim.text()
        ),
        // No 100 Continue within the wait: the client sends the body anyway.
        Err(err) if err.kind() == io::ErrorKind::TimedOut => {}
        Err(err) => panic!("reading 100 Continue failed: {err}"),
    }

    conn.set_read_timeout(LARGE_BODY_TIMEOUT);
    conn.send(&body);
    let response = conn.read_response();
    assert_forwarded(
        &response,
        "large",
        "good 5 MB push with Expect: 100-continue",
    );

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1, "the backend must receive the push once");
    assert!(
        recorded[0].body_complete,
        "the backend received an incomplete body"
    );
    assert_eq!(recorded[0].body_length, LARGE_BODY_BYTES as u64);
    assert_eq!(
        recorded[0].body_sha256,
        sha256_hex(&body),
        "the backend received other bytes than were sent"
    );
}

#[test]
fn chunked_large_body_forwarded() {
    let (mock, gateway) = start(|config| config);
    let body = json_body(LARGE_BODY_BYTES);
    let mut conn = Conn::connect(gateway.addr());
    conn.set_read_timeout(LARGE_BODY_TIMEOUT);

    let mut bytes = push_head("large", &good_key(), "Transfer-Encoding: chunked\r\n");
    bytes.extend_from_slice(&chunked(&body, 64 * 1024));
    conn.send(&bytes);
    let response = conn.read_response();
    assert_forwarded(&response, "large", "good 5 MB chunked push");

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1, "the backend must receive the push once");
    assert!(
        recorded[0].body_complete,
        "the backend received an incomplete body"
    );
    assert_eq!(recorded[0].body_length, LARGE_BODY_BYTES as u64);
    assert_eq!(
        recorded[0].body_sha256,
        sha256_hex(&body),
        "the backend received other bytes than were sent"
    );
}

#[test]
fn rejected_body_over_drain_max_closes() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());
    conn.set_read_timeout(PROMPT_RESPONSE * 2);

    // 1 MB is over the default drainBodyMax of 64 KiB.
    let writer = send_in_background(
        &conn,
        push_request("bad", &bad_key(), &json_body(1_000_000)),
    );
    let rejected = conn.read_response();
    assert_status(&rejected, 403, "bad key with a 1 MB body");
    assert_eq!(
        connection_header(&rejected).as_deref(),
        Some("close"),
        "a body over drainBodyMax is not drained, so the connection must close"
    );
    assert!(
        conn.closed_by_peer_within(PROMPT_RESPONSE),
        "keygate kept the connection open after Connection: close"
    );

    // The upload may fail once keygate closes, which is expected.
    let _ = writer.join().expect("the writer thread panicked");
    assert_mock_recorded_nothing(&mock, "bad key with a 1 MB body");
}

#[test]
fn stalled_rejected_body_closes_after_drain_time() {
    let drain_time = Duration::from_millis(500);
    let margin = Duration::from_millis(2500);
    let (mock, gateway) = start(|config| config.set("limits.drainTime", "500ms"));
    let mut conn = Conn::connect(gateway.addr());
    conn.set_read_timeout(PROMPT_RESPONSE * 2);

    // Half of the declared body is sent, and the rest never comes.
    let body = json_body(2000);
    let mut bytes = push_head("bad", &bad_key(), "Content-Length: 2000\r\n");
    bytes.extend_from_slice(&body[..1000]);
    conn.send(&bytes);
    let started = Instant::now();
    let rejected = conn.read_response();
    let elapsed = started.elapsed();

    assert_status(&rejected, 403, "bad key with a body that stops halfway");
    assert!(
        elapsed < drain_time + margin,
        "the 403 took {elapsed:?}, expected it within drainTime ({drain_time:?}) plus {margin:?}"
    );
    assert_eq!(
        connection_header(&rejected).as_deref(),
        Some("close"),
        "the rest of the body never arrived, so the connection must close"
    );
    assert!(
        conn.closed_by_peer_within(PROMPT_RESPONSE),
        "keygate kept the connection open after Connection: close"
    );
    assert_mock_recorded_nothing(&mock, "bad key with a body that stops halfway");
}

#[test]
fn chunked_small_rejected_body_keeps_connection() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    let mut bytes = push_head("bad", &bad_key(), "Transfer-Encoding: chunked\r\n");
    bytes.extend_from_slice(&chunked(&json_body(3000), 1000));
    conn.send(&bytes);
    let rejected = conn.read_response();
    assert_status(&rejected, 403, "bad key with a small chunked body");
    assert_eq!(
        connection_header(&rejected).as_deref(),
        Some("keep-alive"),
        "a small chunked body that arrived whole must be drained and the connection kept"
    );

    conn.send(&push_request("good", &good_key(), b"{}"));
    assert_forwarded(&conn.read_response(), "good", "good push after the 403");

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1, "the backend must see only the good push");
    assert_eq!(recorded[0].path(), "/nps/rest/push/good");
}

#[test]
fn declared_body_over_max_body_size() {
    let (mock, gateway) = start(|config| config.set("limits.maxBodySize", "1KiB"));
    let mut conn = Conn::connect(gateway.addr());

    conn.send(&push_request("big", &good_key(), &json_body(2048)));
    let response = conn.read_response();
    assert_status(
        &response,
        413,
        "Content-Length of 2048 with maxBodySize 1KiB",
    );
    assert_eq!(
        response.json()["status"],
        413,
        "the 413 body must have the JSON error shape"
    );
    assert_mock_recorded_nothing(&mock, "Content-Length over maxBodySize");
}

#[test]
fn chunked_body_over_max_body_size() {
    let (mock, gateway) = start(|config| config.set("limits.maxBodySize", "1KiB"));
    let mut conn = Conn::connect(gateway.addr());

    let body = json_body(4096);
    let mut bytes = push_head("big", &good_key(), "Transfer-Encoding: chunked\r\n");
    bytes.extend_from_slice(&chunked(&body, 512));
    let writer = send_in_background(&conn, bytes);

    // The mock responds only after the whole body, so no response can have
    // been sent before keygate stopped the body.
    let response = conn.read_response();
    assert_status(
        &response,
        413,
        "chunked body of 4096 bytes with maxBodySize 1KiB",
    );
    let _ = writer.join().expect("the writer thread panicked");

    std::thread::sleep(FORWARD_SETTLE);
    for recorded in mock.requests() {
        assert!(
            !recorded.body_complete,
            "the backend received a complete request of {} body bytes (hash {}), \
             so it would act on a body cut at maxBodySize or passed past it",
            recorded.body_length, recorded.body_sha256
        );
    }
}

#[test]
fn head_over_max_header_size() {
    let (mock, gateway) = start(|config| config.set("limits.maxHeaderSize", "4KiB"));
    let mut conn = Conn::connect(gateway.addr());

    let filler = "a".repeat(8 * 1024);
    let mut bytes = push_head(
        "p1",
        &good_key(),
        &format!("X-Filler: {filler}\r\nContent-Length: 2\r\n"),
    );
    bytes.extend_from_slice(b"{}");
    conn.send(&bytes);
    let response = conn.read_response();

    assert_status(&response, 431, "8 KiB header with maxHeaderSize 4KiB");
    assert_mock_recorded_nothing(&mock, "head over maxHeaderSize");
}

#[test]
fn head_over_one_mebibyte_not_forwarded() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());
    conn.set_read_timeout(PROMPT_RESPONSE * 2);

    let filler = "a".repeat(1100 * 1024);
    let mut bytes = push_head(
        "p1",
        &good_key(),
        &format!("X-Filler: {filler}\r\nContent-Length: 2\r\n"),
    );
    bytes.extend_from_slice(b"{}");
    let writer = send_in_background(&conn, bytes);

    // pingora 0.9 rejects a head over 1 MiB before keygate sees it, with 400
    // or by closing the connection.
    match conn.try_read_response() {
        Ok(response) => assert!(
            !(200..300).contains(&response.status),
            "a head over 1 MiB got {} with body {:?}",
            response.status,
            response.text()
        ),
        Err(err) => println!("no response to a head over 1 MiB: {err}"),
    }
    let _ = writer.join().expect("the writer thread panicked");
    assert_mock_recorded_nothing(&mock, "head over 1 MiB");
}

#[test]
fn pipelined_requests_served_in_order() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    let mut bytes = push_request("first", &good_key(), b"{\"n\":1}");
    bytes.extend_from_slice(&push_request("second", &good_key(), b"{\"n\":2}"));
    conn.send(&bytes);

    let first = read_pipelined(&mut conn, "first pipelined push");
    assert_forwarded(&first, "first", "first pipelined push");
    let second = read_pipelined(&mut conn, "second pipelined push");
    assert_forwarded(&second, "second", "second pipelined push");

    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/nps/rest/push/first", "/nps/rest/push/second"]);
}

#[test]
fn pipelined_rejected_request_between_good_ones() {
    let (mock, gateway) = start(|config| config);
    let mut conn = Conn::connect(gateway.addr());

    let mut bytes = push_request("first", &good_key(), b"{\"n\":1}");
    bytes.extend_from_slice(&push_request("bad", &bad_key(), b"{\"n\":2}"));
    bytes.extend_from_slice(&push_request("third", &good_key(), b"{\"n\":3}"));
    conn.send(&bytes);

    let first = read_pipelined(&mut conn, "first pipelined push");
    assert_forwarded(&first, "first", "first pipelined push");
    let second = read_pipelined(&mut conn, "pipelined push with a bad key");
    assert_status(&second, 403, "pipelined push with a bad key");
    let third = read_pipelined(&mut conn, "third pipelined push");
    assert_forwarded(&third, "third", "third pipelined push");

    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/nps/rest/push/first", "/nps/rest/push/third"]);
}

#[test]
fn client_gone_counted_as_499() {
    let (_mock, gateway) = start(|builder| builder);

    // The client sends half of its declared body and leaves.
    let mut conn = Conn::connect(gateway.addr());
    let mut head = push_head("p1", &good_key(), "Content-Length: 100\r\n");
    head.extend_from_slice(&[b'x'; 50]);
    conn.send(&head);
    conn.shutdown_write();
    let _ = read_until_closed(&mut conn, PROMPT_RESPONSE);
    drop(conn);

    let deadline = Instant::now() + PROMPT_RESPONSE;
    let counted = loop {
        let metrics = metrics_text(gateway.metrics_addr());
        let gone = metrics.contains("keygate_requests_total{route=\"proxy\",status=\"499\"} 1");
        if gone || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        counted.contains("keygate_requests_total{route=\"proxy\",status=\"499\"} 1"),
        "a client that left before any response must count as 499:\n{counted}"
    );
    assert!(
        !counted.contains("status=\"500\""),
        "a client that left must not count as a server error:\n{counted}"
    );
}
