//! Checks of the container files: docker-compose.yml as `docker-compose
//! config` parses it (no Docker engine needed), the compose config of
//! keygate, the Prometheus config, and the Dockerfile with its
//! .dockerignore. No image is built and no container runs.

mod deploy_common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use serde_yaml::Value;

use deploy_common::{
    check_config_text, describe, find_tool, get, get_seq, get_str, parse_yaml, port_of,
    read_repo_file, read_yaml, repo_root, run,
};

const COMPOSE_CONFIG: &str = "deploy/compose/application.yml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

/// Where the compose file mounts deploy/compose, and the config in it.
const COMPOSE_CONFIG_IN_CONTAINER: &str = "/app/compose/application.yml";

/// Returns docker-compose.yml as `docker-compose config` resolves it: paths
/// made absolute, variables substituted with their defaults.
fn compose() -> &'static Value {
    static COMPOSE: OnceLock<Value> = OnceLock::new();
    COMPOSE.get_or_init(|| {
        let docker_compose = find_tool("docker-compose");
        let output = run(Command::new(docker_compose)
            .args(["-f", "docker-compose.yml", "config"])
            .current_dir(repo_root())
            // Variables from the caller's shell would change the result.
            .env_remove("KEYGATE_CONFIG")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME"));
        assert!(
            output.status.success(),
            "docker-compose config rejected docker-compose.yml:\n{}",
            describe(&output)
        );
        parse_yaml(
            &String::from_utf8_lossy(&output.stdout),
            "docker-compose config output",
        )
    })
}

fn service(name: &str) -> &'static Value {
    get(compose(), &["services", name])
}

/// A published port, from either the short or the long compose syntax.
#[derive(Debug, PartialEq, Eq)]
struct PublishedPort {
    host_ip: Option<String>,
    published: u16,
    target: u16,
}

fn published_ports(service: &Value) -> Vec<PublishedPort> {
    let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    ports.iter().map(parse_port).collect()
}

fn parse_port(entry: &Value) -> PublishedPort {
    if let Some(text) = entry.as_str() {
        // [HOST_IP:]PUBLISHED:TARGET[/PROTOCOL]
        let without_protocol = text.split('/').next().unwrap_or(text);
        let parts: Vec<&str> = without_protocol.split(':').collect();
        let number = |part: &str| {
            part.parse::<u16>()
                .unwrap_or_else(|_| panic!("port entry {text:?} has no port number in {part:?}"))
        };
        return match parts.as_slice() {
            [published, target] => PublishedPort {
                host_ip: None,
                published: number(published),
                target: number(target),
            },
            [host_ip, published, target] => PublishedPort {
                host_ip: Some((*host_ip).to_owned()),
                published: number(published),
                target: number(target),
            },
            _ => panic!("port entry {text:?} is not [HOST_IP:]PUBLISHED:TARGET"),
        };
    }
    let number = |key: &str| {
        let value = get(entry, &[key]);
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("port entry {entry:?} has an invalid {key}"))
    };
    PublishedPort {
        host_ip: entry
            .get("host_ip")
            .and_then(Value::as_str)
            .map(str::to_owned),
        published: number("published"),
        target: number("target"),
    }
}

/// A volume mount, from either the short or the long compose syntax.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

fn mounts(service: &Value) -> BTreeMap<String, Mount> {
    let Some(volumes) = service.get("volumes").and_then(Value::as_sequence) else {
        return BTreeMap::new();
    };
    volumes
        .iter()
        .map(|entry| {
            let mount = parse_mount(entry);
            (mount.target.clone(), mount)
        })
        .collect()
}

