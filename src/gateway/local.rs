//! The requests keygate responds to itself: admin and health routes, refused
//! keys, exceeded rate limits and bodies declared too large.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::{info, warn};

use super::{peer_ip, Gateway, RequestCtx};
use crate::admin;
use crate::admin_access::{admin_access, AdminAccess};
use crate::clients::DenyReason;
use crate::logging::AUTH_FAILURE_LOG;
use crate::metrics::{RouteLabel, METRICS};
use crate::reload::Snapshot;
use crate::respond::{self, LocalResponse};

/// The header that carries `base64(clientId:key)`.
static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

impl Gateway {
    /// Sends a local response and records its status for metrics and the access log.
    pub(super) async fn respond(
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
        let header = session.req_header();
        log_rejection(
            reason,
            || peer_ip(session),
            header.method.as_str(),
            header.uri.path(),
            ctx.request_id.as_str(),
        );
        self.respond(session, ctx, snapshot, LocalResponse::forbidden())
            .await
    }
}

/// Logs a rejected key, within the rate bound on auth-failure lines. `peer`
/// is called only for a line that is written.
pub fn log_rejection(
    reason: DenyReason,
    peer: impl FnOnce() -> Option<IpAddr>,
    method: &str,
    path: &str,
    request_id: &str,
) {
    let (admitted, held_back) = AUTH_FAILURE_LOG.admit();
    if held_back > 0 {
        warn!(
            lines = held_back,
            "auth failure log lines held back by the rate limit"
        );
    }
    if admitted {
        warn!(
            reason = reason.as_str(),
            peer = %peer().map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            method = %method,
            path,
            request_id,
            "request refused by the key check"
        );
    }
}

impl Gateway {
    /// Handles the admin routes for peers inside `adminAllowFrom` and for peers that send the admin token.
    pub(super) async fn admin(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Arc<Snapshot>,
        route: AdminRoute,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Admin;
        let ip = peer_ip(session);
        let peer = ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let authorization = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION);
        match admin_access(
            &snapshot.settings,
            ip,
            authorization.iter().map(|value| value.as_bytes()),
        ) {
            AdminAccess::AllowedPeer => {}
            AdminAccess::Token => {
                info!(
                    route = route.name(),
                    peer,
                    admitted_by = "adminToken",
                    "admin request from outside adminAllowFrom admitted"
                );
            }
            AdminAccess::Denied(reason) => {
                info!(
                    route = route.name(),
                    peer,
                    result = 403,
                    reason,
                    "admin request rejected"
                );
                let response = LocalResponse::error(StatusCode::FORBIDDEN, "Access denied");
                return self.respond(session, ctx, snapshot, response).await;
            }
        }
        let method = session.req_header().method.clone();
        let response = match route {
            AdminRoute::Refresh => admin::refresh(&self.store, &method, &peer).await,
            AdminRoute::GenerateClient(id) => {
                let query = session.req_header().uri.query().unwrap_or("");
                admin::generate_client(snapshot, &method, id.as_deref(), query, &peer)
            }
        };
        self.respond(session, ctx, snapshot, response).await
    }

    /// Serves the health routes, which are open to anyone.
    pub(super) async fn health(
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

    /// Checks a request for the backend: key, then the client's rate limit,
    /// then declared body size.
    pub(super) async fn check(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Arc<Snapshot>,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Proxy;
        let values = session.req_header().headers.get_all(&X_API_KEY);
        match snapshot
            .clients
            .check(values.iter().map(|value| value.as_bytes()))
        {
            Ok(client_id) => ctx.client_id = Some(Arc::clone(client_id)),
            Err(reason) => return self.deny(session, ctx, snapshot, reason).await,
        }

        if let Some(client_id) = &ctx.client_id {
            if let Some(response) = over_limit(snapshot, client_id, session.req_header()) {
                return self.respond(session, ctx, snapshot, response).await;
            }
        }
        Ok(false)
    }
}

/// An admin route with what it needs from the path, owned so the session can be borrowed again.
pub(super) enum AdminRoute {
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

/// Checks a request whose key passed against its client's rate limit, then
/// its declared body size. Returns the response for a request that must not
/// go to the backend: 429 or 413.
pub fn over_limit(
    snapshot: &Snapshot,
    client_id: &str,
    header: &RequestHeader,
) -> Option<LocalResponse> {
    if let Err(exceeded) = snapshot.rate_limits.check(client_id) {
        METRICS.count_rate_limited(client_id);
        let message = format!(
            "the client's rate limit of {} is exceeded; retry after {} s",
            exceeded.limit, exceeded.retry_after_seconds
        );
        let response = LocalResponse::error(StatusCode::TOO_MANY_REQUESTS, &message).with_header(
            http::header::RETRY_AFTER,
            exceeded.retry_after_seconds.to_string(),
        );
        return Some(response);
    }
    let limit = snapshot.settings.limits.max_body_size.0;
    if declared_body_length(header).is_some_and(|length| length > limit) {
        return Some(LocalResponse::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the gateway accepts",
        ));
    }
    None
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

fn method_allowed(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}
