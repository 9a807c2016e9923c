//! Reads request heads on plain HTTP/1 connections before the proxy engine
//! builds its per-request state: rejects bad keys here, and passes pushes
//! of the usual shape to `fast_forward`.
//!
//! pingora's proxy path costs several times nginx's per rejected request:
//! it sets up a proxy session, response modules and a response header map
//! for every request. A gateway in front of a push service gets many
//! requests with bad keys: retrying clients with a revoked key, scanners.
//! So keygate reads each request head on a plain HTTP/1 connection itself.
//! It responds to the ones its key check rejects with the same 403 bytes,
//! counts and log line as the proxy path.
//!
//! Only the clearest cases are handled here: a complete head within
//! `maxHeaderSize`, `Host` present on HTTP/1.1, a proxied route, no
//! `Transfer-Encoding`, `Expect` or `Upgrade`, and the whole declared body
//! (up to `drainBodyMax`) already read. A request whose key passes goes to
//! `fast_forward` when it is HTTP/1.1, its body is within `maxBodySize`,
//! nothing after it was read, and its client has no rate limit. That path
//! parses the head with pingora and checks the key again before it
//! forwards anything, and the connection comes back here afterwards.
//! Everything else goes to the proxy engine with the bytes read so far
//! put back, and the connection stays with the engine from then on. The
//! engine checks every request again.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use http::uri::PathAndQuery;
use http::StatusCode;
use pingora::apps::ServerApp;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::info;

use crate::clients::DenyReason;
use crate::fast_forward::Forwarder;
use crate::gateway::{log_rejection, RequestIds};
use crate::logging::HEAD_FAILURE_LOG;
use crate::metrics::{RouteLabel, METRICS};
use crate::reload::{Snapshot, SnapshotStore};
use crate::respond::{LocalResponse, FORBIDDEN_BODY};
use crate::routes::Route;

/// Maximum number of fields in a request head parsed here. A head with more goes to the engine.
const MAX_FIELDS: usize = 64;

/// Read size for request heads. A typical push fits in one read.
const READ_CHUNK: usize = 4096;

/// A [`ServerApp`] that rejects bad keys on plain HTTP/1 connections and
/// hands everything else to `inner`.
pub struct EarlyReject<A> {
    inner: Arc<A>,
    forwarder: Forwarder,
    store: Arc<SnapshotStore>,
    request_ids: Arc<RequestIds>,
    /// Set once the inner app's cleanup has closed its idle connections, so
    /// that idle connections here close then too.
    idle_closed: watch::Sender<bool>,
}

impl<A> EarlyReject<A> {
    pub fn new(
        inner: A,
        forwarder: Forwarder,
        store: Arc<SnapshotStore>,
        request_ids: Arc<RequestIds>,
    ) -> Self {
        EarlyReject {
            inner: Arc::new(inner),
            forwarder,
            store,
            request_ids,
            idle_closed: watch::Sender::new(false),
        }
    }
}

/// The outcome of one request read from the connection.
enum Outcome {
    /// Rejected with 403; the connection waits for the next request.
    Rejected,
    /// Rejected with 403, or the client left; the connection is closed.
    Close,
    /// Passed, and of the usual shape: forwarded by `fast_forward`, with the bytes read put back.
    Forward,
    /// For the engine, with the bytes read so far put back.
    HandOver,
}

#[async_trait]
impl<A> ServerApp for EarlyReject<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // TLS connections may speak HTTP/2; the engine serves them whole.
        if !stream.as_any().is::<TcpStream>() {
            return self.inner.process_new(stream, shutdown).await;
        }
        let mut tcp: Box<TcpStream> = stream.into_any().downcast().ok()?;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        loop {
            match self.serve_one(&mut tcp, &mut buffer, shutdown).await {
                Outcome::Rejected => {}
                Outcome::Close => return None,
                Outcome::Forward => {
                    tcp.rewind(&buffer);
                    buffer.clear();
                    let open = self.forwarder.serve(tcp, shutdown).await?;
                    tcp = open.stream.into_any().downcast().ok()?;
                    if let Some(read_ahead) = open.read_ahead {
                        buffer.extend_from_slice(&read_ahead);
                    }
                }
                Outcome::HandOver => {
                    tcp.rewind(&buffer);
                    return self.inner.process_new(tcp, shutdown).await;
                }
            }
        }
    }

    /// Runs when the drain starts. Idle connections here close when the
    /// inner app closes its own, which may be some time into the drain.
    async fn cleanup(&self) {
        self.inner.cleanup().await;
        self.idle_closed.send_replace(true);
    }
}

