//! A real Prometheus scrapes keygate: the test starts keygate, the mock
//! backend and Prometheus on 127.0.0.1, sends a short bounded load, and
//! reads the series back through Prometheus's HTTP query API. It also runs
//! every query of the Grafana dashboard against that Prometheus, and
//! `promtool check metrics` on keygate's /metrics output.
//!
//! Prometheus and promtool come from Debian's prometheus package, which
//! scripts/setup.sh installs.

mod common;
mod deploy_common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value as Json;
use tempfile::TempDir;

use common::http::try_request;
use common::MockBackend;
use common::{api_key, free_addr, metrics_text, request, test_logs_dir, ConfigBuilder, Gateway};
use deploy_common::{describe, find_tool, read_repo_file};

const CLIENT_ID: &str = "scrape-client";
const KEY: &str = "3b0c1f6e9a5d47b2a8e4c7d1f0b9e2a6c5d8f1e4a7b0c3d6e9f2a5b8c1d4e7f0";
const WRONG_KEY: &str = "d7e0f3a6b9c2d5e8f1a4b7c0d3e6f9a2b5c8d1e4f7a0b3c6d9e2f5a8b1c4d7e0";
const PUSH_PATH: &str = "/nps/rest/push/scrape-test";

/// Requests with the right key. The mock returns 404 to each, because it
/// stores no pushId.
const GOOD_REQUESTS: u64 = 20;
/// Requests with a known clientId and a wrong key.
const BAD_KEY_REQUESTS: u64 = 7;

/// Maximum time to wait for Prometheus to start and for series to arrive.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(45);
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The rate window that replaces Grafana's `$__rate_interval` when the
/// dashboard's queries run here. With a 1 s scrape it spans many samples.
const RATE_WINDOW: &str = "30s";

/// Prometheus running as a child process on 127.0.0.1. Dropping it kills
/// the process and deletes its storage.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, and waits until
    /// `/-/ready` returns 200.
    fn start(target: SocketAddr) -> Prometheus {
        assert!(
            target.ip().is_loopback(),
            "the scrape target {target} must be a loopback address"
        );
        let binary = find_tool("prometheus");
        let dir = tempfile::tempdir().expect("failed to create a temporary folder");
        let config_path = dir.path().join("prometheus.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: keygate\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config_path, config).expect("failed to write prometheus.yml");
        let addr = free_addr();
        // A folder of its own: scripts/check-test-logs.py reads the gateway
        // logs in test-logs for keys, and Prometheus's log holds no request.
        let log_dir = test_logs_dir().join("prometheus");
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|err| panic!("failed to create {}: {err}", log_dir.display()));
        let log_path = log_dir.join(format!("prometheus-{}.log", addr.port()));
        let log = File::create(&log_path)
            .unwrap_or_else(|err| panic!("failed to create {}: {err}", log_path.display()));
        let log_for_stderr = log.try_clone().expect("failed to duplicate the log handle");
        println!("prometheus log: {}", log_path.display());

        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start prometheus: {err}"));
        let mut prometheus = Prometheus {
            child,
            addr,
            log_path,
            _dir: dir,
        };
        prometheus.wait_until_ready();
        prometheus
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = try_request(self.addr, "GET", "/-/ready", &[], b"") {
                if response.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within {PROMETHEUS_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs an instant query and returns `data.result`. Panics when
    /// Prometheus rejects the query.
    fn query(&self, promql: &str) -> Vec<Json> {
        let path = format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(promql, NON_ALPHANUMERIC)
        );
        let response = request(self.addr, "GET", &path, &[], b"");
        let body = response.json();
        assert_eq!(
            response.status, 200,
            "query {promql} returned {}: {body}",
            response.status
        );
        assert_eq!(body["status"], "success", "query {promql}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {promql} returned no result list: {body}"))
            .clone()
    }

    /// Polls `promql` until one series has the value `expected`, and
    /// returns that series. Panics with the last result after
    /// [`PROMETHEUS_TIMEOUT`].
    fn wait_for_value(&self, promql: &str, expected: f64) -> Json {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            let result = self.query(promql);
            let found = result
                .iter()
                .find(|series| sample_value(series) == Some(expected));
            if let Some(series) = found {
                return series.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{promql} did not reach {expected} within {PROMETHEUS_TIMEOUT:?}; last result: {result:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Errors mean the process has already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the value of an instant-vector series, `value: [time, "text"]`.
fn sample_value(series: &Json) -> Option<f64> {
    series["value"][1]
        .as_str()
        .and_then(|text| text.parse().ok())
}

/// Returns the label names of a series, `__name__` included.
fn label_names(series: &Json) -> BTreeSet<String> {
    series["metric"]
        .as_object()
        .map(|labels| labels.keys().cloned().collect())
        .unwrap_or_default()
}

fn label<'a>(series: &'a Json, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

/// Sends the bounded load: good pushes, pushes with a wrong key, and one
/// refresh from the admin peer 127.0.0.1.
fn send_load(gateway: &Gateway) {
    let good = api_key(CLIENT_ID, KEY);
    let bad = api_key(CLIENT_ID, WRONG_KEY);
    let body = br#"{"title":"hello","body":"from the scrape test"}"#;
    for _ in 0..GOOD_REQUESTS {
        let response = request(
            gateway.addr(),
            "POST",
            PUSH_PATH,
            &[("x-api-key", &good), ("Content-Type", "application/json")],
            body,
        );
        assert_eq!(response.status, 404, "the mock knows no pushId");
    }
    for _ in 0..BAD_KEY_REQUESTS {
        let response = request(
            gateway.addr(),
            "POST",
            PUSH_PATH,
            &[("x-api-key", &bad), ("Content-Type", "application/json")],
            body,
        );
        assert_eq!(response.status, 403);
    }
    let refresh = request(gateway.addr(), "POST", "/nps/refresh", &[], b"");
    assert_eq!(refresh.status, 200, "refresh: {}", refresh.text());
}

fn start_gateway(mock: &MockBackend) -> Gateway {
    let config = ConfigBuilder::new(mock.addr())
        .client(CLIENT_ID, KEY)
        .set("log.level", "info")
        .build();
    Gateway::start(&config)
}

/// Returns every PromQL expression of the dashboard with Grafana's
/// variables replaced: all instances, and [`RATE_WINDOW`].
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Json = serde_json::from_str(&read_repo_file("deploy/grafana/keygate.json"))
        .expect("deploy/grafana/keygate.json is JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of panel {title} has no expr"));
            let expr = expr
                .replace("$__rate_interval", RATE_WINDOW)
                .replace("$instance", ".*");
            queries.push((title.to_owned(), expr));
        }
    }
    queries
}

