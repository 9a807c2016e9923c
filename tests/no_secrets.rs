//! Checks that no key, and no `x-api-key` value a client sent, reaches
//! keygate's log at any level, its metrics, or the bodies and headers of its
//! error responses. The only response that may show a key is the
//! generateclient snippet, which exists to show it.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_yaml::Value;
use tempfile::TempDir;

use common::gateway::{write_config_file, KEYGATE_BIN, START_TIMEOUT};
use common::http::try_request;
use common::{api_key, metrics_text, request, test_logs_dir, ConfigBuilder, Gateway, MockBackend};
use common::{redact, Response};

const CLIENT_ID: &str = "karolin";
const KEY: &str = "8fc51739063099949371f340bbb56aa45c95093799453a5bc746f94474662e60";
const SECOND_CLIENT_ID: &str = "second-client";
const SECOND_KEY: &str = "b981a2c75dd4634c74337c5073f06e9cd9df7ee646fc263daeb1214eddcced93";
const WRONG_KEY: &str = "0575c6979d8ddeea68a70598a337294cbd4c10b380169e587feb960249ab5480";
const UNKNOWN_KEY: &str = "0fc0e7fdaba883d00d17ebf3649ea73c92c2e7355f32390c81067f687cdbe612";
const ADDED_CLIENT_ID: &str = "added-client";
const ADDED_KEY: &str = "2cd5340e763d490caf029d0edfaf7f30fea2a2e72fe8356048b6fdae75d7eda0";
const MAPPED_KEY: &str = "d2b4070f4f21c5ff5cf0c1ef26fec4870b564987c3737d74d169d86e8934879f";
const UNKNOWN_FIELD_KEY: &str = "a65410cb10c348638853d489a7fa4df32cbd981961bb653322b58fa56f07029c";
const BLOCK_KEY: &str = "41c9542fb03b652bf3077d3b32f3899f98246130bd8dcb1080ab0fcbeb4f25e9";

/// `x-api-key` value that is not base64.
const MALFORMED_VALUE: &str = "malformed-api-key-value-5e1f!!";
/// Text sent base64-encoded without the `:` that separates clientId and key.
const NO_COLON_TEXT: &str = "nocolonsecret9b2d7c4e1a0f8e6d";

/// Strings from request input that must never become a metric label value.
const UNKNOWN_CLIENT_ID: &str = "unconfigured-intruder-id";
const PATH_PROBE: &str = "weird-path-label-probe";
const REQUEST_ID_PROBE: &str = "request-id-label-probe";

const PUSH_PATH: &str = "/nps/rest/push/p1";

/// Length of the key prefix that is searched for as well, so that a key cut
/// short in a log line is found too.
const KEY_PREFIX_CHARS: usize = 16;

/// Maximum time that keygate may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A value that must stay out of logs, metrics and error responses, with a
/// description that failure messages print in its place.
struct Secret {
    description: String,
    value: String,
    /// Whether the value is a key, whose prefix alone is searched for too.
    is_key: bool,
}

/// One response that the traffic received.
struct Exchange {
    description: String,
    response: Response,
    /// True only for the generateclient snippet, which shows its new key.
    may_show_key: bool,
}

/// What [`send_mixed_traffic`] sent and received.
#[derive(Default)]
struct Traffic {
    secrets: Vec<Secret>,
    exchanges: Vec<Exchange>,
}

impl Traffic {
    fn key(&mut self, description: &str, value: &str) {
        self.secrets.push(Secret {
            description: description.to_owned(),
            value: value.to_owned(),
            is_key: true,
        });
    }

    fn header_value(&mut self, description: &str, value: &str) {
        self.secrets.push(Secret {
            description: description.to_owned(),
            value: value.to_owned(),
            is_key: false,
        });
    }

    fn record(&mut self, description: &str, response: Response, expected_status: u16) {
        assert_eq!(
            response.status, expected_status,
            "{description}: status, expected {expected_status}"
        );
        self.exchanges.push(Exchange {
            description: description.to_owned(),
            response,
            may_show_key: false,
        });
    }

