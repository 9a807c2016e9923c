//! The two forwarding paths give the same result. A request whose key
//! passes and that arrives whole, on its own, is forwarded by keygate's
//! own path (`fast_forward`). The same request followed by a pipelined one
//! goes to pingora's proxy. For each case below both are sent, and the
//! backend must receive the same bytes and the client the same response.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{api_key, ConfigBuilder, Conn, Gateway, Response};

const CLIENT_ID: &str = "karolin";
const KEY: &str = "5d0c2b8e9f6a4c1d8e7f0a3b2c4d6e8f5d0c2b8e9f6a4c1d8e7f0a3b2c4d6e8f";

/// A client with a rate limit, whose requests always go to pingora's proxy.
const LIMITED_ID: &str = "limited";
const LIMITED_KEY: &str = "8e7f0a3b2c4d6e8f5d0c2b8e9f6a4c1d8e7f0a3b2c4d6e8f5d0c2b8e9f6a4c1d";

/// Connections a [`RecordingBackend`] accepts before it stops.
const MAX_BACKEND_CONNECTIONS: usize = 20;

/// Largest request head a [`RecordingBackend`] reads.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Time after which an idle backend connection closes.
const BACKEND_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request received by the backend, with the index of its connection.
#[derive(Clone, Debug)]
struct Received {
    connection: usize,
    bytes: Vec<u8>,
}

/// A backend that records the exact bytes of each request and responds to
/// each with the same canned response.
struct RecordingBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl RecordingBackend {
    /// Responds to every request with `response`. With `close_after`, the
    /// connection closes after each response, which ends a body sent
    /// without a length.
    fn start(response: &'static [u8], close_after: bool) -> RecordingBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("failed to bind the recording backend to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::clone(&received);
        std::thread::spawn(move || {
            for (connection, stream) in listener
                .incoming()
                .take(MAX_BACKEND_CONNECTIONS)
                .enumerate()
            {
                let Ok(stream) = stream else {
                    continue;
                };
                let records = Arc::clone(&records);
                std::thread::spawn(move || {
                    serve_connection(stream, connection, response, close_after, &records);
                });
            }
        });
        RecordingBackend { addr, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .expect("a backend thread panicked while recording")
            .clone()
    }
}

fn serve_connection(
    mut stream: TcpStream,
    connection: usize,
    response: &[u8],
    close_after: bool,
    records: &Mutex<Vec<Received>>,
) {
    if stream.set_read_timeout(Some(BACKEND_READ_TIMEOUT)).is_err() {
        return;
    }
    let mut buffer = Vec::new();
    loop {
        let Some(length) = read_request(&mut stream, &mut buffer) else {
            return;
        };
        let bytes: Vec<u8> = buffer.drain(..length).collect();
        records
            .lock()
            .expect("a backend thread panicked while recording")
            .push(Received { connection, bytes });
        if stream.write_all(response).is_err() || close_after {
            return;
        }
    }
}

/// Reads until `buffer` starts with one whole request and returns its length.
fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head_length = end + 4;
            let head = String::from_utf8_lossy(&buffer[..head_length]).to_ascii_lowercase();
            let body_length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= head_length + body_length {
                return Some(head_length + body_length);
            }
        } else if buffer.len() > MAX_HEAD_BYTES {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

/// One request and the backend's response to it.
struct Case {
    name: &'static str,
    /// The request; `{key}` is replaced by a good `x-api-key` value.
    request: &'static str,
    response: &'static [u8],
    close_after: bool,
}

const PUSH: &str = "POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-push\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"title\":\"hi\"}\n";

const CASES: [Case; 8] = [
    Case {
        name: "push with a length",
        request: PUSH,
        response: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        close_after: false,
    },
    Case {
        name: "get answered chunked",
        request: "GET /nps/rest/push/p1?full=1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-get\r\n\r\n",
        response: b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-Backend: nps\r\n\r\n5\r\nnone \r\n4\r\nhere\r\n0\r\n\r\n",
        close_after: false,
    },
    Case {
        name: "head with a length",
        request: "HEAD /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-head\r\n\r\n",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        close_after: false,
    },
    Case {
        name: "body ended by close",
        request: PUSH,
        response: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nended by close",
        close_after: true,
    },
    Case {
        name: "early hints first",
        request: PUSH,
        response: b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        close_after: false,
    },
    Case {
        name: "no content",
        request: "DELETE /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-delete\r\nContent-Length: 0\r\n\r\n",
        response: b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n",
        close_after: false,
    },
    Case {
        name: "forwarding headers replaced",
        request: "POST /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-spoof\r\nx_client_id: mallory\r\nX-Client-Id: mallory\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nKeep-Alive: timeout=9\r\nConnection: keep-alive\r\nTE: trailers\r\nContent-Length: 3\r\n\r\nabc",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        close_after: false,
    },
    Case {
        name: "h2c settings dropped",
        request: "GET /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\nX-Request-Id: rid-h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        close_after: false,
    },
];

/// Reads the responses to one request: any informational ones, then the
/// final one. `Date` is left out, since the two paths may respond in different seconds.
fn read(conn: &mut Conn, head_request: bool) -> Vec<Response> {
    let mut responses = Vec::new();
    loop {
        let mut response = if head_request {
            conn.read_head_response()
        } else {
            conn.read_response()
        };
        response
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("date"));
        let informational = (100..200).contains(&response.status);
        responses.push(response);
        if !informational {
            return responses;
        }
    }
}

