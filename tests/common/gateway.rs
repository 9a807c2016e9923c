//! The keygate binary, run as a child process.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_yaml::Value;
use tempfile::TempDir;

use super::http::try_request;

/// Path of the keygate binary that cargo built for this test run.
pub const KEYGATE_BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// Maximum time that [`Gateway::start`] waits for the health check to pass.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time that [`Gateway::spawn_raw`] lets a command run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Maximum time that [`Gateway::spawn_raw`] waits for the output pipes to
/// close after the process has exited or was killed.
const OUTPUT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Number of log lines that a start failure shows.
const LOG_TAIL_LINES: usize = 40;

/// Name of the configuration file in the temporary folder.
const CONFIG_FILE_NAME: &str = "application.yml";

/// Counter that makes log file names unique within this test process.
static LOG_FILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Failure to start keygate, with its log.
pub struct StartError {
    pub reason: String,
    pub log_path: PathBuf,
    /// Whole log of the process, unredacted, for tests that check it.
    pub log: String,
    secrets: Vec<String>,
}

impl fmt::Display for StartError {
    /// Formats the reason and the last log lines, with the configured keys
    /// and API keys replaced by `[REDACTED]`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = log_tail(&self.log, LOG_TAIL_LINES);
        write!(
            formatter,
            "{}\nlast {LOG_TAIL_LINES} lines of {}:\n{}",
            self.reason,
            self.log_path.display(),
            super::redact(&tail, &self.secrets)
        )
    }
}

impl fmt::Debug for StartError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// Settings of a configuration text that the harness needs.
struct ConfigSummary {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    health_path: String,
    /// Set when `gateway.tls` is, so the listeners speak HTTPS.
    tls: bool,
    /// Keys, and the API keys built from them, to redact from printed logs.
    secrets: Vec<String>,
}

impl ConfigSummary {
    fn parse(config_text: &str) -> Result<ConfigSummary, String> {
        let config: Value = serde_yaml::from_str(config_text).map_err(|err| {
            format!(
                "configuration is not valid YAML ({err}); \
                 run keygate on it with Gateway::spawn_raw to test invalid files"
            )
        })?;
        let gateway = config.get("gateway");
        let addr = gateway
            .and_then(|gateway| gateway.get("listen"))
            .and_then(super::config::first_addr)
            .ok_or("configuration has no gateway.listen address to wait for")?;
        let metrics_addr = gateway
            .and_then(|gateway| gateway.get("metrics"))
            .and_then(|metrics| metrics.get("listen"))
            .and_then(super::config::first_addr);
        let context_path = gateway
            .and_then(|gateway| gateway.get("contextPath"))
            .and_then(Value::as_str)
            .unwrap_or("/nps");
        let health_path = format!("{}/health", context_path.trim_end_matches('/'));

        let tls = gateway.is_some_and(|gateway| gateway.get("tls").is_some());

        Ok(ConfigSummary {
            addr,
            metrics_addr,
            health_path,
            tls,
            secrets: config_secrets(&config),
        })
    }
}

/// Returns every client key and the API key built from it.
fn config_secrets(config: &Value) -> Vec<String> {
    let Some(clients) = config.get("allowedClients").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    for client in clients {
        let Some(key) = client.get("key").and_then(Value::as_str) else {
            continue;
        };
        let client_id = client.get("clientId").and_then(Value::as_str).unwrap_or("");
        secrets.push(key.to_owned());
        secrets.push(super::api_key(client_id, key));
    }
    secrets
}

/// What [`Gateway::start_with`] waits for before it returns.
#[derive(Clone, Copy, Debug)]
pub enum Ready<'a> {
    /// The health check and the metrics listener return 200, as
    /// [`Gateway::start`] waits. With `gateway.tls`, the listen address
    /// accepts connections instead.
    Serving,
    /// The log contains this text, for a keygate that shares its ports with
    /// another one, whose health check proves nothing about it.
    Logged(&'a str),
}

/// Running keygate process. Dropping it kills the process with SIGKILL and
/// waits for it to exit.
pub struct Gateway {
    child: Child,
    /// Folder of the configuration file, deleted on drop.
    _config_dir: TempDir,
    config_path: PathBuf,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    log_path: PathBuf,
    secrets: Mutex<Vec<String>>,
}

impl Gateway {
    /// Starts keygate on `config_text` and waits until its health check
    /// returns 200. Panics with the end of the log when it does not.
    pub fn start(config_text: &str) -> Gateway {
        Self::try_start(config_text).unwrap_or_else(|err| panic!("keygate failed to start: {err}"))
    }

    /// Writes `config_text` to `application.yml` in a temporary folder, runs
    /// `keygate --config <file>` and waits up to [`START_TIMEOUT`] until
    /// `GET {contextPath}/health` on the first listen address returns 200.
    ///
    /// Standard output and error go to a new file in `target/test-logs`.
    /// RUST_LOG is removed from the environment, so the configured log level
    /// applies.
    pub fn try_start(config_text: &str) -> Result<Gateway, StartError> {
        Self::try_start_with(config_text, &[], Ready::Serving)
    }

