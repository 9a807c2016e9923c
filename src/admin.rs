//! The routes keygate serves itself: key generation, refresh and health.
//!
//! Admin routes are for peers inside `adminAllowFrom`, or for peers that
//! send the admin token; the caller checks that before any of these run.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tracing::{info, warn};

use crate::config::check_client_id;
use crate::keygen::{self, SnippetForm};
use crate::metrics::ReloadTrigger;
use crate::reload::{Snapshot, SnapshotStore};
use crate::reload_actions::reload_and_forward;
use crate::respond::LocalResponse;

/// Handles `GET .../util/generateclient/{clientId}`. The query may ask for a
/// hashed key (`hash=true`) and, for a configured client, an extra key to
/// add to its entry (`rotate=true`).
pub fn generate_client(
    snapshot: &Snapshot,
    method: &Method,
    client_id: Option<&[u8]>,
    query: &str,
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
    let options = match GenerateOptions::parse(query) {
        Ok(options) => options,
        Err(reason) => {
            info!(route = "generateclient", peer, result = 400, reason = %reason, "admin request rejected");
            return LocalResponse::error(StatusCode::BAD_REQUEST, &reason);
        }
    };
    let configured = snapshot.clients.contains(client_id);
    if configured && !options.rotate {
        info!(
            route = "generateclient",
            peer,
            client_id,
            result = 409,
            "admin request rejected: client exists"
        );
        return LocalResponse::error(
            StatusCode::CONFLICT,
            &format!("clientId {client_id:?} is already configured; choose another clientId, or add ?rotate=true for an extra key"),
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
    let form = SnippetForm {
        hashed: options.hash,
        extra_key: configured,
    };
    info!(
        route = "generateclient",
        peer,
        client_id,
        result = 200,
        extra_key = configured,
        hashed = options.hash,
        "generated a new client key"
    );
    LocalResponse::text(StatusCode::OK, keygen::snippet_with(client_id, &key, form))
}

/// The query parameters of the generateclient route.
#[derive(Debug, Default, PartialEq, Eq)]
struct GenerateOptions {
    /// Give a configured client an extra key instead of responding with 409.
    rotate: bool,
    /// Write the key as `keyHash`.
    hash: bool,
}

impl GenerateOptions {
    /// Reads `rotate` and `hash`, each `true`, `false` or bare (true).
    /// Other parameters are ignored, as a Spring controller would.
    fn parse(query: &str) -> Result<Self, String> {
        let mut options = GenerateOptions::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let slot = match name {
                "rotate" => &mut options.rotate,
                "hash" => &mut options.hash,
                _ => continue,
            };
            *slot = match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(format!(
                        "invalid value for {name}: write {name}=true or {name}=false"
                    ))
                }
            };
        }
        Ok(options)
    }
}

/// Handles `POST .../refresh`: reloads the file, then forwards the refresh to the backend when `forwardRefresh` is on.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_options_forms() {
        assert_eq!(GenerateOptions::parse(""), Ok(GenerateOptions::default()));
        let both = GenerateOptions {
            rotate: true,
            hash: true,
        };
        assert_eq!(GenerateOptions::parse("rotate=true&hash=true"), Ok(both));
        assert_eq!(
            GenerateOptions::parse("rotate&other=1"),
            Ok(GenerateOptions {
                rotate: true,
                hash: false
            })
        );
        assert_eq!(
            GenerateOptions::parse("rotate=true&rotate=false"),
            Ok(GenerateOptions::default())
        );
        let err = GenerateOptions::parse("rotate=yes").unwrap_err();
        assert!(err.contains("rotate=true"), "{err}");
    }
}
