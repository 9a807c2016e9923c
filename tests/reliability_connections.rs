//! Caps on open client connections: the slot accounting on its own, the
//! caps of a running gateway (`limits.maxConnections` and
//! `limits.maxConnectionsPerPeer`), and slowhttptest's slow-headers and
//! slow-body attacks from 127.0.0.1 while a client on 127.0.0.2 keeps
//! getting the backend's responses. A TLS listener with HTTP/2 is capped
//! the same way.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket
//! bound to 127.0.0.2 or 127.0.0.3 before it connects is another peer for
//! keygate. slowhttptest comes from the Debian package `slowhttptest`, which
//! scripts/setup.sh installs, and is only given 127.0.0.1 URLs.

mod common;

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::try_request_from;
use common::metrics::counter;
use common::poll::wait_until;
use common::tls::{client_config, path_text, Alpn, HttpsConn, PemDir, TestCa};
use common::traffic::{key_of, PUSH_BODY, PUSH_PATH};
use common::{api_key, ConfigBuilder, Conn, Gateway, MockBackend, Response};
use keygate::connections::{Caps, ConnectionSlots, PeerKey, Rejection};

const LOOPBACK_1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LOOPBACK_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LOOPBACK_3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

const OPEN_GAUGE: &str = "keygate_client_connections_open";
const REJECTED_COUNTER: &str = "keygate_client_connections_rejected_total";

/// Time allowed for the gateway to notice a connection being opened or
/// closed, and for a connection over a cap to be closed.
const SETTLE_TIME: Duration = Duration::from_secs(10);

/// The one client of the integration tests.
const CLIENT_ID: &str = "pusher";

// ---------------------------------------------------------------------------
// Slot accounting
// ---------------------------------------------------------------------------

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|err| panic!("{text} is not an IP address: {err}"))
}

#[test]
fn slots_total_cap_counts_every_peer() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 3,
        per_peer: 3,
    };
    let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .into_iter()
        .map(|peer| slots.try_acquire(Some(ip(peer)), caps).unwrap())
        .collect();
    assert_eq!(slots.open(), 3);

    let over = slots.try_acquire(Some(ip("10.0.0.4")), caps).err();
    assert_eq!(over, Some(Rejection::Total));
    assert_eq!(slots.open(), 3, "a rejected connection takes no slot");
    assert_eq!(slots.open_from(ip("10.0.0.4")), 0);
    assert_eq!(slots.peers(), 3);
    drop(held);
}

#[test]
fn slots_peer_cap_counts_one_peer() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 10,
        per_peer: 2,
    };
    let first = slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
    let second = slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
    assert_eq!(slots.open_from(LOOPBACK_1), 2);

    let over = slots.try_acquire(Some(LOOPBACK_1), caps).err();
    assert_eq!(over, Some(Rejection::Peer));
    assert_eq!(
        slots.open(),
        2,
        "a rejected connection gives its total slot back"
    );
    assert_eq!(slots.open_from(LOOPBACK_1), 2);

    let other = slots.try_acquire(Some(LOOPBACK_2), caps).unwrap();
    assert_eq!(slots.open(), 3);
    assert_eq!(slots.open_from(LOOPBACK_2), 1);
    assert_eq!(first.peer(), Some(PeerKey::of(LOOPBACK_1)));
    drop((first, second, other));
}

#[test]
fn slots_given_back_on_drop() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 2,
        per_peer: 1,
    };
    let first = slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
    let second = slots.try_acquire(Some(LOOPBACK_2), caps).unwrap();
    assert_eq!(
        slots.try_acquire(Some(LOOPBACK_1), caps).err(),
        Some(Rejection::Total)
    );

    drop(first);
    assert_eq!(slots.open(), 1);
    assert_eq!(slots.open_from(LOOPBACK_1), 0);
    assert_eq!(slots.peers(), 1, "a peer without connections is forgotten");
    let again = slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
    assert_eq!(slots.open(), 2);

    drop((second, again));
    assert_eq!(slots.open(), 0);
    assert_eq!(slots.peers(), 0);
}

