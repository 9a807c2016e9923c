//! Every Prometheus metric keygate exports, in its own registry, and the
//! listener app that serves them.
//!
//! Label values come only from fixed sets or from the config file, never
//! from request input. Handles for the fixed label sets are resolved once.

use std::sync::{LazyLock, OnceLock};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::clients::DenyReason;
use crate::connections::Rejection;

/// The kind of route a request took; the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteLabel {
    Proxy,
    Admin,
    Health,
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 4] = [
        RouteLabel::Proxy,
        RouteLabel::Admin,
        RouteLabel::Health,
        RouteLabel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Proxy => "proxy",
            RouteLabel::Admin => "admin",
            RouteLabel::Health => "health",
            RouteLabel::Other => "other",
        }
    }
}

/// Kinds of backend failure; the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    /// The TLS handshake with an `https://` backend failed, usually because its certificate did not verify.
    Tls,
    Timeout,
    Reset,
    Other,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Other => "other",
        }
    }
}

/// The cause of a reload; the `trigger` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The admin route `POST <contextPath>/refresh`.
    Refresh,
    /// A change of the config file on disk.
    File,
    /// SIGHUP.
    Signal,
}

impl ReloadTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Refresh => "refresh",
            ReloadTrigger::File => "file",
            ReloadTrigger::Signal => "signal",
        }
    }
}

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// `requests` handles by route and status code (100 to 999), filled on first use.
    request_counters: [Box<[OnceLock<IntCounter>]>; RouteLabel::ALL.len()],
    auth_failures: [IntCounter; DenyReason::ALL.len()],
    durations: [Histogram; RouteLabel::ALL.len()],
    upstream_errors: [IntCounter; UpstreamErrorKind::ALL.len()],
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    allowed_clients: IntGauge,
    client_requests: IntCounterVec,
    rate_limited: IntCounterVec,
    backend_up: IntGaugeVec,
    backend_requests: IntCounterVec,
    client_connections_open: IntGauge,
    client_connections_rejected: [IntCounter; Rejection::ALL.len()],
}