    /// Returns the strings to search for: each value, and the first
    /// [`KEY_PREFIX_CHARS`] characters of each key.
    fn needles(&self) -> Vec<(String, &str)> {
        let mut needles = Vec::new();
        for secret in &self.secrets {
            needles.push((secret.description.clone(), secret.value.as_str()));
            if secret.is_key && secret.value.len() > KEY_PREFIX_CHARS {
                needles.push((
                    format!(
                        "first {KEY_PREFIX_CHARS} characters of {}",
                        secret.description
                    ),
                    &secret.value[..KEY_PREFIX_CHARS],
                ));
            }
        }
        needles
    }

    fn values(&self) -> Vec<String> {
        self.secrets
            .iter()
            .map(|secret| secret.value.clone())
            .collect()
    }
}

/// Settings shared by every configuration that a test writes.
fn settings(mock: &MockBackend) -> ConfigBuilder {
    ConfigBuilder::new(mock.addr())
}

fn good_config(settings: &ConfigBuilder) -> ConfigBuilder {
    settings
        .clone()
        .clients(&[(CLIENT_ID, KEY), (SECOND_CLIENT_ID, SECOND_KEY)])
}

/// Replaces the file at `path` in one rename.
fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("yml.tmp");
    std::fs::write(&temporary, text)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", temporary.display()));
    std::fs::rename(&temporary, path)
        .unwrap_or_else(|err| panic!("failed to rename {}: {err}", temporary.display()));
}

/// Returns the configuration text of `settings` with `section` in place of
/// its empty `allowedClients` list.
fn with_clients_section(settings: &ConfigBuilder, section: &str) -> String {
    settings.build().replace("allowedClients: []\n", section)
}

/// Sends a request with a small JSON body, as a push client does.
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, method, path, headers, br#"{"title":"t","body":"b"}"#)
}

/// Sends a request without a body or headers to an admin route.
fn send_admin(addr: SocketAddr, method: &str, path: &str) -> Response {
    request(addr, method, path, &[], b"")
}

/// A request of the probe: its name, path, headers and expected status.
type ProbeRequest<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