#[test]
fn slots_given_back_when_task_cancelled() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("failed to build a tokio runtime");
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 1,
        per_peer: 1,
    };
    runtime.block_on(async {
        let (started, started_signal) = tokio::sync::oneshot::channel();
        let task_slots = Arc::clone(&slots);
        let task = tokio::spawn(async move {
            let _slot = task_slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
            let _ = started.send(());
            std::future::pending::<()>().await;
        });
        started_signal.await.expect("the task took its slot");
        assert_eq!(slots.open(), 1);

        task.abort();
        let aborted = task.await.expect_err("the task never finishes on its own");
        assert!(aborted.is_cancelled());
    });
    assert_eq!(slots.open(), 0);
    assert_eq!(slots.open_from(LOOPBACK_1), 0);
    assert!(slots.try_acquire(Some(LOOPBACK_1), caps).is_ok());
}

#[test]
fn slots_ipv6_counted_by_64() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 10,
        per_peer: 2,
    };
    let first = slots
        .try_acquire(Some(ip("2001:db8:1:2::1")), caps)
        .unwrap();
    let second = slots
        .try_acquire(Some(ip("2001:db8:1:2:ffff::9")), caps)
        .unwrap();
    assert_eq!(
        slots
            .try_acquire(Some(ip("2001:db8:1:2::abcd")), caps)
            .err(),
        Some(Rejection::Peer),
        "every address of one /64 counts as one peer"
    );
    let other_network = slots
        .try_acquire(Some(ip("2001:db8:1:3::1")), caps)
        .unwrap();
    assert_eq!(
        PeerKey::of(ip("2001:db8:1:2:ffff::9")).ip(),
        ip("2001:db8:1:2::")
    );
    drop((first, second, other_network));
}

#[test]
fn slots_mapped_ipv4_is_ipv4() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 10,
        per_peer: 1,
    };
    let plain = slots.try_acquire(Some(LOOPBACK_1), caps).unwrap();
    let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(
        slots.try_acquire(Some(mapped), caps).err(),
        Some(Rejection::Peer)
    );
    assert_eq!(PeerKey::of(mapped).ip(), LOOPBACK_1);
    assert_eq!(PeerKey::of(IpAddr::V6(Ipv6Addr::LOCALHOST)).ip(), ip("::"));
    drop(plain);
}

#[test]
fn slots_without_peer_count_in_total() {
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 2,
        per_peer: 1,
    };
    let first = slots.try_acquire(None, caps).unwrap();
    let second = slots.try_acquire(None, caps).unwrap();
    assert_eq!(first.peer(), None);
    assert_eq!(slots.peers(), 0);
    assert_eq!(slots.try_acquire(None, caps).err(), Some(Rejection::Total));
    drop((first, second));
    assert_eq!(slots.open(), 0);
}

#[test]
fn slots_never_exceed_caps_under_contention() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2000;
    let slots = ConnectionSlots::new();
    let caps = Caps {
        total: 5,
        per_peer: 2,
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|index| {
            let slots = Arc::clone(&slots);
            // Four peers with two threads each, so both caps are contended.
            let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, (index % 4) as u8));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut max_open = 0;
                let mut max_from_peer = 0;
                for round in 0..ROUNDS {
                    if let Ok(slot) = slots.try_acquire(Some(peer), caps) {
                        held.push(slot);
                    }
                    max_open = max_open.max(slots.open());
                    max_from_peer = max_from_peer.max(slots.open_from(peer));
                    if round % 3 == 0 {
                        held.clear();
                    }
                }
                (max_open, max_from_peer)
            })
        })
        .collect();
    for worker in workers {
        let (max_open, max_from_peer) = worker.join().expect("a worker thread panicked");
        assert!(max_open <= caps.total, "{max_open} slots open at once");
        assert!(
            max_from_peer <= caps.per_peer,
            "{max_from_peer} slots open from one peer"
        );
    }
    assert_eq!(slots.open(), 0);
    assert_eq!(slots.peers(), 0);
}

// ---------------------------------------------------------------------------
// A running gateway
// ---------------------------------------------------------------------------

/// Starts a mock backend and a gateway with one client and the given caps.
fn start(max_connections: u32, per_peer: u32) -> (MockBackend, Gateway) {
    start_with(max_connections, per_peer, |config| config)
}