/// The process's metrics. A gateway runs once a process, so one registry serves it.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_requests_total",
                "Requests completed, by route and status code",
            ),
            &["route", "status"],
        )
        .expect("metric definition is valid");
        let auth_failures_vec = IntCounterVec::new(
            Opts::new(
                "keygate_auth_failures_total",
                "Requests refused by the key check, by reason",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");
        let durations_vec = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from the request head to the end of the response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("metric definition is valid");
        let upstream_errors_vec = IntCounterVec::new(
            Opts::new(
                "keygate_upstream_errors_total",
                "Failed requests to the backend, by kind",
            ),
            &["kind"],
        )
        .expect("metric definition is valid");
        let reloads = IntCounterVec::new(
            Opts::new(
                "keygate_config_reloads_total",
                "Config reloads, by trigger and result",
            ),
            &["trigger", "result"],
        )
        .expect("metric definition is valid");
        let last_reload_success = Gauge::new(
            "keygate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that succeeded",
        )
        .expect("metric definition is valid");
        let allowed_clients =
            IntGauge::new("keygate_allowed_clients", "Clients in the loaded snapshot")
                .expect("metric definition is valid");
        let client_requests = IntCounterVec::new(
            Opts::new(
                "keygate_client_requests_total",
                "Requests that passed the key check, by configured clientId",
            ),
            &["client_id"],
        )
        .expect("metric definition is valid");

        let rate_limited = IntCounterVec::new(
            Opts::new(
                "keygate_rate_limited_total",
                "Requests refused with 429 by the client's rate limit, by configured clientId",
            ),
            &["client_id"],
        )
        .expect("metric definition is valid");
        let backend_up = IntGaugeVec::new(
            Opts::new(
                "keygate_backend_up",
                "1 while the backend gets requests, 0 while its health checks fail",
            ),
            &["backend"],
        )
        .expect("metric definition is valid");
        let backend_requests = IntCounterVec::new(
            Opts::new(
                "keygate_backend_requests_total",
                "Requests sent to the backend over a connection that was opened or reused",
            ),
            &["backend"],
        )
        .expect("metric definition is valid");

        let client_connections_open = IntGauge::new(
            "keygate_client_connections_open",
            "Client connections open on the gateway's listen addresses",
        )
        .expect("metric definition is valid");
        let client_connections_rejected_vec = IntCounterVec::new(
            Opts::new(
                "keygate_client_connections_rejected_total",
                "Client connections closed unread because a connection cap was reached, by cap",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");

        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failures_vec.clone()),
            Box::new(durations_vec.clone()),
            Box::new(upstream_errors_vec.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(allowed_clients.clone()),
            Box::new(client_requests.clone()),
            Box::new(rate_limited.clone()),
            Box::new(backend_up.clone()),
            Box::new(backend_requests.clone()),
            Box::new(client_connections_open.clone()),
            Box::new(client_connections_rejected_vec.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }

        Metrics {
            auth_failures: DenyReason::ALL
                .map(|reason| auth_failures_vec.with_label_values(&[reason.as_str()])),
            durations: RouteLabel::ALL
                .map(|route| durations_vec.with_label_values(&[route.as_str()])),
            upstream_errors: UpstreamErrorKind::ALL
                .map(|kind| upstream_errors_vec.with_label_values(&[kind.as_str()])),
            registry,
            request_counters: RouteLabel::ALL
                .map(|_| (100..1000).map(|_| OnceLock::new()).collect()),
            requests,
            reloads,
            last_reload_success,
            allowed_clients,
            client_requests,
            rate_limited,
            backend_up,
            backend_requests,
            client_connections_open,
            client_connections_rejected: Rejection::ALL.map(|rejection| {
                client_connections_rejected_vec.with_label_values(&[rejection.as_str()])
            }),
        }
    }

    /// Counts one completed request and its duration.
    pub fn observe_request(&self, route: RouteLabel, status: http::StatusCode, seconds: f64) {
        self.request_counter(route, status).inc();
        self.durations[route as usize].observe(seconds);
    }

    /// Returns the counter for one route and status, resolved once and then read without a lock.
    fn request_counter(&self, route: RouteLabel, status: http::StatusCode) -> &IntCounter {
        let index = usize::from(status.as_u16() - 100);
        self.request_counters[route as usize][index].get_or_init(|| {
            self.requests
                .with_label_values(&[route.as_str(), status.as_str()])
        })
    }

    pub fn count_auth_failure(&self, reason: DenyReason) {
        self.auth_failures[reason as usize].inc();
    }

    pub fn count_upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Counts a request of a configured client; called only when `metrics.perClient` is on.
    pub fn count_client_request(&self, client_id: &str) {
        self.client_requests.with_label_values(&[client_id]).inc();
    }

    /// Drops the per-client series of clients no longer configured, or all of them.
    pub fn forget_clients<'a>(&self, client_ids: impl Iterator<Item = &'a str>) {
        for client_id in client_ids {
            // A series that was never created is not an error worth reporting.
            let _ = self.client_requests.remove_label_values(&[client_id]);
        }
    }

    pub fn forget_all_clients(&self) {
        self.client_requests.reset();
    }

    /// Counts a request refused by the rate limit of a configured client.
    pub fn count_rate_limited(&self, client_id: &str) {
        self.rate_limited.with_label_values(&[client_id]).inc();
    }

    /// Shows the rate-limited count of a limited client from 0, and drops
    /// the series of clients that are no longer limited.
    pub fn track_rate_limited<'a>(
        &self,
        limited: impl Iterator<Item = &'a str>,
        no_longer_limited: impl Iterator<Item = &'a str>,
    ) {
        for client_id in no_longer_limited {
            // A series that was never created is not an error worth reporting.
            let _ = self.rate_limited.remove_label_values(&[client_id]);
        }
        for client_id in limited {
            self.rate_limited.with_label_values(&[client_id]);
        }
    }

    /// Returns the request counter of a configured backend, to keep with the backend.
    pub fn backend_request_counter(&self, backend: &str) -> IntCounter {
        self.backend_requests.with_label_values(&[backend])
    }

    pub fn set_backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .with_label_values(&[backend])
            .set(i64::from(up));
    }

    /// Drops the series of backends that are no longer configured.
    pub fn forget_backends<'a>(&self, backends: impl Iterator<Item = &'a str>) {
        for backend in backends {
            let _ = self.backend_up.remove_label_values(&[backend]);
            let _ = self.backend_requests.remove_label_values(&[backend]);
        }
    }

    pub fn client_connection_opened(&self) {
        self.client_connections_open.inc();
    }

    pub fn client_connection_closed(&self) {
        self.client_connections_open.dec();
    }

    /// Counts a client connection closed unread because of a connection cap.
    pub fn count_rejected_connection(&self, rejection: Rejection) {
        self.client_connections_rejected[rejection as usize].inc();
    }

    /// Records the outcome of a config reload.
    pub fn record_reload(&self, trigger: ReloadTrigger, succeeded: bool, clients: usize) {
        let result = if succeeded { "ok" } else { "error" };
        self.reloads
            .with_label_values(&[trigger.as_str(), result])
            .inc();
        if succeeded {
            self.record_load(clients);
        }
    }

    /// Records a successful load, including the first one at start-up.
    pub fn record_load(&self, clients: usize) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        self.last_reload_success.set(now);
        self.allowed_clients
            .set(i64::try_from(clients).unwrap_or(i64::MAX));
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on invalid metric families, which
        // the fixed definitions above rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        buffer
    }
}

/// The app on the metrics listener: `GET /metrics`, and 404 for anything else.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let (status, content_type, body) = match (header.method.as_str(), header.uri.path()) {
            ("GET", "/metrics") => (
                200,
                TextEncoder::new().format_type().to_string(),
                METRICS.render(),
            ),
            (_, "/metrics") => (
                405,
                "text/plain".to_string(),
                b"only GET is allowed on /metrics\n".to_vec(),
            ),
            _ => (
                404,
                "text/plain".to_string(),
                b"not found; metrics are at /metrics\n".to_vec(),
            ),
        };
        let mut response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len());
        if status == 405 {
            response = response.header(http::header::ALLOW, "GET");
        }
        response
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
