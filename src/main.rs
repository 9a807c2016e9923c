//! keygate: an API-key gateway in front of a push backend.
//!
//! Start-up: read the command line, load and check the config, start
//! logging, check the listen addresses (or take over the listening sockets
//! of the running keygate), fit the open-file limit to the connection cap,
//! then serve until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keygate::{config, fd_limit, handover, keygen, logging, reload, server, shutdown, tls};
use tracing::{info, warn};

/// Exit code for a listen address that cannot be bound, or listening sockets
/// that could not be taken over.
const EXIT_LISTEN: u8 = 3;

/// The longest `--upgrade-timeout` accepted.
const MAX_UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);

/// API-key gateway in front of a push backend.
#[derive(Parser)]
#[command(name = "keygate", version, about)]
struct Cli {
    /// Config file (NPS-style YAML with `gateway` and `allowedClients`).
    #[arg(
        long,
        short,
        global = true,
        value_name = "PATH",
        default_value = "config/application.yml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway; the same as giving no command.
    Run {
        /// Take the listening sockets from the running keygate instead of binding the ports: start this, then send SIGQUIT to the running keygate.
        #[arg(long)]
        upgrade: bool,
        /// How long --upgrade waits for the running keygate's sockets, such as 30s or 2m.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_upgrade_timeout, requires = "upgrade")]
        upgrade_timeout: Duration,
    },
    /// Check the config file, print a summary, and exit non-zero if it is invalid.
    CheckConfig,
    /// Print a new client entry and its x-api-key value, without a running gateway. A clientId already in the config file needs --rotate.
    GenerateClient {
        /// The clientId: 1 to 128 bytes, no whitespace, control characters or ':'.
        client_id: String,
        /// Write the key as `keyHash: sha256:<hex>`; the plain key then appears only in the x-api-key comment line.
        #[arg(long)]
        hash: bool,
        /// Print one item for the `keys` list of a configured client, to rotate its key.
        #[arg(long)]
        rotate: bool,
    },
}

/// mimalloc instead of the system allocator: the engine allocates and frees
/// many small buffers per request, and glibc's malloc spent about a fifth of
/// the instructions per request (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, the 16th entry of `mi_option_e` in
/// its `mimalloc.h`; the Rust bindings have no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Returns memory to the system as soon as mimalloc frees it, unless
/// `MIMALLOC_PURGE_DELAY` is set. A config file is parsed on a
/// thread that then sleeps, and with mimalloc's default delay of one second
/// the parser's memory stayed resident: with 100,000 clients, 198 MB after
/// start-up and 303 MB peak after five refreshes, against 136 MB and 163 MB
/// without the delay (BENCHMARKS.md). Purging costs about one `madvise` call
/// per hundred proxied requests.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores a number in mimalloc's option table;
        // it touches no memory of the caller's.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig) => check_config(&cli.config),
        Some(Command::GenerateClient {
            client_id,
            hash,
            rotate,
        }) => generate_client(
            &cli.config,
            &client_id,
            keygen::SnippetForm {
                hashed: hash,
                extra_key: rotate,
            },
        ),
        Some(Command::Run {
            upgrade,
            upgrade_timeout,
        }) => run(cli.config, upgrade.then_some(upgrade_timeout)),
        None => run(cli.config, None),
    }
}

/// Returns whether the config file at `path` lists `client_id`. A missing
/// file lists nothing. A file that does not load is reported on stderr and
/// counts as listing nothing, since a key can be made without it.
fn is_configured(path: &Path, client_id: &str) -> bool {
    if !path.exists() {
        return false;
    }
    match config::load(path) {
        Ok(config) => config
            .clients
            .iter()
            .any(|entry| entry.client_id == client_id),
        Err(err) => {
            eprintln!(
                "keygate: could not check whether {client_id:?} is already configured: {err}"
            );
            false
        }
    }
}

/// Reads `--upgrade-timeout`: a duration with a unit, from 1 second to 1 hour.
fn parse_upgrade_timeout(text: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(text.trim())
        .map_err(|err| format!("{err}; write a duration with a unit, such as 30s or 2m"))?;
    if wait < Duration::from_secs(1) || wait > MAX_UPGRADE_TIMEOUT {
        return Err("write a duration from 1s to 1h".into());
    }
    Ok(wait)
}

