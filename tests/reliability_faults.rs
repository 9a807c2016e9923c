//! How keygate responds when the backend breaks or stalls a response, and
//! whether it serves 2,000 kept-alive client connections at once.
//!
//! The faults come from [`FaultBackend`], a raw HTTP/1.1 server on loopback
//! whose response to a push depends on the pushId. A backend that refuses
//! connections or never responds, and oversized requests, are covered in
//! `forwarding.rs` and `connections.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::metrics::counter;
use common::{api_key, request, ConfigBuilder, Conn, Gateway, MockBackend, Response};

const CLIENT_ID: &str = "karolin";
const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";

/// Every push goes to this prefix followed by the name of a [`Fault`].
const PUSH_PREFIX: &str = "/nps/rest/push/";

/// Body of the response to a push without a fault.
const OK_BODY: &[u8] = br#"{"accepted":true}"#;

/// Declared length of a faulty response body, and the part of it that the
/// backend sends before the fault.
const BODY_LENGTH: usize = 10_000;
const PARTIAL_LENGTH: usize = 1_000;

/// Number of pieces of a slowly sent body, and the pause after each one.
/// The pause is far below the read timeout of the gateway in that test.
const TRICKLE_PIECES: usize = 20;
const TRICKLE_PAUSE: Duration = Duration::from_millis(50);

/// Maximum time that a stalled response waits for
/// [`FaultBackend::release`] before it goes on anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(20);

/// Read and write timeout of a backend connection, after which it closes.
const BACKEND_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum size of a request head that the backend reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Time allowed for the gateway to close a client connection after a fault.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for a log line to appear.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// Response of [`FaultBackend`] to a push, named by the pushId.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `200` with [`OK_BODY`], and the connection stays open.
    None,
    /// Reads the request, then resets the connection without a response byte.
    ResetBeforeHead,
    /// Sends a head that declares [`BODY_LENGTH`] bytes and the first
    /// [`PARTIAL_LENGTH`] of them, then resets the connection.
    ResetMidBody,
    /// Like [`Fault::ResetMidBody`], but closes the connection normally.
    CloseMidBody,
    /// Sends a `Content-Length` body in [`TRICKLE_PIECES`] pieces.
    Trickle,
    /// Sends a chunked body in [`TRICKLE_PIECES`] chunks.
    TrickleChunked,
    /// Sends half of the response head and nothing more until released.
    StallInHead,
    /// Sends the head and [`PARTIAL_LENGTH`] body bytes and nothing more
    /// until released.
    StallMidBody,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::None,
        Fault::ResetBeforeHead,
        Fault::ResetMidBody,
        Fault::CloseMidBody,
        Fault::Trickle,
        Fault::TrickleChunked,
        Fault::StallInHead,
        Fault::StallMidBody,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::None => "ok",
            Fault::ResetBeforeHead => "reset-before-head",
            Fault::ResetMidBody => "reset-mid-body",
            Fault::CloseMidBody => "close-mid-body",
            Fault::Trickle => "trickle",
            Fault::TrickleChunked => "trickle-chunked",
            Fault::StallInHead => "stall-in-head",
            Fault::StallMidBody => "stall-mid-body",
        }
    }

    /// Returns the fault named by the last segment of a request target.
    fn of_target(target: &str) -> Fault {
        let push_id = target.rsplit('/').next().unwrap_or("");
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == push_id)
            .unwrap_or(Fault::None)
    }

    fn path(self) -> String {
        format!("{PUSH_PREFIX}{}", self.name())
    }
}

/// Body bytes that are not all the same, so a dropped or reordered byte is
/// seen.
fn patterned_body(length: usize) -> Vec<u8> {
    (0..length).map(|i| b'a' + (i % 26) as u8).collect()
}

/// State that the backend's connection threads share.
struct BackendState {
    /// Request targets in the order received.
    targets: Mutex<Vec<String>>,
    /// One message lets one stalled response go on.
    release: Mutex<Receiver<()>>,
}

/// Raw HTTP/1.1 server on 127.0.0.1 that responds to each request with the
/// [`Fault`] named by its pushId, one thread a connection. It reads
/// request bodies framed by `Content-Length` only.
struct FaultBackend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    release: Sender<()>,
}