impl<A> EarlyReject<A> {
    async fn serve_one(
        &self,
        stream: &mut TcpStream,
        buffer: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Outcome {
        // Wait for the first bytes of the next request. An idle connection
        // closes after clientRead, or when the drain closes idle connections.
        if buffer.is_empty() {
            let idle = self.store.current().settings.timeouts.client_read.0;
            let mut idle_closed = self.idle_closed.subscribe();
            let read = tokio::select! {
                biased;
                read = tokio::time::timeout(idle, read_more(stream, buffer)) => read,
                _ = idle_closed.wait_for(|closed| *closed) => return Outcome::Close,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Outcome::Close,
                Ok(Ok(_)) => {}
            }
        }
        let reading = self.store.current_owned();
        let settings = &reading.settings;
        let client_read = settings.timeouts.client_read.0;
        let max_head = usize::try_from(settings.limits.max_header_size.0).unwrap_or(usize::MAX);
        let started = Instant::now();

        // The whole head must arrive within clientRead, not just each read,
        // so a client that sends a byte at a time cannot hold the connection.
        let deadline = started + client_read;
        let request = loop {
            match Head::parse(buffer, settings.request_id_header.0.as_str()) {
                Parsed::Complete(head) => break head,
                Parsed::Invalid => return Outcome::HandOver,
                Parsed::Partial if buffer.len() > max_head => {
                    // The head can only end up over maxHeaderSize, which gets 431.
                    send(stream, &head_too_large_response(), client_read).await;
                    log_head_failure(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        stream,
                        buffer.len(),
                    );
                    METRICS.observe_request(
                        RouteLabel::Other,
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        started.elapsed().as_secs_f64(),
                    );
                    return Outcome::Close;
                }
                Parsed::Partial => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read_more(stream, buffer)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Outcome::Close,
                Err(_) => {
                    // As nginx's client_header_timeout: 408, then close.
                    send(stream, &head_timeout_response(), client_read).await;
                    log_head_failure(StatusCode::REQUEST_TIMEOUT, stream, buffer.len());
                    METRICS.observe_request(
                        RouteLabel::Other,
                        StatusCode::REQUEST_TIMEOUT,
                        started.elapsed().as_secs_f64(),
                    );
                    return Outcome::Close;
                }
            }
        };

        // The snapshot in force once the head is read, as on the proxy path.
        let snapshot = self.store.current_owned();
        let settings = &snapshot.settings;
        let reason = match self.decide(&request, buffer, &snapshot) {
            Decision::Reject(reason) => reason,
            Decision::Forward => return Outcome::Forward,
            Decision::HandOver => return Outcome::HandOver,
        };
        let keep_alive = request.keep_alive && !*shutdown.borrow();
        let request_id = self
            .request_ids
            .for_request(request.request_id.clone().map(|range| &buffer[range]));
        let response = forbidden(
            settings.request_id_header.0.as_str(),
            request_id.as_str(),
            request.is_head,
            keep_alive,
        );
        let consumed = request.head_length + request.body_length;

        METRICS.count_auth_failure(reason);
        log_rejection(
            reason,
            || peer(stream),
            std::str::from_utf8(&buffer[request.method.clone()]).unwrap_or("-"),
            request.target.path(),
            request_id.as_str(),
        );
        let written = send(stream, &response, client_read).await;
        METRICS.observe_request(
            RouteLabel::Proxy,
            StatusCode::FORBIDDEN,
            started.elapsed().as_secs_f64(),
        );
        if !written || !keep_alive {
            return Outcome::Close;
        }
        // Bytes after the body are the next, pipelined, request.
        let _ = buffer.split_to(consumed);
        Outcome::Rejected
    }

    /// Decides what happens to `request`: rejected here, forwarded here, or
    /// handed to the engine (anything unusual).
    fn decide(&self, request: &Head, buffer: &BytesMut, snapshot: &Snapshot) -> Decision {
        let limits = &snapshot.settings.limits;
        let length = request.head_length + request.body_length;
        if request.head_length as u64 > limits.max_header_size.0
            || !request.plain
            || buffer.len() < length
        {
            return Decision::HandOver;
        }
        if snapshot.routes.classify(request.target.path()) != Route::Proxy {
            return Decision::HandOver;
        }
        let values = request.api_keys.iter().map(|range| &buffer[range.clone()]);
        match snapshot.clients.check(values) {
            Err(_) if request.body_length as u64 > limits.drain_body_max.0 => Decision::HandOver,
            Err(reason) => Decision::Reject(reason),
            // A body over the limit gets 413 and a rate limit 429 from the engine.
            // Bytes after the body are pipelined requests, which the engine serves in order.
            Ok(client_id)
                if request.http11
                    && buffer.len() == length
                    && request.body_length as u64 <= limits.max_body_size.0
                    && !snapshot.rate_limits.limits(client_id) =>
            {
                Decision::Forward
            }
            Ok(_) => Decision::HandOver,
        }
    }
}

/// Reads what the client has sent into the spare room of `buffer`.
async fn read_more(stream: &mut TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
    buffer.reserve(READ_CHUNK);
    stream.read_buf(buffer).await
}

/// Writes `response` and flushes it within `time`. Returns whether that worked.
async fn send(stream: &mut TcpStream, response: &[u8], time: Duration) -> bool {
    let written = tokio::time::timeout(time, async {
        stream.write_all(response).await?;
        stream.flush().await
    })
    .await;
    matches!(written, Ok(Ok(())))
}

/// Logs a request head rejected here with 408 or 431, within the rate
/// bound on such lines. `received` is the bytes of head read so far.
fn log_head_failure(status: StatusCode, stream: &TcpStream, received: usize) {
    let (admitted, held_back) = HEAD_FAILURE_LOG.admit();
    if held_back > 0 {
        info!(
            lines = held_back,
            "request head failure lines held back by the rate limit"
        );
    }
    if !admitted {
        return;
    }
    let peer = peer(stream).map_or_else(|| "-".to_string(), |ip| ip.to_string());
    let reason = if status == StatusCode::REQUEST_TIMEOUT {
        "the request head did not arrive within timeouts.clientRead; responded 408 and closed the connection"
    } else {
        "the request head grew past limits.maxHeaderSize; responded 431 and closed the connection"
    };
    info!(status = status.as_u16(), peer, received, "{reason}");
}

fn peer(stream: &TcpStream) -> Option<std::net::IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?;
    Some(addr.ip().to_canonical())
}