fn parse_mount(entry: &Value) -> Mount {
    if let Some(text) = entry.as_str() {
        let parts: Vec<&str> = text.split(':').collect();
        return match parts.as_slice() {
            [source, target] => Mount {
                source: (*source).to_owned(),
                target: (*target).to_owned(),
                read_only: false,
            },
            [source, target, mode] => Mount {
                source: (*source).to_owned(),
                target: (*target).to_owned(),
                read_only: mode.split(',').any(|option| option == "ro"),
            },
            _ => panic!("volume entry {text:?} is not SOURCE:TARGET[:MODE]"),
        };
    }
    Mount {
        source: get_str(entry, &["source"]).to_owned(),
        target: get_str(entry, &["target"]).to_owned(),
        read_only: entry
            .get("read_only")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// Returns the absolute path of a folder of the repository, as
/// `docker-compose config` writes mount sources.
fn repo_path(relative: &str) -> String {
    repo_root().join(relative).to_string_lossy().into_owned()
}

fn compose_keygate_config() -> Value {
    read_yaml(COMPOSE_CONFIG)
}

fn compose_subnet() -> Ipv4Net {
    let configs = get_seq(compose(), &["networks", "keygate", "ipam", "config"]);
    assert_eq!(configs.len(), 1, "the keygate network has one subnet");
    let subnet = get_str(&configs[0], &["subnet"]);
    subnet
        .parse()
        .unwrap_or_else(|err| panic!("subnet {subnet:?} is not an IPv4 block: {err}"))
}

#[test]
fn compose_has_three_services() {
    let services = get(compose(), &["services"])
        .as_mapping()
        .expect("services is a mapping");
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();

    assert_eq!(names, ["keygate", "nps", "prometheus"]);
}

#[test]
fn compose_keygate_publishes_gateway_only() {
    let ports = published_ports(service("keygate"));

    assert_eq!(
        ports,
        [PublishedPort {
            host_ip: None,
            published: 20200,
            target: 20200,
        }],
        "keygate publishes 20200 and keeps /metrics (20201) inside the project"
    );
}

#[test]
fn compose_keygate_mounts_folders_read_only() {
    let mounts = mounts(service("keygate"));

    for (folder, target) in [
        ("config", "/app/config"),
        ("certificates", "/app/certificates"),
        ("cacerts", "/app/cacerts"),
        ("deploy/compose", "/app/compose"),
    ] {
        let mount = mounts
            .get(target)
            .unwrap_or_else(|| panic!("keygate has no mount at {target}: {mounts:?}"));
        assert_eq!(mount.source, repo_path(folder), "source of {target}");
        assert!(mount.read_only, "{target} is mounted read-only");
        assert!(
            repo_root().join(folder).is_dir(),
            "{folder} is a folder of the repository"
        );
    }
    assert_eq!(mounts.len(), 4, "keygate has no other mount: {mounts:?}");
}

#[test]
fn compose_keygate_runs_compose_config() {
    let command = get_seq(service("keygate"), &["command"]);
    let command: Vec<&str> = command.iter().filter_map(Value::as_str).collect();

    assert_eq!(command, ["--config", COMPOSE_CONFIG_IN_CONTAINER]);
    assert_eq!(
        get_str(service("keygate"), &["build", "target"]),
        "runtime",
        "keygate is built from the Dockerfile's final stage"
    );
}

#[test]
fn compose_nps_shares_keygate_network() {
    let nps = service("nps");
    let upstream = get_str(&compose_keygate_config(), &["gateway", "upstream"]).to_owned();
    let command: Vec<&str> = get_seq(nps, &["command"])
        .iter()
        .filter_map(Value::as_str)
        .collect();

    assert_eq!(get_str(nps, &["network_mode"]), "service:keygate");
    assert_eq!(get_str(nps, &["build", "target"]), "mock");
    assert_eq!(command, ["--listen", "127.0.0.1:20280"]);
    assert_eq!(
        upstream, "http://127.0.0.1:20280",
        "keygate's upstream is the mock on the shared loopback"
    );
    assert!(
        published_ports(nps).is_empty(),
        "the mock publishes nothing"
    );
}

#[test]
fn compose_prometheus_scrapes_keygate() {
    let prometheus = service("prometheus");
    let mounts = mounts(prometheus);
    let config_mount = mounts
        .get("/etc/prometheus")
        .unwrap_or_else(|| panic!("prometheus has no mount at /etc/prometheus: {mounts:?}"));
    let scrape = read_yaml(PROMETHEUS_CONFIG);
    let jobs = get_seq(&scrape, &["scrape_configs"]);
    let targets: Vec<&str> = jobs
        .iter()
        .flat_map(|job| get_seq(job, &["static_configs"]))
        .flat_map(|config| get_seq(config, &["targets"]))
        .filter_map(Value::as_str)
        .collect();
    let keygate_config = compose_keygate_config();
    let metrics_listen = get_str(&keygate_config, &["gateway", "metrics", "listen"]);

    assert_eq!(config_mount.source, repo_path("deploy/prometheus"));
    assert!(config_mount.read_only, "the Prometheus config is read-only");
    assert_eq!(
        published_ports(prometheus),
        [PublishedPort {
            host_ip: Some("127.0.0.1".to_owned()),
            published: 9090,
            target: 9090,
        }],
        "the Prometheus UI has no authentication and is published on loopback only"
    );
    assert_eq!(
        targets,
        [format!("keygate:{}", port_of(metrics_listen)).as_str()]
    );
    assert!(
        metrics_listen.starts_with("0.0.0.0:"),
        "keygate serves /metrics beyond its own loopback: {metrics_listen}"
    );
}

#[test]
fn prometheus_config_passes_promtool() {
    let promtool = find_tool("promtool");
    let output = run(Command::new(promtool)
        .args(["check", "config", PROMETHEUS_CONFIG])
        .current_dir(repo_root()));

    assert!(
        output.status.success(),
        "promtool check config failed:\n{}",
        describe(&output)
    );
}

#[test]
fn compose_admin_range_is_network_subnet() {
    let subnet = compose_subnet();
    let config = compose_keygate_config();
    let allowed: Vec<&str> = get_seq(&config, &["gateway", "adminAllowFrom"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Docker gives a bridge network's first address to its gateway, and
    // connections from the host to a published port arrive from there.
    let gateway_address = subnet
        .hosts()
        .next()
        .expect("the subnet has host addresses");

    assert!(
        allowed.contains(&subnet.to_string().as_str()),
        "adminAllowFrom {allowed:?} contains the compose subnet {subnet}"
    );
    assert!(
        allowed.contains(&"127.0.0.1/32"),
        "loopback stays an admin peer"
    );
    assert!(
        !allowed.iter().any(|block| block.ends_with("/0")),
        "adminAllowFrom allows everyone: {allowed:?}"
    );
    assert!(subnet.contains(&gateway_address));
    assert!(
        !subnet.contains(&Ipv4Addr::new(192, 168, 1, 10)),
        "a LAN address is not an admin peer"
    );
}

#[test]
fn compose_config_passes_check_config() {
    let output = check_config_text(&read_repo_file(COMPOSE_CONFIG));
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(
        output.status.success(),
        "keygate check-config rejected {COMPOSE_CONFIG}:\n{}",
        describe(&output)
    );
    assert!(stdout.contains("allowedClients: 0"), "{stdout}");
    assert!(
        !stdout.contains("warning"),
        "check-config warned about {COMPOSE_CONFIG}:\n{stdout}"
    );
}

#[test]
fn deploy_configs_allow_no_client() {
    let compose_clients = get_seq(&compose_keygate_config(), &["allowedClients"]).len();

    assert_eq!(compose_clients, 0, "{COMPOSE_CONFIG} has a live client");
}

/// One instruction of a Dockerfile, with continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// A build stage: its FROM line, its name and its instructions.
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn arguments(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|instruction| instruction.keyword == keyword)
            .map(|instruction| instruction.arguments.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> &str {
        self.arguments(keyword)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("stage {:?} has no {keyword}", self.name))
    }
}

fn dockerfile_stages() -> Vec<Stage> {
    let text = read_repo_file("Dockerfile");
    let mut logical_lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical_lines.push(std::mem::take(&mut current));
            }
        }
    }

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical_lines {
        let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let arguments = arguments.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = arguments.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    Some((*name).to_owned())
                }
                _ => None,
            };
            stages.push(Stage {
                base: words.first().copied().unwrap_or("").to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(Instruction { keyword, arguments });
        }
    }
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|stage| stage.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the Dockerfile has no stage named {name}"))
}

