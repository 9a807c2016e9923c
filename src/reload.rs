//! The `arc-swap` holder of the current snapshot, and the one path by which
//! a new snapshot gets in: read the file off the request threads, check
//! it, build the snapshot, swap. Reloads are serialised; a failed one
//! changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tracing::{info, warn};

use crate::balancer::Balancer;
use crate::clients::ClientTable;
use crate::config::{self, Config, ConfigError, GatewaySettings};
use crate::metrics::{ReloadTrigger, METRICS};
use crate::ratelimit::RateLimits;
use crate::routes::Routes;
use crate::tls::{self, TlsMaterial};

/// Everything a request reads, loaded as one unit so a request never reads half a config.
pub struct Snapshot {
    pub settings: GatewaySettings,
    pub clients: ClientTable,
    pub rate_limits: RateLimits,
    pub balancer: Arc<Balancer>,
    pub routes: Routes,
    /// The certificates and CAs read from the files the config names.
    pub tls: TlsMaterial,
    /// Each top-level key of the file with a fingerprint of its value.
    top_level: Vec<(String, u64)>,
    /// SHA-256 of the file's bytes that this snapshot was built from.
    pub source_digest: [u8; 32],
}

/// The changes a successful reload made.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Top-level keys whose value changed, appeared or disappeared, in file order.
    pub changed: Vec<String>,
    pub clients_added: usize,
    pub clients_removed: usize,
    pub clients_kept: usize,
    /// Settings whose new value waits for a restart.
    pub waiting_for_restart: Vec<&'static str>,
    /// Problems that did not stop the file from loading.
    pub warnings: Vec<String>,
}

/// The current snapshot and the file it comes from.
pub struct SnapshotStore {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Held for a whole reload so that reloads never interleave.
    reload_lock: tokio::sync::Mutex<()>,
    /// Wakes the health check loop after a reload, so new backends are checked at once.
    reloaded: tokio::sync::Notify,
}

impl Snapshot {
    /// Builds a snapshot from a checked config and the TLS material read for
    /// it. Blocks: it hashes every key and looks up the upstream hosts. State
    /// that outlives a refresh (backend health, rate-limit buckets) is taken
    /// over from `previous`.
    ///
    /// # Errors
    ///
    /// An upstream host does not resolve, or two resolve to one address.
    pub fn build(
        config: Config,
        tls: TlsMaterial,
        previous: Option<&Snapshot>,
    ) -> Result<Self, String> {
        let balancer = Balancer::build(
            &config.gateway,
            tls.upstream_ca.clone(),
            previous.map(|old| &*old.balancer),
        )?;
        let mut rate_limits = RateLimits::new(&config.clients, config.gateway.rate_limit);
        if let Some(old) = previous {
            rate_limits.keep_state_from(&old.rate_limits);
        }
        Ok(Snapshot {
            clients: ClientTable::new(&config.clients),
            rate_limits,
            routes: Routes::new(&config.gateway),
            balancer: Arc::new(balancer),
            tls,
            settings: config.gateway,
            top_level: config.top_level,
            source_digest: config.source_digest,
        })
    }
}

/// Reads, checks and builds a snapshot from `path` and the TLS files it
/// names, taking state over from `previous` (see [`Snapshot::build`]). Blocks.
///
/// # Errors
///
/// The file or a TLS file it names is unreadable or invalid, or an upstream
/// host does not resolve.
pub fn load_snapshot(
    path: &Path,
    previous: Option<&Snapshot>,
) -> Result<(Snapshot, Vec<String>), ConfigError> {
    let config = config::load(path)?;
    let (material, tls_warnings) = tls::load_material(&config.gateway, path)?;
    let mut warnings = config.warnings.clone();
    warnings.extend(tls_warnings);
    let snapshot = Snapshot::build(config, material, previous).map_err(|message| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message,
    })?;
    Ok((snapshot, warnings))
}

impl SnapshotStore {
    pub fn new(path: PathBuf, snapshot: Snapshot) -> Self {
        METRICS.record_load(snapshot.clients.len());
        METRICS.track_rate_limited(snapshot.rate_limits.limited_clients(), std::iter::empty());
        snapshot.balancer.publish_backend_up();
        SnapshotStore {
            path,
            current: ArcSwap::from_pointee(snapshot),
            reload_lock: tokio::sync::Mutex::new(()),
            reloaded: tokio::sync::Notify::new(),
        }
    }

    /// Returns the path of the config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the next successful reload.
    pub async fn reloaded(&self) {
        self.reloaded.notified().await;
    }

    /// Returns the snapshot in force now. Loading it takes no lock, so a reload never blocks it.
    pub fn current(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Returns the snapshot in force now, to keep for the whole of one request.
    pub fn current_owned(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reads the file again and swaps in the new snapshot if it passes every rule.
    ///
    /// # Errors
    ///
    /// The new file is rejected; the old snapshot stays in force.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ReloadReport, ConfigError> {
        let _serialised = self.reload_lock.lock().await;

        let path = self.path.clone();
        let previous = self.current.load_full();
        let loaded = tokio::task::spawn_blocking(move || load_snapshot(&path, Some(&previous)))
            .await
            .unwrap_or_else(|err| {
                Err(ConfigError {
                    file: self.path.clone(),
                    line: None,
                    column: None,
                    message: format!("the reload task failed: {err}"),
                })
            });
        let (mut snapshot, warnings) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                METRICS.record_reload(trigger, false, self.current().clients.len());
                return Err(err);
            }
        };

