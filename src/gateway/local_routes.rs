//! The routes the gateway serves itself: the admin routes, for peers that
//! pass [`admin_access`], and the health routes, open to anyone.

use std::sync::Arc;

use http::{Method, StatusCode};
use pingora::prelude::*;
use pingora::proxy::Session;
use tracing::info;

use super::{peer_ip, Gateway, RequestCtx};
use crate::admin;
use crate::admin_access::{admin_access, AdminAccess};
use crate::metrics::RouteLabel;
use crate::reload::Snapshot;
use crate::respond::LocalResponse;

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

    /// Answers the health routes, open to anyone.
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

fn method_allowed(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}
