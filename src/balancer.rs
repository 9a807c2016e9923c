//! The backends of one snapshot behind pingora's load balancer: weighted
//! round robin over the backends that pass their health checks.
//!
//! Each pingora `Backend` carries its [`BackendInfo`] in its extensions, so
//! a selection yields the ready peer, the metric handle and the label at
//! once. The backend set changes only when the config is reloaded (a new
//! balancer) or a host name resolves to a new address (the same balancer,
//! updated in the background).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, Extensions, HealthRegistry, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as EngineAddr;
use tracing::warn;

use crate::config::GatewaySettings;
use crate::health::{BackendCheck, HealthPlan};
use crate::metrics::METRICS;
use crate::tls::UpstreamCa;
use crate::upstream::{BackendInfo, PeerSettings, PeerTimeouts, UpstreamTarget};

/// The backends of one snapshot and the balancer that picks among them.
pub struct Balancer {
    targets: Vec<UpstreamTarget>,
    lb: LoadBalancer<RoundRobin>,
    discovery: Arc<TargetSet>,
    plan: Option<HealthPlan>,
    registry: Arc<HealthRegistry>,
    peers: PeerSettings,
}

/// The backend set that pingora's service discovery reads.
struct TargetSet {
    backends: ArcSwap<BTreeSet<Backend>>,
}

/// Hands pingora the set the balancer built last; it never looks anything up.
struct SharedDiscovery(Arc<TargetSet>);

#[async_trait]
impl ServiceDiscovery for SharedDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.backends.load()), HashMap::new()))
    }
}

