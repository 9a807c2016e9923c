//! Helpers of the deployment tests: finding the tools that scripts/setup.sh
//! installs, reading the files under deploy/, and running
//! `keygate check-config` on them.
//!
//! A missing tool fails the test with a message naming scripts/setup.sh.
//! The tests install nothing themselves.

// Each test crate uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

/// Path of the keygate binary that cargo built for this test run.
pub const KEYGATE_BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns cargo's target folder, where scripts/setup.sh creates the venv.
pub fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, also when CARGO_TARGET_DIR
    // moves the target folder.
    option_env!("CARGO_TARGET_TMPDIR")
        .and_then(|tmp| Path::new(tmp).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Returns the path of `name` on PATH. Panics with the setup hint when it
/// is not there.
pub fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH; run scripts/setup.sh, which installs it, \
                 then run the tests again"
            )
        })
}

/// Returns the path of `name` in the deployment venv. Panics with the setup
/// hint when the venv or the program is missing.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = target_dir().join("deploy-venv").join("bin").join(name);
    assert!(
        is_executable(&path),
        "{} not found; run scripts/setup.sh, which creates that venv with a pinned \
         kubernetes-validate, then run the tests again",
        path.display()
    );
    path
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `command` and returns its output. Panics when it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("failed to run {command:?}: {err}"))
}

/// Returns standard output and error of a finished command, for messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Reads a file of the repository, by its path from the root.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
}

/// Parses a YAML file of the repository, by its path from the root.
pub fn read_yaml(relative: &str) -> Value {
    parse_yaml(&read_repo_file(relative), relative)
}

pub fn parse_yaml(text: &str, name: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|err| panic!("{name} is not valid YAML: {err}"))
}

/// Follows a path of mapping keys, as in `get(&doc, &["spec", "replicas"])`.
/// Panics with the path when a key is missing.
pub fn get<'a>(value: &'a Value, keys: &[&str]) -> &'a Value {
    let mut current = value;
    for (depth, key) in keys.iter().enumerate() {
        current = current
            .get(*key)
            .unwrap_or_else(|| panic!("missing key {:?} in {value:?}", keys[..=depth].join(".")));
    }
    current
}

/// Returns a string value at `keys`. Panics when it is missing or not a string.
pub fn get_str<'a>(value: &'a Value, keys: &[&str]) -> &'a str {
    get(value, keys)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string in {value:?}", keys.join(".")))
}

/// Returns a sequence at `keys`. Panics when it is missing or not a sequence.
pub fn get_seq<'a>(value: &'a Value, keys: &[&str]) -> &'a [Value] {
    get(value, keys)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list in {value:?}", keys.join(".")))
}

/// Runs `keygate check-config` on a config text, written to a temporary
/// file, and returns the output.
pub fn check_config_text(text: &str) -> Output {
    let dir = tempfile::tempdir().expect("failed to create a temporary folder");
    let path = dir.path().join("application.yml");
    std::fs::write(&path, text)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", path.display()));
    run(Command::new(KEYGATE_BIN)
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG"))
}

/// Returns the port of an `IP:PORT` text.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not IP:PORT"))
}