        let old = self.current.load_full();
        let mut waiting_for_restart = old.settings.settings_needing_restart(&snapshot.settings);
        let new_certificate = !same_server_tls(&old.tls, &snapshot.tls);
        if new_certificate && !waiting_for_restart.contains(&"gateway.tls") {
            waiting_for_restart.push("gateway.tls");
        }
        keep_running_values(&old.settings, &mut snapshot.settings);
        snapshot.tls.server = old.tls.server.clone();
        let mut report = compare(&old, &snapshot, waiting_for_restart, warnings);
        let new_upstream_ca = !same_upstream_ca(&old.tls, &snapshot.tls);
        if (new_certificate || new_upstream_ca)
            && !report.changed.iter().any(|name| name == "gateway")
        {
            report.changed.push("gateway".into());
        }

        apply_live_settings(&old, &snapshot);
        let clients = snapshot.clients.len();
        self.current.store(Arc::new(snapshot));
        // One stored permit is enough: the loop checks the snapshot in force when it wakes.
        self.reloaded.notify_one();
        METRICS.record_reload(trigger, true, clients);
        Ok(report)
    }
}

/// Keeps the running values of settings that take effect only at start-up.
fn keep_running_values(running: &GatewaySettings, new: &mut GatewaySettings) {
    new.listen = running.listen.clone();
    new.threads = running.threads;
    new.metrics.listen = running.metrics.listen;
    new.log.format = running.log.format;
    new.tls = running.tls.clone();
}

/// Returns whether both loads read the same listener certificate files, by content.
fn same_server_tls(old: &TlsMaterial, new: &TlsMaterial) -> bool {
    match (&old.server, &new.server) {
        (Some(old), Some(new)) => old.same_files(new),
        (None, None) => true,
        _ => false,
    }
}

/// Returns whether both loads read the same `upstreamCa` bundle, by content.
fn same_upstream_ca(old: &TlsMaterial, new: &TlsMaterial) -> bool {
    match (&old.upstream_ca, &new.upstream_ca) {
        (Some(old), Some(new)) => old.group_key() == new.group_key(),
        (None, None) => true,
        _ => false,
    }
}

fn compare(
    old: &Snapshot,
    new: &Snapshot,
    waiting_for_restart: Vec<&'static str>,
    warnings: Vec<String>,
) -> ReloadReport {
    let mut changed: Vec<String> = new
        .top_level
        .iter()
        .filter(|(name, fingerprint)| {
            !old.top_level
                .iter()
                .any(|(old_name, old_print)| old_name == name && old_print == fingerprint)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for (name, _) in &old.top_level {
        if !new.top_level.iter().any(|(new_name, _)| new_name == name) {
            changed.push(name.clone());
        }
    }

    let clients_kept = new
        .clients
        .client_ids()
        .filter(|id| old.clients.contains(id))
        .count();
    ReloadReport {
        changed,
        clients_added: new.clients.len() - clients_kept,
        clients_removed: old.clients.len() - clients_kept,
        clients_kept,
        waiting_for_restart,
        warnings,
    }
}

/// Applies the side effects of settings that live outside the snapshot.
fn apply_live_settings(old: &Snapshot, new: &Snapshot) {
    if old.settings.log.level != new.settings.log.level {
        crate::logging::set_level(new.settings.log.level);
        info!(level = new.settings.log.level.as_str(), "log level changed");
    }
    if old.settings.limits.max_connections != new.settings.limits.max_connections {
        crate::fd_limit::ensure_for(new.settings.limits.max_connections.0);
    }
    if !new.settings.metrics.per_client {
        if old.settings.metrics.per_client {
            METRICS.forget_all_clients();
        }
    } else {
        METRICS.forget_clients(
            old.clients
                .client_ids()
                .filter(|id| !new.clients.contains(id)),
        );
    }
    let new_backends: Vec<Arc<str>> = new
        .balancer
        .backends()
        .map(|info| Arc::clone(&info.label))
        .collect();
    let removed_backends: Vec<Arc<str>> = old
        .balancer
        .backends()
        .map(|info| Arc::clone(&info.label))
        .filter(|label| !new_backends.contains(label))
        .collect();
    METRICS.forget_backends(removed_backends.iter().map(|label| &**label));
    new.balancer.publish_backend_up();
    METRICS.track_rate_limited(
        new.rate_limits.limited_clients(),
        old.rate_limits
            .limited_clients()
            .filter(|id| new.rate_limits.limit_of(id).is_none()),
    );

    if new.clients.is_empty() {
        warn!("the new config allows no client; every keyed request gets 403");
    }
}