    /// Starts `keygate --config <file> <args>` like [`Gateway::start`] and
    /// waits until `ready` holds. Panics with the end of the log when it
    /// does not.
    pub fn start_with(config_text: &str, args: &[&str], ready: Ready<'_>) -> Gateway {
        Self::try_start_with(config_text, args, ready)
            .unwrap_or_else(|err| panic!("keygate failed to start: {err}"))
    }

    /// Starts `keygate --config <file> <args>` like [`Gateway::try_start`]
    /// and waits up to [`START_TIMEOUT`] until `ready` holds.
    pub fn try_start_with(
        config_text: &str,
        args: &[&str],
        ready: Ready<'_>,
    ) -> Result<Gateway, StartError> {
        let summary = ConfigSummary::parse(config_text).unwrap_or_else(|err| panic!("{err}"));
        let (config_dir, config_path) = write_config_file(config_text);
        let log_path = new_log_path();
        let log_file = File::create(&log_path).unwrap_or_else(|err| {
            panic!("failed to create log file {}: {err}", log_path.display())
        });
        let log_file_for_stderr = log_file
            .try_clone()
            .expect("failed to duplicate the log file handle");
        println!("keygate log: {}", log_path.display());

        let child = Command::new(KEYGATE_BIN)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file_for_stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to run {KEYGATE_BIN}: {err}"));

        let mut gateway = Gateway {
            child,
            _config_dir: config_dir,
            config_path,
            addr: summary.addr,
            metrics_addr: summary.metrics_addr,
            log_path,
            secrets: Mutex::new(summary.secrets),
        };
        let result = match ready {
            Ready::Serving if summary.tls => gateway.wait_until_listening(),
            Ready::Serving => gateway.wait_until_healthy(&summary.health_path),
            Ready::Logged(needle) => gateway.wait_until_logged(needle),
        };
        match result {
            Ok(()) => Ok(gateway),
            Err(reason) => Err(gateway.start_error(reason)),
        }
    }