/// Starts a gateway with the one client in front of `backend`.
fn start_gateway(backend: &RecordingBackend) -> Gateway {
    let config = ConfigBuilder::new(backend.addr)
        .client(CLIENT_ID, KEY)
        .build();
    Gateway::start(&config)
}

/// Returns [`PUSH`] with a good key.
fn push() -> Vec<u8> {
    PUSH.replace("{key}", &api_key(CLIENT_ID, KEY)).into_bytes()
}

#[test]
fn both_paths_forward_alike() {
    let key = api_key(CLIENT_ID, KEY);
    for case in &CASES {
        let backend = RecordingBackend::start(case.response, case.close_after);
        let gateway = start_gateway(&backend);
        let request = case.request.replace("{key}", &key).into_bytes();
        let head_request = case.request.starts_with("HEAD ");

        // Whole and alone: keygate's own path.
        let mut alone = Conn::connect(gateway.addr());
        alone.send(&request);
        let direct = read(&mut alone, head_request);

        // Followed by a pipelined request: pingora's proxy serves both.
        let mut pipelined = Conn::connect(gateway.addr());
        pipelined.send(&[request.as_slice(), request.as_slice()].concat());
        let first = read(&mut pipelined, head_request);
        let second = read(&mut pipelined, head_request);

        assert_eq!(direct, first, "{}: the responses differ", case.name);
        assert_eq!(
            first, second,
            "{}: the pipelined responses differ",
            case.name
        );
        let received = backend.received();
        assert_eq!(received.len(), 3, "{}: requests at the backend", case.name);
        for other in &received[1..] {
            assert_eq!(
                String::from_utf8_lossy(&received[0].bytes),
                String::from_utf8_lossy(&other.bytes),
                "{}: the backend received different requests",
                case.name
            );
        }
        // Each path has its own pool of backend connections.
        assert_ne!(
            received[0].connection, received[1].connection,
            "{}: both requests came over one backend connection",
            case.name
        );
    }
}

#[test]
fn close_ended_body_keeps_client_connection() {
    let backend = RecordingBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nended by close",
        true,
    );
    let gateway = start_gateway(&backend);
    let request = push();

    let mut conn = Conn::connect(gateway.addr());
    for _ in 0..2 {
        conn.send(&request);
        let response = conn.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.text(), "ended by close");
    }
    assert_eq!(backend.received().len(), 2);
}