/// Sends good, wrong-key, unknown-client and malformed requests, requests
/// with odd paths, a generateclient, and good and bad refreshes. Returns the
/// responses and every key and `x-api-key` value involved. Panics when a
/// response has an unexpected status.
fn send_mixed_traffic(addr: SocketAddr, config_path: &Path, settings: &ConfigBuilder) -> Traffic {
    let mut traffic = Traffic::default();
    traffic.key("configured key of karolin", KEY);
    traffic.key("configured key of second-client", SECOND_KEY);

    let good = api_key(CLIENT_ID, KEY);
    let second = api_key(SECOND_CLIENT_ID, SECOND_KEY);
    let wrong = api_key(CLIENT_ID, WRONG_KEY);
    let unknown = api_key(UNKNOWN_CLIENT_ID, UNKNOWN_KEY);
    let no_colon = STANDARD.encode(NO_COLON_TEXT);
    let trailing_newline = STANDARD.encode(format!("{CLIENT_ID}:{KEY}\n"));
    traffic.header_value("x-api-key value of karolin", &good);
    traffic.header_value("x-api-key value of second-client", &second);
    traffic.key("wrong key sent for karolin", WRONG_KEY);
    traffic.header_value("x-api-key value with a wrong key", &wrong);
    traffic.key("key sent for an unknown client", UNKNOWN_KEY);
    traffic.header_value("x-api-key value of an unknown client", &unknown);
    traffic.header_value("x-api-key value that is not base64", MALFORMED_VALUE);
    traffic.header_value("text sent without a colon", NO_COLON_TEXT);
    traffic.header_value("x-api-key value without a colon", &no_colon);
    traffic.header_value("x-api-key value with a trailing newline", &trailing_newline);

    let probe_path = format!("/nps/rest/push/{PATH_PROBE}");
    let requests: Vec<ProbeRequest> = vec![
        ("good push", PUSH_PATH, vec![("x-api-key", &good)], 404),
        (
            "good push with X-API-KEY",
            PUSH_PATH,
            vec![("X-API-KEY", &second)],
            404,
        ),
        (
            "good push with a query",
            "/nps/rest/push/p1?lang=de",
            vec![("x-api-key", &good)],
            404,
        ),
        ("wrong key", PUSH_PATH, vec![("x-api-key", &wrong)], 403),
        (
            "unknown client",
            PUSH_PATH,
            vec![("x-api-key", &unknown)],
            403,
        ),
        (
            "value not base64",
            PUSH_PATH,
            vec![("x-api-key", MALFORMED_VALUE)],
            403,
        ),
        (
            "value without a colon",
            PUSH_PATH,
            vec![("x-api-key", &no_colon)],
            403,
        ),
        (
            "value with a trailing newline",
            PUSH_PATH,
            vec![("x-api-key", &trailing_newline)],
            403,
        ),
        (
            "two key headers",
            PUSH_PATH,
            vec![("x-api-key", &good), ("x-api-key", &wrong)],
            403,
        ),
        ("empty key", PUSH_PATH, vec![("x-api-key", "")], 403),
        ("no key", PUSH_PATH, vec![], 403),
        (
            "odd path with a wrong key",
            &probe_path,
            vec![("x-api-key", &wrong)],
            403,
        ),
        (
            "odd path with a good key",
            &probe_path,
            vec![("x-api-key", &good)],
            404,
        ),
        (
            "odd request id",
            PUSH_PATH,
            vec![("x-api-key", &good), ("X-Request-Id", REQUEST_ID_PROBE)],
            404,
        ),
        (
            "dot segments",
            "/nps/rest/../refresh",
            vec![("x-api-key", &good)],
            400,
        ),
        (
            "outside the context path",
            "/elsewhere",
            vec![("x-api-key", &good)],
            404,
        ),
    ];
    for (description, path, headers, expected_status) in requests {
        let response = send(addr, "POST", path, &headers);
        traffic.record(description, response, expected_status);
    }
    traffic.record(
        "generateclient with POST",
        send_admin(addr, "POST", "/nps/rest/util/generateclient/x"),
        405,
    );
    traffic.record(
        "generateclient for a configured client",
        send_admin(addr, "GET", "/nps/rest/util/generateclient/karolin"),
        409,
    );

    let generated = send_admin(
        addr,
        "GET",
        "/nps/rest/util/generateclient/generated-client",
    );
    assert_eq!(
        generated.status,
        200,
        "generateclient: body {:?}",
        generated.text()
    );
    let snippet = generated.text();
    let header_value = snippet
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# X-Api-Key: "))
        .expect("the snippet starts with '# X-Api-Key: <value>'")
        .to_owned();
    let entries: Value = serde_yaml::from_str(&snippet).expect("the snippet is valid YAML");
    let generated_key = entries[0]["key"]
        .as_str()
        .expect("the snippet has a key")
        .to_owned();
    traffic.key("key shown by generateclient", &generated_key);
    traffic.header_value("x-api-key value shown by generateclient", &header_value);
    traffic.exchanges.push(Exchange {
        description: "generateclient".to_owned(),
        response: generated,
        may_show_key: true,
    });

    let added = good_config(settings)
        .client(ADDED_CLIENT_ID, ADDED_KEY)
        .build();
    let added_value = api_key(ADDED_CLIENT_ID, ADDED_KEY);
    traffic.key("key added by a refresh", ADDED_KEY);
    traffic.header_value("x-api-key value of the added client", &added_value);
    replace_file(config_path, &added);
    traffic.record(
        "good refresh",
        send_admin(addr, "POST", "/nps/refresh"),
        200,
    );
    traffic.record(
        "push by the added client",
        send(addr, "POST", PUSH_PATH, &[("x-api-key", &added_value)]),
        404,
    );

    traffic.key("key written as a YAML mapping", MAPPED_KEY);
    traffic.key("key under a misspelled field name", UNKNOWN_FIELD_KEY);
    traffic.key("key written as a block scalar", BLOCK_KEY);
    let bad_files = [
        (
            "refresh with one key under two clients",
            good_config(settings).client("copy-client", KEY).build(),
        ),
        (
            "refresh with tab indentation",
            with_clients_section(
                settings,
                &format!("allowedClients:\n\t- clientId: {ADDED_CLIENT_ID}\n\t  key: {ADDED_KEY}\n"),
            ),
        ),
        (
            "refresh with a key that is a mapping",
            with_clients_section(
                settings,
                &format!("allowedClients:\n  - clientId: mapped\n    key: {{{MAPPED_KEY}: 1}}\n"),
            ),
        ),
        (
            "refresh with a misspelled field",
            with_clients_section(
                settings,
                &format!("allowedClients:\n  - clientId: typo\n    kye: {UNKNOWN_FIELD_KEY}\n"),
            ),
        ),
        (
            "refresh with a multi-line key",
            with_clients_section(
                settings,
                &format!("allowedClients:\n  - clientId: block\n    key: |\n      {BLOCK_KEY}\n      second-line\n"),
            ),
        ),
    ];
    for (description, text) in bad_files {
        replace_file(config_path, &text);
        traffic.record(description, send_admin(addr, "POST", "/nps/refresh"), 500);
    }

    replace_file(config_path, &added);
    traffic.record(
        "refresh of the unchanged file",
        send_admin(addr, "POST", "/nps/refresh"),
        200,
    );
    traffic
}

