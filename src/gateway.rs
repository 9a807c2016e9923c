//! The pingora `ProxyHttp` service: route each request, serve admin and
//! health routes, check the key of everything else, and forward what passes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;
use tracing::{info, warn};

use crate::admin;
use crate::clients::DenyReason;
use crate::forward;
use crate::logging::AUTH_FAILURE_LOG;
use crate::metrics::{RouteLabel, UpstreamErrorKind, METRICS};
use crate::reload::{Snapshot, SnapshotStore};
use crate::respond::{self, LocalResponse, FORBIDDEN_BODY};
use crate::routes::Route;

/// Maximum length of a request id kept from a client; a longer or odd one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The gateway service.
pub struct Gateway {
    store: Arc<SnapshotStore>,
    /// Random per process, so request ids from restarts and replicas differ.
    request_id_prefix: u64,
    request_counter: AtomicU64,
}

/// Per-request state carried through the proxy phases.
pub struct RequestCtx {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: RouteLabel,
    request_id: String,
    client_id: Option<Arc<str>>,
    deny_reason: Option<DenyReason>,
    /// The status of a response keygate wrote itself.
    local_status: Option<StatusCode>,
    body_bytes: u64,
}

impl Gateway {
    pub fn new(store: Arc<SnapshotStore>) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Gateway {
            store,
            request_id_prefix: u64::from_ne_bytes(seed),
            request_counter: AtomicU64::new(0),
        }
    }

    /// Keeps a sane client-sent request id, or makes a new one.
    fn request_id(&self, header: &RequestHeader, snapshot: &Snapshot) -> String {
        let mut sent = header
            .headers
            .get_all(&snapshot.settings.request_id_header.0)
            .iter();
        if let (Some(value), None) = (sent.next(), sent.next()) {
            let bytes = value.as_bytes();
            if !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_BYTES
                && bytes.iter().all(|b| b.is_ascii_graphic())
            {
                return String::from_utf8_lossy(bytes).into_owned();
            }
        }
        let count = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{count:016x}", self.request_id_prefix)
    }

    /// Sends a local response and records its status for metrics and the access log.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        response: LocalResponse,
    ) -> Result<bool> {
        ctx.local_status = Some(response.status);
        respond::send(session, &snapshot.settings, &ctx.request_id, response).await?;
        Ok(true)
    }

    async fn deny(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        reason: DenyReason,
    ) -> Result<bool> {
        METRICS.count_auth_failure(reason);
        ctx.deny_reason = Some(reason);
        let (admitted, held_back) = AUTH_FAILURE_LOG.admit();
        if held_back > 0 {
            warn!(
                lines = held_back,
                "auth failure log lines held back by the rate limit"
            );
        }
        if admitted {
            let header = session.req_header();
            warn!(
                reason = reason.as_str(),
                peer = %peer_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                method = %header.method,
                path = header.uri.path(),
                request_id = %ctx.request_id,
                "request refused by the key check"
            );
        }
        let response = LocalResponse {
            status: StatusCode::FORBIDDEN,
            content_type: "application/json",
            body: Bytes::from_static(FORBIDDEN_BODY.as_bytes()),
            headers: Vec::new(),
        };
        self.respond(session, ctx, snapshot, response).await
    }

    /// Handles the admin routes for peers inside `adminAllowFrom`.
    async fn admin(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Arc<Snapshot>,
        route: AdminRoute,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Admin;
        let ip = peer_ip(session);
        let peer = ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let allowed = ip.is_some_and(|ip| {
            snapshot
                .settings
                .admin_allow_from
                .iter()
                .any(|net| net.0.contains(&ip))
        });
        if !allowed {
            info!(
                route = route.name(),
                peer,
                result = 403,
                "admin request rejected: peer outside adminAllowFrom"
            );
            let response = LocalResponse::error(StatusCode::FORBIDDEN, "Access denied");
            return self.respond(session, ctx, snapshot, response).await;
        }
        let method = session.req_header().method.clone();
        let response = match route {
            AdminRoute::Refresh => admin::refresh(&self.store, &method, &peer).await,
            AdminRoute::GenerateClient(id) => {
                admin::generate_client(snapshot, &method, id.as_deref(), &peer)
            }
        };
        self.respond(session, ctx, snapshot, response).await
    }
}

/// An admin route with what it needs from the path, owned so the session can be borrowed again.
enum AdminRoute {
    Refresh,
    GenerateClient(Option<Vec<u8>>),
}

impl AdminRoute {
    fn name(&self) -> &'static str {
        match self {
            AdminRoute::Refresh => "refresh",
            AdminRoute::GenerateClient(_) => "generateclient",
        }
    }
}

