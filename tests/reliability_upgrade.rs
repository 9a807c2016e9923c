//! Graceful upgrade: a new keygate started with `run --upgrade` takes the
//! listening sockets of the running one on SIGQUIT, while clients keep
//! sending, and no request is lost on the way.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::gateway::write_config_file;
use common::metrics::{reloads, series_value};
use common::poll::wait_until;
use common::tls::{client_config, https_request, path_text, Alpn, PemDir, TestCa};
use common::traffic::{key_of, PUSH_BODY, PUSH_PATH};
use common::{api_key, metrics_text, request, ConfigBuilder, Conn, Gateway, MockBackend, Ready};

/// What the new keygate logs while it waits for the sockets.
const WAITING_LINE: &str = "waiting for the running keygate to hand over its listening sockets";

/// What the new keygate logs once it has the sockets.
const TAKEN_OVER_LINE: &str = "took over the listening sockets of the running keygate";

/// What a keygate logs once it acts on SIGQUIT; before, it ignores the signal.
const READY_FOR_SIGNALS_LINE: &str = "handling SIGTERM (drain), SIGQUIT (handover";

/// Text of the mock backend's response to every push: proof that the response came from the backend.
const BACKEND_ANSWER: &str = "pushId 'p-1' is not known";

/// Upper bound for the old keygate to exit after SIGQUIT: 5 s of handover,
/// the 5 s grace period and 1 s for the runtimes, with room for a loaded
/// machine. pingora's own default grace period would be 300 s.
const OLD_EXIT_TIMEOUT: Duration = Duration::from_secs(40);

/// Requests each load client sends at most.
const MAX_REQUESTS_PER_CLIENT: usize = 5000;

/// Load that goes on after the old keygate has exited, all of it on the new one.
const LOAD_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Sets the handover socket into `folder` and turns on what the new
/// keygate's background services must keep doing.
fn upgrade_config(mock: &MockBackend, socket: &Path) -> ConfigBuilder {
    ConfigBuilder::new(mock.addr())
        .client("karolin", &key_of("karolin"))
        .set_string("upgradeSocket", &path_text(socket))
        .set("watchConfig", "true")
        .set("healthCheck", "{interval: 1s, timeout: 1s}")
        .set("log.level", "info")
}

fn socket_path(folder: &tempfile::TempDir) -> PathBuf {
    folder.path().join("upgrade.sock")
}