/// Writes the 403 response, byte for byte what the proxy path writes.
fn forbidden(
    request_id_header: &str,
    request_id: &str,
    is_head: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let date = get_cached_date();
    let mut response = Vec::with_capacity(256);
    response.extend_from_slice(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ",
    );
    response.extend_from_slice(FORBIDDEN_BODY.len().to_string().as_bytes());
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(request_id_header.as_bytes());
    response.extend_from_slice(b": ");
    response.extend_from_slice(request_id.as_bytes());
    response.extend_from_slice(b"\r\nDate: ");
    response.extend_from_slice(date.as_bytes());
    response.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"\r\nConnection: close\r\n\r\n".as_slice()
    });
    if !is_head {
        response.extend_from_slice(FORBIDDEN_BODY.as_bytes());
    }
    response
}

/// Writes the 408 for a head that did not arrive within clientRead.
fn head_timeout_response() -> Vec<u8> {
    close_response(
        StatusCode::REQUEST_TIMEOUT,
        "the request head did not arrive within timeouts.clientRead",
    )
}

/// Writes an error response in keygate's JSON shape that closes the connection.
fn close_response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = LocalResponse::error(status, message).body;
    let mut response = Vec::with_capacity(256);
    response.extend_from_slice(b"HTTP/1.1 ");
    response.extend_from_slice(status.as_str().as_bytes());
    response.push(b' ');
    response.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    response.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    response.extend_from_slice(body.len().to_string().as_bytes());
    response.extend_from_slice(b"\r\nDate: ");
    response.extend_from_slice(get_cached_date().as_bytes());
    response.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    response.extend_from_slice(&body);
    response
}