fn start_with(
    max_connections: u32,
    per_peer: u32,
    configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> (MockBackend, Gateway) {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .client(CLIENT_ID, &key_of(CLIENT_ID))
        .set("limits.maxConnections", &max_connections.to_string())
        .set("limits.maxConnectionsPerPeer", &per_peer.to_string())
        .set("log.level", "info");
    let gateway = Gateway::start(&configure(config).build());
    (mock, gateway)
}

/// Sends one push from `source` on a new connection.
fn push_from(source: IpAddr, gateway: &Gateway) -> io::Result<Response> {
    let api_key = api_key(CLIENT_ID, &key_of(CLIENT_ID));
    try_request_from(
        Some(source),
        gateway.addr(),
        "POST",
        PUSH_PATH,
        &[
            ("x-api-key", api_key.as_str()),
            ("Content-Type", "application/json"),
        ],
        PUSH_BODY,
    )
}

/// Asserts that `response` is the mock backend's response to a push.
fn assert_backend_answer(response: &Response, case: &str) {
    assert_eq!(response.status, 404, "{case}: {}", response.text());
    assert_eq!(
        response.json()["message"],
        "pushId 'p-1' is not known",
        "{case}: the answer must come from the backend"
    );
}

/// Opens `count` connections from `source` and sends nothing on them.
fn hold(source: IpAddr, gateway: &Gateway, count: usize) -> Vec<Conn> {
    (0..count)
        .map(|index| {
            Conn::try_connect_from(source, gateway.addr()).unwrap_or_else(|err| {
                panic!(
                    "connection {index} from {source} to {} failed: {err}",
                    gateway.addr()
                )
            })
        })
        .collect()
}

fn open_connections(gateway: &Gateway) -> f64 {
    counter(gateway.metrics_addr(), OPEN_GAUGE, &[])
}

fn rejected(gateway: &Gateway, reason: &str) -> f64 {
    counter(
        gateway.metrics_addr(),
        REJECTED_COUNTER,
        &[("reason", reason)],
    )
}

/// Waits until the gateway counts exactly `expected` open connections.
fn wait_for_open(gateway: &Gateway, expected: f64) {
    let settled = wait_until(SETTLE_TIME, || open_connections(gateway) == expected);
    assert!(
        settled,
        "{OPEN_GAUGE} is {} after {SETTLE_TIME:?}, expected {expected}",
        open_connections(gateway)
    );
}

/// Connects from `source` and asserts that the gateway closes the
/// connection without sending a byte, while the client sends nothing.
fn assert_closed_unread(source: IpAddr, gateway: &Gateway, case: &str) {
    let conn = Conn::try_connect_from(source, gateway.addr())
        .unwrap_or_else(|err| panic!("{case}: connecting failed: {err}"));
    let mut stream: &TcpStream = conn.stream();
    stream
        .set_read_timeout(Some(SETTLE_TIME))
        .expect("failed to set the read timeout");
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(count) => panic!(
            "{case}: the gateway sent {count} bytes instead of closing: {:?}",
            String::from_utf8_lossy(&buffer[..count])
        ),
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("{case}: the connection was not closed within {SETTLE_TIME:?}: {err}"),
    }
}

#[test]
fn peer_cap_closes_next_connection_from_peer() {
    let (_mock, gateway) = start(20, 10);
    let mut held = hold(LOOPBACK_1, &gateway, 10);
    wait_for_open(&gateway, 10.0);

    assert_closed_unread(LOOPBACK_1, &gateway, "11th connection from 127.0.0.1");
    assert_eq!(rejected(&gateway, "peer"), 1.0);
    assert_eq!(rejected(&gateway, "total"), 0.0);

    let other_peer = push_from(LOOPBACK_2, &gateway).expect("push from 127.0.0.2");
    assert_backend_answer(&other_peer, "push from 127.0.0.2 under the total");

    // Closing one held connection gives 127.0.0.1 a slot again.
    held.pop();
    wait_for_open(&gateway, 9.0);
    let freed = push_from(LOOPBACK_1, &gateway).expect("push from 127.0.0.1");
    assert_backend_answer(&freed, "push from 127.0.0.1 after one connection closed");

    drop(held);
    wait_for_open(&gateway, 0.0);
    assert_eq!(rejected(&gateway, "peer"), 1.0);
    assert!(
        gateway.log_text().contains(
            "connection closed unread: limits.maxConnectionsPerPeer connections from this peer are open"
        ),
        "the rejection is logged:\n{}",
        gateway.redacted_log_tail(20)
    );
}

