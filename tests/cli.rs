//! keygate's command line: help and version, `check-config`,
//! `generate-client`, and how the gateway exits when it cannot start.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_yaml::Value;

use common::gateway::write_config_file;
use common::{free_addr, ConfigBuilder, Gateway};

const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
const EXTRA_KEY: &str = "0b6c1f5e9a2d4c7b8e3f1a0d5c9b7e2f4a6d8c0b1e3f5a7c9d2b4e6f8a0c1d3e";

/// Maximum time that keygate may take to exit when it cannot start.
const START_FAILURE_BOUND: Duration = Duration::from_secs(10);

fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Returns standard output and standard error together, for checks that do
/// not care which stream a message went to.
fn all_output(output: &Output) -> String {
    format!("{}{}", stdout_text(output), stderr_text(output))
}

fn describe(output: &Output) -> String {
    format!(
        "exit status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout_text(output),
        stderr_text(output)
    )
}

fn config_builder() -> ConfigBuilder {
    ConfigBuilder::new(free_addr())
}

/// Returns the 1-based number of the first line of `text` that satisfies
/// `matches`. Panics when no line does.
fn line_number(text: &str, matches: impl Fn(&str) -> bool) -> usize {
    let index = text
        .lines()
        .position(matches)
        .unwrap_or_else(|| panic!("no matching line in:\n{text}"));
    index + 1
}

/// Returns whether `text` contains `<path>:<line>:<column>` for the given
/// line and any column number.
fn names_place(text: &str, path: &Path, line: usize) -> bool {
    let prefix = format!("{}:{line}:", path.display());
    text.match_indices(&prefix).any(|(start, _)| {
        text[start + prefix.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Checks a generate-client snippet: three lines, a header value that
/// decodes to `clientId:key`, and YAML that reads back as one entry with
/// exactly `client_id` and a 64-hex key.
fn assert_snippet(text: &str, client_id: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "snippet must have three lines:\n{text}");
    let header_value = lines[0]
        .strip_prefix("# X-Api-Key: ")
        .unwrap_or_else(|| panic!("first line is not '# X-Api-Key: <value>': {:?}", lines[0]));
    assert!(
        lines[1].starts_with("- clientId: "),
        "second line is not '- clientId: <id>': {:?}",
        lines[1]
    );

    let entries: Value = serde_yaml::from_str(text)
        .unwrap_or_else(|err| panic!("snippet is not valid YAML ({err}):\n{text}"));
    assert_eq!(
        entries[0]["clientId"],
        Value::String(client_id.to_owned()),
        "clientId read back from the snippet"
    );
    let key = entries[0]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("key does not read back as a string:\n{text}"));
    assert_eq!(key.len(), 64, "generated key length");
    assert!(
        key.bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)),
        "generated key is not lowercase hex: {key:?}"
    );
    let decoded = STANDARD
        .decode(header_value)
        .unwrap_or_else(|err| panic!("X-Api-Key value is not base64 ({err}): {header_value:?}"));
    assert_eq!(
        String::from_utf8(decoded).expect("decoded X-Api-Key value is UTF-8"),
        format!("{client_id}:{key}"),
        "X-Api-Key value must decode to clientId:key"
    );
}

#[test]
fn help_and_version_exit_zero() {
    let cases: [(&[&str], &str); 4] = [
        (&["--help"], "check-config"),
        (&["--version"], env!("CARGO_PKG_VERSION")),
        (&["check-config", "--help"], "--config"),
        (&["generate-client", "--help"], "Usage"),
    ];
    for (args, expected) in cases {
        let output = Gateway::spawn_raw(args);
        assert!(
            output.status.success(),
            "keygate {args:?} must exit 0: {}",
            describe(&output)
        );
        assert!(
            stdout_text(&output).contains(expected),
            "keygate {args:?} must print {expected:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn unknown_flag_exits_nonzero() {
    for flag in ["--no-such-flag", "-Z"] {
        let output = Gateway::spawn_raw(&[flag]);
        assert!(
            !output.status.success(),
            "keygate {flag} must fail: {}",
            describe(&output)
        );
        assert!(
            stderr_text(&output).contains(flag),
            "the error must name {flag}: {}",
            describe(&output)
        );
    }
}

#[test]
fn check_config_prints_summary() {
    let text = config_builder()
        .clients(&[("karolin", KEY), ("extra", EXTRA_KEY)])
        .build();
    let (_dir, path) = write_config_file(&text);
    let path_text = path.display().to_string();

    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text]);
    assert!(
        output.status.success(),
        "check-config on a good file: {}",
        describe(&output)
    );
    let stdout = stdout_text(&output);
    let client_line = stdout
        .lines()
        .find(|line| line.contains("allowedClients"))
        .unwrap_or_else(|| panic!("the summary does not mention allowedClients:\n{stdout}"));
    assert!(
        client_line.split_whitespace().any(|word| word == "2"),
        "the summary must give the client count 2: {client_line:?}"
    );
    for key in [KEY, EXTRA_KEY] {
        assert!(
            !all_output(&output).contains(key),
            "check-config must not print a configured key"
        );
    }
}

