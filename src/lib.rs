//! keygate: an API-key gateway in front of a push backend, on pingora.
//!
//! A client connection first takes a slot under the caps of
//! [`connections`]. A request flows one way: [`routes`] classifies its
//! path, [`gateway`] serves admin and health routes through [`admin`] or
//! checks the key against the [`clients`] table of the current [`reload`]
//! snapshot and the client's [`ratelimit`], and [`forward`] prepares what
//! passes for the backend that the [`balancer`] picks among the
//! [`upstream`] backends that pass their [`health`] checks. A config file flows the other way:
//! [`config`] parses and checks it, [`tls`] reads the certificate files it
//! names, [`reload`] builds a snapshot and swaps it in, when the refresh
//! route, a change of the file or SIGHUP ([`watch`]) asks for it.

pub mod admin;
pub mod admin_access;
pub mod attempts;
pub mod balancer;
pub mod clients;
pub mod config;
pub mod connections;
pub mod early_reject;
pub mod failure;
pub mod fast_forward;
pub mod fd_limit;
pub mod forward;
pub mod gateway;
pub mod handover;
pub mod health;
pub mod keygen;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod reload;
pub mod reload_actions;
pub mod respond;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod upstream;
pub mod watch;