#[test]
fn backend_hop_headers_dropped() {
    let backend = RecordingBackend::start(
        b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok",
        false,
    );
    let gateway = start_gateway(&backend);
    let request = push();

    let mut conn = Conn::connect(gateway.addr());
    conn.send(&request);
    let response = conn.read_response();

    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-secret"), None);
    assert_eq!(response.header("keep-alive"), None);
    assert_eq!(response.header("proxy-authenticate"), None);
    assert_eq!(response.header("x-request-id"), Some("rid-push"));
    assert_eq!(response.text(), "ok");
    let received = backend.received();
    let forwarded = String::from_utf8_lossy(&received[0].bytes).to_ascii_lowercase();
    assert!(
        forwarded.contains("\r\nx-client-id: karolin\r\n"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("\r\nx-forwarded-proto: http\r\n"),
        "{forwarded}"
    );
}

#[test]
fn unrequested_switch_is_bad_gateway() {
    let backend = RecordingBackend::start(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nnot http",
        false,
    );
    let gateway = start_gateway(&backend);
    let request = format!(
        "GET /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\nX-Request-Id: rid-switch\r\n\r\n",
        api_key(CLIENT_ID, KEY)
    )
    .into_bytes();

    // Whole and alone: keygate's own path.
    let mut alone = Conn::connect(gateway.addr());
    alone.send(&request);
    let direct = alone.read_response();

    // Followed by a pipelined request: pingora's proxy.
    let mut pipelined = Conn::connect(gateway.addr());
    pipelined.send(&[request.as_slice(), request.as_slice()].concat());
    let first = pipelined.read_response();

    // The request asked for no upgrade, so the backend broke the protocol.
    for (path, response) in [("own path", &direct), ("proxy path", &first)] {
        assert_eq!(response.status, 502, "{path}: {:?}", response.text());
        assert_eq!(response.header("connection"), Some("close"), "{path}");
        assert_eq!(
            response.header("x-request-id"),
            Some("rid-switch"),
            "{path}"
        );
    }
    assert_eq!(direct.body, first.body);
}

/// Time the backend of [`start_holding_backend`] waits for the gateway to
/// close the connection.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// An event on one connection of the backend of [`start_holding_backend`].
#[derive(Debug, PartialEq, Eq)]
enum BackendEvent {
    /// A whole request arrived.
    Request,
    /// The gateway closed the connection before [`HOLD_LIMIT`] passed (true) or not (false).
    Closed(bool),
}

/// Starts a backend that never responds. It reads one request on each
/// connection and waits up to [`HOLD_LIMIT`] for the gateway to close it.
fn start_holding_backend() -> (SocketAddr, mpsc::Receiver<BackendEvent>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("failed to bind the holding backend to 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (events, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(MAX_BACKEND_CONNECTIONS) {
            let Ok(mut stream) = stream else {
                continue;
            };
            let events = events.clone();
            std::thread::spawn(move || {
                if read_request(&mut stream, &mut Vec::new()).is_none() {
                    return;
                }
                let _ = events.send(BackendEvent::Request);
                let closed = stream.set_read_timeout(Some(HOLD_LIMIT)).is_ok()
                    && matches!(stream.read(&mut [0u8; 64]), Ok(0));
                let _ = events.send(BackendEvent::Closed(closed));
            });
        }
    });
    (addr, received)
}

#[test]
fn client_close_cancels_backend_request() {
    let (backend, events) = start_holding_backend();
    let config = ConfigBuilder::new(backend)
        .client(CLIENT_ID, KEY)
        .client(LIMITED_ID, LIMITED_KEY)
        .client_rate_limit(LIMITED_ID, "100000/s")
        .build();
    let gateway = Gateway::start(&config);

    let paths = [
        ("own path", CLIENT_ID, KEY),
        ("proxy path", LIMITED_ID, LIMITED_KEY),
    ];
    for (path, client_id, key) in paths {
        let request_id = format!("rid-gone-{client_id}");
        let mut conn = Conn::connect(gateway.addr());
        conn.send(
            format!(
                "GET /nps/rest/push/p1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\nX-Request-Id: {request_id}\r\n\r\n",
                api_key(client_id, key)
            )
            .as_bytes(),
        );
        let arrived = events.recv_timeout(BACKEND_READ_TIMEOUT);
        assert_eq!(
            arrived,
            Ok(BackendEvent::Request),
            "{path}: request at the backend"
        );
        drop(conn);

        // The gateway gives up a request whose client left, and its backend connection.
        let closed = events.recv_timeout(HOLD_LIMIT * 2);
        assert_eq!(
            closed,
            Ok(BackendEvent::Closed(true)),
            "{path}: the backend connection stayed open after the client left"
        );
        let logged = format!("status=499 client_id=\"{client_id}\" request_id={request_id}");
        assert!(
            gateway.wait_for_log(&logged, BACKEND_READ_TIMEOUT),
            "{path}: no access log line with {logged}"
        );
    }
}