fn json_words(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|err| panic!("{arguments:?} is not the JSON form: {err}"))
}

#[test]
fn dockerfile_final_stage_runs_keygate() {
    let stages = dockerfile_stages();
    let runtime = stages.last().expect("the Dockerfile has stages");
    let user = runtime.last("USER");
    let uid = user.split(':').next().unwrap_or(user);
    let exposed: Vec<&str> = runtime
        .arguments("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .collect();

    assert_eq!(runtime.name.as_deref(), Some("runtime"));
    assert!(
        runtime.base.contains("-slim") || runtime.base.contains("distroless"),
        "the final image is small: {}",
        runtime.base
    );
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "the final stage runs as a numeric non-root user: {user}"
    );
    assert_eq!(exposed, ["20200", "20201"]);
    assert_eq!(
        json_words(runtime.last("ENTRYPOINT")),
        ["/usr/local/bin/keygate"]
    );
    assert_eq!(
        json_words(runtime.last("CMD")),
        ["--config", "/app/config/application.yml"]
    );
}

#[test]
fn dockerfile_build_stage_has_cmake_and_compiler() {
    let stages = dockerfile_stages();
    let build = stage(&stages, "build");
    let runs = build.arguments("RUN").join("\n");

    assert!(build.base.starts_with("rust:"), "{}", build.base);
    assert!(runs.contains("cmake"), "the build stage installs cmake");
    assert!(
        runs.contains("g++") || runs.contains("gcc") || runs.contains("build-essential"),
        "the build stage installs a C compiler"
    );
    assert!(
        runs.contains("cargo build --release --locked --bin keygate"),
        "{runs}"
    );
}