#[test]
fn total_cap_closes_connection_from_any_peer() {
    let (_mock, gateway) = start(20, 10);
    let mut held = hold(LOOPBACK_1, &gateway, 10);
    held.extend(hold(LOOPBACK_3, &gateway, 10));
    wait_for_open(&gateway, 20.0);

    assert_closed_unread(
        LOOPBACK_2,
        &gateway,
        "connection from 127.0.0.2 over the total",
    );
    assert_eq!(rejected(&gateway, "total"), 1.0);
    assert_eq!(rejected(&gateway, "peer"), 0.0);

    held.pop();
    wait_for_open(&gateway, 19.0);
    let freed = push_from(LOOPBACK_2, &gateway).expect("push from 127.0.0.2");
    assert_backend_answer(&freed, "push from 127.0.0.2 after one connection closed");

    drop(held);
    wait_for_open(&gateway, 0.0);
}

#[test]
fn lowered_peer_cap_applies_after_reload() {
    let mock = MockBackend::start();
    let config = ConfigBuilder::new(mock.addr())
        .set("limits.maxConnections", "20")
        .set("limits.maxConnectionsPerPeer", "10");
    let gateway = Gateway::start(&config.build());
    let held = hold(LOOPBACK_1, &gateway, 3);
    wait_for_open(&gateway, 3.0);

    gateway.rewrite_config(&config.set("limits.maxConnectionsPerPeer", "3").build());
    gateway.signal("HUP");
    let reloaded = wait_until(SETTLE_TIME, || {
        common::metrics::reloads(gateway.metrics_addr(), "signal", "ok") == 1.0
    });
    assert!(reloaded, "SIGHUP did not reload the config");

    // Open connections stay; the new cap applies to the next one.
    assert_eq!(open_connections(&gateway), 3.0);
    assert_closed_unread(LOOPBACK_1, &gateway, "4th connection after the reload");
    assert_eq!(rejected(&gateway, "peer"), 1.0);
    drop(held);
    wait_for_open(&gateway, 0.0);
}

#[test]
fn tls_http2_connections_capped() {
    let mock = MockBackend::start();
    let ca = TestCa::new("keygate test CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let dir = PemDir::new();
    let cert = dir.write("server.pem", &server.cert_pem);
    let key = dir.write("server.key", &server.key_pem);
    let config = ConfigBuilder::new(mock.addr())
        .set_string("tls.cert", &path_text(&cert))
        .set_string("tls.key", &path_text(&key))
        .set("limits.maxConnections", "2")
        .set("limits.maxConnectionsPerPeer", "2")
        .set("log.level", "info");
    let gateway = Gateway::start(&config.build());
    let connect = || {
        HttpsConn::connect(
            gateway.addr(),
            "localhost",
            client_config(&ca.cert_pem, Alpn::Http2, None),
            Alpn::Http2,
        )
    };
    let health = |conn: &mut HttpsConn| conn.send("GET", "/nps/health", &[], b"");

    // Two requests on one HTTP/2 connection, which counts once.
    let mut first = connect().expect("first HTTP/2 connection");
    assert_eq!(health(&mut first).expect("first request").status, 200);
    assert_eq!(health(&mut first).expect("second request").status, 200);
    let mut second = connect().expect("second HTTP/2 connection");
    assert_eq!(health(&mut second).expect("request").status, 200);
    wait_for_open(&gateway, 2.0);

    // The third passes its TLS handshake, which pingora runs before the
    // cap, and is then closed before any request.
    let third = connect().and_then(|mut conn| health(&mut conn));
    assert!(
        third.is_err(),
        "a third connection over maxConnections 2 was served: {third:?}"
    );
    assert_eq!(rejected(&gateway, "total"), 1.0);

    drop(first);
    wait_for_open(&gateway, 1.0);
    let mut freed = connect().expect("HTTP/2 connection after one closed");
    assert_eq!(health(&mut freed).expect("request").status, 200);
    drop((second, freed));
    wait_for_open(&gateway, 0.0);
}

// ---------------------------------------------------------------------------
// The open-file limit
// ---------------------------------------------------------------------------

/// Starts keygate under `sh -c "ulimit <limits>; exec keygate ..."` with
/// `limits.maxConnections: max_connections`, waits until it has started,
/// and returns its log and the soft open-file limit it then runs with.
fn start_under_file_limit(limits: &str, max_connections: u32) -> (String, u64) {
    let config = ConfigBuilder::new(common::free_addr())
        .set("limits.maxConnections", &max_connections.to_string())
        .set("limits.maxConnectionsPerPeer", "1")
        .set("log.level", "info")
        .build();
    let (config_dir, config_path) = common::gateway::write_config_file(&config);

    let log_path = config_dir.path().join("keygate.log");
    let log_file = std::fs::File::create(&log_path).expect("create the log file");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {limits} && exec \"$0\" --config \"$1\""))
        .arg(common::gateway::KEYGATE_BIN)
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("duplicate the log file handle"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|err| panic!("failed to run keygate under sh: {err}"));

    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = wait_until(common::gateway::START_TIMEOUT, || {
        log().contains("gateway started")
    });
    let limits_text =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started,
        "keygate did not start under ulimit {limits}:\n{}",
        log()
    );

    let soft = limits_text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or_else(|| panic!("no soft open-file limit in /proc limits:\n{limits_text}"));
    (log(), soft)
}

