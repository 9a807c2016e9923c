//! How a running keygate stops: the signals it acts on, and what happens to
//! kept-alive client connections while requests in flight finish.
//!
//! - SIGTERM: stop accepting, let requests finish for the grace period, exit.
//! - SIGINT: exit at once.
//! - SIGQUIT: hand the listening sockets to a new keygate waiting at
//!   `gateway.upgradeSocket` (see [`crate::handover`]), keep accepting for
//!   5 more seconds (pingora's fixed handover time), then stop as on SIGTERM.
//!   Without a waiting keygate, SIGQUIT is logged and ignored, and so is a
//!   SIGQUIT that arrives before the handlers are installed (see
//!   [`ignore_quit_until_ready`]).
//!
//! When the drain starts, pingora's proxy would close every kept-alive
//! connection that waits for its next request at once. A client that sends
//! on such a connection at that moment gets it closed without a response.
//! [`DrainingProxy`] keeps those connections open for most of the grace
//! period instead. The response to the next request on each carries
//! `Connection: close`, so an HTTP/1.1 client reconnects, and only
//! connections still idle at the end are closed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal as nix_signal;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::gateway::Gateway;
use crate::handover;

/// The signals that end a running keygate.
pub struct ShutdownSignals {
    /// The socket at which a new keygate waits for the listening sockets.
    pub upgrade_socket: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = install(SignalKind::quit(), "SIGQUIT");
        let mut terminate = install(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
        info!("handling SIGTERM (drain), SIGQUIT (handover to a new keygate) and SIGINT (stop)");
        loop {
            tokio::select! {
                () = next(&mut quit) => {
                    match handover::check_receiver(&self.upgrade_socket) {
                        Ok(()) => {
                            info!(socket = %self.upgrade_socket.display(), "SIGQUIT received; handing the listening sockets to the new keygate, then draining");
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        // A handover without a receiver would stop this keygate and leave the ports closed.
                        Err(reason) => error!(
                            reason = %reason,
                            "SIGQUIT received, but no new keygate waits for the listening sockets; start one with `keygate run --upgrade` first. This keygate keeps serving"
                        ),
                    }
                }
                () = next(&mut terminate) => {
                    info!("SIGTERM received; draining");
                    return ShutdownSignal::GracefulTerminate;
                }
                () = next(&mut interrupt) => {
                    info!("SIGINT received; stopping at once");
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

/// Ignores SIGQUIT until [`ShutdownSignals`] installs its handler. SIGQUIT
/// would otherwise end the process with a core dump, so a SIGQUIT meant for
/// the running keygate (`pkill -QUIT keygate`) would kill a new one that is
/// still starting or waiting for the sockets.
pub fn ignore_quit_until_ready() {
    // SAFETY: SIG_IGN runs no code in the signal handler, so nothing in this
    // process can be interrupted in an unsafe state.
    if let Err(err) =
        unsafe { nix_signal::signal(nix_signal::Signal::SIGQUIT, nix_signal::SigHandler::SigIgn) }
    {
        eprintln!("keygate: failed to ignore SIGQUIT during start-up: {err}");
    }
}

/// Installs the handler of one signal, or logs why it could not.
fn install(kind: SignalKind, name: &'static str) -> Option<Signal> {
    match signal(kind) {
        Ok(handler) => Some(handler),
        Err(err) => {
            warn!(signal = name, error = %err, "failed to install the signal handler");
            None
        }
    }
}

/// Waits for the next delivery of a signal, or forever without a handler.
async fn next(handler: &mut Option<Signal>) {
    let received = match handler {
        Some(handler) => handler.recv().await,
        None => std::future::pending().await,
    };
    if received.is_none() {
        // The stream has ended, so waiting on it again would return at once.
        *handler = None;
        std::future::pending::<()>().await;
    }
}

/// The gateway's proxy, with a later close of idle kept-alive connections
/// when the drain starts.
pub struct DrainingProxy {
    proxy: Arc<HttpProxy<Gateway>>,
    /// Time from the start of the drain to closing the idle connections.
    idle_close_delay: Duration,
}

impl DrainingProxy {
    pub fn new(proxy: HttpProxy<Gateway>, idle_close_delay: Duration) -> DrainingProxy {
        DrainingProxy {
            proxy: Arc::new(proxy),
            idle_close_delay,
        }
    }
}

#[async_trait]
impl ServerApp for DrainingProxy {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // While draining, pingora adds `Connection: close` to the response to each request it reads.
        self.proxy.process_new(stream, shutdown).await
    }

    /// Runs when the drain starts and the listeners stop accepting.
    /// pingora's proxy closes its idle connections in its own `cleanup`,
    /// so that is delayed.
    async fn cleanup(&self) {
        tokio::time::sleep(self.idle_close_delay).await;
        info!("closing the kept-alive client connections that are still idle");
        self.proxy.cleanup().await;
    }
}
