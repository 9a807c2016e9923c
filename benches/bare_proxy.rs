//! Bare pingora HTTP proxy, the floor for keygate's load comparison.
//!
//! It forwards every request to one upstream over pooled connections and
//! does nothing else: no routing, no key check, no header changes, no
//! metrics and no access log. Whatever keygate costs above this proxy is
//! keygate's own work. `benches/load/compare.sh` builds and runs it.
//!
//!     bare_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::RunArgs;

/// Bare pingora proxy with one upstream and one worker thread.
#[derive(Parser)]
#[command(name = "bare_proxy")]
struct Cli {
    /// Loopback address to listen on (IP:port).
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,

    /// Upstream address to forward every request to (IP:port, plain HTTP).
    #[arg(long, value_name = "IP:PORT")]
    upstream: SocketAddr,

    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Proxy that sends every request to the same prebuilt peer.
struct BareProxy {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

/// mimalloc instead of the system allocator: the engine allocates and frees
/// many small buffers per request, and glibc's malloc spent about a fifth of
/// the instructions per request (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback() {
        eprintln!(
            "bare_proxy: --listen {} is not a loopback address; use 127.0.0.1",
            cli.listen
        );
        return ExitCode::from(2);
    }

    // The same timeouts as keygate's defaults, so both pools behave alike.
    let mut peer = HttpPeer::new(cli.upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(1));
    peer.options.total_connection_timeout = Some(Duration::from_secs(1));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    peer.options.write_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(60));

    let conf = ServerConf {
        threads: cli.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, BareProxy { peer });
    proxy.add_tcp(&cli.listen.to_string());
    server.add_service(proxy);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
