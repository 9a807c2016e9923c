//! The pingora `ProxyHttp` service: route each request, serve admin and
//! health routes, check the key of everything else, and forward what passes
//! to the backend the balancer picks.

mod downstream;
mod local;

use downstream::{client_tls, head_size, peer_ip};
use local::AdminRoute;
pub use local::{log_rejection, over_limit};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::ErrorSource;
use tracing::{info, warn};

use crate::attempts::Attempts;
use crate::clients::DenyReason;
use crate::failure::{classify_failure, failure_message, log_backend_failure};
use crate::forward;
use crate::metrics::{RouteLabel, METRICS};
use crate::reload::{Snapshot, SnapshotStore};
use crate::respond::LocalResponse;
use crate::routes::Route;

/// Maximum length of a request id kept from a client; a longer or odd one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The gateway service.
pub struct Gateway {
    store: Arc<SnapshotStore>,
    request_ids: Arc<RequestIds>,
}

/// Request ids: a sane one sent by the client, or a new one.
pub struct RequestIds {
    /// Random per process, so request ids from restarts and replicas differ.
    prefix: u64,
    counter: AtomicU64,
}

/// One request's id, held as a header value so that the request to the
/// backend, the response and the log lines share one copy.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored, which to_str accepts.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl RequestIds {
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        RequestIds {
            prefix: u64::from_ne_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps the request id in the `name` field of `header` when there is
    /// exactly one and it is sane; otherwise makes a new one.
    pub fn for_header(&self, header: &RequestHeader, name: &http::HeaderName) -> RequestId {
        let mut sent = header.headers.get_all(name).iter();
        let only = match (sent.next(), sent.next()) {
            (Some(value), None) => Some(value.as_bytes()),
            _ => None,
        };
        self.for_request(only)
    }

    /// Keeps `sent`, the one request id the client sent, when it is
    /// printable ASCII of sane length; otherwise makes a new one.
    pub fn for_request(&self, sent: Option<&[u8]>) -> RequestId {
        if let Some(sent) = sent {
            if !sent.is_empty()
                && sent.len() <= MAX_REQUEST_ID_BYTES
                && sent.iter().all(u8::is_ascii_graphic)
            {
                if let Ok(value) = HeaderValue::from_bytes(sent) {
                    return RequestId(value);
                }
            }
        }
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        // Hex of the prefix and the count, 16 digits each, without the formatting machinery.
        let mut digits = [0u8; 32];
        let (prefix, counter) = digits.split_at_mut(16);
        let encoded = hex::encode_to_slice(self.prefix.to_be_bytes(), prefix)
            .and_then(|()| hex::encode_to_slice(count.to_be_bytes(), counter));
        match encoded
            .ok()
            .and_then(|()| HeaderValue::from_bytes(&digits).ok())
        {
            Some(value) => RequestId(value),
            None => RequestId(HeaderValue::from_static("-")),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-request state carried through the proxy phases.
pub struct RequestCtx {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: RouteLabel,
    request_id: RequestId,
    client_id: Option<Arc<str>>,
    deny_reason: Option<DenyReason>,
    /// The status of a response keygate wrote itself.
    local_status: Option<StatusCode>,
    body_bytes: u64,
    attempts: Attempts,
}

impl Gateway {
    pub fn new(store: Arc<SnapshotStore>, request_ids: Arc<RequestIds>) -> Self {
        Gateway { store, request_ids }
    }

    /// Keeps a sane client-sent request id, or makes a new one.
    fn request_id(&self, header: &RequestHeader, snapshot: &Snapshot) -> RequestId {
        self.request_ids
            .for_header(header, &snapshot.settings.request_id_header.0)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            route: RouteLabel::Other,
            request_id: RequestId::default(),
            client_id: None,
            deny_reason: None,
            local_status: None,
            body_bytes: 0,
            attempts: Attempts::default(),
        }
    }

    /// Routes the request and serves every route keygate serves itself.
    /// Returns `Ok(true)` when the response was written, `Ok(false)` for a
    /// request that passed the key check and goes to the backend.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.store.current_owned();
        ctx.snapshot = Some(Arc::clone(&snapshot));
        let settings = &snapshot.settings;
        session.set_read_timeout(Some(settings.timeouts.client_read.0));
        // Clients may send the next request before reading this response
        // (RFC 9112 section 9.3.2); pingora drops such requests unless asked to serve them in order.
        session.set_pipelining_enabled(true);

        // The idle limit applies only where the client asked to keep the connection.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(settings.timeouts.client_read.0.as_secs().max(1)));
        }
        ctx.request_id = self.request_id(session.req_header(), &snapshot);

        if head_size(session) as u64 > settings.limits.max_header_size.0 {
            let message = "the request head is larger than the gateway accepts";
            let response =
                LocalResponse::error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message);
            return self.respond(session, ctx, &snapshot, response).await;
        }

        // HTTP/1.1 requires a Host header (RFC 9112 section 3.2).
        let header = session.req_header();
        if header.version == http::Version::HTTP_11
            && !header.headers.contains_key(http::header::HOST)
        {
            let response =
                LocalResponse::error(StatusCode::BAD_REQUEST, "the request has no Host header");
            return self.respond(session, ctx, &snapshot, response).await;
        }

        match snapshot.routes.classify(session.req_header().uri.path()) {
            Route::Proxy => self.check(session, ctx, &snapshot).await,
            Route::Refresh => {
                self.admin(session, ctx, &snapshot, AdminRoute::Refresh)
                    .await
            }
            Route::GenerateClient(id) => {
                self.admin(session, ctx, &snapshot, AdminRoute::GenerateClient(id))
                    .await
            }
            Route::Health => self.health(session, ctx, &snapshot, false).await,
            Route::Readiness => self.health(session, ctx, &snapshot, true).await,
            Route::NotFound => {
                let response = LocalResponse::error(
                    StatusCode::NOT_FOUND,
                    "no route here; requests go under the context path",
                );
                self.respond(session, ctx, &snapshot, response).await
            }
            Route::BadPath => {
                warn!(
                    path = session.req_header().uri.path(),
                    request_id = %ctx.request_id,
                    "path with dot segments, encoded separators or parameters refused"
                );
                let message = "the path has dot segments, an encoded '/' or '\\', or a ';' parameter in the context path";
                self.respond(
                    session,
                    ctx,
                    &snapshot,
                    LocalResponse::error(StatusCode::BAD_REQUEST, message),
                )
                .await
            }
        }
    }

    /// Picks the backend: the retry choice after a failed connect, else the
    /// next healthy backend in weighted round-robin order. With no healthy
    /// backend the request fails at once with 502.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(snapshot) = &ctx.snapshot else {
            return Error::e_explain(InternalError, "no snapshot for this request");
        };
        let backend = ctx.attempts.pick(&snapshot.balancer)?;
        Ok(Box::new(backend.peer.clone()))
    }

    /// Marks a failed connect for one retry on another healthy backend. The
    /// request has not reached any backend yet, so the retry cannot send it twice.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        error: Box<Error>,
    ) -> Box<Error> {
        match &ctx.snapshot {
            Some(snapshot) => {
                ctx.attempts
                    .connect_failed(&snapshot.balancer, error, &ctx.request_id)
            }
            None => error,
        }
    }

    /// Counts the request for the backend it is about to be sent to.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(backend) = &ctx.attempts.backend {
            backend.requests.inc();
        }
        Ok(())
    }

    /// Sets identity and forwarding headers and drops hop-by-hop ones.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(snapshot), Some(client_id)) = (&ctx.snapshot, &ctx.client_id) else {
            return Error::e_explain(InternalError, "forwarding a request that was not checked");
        };
        forward::prepare_request(
            upstream,
            &snapshot.settings,
            client_id,
            &ctx.request_id,
            peer_ip(session),
            client_tls(session),
        )
    }

    /// Counts body bytes and stops a body that grows past `maxBodySize` with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(chunk), Some(snapshot)) = (body.as_ref(), &ctx.snapshot) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > snapshot.settings.limits.max_body_size.0 {
                return Error::e_explain(
                    HTTPStatus(413),
                    "request body larger than limits.maxBodySize",
                );
            }
        }
        Ok(())
    }

    /// Rejects a `101` to a request that offered no upgrade, as keygate's
    /// own forwarding path does. pingora 0.9.1 would pass it on and tunnel.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        forward::reject_unrequested_switch(session.req_header(), response)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match &ctx.snapshot {
            Some(snapshot) => {
                forward::prepare_response(response, &snapshot.settings, &ctx.request_id)
            }
            None => Ok(()),
        }
    }

    /// Maps failures to 502 (backend refused or broke the connection), 504
    /// (backend too slow) or the status carried by the error, and responds
    /// with the JSON error shape when nothing was sent yet.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, kind) = classify_failure(error);
        let sent_status = session
            .response_written()
            .map(|header| header.status.as_u16());
        if let Some(kind) = kind {
            METRICS.count_upstream_error(kind);
            let backend = ctx.attempts.label();
            log_backend_failure(
                kind,
                backend,
                status,
                sent_status,
                error,
                ctx.request_id.as_str(),
            );
        } else if status >= 500 {
            warn!(status, error = %error, request_id = %ctx.request_id, "request failed");
        }
        let code = StatusCode::from_u16(status).ok();
        if let (Some(code), Some(snapshot), None) = (code, ctx.snapshot.clone(), sent_status) {
            let message = failure_message(code, ctx.attempts.no_backend);
            session.set_keepalive(None);
            if let Err(err) = self
                .respond(session, ctx, &snapshot, LocalResponse::error(code, message))
                .await
            {
                info!(error = %err, request_id = %ctx.request_id, "failed to send the error response to the client");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // fail_to_proxy logs every failure with its request id.
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        _error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        // fail_to_connect logs each retry it starts with its request id and
        // both backends. pingora's line stays for its own retries on pooled
        // connections.
        ctx.attempts.retrying()
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        // Method and path only: pingora's own summary adds the Host header, and the query may carry anything.
        let header = session.req_header();
        format!("{} {}", header.method, header.uri.path())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|header| header.status))
            .unwrap_or_else(|| status_without_response(error));
        let elapsed = ctx.started.elapsed();
        METRICS.observe_request(ctx.route, status, elapsed.as_secs_f64());

        let Some(snapshot) = &ctx.snapshot else {
            return;
        };
        if let Some(client_id) = &ctx.client_id {
            if snapshot.settings.metrics.per_client {
                METRICS.count_client_request(client_id);
            }
        }
        // Refused requests are logged by the rate-bounded auth-failure line instead.
        if snapshot.settings.log.access && ctx.deny_reason.is_none() {
            let client_id = ctx.client_id.as_deref().unwrap_or("-");
            log_access(
                session.req_header(),
                status,
                client_id,
                &ctx.request_id,
                elapsed,
            );
        }
    }
}

/// Writes the access log line of one request.
pub fn log_access(
    header: &RequestHeader,
    status: StatusCode,
    client_id: &str,
    request_id: &RequestId,
    elapsed: Duration,
) {
    info!(
        target: "keygate::access",
        method = %header.method,
        path = header.uri.path(),
        status = status.as_u16(),
        client_id,
        request_id = %request_id,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
    );
}

/// Picks the status to record for a request that got no response: 499
/// (client closed the connection, as nginx records it) unless keygate failed.
pub fn status_without_response(error: Option<&Error>) -> StatusCode {
    match error {
        Some(error) if *error.esource() != ErrorSource::Downstream => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
    }
}