#[test]
fn file_limit_raised_for_cap() {
    let hard = fd_hard_limit();
    // 2 * 600 connections + 256 reserved descriptors.
    let needed = 1456;
    assert!(
        hard >= needed,
        "this test needs a hard open-file limit of at least {needed}, the machine has {hard}"
    );
    let (log, soft) = start_under_file_limit("-Sn 1024", 600);
    assert_eq!(soft, needed, "{log}");
    assert!(log.contains("raised the open-file limit"), "{log}");
    assert!(!log.contains("too low"), "{log}");
}

#[test]
fn file_limit_too_low_warned() {
    let (log, soft) = start_under_file_limit("-n 512", 2048);
    assert_eq!(soft, 512, "{log}");
    assert!(
        log.contains("the open-file limit is too low for limits.maxConnections"),
        "{log}"
    );
}

/// Returns the hard open-file limit of this test process, which keygate inherits.
fn fd_hard_limit() -> u64 {
    let output = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("run ulimit -Hn");
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim() {
        "unlimited" => u64::MAX,
        number => number
            .parse()
            .unwrap_or_else(|err| panic!("ulimit -Hn printed {number:?}: {err}")),
    }
}

// ---------------------------------------------------------------------------
// slowhttptest
// ---------------------------------------------------------------------------

/// How long each slowhttptest run attacks, in seconds (`-l`).
const ATTACK_SECONDS: u64 = 20;

/// Extra time a run may take beyond [`ATTACK_SECONDS`] before it is killed.
const ATTACK_GRACE: Duration = Duration::from_secs(40);

/// Connections slowhttptest opens in total (`-c`), and how many a second (`-r`).
const ATTACK_CONNECTIONS: u32 = 300;
const ATTACK_RATE: u32 = 100;

/// The caps of the attacked gateway: the attacker on 127.0.0.1 reaches the
/// per-peer cap long before the total.
const ATTACK_TOTAL_CAP: u32 = 200;
const ATTACK_PEER_CAP: u32 = 50;

/// Time between two pushes of the client on 127.0.0.2.
const GOOD_CLIENT_INTERVAL: Duration = Duration::from_millis(250);

/// The bound on each good push, connecting included. A push on loopback
/// takes milliseconds; the bound only has to tell a served client from a
/// starved one.
const GOOD_PUSH_BOUND: Duration = common::http::IO_TIMEOUT;

/// Returns the slowhttptest command, or panics with how to install it.
fn slowhttptest_command() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("slowhttptest"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "slowhttptest is not installed (not on PATH); \
                 run scripts/setup.sh, which installs the Debian package slowhttptest"
            )
        })
}

/// What the good client and the gauge showed during one attack.
struct AttackRecord {
    /// Each push of the client on 127.0.0.2: its result and how long it took.
    pushes: Vec<(io::Result<Response>, Duration)>,
    /// The largest open-connections count seen while the attack ran.
    max_open: f64,
    slowhttptest_output: String,
}