#[test]
fn handover_under_load_loses_nothing() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let builder = upgrade_config(&mock, &socket_path(&folder));
    let config = builder.build();
    let mut old = Gateway::start(&config);
    let addr = old.addr();
    let metrics_addr = old.metrics_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_load(addr, &stop);
    thread::sleep(Duration::from_secs(1));

    let mut new = Gateway::start_with(&config, &["run", "--upgrade"], Ready::Logged(WAITING_LINE));
    // A SIGQUIT meant for the old keygate may reach the waiting one too
    // (`pkill -QUIT keygate`); it must survive it.
    new.signal("QUIT");
    let quit_sent = Instant::now();
    old.signal("QUIT");
    assert!(
        new.wait_for_log(TAKEN_OVER_LINE, Duration::from_secs(30)),
        "the new keygate did not take over the sockets:\n{}",
        new.redacted_log_tail(30)
    );
    for address in [addr, metrics_addr] {
        assert!(
            new.log_text().contains(&format!("\"{address}\"")),
            "{address} was not handed over:\n{}",
            new.redacted_log_tail(30)
        );
    }

    let exit = old.wait_exit(OLD_EXIT_TIMEOUT);
    let old_exit_after = quit_sent.elapsed();
    thread::sleep(LOAD_AFTER_EXIT);
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<ClientReport> = clients
        .into_iter()
        .map(|client| client.join().expect("a load client panicked"))
        .collect();
    println!("old keygate exited {old_exit_after:?} after SIGQUIT");

    // The old keygate drained and exited cleanly.
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "the old keygate did not exit within {OLD_EXIT_TIMEOUT:?} of SIGQUIT:\n{}",
            old.redacted_log_tail(30)
        )
    });
    assert_eq!(exit.code(), Some(0), "old keygate: {exit}");
    assert!(
        old.log_text().contains("listener sockets sent"),
        "{}",
        old.redacted_log_tail(30)
    );

    // No client saw a failure of any kind.
    let failures: Vec<&Failure> = reports.iter().flat_map(|report| &report.failures).collect();
    let listed: Vec<String> = failures
        .iter()
        .take(10)
        .map(|failure| {
            format!(
                "{:?} {}: {}",
                failure.kind, failure.request_id, failure.detail
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed requests, the first:\n{}",
        failures.len(),
        listed.join("\n")
    );
    let answered: BTreeSet<String> = reports
        .iter()
        .flat_map(|report| report.answered.iter().cloned())
        .collect();
    let sent: usize = reports.iter().map(|report| report.answered.len()).sum();
    assert_eq!(answered.len(), sent, "request ids are unique");
    println!("{sent} requests answered by {} clients", reports.len());

    // Kept-alive clients got `Connection: close` responses rather than closed connections.
    let close_responses: usize = reports.iter().map(|report| report.closes_announced).sum();
    assert!(close_responses > 0, "no response carried Connection: close");
    let slow_answered = reports
        .iter()
        .filter(|report| report.name.starts_with("slow"))
        .map(|report| report.answered.len())
        .sum::<usize>();
    assert!(slow_answered > 0, "no slow request was answered");

    // Each successful request went through exactly one of the two
    // keygates, and both keygates served some. A keygate may write the
    // access line of its last request just after the client has read the
    // response, so the new keygate's log gets a moment to catch up.
    let by_old = access_log_ids(&old.log_text());
    // The assertions below report a log that does not catch up.
    let _ = wait_until(Duration::from_secs(5), || {
        let by_new = access_log_ids(&new.log_text());
        answered
            .iter()
            .all(|id| by_old.contains(id) || by_new.contains(id))
    });
    let by_new = access_log_ids(&new.log_text());
    println!(
        "answered by the old keygate: {}, by the new one: {}",
        by_old.len(),
        by_new.len()
    );
    assert!(!by_old.is_empty(), "the old keygate answered nothing");
    assert!(!by_new.is_empty(), "the new keygate answered nothing");
    assert!(
        by_old.is_disjoint(&by_new),
        "answered twice: {:?}",
        by_old.intersection(&by_new).take(10).collect::<Vec<_>>()
    );
    let by_either: BTreeSet<String> = by_old.union(&by_new).cloned().collect();
    assert_eq!(by_either, answered, "access logs and client answers differ");

    // The backend got every push once.
    let forwarded: Vec<String> = mock
        .requests()
        .iter()
        .filter(|received| received.path() == PUSH_PATH)
        .filter_map(|received| received.header("x-request-id").map(str::to_string))
        .collect();
    assert_eq!(forwarded.len(), answered.len(), "pushes forwarded");
    let forwarded: BTreeSet<String> = forwarded.into_iter().collect();
    assert_eq!(forwarded, answered, "pushes forwarded");

    check_new_keygate_runs(&mut new, &builder, &mock);
}

/// Checks that the new keygate serves, health-checks, reloads on a file
/// change and on SIGHUP, and stops cleanly on SIGTERM.
fn check_new_keygate_runs(new: &mut Gateway, builder: &ConfigBuilder, mock: &MockBackend) {
    let response = push_as(new.addr(), "karolin");
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.text().contains(BACKEND_ANSWER),
        "{}",
        response.text()
    );

    let checks_before = health_checks(mock);
    assert!(
        wait_until(Duration::from_secs(20), || health_checks(mock)
            > checks_before),
        "the new keygate sends no health checks"
    );
    let backend = format!("http://{}", mock.addr());
    let up = series_value(
        &metrics_text(new.metrics_addr()),
        "keygate_backend_up",
        &[("backend", &backend)],
    );
    assert_eq!(up, Some(1.0), "keygate_backend_up of {backend}");

    // The file watch picks up a new client.
    let before_reload = push_as(new.addr(), "martin");
    assert_eq!(before_reload.status, 403, "martin is not configured yet");
    new.rewrite_config(&builder.clone().client("martin", &key_of("martin")).build());
    assert!(
        wait_until(Duration::from_secs(20), || push_as(new.addr(), "martin")
            .status
            == 404),
        "the file watch of the new keygate did not load martin:\n{}",
        new.redacted_log_tail(20)
    );

    new.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || {
            reloads(new.metrics_addr(), "signal", "ok") == 1.0
        }),
        "SIGHUP did not reload the new keygate:\n{}",
        new.redacted_log_tail(20)
    );

    new.signal("TERM");
    let exit = new.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(0),
        "new keygate on SIGTERM"
    );
}