impl Balancer {
    /// Resolves every backend and builds the balancer, with `ca` for
    /// `https://` backends. Blocks on name lookups.
    ///
    /// The health registry of `previous` is kept when the health check is
    /// the same, so a refresh does not forget which backends are down.
    ///
    /// # Errors
    ///
    /// A host name does not resolve, or two backends resolve to one address.
    pub fn build(
        settings: &GatewaySettings,
        ca: Option<Arc<UpstreamCa>>,
        previous: Option<&Balancer>,
    ) -> Result<Self, String> {
        let plan = HealthPlan::from_settings(settings);
        let peers = PeerSettings {
            timeouts: PeerTimeouts::new(settings),
            ca,
        };
        let several = settings.upstream.0.len() > 1;
        let mut targets: Vec<UpstreamTarget> = Vec::with_capacity(settings.upstream.0.len());
        for (index, entry) in settings.upstream.0.iter().enumerate() {
            let place = if several {
                format!("gateway.upstream[{index}]")
            } else {
                "gateway.upstream".to_string()
            };
            let target = UpstreamTarget::resolve(entry, &peers, plan.as_ref())
                .map_err(|message| format!("{place}: {message}"))?;
            let addr = target.current().addr;
            if let Some(first) = targets.iter().position(|seen| seen.current().addr == addr) {
                return Err(format!(
                    "gateway.upstream[{first}] and {place} both resolve to {addr}; list each backend once"
                ));
            }
            targets.push(target);
        }

        let registry = match (previous, &plan) {
            (Some(old), Some(new)) if old.plan.as_ref().is_some_and(|old| old.same_check(new)) => {
                Arc::clone(&old.registry)
            }
            _ => new_registry(plan.as_ref()),
        };
        let discovery = Arc::new(TargetSet {
            backends: ArcSwap::from_pointee(backend_set(&targets)),
        });
        let backends = Backends::new_with_health_registry(
            Box::new(SharedDiscovery(Arc::clone(&discovery))),
            Arc::clone(&registry),
        );
        let lb = LoadBalancer::<RoundRobin>::from_backends(backends);
        // The discovery above returns at once, so the first update completes without a runtime.
        match lb.update().now_or_never() {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                return Err(format!(
                    "gateway.upstream: cannot build the backend set: {err}"
                ))
            }
            None => {
                return Err("gateway.upstream: building the backend set did not complete".into())
            }
        }
        Ok(Balancer {
            targets,
            lb,
            discovery,
            plan,
            registry,
            peers,
        })
    }

    /// Picks the next healthy backend in weighted round-robin order.
    pub fn select(&self) -> Option<Arc<BackendInfo>> {
        // One backend without health checks is always the pick.
        if let ([only], None) = (self.targets.as_slice(), &self.plan) {
            return Some(only.current());
        }
        self.lb
            .select(b"", self.max_iterations())
            .as_ref()
            .and_then(info_of)
    }

    /// Picks a healthy backend other than the one at `failed`, for the retry of a failed connect.
    pub fn select_other(&self, failed: SocketAddr) -> Option<Arc<BackendInfo>> {
        self.lb
            .select_with(b"", self.max_iterations(), |backend, ready| {
                ready && backend.addr.as_inet() != Some(&failed)
            })
            .as_ref()
            .and_then(info_of)
    }

    /// Bounds the search for a healthy backend. After its first pick,
    /// pingora's weighted round robin walks the backends one by one, and
    /// concurrent requests may make it skip some, hence the margin.
    fn max_iterations(&self) -> usize {
        self.targets.len() * 4 + 4
    }

    /// Returns every configured backend at its current address, in file order.
    pub fn backends(&self) -> impl Iterator<Item = Arc<BackendInfo>> + '_ {
        self.targets.iter().map(UpstreamTarget::current)
    }

    /// Returns whether a backend gets requests: healthy by its checks, or always without checks.
    fn is_up(&self, target: &UpstreamTarget) -> bool {
        self.lb.backends().ready(&Backend {
            addr: EngineAddr::Inet(target.current().addr),
            weight: usize::from(target.weight),
            ext: Extensions::new(),
        })
    }

    /// Returns whether at least one backend is healthy by its last checks.
    pub fn any_healthy(&self) -> bool {
        self.targets.iter().any(|target| self.is_up(target))
    }

    /// Returns whether at least one backend accepts a TCP connection within the connect timeout.
    pub async fn any_reachable(&self) -> bool {
        let timeout = self.peers.timeouts.connect();
        let attempts = self.targets.iter().map(|target| {
            let addr = target.current().addr;
            async move {
                let connect = tokio::net::TcpStream::connect(addr);
                matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
            }
        });
        futures::future::join_all(attempts)
            .await
            .into_iter()
            .any(|reachable| reachable)
    }

    /// Returns the health check interval, or `None` when no `healthCheck` is configured.
    pub fn health_interval(&self) -> Option<Duration> {
        self.plan.as_ref().map(|plan| plan.interval)
    }

    /// Checks every backend once, all at the same time.
    pub async fn run_health_check(&self) {
        self.lb.backends().run_health_check(true).await;
    }

    /// Sets `keygate_backend_up` of every backend from its current health.
    pub fn publish_backend_up(&self) {
        for target in &self.targets {
            METRICS.set_backend_up(&target.current().label, self.is_up(target));
        }
    }

    /// Looks every host name up again and moves backends whose address
    /// changed. Returns whether any moved. Blocks on name lookups.
    pub fn lookup_again(&self) -> bool {
        let mut moved = false;
        for target in &self.targets {
            let Some(addr) = target.lookup_again() else {
                continue;
            };
            if self
                .targets
                .iter()
                .any(|other| other.current().addr == addr)
            {
                warn!(upstream = %target.url, %addr, "upstream resolved to the address of another backend; keeping the last address");
                continue;
            }
            target.move_to(addr, &self.peers, self.plan.as_ref());
            moved = true;
        }
        moved
    }

    /// Hands the backends' current addresses to the balancer.
    pub async fn update_membership(&self) {
        self.discovery
            .backends
            .store(Arc::new(backend_set(&self.targets)));
        if let Err(err) = self.lb.update().await {
            warn!(error = %err, "updating the backend set failed; the balancer keeps the last set");
        }
    }
}

/// Builds a registry that keys health by address, so a changed weight keeps the backend's health.
fn new_registry(plan: Option<&HealthPlan>) -> Arc<HealthRegistry> {
    let registry = HealthRegistry::with_equivalence(|backend| {
        let mut hasher = DefaultHasher::new();
        backend.addr.hash(&mut hasher);
        hasher.finish()
    });
    if let Some(plan) = plan {
        // A new registry has no health check yet, so setting one cannot fail.
        registry.set_health_check(Box::new(BackendCheck::new(plan)));
    }
    Arc::new(registry)
}

fn backend_set(targets: &[UpstreamTarget]) -> BTreeSet<Backend> {
    targets
        .iter()
        .map(|target| {
            let info = target.current();
            let mut ext = Extensions::new();
            let addr = EngineAddr::Inet(info.addr);
            ext.insert(info);
            Backend {
                addr,
                weight: usize::from(target.weight),
                ext,
            }
        })
        .collect()
}

fn info_of(backend: &Backend) -> Option<Arc<BackendInfo>> {
    backend.ext.get::<Arc<BackendInfo>>().cloned()
}

#[cfg(test)]
mod tests;