/// Asserts that `text` contains none of the secrets of `traffic`. Failure
/// messages name the secret and show the line with every secret redacted.
fn assert_no_secret(text: &str, traffic: &Traffic, place: &str) {
    let values = traffic.values();
    for (description, needle) in traffic.needles() {
        let line = text.lines().find(|line| line.contains(needle));
        assert!(
            line.is_none(),
            "{place} contains the {description}, in the line:\n{}",
            redact(line.unwrap_or(""), &values).replace(needle, "[REDACTED]")
        );
    }
}

/// Asserts that the metrics text has none of the secrets and no label value
/// taken from request input.
fn assert_metrics_clean(metrics_addr: SocketAddr, traffic: &Traffic) {
    let text = metrics_text(metrics_addr);
    assert_no_secret(&text, traffic, "the metrics text");
    for probe in [UNKNOWN_CLIENT_ID, PATH_PROBE, REQUEST_ID_PROBE, "elsewhere"] {
        assert!(
            !text.contains(probe),
            "the metrics text contains {probe:?}, which only a request sent"
        );
    }
}

/// Stops a gateway with SIGTERM and waits for it to exit, so that its log
/// is complete.
fn stop(gateway: &mut Gateway) {
    gateway.signal("TERM");
    if gateway.wait_exit(STOP_TIMEOUT).is_none() {
        gateway.kill();
    }
}

/// Runs the mixed traffic against a gateway at log level trace, with the
/// settings changed by `configure`, and checks its metrics and whole log.
fn check_trace_log(configure: impl FnOnce(ConfigBuilder) -> ConfigBuilder, place: &str) {
    let mock = MockBackend::start();
    let settings = configure(settings(&mock));
    let mut gateway = Gateway::start(&good_config(&settings).build());
    let config_path = gateway.config_path().to_path_buf();

    let traffic = send_mixed_traffic(gateway.addr(), &config_path, &settings);
    assert_metrics_clean(gateway.metrics_addr(), &traffic);
    stop(&mut gateway);

    let log = gateway.log_text();
    assert!(
        log.contains(CLIENT_ID),
        "{place} never names {CLIENT_ID}, so it has no access lines and the check below would prove nothing"
    );
    assert_no_secret(&log, &traffic, place);
}

#[test]
fn trace_log_contains_no_key() {
    check_trace_log(|settings| settings, "the trace-level log");
}

#[test]
fn json_trace_log_contains_no_key() {
    check_trace_log(
        |settings| settings.set("log.format", "json"),
        "the trace-level JSON log",
    );
}