/// Writes the 431 for a head that grew past maxHeaderSize before it ended.
fn head_too_large_response() -> Vec<u8> {
    close_response(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request head is larger than the gateway accepts",
    )
}

/// Returns whether `buffer` contains the blank line that ends a request head.
fn head_complete(buffer: &[u8]) -> bool {
    buffer.windows(4).any(|window| window == b"\r\n\r\n")
}

/// Reads a `Content-Length` value: ASCII digits only, as RFC 9110 section 8.6 writes it.
fn digits(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Returns whether a `Host` value is a plain host name or address with an
/// optional port; anything else goes to the engine.
fn is_plain_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]_".contains(byte))
}

/// Returns the range that `part`, a slice of `buffer`, takes in it.
fn range_in(buffer: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buffer.as_ptr() as usize;
    start..start + part.len()
}

/// The parts of a request head this path needs.
struct Head {
    head_length: usize,
    body_length: usize,
    /// Byte range of the method in the buffer.
    method: Range<usize>,
    target: PathAndQuery,
    /// Byte ranges of the `x-api-key` values in the buffer.
    api_keys: SmallVec<[Range<usize>; 1]>,
    /// Byte range of the request id field's value, when there is exactly one.
    request_id: Option<Range<usize>>,
    keep_alive: bool,
    is_head: bool,
    http11: bool,
    /// No field that changes framing or the connection, and nothing the
    /// engine would reject differently.
    plain: bool,
}

/// The outcome chosen for a request read here.
enum Decision {
    Reject(DenyReason),
    Forward,
    HandOver,
}

enum Parsed {
    Complete(Head),
    Partial,
    Invalid,
}

impl Head {
    /// Parses the head at the start of `buffer`; `request_id_header` is the
    /// configured name of the request id field.
    fn parse(buffer: &[u8], request_id_header: &str) -> Parsed {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut fields);
        let head_length = match request.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            // More fields than parsed here: the engine reads the head, once it is all here.
            Err(httparse::Error::TooManyHeaders) if !head_complete(buffer) => {
                return Parsed::Partial
            }
            Err(_) => return Parsed::Invalid,
        };
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Parsed::Invalid;
        };
        let Ok(path_and_query) = PathAndQuery::try_from(target) else {
            return Parsed::Invalid;
        };

        let mut plain = target.starts_with('/') && method != "CONNECT";
        let mut host = 0;
        let mut content_length: Option<usize> = None;
        let mut close = false;
        let mut keep_alive_token = false;
        let mut connection_fields = 0;
        let mut api_keys = SmallVec::new();
        let mut request_ids: SmallVec<[&[u8]; 1]> = SmallVec::new();
        for field in request.headers.iter() {
            let name = field.name;
            if name.eq_ignore_ascii_case("x-api-key") {
                api_keys.push(range_in(buffer, field.value));
            } else if name.eq_ignore_ascii_case("host") {
                host += 1;
                plain &= is_plain_host(field.value);
            } else if name.eq_ignore_ascii_case("content-length") {
                match (content_length, digits(field.value)) {
                    (None, Some(length)) => content_length = Some(length),
                    _ => plain = false,
                }
            } else if name.eq_ignore_ascii_case("connection") {
                // One `close` or one `keep-alive`; any other form goes to
                // the engine, whose reading of it is the one that counts.
                let token = field.value.trim_ascii();
                connection_fields += 1;
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else {
                    plain = false;
                }
            } else if name.eq_ignore_ascii_case(request_id_header) {
                request_ids.push(field.value);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade")
            {
                plain = false;
            }
        }
        plain &= connection_fields <= 1;
        match version {
            1 => plain &= host == 1,
            0 => plain &= host <= 1,
            _ => plain = false,
        }
        let keep_alive = !close && (version == 1 || keep_alive_token);
        // Only a single request id is kept, as on the proxy path.
        let request_id = match request_ids.as_slice() {
            [only] => Some(range_in(buffer, only)),
            _ => None,
        };
        Parsed::Complete(Head {
            head_length,
            body_length: content_length.unwrap_or(0),
            method: range_in(buffer, method.as_bytes()),
            target: path_and_query,
            api_keys,
            request_id,
            keep_alive,
            is_head: method == "HEAD",
            http11: version == 1,
            plain,
        })
    }
}
