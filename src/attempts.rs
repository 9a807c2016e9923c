//! The backend of each attempt at one request: the balancer's choice, and
//! after a failed connect one retry on another healthy backend. The proxy
//! path in `gateway` and the forwarding path in `fast_forward` share it.

use std::sync::Arc;

use pingora::prelude::*;
use tracing::warn;

use crate::balancer::Balancer;
use crate::failure::classify_failure;
use crate::gateway::RequestId;
use crate::metrics::METRICS;
use crate::upstream::BackendInfo;

/// The backends chosen for one request so far.
#[derive(Default)]
pub struct Attempts {
    /// The backend of the current attempt.
    pub backend: Option<Arc<BackendInfo>>,
    /// The backend chosen for the retry after a failed connect.
    retry_backend: Option<Arc<BackendInfo>>,
    /// Set once a failed connect was retried, so a request is retried at most once.
    connect_retried: bool,
    /// Set when no backend was healthy.
    pub no_backend: bool,
}

impl Attempts {
    /// Picks the backend: the retry choice after a failed connect, else the
    /// next healthy backend in weighted round-robin order.
    ///
    /// # Errors
    ///
    /// No backend is healthy, which fails the request at once with 502.
    pub fn pick(&mut self, balancer: &Balancer) -> Result<Arc<BackendInfo>> {
        let Some(backend) = self.retry_backend.take().or_else(|| balancer.select()) else {
            self.no_backend = true;
            return Error::e_explain(HTTPStatus(502), "no backend is healthy");
        };
        self.backend = Some(Arc::clone(&backend));
        Ok(backend)
    }

    /// Marks a failed connect for one retry on another healthy backend. The
    /// request has not reached any backend yet, so the retry cannot send it
    /// twice. Returns `error`, marked for retry when there is one.
    pub fn connect_failed(
        &mut self,
        balancer: &Balancer,
        mut error: Box<Error>,
        request_id: &RequestId,
    ) -> Box<Error> {
        if self.connect_retried {
            return error;
        }
        let Some(failed) = &self.backend else {
            return error;
        };
        let Some(next) = balancer.select_other(failed.addr) else {
            return error;
        };
        let (_, kind) = classify_failure(&error);
        if let Some(kind) = kind {
            METRICS.count_upstream_error(kind);
        }
        warn!(backend = %failed.label, retry_backend = %next.label, error = %error, request_id = %request_id, "connecting to the backend failed; retrying on another backend");
        self.connect_retried = true;
        self.retry_backend = Some(next);
        error.set_retry(true);
        error
    }

    /// Returns whether a retry on another backend is under way.
    pub fn retrying(&self) -> bool {
        self.retry_backend.is_some()
    }

    /// Returns the label of the current attempt's backend, or `-`.
    pub fn label(&self) -> &str {
        self.backend.as_ref().map_or("-", |backend| &backend.label)
    }
}
