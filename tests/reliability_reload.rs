//! Reloads without the refresh route: SIGHUP, and changes of the config file
//! on disk (atomic rename, Kubernetes-style symlink swap, deletion, a file
//! written in two steps), with requests running during the changes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::try_request;
use common::metrics::reloads;
use common::poll::wait_until;
use common::{api_key, request, ConfigBuilder, Gateway, MockBackend, Response};

const ALPHA: &str = "alpha";
const ALPHA_KEY: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const BRAVO: &str = "bravo";
const BRAVO_KEY: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const CHARLIE: &str = "charlie";
const CHARLIE_KEY: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

/// Maximum time for a change on disk or a signal to show in the responses.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Time after which a change that should not load is taken as not loaded:
/// several times the watch's debounce.
const QUIET_WAIT: Duration = Duration::from_millis(1500);

/// Config replacements in the test under load.
const SWAPS: usize = 50;

/// Request threads in the test under load, and its time limit.
const LOAD_THREADS: usize = 2;
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(60);

fn settings(mock: &MockBackend, watch: bool) -> ConfigBuilder {
    ConfigBuilder::new(mock.addr())
        .set("watchConfig", if watch { "true" } else { "false" })
        .set("log.level", "info")
}

fn push(addr: SocketAddr, client_id: &str, key: &str) -> Response {
    let value = api_key(client_id, key);
    request(
        addr,
        "POST",
        "/nps/rest/push/p1",
        &[("x-api-key", &value), ("Content-Type", "application/json")],
        b"{}",
    )
}

/// Returns whether the response comes from the mock backend, which stores no pushId.
fn from_backend(response: &Response) -> bool {
    response.status == 404 && response.text().contains("is not known")
}

fn passes(gateway: &Gateway, client_id: &str, key: &str) -> bool {
    from_backend(&push(gateway.addr(), client_id, key))
}

fn refused(gateway: &Gateway, client_id: &str, key: &str) -> bool {
    push(gateway.addr(), client_id, key).status == 403
}

/// Counts the refreshes that keygate forwarded to the mock backend.
fn forwarded_refreshes(mock: &MockBackend) -> usize {
    mock.requests()
        .iter()
        .filter(|received| received.method == "POST" && received.path() == "/nps/refresh")
        .count()
}

#[test]
fn sighup_reloads_config() {
    let mock = MockBackend::start();
    let base = settings(&mock, false).client(ALPHA, ALPHA_KEY);
    let mut gateway = Gateway::start(&base.build());

    gateway.rewrite_config(&base.client(BRAVO, BRAVO_KEY).build());
    std::thread::sleep(QUIET_WAIT);
    assert!(
        refused(&gateway, BRAVO, BRAVO_KEY),
        "with watchConfig false, a new file must wait for a reload"
    );

    gateway.signal("HUP");
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, BRAVO, BRAVO_KEY)),
        "the client added to the file must pass after SIGHUP:\n{}",
        gateway.redacted_log_tail(20)
    );
    assert!(passes(&gateway, ALPHA, ALPHA_KEY));
    assert_eq!(reloads(gateway.metrics_addr(), "signal", "ok"), 1.0);
    assert_eq!(reloads(gateway.metrics_addr(), "file", "ok"), 0.0);
    assert!(
        wait_until(RELOAD_TIMEOUT, || forwarded_refreshes(&mock) == 1),
        "forwardRefresh must send one refresh to the backend after SIGHUP"
    );
    assert!(gateway.try_wait().is_none(), "SIGHUP must not stop keygate");
}

#[test]
fn sighup_bad_file_keeps_old() {
    let mock = MockBackend::start();
    let base = settings(&mock, false).client(ALPHA, ALPHA_KEY);
    let gateway = Gateway::start(&base.build());

    std::fs::write(gateway.config_path(), "allowedClients: [\n").unwrap();
    gateway.signal("HUP");
    assert!(
        wait_until(RELOAD_TIMEOUT, || reloads(
            gateway.metrics_addr(),
            "signal",
            "error"
        ) == 1.0),
        "a bad file after SIGHUP must count one failed reload"
    );
    assert!(passes(&gateway, ALPHA, ALPHA_KEY), "the old clients stay");
    assert!(
        gateway.wait_for_log("config reload failed", RELOAD_TIMEOUT),
        "a failed reload must be logged"
    );
    assert_eq!(
        forwarded_refreshes(&mock),
        0,
        "a failed reload is not forwarded"
    );
}