#[test]
fn check_config_warns_on_short_key() {
    let short_key = "short-key-value";
    let text = config_builder().client("shorty", short_key).build();
    let (_dir, path) = write_config_file(&text);
    let path_text = path.display().to_string();

    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text]);
    assert!(
        output.status.success(),
        "a short key loads with a warning: {}",
        describe(&output)
    );
    let warning = all_output(&output)
        .lines()
        .find(|line| line.to_ascii_lowercase().contains("warn"))
        .map(str::to_owned);
    let Some(warning) = warning else {
        panic!(
            "check-config printed no warning for a short key: {}",
            describe(&output)
        );
    };
    assert!(
        warning.contains("shorty"),
        "the warning must name the client: {warning:?}"
    );
    assert!(
        !all_output(&output).contains(short_key),
        "check-config must not print the short key"
    );
}

#[test]
fn check_config_names_error_place() {
    let unknown_key = config_builder()
        .client("karolin", KEY)
        .gateway_line("upstrem: 'http://127.0.0.1:20280'")
        .build();
    let unknown_key_line = line_number(&unknown_key, |line| line.contains("upstrem"));

    let tab = config_builder().client("karolin", KEY).build().replacen(
        "\n  - clientId:",
        "\n\t- clientId:",
        1,
    );
    let tab_line = line_number(&tab, |line| line.starts_with('\t'));

    for (name, text, line) in [
        ("unknown gateway key", unknown_key, unknown_key_line),
        ("tab indentation", tab, tab_line),
    ] {
        let (_dir, path) = write_config_file(&text);
        let path_text = path.display().to_string();
        let output = Gateway::spawn_raw(&["check-config", "--config", &path_text]);
        assert!(
            !output.status.success(),
            "{name}: check-config must fail: {}",
            describe(&output)
        );
        assert!(
            names_place(&stderr_text(&output), &path, line),
            "{name}: the error must name {path_text}:{line}:<column>: {}",
            describe(&output)
        );
    }
}

#[test]
fn check_config_missing_file_named() {
    let dir = tempfile::tempdir().expect("failed to create a temporary folder");
    let path = dir.path().join("no-such-config.yml");
    let path_text = path.display().to_string();

    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text]);
    assert!(
        !output.status.success(),
        "check-config on a missing file must fail: {}",
        describe(&output)
    );
    assert!(
        stderr_text(&output).contains(&path_text),
        "the error must name {path_text}: {}",
        describe(&output)
    );
}

#[test]
fn generate_client_prints_snippet() {
    let output = Gateway::spawn_raw(&["generate-client", "karolin"]);
    assert!(
        output.status.success(),
        "generate-client karolin: {}",
        describe(&output)
    );
    assert_snippet(&stdout_text(&output), "karolin");
    assert!(
        stdout_text(&output).contains("\n- clientId: karolin\n"),
        "a plain clientId is written unquoted: {}",
        stdout_text(&output)
    );

    let again = Gateway::spawn_raw(&["generate-client", "karolin"]);
    assert_ne!(
        stdout_text(&again),
        stdout_text(&output),
        "two runs printed the same key"
    );
}

#[test]
fn generate_client_quotes_yaml_lookalikes() {
    for client_id in ["no", "0123", "true", "café"] {
        let output = Gateway::spawn_raw(&["generate-client", client_id]);
        assert!(
            output.status.success(),
            "generate-client {client_id}: {}",
            describe(&output)
        );
        let snippet = stdout_text(&output);
        assert_snippet(&snippet, client_id);
        assert!(
            snippet.contains(&format!("- clientId: \"{client_id}\""))
                || snippet.contains(&format!("- clientId: '{client_id}'")),
            "clientId {client_id:?} must be quoted:\n{snippet}"
        );
    }
}

