//! The process's open-file limit, checked against `limits.maxConnections`.
//!
//! Every client connection is a file descriptor, and so is the backend
//! connection that forwards its request. When the open-file limit runs out
//! before the connection cap is reached, `accept` fails instead (pingora
//! 0.9.1 then pauses that listener for a second), so the cap would protect
//! nothing. Many systems start services with a soft limit of 1024 and a far
//! higher hard limit, and a process may raise its own soft limit up to the
//! hard one, as the Go runtime does at start-up since Go 1.19.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{info, warn};

/// Descriptors kept for everything beside client connections and their
/// backend connections: listeners, the metrics listener, pooled and
/// health-check connections, the config watch, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Returns the open-file limit that `max_connections` client connections need.
pub fn descriptors_needed(max_connections: u32) -> u64 {
    2 * u64::from(max_connections) + RESERVED_DESCRIPTORS
}

/// Raises the soft open-file limit as far as `max_connections` needs and the
/// hard limit allows, and warns when the limit stays too low.
pub fn ensure_for(max_connections: u32) {
    let needed = descriptors_needed(max_connections);
    let limit = getrlimit(Resource::Nofile);
    // `None` means no limit.
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let raised = needed.min(hard);
    if raised > soft {
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => info!(
                from = soft,
                to = raised,
                "raised the open-file limit for limits.maxConnections"
            ),
            Err(err) => {
                warn!(limit = soft, needed, error = %err, "failed to raise the open-file limit; lower limits.maxConnections or raise the limit (ulimit -n, LimitNOFILE)");
                return;
            }
        }
    }
    if raised < needed {
        warn!(
            limit = raised,
            needed,
            max_connections,
            "the open-file limit is too low for limits.maxConnections, so accept fails before the cap is reached; raise the hard limit (ulimit -Hn, LimitNOFILE) or lower limits.maxConnections"
        );
    }
}
