//! The `gateway` section of the config file, with the defaults that apply
//! when a setting is left out. An unknown key is an error, so a typo is
//! never silently ignored.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::admin_token::AdminToken;
use super::tls::{PemPath, TlsFiles};
use super::units::{ConfigDuration, ConfigSize, RateLimit};
use super::upgrade::UpgradeSocket;
use super::upstream_url::UpstreamUrl;
use super::upstreams::{HealthCheckSettings, UpstreamList};
use super::values::{AdminNet, ForwardedHeader, ListenAddrs, RoutePrefix, Threads};

/// pingora rejects a request head larger than this before any keygate code runs.
pub const ENGINE_MAX_HEADER_SIZE: u64 = 1024 * 1024;

/// The default of `limits.maxConnections`, in the range of nginx's default
/// `worker_connections` (512 for each worker process, backend connections
/// included). A forwarding gateway uses about two file descriptors for each
/// client connection, so 2048 client connections need an open-file limit of
/// about 4400, and keygate raises its soft limit that far when the hard
/// limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2048;

/// The default of `limits.maxConnectionsPerPeer`: an eighth of the total, so
/// that one address alone cannot take every slot, while clients that share
/// an address behind NAT still get many connections.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 256;

/// The largest value of `limits.maxConnections` and `limits.maxConnectionsPerPeer`.
pub const MAX_CONNECTION_CAP: u32 = 1_000_000;

/// Every setting of the `gateway` section.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GatewaySettings {
    pub listen: ListenAddrs,
    pub context_path: RoutePrefix,
    pub uri_base: RoutePrefix,
    pub upstream: UpstreamList,
    /// The CAs that sign the certificates of `https://` backends. `None` uses the system's CA store.
    pub upstream_ca: Option<PemPath>,
    /// HTTPS on every listen address. `None` serves plain HTTP/1.1.
    pub tls: Option<TlsFiles>,
    /// The active health check of the backends; `None` sends no checks and counts every backend as healthy.
    pub health_check: Option<HealthCheckSettings>,
    /// The rate limit of clients whose entry sets none; `None` leaves them unlimited.
    pub rate_limit: Option<RateLimit>,
    pub forward_refresh: bool,
    pub hide_credentials: bool,
    pub client_id_header: ForwardedHeader,
    pub request_id_header: ForwardedHeader,
    pub admin_allow_from: Vec<AdminNet>,
    /// Digest of a bearer token that admits peers outside `adminAllowFrom` to the admin routes.
    pub admin_token: Option<AdminToken>,
    /// Reload when the config file changes on disk.
    pub watch_config: bool,
    pub threads: Threads,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    /// The Unix socket over which a running keygate hands its listening sockets to `run --upgrade`.
    pub upgrade_socket: UpgradeSocket,
}

/// Time limits for the backend and for clients.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Timeouts {
    /// Connecting to the backend.
    pub connect: ConfigDuration,
    /// Waiting for each read from the backend.
    pub read: ConfigDuration,
    /// Waiting for each write to the backend.
    pub write: ConfigDuration,
    /// How long an unused pooled backend connection is kept.
    pub upstream_idle: ConfigDuration,
    /// Waiting for each read from a client, and for its next request on a kept-alive connection.
    pub client_read: ConfigDuration,
}

/// Limits on open connections, on request sizes and on the work spent on refused requests.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Limits {
    /// Open client connections on all listen addresses together.
    pub max_connections: ConnectionCap,
    /// Open client connections from one IPv4 address or one IPv6 /64 network.
    pub max_connections_per_peer: ConnectionCap,
    pub max_header_size: ConfigSize,
    pub max_body_size: ConfigSize,
    /// The largest body read and discarded after a local response so the connection stays open.
    pub drain_body_max: ConfigSize,
    /// How long such a body may take to arrive.
    pub drain_time: ConfigDuration,
}

/// A maximum number of open connections, 1 to [`MAX_CONNECTION_CAP`].
///
/// There is no value that turns the cap off: without one, a client that
/// sends its request head a byte at a time can hold connections until the
/// process runs out of file descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCap(pub u32);

