//! Reloads without the refresh route: on SIGHUP, and when the config file
//! changes on disk while `gateway.watchConfig` is on.
//!
//! Both run in a pingora background service, because pingora's server cannot
//! run inside another tokio runtime, and both reload through
//! [`reload_and_forward`], the serialised path that the refresh route uses.
//!
//! The watch is on the folder that contains the file, not on the file, so
//! it notices an editor or a tool replacing the file by a rename, and a
//! Kubernetes ConfigMap swapping its `..data` symlink to a new folder. When
//! the path is a symlink to a file in another folder, that folder is watched
//! too. Events are debounced, and a file whose bytes did not change is not
//! reloaded.
//!
//! NOTE: a writer that pauses for longer than [`DEBOUNCE`] in the middle of
//! a file can have the first part read. A part that breaks a rule is a
//! failed reload, and the old snapshot stays, but a part that happens to be
//! a valid file loads. Replace files with a rename to avoid that.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::MAX_FILE_BYTES;
use crate::metrics::ReloadTrigger;
use crate::reload::SnapshotStore;
use crate::reload_actions::reload_and_forward;

/// Quiet time after the last change in the folder before the file is read.
/// Writers that replace a file make several changes in a row.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Maximum wait after the first change, so a folder that never goes quiet still gets reloads.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// How often the watch is matched to `watchConfig` and to where the path's symlinks point.
const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// The background service that reloads on SIGHUP and on file changes.
pub struct ReloadService {
    store: Arc<SnapshotStore>,
}

impl ReloadService {
    pub fn new(store: Arc<SnapshotStore>) -> Self {
        ReloadService { store }
    }

    /// Reloads for `trigger` and logs the outcome.
    async fn reload(&self, trigger: ReloadTrigger) {
        match reload_and_forward(&self.store, trigger).await {
            Ok(report) => info!(
                trigger = trigger.as_str(),
                changed = ?report.changed,
                clients_added = report.clients_added,
                clients_removed = report.clients_removed,
                clients_kept = report.clients_kept,
                "config reloaded"
            ),
            Err(err) => warn!(
                trigger = trigger.as_str(),
                error = %err,
                "config reload failed; the running config stays"
            ),
        }
    }

    /// Reloads when the file's bytes differ from both the snapshot in force
    /// and the last bytes read. So a file that failed to load is not tried
    /// again until it changes, and a file already loaded by a refresh is
    /// not loaded twice. A missing or unreadable file counts as a change,
    /// so it is reported as a failed reload.
    async fn check_file(&self, last_read: &mut Option<[u8; 32]>) {
        let path = self.store.path().to_path_buf();
        let digest = match tokio::task::spawn_blocking(move || file_digest(&path)).await {
            Ok(Ok(digest)) => Some(digest),
            Ok(Err(_)) => None,
            Err(err) => {
                warn!(error = %err, "reading the config file for the watch failed");
                return;
            }
        };
        let loaded = Some(self.store.current().source_digest);
        if digest == *last_read || digest == loaded {
            *last_read = digest;
            return;
        }
        *last_read = digest;
        self.reload(ReloadTrigger::File).await;
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        // SIGHUP ends a process that has no handler for it. The gateway
        // service waits for this one to be ready, so no SIGHUP sent to a
        // listening gateway finds the handler missing.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                warn!(error = %err, "failed to install the SIGHUP handler; reload through the refresh route or the file watch");
                None
            }
        };
        let changes = Arc::new(Notify::new());
        let mut watch = FileWatch::new(self.store.path(), Arc::clone(&changes));
        watch.sync(self.store.current().settings.watch_config);
        ready.notify_ready();

        // The file may have changed between the start-up load and the watch.
        let mut last_read = Some(self.store.current().source_digest);
        if watch.is_on() {
            self.check_file(&mut last_read).await;
        }

        let mut sync = tokio::time::interval(SYNC_INTERVAL);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = next_hangup(&mut hangup) => {
                    info!("SIGHUP received; reloading the config");
                    self.reload(ReloadTrigger::Signal).await;
                }
                () = changes.notified() => {
                    settle(&changes).await;
                    if watch.is_on() {
                        self.check_file(&mut last_read).await;
                    }
                }
                _ = sync.tick() => {}
            }
            watch.sync(self.store.current().settings.watch_config);
        }
    }
}