#[test]
fn dockerfile_mock_stage_listens_on_loopback() {
    let stages = dockerfile_stages();
    let mock = stage(&stages, "mock");

    assert_eq!(
        json_words(mock.last("ENTRYPOINT")),
        ["/usr/local/bin/mock_push_backend"]
    );
    assert_eq!(
        json_words(mock.last("CMD")),
        ["--listen", "127.0.0.1:20280"]
    );
    assert_ne!(mock.last("USER"), "root");
}

/// Returns whether a .dockerignore pattern matches a path or one of its
/// folders, segment by segment with `*` and `?` wildcards.
fn ignore_pattern_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    path.len() >= pattern.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(pattern, segment)| wildcard_matches(pattern.as_bytes(), segment.as_bytes()))
}

fn wildcard_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard_matches(&pattern[1..], text)
                || (!text.is_empty() && wildcard_matches(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard_matches(&pattern[1..], &text[1..]),
        (Some(expected), Some(actual)) if expected == actual => {
            wildcard_matches(&pattern[1..], &text[1..])
        }
        _ => false,
    }
}

/// Returns whether .dockerignore keeps a path out of the build context. The
/// last matching pattern decides, and `!` re-includes.
fn is_ignored(path: &str) -> bool {
    let mut ignored = false;
    for line in read_repo_file(".dockerignore").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix('!') {
            Some(pattern) if ignore_pattern_matches(pattern, path) => ignored = false,
            None if ignore_pattern_matches(line, path) => ignored = true,
            _ => {}
        }
    }
    ignored
}

#[test]
fn dockerignore_keeps_keys_out() {
    assert!(is_ignored("target/debug/keygate"));
    assert!(is_ignored("README.md"));
    assert!(!is_ignored("certificates/README.md"));
    assert!(is_ignored("certificates/server.key"));
    assert!(is_ignored("cacerts/ca.pem"));
    assert!(is_ignored("benches/load/compare.sh"));
    assert!(!is_ignored("src/main.rs"));
}

/// Returns the files of the `[[bench]]` and `[[example]]` targets that
/// Cargo.toml lists: each `path`, or the file cargo derives from `name`.
fn manifest_target_files() -> Vec<String> {
    let mut files = Vec::new();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut finish = |section: &str, name: Option<String>, path: Option<String>| {
        let folder = match section {
            "[[bench]]" => "benches",
            "[[example]]" => "examples",
            _ => return,
        };
        match (path, name) {
            (Some(path), _) => files.push(path),
            (None, Some(name)) => files.push(format!("{folder}/{name}.rs")),
            (None, None) => {}
        }
    };
    for line in read_repo_file("Cargo.toml").lines() {
        let line = line.trim();
        if line.starts_with('[') {
            finish(&section, name.take(), path.take());
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "name" => name = Some(value),
            "path" => path = Some(value),
            _ => {}
        }
    }
    finish(&section, name.take(), path.take());
    files
}

#[test]
fn manifest_lists_bench_and_example_files() {
    let files = manifest_target_files();

    assert!(
        files.contains(&"benches/key_check.rs".to_owned()),
        "{files:?}"
    );
    assert!(
        files.contains(&"benches/bare_proxy.rs".to_owned()),
        "{files:?}"
    );
}

#[test]
fn docker_context_holds_build_inputs() {
    let stages = dockerfile_stages();
    let copied: Vec<String> = stages
        .iter()
        .flat_map(|stage| stage.arguments("COPY"))
        .filter(|arguments| !arguments.starts_with("--from"))
        .flat_map(|arguments| {
            let words: Vec<&str> = arguments.split_whitespace().collect();
            let sources = &words[..words.len().saturating_sub(1)];
            sources
                .iter()
                .map(|source| (*source).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    // Every target file that Cargo.toml names, since cargo rejects a
    // manifest with a missing target file, and the files the final image
    // serves.
    let mut needed: Vec<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        "examples/mock_push_backend.rs",
        "config/application.yml",
        "config/cod-nps.yml",
        "certificates/README.md",
        "cacerts/README.md",
    ]
    .map(str::to_owned)
    .to_vec();
    needed.extend(manifest_target_files());

    for path in &needed {
        let path = path.as_str();
        assert!(repo_root().join(path).exists(), "{path} exists");
        assert!(!is_ignored(path), ".dockerignore leaves out {path}");
        assert!(
            copied
                .iter()
                .any(|source| path == source || path.starts_with(&format!("{source}/"))),
            "no COPY in the Dockerfile copies {path}: {copied:?}"
        );
    }
}