#[test]
fn renamed_file_reloads() {
    let mock = MockBackend::start();
    let base = settings(&mock, true).client(ALPHA, ALPHA_KEY);
    let gateway = Gateway::start(&base.build());
    assert!(refused(&gateway, BRAVO, BRAVO_KEY));

    let with_bravo = base.clone().client(BRAVO, BRAVO_KEY).build();
    gateway.rewrite_config(&with_bravo);
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, BRAVO, BRAVO_KEY)),
        "a client added by a rename must pass without a refresh:\n{}",
        gateway.redacted_log_tail(20)
    );
    assert_eq!(reloads(gateway.metrics_addr(), "file", "ok"), 1.0);
    assert!(
        wait_until(RELOAD_TIMEOUT, || forwarded_refreshes(&mock) == 1),
        "forwardRefresh must send one refresh to the backend after a file reload"
    );

    // The same bytes again: the rename sends events, but there is nothing to load.
    gateway.rewrite_config(&with_bravo);
    std::thread::sleep(QUIET_WAIT);
    assert_eq!(reloads(gateway.metrics_addr(), "file", "ok"), 1.0);
    assert_eq!(reloads(gateway.metrics_addr(), "file", "error"), 0.0);
}

#[test]
fn file_edited_in_place_reloads() {
    let mock = MockBackend::start();
    let base = settings(&mock, true).client(ALPHA, ALPHA_KEY);
    let gateway = Gateway::start(&base.build());

    std::fs::write(gateway.config_path(), base.client(BRAVO, BRAVO_KEY).build()).unwrap();
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, BRAVO, BRAVO_KEY)),
        "a file written in place must be reloaded"
    );
}

/// Lays the config out as a Kubernetes ConfigMap volume does:
/// `application.yml -> ..data/application.yml`, `..data -> <version folder>`.
fn publish_version(folder: &Path, version: usize, text: &str) {
    let version_name = format!("..2030_01_01_00_00_{version:02}.0000");
    let version_folder = folder.join(&version_name);
    std::fs::create_dir(&version_folder).unwrap();
    std::fs::write(version_folder.join("application.yml"), text).unwrap();
    let temporary_link = folder.join("..data_tmp");
    std::os::unix::fs::symlink(&version_name, &temporary_link).unwrap();
    std::fs::rename(&temporary_link, folder.join("..data")).unwrap();
}

#[test]
fn configmap_symlink_swap_reloads() {
    let mock = MockBackend::start();
    let base = settings(&mock, true).client(ALPHA, ALPHA_KEY);
    let text = base.build();
    let gateway = Gateway::start(&text);
    let folder = gateway.config_path().parent().unwrap().to_path_buf();

    // Replace the plain file with the ConfigMap layout, same contents.
    publish_version(&folder, 1, &text);
    let temporary_link = folder.join("application.yml.link");
    std::os::unix::fs::symlink("..data/application.yml", &temporary_link).unwrap();
    std::fs::rename(&temporary_link, gateway.config_path()).unwrap();
    std::thread::sleep(QUIET_WAIT);
    assert_eq!(
        reloads(gateway.metrics_addr(), "file", "ok"),
        0.0,
        "the same bytes behind a symlink are no change"
    );

    publish_version(&folder, 2, &base.clone().client(BRAVO, BRAVO_KEY).build());
    std::fs::remove_dir_all(folder.join("..2030_01_01_00_00_01.0000")).unwrap();
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, BRAVO, BRAVO_KEY)),
        "a swap of ..data must reload:\n{}",
        gateway.redacted_log_tail(20)
    );

    publish_version(&folder, 3, &base.client(CHARLIE, CHARLIE_KEY).build());
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, CHARLIE, CHARLIE_KEY)
            && refused(&gateway, BRAVO, BRAVO_KEY)),
        "a second swap must reload too"
    );
    assert_eq!(reloads(gateway.metrics_addr(), "file", "ok"), 2.0);
}

#[test]
fn missing_or_partial_file_keeps_old() {
    let mock = MockBackend::start();
    let base = settings(&mock, true).client(ALPHA, ALPHA_KEY);
    let gateway = Gateway::start(&base.build());
    let metrics = gateway.metrics_addr();

    std::fs::remove_file(gateway.config_path()).unwrap();
    assert!(
        wait_until(RELOAD_TIMEOUT, || reloads(metrics, "file", "error") == 1.0),
        "a deleted file must count one failed reload"
    );
    assert!(passes(&gateway, ALPHA, ALPHA_KEY), "the old clients stay");
    assert!(gateway.wait_for_log("cannot read the config file", RELOAD_TIMEOUT));

    // The first half of a file, cut inside the client list.
    let full = base.clone().client(BRAVO, BRAVO_KEY).build();
    let cut = full.find("allowedClients:").unwrap() + "allowedClients:\n  - clientId: ".len();
    std::fs::write(gateway.config_path(), &full[..cut]).unwrap();
    assert!(
        wait_until(RELOAD_TIMEOUT, || reloads(metrics, "file", "error") == 2.0),
        "a half-written file must count a failed reload"
    );
    assert!(passes(&gateway, ALPHA, ALPHA_KEY), "the old clients stay");
    assert!(refused(&gateway, BRAVO, BRAVO_KEY));

    std::fs::write(gateway.config_path(), &full).unwrap();
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, BRAVO, BRAVO_KEY)),
        "the completed file must load"
    );
    assert_eq!(reloads(metrics, "file", "ok"), 1.0);
    assert_eq!(reloads(metrics, "file", "error"), 2.0);
}

