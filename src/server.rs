//! Builds the pingora server from a checked config: the gateway service on
//! every listen address (HTTPS with HTTP/2 when `tls` is set), behind the
//! caps on open client connections, the metrics
//! listener, the background lookup and health checks of the upstream
//! backends, and the service that reloads on SIGHUP and file changes. After
//! `run --upgrade`, the listeners are the sockets taken over from the
//! running keygate instead of new ones.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::connectors::ConnectorOptions;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use tracing::info;

use crate::config::GatewaySettings;
use crate::connections::app::CappedApp;
use crate::early_reject::EarlyReject;
use crate::fast_forward::Forwarder;
use crate::gateway::{Gateway, RequestIds};
use crate::handover::{self, InheritedSockets};
use crate::health::HealthCheckService;
use crate::metrics::MetricsApp;
use crate::reload::{Snapshot, SnapshotStore};
use crate::shutdown::{DrainingProxy, ShutdownSignals};
use crate::upstream::ResolverService;
use crate::watch::ReloadService;

/// Seconds that in-flight requests get to finish after SIGTERM, and after
/// the handover that SIGQUIT starts.
pub const GRACEFUL_SHUTDOWN_SECONDS: u64 = 5;

/// Seconds after the start of the drain at which kept-alive connections
/// that are still idle get closed: one before the grace period ends, so a
/// request that arrives just before still has time to finish.
const IDLE_CLOSE_SECONDS: u64 = GRACEFUL_SHUTDOWN_SECONDS - 1;

/// Checks that every address can be bound, so a taken port is a clear error
/// instead of a panic inside the engine.
///
/// # Errors
///
/// Names the first address that cannot be bound and why.
pub fn check_listeners(addrs: &[SocketAddr]) -> Result<(), String> {
    for addr in addrs {
        TcpListener::bind(addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    }
    Ok(())
}

/// Runs the gateway until a shutdown signal: SIGTERM (graceful), SIGQUIT
/// (handover to a new keygate, then graceful) or SIGINT (at once).
/// `inherited` contains the sockets taken over with `run --upgrade`.
///
/// # Errors
///
/// pingora rejects the TLS listener settings, or the inherited sockets
/// could not be passed to it.
pub fn run(
    config_path: PathBuf,
    snapshot: Snapshot,
    inherited: Option<InheritedSockets>,
) -> Result<(), String> {
    let settings = snapshot.settings.clone();
    let mut server = new_server(&settings, inherited)?;
    let server_tls = snapshot.tls.server.clone();
    let store = Arc::new(SnapshotStore::new(config_path, snapshot));
    let request_ids = Arc::new(RequestIds::new());

    let forwarder = Forwarder::new(
        Arc::clone(&store),
        Arc::clone(&request_ids),
        ConnectorOptions::from_server_conf(&server.configuration),
        server.configuration.max_retries,
    );
    let mut engine = HttpProxy::new(
        Gateway::new(Arc::clone(&store), Arc::clone(&request_ids)),
        Arc::clone(&server.configuration),
    );
    engine.handle_init_modules();
    // HTTP/2 connections have no per-read timeout in pingora, so
    // clientRead closes idle ones instead. It is read once, here.
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(settings.timeouts.client_read.0);
    engine.server_options = Some(options);
    // Every client connection takes a slot under the connection caps first,
    // then bad keys on plain HTTP/1 are rejected before the engine. When the
    // drain starts, idle kept-alive connections close a little later.
    let mut proxy = Service::new(
        "keygate gateway".to_string(),
        CappedApp::new(
            EarlyReject::new(
                DrainingProxy::new(engine, Duration::from_secs(IDLE_CLOSE_SECONDS)),
                forwarder,
                Arc::clone(&store),
                request_ids,
            ),
            Arc::clone(&store),
        ),
    );
    for addr in &settings.listen.0 {
        match &server_tls {
            Some(tls) => {
                proxy.add_tls_with_settings(&addr.to_string(), None, tls.listener_settings()?);
                info!(%addr, client_certificates = tls.requires_client_certificate(), "gateway listening with TLS (HTTP/2 and HTTP/1.1)");
            }
            None => {
                proxy.add_tcp(&addr.to_string());
                info!(%addr, "gateway listening");
            }
        }
    }

    let mut metrics = Service::new(
        "keygate metrics".to_string(),
        HttpServer::new_app(MetricsApp),
    );
    metrics.add_tcp(&settings.metrics.listen.0.to_string());
    info!(addr = %settings.metrics.listen.0, "metrics listening on /metrics");

    let resolver = GenBackgroundService::new(
        "keygate upstream lookup".to_string(),
        Arc::new(ResolverService {
            store: Arc::clone(&store),
        }),
    );
    let health = GenBackgroundService::new(
        "keygate health checks".to_string(),
        Arc::new(HealthCheckService {
            store: Arc::clone(&store),
        }),
    );
    let reloader = GenBackgroundService::new(
        "keygate reload".to_string(),
        Arc::new(ReloadService::new(store)),
    );

    // The gateway listens only once the SIGHUP handler is in place.
    let reloader = server.add_service(reloader);
    server.add_service(proxy).add_dependency(&reloader);
    server.add_service(metrics);
    server.add_service(resolver);
    server.add_service(health);
    info!(threads = settings.threads.resolve(), upstream = %settings.upstream, "gateway started");
    server.run(RunArgs {
        shutdown_signal: Box::new(ShutdownSignals {
            upgrade_socket: settings.upgrade_socket.path().to_path_buf(),
        }),
    });
    info!("gateway stopped");
    Ok(())
}

/// Creates the pingora server and loads the inherited listening sockets into it.
fn new_server(
    settings: &GatewaySettings,
    inherited: Option<InheritedSockets>,
) -> Result<Server, String> {
    let Some(inherited) = inherited else {
        let mut server = Server::new_with_opt_and_conf(None, server_conf(settings));
        server.bootstrap();
        return Ok(server);
    };

    // pingora's bootstrap reads the sockets from `upgrade_sock`, which must
    // be the relay socket while it runs.
    let mut relay_conf = server_conf(settings);
    relay_conf.upgrade_sock = inherited.relay_socket();
    let upgrade = Opt {
        upgrade: true,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(upgrade, relay_conf);
    handover::pass_to_engine(&mut server, inherited)?;
    // The services and the SIGQUIT handover read this field, so they see
    // the configured socket again.
    server.configuration = Arc::new(server_conf(settings));
    Ok(server)
}

/// Returns pingora's settings for the checked config.
fn server_conf(settings: &GatewaySettings) -> ServerConf {
    ServerConf {
        threads: settings.threads.resolve(),
        // On SIGTERM pingora stops accepting, then waits the grace period while
        // requests in flight finish, then cancels what is left.
        grace_period_seconds: Some(GRACEFUL_SHUTDOWN_SECONDS),
        graceful_shutdown_timeout_seconds: Some(1),
        // One more try: on another backend after a failed connect, or for an
        // idempotent request on a pooled connection the backend had closed.
        max_retries: 2,
        // On SIGQUIT the listening sockets go to the keygate waiting here.
        upgrade_sock: settings.upgrade_socket.to_string(),
        ..ServerConf::default()
    }
}
