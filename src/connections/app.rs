//! The pingora app that caps open client connections in front of another
//! app, the gateway's HTTP proxy.
//!
//! pingora's listening service accepts a connection, finishes the TLS
//! handshake when the listener has TLS, then calls
//! [`ServerApp::process_new`] and calls it again for as long as it returns
//! a stream to reuse. [`CappedApp`] takes a [`Slot`] before the first call,
//! runs that loop itself, and gives the slot back when the connection ends.
//! A connection over a cap is closed without reading from it.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tracing::warn;

use super::{Caps, ConnectionSlots, Rejection, Slot};
use crate::logging::CONNECTION_REJECTION_LOG;
use crate::metrics::METRICS;
use crate::reload::SnapshotStore;

/// Wraps `inner` so that every connection it serves takes a slot first.
pub struct CappedApp<A> {
    inner: Arc<A>,
    slots: Arc<ConnectionSlots>,
    /// The caps are read from the snapshot in force when each connection arrives.
    store: Arc<SnapshotStore>,
}

impl<A> CappedApp<A> {
    pub fn new(inner: A, store: Arc<SnapshotStore>) -> Self {
        CappedApp {
            inner: Arc::new(inner),
            slots: ConnectionSlots::new(),
            store,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CappedApp<A> {
    /// Serves the connection through the inner app, or closes it at once
    /// when a cap is reached. Always returns `None`: the reuse loop has
    /// already run here, so that the slot is held for all of it.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = peer_ip(&stream);
        let caps = {
            let snapshot = self.store.current();
            let limits = &snapshot.settings.limits;
            Caps {
                total: limits.max_connections.0 as usize,
                per_peer: limits.max_connections_per_peer.0 as usize,
            }
        };
        let _open = match self.slots.try_acquire(peer, caps) {
            Ok(slot) => OpenConnection::new(slot),
            Err(rejection) => {
                self.record_rejection(rejection, peer, caps);
                // Dropping the stream closes the connection unread.
                return None;
            }
        };

        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

impl<A> CappedApp<A> {
    /// Counts a rejected connection and logs it at a bounded rate.
    fn record_rejection(&self, rejection: Rejection, peer: Option<IpAddr>, caps: Caps) {
        METRICS.count_rejected_connection(rejection);
        let (admitted, held_back) = CONNECTION_REJECTION_LOG.admit();
        if held_back > 0 {
            warn!(
                lines = held_back,
                "rejected connection log lines held back by the rate limit"
            );
        }
        if !admitted {
            return;
        }
        let peer = peer.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        match rejection {
            Rejection::Total => warn!(
                reason = rejection.as_str(),
                %peer,
                cap = caps.total,
                "connection closed unread: limits.maxConnections connections are open"
            ),
            Rejection::Peer => warn!(
                reason = rejection.as_str(),
                %peer,
                cap = caps.per_peer,
                "connection closed unread: limits.maxConnectionsPerPeer connections from this peer are open"
            ),
        }
    }
}

/// A slot that also counts in the open-connections gauge while it is held.
struct OpenConnection {
    _slot: Slot,
}

impl OpenConnection {
    fn new(slot: Slot) -> Self {
        METRICS.client_connection_opened();
        OpenConnection { _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.client_connection_closed();
    }
}

/// Returns the client's IP address, or `None` for a connection without one.
fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?;
    Some(addr.ip())
}