/// Runs `promtool check metrics` on a metrics text and returns its output.
fn promtool_check_metrics(text: &str) -> std::process::Output {
    let mut child = Command::new(find_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start promtool: {err}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("failed to send the metrics text to promtool");
    child
        .wait_with_output()
        .expect("failed to wait for promtool")
}

#[test]
fn prometheus_scrapes_keygate_series() {
    let mock = MockBackend::start();
    let gateway = start_gateway(&mock);
    let prometheus = Prometheus::start(gateway.metrics_addr());
    let instance = gateway.metrics_addr().to_string();

    send_load(&gateway);

    let up = prometheus.wait_for_value("up{job=\"keygate\"}", 1.0);
    assert_eq!(label(&up, "instance"), instance);

    let forwarded = prometheus.wait_for_value(
        "keygate_requests_total{route=\"proxy\",status=\"404\"}",
        GOOD_REQUESTS as f64,
    );
    assert_eq!(
        label_names(&forwarded),
        names(&["__name__", "instance", "job", "route", "status"])
    );
    assert_eq!(label(&forwarded, "job"), "keygate");
    assert_eq!(label(&forwarded, "instance"), instance);

    let rejected = prometheus.wait_for_value(
        "keygate_requests_total{route=\"proxy\",status=\"403\"}",
        BAD_KEY_REQUESTS as f64,
    );
    assert_eq!(label(&rejected, "instance"), instance);

    let admin = prometheus.wait_for_value(
        "keygate_requests_total{route=\"admin\",status=\"200\"}",
        1.0,
    );
    assert_eq!(label(&admin, "instance"), instance);

    let bad_key = prometheus.wait_for_value(
        "keygate_auth_failures_total{reason=\"bad_key\"}",
        BAD_KEY_REQUESTS as f64,
    );
    assert_eq!(
        label_names(&bad_key),
        names(&["__name__", "instance", "job", "reason"])
    );

    let all_proxied = prometheus.wait_for_value(
        "keygate_request_duration_seconds_bucket{route=\"proxy\",le=\"+Inf\"}",
        (GOOD_REQUESTS + BAD_KEY_REQUESTS) as f64,
    );
    assert_eq!(
        label_names(&all_proxied),
        names(&["__name__", "instance", "job", "le", "route"])
    );
    let buckets = prometheus.query("keygate_request_duration_seconds_bucket{route=\"proxy\"}");
    assert!(
        buckets.len() > 2,
        "the histogram has several buckets: {buckets:?}"
    );

    let reloads = prometheus.wait_for_value(
        "keygate_config_reloads_total{trigger=\"refresh\",result=\"ok\"}",
        1.0,
    );
    assert_eq!(
        label_names(&reloads),
        names(&["__name__", "instance", "job", "result", "trigger"])
    );

    let clients = prometheus.wait_for_value("keygate_allowed_clients", 1.0);
    assert_eq!(label(&clients, "instance"), instance);
}

#[test]
fn dashboard_queries_run_in_prometheus() {
    let mock = MockBackend::start();
    let gateway = start_gateway(&mock);
    let prometheus = Prometheus::start(gateway.metrics_addr());

    send_load(&gateway);
    prometheus.wait_for_value(
        "keygate_config_reloads_total{trigger=\"refresh\",result=\"ok\"}",
        1.0,
    );
    // Two scrapes after the load, so that every rate has samples on both
    // sides of it.
    std::thread::sleep(Duration::from_secs(2));

    let queries = dashboard_queries();
    assert!(
        queries.len() >= 10,
        "the dashboard has its queries: {queries:?}"
    );
    // No client has a rate limit in this run, so that panel has no series.
    let may_be_empty = ["Rate-limited requests by client"];
    for (title, expr) in &queries {
        let result = prometheus.query(expr);
        if !may_be_empty.contains(&title.as_str()) {
            assert!(
                !result.is_empty(),
                "panel {title:?}: {expr} returned no series"
            );
        }
    }
}

#[test]
fn promtool_accepts_metrics_output() {
    find_tool("promtool");
    let mock = MockBackend::start();
    let gateway = start_gateway(&mock);
    send_load(&gateway);
    let text = metrics_text(gateway.metrics_addr());

    let output = promtool_check_metrics(&text);

    assert!(
        output.status.success(),
        "promtool check metrics found problems:\n{}",
        describe(&output)
    );
    assert!(text.contains("keygate_request_duration_seconds_bucket"));
}

#[test]
fn promtool_rejects_bad_counter_name() {
    // A counter without `_total`, so that a promtool that checks nothing
    // cannot pass the test above.
    let text = "# HELP demo_events events\n# TYPE demo_events counter\ndemo_events 1\n";

    let output = promtool_check_metrics(text);

    assert!(
        !output.status.success(),
        "promtool accepted a counter without _total:\n{}",
        describe(&output)
    );
}