#[test]
fn generate_client_configured_id_needs_rotate() {
    let text = config_builder().client("karolin", KEY).build();
    let (_dir, path) = write_config_file(&text);
    let path_text = path.display().to_string();

    let duplicate = Gateway::spawn_raw(&["generate-client", "--config", &path_text, "karolin"]);
    assert_eq!(duplicate.status.code(), Some(2), "{}", describe(&duplicate));
    assert!(
        stdout_text(&duplicate).is_empty(),
        "{}",
        describe(&duplicate)
    );
    let message = stderr_text(&duplicate);
    assert!(message.contains("already configured"), "{message}");
    assert!(message.contains(&path_text), "{message}");
    assert!(message.contains("--rotate"), "{message}");

    let rotated = Gateway::spawn_raw(&[
        "generate-client",
        "--config",
        &path_text,
        "--rotate",
        "karolin",
    ]);
    assert!(rotated.status.success(), "{}", describe(&rotated));
    assert!(
        stdout_text(&rotated).contains("- key: "),
        "{}",
        describe(&rotated)
    );

    let other = Gateway::spawn_raw(&["generate-client", "--config", &path_text, "martin"]);
    assert!(other.status.success(), "{}", describe(&other));
    assert_snippet(&stdout_text(&other), "martin");
}

#[test]
fn generate_client_rejects_bad_id() {
    let too_long = "a".repeat(129);
    for client_id in ["a:b", "a b", "", too_long.as_str()] {
        let output = Gateway::spawn_raw(&["generate-client", client_id]);
        assert!(
            !output.status.success(),
            "generate-client {client_id:?} must fail: {}",
            describe(&output)
        );
        assert!(
            stdout_text(&output).is_empty(),
            "generate-client {client_id:?} must print no snippet: {}",
            describe(&output)
        );
        assert!(
            stderr_text(&output).contains("clientId"),
            "the error for {client_id:?} must say that the clientId is invalid: {}",
            describe(&output)
        );
    }
}

#[test]
fn occupied_port_exits_with_message() {
    for setting in ["listen", "metrics.listen"] {
        let occupying_listener =
            TcpListener::bind("127.0.0.1:0").expect("failed to bind 127.0.0.1:0");
        let occupied_addr = occupying_listener
            .local_addr()
            .expect("a bound listener has an address");
        let text = config_builder()
            .client("karolin", KEY)
            .set_string(setting, &occupied_addr.to_string())
            .build();
        let (_dir, path) = write_config_file(&text);
        let path_text = path.display().to_string();

        let output =
            Gateway::spawn_raw_with_timeout(&["--config", &path_text], START_FAILURE_BOUND);
        let printed = all_output(&output);
        assert!(
            !output.status.success(),
            "{setting} on occupied {occupied_addr}: keygate must exit non-zero: {}",
            describe(&output)
        );
        assert!(
            printed.contains(&occupied_addr.to_string()),
            "{setting} on occupied {occupied_addr}: the message must name the address: {}",
            describe(&output)
        );
        assert!(
            !printed.contains("panicked"),
            "{setting} on occupied {occupied_addr}: keygate panicked: {}",
            describe(&output)
        );
        drop(occupying_listener);
    }
}

#[test]
fn invalid_config_exits_with_file_named() {
    let unknown_key = config_builder()
        .client("karolin", KEY)
        .gateway_line("hideCredential: true")
        .build();
    let no_clients = config_builder().build().replace("allowedClients: []\n", "");

    for (name, text) in [
        ("unknown gateway key", unknown_key),
        ("no allowedClients", no_clients),
    ] {
        let (_dir, path) = write_config_file(&text);
        let path_text = path.display().to_string();
        let output =
            Gateway::spawn_raw_with_timeout(&["--config", &path_text], START_FAILURE_BOUND);
        assert!(
            !output.status.success(),
            "{name}: keygate must exit non-zero: {}",
            describe(&output)
        );
        assert!(
            stderr_text(&output).contains(&path_text),
            "{name}: the error must name {path_text}: {}",
            describe(&output)
        );
        assert!(
            !all_output(&output).contains(KEY),
            "{name}: the error must not print a configured key"
        );
    }
}
