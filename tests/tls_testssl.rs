//! The TLS listener checked from the outside by testssl.sh: no protocol
//! below TLS 1.2 is offered, and no weak cipher. pingora's rustls listener
//! chooses both, not keygate's code, so only an outside check shows them.
//!
//! testssl.sh comes from the Debian package `testssl.sh`, which
//! scripts/setup.sh installs. It runs against 127.0.0.1 only, with DNS
//! lookups and every outside check (CRL, OCSP) off.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{path_text, PemDir, TestCa};
use common::{ConfigBuilder, Gateway, MockBackend};
use serde_json::Value;

/// Maximum time one testssl.sh run may take. `-p -s` took 15 to 40 s in test runs.
const TESTSSL_TIMEOUT: Duration = Duration::from_secs(300);

/// Protocols that must not be offered, by their testssl.sh finding id.
const OLD_PROTOCOLS: &[&str] = &["SSLv2", "SSLv3", "TLS1", "TLS1_1"];

/// Cipher categories that must not be offered, by their testssl.sh finding id.
const WEAK_CIPHER_LISTS: &[&str] = &[
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",
];

/// Returns the testssl.sh command: `testssl` as Debian installs it, or `testssl.sh`.
fn testssl_command() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["testssl", "testssl.sh"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "testssl.sh is not installed (neither `testssl` nor `testssl.sh` is on PATH); \
         run scripts/setup.sh, which installs the Debian package testssl.sh"
    );
}

/// Runs testssl.sh with `checks` against `addr` and returns its JSON findings.
fn run_testssl(addr: std::net::SocketAddr, checks: &[&str], dir: &PemDir) -> Vec<Value> {
    let json_path = dir.path().join("testssl.json");
    let mut child = Command::new(testssl_command())
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
        ])
        .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
        .args(checks)
        .arg("--jsonfile")
        .arg(&json_path)
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to run testssl.sh: {err}"));

    let deadline = Instant::now() + TESTSSL_TIMEOUT;
    loop {
        if child
            .try_wait()
            .unwrap_or_else(|err| panic!("failed to check testssl.sh: {err}"))
            .is_some()
        {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("testssl.sh did not finish within {TESTSSL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("failed to read the output of testssl.sh: {err}"));
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|err| {
        panic!(
            "testssl.sh wrote no JSON file ({err}); it exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    match serde_json::from_str(&text) {
        Ok(Value::Array(findings)) => findings,
        other => panic!("testssl.sh JSON is not a list of findings: {other:?}\n{text}"),
    }
}

/// Returns the finding text of `id`, or panics naming the ids that are there.
fn finding<'a>(findings: &'a [Value], id: &str) -> &'a str {
    findings
        .iter()
        .find(|entry| entry["id"] == id)
        .and_then(|entry| entry["finding"].as_str())
        .unwrap_or_else(|| {
            let ids: Vec<&str> = findings
                .iter()
                .filter_map(|entry| entry["id"].as_str())
                .collect();
            panic!("testssl.sh reported no finding {id}; it reported {ids:?}")
        })
}

#[test]
fn testssl_reports_only_strong_tls() {
    let mock = MockBackend::start();
    let ca = TestCa::new("keygate test CA");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let dir = PemDir::new();
    let cert = dir.write("server.pem", &server.cert_pem);
    let key = dir.write("server.key", &server.key_pem);
    let text = ConfigBuilder::new(mock.addr())
        .set_string("tls.cert", &path_text(&cert))
        .set_string("tls.key", &path_text(&key))
        .set("log.level", "info")
        .build();
    let gateway = Gateway::start(&text);

    let findings = run_testssl(gateway.addr(), &["-p", "-s"], &dir);

    for id in OLD_PROTOCOLS {
        let text = finding(&findings, id);
        assert!(text.contains("not offered"), "{id} is offered: {text}");
    }
    for id in ["TLS1_2", "TLS1_3"] {
        let text = finding(&findings, id);
        assert!(text.starts_with("offered"), "{id} is not offered: {text}");
    }
    for id in WEAK_CIPHER_LISTS {
        let text = finding(&findings, id);
        assert!(text.contains("not offered"), "{id} is offered: {text}");
    }
    let serious: Vec<String> = findings
        .iter()
        .filter(|entry| matches!(entry["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .map(|entry| format!("{}: {}", entry["id"], entry["finding"]))
        .collect();
    assert!(
        serious.is_empty(),
        "testssl.sh rated findings HIGH or CRITICAL: {serious:?}"
    );
}