/// keygate started directly, with an environment that the harness does not
/// set. Dropping it kills the process.
struct GatewayWithEnv {
    child: Child,
    _config_dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl GatewayWithEnv {
    /// Starts keygate on `config_text` with `RUST_LOG` set to `rust_log`, and
    /// waits until `GET /nps/health` on `addr` returns 200.
    fn start(config_text: &str, addr: SocketAddr, rust_log: &str) -> GatewayWithEnv {
        let (config_dir, config_path) = write_config_file(config_text);
        let log_path = test_logs_dir().join(format!("no_secrets-rust-log-{}.log", addr.port()));
        let log_file = File::create(&log_path)
            .unwrap_or_else(|err| panic!("failed to create {}: {err}", log_path.display()));
        let log_file_for_stderr = log_file
            .try_clone()
            .expect("failed to duplicate the log file handle");
        println!("keygate log: {}", log_path.display());
        let child = Command::new(KEYGATE_BIN)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file_for_stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to run {KEYGATE_BIN}: {err}"));
        let mut gateway = GatewayWithEnv {
            child,
            _config_dir: config_dir,
            config_path,
            log_path,
        };
        gateway.wait_until_healthy(addr);
        gateway
    }

    fn wait_until_healthy(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("keygate exited with {status} before its health check passed");
            }
            let healthy = try_request(addr, "GET", "/nps/health", &[], b"")
                .is_ok_and(|response| response.status == 200);
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET /nps/health on {addr} did not return 200 within {START_TIMEOUT:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops keygate with SIGTERM, waits for it to exit, and returns its log.
    fn stop_and_read_log(&mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|err| panic!("failed to run kill -TERM {pid}: {err}"));
        assert!(status.success(), "kill -TERM {pid} failed with {status}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
        self.kill();
        let bytes = std::fs::read(&self.log_path)
            .unwrap_or_else(|err| panic!("failed to read {}: {err}", self.log_path.display()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // An error means that the process exited after the check.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for GatewayWithEnv {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn rust_log_trace_contains_no_key() {
    let mock = MockBackend::start();
    // The file sets the level to error, so INFO lines in the log show that
    // RUST_LOG=trace took effect.
    let settings = settings(&mock).set("log.level", "error");
    let config = good_config(&settings);
    let mut gateway = GatewayWithEnv::start(&config.build(), config.listen_addr(), "trace");
    let config_path = gateway.config_path.clone();

    let traffic = send_mixed_traffic(config.listen_addr(), &config_path, &settings);
    assert_metrics_clean(config.metrics_addr(), &traffic);
    let log = gateway.stop_and_read_log();

    assert!(
        log.contains("INFO"),
        "the log has no INFO line although RUST_LOG=trace was set, so RUST_LOG did not apply"
    );
    assert_no_secret(&log, &traffic, "the log under RUST_LOG=trace");
}

#[test]
fn responses_contain_no_key() {
    let mock = MockBackend::start();
    let settings = settings(&mock);
    let gateway = Gateway::start(&good_config(&settings).build());
    let config_path = gateway.config_path().to_path_buf();

    let traffic = send_mixed_traffic(gateway.addr(), &config_path, &settings);
    for exchange in traffic
        .exchanges
        .iter()
        .filter(|exchange| !exchange.may_show_key)
    {
        let response = &exchange.response;
        let mut text = response.text();
        for (name, value) in &response.headers {
            text.push_str(&format!("\n{name}: {value}"));
        }
        assert_no_secret(
            &text,
            &traffic,
            &format!("the response to {}", exchange.description),
        );
    }

    let forbidden: Vec<&Exchange> = traffic
        .exchanges
        .iter()
        .filter(|exchange| exchange.response.status == 403)
        .collect();
    assert!(
        forbidden.len() > 1,
        "the traffic has fewer than two 403 responses"
    );
    for exchange in &forbidden {
        assert_eq!(
            exchange.response.body, forbidden[0].response.body,
            "the 403 body for {} differs from the one for {}",
            exchange.description, forbidden[0].description
        );
    }
}
