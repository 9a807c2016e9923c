//! The backends' addresses: each configured URL resolved when the config
//! loads and again in the background (never on the request path), and the
//! pingora peer built for each address, with TLS for `https://` backends.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::health_check::HttpHealthCheck;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::{HttpPeer, Scheme};
use prometheus::IntCounter;
use tracing::{info, warn};

use crate::config::{GatewaySettings, UpstreamEntry, UpstreamUrl};
use crate::health::HealthPlan;
use crate::metrics::METRICS;
use crate::reload::SnapshotStore;
use crate::tls::UpstreamCa;

/// How often upstream host names are looked up again, so a backend that
/// restarts with a new address is found.
const RE_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// One configured backend and the address it resolved to last.
pub struct UpstreamTarget {
    pub url: UpstreamUrl,
    pub weight: u16,
    current: ArcSwap<BackendInfo>,
}

/// One backend at one address: what a request or a health check needs to reach it.
pub struct BackendInfo {
    /// The configured URL, the `backend` label of metrics and log lines.
    pub label: Arc<str>,
    pub url: UpstreamUrl,
    pub addr: SocketAddr,
    /// A ready peer with the snapshot's timeouts.
    pub peer: HttpPeer,
    /// The health check request for this backend, when `healthCheck` is set.
    pub probe: Option<HttpHealthCheck>,
    /// `keygate_backend_requests_total` of this backend.
    pub requests: IntCounter,
}

/// The settings that one snapshot's backend peers share: timeouts and the CAs of `https://` backends.
#[derive(Clone)]
pub struct PeerSettings {
    pub timeouts: PeerTimeouts,
    /// `gateway.upstreamCa`. `None` verifies `https://` backends against the system's CA store.
    pub ca: Option<Arc<UpstreamCa>>,
}

/// The connection timeouts of one snapshot's backend peers.
#[derive(Clone, Copy)]
pub struct PeerTimeouts {
    connect: Duration,
    read: Duration,
    write: Duration,
    idle: Duration,
}

impl PeerTimeouts {
    pub fn new(settings: &GatewaySettings) -> Self {
        PeerTimeouts {
            connect: settings.timeouts.connect.0,
            read: settings.timeouts.read.0,
            write: settings.timeouts.write.0,
            idle: settings.timeouts.upstream_idle.0,
        }
    }

    pub fn connect(&self) -> Duration {
        self.connect
    }
}

impl UpstreamTarget {
    /// Resolves the backend's host and builds its peer. Blocks on name lookup.
    ///
    /// # Errors
    ///
    /// The host name does not resolve.
    pub fn resolve(
        entry: &UpstreamEntry,
        peers: &PeerSettings,
        plan: Option<&HealthPlan>,
    ) -> Result<Self, String> {
        let addr = lookup(&entry.url)?;
        let info = BackendInfo::new(&entry.url, addr, peers, plan);
        Ok(UpstreamTarget {
            url: entry.url.clone(),
            weight: entry.weight,
            current: ArcSwap::from_pointee(info),
        })
    }

    /// Returns the backend at its current address.
    pub fn current(&self) -> Arc<BackendInfo> {
        self.current.load_full()
    }

    /// Looks the host up again and returns the new address if it moved. Blocks.
    pub fn lookup_again(&self) -> Option<SocketAddr> {
        if self.url.host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let old = self.current.load().addr;
        match lookup(&self.url) {
            Ok(addr) if addr != old => Some(addr),
            Ok(_) => None,
            Err(err) => {
                warn!(upstream = %self.url, error = %err, "upstream lookup failed; keeping the last address");
                None
            }
        }
    }

    /// Switches to a new address.
    pub fn move_to(&self, addr: SocketAddr, peers: &PeerSettings, plan: Option<&HealthPlan>) {
        info!(upstream = %self.url, old = %self.current.load().addr, new = %addr, "upstream address changed");
        let info = BackendInfo::new(&self.url, addr, peers, plan);
        self.current.store(Arc::new(info));
    }
}

impl BackendInfo {
    fn new(
        url: &UpstreamUrl,
        addr: SocketAddr,
        peers: &PeerSettings,
        plan: Option<&HealthPlan>,
    ) -> Self {
        let label: Arc<str> = url.to_string().into();
        let timeouts = peers.timeouts;
        let mut peer = HttpPeer::new(addr, false, url.host.clone());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.write_timeout = Some(timeouts.write);
        peer.options.idle_timeout = Some(timeouts.idle);
        secure_peer(&mut peer, url, peers.ca.as_deref());
        let mut probe = plan.map(|plan| plan.probe(url));
        if let Some(probe) = &mut probe {
            secure_peer(&mut probe.peer_template, url, peers.ca.as_deref());
        }
        BackendInfo {
            requests: METRICS.backend_request_counter(&label),
            probe,
            label,
            url: url.clone(),
            addr,
            peer,
        }
    }
}

/// Makes `peer` speak TLS to an `https://` backend and verify its
/// certificate: against `ca` when set, else against the system's CA store
/// (pingora's connector reads it, honouring `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`). Leaves an `http://` peer alone.
fn secure_peer(peer: &mut HttpPeer, url: &UpstreamUrl, ca: Option<&UpstreamCa>) {
    if !url.tls {
        return;
    }
    peer.scheme = Scheme::HTTPS;
    // An empty SNI makes pingora's rustls connector skip verification
    // entirely, so the host is always set. It is also the name that the
    // certificate must carry, as an IP address when the host is one.
    peer.sni = url.host.clone();
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    if let Some(ca) = ca {
        peer.options.ca = Some(ca.certificates());
        peer.group_key = ca.group_key();
    }
}

fn lookup(url: &UpstreamUrl) -> Result<SocketAddr, String> {
    let mut addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve upstream host {:?}: {err}", url.host))?;
    addrs
        .next()
        .ok_or_else(|| format!("upstream host {:?} resolved to no address", url.host))
}

/// Looks up the current snapshot's upstream hosts again every few seconds.
pub struct ResolverService {
    pub store: Arc<SnapshotStore>,
}

#[async_trait]
impl BackgroundService for ResolverService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(RE_RESOLVE_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            let balancer = Arc::clone(&self.store.current().balancer);
            let lookup = {
                let balancer = Arc::clone(&balancer);
                tokio::task::spawn_blocking(move || balancer.lookup_again())
            };
            match lookup.await {
                Ok(true) => balancer.update_membership().await,
                Ok(false) => {}
                Err(err) => warn!(error = %err, "upstream lookup task failed"),
            }
        }
    }
}
