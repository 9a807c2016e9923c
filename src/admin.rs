//! The routes keygate serves itself: key generation, refresh and health.
//!
//! Admin routes are for peers inside `adminAllowFrom` only; the caller
//! checks that before any of these run.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use serde_json::json;
use tracing::{info, warn};

use crate::config::check_client_id;
use crate::keygen;
use crate::metrics::ReloadTrigger;
use crate::reload::{Snapshot, SnapshotStore};
use crate::respond::LocalResponse;
use crate::upstream::BackendInfo;

/// How long the backend may take to respond to a forwarded refresh.
const FORWARD_REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles `GET .../util/generateclient/{clientId}`.
pub fn generate_client(
    snapshot: &Snapshot,
    method: &Method,
    client_id: Option<&[u8]>,
    peer: &str,
) -> LocalResponse {
    if method != Method::GET && method != Method::HEAD {
        info!(route = "generateclient", peer, %method, result = 405, "admin request rejected: method not allowed");
        return LocalResponse::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET to generate a client",
        )
        .with_header(http::header::ALLOW, "GET, HEAD");
    }
    let Some(raw_id) = client_id else {
        info!(
            route = "generateclient",
            peer,
            result = 400,
            "admin request rejected: no single clientId segment"
        );
        return LocalResponse::error(
            StatusCode::BAD_REQUEST,
            "put exactly one clientId after generateclient/ in the path",
        );
    };
    let Ok(client_id) = std::str::from_utf8(raw_id) else {
        info!(
            route = "generateclient",
            peer,
            result = 400,
            "admin request rejected: clientId is not UTF-8"
        );
        return LocalResponse::error(
            StatusCode::BAD_REQUEST,
            "the clientId is not valid UTF-8 after percent-decoding",
        );
    };
    if let Err(reason) = check_client_id(client_id) {
        info!(route = "generateclient", peer, result = 400, reason = %reason, "admin request rejected");
        return LocalResponse::error(
            StatusCode::BAD_REQUEST,
            &format!("invalid clientId: {reason}"),
        );
    }
    if snapshot.clients.contains(client_id) {
        info!(
            route = "generateclient",
            peer,
            client_id,
            result = 409,
            "admin request rejected: client exists"
        );
        return LocalResponse::error(
            StatusCode::CONFLICT,
            &format!("clientId {client_id:?} is already configured; choose another clientId"),
        );
    }
    let key = match keygen::new_key() {
        Ok(key) => key,
        Err(err) => {
            warn!(route = "generateclient", peer, error = %err, "key generation failed");
            return LocalResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "key generation failed; see the gateway log",
            );
        }
    };
    info!(
        route = "generateclient",
        peer,
        client_id,
        result = 200,
        "generated a new client key"
    );
    LocalResponse::text(StatusCode::OK, keygen::snippet(client_id, &key))
}

/// Handles `POST .../refresh`: reloads the file, then tells the backend when `forwardRefresh` is on.
pub async fn refresh(store: &Arc<SnapshotStore>, method: &Method, peer: &str) -> LocalResponse {
    if method != Method::POST {
        info!(route = "refresh", peer, %method, result = 405, "admin request rejected: method not allowed");
        return LocalResponse::error(StatusCode::METHOD_NOT_ALLOWED, "use POST to refresh")
            .with_header(http::header::ALLOW, "POST");
    }
    match store.reload(ReloadTrigger::Refresh).await {
        Ok(report) => {
            info!(
                route = "refresh",
                peer,
                result = 200,
                changed = ?report.changed,
                clients_added = report.clients_added,
                clients_removed = report.clients_removed,
                clients_kept = report.clients_kept,
                "config reloaded"
            );
            for warning in &report.warnings {
                warn!(route = "refresh", "{warning}");
            }
            if !report.waiting_for_restart.is_empty() {
                warn!(route = "refresh", settings = ?report.waiting_for_restart, "changed settings wait for a restart");
            }
            let snapshot = store.current();
            if snapshot.settings.forward_refresh {
                tokio::spawn(forward_refresh(Arc::clone(&snapshot)));
            }
            LocalResponse::json(StatusCode::OK, &json!(report.changed))
        }
        Err(err) => {
            warn!(route = "refresh", peer, result = 500, error = %err, "config reload failed; the running config stays");
            let body = json!({
                "status": 500,
                "error": "Internal Server Error",
                "message": format!("{err}; the running config stays in force"),
                "file": err.file.display().to_string(),
                "line": err.line,
                "column": err.column,
            });
            LocalResponse::json(StatusCode::INTERNAL_SERVER_ERROR, &body)
        }
    }
}

/// Sends `POST <contextPath>/refresh` to every backend, since each one may
/// read the same file, and logs each response status.
async fn forward_refresh(snapshot: Arc<Snapshot>) {
    let path = snapshot.routes.refresh_path();
    let sends = snapshot.balancer.backends().map(|backend| {
        let path = path.as_str();
        async move {
            let result =
                tokio::time::timeout(FORWARD_REFRESH_TIMEOUT, post_empty(&backend, path)).await;
            match result {
                Ok(Ok(status)) => {
                    info!(backend = %backend.label, path, status, "backend responded to the forwarded refresh")
                }
                Ok(Err(err)) => {
                    warn!(backend = %backend.label, path, error = %err, "forwarding the refresh to the backend failed")
                }
                Err(_) => {
                    warn!(backend = %backend.label, path, "forwarded refresh timed out waiting for the backend")
                }
            }
        }
    });
    futures::future::join_all(sends).await;
}

async fn post_empty(backend: &BackendInfo, path: &str) -> pingora::Result<u16> {
    let connector = Connector::new(None);
    let (mut session, _reused) = connector.get_http_session(&backend.peer).await?;
    let mut request = RequestHeader::build(Method::POST, path.as_bytes(), Some(3))?;
    request.insert_header(http::header::HOST, backend.url.host.as_str())?;
    request.insert_header(http::header::CONTENT_LENGTH, "0")?;
    session.write_request_header(Box::new(request)).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let status = session
        .response_header()
        .map_or(0, |header| header.status.as_u16());
    while session.read_response_body().await?.is_some() {}
    Ok(status)
}

/// Handles `GET .../health`: up while a snapshot is loaded, which is always once serving.
pub fn health() -> LocalResponse {
    LocalResponse::json(StatusCode::OK, &json!({"status": "UP"}))
}

/// Handles `GET .../health/readiness`: up when at least one backend is
/// healthy by its health checks or, without `healthCheck`, accepts a
/// connection now.
pub async fn readiness(snapshot: &Snapshot) -> LocalResponse {
    let ready = if snapshot.balancer.health_interval().is_some() {
        snapshot.balancer.any_healthy()
    } else {
        snapshot.balancer.any_reachable().await
    };
    if ready {
        LocalResponse::json(StatusCode::OK, &json!({"status": "UP"}))
    } else {
        LocalResponse::json(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "DOWN"}))
    }
}
