//! Caps on open client connections: a count of all of them and a count for
//! each peer. A connection takes a [`Slot`] when it is accepted and gives it
//! back when the slot is dropped, so a connection whose task is cancelled
//! gives it back too. [`app`] wraps the gateway's pingora app to take the
//! slots.
//!
//! pingora's client read timeout applies to each read, not to a whole
//! request head, so a client that sends its head a byte at a time keeps a
//! connection open for as long as it keeps sending. The caps bound how many such
//! connections there can be, and how many of them one peer can keep open.

pub mod app;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Shards of the per-peer table, so that connections from different peers
/// seldom wait for the same lock.
const PEER_SHARDS: usize = 16;

/// The caps in force when a connection arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Open connections on all listen addresses together.
    pub total: usize,
    /// Open connections from one peer (see [`PeerKey`]).
    pub per_peer: usize,
}

/// The cap that a rejected connection would have exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Total,
    Peer,
}

impl Rejection {
    pub const ALL: [Rejection; 2] = [Rejection::Total, Rejection::Peer];

    /// Returns the value of the `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Total => "total",
            Rejection::Peer => "peer",
        }
    }
}

/// The unit that the per-peer cap counts: an IPv4 address, or the /64
/// network of an IPv6 address. One IPv6 host usually owns a whole /64 and
/// can pick any address in it, so counting single IPv6 addresses would let
/// it open as many connections as it likes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    /// Returns the key of `ip`. IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => PeerKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                PeerKey(IpAddr::V6(Ipv6Addr::from(network)))
            }
        }
    }

    /// Returns the address, or the first address of the IPv6 /64, that this key counts.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

/// The counts of open connections, shared by every listener of the gateway.
pub struct ConnectionSlots {
    open: AtomicUsize,
    shard_hasher: RandomState,
    peers: [Mutex<HashMap<PeerKey, usize>>; PEER_SHARDS],
}

/// One open connection's place in the counts, given back on drop.
#[must_use = "the connection's slot is given back as soon as it is dropped"]
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    peer: Option<PeerKey>,
}

impl ConnectionSlots {
    pub fn new() -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            open: AtomicUsize::new(0),
            shard_hasher: RandomState::new(),
            peers: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        })
    }

    /// Takes a slot for a new connection from `peer`, or returns the cap it
    /// would go over. A connection without an IP peer (a Unix socket) is
    /// counted in the total only.
    ///
    /// # Errors
    ///
    /// `caps.total` connections are open, or `caps.per_peer` from this peer.
    pub fn try_acquire(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        caps: Caps,
    ) -> Result<Slot, Rejection> {
        let took_total = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < caps.total).then_some(open + 1)
            });
        if took_total.is_err() {
            return Err(Rejection::Total);
        }

        let peer = peer.map(PeerKey::of);
        if let Some(key) = peer {
            let mut shard = self.shard(key);
            let count = shard.entry(key).or_insert(0);
            if *count >= caps.per_peer {
                if *count == 0 {
                    shard.remove(&key);
                }
                drop(shard);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Rejection::Peer);
            }
            *count += 1;
        }
        Ok(Slot {
            slots: Arc::clone(self),
            peer,
        })
    }

    /// Returns the number of open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Returns the number of open connections that count against `ip`'s per-peer cap.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let key = PeerKey::of(ip);
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    /// Returns the number of peers with at least one open connection.
    pub fn peers(&self) -> usize {
        self.peers.iter().map(|shard| lock(shard).len()).sum()
    }

    fn shard(&self, key: PeerKey) -> MutexGuard<'_, HashMap<PeerKey, usize>> {
        // The modulo keeps the index below PEER_SHARDS, so the cast loses nothing.
        let index = (self.shard_hasher.hash_one(key) % PEER_SHARDS as u64) as usize;
        lock(&self.peers[index])
    }

    fn release(&self, peer: Option<PeerKey>) {
        if let Some(key) = peer {
            let mut shard = self.shard(key);
            if let Some(count) = shard.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    shard.remove(&key);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slot {
    /// Returns the peer this slot counts against, if the connection has an IP peer.
    pub fn peer(&self) -> Option<PeerKey> {
        self.peer
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.peer);
    }
}

/// Locks a shard. The code under the lock only updates counts and has no
/// panicking step, so a poisoned shard still has consistent counts.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