/// Runs slowhttptest with `mode_args` against the push path of `gateway` on
/// 127.0.0.1, while a client on 127.0.0.2 pushes every
/// [`GOOD_CLIENT_INTERVAL`] and the open-connections gauge is sampled.
fn attack(gateway: &Gateway, mode_args: &[&str]) -> AttackRecord {
    let url = format!("http://127.0.0.1:{}{PUSH_PATH}", gateway.addr().port());
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "slowhttptest gets a 127.0.0.1 URL only"
    );
    let mut child = Command::new(slowhttptest_command())
        .args(mode_args)
        .args(["-c", &ATTACK_CONNECTIONS.to_string()])
        .args(["-r", &ATTACK_RATE.to_string()])
        .args(["-l", &ATTACK_SECONDS.to_string()])
        .args(["-i", "5", "-p", "3"])
        .args(["-u", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to run slowhttptest: {err}"));
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));

    let deadline = Instant::now() + Duration::from_secs(ATTACK_SECONDS) + ATTACK_GRACE;
    let mut pushes = Vec::new();
    let mut max_open: f64 = 0.0;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|err| panic!("failed to check slowhttptest: {err}"))
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("slowhttptest did not finish within {ATTACK_SECONDS} s and {ATTACK_GRACE:?}");
        }
        max_open = max_open.max(open_connections(gateway));
        let started = Instant::now();
        let result = push_from(LOOPBACK_2, gateway);
        pushes.push((result, started.elapsed()));
        std::thread::sleep(GOOD_CLIENT_INTERVAL);
    };
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
        String::from_utf8_lossy(&stderr.join().unwrap_or_default())
    );
    assert!(
        status.success(),
        "slowhttptest exited with {status}:\n{output}"
    );
    AttackRecord {
        pushes,
        max_open,
        slowhttptest_output: output,
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the output early; what was read is still shown.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Asserts that the attack reached the per-peer cap and that every push of
/// the good client got the backend's response within [`GOOD_PUSH_BOUND`].
fn assert_attack_contained(gateway: &Gateway, record: &AttackRecord, mode: &str) {
    // About ATTACK_SECONDS / (GOOD_CLIENT_INTERVAL + a push), with room for a slow machine.
    let minimum_pushes = 10;
    assert!(
        record.pushes.len() >= minimum_pushes,
        "{mode}: only {} pushes from 127.0.0.2 during the attack",
        record.pushes.len()
    );
    for (index, (result, took)) in record.pushes.iter().enumerate() {
        let case = format!("{mode}: push {index} from 127.0.0.2");
        match result {
            Ok(response) => assert_backend_answer(response, &case),
            Err(err) => panic!(
                "{case} failed after {took:?}: {err}\nslowhttptest output:\n{}",
                record.slowhttptest_output
            ),
        }
        assert!(
            *took <= GOOD_PUSH_BOUND,
            "{case} took {took:?}, over {GOOD_PUSH_BOUND:?}"
        );
    }

    // The attack was real: it filled its peer's slots and more connections were closed unread.
    let peer_cap = f64::from(ATTACK_PEER_CAP);
    assert!(
        record.max_open >= peer_cap,
        "{mode}: at most {} connections were open, the attacker never reached the per-peer cap {peer_cap}\n{}",
        record.max_open,
        record.slowhttptest_output
    );
    assert!(
        record.max_open <= peer_cap + 1.0,
        "{mode}: {} connections were open, over the per-peer cap {peer_cap} and the good client's one",
        record.max_open
    );
    let rejected_peer = rejected(gateway, "peer");
    assert!(
        rejected_peer >= 1.0,
        "{mode}: no connection was rejected by the per-peer cap\n{}",
        record.slowhttptest_output
    );
    assert_eq!(
        rejected(gateway, "total"),
        0.0,
        "{mode}: the total cap was never reached"
    );

    // When slowhttptest ends, its connections close and give their slots back.
    wait_for_open(gateway, 0.0);

    let slowest = record.pushes.iter().map(|(_, took)| *took).max();
    println!(
        "{mode}: {} pushes from 127.0.0.2 answered, slowest {slowest:?}; \
         at most {} connections open; {rejected_peer} rejected by the per-peer cap",
        record.pushes.len(),
        record.max_open
    );
}

#[test]
fn slowhttptest_slow_headers_contained() {
    let (_mock, gateway) = start(ATTACK_TOTAL_CAP, ATTACK_PEER_CAP);
    // Unfinished request heads, one more header line every 5 s: pingora's
    // 60 s timeout for each read never fires.
    let record = attack(&gateway, &["-H", "-t", "GET", "-x", "24"]);
    assert_attack_contained(&gateway, &record, "slow headers");
}

#[test]
fn slowhttptest_slow_body_contained() {
    // slowhttptest sends no key, and keygate reads at most drainTime of the
    // body of such a request before it responds 403 and closes. A long
    // drainTime stands for a client with a key whose slow body keygate
    // forwards, so the attack keeps its connections open for the whole run.
    let (_mock, gateway) = start_with(ATTACK_TOTAL_CAP, ATTACK_PEER_CAP, |config| {
        config.set("limits.drainTime", "60s")
    });
    let record = attack(&gateway, &["-B", "-t", "POST", "-s", "8192", "-x", "10"]);
    assert_attack_contained(&gateway, &record, "slow body");
}
