//! Forwards plain HTTP/1 requests whose key passed on pingora-core's HTTP
//! sessions and connection pool, without pingora's proxy framework.
//!
//! pingora's proxy framework adds per-request contexts and modules, copies
//! of the response head, and tasks and channels that carry the body between
//! the two sides. Under callgrind a forwarded push cost about 122,000
//! instructions through it and about 100,000 here (BENCHMARKS.md). The early
//! path in `early_reject` has read the whole request already. When it is a
//! push of the usual shape (HTTP/1.1, a proxied route, a `Content-Length`
//! body that is all here, nothing after it, no rate limit for the client),
//! keygate forwards it here. pingora's HTTP/1 session parses the head again,
//! and the key is checked again on that parse, which is the one forwarded.
//!
//! The request to the backend and the response to the client get the same
//! edits, errors, retries, counts and log lines as on the proxy path in
//! `gateway`. tests/fast_forward.rs compares the two paths.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{StatusCode, Version};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as BackendSession;
use pingora::protocols::http::{HttpTask, ServerSession};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use smallvec::SmallVec;
use tracing::{info, warn};

use crate::attempts::Attempts;
use crate::failure::{classify_failure, failure_message, log_backend_failure};
use crate::forward;
use crate::gateway::{
    log_access, log_rejection, over_limit, status_without_response, RequestId, RequestIds,
};
use crate::metrics::{RouteLabel, METRICS};
use crate::reload::{Snapshot, SnapshotStore};
use crate::respond::{self, LocalResponse};
use crate::routes::Route;

/// The header that carries `base64(clientId:key)`.
static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Seconds an idle kept-alive connection stays open before the first
/// request's settings apply, as pingora sets it.
const FIRST_KEEPALIVE_SECONDS: u64 = 60;

/// The forwarding side of the gateway for requests of the usual shape.
pub struct Forwarder {
    store: Arc<SnapshotStore>,
    request_ids: Arc<RequestIds>,
    backends: Connector,
    /// Attempts per request, as pingora's `max_retries`.
    max_attempts: usize,
}

/// A connection kept open after a request, with bytes read past its end.
pub struct KeptOpen {
    pub stream: Stream,
    pub read_ahead: Option<BytesMut>,
}

/// The request being forwarded, with what its log line and counts need.
struct Forwarding {
    started: Instant,
    snapshot: Arc<Snapshot>,
    request_id: RequestId,
    client_id: Arc<str>,
    attempts: Attempts,
    /// The status of the response head sent to the client, if any.
    sent_status: Option<StatusCode>,
}

impl Forwarder {
    pub fn new(
        store: Arc<SnapshotStore>,
        request_ids: Arc<RequestIds>,
        options: ConnectorOptions,
        max_attempts: usize,
    ) -> Self {
        Forwarder {
            store,
            request_ids,
            backends: Connector::new(Some(options)),
            max_attempts: max_attempts.max(1),
        }
    }

