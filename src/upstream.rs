//! The backend: its address, resolved when the config loads and again in the
//! background (never on the request path), and the pingora peer built from it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use tracing::{info, warn};

use crate::config::{GatewaySettings, UpstreamUrl};
use crate::reload::SnapshotStore;

/// How often upstream host names are looked up again, so a backend that
/// restarts with a new address is found.
const RE_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// The backend of one snapshot.
pub struct Upstream {
    pub url: UpstreamUrl,
    /// The address and a ready peer with the snapshot's timeouts; replaced when the address changes.
    target: ArcSwap<Target>,
    timeouts: PeerTimeouts,
}

struct Target {
    addr: SocketAddr,
    peer: HttpPeer,
}

#[derive(Clone, Copy)]
struct PeerTimeouts {
    connect: Duration,
    read: Duration,
    write: Duration,
    idle: Duration,
}

impl Upstream {
    /// Resolves the backend's host and builds its peer. Blocks on name lookup.
    ///
    /// # Errors
    ///
    /// The host name does not resolve.
    pub fn resolve(settings: &GatewaySettings) -> Result<Self, String> {
        let url = settings.upstream.clone();
        let timeouts = PeerTimeouts {
            connect: settings.timeouts.connect.0,
            read: settings.timeouts.read.0,
            write: settings.timeouts.write.0,
            idle: settings.timeouts.upstream_idle.0,
        };
        let addr = lookup(&url)?;
        let target = ArcSwap::from_pointee(build_target(addr, &url, timeouts));
        Ok(Upstream {
            url,
            target,
            timeouts,
        })
    }

    /// Returns the current backend address.
    pub fn addr(&self) -> SocketAddr {
        self.target.load().addr
    }

    /// Builds the peer for one forwarded request.
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.target.load().peer.clone())
    }

    /// Looks the host up again and switches to the new address if it moved. Blocks.
    fn re_resolve(&self) {
        if self.url.host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        match lookup(&self.url) {
            Ok(addr) if addr != self.addr() => {
                info!(upstream = %self.url, old = %self.addr(), new = %addr, "upstream address changed");
                self.target
                    .store(Arc::new(build_target(addr, &self.url, self.timeouts)));
            }
            Ok(_) => {}
            Err(err) => {
                warn!(upstream = %self.url, error = %err, "upstream lookup failed; keeping the last address")
            }
        }
    }

    /// Returns whether a TCP connection to the backend opens within the connect timeout.
    pub async fn is_reachable(&self) -> bool {
        let connect = tokio::net::TcpStream::connect(self.addr());
        matches!(
            tokio::time::timeout(self.timeouts.connect, connect).await,
            Ok(Ok(_))
        )
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

fn build_target(addr: SocketAddr, url: &UpstreamUrl, timeouts: PeerTimeouts) -> Target {
    let mut peer = HttpPeer::new(addr, false, url.host.clone());
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.write);
    peer.options.idle_timeout = Some(timeouts.idle);
    Target { addr, peer }
}

/// Looks up the current snapshot's upstream host again every few seconds.
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
            let upstream = Arc::clone(&self.store.current().upstream);
            if let Err(err) = tokio::task::spawn_blocking(move || upstream.re_resolve()).await {
                warn!(error = %err, "upstream lookup task failed");
            }
        }
    }
}