/// Waits for the next SIGHUP, or forever when there is no handler.
async fn next_hangup(hangup: &mut Option<Signal>) {
    let received = match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    };
    if received.is_none() {
        // The signal stream has ended, so waiting on it again would return at once.
        *hangup = None;
        std::future::pending::<()>().await;
    }
}

/// Waits until the folder has been quiet for [`DEBOUNCE`], or [`MAX_DEBOUNCE`] has passed.
async fn settle(changes: &Notify) {
    let deadline = Instant::now() + MAX_DEBOUNCE;
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
        if tokio::time::timeout_at(quiet_until, changes.notified())
            .await
            .is_err()
            || Instant::now() >= deadline
        {
            return;
        }
    }
}

/// Returns the SHA-256 of the file's bytes, read in chunks. Like the config
/// loader, it reads regular files only and no more than the loader would,
/// so a FIFO or a device at the path cannot hang the watch.
fn file_digest(path: &Path) -> io::Result<[u8; 32]> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the config path is not a regular file",
        ));
    }
    let file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file.take(MAX_FILE_BYTES + 1), &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// The notify watcher and the folders it watches.
struct FileWatch {
    path: PathBuf,
    changes: Arc<Notify>,
    watcher: Option<RecommendedWatcher>,
    folders: BTreeSet<PathBuf>,
    /// Folders that could not be watched, so each failure is logged once.
    failed: BTreeSet<PathBuf>,
}

impl FileWatch {
    fn new(path: &Path, changes: Arc<Notify>) -> Self {
        FileWatch {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            changes,
            watcher: None,
            folders: BTreeSet::new(),
            failed: BTreeSet::new(),
        }
    }

    fn is_on(&self) -> bool {
        self.watcher.is_some()
    }

    /// Starts or stops the watch to match `on`, and watches the folders the path now leads through.
    fn sync(&mut self, on: bool) {
        if !on {
            if self.watcher.take().is_some() {
                info!(config = %self.path.display(), "config file watch stopped");
            }
            self.folders.clear();
            self.failed.clear();
            return;
        }
        if self.watcher.is_none() {
            match self.start_watcher() {
                Ok(watcher) => {
                    self.watcher = Some(watcher);
                    info!(config = %self.path.display(), "config file watch started");
                }
                Err(err) => {
                    warn!(config = %self.path.display(), error = %err, "failed to start the config file watch; reload with SIGHUP or the refresh route");
                    return;
                }
            }
        }
        self.watch_folders();
    }

    fn start_watcher(&self) -> notify::Result<RecommendedWatcher> {
        let changes = Arc::clone(&self.changes);
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => changes.notify_one(),
            Ok(_) => {}
            Err(err) => {
                warn!(error = %err, "config file watch error");
                changes.notify_one();
            }
        })
    }

    fn watch_folders(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let target_folders = folders_of(&self.path);
        for folder in self.folders.difference(&target_folders) {
            // The folder may be gone already, which ends its watch anyway.
            let _ = watcher.unwatch(folder);
        }
        self.folders
            .retain(|folder| target_folders.contains(folder));
        self.failed.retain(|folder| target_folders.contains(folder));
        for folder in target_folders {
            if self.folders.contains(&folder) {
                continue;
            }
            match watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.failed.remove(&folder);
                    self.folders.insert(folder);
                }
                Err(err) => {
                    if self.failed.insert(folder.clone()) {
                        warn!(folder = %folder.display(), error = %err, "failed to watch a folder of the config file");
                    }
                }
            }
        }
    }
}

/// Returns whether an event can mean new file contents. Opening or reading
/// the file, which the watch itself does, is not a change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Returns the folders to watch for `path`: its own folder, and the folder
/// of the file it finally leads to through symlinks.
fn folders_of(path: &Path) -> BTreeSet<PathBuf> {
    let mut folders = BTreeSet::new();
    if let Some(parent) = path.parent() {
        folders.insert(parent.to_path_buf());
    }
    if let Some(parent) = std::fs::canonicalize(path)
        .ok()
        .and_then(|target| target.parent().map(Path::to_path_buf))
    {
        folders.insert(parent);
    }
    folders
}

#[cfg(test)]
mod tests;