impl<'de> Deserialize<'de> for ConnectionCap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u32::try_from(value) {
            Ok(count) if (1..=MAX_CONNECTION_CAP).contains(&count) => Ok(ConnectionCap(count)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid connection cap {value}: write a whole number from 1 to {MAX_CONNECTION_CAP}; no value turns the cap off"
            ))),
        }
    }
}

/// Log level, format and the access log switch.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LogSettings {
    pub level: LogLevel,
    pub format: LogFormat,
    pub access: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The Prometheus listener.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MetricsSettings {
    pub listen: super::values::ListenAddr,
    /// Count requests by clientId; the label values come from the config only.
    pub per_client: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: ListenAddrs(vec![SocketAddr::from(([0, 0, 0, 0], 20200))]),
            context_path: RoutePrefix("/nps".into()),
            uri_base: RoutePrefix("/rest".into()),
            upstream: UpstreamList::single(UpstreamUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 20280,
            }),
            upstream_ca: None,
            tls: None,
            health_check: None,
            rate_limit: None,
            forward_refresh: true,
            hide_credentials: false,
            client_id_header: ForwardedHeader::new(http::HeaderName::from_static("x-client-id")),
            request_id_header: ForwardedHeader::new(http::HeaderName::from_static("x-request-id")),
            admin_allow_from: vec![
                AdminNet(ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]))),
                AdminNet(ipnet::IpNet::from(std::net::IpAddr::from(
                    std::net::Ipv6Addr::LOCALHOST,
                ))),
            ],
            admin_token: None,
            watch_config: true,
            threads: Threads::Auto,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
            upgrade_socket: UpgradeSocket::default(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: ConfigDuration(Duration::from_secs(1)),
            read: ConfigDuration(Duration::from_secs(30)),
            write: ConfigDuration(Duration::from_secs(30)),
            upstream_idle: ConfigDuration(Duration::from_secs(60)),
            client_read: ConfigDuration(Duration::from_secs(60)),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: ConnectionCap(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_peer: ConnectionCap(DEFAULT_MAX_CONNECTIONS_PER_PEER),
            max_header_size: ConfigSize(64 * 1024),
            max_body_size: ConfigSize(10 * 1024 * 1024),
            drain_body_max: ConfigSize(64 * 1024),
            drain_time: ConfigDuration(Duration::from_secs(1)),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: LogLevel::Info,
            format: LogFormat::Text,
            access: true,
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: super::values::ListenAddr(SocketAddr::from(([127, 0, 0, 1], 20201))),
            per_client: false,
        }
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl GatewaySettings {
    /// Checks the rules that involve more than one setting.
    pub fn check_combinations(&self) -> Result<(), String> {
        if self.client_id_header == self.request_id_header {
            return Err(format!(
                "clientIdHeader and requestIdHeader are both {:?}; give them different names",
                self.client_id_header.0.as_str()
            ));
        }
        if self.limits.max_header_size.0 > ENGINE_MAX_HEADER_SIZE {
            return Err(format!(
                "limits.maxHeaderSize {} is larger than the 1 MiB that the proxy engine accepts; use at most \"1MiB\"",
                self.limits.max_header_size
            ));
        }
        if self.limits.max_connections_per_peer.0 > self.limits.max_connections.0 {
            return Err(format!(
                "limits.maxConnectionsPerPeer {} is larger than limits.maxConnections {}; set it to at most {}",
                self.limits.max_connections_per_peer.0,
                self.limits.max_connections.0,
                self.limits.max_connections.0
            ));
        }
        if self.listen.0.contains(&self.metrics.listen.0) {
            return Err(format!(
                "metrics.listen {} is also a gateway listen address; give the metrics listener its own port",
                self.metrics.listen.0
            ));
        }
        Ok(())
    }

    /// Names the settings whose new value waits for a restart to take effect.
    pub fn settings_needing_restart(&self, new: &GatewaySettings) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.listen != new.listen {
            names.push("gateway.listen");
        }
        if self.threads != new.threads {
            names.push("gateway.threads");
        }
        if self.metrics.listen != new.metrics.listen {
            names.push("gateway.metrics.listen");
        }
        if self.log.format != new.log.format {
            names.push("gateway.log.format");
        }
        if self.tls != new.tls {
            names.push("gateway.tls");
        }
        if self.upgrade_socket != new.upgrade_socket {
            names.push("gateway.upgradeSocket");
        }
        names
    }
}
