//! Active health checks of the backends, run by pingora's load-balancing
//! crate: what a check sends, when a backend counts as healthy, and the
//! background loop that checks the current snapshot's backends.
//!
//! Health state lives in a pingora `HealthRegistry`. A refresh that keeps
//! the check (path, timeout and thresholds) keeps the registry, so a
//! backend that was down stays down across the refresh until a check passes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::{Error, ErrorType};

use crate::config::{GatewaySettings, UpstreamUrl};
use crate::reload::SnapshotStore;
use crate::upstream::BackendInfo;

/// How long the loop sleeps while no `healthCheck` is configured; a refresh wakes it sooner.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// The effective health check of one snapshot, with the default path filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPlan {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: usize,
    pub healthy_threshold: usize,
}

impl HealthPlan {
    /// Returns the plan of `settings`, or `None` when no `healthCheck` is configured.
    pub fn from_settings(settings: &GatewaySettings) -> Option<Self> {
        let check = settings.health_check.as_ref()?;
        let path = match &check.path {
            Some(path) => path.0.clone(),
            None => format!("{}/health", settings.context_path.0),
        };
        Some(HealthPlan {
            path,
            interval: check.interval.0,
            timeout: check.timeout.0,
            unhealthy_threshold: usize::from(check.unhealthy_threshold.0),
            healthy_threshold: usize::from(check.healthy_threshold.0),
        })
    }

    /// Returns whether a registry checked by `self` may go on serving `new`: the
    /// same request and thresholds, whatever the interval.
    pub fn same_check(&self, new: &HealthPlan) -> bool {
        HealthPlan {
            interval: new.interval,
            ..self.clone()
        } == *new
    }

    /// Builds the health check request for one backend: `GET <path>` with
    /// the backend's `Host`, passed by any 2xx response.
    pub fn probe(&self, url: &UpstreamUrl) -> HttpHealthCheck {
        let host = host_header(url);
        let mut probe = HttpHealthCheck::new(&host, false);
        // The path was checked at load; a build failure keeps pingora's `GET /`.
        if let Ok(mut request) = RequestHeader::build(Method::GET, self.path.as_bytes(), None) {
            if request.insert_header(http::header::HOST, &host).is_ok() {
                probe.req = request;
            }
        }
        let options = &mut probe.peer_template.options;
        options.connection_timeout = Some(self.timeout);
        options.total_connection_timeout = Some(self.timeout);
        options.read_timeout = Some(self.timeout);
        options.write_timeout = Some(self.timeout);
        probe.validator = Some(Box::new(accept_success));
        probe
    }
}

fn host_header(url: &UpstreamUrl) -> String {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    if url.has_default_port() {
        host
    } else {
        format!("{host}:{}", url.port)
    }
}

fn accept_success(response: &ResponseHeader) -> pingora::Result<()> {
    if response.status.is_success() {
        return Ok(());
    }
    Error::e_explain(
        ErrorType::CustomCode("health check status", response.status.as_u16()),
        format!("the health check got {}", response.status),
    )
}

/// The check a health registry runs on each backend: the backend's own
/// probe, carried in the `Backend`'s extensions, with the plan's thresholds.
pub struct BackendCheck {
    unhealthy_threshold: usize,
    healthy_threshold: usize,
}

impl BackendCheck {
    pub fn new(plan: &HealthPlan) -> Self {
        BackendCheck {
            unhealthy_threshold: plan.unhealthy_threshold,
            healthy_threshold: plan.healthy_threshold,
        }
    }
}

#[async_trait]
impl HealthCheck for BackendCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let info = target.ext.get::<Arc<BackendInfo>>();
        match info.and_then(|info| info.probe.as_ref()) {
            Some(probe) => probe.check(target).await,
            None => Error::e_explain(ErrorType::InternalError, "backend without a health check"),
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        match target.ext.get::<Arc<BackendInfo>>() {
            Some(info) => format!("backend {}", info.label),
            None => format!("backend {:?}", target.addr),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        }
    }
}

/// Checks the current snapshot's backends every `healthCheck.interval`, and
/// at once after a refresh, then publishes `keygate_backend_up`.
pub struct HealthCheckService {
    pub store: Arc<SnapshotStore>,
}

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let balancer = Arc::clone(&self.store.current().balancer);
            let wait = match balancer.health_interval() {
                Some(interval) => {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = balancer.run_health_check() => {}
                    }
                    interval
                }
                None => IDLE_WAIT,
            };
            balancer.publish_backend_up();
            drop(balancer);

            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.store.reloaded() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn plan(gateway: &str) -> Option<HealthPlan> {
        let text = format!("gateway:\n{gateway}\nallowedClients: []\n");
        let config = parse(&text, Path::new("test.yml")).unwrap();
        HealthPlan::from_settings(&config.gateway)
    }

    #[test]
    fn off_without_section() {
        assert_eq!(plan("  threads: 1"), None);
        assert_eq!(plan("  healthCheck: ~"), None);
    }

    #[test]
    fn default_path_follows_context_path() {
        let default = plan("  healthCheck: {}").unwrap();
        assert_eq!(default.path, "/nps/health");
        assert_eq!(default.interval, Duration::from_secs(5));
        assert_eq!(
            (default.unhealthy_threshold, default.healthy_threshold),
            (1, 1)
        );
        let moved = plan("  contextPath: /push\n  healthCheck: {}").unwrap();
        assert_eq!(moved.path, "/push/health");
        let root = plan("  contextPath: /\n  healthCheck: {}").unwrap();
        assert_eq!(root.path, "/health");
        let own = plan("  healthCheck: { path: /ready }").unwrap();
        assert_eq!(own.path, "/ready");
    }

    #[test]
    fn interval_change_keeps_the_check() {
        let slow = plan("  healthCheck: { interval: 10s }").unwrap();
        let fast = plan("  healthCheck: { interval: 1s }").unwrap();
        let other_path = plan("  healthCheck: { path: /x }").unwrap();
        assert!(slow.same_check(&fast));
        assert!(!slow.same_check(&other_path));
    }

    #[test]
    fn probe_sends_path_and_host() {
        let plan = plan("  healthCheck: { path: '/nps/health?deep=1', timeout: 300ms }").unwrap();
        let url = UpstreamUrl::parse("http://backend:8080").unwrap();
        let probe = plan.probe(&url);
        assert_eq!(probe.req.uri.to_string(), "/nps/health?deep=1");
        assert_eq!(
            probe
                .req
                .headers
                .get(http::header::HOST)
                .map(|value| value.as_bytes()),
            Some(&b"backend:8080"[..])
        );
        assert_eq!(
            probe.peer_template.options.read_timeout,
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            host_header(&UpstreamUrl::parse("http://[::1]").unwrap()),
            "[::1]"
        );
    }

    #[test]
    fn any_2xx_passes() {
        for (status, passes) in [
            (200, true),
            (204, true),
            (299, true),
            (301, false),
            (503, false),
        ] {
            let response = ResponseHeader::build(status, None).unwrap();
            assert_eq!(accept_success(&response).is_ok(), passes, "status {status}");
        }
    }
}