/// Returns the client's IP address, with IPv4-mapped IPv6 addresses read as IPv4.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip().to_canonical())
}

fn declared_body_length(header: &RequestHeader) -> Option<u64> {
    header
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn head_size(session: &Session) -> usize {
    match session.as_downstream().as_http1() {
        Some(h1) => h1.get_headers_raw_bytes().len(),
        None => {
            let header = session.req_header();
            header.uri.to_string().len()
                + header
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 4)
                    .sum::<usize>()
        }
    }
}

fn method_allowed(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            snapshot: None,
            route: RouteLabel::Other,
            request_id: String::new(),
            client_id: None,
            deny_reason: None,
            local_status: None,
            body_bytes: 0,
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

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        match &ctx.snapshot {
            Some(snapshot) => Ok(snapshot.upstream.peer()),
            None => Error::e_explain(InternalError, "no snapshot for this request"),
        }
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
        if let Some(kind) = kind {
            METRICS.count_upstream_error(kind);
            let upstream = ctx
                .snapshot
                .as_ref()
                .map(|snapshot| snapshot.upstream.url.to_string())
                .unwrap_or_default();
            warn!(kind = kind.as_str(), upstream, status, error = %error, request_id = %ctx.request_id, "backend request failed");
        } else if status >= 500 {
            warn!(status, error = %error, request_id = %ctx.request_id, "request failed");
        }
        let code = StatusCode::from_u16(status).ok();
        if let (Some(code), Some(snapshot), None) =
            (code, ctx.snapshot.clone(), session.response_written())
        {
            let message = match status {
                413 => "the request body is larger than the gateway accepts",
                502 => "the backend could not be reached or broke the connection",
                504 => "the backend did not respond in time",
                _ => code.canonical_reason().unwrap_or("error"),
            };
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
            let header = session.req_header();
            info!(
                target: "keygate::access",
                method = %header.method,
                path = header.uri.path(),
                status = status.as_u16(),
                client_id = ctx.client_id.as_deref().unwrap_or("-"),
                request_id = %ctx.request_id,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
            );
        }
    }
}

impl Gateway {
    /// Answers the health routes, open to anyone.
    async fn health(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Arc<Snapshot>,
        readiness: bool,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Health;
        let response = if !method_allowed(&session.req_header().method) {
            LocalResponse::error(StatusCode::METHOD_NOT_ALLOWED, "use GET for health")
                .with_header(http::header::ALLOW, "GET, HEAD")
        } else if readiness {
            admin::readiness(snapshot).await
        } else {
            admin::health()
        };
        self.respond(session, ctx, snapshot, response).await
    }

    /// Checks a request for the backend: key, then declared body size.
    async fn check(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Arc<Snapshot>,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Proxy;
        let limits = &snapshot.settings.limits;
        let values = session.req_header().headers.get_all("x-api-key");
        match snapshot
            .clients
            .check(values.iter().map(|value| value.as_bytes()))
        {
            Ok(client_id) => ctx.client_id = Some(Arc::clone(client_id)),
            Err(reason) => return self.deny(session, ctx, snapshot, reason).await,
        }

        if declared_body_length(session.req_header())
            .is_some_and(|length| length > limits.max_body_size.0)
        {
            let response = LocalResponse::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the gateway accepts",
            );
            return self.respond(session, ctx, snapshot, response).await;
        }
        Ok(false)
    }
}

/// Picks the status to record for a request that got no response: 499
/// (client closed the connection, as nginx records it) unless keygate failed.
fn status_without_response(error: Option<&Error>) -> StatusCode {
    match error {
        Some(error) if *error.esource() != ErrorSource::Downstream => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
    }
}

/// Maps a failure to the status to respond with, and the backend error kind when the backend failed.
fn classify_failure(error: &Error) -> (u16, Option<UpstreamErrorKind>) {
    if let HTTPStatus(code) = error.etype() {
        return (*code, None);
    }
    match error.esource() {
        ErrorSource::Upstream => match error.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                (504, Some(UpstreamErrorKind::Timeout))
            }
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
            | TLSHandshakeFailure => (502, Some(UpstreamErrorKind::Connect)),
            ConnectionClosed | ReadError | WriteError | H2Error | InvalidHTTPHeader => {
                (502, Some(UpstreamErrorKind::Reset))
            }
            _ => (502, Some(UpstreamErrorKind::Other)),
        },
        ErrorSource::Downstream => match error.etype() {
            // The client is gone or stalled, so no response can reach it.
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => (0, None),
            _ => (400, None),
        },
        ErrorSource::Internal | ErrorSource::Unset => (500, None),
    }
}
