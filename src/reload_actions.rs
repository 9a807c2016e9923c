//! The steps every reload trigger shares around the reload itself. The
//! refresh route, a change of the config file and SIGHUP all reload through
//! [`SnapshotStore::reload`] and log the warnings of a new file. After a
//! successful reload they forward the refresh to the backends when
//! `forwardRefresh` is on.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use tracing::{info, warn};

use crate::config::ConfigError;
use crate::metrics::ReloadTrigger;
use crate::reload::{ReloadReport, Snapshot, SnapshotStore};
use crate::upstream::BackendInfo;

/// How long the backend may take to respond to a forwarded refresh.
const FORWARD_REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reloads the config, logs what the new file warns about, and forwards the
/// refresh to the backends when the reload succeeded. The caller logs the outcome.
///
/// # Errors
///
/// The new file is rejected; the old snapshot stays in force.
pub async fn reload_and_forward(
    store: &Arc<SnapshotStore>,
    trigger: ReloadTrigger,
) -> Result<ReloadReport, ConfigError> {
    let report = store.reload(trigger).await?;
    for warning in &report.warnings {
        warn!(trigger = trigger.as_str(), "{warning}");
    }
    if !report.waiting_for_restart.is_empty() {
        warn!(trigger = trigger.as_str(), settings = ?report.waiting_for_restart, "changed settings wait for a restart");
    }
    let snapshot = store.current_owned();
    if snapshot.settings.forward_refresh {
        tokio::spawn(forward_refresh(snapshot));
    }
    Ok(report)
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