    /// Polls the log every [`POLL_INTERVAL`] until it contains `needle`, the
    /// process exits or [`START_TIMEOUT`] passes. Kills the process on
    /// timeout.
    fn wait_until_logged(&mut self, needle: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "keygate exited with {status} before it logged {needle:?}"
                ));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "keygate did not log {needle:?} within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls the health check every [`POLL_INTERVAL`] until it returns 200
    /// and the metrics listener returns 200, the process exits or
    /// [`START_TIMEOUT`] passes. Kills the process on
    /// timeout.
    fn wait_until_healthy(&mut self, health_path: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "keygate exited with {status} before GET {health_path} on {} returned 200",
                    self.addr
                ));
            }
            // pingora binds each service on its own runtime, so the metrics
            // listener can come up a moment after the gateway returns 200.
            let metrics_up = self.metrics_addr.is_none_or(|metrics| {
                try_request(metrics, "GET", "/metrics", &[], b"")
                    .is_ok_and(|response| response.status == 200)
            });
            let last_probe = match try_request(self.addr, "GET", health_path, &[], b"") {
                Ok(response) if response.status == 200 && metrics_up => return Ok(()),
                Ok(response) if response.status == 200 => "metrics listener not up yet".to_string(),
                Ok(response) => format!("last health check returned {}", response.status),
                Err(err) => format!("last health check failed: {err}"),
            };
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "GET {health_path} on {} did not return 200 within {START_TIMEOUT:?} ({last_probe})",
                    self.addr
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits like [`Gateway::wait_until_healthy`] for a gateway whose
    /// listeners speak HTTPS, which this plain client cannot: until the
    /// listen address accepts TCP connections and, when configured, the
    /// metrics listener returns 200.
    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "keygate exited with {status} before {} accepted connections",
                    self.addr
                ));
            }
            let listening =
                std::net::TcpStream::connect_timeout(&self.addr, POLL_INTERVAL * 4).is_ok();
            let metrics_up = self.metrics_addr.is_none_or(|metrics| {
                try_request(metrics, "GET", "/metrics", &[], b"")
                    .is_ok_and(|response| response.status == 200)
            });
            if listening && metrics_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{} did not accept connections within {START_TIMEOUT:?}",
                    self.addr
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn start_error(&self, reason: String) -> StartError {
        StartError {
            reason,
            log_path: self.log_path.clone(),
            log: self.log_text(),
            secrets: self.secrets(),
        }
    }

    /// Returns the first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns `metrics.listen`. Panics when the configuration has none.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .expect("the configuration has no gateway.metrics.listen address")
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the configuration file in one rename, so keygate never reads
    /// a half-written file. [`Gateway::addr`] and
    /// [`Gateway::metrics_addr`] keep the addresses of the first
    /// configuration.
    pub fn rewrite_config(&self, config_text: &str) {
        let temporary = self.config_path.with_extension("yml.tmp");
        std::fs::write(&temporary, config_text)
            .unwrap_or_else(|err| panic!("failed to write {}: {err}", temporary.display()));
        std::fs::rename(&temporary, &self.config_path).unwrap_or_else(|err| {
            panic!(
                "failed to rename {} to {}: {err}",
                temporary.display(),
                self.config_path.display()
            )
        });

        if let Ok(config) = serde_yaml::from_str::<Value>(config_text) {
            let mut secrets = self
                .secrets
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            secrets.extend(config_secrets(&config));
        }
    }

    /// Returns everything keygate wrote to standard output and error so far.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log_path)
            .unwrap_or_else(|err| panic!("failed to read {}: {err}", self.log_path.display()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the log contains `needle` and returns whether it did
    /// within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Returns the last `lines` lines of the log with configured keys and
    /// API keys replaced by `[REDACTED]`, for assertion messages.
    pub fn redacted_log_tail(&self, lines: usize) -> String {
        super::redact(&log_tail(&self.log_text(), lines), &self.secrets())
    }

    fn secrets(&self) -> Vec<String> {
        self.secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends a signal such as `"TERM"` or `"HUP"` to the keygate process
    /// with `kill -<signal> <pid>`.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap_or_else(|err| panic!("failed to run kill -{signal} {pid}: {err}"));
        assert!(
            status.success(),
            "kill -{signal} {pid} failed with {status}"
        );
    }

    /// Returns the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|err| {
            panic!("failed to check keygate process {}: {err}", self.child.id())
        })
    }

    /// Waits up to `timeout` for the process to exit and returns its status,
    /// or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills the process with SIGKILL, unless it has exited, and waits for it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            // An error means the process exited after the check.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Runs `keygate <args>` with standard input closed and returns its
    /// output. Panics when it runs longer than [`CLI_TIMEOUT`].
    pub fn spawn_raw(args: &[&str]) -> Output {
        Self::spawn_raw_with_timeout(args, CLI_TIMEOUT)
    }

    /// Runs `keygate <args>` like [`Gateway::spawn_raw`], killing it and
    /// panicking after `timeout`.
    pub fn spawn_raw_with_timeout(args: &[&str], timeout: Duration) -> Output {
        let mut child = Command::new(KEYGATE_BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("failed to run {KEYGATE_BIN}: {err}"));
        let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
        let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));

        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .expect("failed to check the keygate process")
            {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };

        let Some(status) = status else {
            let stderr = stderr
                .recv_timeout(OUTPUT_CLOSE_TIMEOUT)
                .unwrap_or_default();
            // Only the subcommand is named, because later arguments may be keys.
            panic!(
                "keygate {} ... did not exit within {timeout:?}; stderr:\n{}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&stderr)
            );
        };
        Output {
            status,
            stdout: collect_output(&stdout, "standard output"),
            stderr: collect_output(&stderr, "standard error"),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `config_text` as `application.yml` in a new temporary folder and
/// returns the folder, which deletes itself on drop, and the file path.
pub fn write_config_file(config_text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("keygate-test-")
        .tempdir()
        .expect("failed to create a temporary folder for the configuration");
    let path = dir.path().join(CONFIG_FILE_NAME);
    std::fs::write(&path, config_text)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", path.display()));
    (dir, path)
}

/// Returns a new log path `target/test-logs/<test crate>-<test>-<n>.log`.
/// libtest names each test's thread after the test.
fn new_log_path() -> PathBuf {
    let thread = std::thread::current();
    let test_name: String = thread
        .name()
        .unwrap_or("unnamed")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let counter = LOG_FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let file_name = format!("{}-{test_name}-{counter}.log", env!("CARGO_CRATE_NAME"));
    super::test_logs_dir().join(file_name)
}

/// Reads `pipe` to its end on a new thread and sends the bytes on the
/// returned channel.
fn read_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the output early, and the caller still gets
        // everything read before it.
        let _ = pipe.read_to_end(&mut bytes);
        // The receiver is gone only when the caller has stopped waiting.
        let _ = sender.send(bytes);
    });
    receiver
}

/// Waits up to [`OUTPUT_CLOSE_TIMEOUT`] for a pipe reader to finish. A child
/// process of keygate that inherited the pipe can keep it open after keygate
/// exits, so the wait is bounded.
fn collect_output(receiver: &Receiver<Vec<u8>>, stream_name: &str) -> Vec<u8> {
    receiver
        .recv_timeout(OUTPUT_CLOSE_TIMEOUT)
        .unwrap_or_else(|err| {
            panic!("{stream_name} of keygate was not closed within {OUTPUT_CLOSE_TIMEOUT:?} after it exited: {err}")
        })
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}