#[test]
fn watch_follows_watch_config() {
    let mock = MockBackend::start();
    let base = settings(&mock, false).client(ALPHA, ALPHA_KEY);
    let gateway = Gateway::start(&base.build());
    let metrics = gateway.metrics_addr();

    gateway.rewrite_config(&base.clone().client(BRAVO, BRAVO_KEY).build());
    std::thread::sleep(QUIET_WAIT);
    assert!(refused(&gateway, BRAVO, BRAVO_KEY), "the watch is off");
    assert_eq!(reloads(metrics, "file", "ok"), 0.0);

    // Turning the watch on takes effect with the reload that reads it.
    let watching = base.clone().set("watchConfig", "true");
    gateway.rewrite_config(&watching.build());
    gateway.signal("HUP");
    assert!(wait_until(RELOAD_TIMEOUT, || reloads(
        metrics, "signal", "ok"
    ) == 1.0));
    gateway.rewrite_config(&watching.client(CHARLIE, CHARLIE_KEY).build());
    assert!(
        wait_until(RELOAD_TIMEOUT, || passes(&gateway, CHARLIE, CHARLIE_KEY)),
        "after watchConfig turned true, a change must load by itself:\n{}",
        gateway.redacted_log_tail(20)
    );
}

/// What the request threads of the load test saw.
#[derive(Default)]
struct LoadReport {
    sent: usize,
    unexpected: Vec<String>,
}

/// Sends pushes for every client until `stop`, at most for [`LOAD_TIME_LIMIT`].
/// alpha is in every config and must reach the backend; bravo and charlie
/// come and go, so each may reach the backend or get 403.
fn send_load(addr: SocketAddr, stop: &AtomicBool) -> LoadReport {
    let started = Instant::now();
    let mut report = LoadReport::default();
    let clients = [
        (ALPHA, ALPHA_KEY),
        (BRAVO, BRAVO_KEY),
        (CHARLIE, CHARLIE_KEY),
    ];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_TIME_LIMIT {
        let (client_id, key) = clients[report.sent % clients.len()];
        let value = api_key(client_id, key);
        let headers = [
            ("x-api-key", value.as_str()),
            ("Content-Type", "application/json"),
        ];
        report.sent += 1;
        let outcome = match try_request(addr, "POST", "/nps/rest/push/p1", &headers, b"{}") {
            Ok(response) if from_backend(&response) => continue,
            Ok(response) if response.status == 403 && client_id != ALPHA => continue,
            Ok(response) => format!("status {} body {:?}", response.status, response.text()),
            Err(err) => format!("request failed: {err}"),
        };
        if report.unexpected.len() < 20 {
            report.unexpected.push(format!("{client_id}: {outcome}"));
        }
    }
    report
}

#[test]
fn fifty_swaps_under_load() {
    let mock = MockBackend::start();
    let base = settings(&mock, true)
        .set("log.access", "false")
        .client(ALPHA, ALPHA_KEY);
    let with_bravo = base.clone().client(BRAVO, BRAVO_KEY).build();
    let with_charlie = base.client(CHARLIE, CHARLIE_KEY).build();
    let gateway = Gateway::start(&with_charlie);

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..LOAD_THREADS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let addr = gateway.addr();
            std::thread::spawn(move || send_load(addr, &stop))
        })
        .collect();

    let mut missed = Vec::new();
    for swap in 0..SWAPS {
        let (text, added, removed) = if swap % 2 == 0 {
            (&with_bravo, (BRAVO, BRAVO_KEY), (CHARLIE, CHARLIE_KEY))
        } else {
            (&with_charlie, (CHARLIE, CHARLIE_KEY), (BRAVO, BRAVO_KEY))
        };
        gateway.rewrite_config(text);
        let visible = wait_until(RELOAD_TIMEOUT, || {
            passes(&gateway, added.0, added.1) && refused(&gateway, removed.0, removed.1)
        });
        if !visible {
            missed.push(swap);
        }
    }
    stop.store(true, Ordering::Relaxed);

    let mut sent = 0;
    let mut unexpected = Vec::new();
    for sender in senders {
        let report = sender.join().expect("a request thread panicked");
        sent += report.sent;
        unexpected.extend(report.unexpected);
    }
    println!(
        "{sent} requests in {:?} while the file was replaced {SWAPS} times",
        started.elapsed()
    );
    assert!(
        missed.is_empty(),
        "swaps {missed:?} did not show within {RELOAD_TIMEOUT:?}:\n{}",
        gateway.redacted_log_tail(30)
    );
    assert!(
        unexpected.is_empty(),
        "{} of {sent} requests got an unexpected response: {unexpected:#?}",
        unexpected.len()
    );
    assert!(
        sent > SWAPS,
        "the request threads sent only {sent} requests"
    );
    assert_eq!(
        reloads(gateway.metrics_addr(), "file", "ok"),
        SWAPS as f64,
        "each swap must be one file reload"
    );
    assert_eq!(reloads(gateway.metrics_addr(), "file", "error"), 0.0);
}