/// A keygate that took over its sockets hands them on again.
#[test]
fn upgraded_keygate_upgrades_again() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let config = upgrade_config(&mock, &socket_path(&folder)).build();
    let mut first = Gateway::start(&config);
    let mut second =
        Gateway::start_with(&config, &["run", "--upgrade"], Ready::Logged(WAITING_LINE));
    first.signal("QUIT");
    assert!(
        second.wait_for_log(READY_FOR_SIGNALS_LINE, Duration::from_secs(30)),
        "{}",
        second.redacted_log_tail(30)
    );

    let third = Gateway::start_with(&config, &["run", "--upgrade"], Ready::Logged(WAITING_LINE));
    second.signal("QUIT");
    assert!(
        third.wait_for_log(TAKEN_OVER_LINE, Duration::from_secs(30)),
        "the third keygate did not take over from the second:\n{}",
        third.redacted_log_tail(30)
    );
    for (name, gateway) in [("first", &mut first), ("second", &mut second)] {
        let exit = gateway.wait_exit(OLD_EXIT_TIMEOUT);
        assert_eq!(
            exit.and_then(|status| status.code()),
            Some(0),
            "{name} keygate"
        );
    }
    let response = push_as(third.addr(), "karolin");
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.text().contains(BACKEND_ANSWER),
        "{}",
        response.text()
    );
}

/// The TLS listeners, a second listen address and the metrics listener all
/// move, and the new keygate serves the certificate from its own config.
#[test]
fn tls_listeners_handed_over_with_new_certificate() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let second_addr = common::free_addr();
    let builder = upgrade_config(&mock, &socket_path(&folder));
    let first_addr = builder.listen_addr();
    let builder = builder.set("listen", &format!("['{first_addr}', '{second_addr}']"));

    let files = PemDir::new();
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let with_certificate = |ca: &TestCa, name: &str| {
        let server = ca.server(&["localhost", "127.0.0.1"]);
        let cert = files.write(&format!("{name}.pem"), &server.cert_pem);
        let key = files.write(&format!("{name}.key"), &server.key_pem);
        builder
            .clone()
            .set_string("tls.cert", &path_text(&cert))
            .set_string("tls.key", &path_text(&key))
            .build()
    };
    let mut old = Gateway::start(&with_certificate(&old_ca, "old"));
    let new = Gateway::start_with(
        &with_certificate(&new_ca, "new"),
        &["run", "--upgrade"],
        Ready::Logged(WAITING_LINE),
    );
    old.signal("QUIT");
    assert!(
        new.wait_for_log(TAKEN_OVER_LINE, Duration::from_secs(30)),
        "{}",
        new.redacted_log_tail(30)
    );
    for address in [first_addr, second_addr, new.metrics_addr()] {
        assert!(
            new.log_text().contains(&format!("\"{address}\"")),
            "{address} was not handed over:\n{}",
            new.redacted_log_tail(30)
        );
    }
    let exit = old.wait_exit(OLD_EXIT_TIMEOUT);
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(0),
        "old keygate"
    );

    let key = api_key("karolin", &key_of("karolin"));
    let headers = [("x-api-key", key.as_str())];
    for addr in [first_addr, second_addr] {
        for alpn in [Alpn::Http1, Alpn::Http2] {
            let trusted = client_config(&new_ca.cert_pem, alpn, None);
            let response = https_request(addr, trusted, alpn, "POST", PUSH_PATH, &headers)
                .unwrap_or_else(|err| panic!("HTTPS to {addr} after the upgrade failed: {err}"));
            assert_eq!(response.status, 404, "{addr}: {}", response.text());
            assert!(
                response.text().contains(BACKEND_ANSWER),
                "{}",
                response.text()
            );
        }
        let old_trust = client_config(&old_ca.cert_pem, Alpn::Http1, None);
        let stale = https_request(addr, old_trust, Alpn::Http1, "GET", "/nps/health", &[]);
        assert!(stale.is_err(), "{addr} still serves the old certificate");
    }
    let metrics = metrics_text(new.metrics_addr());
    assert!(metrics.contains("keygate_requests_total"), "{metrics}");
}