impl FaultBackend {
    fn start() -> FaultBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("failed to bind the fault backend to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let (release, released) = mpsc::channel();
        let state = Arc::new(BackendState {
            targets: Mutex::new(Vec::new()),
            release: Mutex::new(released),
        });
        let shared = Arc::clone(&state);
        // The thread ends with the test process, because the listener is
        // never closed.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    continue;
                };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve_connection(stream, &state));
            }
        });
        FaultBackend {
            addr,
            state,
            release,
        }
    }

    /// Lets one stalled response go on.
    fn release(&self) {
        self.release
            .send(())
            .expect("the backend keeps the receiving end");
    }

    /// Returns how many requests for `fault` arrived.
    fn received(&self, fault: Fault) -> usize {
        let path = fault.path();
        self.state
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|target| **target == path)
            .count()
    }
}

/// What happens to a backend connection after a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterResponse {
    KeepOpen,
    Close,
    Reset,
}

/// Serves requests on one connection until the peer closes it, a read or
/// write fails, or a fault ends the connection.
fn serve_connection(mut stream: TcpStream, state: &BackendState) {
    if stream.set_read_timeout(Some(BACKEND_IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(BACKEND_IO_TIMEOUT)).is_err()
    {
        return;
    }
    let mut buffer = Vec::new();
    while let Some(target) = read_request(&mut stream, &mut buffer) {
        let fault = Fault::of_target(&target);
        state
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(target);
        match respond(&mut stream, fault, state) {
            Ok(AfterResponse::KeepOpen) => {}
            Ok(AfterResponse::Reset) => {
                // With SO_LINGER set to 0, closing the socket (the drop
                // below) sends RST in place of FIN.
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .expect("failed to set SO_LINGER to 0 on a backend connection");
                return;
            }
            Ok(AfterResponse::Close) | Err(_) => return,
        }
    }
}

/// Reads one request head and its `Content-Length` body, removes them from
/// `buffer`, and returns the request target. Returns `None` when the
/// connection ends first.
fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let target = head.split(' ').nth(1)?.to_owned();
    let body_length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + body_length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
        }
    }
    buffer.drain(..head_end + body_length);
    Some(target)
}

/// Sends the response that `fault` calls for and returns what happens to the
/// connection then.
fn respond(
    stream: &mut TcpStream,
    fault: Fault,
    state: &BackendState,
) -> std::io::Result<AfterResponse> {
    let body = patterned_body(BODY_LENGTH);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BODY_LENGTH}\r\n\r\n"
    );
    match fault {
        Fault::None => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                OK_BODY.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(OK_BODY)?;
            Ok(AfterResponse::KeepOpen)
        }
        Fault::ResetBeforeHead => Ok(AfterResponse::Reset),
        Fault::ResetMidBody | Fault::CloseMidBody => {
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body[..PARTIAL_LENGTH])?;
            if fault == Fault::ResetMidBody {
                Ok(AfterResponse::Reset)
            } else {
                Ok(AfterResponse::Close)
            }
        }
        Fault::Trickle => {
            stream.write_all(head.as_bytes())?;
            for piece in body.chunks(BODY_LENGTH.div_ceil(TRICKLE_PIECES)) {
                std::thread::sleep(TRICKLE_PAUSE);
                stream.write_all(piece)?;
            }
            Ok(AfterResponse::KeepOpen)
        }
        Fault::TrickleChunked => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes())?;
            for piece in body.chunks(BODY_LENGTH.div_ceil(TRICKLE_PIECES)) {
                std::thread::sleep(TRICKLE_PAUSE);
                stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                stream.write_all(piece)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")?;
            Ok(AfterResponse::KeepOpen)
        }
        Fault::StallInHead => {
            let (first, rest) = head.as_bytes().split_at(head.len() / 2);
            stream.write_all(first)?;
            wait_for_release(state);
            stream.write_all(rest)?;
            stream.write_all(&body)?;
            Ok(AfterResponse::Close)
        }
        Fault::StallMidBody => {
            stream.write_all(head.as_bytes())?;
            stream.write_all(&body[..PARTIAL_LENGTH])?;
            wait_for_release(state);
            stream.write_all(&body[PARTIAL_LENGTH..])?;
            Ok(AfterResponse::Close)
        }
    }
}

fn wait_for_release(state: &BackendState) {
    let release = state
        .release
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A timeout lets the response go on, so a failing test cannot leave
    // the thread waiting.
    let _ = release.recv_timeout(RELEASE_WAIT);
}

fn good_api_key() -> String {
    api_key(CLIENT_ID, KEY)
}

/// Starts a gateway with one client in front of `upstream`, with
/// `timeouts.read` set to `read_timeout`.
fn start_gateway(upstream: SocketAddr, read_timeout: &str) -> Gateway {
    let builder = ConfigBuilder::new(upstream)
        .client(CLIENT_ID, KEY)
        .set("timeouts.read", read_timeout);
    Gateway::start(&builder.build())
}

