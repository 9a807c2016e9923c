//! The routes keygate serves itself: key generation, refresh and health.
//!
//! Admin routes are for peers inside `adminAllowFrom`, or for peers that
//! send the admin token; the caller checks that before any of these run.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tracing::{info, warn};

use crate::config::check_client_id;
use crate::keygen;
use crate::metrics::ReloadTrigger;
use crate::reload::{Snapshot, SnapshotStore};
use crate::reload_actions::reload_and_forward;
use crate::respond::LocalResponse;

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
    match reload_and_forward(store, ReloadTrigger::Refresh).await {
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

/// Handles `GET .../health`: up while a snapshot is loaded, which is always once serving.
pub fn health() -> LocalResponse {
    LocalResponse::json(StatusCode::OK, &json!({"status": "UP"}))
}

/// Handles `GET .../health/readiness`: up when the backend accepts a connection.
pub async fn readiness(snapshot: &Snapshot) -> LocalResponse {
    if snapshot.upstream.is_reachable().await {
        LocalResponse::json(StatusCode::OK, &json!({"status": "UP"}))
    } else {
        LocalResponse::json(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "DOWN"}))
    }
}
