//! Log set-up through `tracing`: the level from the config or `RUST_LOG`,
//! live level changes on refresh, pingora's own lines capped at info, and
//! lines about auth failures and rejected connections bounded in rate.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{warn, Level};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

use crate::config::{LogFormat, LogLevel};

/// Auth failures logged in one second; the rest are counted and summarised.
const AUTH_FAILURE_LINES_PER_SECOND: u64 = 10;

/// Connections rejected by a connection cap logged in one second.
const CONNECTION_REJECTION_LINES_PER_SECOND: u64 = 10;

/// Lines a second about request heads rejected with 408 or 431 before the proxy engine.
const HEAD_FAILURE_LINES_PER_SECOND: u64 = 10;

/// The log target of pingora's module that sends and receives listening sockets.
const ENGINE_SOCKET_TRANSFER_TARGET: &str = "pingora_core::server::transfer_fd";

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Set when the level comes from the config file, so a refresh may change it.
static LEVEL_HANDLE: OnceLock<FilterHandle> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the config level.
///
/// # Errors
///
/// `RUST_LOG` contains an invalid filter, or a subscriber is already installed.
pub fn init(level: LogLevel, format: LogFormat) -> Result<(), String> {
    let from_environment = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = match &from_environment {
        Some(value) => {
            EnvFilter::try_new(value).map_err(|err| format!("invalid RUST_LOG {value:?}: {err}"))?
        }
        None => EnvFilter::new(level.as_str()),
    };
    let (filter, handle) = reload::Layer::new(filter);

    // pingora's debug and trace lines print whole request heads, keys
    // included. Its HTTP/2 and TLS crates write a line per frame and per
    // handshake message there, which would bury keygate's own lines.
    // pingora's socket-transfer module logs each retry of the in-process
    // relay of a graceful upgrade as an error (see `handover`). keygate logs
    // the handover itself, and pingora logs a failed send in its server module.
    let engine_cap = filter_fn(|metadata| {
        let target = metadata.target();
        !(is_engine_target(target) && *metadata.level() > Level::INFO)
            && target != ENGINE_SOCKET_TRANSFER_TARGET
    });

    let colour = std::io::stdout().is_terminal();
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(colour)
    });
    let json = (format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().flatten_event(true));
    tracing_subscriber::registry()
        .with(filter)
        .with(engine_cap)
        .with(text)
        .with(json)
        .try_init()
        .map_err(|err| format!("cannot install the logger: {err}"))?;

    // pingora logs through the `log` crate, bridged into `tracing`. Its debug
    // and trace records are never written, so they are not even built.
    log::set_max_level(log::LevelFilter::Info);

    if from_environment.is_none() {
        let _ = LEVEL_HANDLE.set(handle);
    }
    Ok(())
}

/// Returns whether `target` belongs to the proxy engine: pingora and the
/// `h2` and `rustls` crates it speaks HTTP/2 and TLS through.
fn is_engine_target(target: &str) -> bool {
    let crate_name = target.split("::").next().unwrap_or(target);
    crate_name.starts_with("pingora") || matches!(crate_name, "h2" | "rustls" | "tokio_rustls")
}

/// Applies a new level from the config; a no-op when `RUST_LOG` sets the level.
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL_HANDLE.get() {
        if let Err(err) = handle.reload(EnvFilter::new(level.as_str())) {
            warn!(error = %err, "failed to change the log level");
        }
    }
}

/// Admits log lines about a repeated failure at a bounded rate.
pub struct FailureLogLimiter {
    /// The Unix second of the current window, shifted left 20 bits, plus the lines logged in it.
    window: AtomicU64,
    suppressed: AtomicU64,
    lines_per_second: u64,
}

/// The process-wide limiter for auth-failure lines.
pub static AUTH_FAILURE_LOG: FailureLogLimiter =
    FailureLogLimiter::new(AUTH_FAILURE_LINES_PER_SECOND);

/// The process-wide limiter for lines about request heads that were too
/// slow or too large on the early path.
pub static HEAD_FAILURE_LOG: FailureLogLimiter =
    FailureLogLimiter::new(HEAD_FAILURE_LINES_PER_SECOND);

/// The process-wide limiter for lines about connections over a connection cap.
pub static CONNECTION_REJECTION_LOG: FailureLogLimiter =
    FailureLogLimiter::new(CONNECTION_REJECTION_LINES_PER_SECOND);

impl FailureLogLimiter {
    /// Creates a limiter that admits `lines_per_second` lines in each second
    /// of the clock (at most 2^20 - 1).
    pub const fn new(lines_per_second: u64) -> Self {
        FailureLogLimiter {
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            lines_per_second,
        }
    }

    /// Returns whether this failure may be logged. When a new second starts,
    /// also returns how many lines the previous windows held back.
    pub fn admit(&self) -> (bool, u64) {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, count) = (current >> 20, current & 0xF_FFFF);
            let next = if window_second == second {
                current + 1
            } else {
                (second << 20) | 1
            };
            if window_second == second && count >= self.lines_per_second {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return (false, 0);
            }
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let held_back = if window_second == second {
                        0
                    } else {
                        self.suppressed.swap(0, Ordering::Relaxed)
                    };
                    return (true, held_back);
                }
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_targets() {
        for target in [
            "pingora_core::services::listening",
            "pingora_proxy",
            "h2::codec::framed_write",
            "h2",
            "rustls::server::hs",
            "tokio_rustls",
        ] {
            assert!(is_engine_target(target), "{target}");
        }
        for target in ["keygate", "keygate::access", "h2o", "rustlsx"] {
            assert!(!is_engine_target(target), "{target}");
        }
    }

    #[test]
    fn limiter_bounds_lines() {
        let limiter = FailureLogLimiter::new(AUTH_FAILURE_LINES_PER_SECOND);
        let admitted = (0..1000).filter(|_| limiter.admit().0).count();
        // The loop may straddle a second boundary, which opens one more window.
        assert!(
            admitted >= AUTH_FAILURE_LINES_PER_SECOND as usize,
            "admitted {admitted}"
        );
        assert!(
            admitted <= 2 * AUTH_FAILURE_LINES_PER_SECOND as usize,
            "admitted {admitted}"
        );
    }
}