/// Runs the gateway. With `upgrade_wait`, it first takes over the listening
/// sockets of the running keygate, waiting for them at most that long.
fn run(config_path: PathBuf, upgrade_wait: Option<Duration>) -> ExitCode {
    shutdown::ignore_quit_until_ready();

    // 1. Load and check the config; nothing starts unless it passes.
    let (snapshot, warnings) = match reload::load_snapshot(&config_path, None) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("keygate: invalid config: {err}");
            return ExitCode::FAILURE;
        }
    };

    // 2. Logging, at the config's level unless RUST_LOG sets one.
    if let Err(err) = logging::init(snapshot.settings.log.level, snapshot.settings.log.format) {
        eprintln!("keygate: {err}");
        return ExitCode::FAILURE;
    }
    info!(config = %config_path.display(), clients = snapshot.clients.len(), "config loaded");
    for warning in &warnings {
        warn!("{warning}");
    }

    // 3. With --upgrade, take over the running keygate's listening sockets.
    let inherited = match upgrade_wait {
        Some(wait) => match handover::receive(snapshot.settings.upgrade_socket.path(), wait) {
            Ok(inherited) => Some(inherited),
            Err(err) => {
                eprintln!("keygate: {err}");
                return ExitCode::from(EXIT_LISTEN);
            }
        },
        None => None,
    };

    // 4. Every other listen address must be free before the engine takes it.
    let taken_over: Vec<&str> = inherited
        .iter()
        .flat_map(handover::InheritedSockets::addresses)
        .collect();
    let mut addrs = snapshot.settings.listen.0.clone();
    addrs.push(snapshot.settings.metrics.listen.0);
    let to_bind: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|addr| !taken_over.contains(&addr.to_string().as_str()))
        .collect();
    if let Err(err) = server::check_listeners(&to_bind) {
        eprintln!("keygate: {err}; stop whatever uses the port or change gateway.listen / gateway.metrics.listen");
        return ExitCode::from(EXIT_LISTEN);
    }

    // 5. Enough file descriptors for limits.maxConnections, as far as the hard limit allows.
    fd_limit::ensure_for(snapshot.settings.limits.max_connections.0);

    // 6. Serve until SIGTERM, SIGQUIT or SIGINT.
    if let Err(err) = server::run(config_path, snapshot, inherited) {
        eprintln!("keygate: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn check_config(config_path: &std::path::Path) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keygate: invalid config: {err}");
            return ExitCode::FAILURE;
        }
    };

    let settings = &config.gateway;
    let (material, tls_warnings) = match tls::load_material(settings, config_path) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("keygate: invalid config: {err}");
            return ExitCode::FAILURE;
        }
    };

    let listen: Vec<String> = settings.listen.0.iter().map(ToString::to_string).collect();
    println!("config {} is valid", config_path.display());
    println!("  listen:         {}", listen.join(", "));
    println!("  contextPath:    {}", settings.context_path);
    println!("  uriBase:        {}", settings.uri_base);
    println!("  upstream:       {}", settings.upstream);
    print_tls_summary(settings, &material);
    match &settings.health_check {
        Some(check) => println!("  healthCheck:    every {}", check.interval),
        None => println!("  healthCheck:    off"),
    }
    match settings.rate_limit {
        Some(limit) => println!("  rateLimit:      {limit} for clients without their own"),
        None => println!("  rateLimit:      none for clients without their own"),
    }
    println!(
        "  connections:    at most {}, {} from one peer",
        settings.limits.max_connections.0, settings.limits.max_connections_per_peer.0
    );
    println!(
        "  metrics:        http://{}/metrics",
        settings.metrics.listen.0
    );
    println!(
        "  adminToken:     {}",
        if settings.admin_token.is_some() {
            "set"
        } else {
            "not set"
        }
    );
    println!("  watchConfig:    {}", settings.watch_config);
    println!("  upgradeSocket:  {}", settings.upgrade_socket);
    println!("  allowedClients: {}", config.clients.len());

    for warning in config.warnings.iter().chain(&tls_warnings) {
        println!("warning: {warning}");
    }
    ExitCode::SUCCESS
}

/// Prints the `upstreamCa` and `tls` lines of the `check-config` summary.
fn print_tls_summary(settings: &config::GatewaySettings, material: &tls::TlsMaterial) {
    match (&settings.upstream_ca, &material.upstream_ca) {
        (Some(path), Some(ca)) => println!("  upstreamCa:     {path} ({} certificates)", ca.len()),
        _ => println!("  upstreamCa:     the system's CA store"),
    }
    let client_ca = settings
        .tls
        .as_ref()
        .and_then(|files| files.client_ca.as_ref());
    match (&settings.tls, client_ca) {
        (Some(files), Some(client_ca)) => println!(
            "  tls:            {}; client certificates required, signed by {client_ca}",
            files.cert
        ),
        (Some(files), None) => println!(
            "  tls:            {}; no client certificate requested",
            files.cert
        ),
        (None, _) => println!("  tls:            off (plain HTTP/1.1)"),
    }
}

fn generate_client(config_path: &Path, client_id: &str, form: keygen::SnippetForm) -> ExitCode {
    if let Err(reason) = config::check_client_id(client_id) {
        eprintln!("keygate: invalid clientId {client_id:?}: {reason}");
        return ExitCode::from(2);
    }
    // As on the generateclient route, which responds with 409: a configured client gets a new key only with --rotate.
    if !form.extra_key && is_configured(config_path, client_id) {
        eprintln!(
            "keygate: clientId {client_id:?} is already configured in {}; choose another clientId, or add --rotate for an extra key",
            config_path.display()
        );
        return ExitCode::from(2);
    }
    match keygen::new_key() {
        Ok(key) => {
            print!("{}", keygen::snippet_with(client_id, &key, form));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("keygate: {err}");
            ExitCode::FAILURE
        }
    }
}