#[test]
fn upgrade_without_running_keygate_fails() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_path(&folder);
    let missing_folder = folder.path().join("missing").join("upgrade.sock");

    let cases = [
        (
            socket.clone(),
            &[
                "no running keygate handed over its listening sockets",
                "kill -QUIT",
            ][..],
        ),
        (
            missing_folder,
            &["the folder must exist and be writable"][..],
        ),
    ];
    for (path, expected) in cases {
        let config = upgrade_config(&mock, &path).build();
        let (_config_dir, config_path) = write_config_file(&config);
        let config_arg = path_text(&config_path);
        let started = Instant::now();
        let output = Gateway::spawn_raw(&[
            "--config",
            &config_arg,
            "run",
            "--upgrade",
            "--upgrade-timeout",
            "1s",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("{} failed after {:?}", path.display(), started.elapsed());
        assert_eq!(
            output.status.code(),
            Some(3),
            "{}: {stderr}",
            path.display()
        );
        for text in expected.iter().chain(&["gateway.upgradeSocket"]) {
            assert!(stderr.contains(text), "{}: {stderr}", path.display());
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(folder.path()).unwrap().count(),
        0,
        "the waiting socket and its relay folder must be removed"
    );
}

#[test]
fn check_config_names_upgrade_socket() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let socket = socket_path(&folder);
    let (_config_dir, config_path) = write_config_file(&upgrade_config(&mock, &socket).build());
    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text(&config_path)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let expected = format!("  upgradeSocket:  {}\n", socket.display());
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn upgrade_options_checked() {
    for (args, expected) in [
        (
            &["run", "--upgrade", "--upgrade-timeout", "0s"][..],
            "from 1s to 1h",
        ),
        (
            &["run", "--upgrade", "--upgrade-timeout", "soon"][..],
            "with a unit",
        ),
        (&["run", "--upgrade-timeout", "5s"][..], "--upgrade"),
        (&["--upgrade"][..], "--upgrade"),
    ] {
        let output = Gateway::spawn_raw(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn sigquit_without_new_keygate_keeps_serving() {
    let mock = MockBackend::start();
    let folder = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(&upgrade_config(&mock, &socket_path(&folder)).build());

    gateway.signal("QUIT");
    assert!(
        gateway.wait_for_log("no new keygate waits", Duration::from_secs(10)),
        "{}",
        gateway.redacted_log_tail(20)
    );
    // pingora would stop accepting 5 s after a handover; this one must not start.
    thread::sleep(Duration::from_secs(6));
    assert!(gateway.try_wait().is_none(), "keygate exited after SIGQUIT");
    let response = push_as(gateway.addr(), "karolin");
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.text().contains(BACKEND_ANSWER),
        "{}",
        response.text()
    );

    gateway.signal("TERM");
    let exit = gateway.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(0),
        "exit on SIGTERM"
    );
}

/// Sends one push for `client_id` on a new connection.
fn push_as(addr: SocketAddr, client_id: &str) -> common::Response {
    let key = api_key(client_id, &key_of(client_id));
    request(
        addr,
        "POST",
        PUSH_PATH,
        &[("x-api-key", key.as_str())],
        PUSH_BODY,
    )
}

/// Returns how many health checks the mock received.
fn health_checks(mock: &MockBackend) -> usize {
    mock.requests()
        .iter()
        .filter(|received| received.method == "GET" && received.path() == "/nps/health")
        .count()
}

/// Returns the request ids of the access log lines in `log`.
fn access_log_ids(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|line| line.contains("keygate::access"))
        .filter_map(|line| {
            let start = line.find("request_id=")? + "request_id=".len();
            let id = line[start..].split_whitespace().next()?;
            Some(id.to_string())
        })
        .filter(|id| id.starts_with("load-"))
        .collect()
}

/// One request that did not get the backend's response.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    request_id: String,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    Refused,
    Reset,
    ClosedBeforeResponse,
    TimedOut,
    OtherIo,
    NotBackendAnswer,
}

/// What one load client saw.
#[derive(Debug, Default)]
struct ClientReport {
    name: String,
    /// Request ids of the requests that got the backend's response.
    answered: Vec<String>,
    failures: Vec<Failure>,
    /// Responses with `Connection: close` on a kept-alive connection.
    closes_announced: usize,
}

/// How a load client uses connections.
#[derive(Clone, Copy)]
struct ClientKind {
    name: &'static str,
    keep_alive: bool,
    /// Pause after each response.
    pause: Duration,
    /// Backend delay asked for with `x-mock-delay-ms`, to keep requests in flight.
    backend_delay_ms: u64,
}

const CLIENT_KINDS: [ClientKind; 6] = [
    ClientKind {
        name: "kept-a",
        keep_alive: true,
        pause: Duration::from_millis(10),
        backend_delay_ms: 0,
    },
    ClientKind {
        name: "kept-b",
        keep_alive: true,
        pause: Duration::from_millis(10),
        backend_delay_ms: 0,
    },
    ClientKind {
        name: "idle",
        keep_alive: true,
        pause: Duration::from_millis(700),
        backend_delay_ms: 0,
    },
    ClientKind {
        name: "slow",
        keep_alive: true,
        pause: Duration::ZERO,
        backend_delay_ms: 1500,
    },
    ClientKind {
        name: "new-a",
        keep_alive: false,
        pause: Duration::from_millis(10),
        backend_delay_ms: 0,
    },
    ClientKind {
        name: "new-b",
        keep_alive: false,
        pause: Duration::from_millis(10),
        backend_delay_ms: 0,
    },
];

fn start_load(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<ClientReport>> {
    CLIENT_KINDS
        .iter()
        .map(|kind| {
            let kind = *kind;
            let stop = Arc::clone(stop);
            thread::spawn(move || run_client(addr, kind, &stop))
        })
        .collect()
}

/// Sends pushes until `stop` is set or [`MAX_REQUESTS_PER_CLIENT`] were sent.
/// A kept-alive client reconnects after a response with `Connection: close`,
/// as HTTP/1.1 requires. Every other outcome than the backend's response is
/// a failure.
fn run_client(addr: SocketAddr, kind: ClientKind, stop: &AtomicBool) -> ClientReport {
    let mut report = ClientReport {
        name: kind.name.to_string(),
        ..ClientReport::default()
    };
    let key = api_key("karolin", &key_of("karolin"));
    let mut conn: Option<Conn> = None;
    for number in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let request_id = format!("load-{}-{number}", kind.name);
        if conn.is_none() {
            match Conn::try_connect(addr) {
                Ok(new_conn) => conn = Some(new_conn),
                Err(err) => {
                    report
                        .failures
                        .push(failure(io_failure_kind(&err), &request_id, &err));
                    thread::sleep(kind.pause.max(Duration::from_millis(10)));
                    continue;
                }
            }
        }
        let Some(open) = conn.as_mut() else {
            continue;
        };
        let bytes = push_request(addr, &key, &request_id, kind);
        let exchange = open
            .try_send(&bytes)
            .and_then(|()| open.try_read_response());
        match exchange {
            Ok(response) => {
                let closes = response
                    .header("connection")
                    .is_some_and(|value| value.eq_ignore_ascii_case("close"));
                if is_backend_answer(&response, &request_id) {
                    report.answered.push(request_id);
                } else {
                    report.failures.push(Failure {
                        kind: FailureKind::NotBackendAnswer,
                        request_id,
                        detail: format!("{} {}", response.status, response.text()),
                    });
                }
                if !kind.keep_alive || closes {
                    conn = None;
                }
                if kind.keep_alive && closes {
                    report.closes_announced += 1;
                }
            }
            Err(err) => {
                report
                    .failures
                    .push(failure(io_failure_kind(&err), &request_id, &err));
                conn = None;
            }
        }
        thread::sleep(kind.pause);
    }
    report
}

fn push_request(addr: SocketAddr, key: &str, request_id: &str, kind: ClientKind) -> Vec<u8> {
    let mut head = format!(
        "POST {PUSH_PATH} HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {key}\r\nX-Request-Id: {request_id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        PUSH_BODY.len()
    );
    if kind.backend_delay_ms > 0 {
        head.push_str(&format!("x-mock-delay-ms: {}\r\n", kind.backend_delay_ms));
    }
    if !kind.keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(PUSH_BODY);
    bytes
}

fn is_backend_answer(response: &common::Response, request_id: &str) -> bool {
    response.status == 404
        && response.text().contains(BACKEND_ANSWER)
        && response.header("x-request-id") == Some(request_id)
}

fn io_failure_kind(err: &io::Error) -> FailureKind {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailureKind::Reset,
        io::ErrorKind::UnexpectedEof => FailureKind::ClosedBeforeResponse,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailureKind::TimedOut,
        _ => FailureKind::OtherIo,
    }
}

fn failure(kind: FailureKind, request_id: &str, err: &io::Error) -> Failure {
    Failure {
        kind,
        request_id: request_id.to_string(),
        detail: err.to_string(),
    }
}