/// Returns the bytes of a push for `fault` with a good key and a small body.
fn push_bytes(fault: Fault) -> Vec<u8> {
    let path = fault.path();
    let key = good_api_key();
    format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

/// Sends a push for `fault` on a new connection and returns the connection.
fn send_push(gateway: &Gateway, fault: Fault) -> Conn {
    let mut conn = Conn::connect(gateway.addr());
    conn.send(&push_bytes(fault));
    conn
}

/// Asserts that a push without a fault, on a new connection, gets the
/// backend's response.
fn assert_backend_response(gateway: &Gateway, context: &str) {
    let mut conn = send_push(gateway, Fault::None);
    let response = conn.read_response();
    assert_eq!(
        response.status,
        200,
        "{context}: status, body {:?}",
        response.text()
    );
    assert_eq!(response.body, OK_BODY, "{context}: body");
}

/// Asserts keygate's JSON error body for a failed backend request.
fn assert_error_body(response: &Response, status: u16, error: &str, message: &str) {
    assert_eq!(
        response.status,
        status,
        "status, body {:?}",
        response.text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "content type of the {status} response"
    );
    let expected = serde_json::json!({ "status": status, "error": error, "message": message });
    assert_eq!(response.json(), expected, "body of the {status} response");
}

/// Returns `keygate_upstream_errors_total{kind}`.
fn upstream_errors(gateway: &Gateway, kind: &str) -> f64 {
    counter(
        gateway.metrics_addr(),
        "keygate_upstream_errors_total",
        &[("kind", kind)],
    )
}

/// Log message of a backend failure that the client gets as an error status.
const FAILURE_MESSAGE: &str = "backend request failed";

/// Log message of a backend failure after the client got the response head.
const BROKEN_BODY_MESSAGE: &str = "backend request failed after the response head was sent; closing the client connection before the end of the body";

/// Asserts that keygate logs `message` for `request_id` with the backend
/// error `kind` and the `status` that the client got.
fn assert_failure_logged(
    gateway: &Gateway,
    request_id: &str,
    kind: &str,
    status: u16,
    message: &str,
) {
    // The text format writes the message first, then the fields in order.
    let parts = [
        format!("{message} kind=\"{kind}\""),
        format!(" status={status} "),
        format!(" request_id=\"{request_id}\""),
    ];
    let logged = common::poll::wait_until(LOG_TIMEOUT, || {
        let log = gateway.log_text();
        log.lines()
            .any(|line| parts.iter().all(|part| line.contains(part.as_str())))
    });
    assert!(
        logged,
        "no log line with all of {parts:?}; log tail:\n{}",
        gateway.redacted_log_tail(20)
    );
}

/// Returns the request id that keygate set on a response.
fn request_id(response: &Response) -> String {
    response
        .header("x-request-id")
        .expect("keygate sets X-Request-Id on every response")
        .to_owned()
}

#[test]
fn reset_before_response_gives_502() {
    let backend = FaultBackend::start();
    let gateway = start_gateway(backend.addr, "30s");
    let resets_before = upstream_errors(&gateway, "reset");

    let mut conn = send_push(&gateway, Fault::ResetBeforeHead);
    let response = conn.read_response();
    assert_error_body(
        &response,
        502,
        "Bad Gateway",
        "the backend could not be reached or broke the connection",
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        conn.is_closed_by_peer(),
        "the client connection stayed open after the 502"
    );

    assert_eq!(
        backend.received(Fault::ResetBeforeHead),
        1,
        "a push is sent to the backend once, never retried"
    );
    assert_eq!(upstream_errors(&gateway, "reset"), resets_before + 1.0);
    assert_failure_logged(
        &gateway,
        &request_id(&response),
        "reset",
        502,
        FAILURE_MESSAGE,
    );
    assert_backend_response(&gateway, "push after the reset");
}

#[test]
fn broken_body_closes_client_connection() {
    let backend = FaultBackend::start();
    let gateway = start_gateway(backend.addr, "30s");
    let body = patterned_body(BODY_LENGTH);

    for fault in [Fault::ResetMidBody, Fault::CloseMidBody] {
        let resets_before = upstream_errors(&gateway, "reset");
        let mut conn = send_push(&gateway, fault);

        // keygate has passed the head on, so the only way left to signal the
        // failure is to close the connection before the declared end.
        let head = conn.read_response_head();
        assert_eq!(head.status, 200, "{fault:?}: status");
        let declared = BODY_LENGTH.to_string();
        assert_eq!(
            head.header("content-length"),
            Some(declared.as_str()),
            "{fault:?}: declared length"
        );
        let Err(error) = conn.try_read_body_bytes(BODY_LENGTH) else {
            panic!("{fault:?}: the whole declared body arrived, but the backend sent a part");
        };
        assert!(
            matches!(
                error.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{fault:?}: the connection must end before the declared length, got {error}"
        );
        let received = conn.buffered();
        assert_eq!(
            received.len(),
            PARTIAL_LENGTH,
            "{fault:?}: body bytes before the close"
        );
        assert!(
            received == &body[..PARTIAL_LENGTH],
            "{fault:?}: the body bytes received differ from the backend's"
        );

        assert_eq!(backend.received(fault), 1, "{fault:?}: requests received");
        assert_eq!(
            upstream_errors(&gateway, "reset"),
            resets_before + 1.0,
            "{fault:?}: keygate_upstream_errors_total{{kind=\"reset\"}}"
        );
        assert_failure_logged(
            &gateway,
            &request_id(&head),
            "reset",
            200,
            BROKEN_BODY_MESSAGE,
        );
        assert_backend_response(&gateway, &format!("push after {fault:?}"));
    }
}

#[test]
fn slow_body_arrives_whole() {
    let backend = FaultBackend::start();
    let gateway = start_gateway(backend.addr, "2s");
    let body = patterned_body(BODY_LENGTH);

    for fault in [Fault::Trickle, Fault::TrickleChunked] {
        let mut conn = send_push(&gateway, fault);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{fault:?}: status");
        assert!(
            response.body == body,
            "{fault:?}: body of {} bytes differs from the {BODY_LENGTH} bytes sent",
            response.body.len()
        );

        // The connection stays usable for the next request.
        conn.send(&push_bytes(Fault::None));
        let next = conn.read_response();
        assert_eq!(next.status, 200, "{fault:?}: status of the next push");
        assert_eq!(next.body, OK_BODY, "{fault:?}: body of the next push");
    }
    assert_eq!(upstream_errors(&gateway, "timeout"), 0.0);
}

#[test]
fn stall_in_head_gives_504() {
    let backend = FaultBackend::start();
    let gateway = start_gateway(backend.addr, "500ms");

    let mut conn = send_push(&gateway, Fault::StallInHead);
    let response = conn.read_response();
    backend.release();
    assert_error_body(
        &response,
        504,
        "Gateway Timeout",
        "the backend did not respond in time",
    );
    assert!(
        conn.is_closed_by_peer(),
        "the client connection stayed open after the 504"
    );
    assert_eq!(upstream_errors(&gateway, "timeout"), 1.0);
    assert_failure_logged(
        &gateway,
        &request_id(&response),
        "timeout",
        504,
        FAILURE_MESSAGE,
    );
    assert_backend_response(&gateway, "push after the timeout");
}

#[test]
fn stall_mid_body_closes_client_connection() {
    let backend = FaultBackend::start();
    let gateway = start_gateway(backend.addr, "500ms");
    let body = patterned_body(BODY_LENGTH);

    // pingora 0.9.1 buffers up to 1460 bytes of a Content-Length response
    // before writing to the client (DEFAULT_L4_WRITE_BUFFER_SIZE), so the
    // head and the first body bytes arrive when the read timeout ends it.
    let mut conn = send_push(&gateway, Fault::StallMidBody);
    let head = conn.read_response_head();
    assert_eq!(head.status, 200);
    let received = conn
        .try_read_body_bytes(PARTIAL_LENGTH)
        .unwrap_or_else(|err| panic!("reading the sent part of the body: {err}"));
    assert!(
        received == body[..PARTIAL_LENGTH],
        "the first {PARTIAL_LENGTH} body bytes differ from the backend's"
    );

    let closed = conn.closed_by_peer_within(CLOSE_TIMEOUT);
    backend.release();
    assert!(
        closed,
        "the client connection stayed open while the backend stalled"
    );
    assert_eq!(conn.buffered().len(), 0, "bytes after the stalled body");
    assert_eq!(upstream_errors(&gateway, "timeout"), 1.0);
    assert_failure_logged(
        &gateway,
        &request_id(&head),
        "timeout",
        200,
        BROKEN_BODY_MESSAGE,
    );
    assert_backend_response(&gateway, "push after the stalled body");
}

/// Number of client connections held open at once.
const HELD_CONNECTIONS: usize = 2_000;

/// While all connections are held, every this many of them sends another
/// push in each round.
const SAMPLE_EVERY: usize = 100;

/// Rounds of pushes sent while all connections are held.
const HELD_ROUNDS: usize = 5;

/// Time allowed for the whole test of held connections.
const HELD_TEST_LIMIT: Duration = Duration::from_secs(60);

/// Path of the pushes to the mock backend, and the mock's response body.
const MOCK_PUSH_PATH: &str = "/nps/rest/push/p1";
const MOCK_PUSH_BODY: &str =
    r#"{"status":404,"error":"Not Found","message":"pushId 'p1' is not known"}"#;

fn mock_push_bytes() -> Vec<u8> {
    let key = good_api_key();
    format!(
        "POST {MOCK_PUSH_PATH} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

/// Asserts the mock's response to a push.
fn assert_mock_response(response: &Response, context: &str) {
    assert_eq!(
        response.status,
        404,
        "{context}: status, body {:?}",
        response.text()
    );
    assert_eq!(response.text(), MOCK_PUSH_BODY, "{context}: body");
}

/// Panics when the test has run longer than [`HELD_TEST_LIMIT`].
fn check_time(started: Instant, step: &str) {
    assert!(
        started.elapsed() < HELD_TEST_LIMIT,
        "{step} was not done within {HELD_TEST_LIMIT:?} of the start"
    );
}

/// Sends a push on every connection first and then reads every response, so
/// all pushes are in flight at once.
fn push_on_all(conns: &mut [Conn], started: Instant, step: &str) {
    let push = mock_push_bytes();
    for (index, conn) in conns.iter_mut().enumerate() {
        conn.try_send(&push)
            .unwrap_or_else(|err| panic!("{step}: sending on connection {index}: {err}"));
    }
    check_time(started, step);
    for (index, conn) in conns.iter_mut().enumerate() {
        let response = conn
            .try_read_response()
            .unwrap_or_else(|err| panic!("{step}: reading on connection {index}: {err}"));
        assert_mock_response(&response, &format!("{step}: connection {index}"));
        if index % SAMPLE_EVERY == 0 {
            check_time(started, step);
        }
    }
}

#[test]
fn many_kept_alive_connections_served() {
    let started = Instant::now();
    let mock = MockBackend::start();
    // Every test connection comes from 127.0.0.1, so both caps must leave
    // room for all of them and the extra ones opened while they are held.
    let caps = HELD_CONNECTIONS + 100;
    let builder = ConfigBuilder::new(mock.addr())
        .client(CLIENT_ID, KEY)
        .set("timeouts.read", "30s")
        .set("limits.maxConnections", &caps.to_string())
        .set("limits.maxConnectionsPerPeer", &caps.to_string());
    let gateway = Gateway::start(&builder.build());

    let mut held_conns = Vec::with_capacity(HELD_CONNECTIONS);
    for index in 0..HELD_CONNECTIONS {
        let conn = Conn::try_connect(gateway.addr())
            .unwrap_or_else(|err| panic!("opening client connection {index}: {err}"));
        held_conns.push(conn);
        if index % SAMPLE_EVERY == 0 {
            check_time(started, "opening the connections");
        }
    }
    push_on_all(&mut held_conns, started, "first push on every connection");

    for round in 0..HELD_ROUNDS {
        let fresh = request(
            gateway.addr(),
            "POST",
            MOCK_PUSH_PATH,
            &[("x-api-key", &good_api_key())],
            b"{}",
        );
        assert_mock_response(&fresh, &format!("round {round}: push on a new connection"));

        for index in (0..HELD_CONNECTIONS).step_by(SAMPLE_EVERY) {
            let conn = &mut held_conns[index];
            conn.send(&mock_push_bytes());
            let response = conn.read_response();
            assert_mock_response(
                &response,
                &format!("round {round}: held connection {index}"),
            );
        }
        check_time(started, "the rounds of pushes");
    }

    // Every held connection is still open and usable.
    push_on_all(&mut held_conns, started, "last push on every connection");

    let samples = HELD_CONNECTIONS / SAMPLE_EVERY;
    let expected = 2 * HELD_CONNECTIONS + HELD_ROUNDS * (1 + samples);
    let pushes = mock
        .requests()
        .iter()
        .filter(|received| received.path() == MOCK_PUSH_PATH)
        .count();
    assert_eq!(pushes, expected, "pushes the backend received");
    check_time(started, "the whole test");
}