    /// Serves the one request at the start of `stream`, whose head and
    /// body the early path has read and put back. Returns the connection
    /// when it stays open for the next request.
    pub async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<KeptOpen> {
        let started = Instant::now();
        // The early path has read the whole head, so this is the snapshot in force once it was read.
        let snapshot = self.store.current_owned();
        let settings = &snapshot.settings;
        let mut client = ServerSession::new_http1(stream);
        // The head is all here already, but a read that waits for more must still end.
        client.set_read_timeout(Some(settings.timeouts.client_read.0));
        // As pingora's HTTP server sets it before each request it reads.
        if *shutdown.borrow() {
            client.set_keepalive(None);
        } else {
            client.set_keepalive(Some(FIRST_KEEPALIVE_SECONDS));
        }
        match client.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                // pingora's parser is stricter than the early one here, so respond as its proxy does.
                if matches!(error.etype(), InvalidHTTPHeader) {
                    let _ = client.respond_error(400).await;
                }
                return None;
            }
        }

        // A client may send its next request before this response (RFC 9112
        // section 9.3.2). The session keeps those bytes for the next read,
        // as on the proxy path, instead of failing the request.
        client.set_pipelining_enabled(true);

        // Reading the head turns keep-alive back on when the request allows it.
        if *shutdown.borrow() {
            client.set_keepalive(None);
        }
        if client.get_keepalive().is_some() {
            client.set_keepalive(Some(settings.timeouts.client_read.0.as_secs().max(1)));
        }
        let header = client.req_header();
        let request_id = self
            .request_ids
            .for_header(header, &settings.request_id_header.0);
        if snapshot.routes.classify(header.uri.path()) != Route::Proxy {
            // The early path saw a proxied route in the same bytes.
            warn!(request_id = %request_id, "request head read differently on the second parse; closing the connection");
            return None;
        }
        let keys = header.headers.get_all(&X_API_KEY);
        let client_id = match snapshot
            .clients
            .check(keys.iter().map(HeaderValue::as_bytes))
        {
            Ok(client_id) => Arc::clone(client_id),
            Err(reason) => {
                // The key expired or the configuration changed since the early check.
                METRICS.count_auth_failure(reason);
                log_rejection(
                    reason,
                    || peer_ip(&client),
                    header.method.as_str(),
                    header.uri.path(),
                    request_id.as_str(),
                );
                let response = LocalResponse::forbidden();
                let sent = send_local(&mut client, &snapshot, &request_id, response).await;
                let status = StatusCode::FORBIDDEN;
                METRICS.observe_request(RouteLabel::Proxy, status, started.elapsed().as_secs_f64());
                return if sent { keep_open(client).await } else { None };
            }
        };

        let limited = over_limit(&snapshot, &client_id, client.req_header());
        let mut request = Forwarding {
            started,
            snapshot,
            request_id,
            client_id,
            attempts: Attempts::default(),
            sent_status: None,
        };
        if let Some(response) = limited {
            // A reload since the early check gave the client a rate limit or lowered maxBodySize.
            let status = response.status;
            let snapshot = Arc::clone(&request.snapshot);
            let sent = send_local(&mut client, &snapshot, &request.request_id, response).await;
            request.log(&client, status);
            return if sent { keep_open(client).await } else { None };
        }
        let result = self.forward(&mut client, &mut request).await;
        let status = match &result {
            Ok(()) => request.sent_status.unwrap_or(StatusCode::OK),
            Err(error) => self.fail(&mut client, &mut request, error).await,
        };
        request.log(&client, status);
        match result {
            Ok(()) => keep_open(client).await,
            Err(_) => None,
        }
    }

    /// Sends the request to a backend and its response to the client,
    /// trying again where the proxy path would.
    async fn forward(&self, client: &mut ServerSession, request: &mut Forwarding) -> Result<()> {
        let settings = &request.snapshot.settings;
        let mut upstream = Box::new(client.req_header().clone());
        upstream.set_version(Version::HTTP_11);
        forward::prepare_request(
            &mut upstream,
            settings,
            &request.client_id,
            &request.request_id,
            peer_ip(client),
            false,
        )
        .map_err(|error| error.into_in())?;
        let idempotent = upstream.method.is_idempotent();
        let mut upstream = Some(upstream);

        let mut body: SmallVec<[Bytes; 1]> = SmallVec::new();
        while let Some(chunk) = client
            .read_request_body()
            .await
            .map_err(|error| error.into_down())?
        {
            body.push(chunk);
        }

        let mut attempts = 0;
        loop {
            attempts += 1;
            let backend = request.attempts.pick(&request.snapshot.balancer)?;
            let peer = &backend.peer;
            let (mut session, reused) = match self.backends.get_http_session(peer).await {
                Ok(connected) => connected,
                Err(error) => {
                    let balancer = &request.snapshot.balancer;
                    let error = request.attempts.connect_failed(
                        balancer,
                        error.into_up(),
                        &request.request_id,
                    );
                    if error.retry() && attempts < self.max_attempts {
                        continue;
                    }
                    return Err(error);
                }
            };
            session.read_timeout = peer.options.read_timeout;
            session.write_timeout = peer.options.write_timeout;
            backend.requests.inc();

            // The head goes to the backend by value, so a request that may be sent again keeps a copy.
            let head = if idempotent && reused && attempts < self.max_attempts {
                upstream.clone()
            } else {
                upstream.take()
            };
            let Some(head) = head else {
                return Error::e_explain(InternalError, "no request head left to send");
            };
            match self
                .exchange(client, &mut session, head, &body, request)
                .await
            {
                Ok(()) => {
                    let idle = peer.options.idle_timeout;
                    self.backends
                        .release_http_session(session, peer, idle)
                        .await;
                    return Ok(());
                }
                Err(mut error) => {
                    // As pingora's default: a request that failed on a pooled
                    // connection before any response is sent again when it is idempotent.
                    if upstream.is_some() && request.sent_status.is_none() {
                        error.retry.decide_reuse(reused);
                        if error.retry() {
                            warn!(error = %error, request_id = %request.request_id, "request failed on a pooled backend connection; retrying");
                            continue;
                        }
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Writes the request to the backend and copies its response to the client.
    async fn exchange(
        &self,
        client: &mut ServerSession,
        backend: &mut BackendSession,
        head: Box<RequestHeader>,
        body: &[Bytes],
        request: &mut Forwarding,
    ) -> Result<()> {
        let upstream = |error: Box<Error>| error.into_up();
        backend.write_request_header(head).await.map_err(upstream)?;
        for chunk in body {
            backend.write_body(chunk).await.map_err(upstream)?;
        }
        backend.finish_body().await.map_err(upstream)?;

        let settings = &request.snapshot.settings;
        let is_head = client.req_header().method == http::Method::HEAD;
        loop {
            // As on the proxy path, a client that leaves before the response
            // is complete ends the request and the backend connection.
            let task = tokio::select! {
                biased;
                task = backend.read_response_task() => task.map_err(upstream)?,
                error = client_gone(client) => return Err(error),
            };
            match task {
                HttpTask::Header(mut response, end) => {
                    forward::reject_unrequested_switch(client.req_header(), &response)?;
                    let informational = response.status.is_informational();
                    if !informational && !end && delimited_by_close(&response, is_head) {
                        // As pingora's proxy: the body goes to the client chunked, so
                        // the client connection can stay open.
                        response.set_version(Version::HTTP_11);
                        response
                            .insert_header(http::header::TRANSFER_ENCODING, "chunked")
                            .map_err(|error| error.into_in())?;
                    }
                    forward::prepare_response(&mut response, settings, &request.request_id)
                        .map_err(|error| error.into_in())?;
                    if !informational {
                        request.sent_status = Some(response.status);
                    }
                    client
                        .write_response_header(response)
                        .await
                        .map_err(|error| error.into_down())?;
                    if end && !informational {
                        break;
                    }
                }
                HttpTask::Body(Some(bytes), end) => {
                    client
                        .write_response_body(bytes, end)
                        .await
                        .map_err(|error| error.into_down())?;
                    if end {
                        break;
                    }
                }
                HttpTask::Body(None, true) | HttpTask::Done => break,
                HttpTask::Body(None, false) | HttpTask::Trailer(_) => {}
                HttpTask::Failed(error) => return Err(error.into_up()),
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(InvalidHTTPHeader, "upgraded body from the backend")
                        .map_err(upstream);
                }
            }
        }
        Ok(())
    }

    /// Maps a failure to its status as the proxy path does, counts and logs
    /// it, and sends the error response when no response head was sent yet.
    /// Returns the status to record.
    async fn fail(
        &self,
        client: &mut ServerSession,
        request: &mut Forwarding,
        error: &Error,
    ) -> StatusCode {
        let (status, kind) = classify_failure(error);
        let sent = request.sent_status.map(|status| status.as_u16());
        if let Some(kind) = kind {
            METRICS.count_upstream_error(kind);
            let backend = request.attempts.label();
            let request_id = request.request_id.as_str();
            log_backend_failure(kind, backend, status, sent, error, request_id);
        } else if status >= 500 {
            warn!(status, error = %error, request_id = %request.request_id, "request failed");
        }
        if let Some(sent) = request.sent_status {
            return sent;
        }
        let Ok(code) = StatusCode::from_u16(status) else {
            return status_without_response(Some(error));
        };
        client.set_keepalive(None);
        let message = failure_message(code, request.attempts.no_backend);
        let response = LocalResponse::error(code, message);
        let snapshot = Arc::clone(&request.snapshot);
        if !send_local(client, &snapshot, &request.request_id, response).await {
            info!(request_id = %request.request_id, "failed to send the error response to the client");
        }
        code
    }
}

impl Forwarding {
    /// Records the request in the metrics and the access log, as the proxy path's `logging` does.
    fn log(&self, client: &ServerSession, status: StatusCode) {
        let elapsed = self.started.elapsed();
        METRICS.observe_request(RouteLabel::Proxy, status, elapsed.as_secs_f64());
        let settings = &self.snapshot.settings;
        if settings.metrics.per_client {
            METRICS.count_client_request(&self.client_id);
        }
        if settings.log.access {
            let header = client.req_header();
            log_access(header, status, &self.client_id, &self.request_id, elapsed);
        }
    }
}

/// Ends the request and returns the connection when it can take another.
async fn keep_open(client: ServerSession) -> Option<KeptOpen> {
    let reusable = client.finish().await.ok()??;
    let (stream, read_ahead) = reusable.into_parts();
    Some(KeptOpen { stream, read_ahead })
}

/// Sends a local response and returns whether it was written.
async fn send_local(
    client: &mut ServerSession,
    snapshot: &Snapshot,
    request_id: &RequestId,
    response: LocalResponse,
) -> bool {
    let Ok(header) = respond::response_header(&snapshot.settings, request_id, &response) else {
        return false;
    };
    let is_head = client.req_header().method == http::Method::HEAD;
    if client
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return false;
    }
    if !is_head
        && client
            .write_response_body(response.body, true)
            .await
            .is_err()
    {
        return false;
    }
    client.finish_body().await.is_ok()
}

/// Waits until the client closes or breaks its connection, and returns that
/// error. The request body is all read, so bytes that arrive meanwhile
/// start a pipelined request. The session keeps them for the next read,
/// and the wait goes on.
async fn client_gone(client: &mut ServerSession) -> Box<Error> {
    match client.read_body_or_idle(true).await {
        Err(error) => error.into_down(),
        // Once the body is read, the session returns only errors.
        Ok(_) => std::future::pending().await,
    }
}

/// Returns whether the body of `response` ends only when the backend closes the connection.
fn delimited_by_close(response: &ResponseHeader, is_head: bool) -> bool {
    let status = response.status.as_u16();
    !is_head
        && status != 204
        && status != 304
        && !response
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
        && !response.headers.contains_key(http::header::CONTENT_LENGTH)
}

/// Returns the client's IP address, with IPv4-mapped IPv6 addresses read as IPv4.
fn peer_ip(client: &ServerSession) -> Option<IpAddr> {
    client
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip().to_canonical())
}
