//! Checks of the Kubernetes manifests under deploy/kubernetes/.
//!
//! kubernetes-validate checks the built-in kinds against the Kubernetes
//! schemas. The ServiceMonitor is a Prometheus Operator CRD without a
//! schema there, so its structure is checked here. Further checks compare
//! the manifests with each other and with the config in the ConfigMap. No
//! cluster is contacted.

mod deploy_common;

use std::path::Path;
use std::process::Command;

use serde_yaml::{Mapping, Value};

use deploy_common::{
    check_config_text, describe, get, get_seq, get_str, parse_yaml, port_of, read_repo_file,
    read_yaml, repo_root, run, venv_tool,
};

const DEPLOYMENT: &str = "deploy/kubernetes/deployment.yaml";
const SERVICE: &str = "deploy/kubernetes/service.yaml";
const CONFIG_MAP: &str = "deploy/kubernetes/configmap.yaml";
const DISRUPTION_BUDGET: &str = "deploy/kubernetes/poddisruptionbudget.yaml";
const SERVICE_MONITOR: &str = "deploy/kubernetes/prometheus-operator/servicemonitor.yaml";

/// Schema-checked manifests: every built-in kind.
const BUILT_IN_MANIFESTS: [&str; 4] = [CONFIG_MAP, DEPLOYMENT, DISRUPTION_BUDGET, SERVICE];

/// Kubernetes versions to validate against: the newest that
/// kubernetes-validate ships schemas for, and an older release that
/// clusters still run.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.37.0", "1.30.0"];

/// The uid of the image's `USER` line in the Dockerfile.
const IMAGE_UID: u64 = 10001;

fn run_kubernetes_validate(version: &str, files: &[&Path]) -> std::process::Output {
    run(Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .current_dir(repo_root()))
}

fn container() -> Value {
    let deployment = read_yaml(DEPLOYMENT);
    let containers = get_seq(&deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.len(), 1, "the pod has one container");
    containers[0].clone()
}

fn pod_labels() -> Mapping {
    get(
        &read_yaml(DEPLOYMENT),
        &["spec", "template", "metadata", "labels"],
    )
    .as_mapping()
    .expect("pod labels are a mapping")
    .clone()
}

/// Returns whether every label of `selector` is on the pod.
fn selects_pods(selector: &Value) -> bool {
    let labels = pod_labels();
    let selector = selector.as_mapping().expect("a selector is a mapping");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// Returns the gateway config text of the ConfigMap.
fn config_map_config_text() -> String {
    get_str(&read_yaml(CONFIG_MAP), &["data", "application.yml"]).to_owned()
}

fn config_map_config() -> Value {
    parse_yaml(&config_map_config_text(), "the ConfigMap's application.yml")
}

fn container_port(name: &str) -> u64 {
    get_seq(&container(), &["ports"])
        .iter()
        .find(|port| port.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|port| port.get("containerPort"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("the container has no port named {name}"))
}

#[test]
fn built_in_manifests_match_schemas() {
    let files: Vec<&Path> = BUILT_IN_MANIFESTS.iter().map(Path::new).collect();

    for version in KUBERNETES_VERSIONS {
        let output = run_kubernetes_validate(version, &files);
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubernetes-validate {version} rejected the manifests:\n{}",
            describe(&output)
        );
        for file in BUILT_IN_MANIFESTS {
            assert!(
                report.contains(&format!("{file} passed")),
                "kubernetes-validate {version} did not pass {file}:\n{report}"
            );
        }
    }
}

#[test]
fn schema_check_rejects_unknown_field() {
    // A misspelled probe field, so that a validator that checks nothing
    // cannot pass the test above.
    let broken = read_repo_file(DEPLOYMENT).replace("periodSeconds: 5", "periodSecond: 5");
    assert_ne!(
        broken,
        read_repo_file(DEPLOYMENT),
        "the replacement applied"
    );
    let dir = tempfile::tempdir().expect("failed to create a temporary folder");
    let path = dir.path().join("deployment.yaml");
    std::fs::write(&path, broken).expect("failed to write the broken manifest");

    let output = run_kubernetes_validate(KUBERNETES_VERSIONS[0], &[&path]);

    assert!(
        !output.status.success(),
        "kubernetes-validate accepted an unknown field:\n{}",
        describe(&output)
    );
}

#[test]
fn deployment_runs_three_replicas() {
    let deployment = read_yaml(DEPLOYMENT);

    assert_eq!(get(&deployment, &["spec", "replicas"]).as_u64(), Some(3));
    assert!(selects_pods(get(
        &deployment,
        &["spec", "selector", "matchLabels"]
    )));
    assert_eq!(
        get(
            &deployment,
            &["spec", "strategy", "rollingUpdate", "maxUnavailable"]
        )
        .as_u64(),
        Some(0),
        "a rollout never stops a pod before its replacement is ready"
    );
}

#[test]
fn deployment_runs_as_non_root() {
    let deployment = read_yaml(DEPLOYMENT);
    let pod_security = get(
        &deployment,
        &["spec", "template", "spec", "securityContext"],
    );
    let container = container();
    let container_security = get(&container, &["securityContext"]);
    let dropped: Vec<&str> = get_seq(container_security, &["capabilities", "drop"])
        .iter()
        .filter_map(Value::as_str)
        .collect();

    assert_eq!(get(pod_security, &["runAsNonRoot"]).as_bool(), Some(true));
    assert_eq!(
        get(pod_security, &["runAsUser"]).as_u64(),
        Some(IMAGE_UID),
        "the pod runs as the image's keygate user"
    );
    assert_eq!(
        get(container_security, &["allowPrivilegeEscalation"]).as_bool(),
        Some(false)
    );
    assert_eq!(
        get(container_security, &["readOnlyRootFilesystem"]).as_bool(),
        Some(true)
    );
    assert_eq!(dropped, ["ALL"]);
}

#[test]
fn image_user_matches_run_as_user() {
    let dockerfile = read_repo_file("Dockerfile");
    let last_user = dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("USER "))
        .next_back()
        .expect("the Dockerfile has a USER line");

    assert_eq!(last_user.trim(), format!("{IMAGE_UID}:{IMAGE_UID}"));
}

#[test]
fn container_sets_resources() {
    let container = container();

    for key in [
        ["requests", "cpu"],
        ["requests", "memory"],
        ["limits", "memory"],
    ] {
        let path = ["resources", key[0], key[1]];
        assert!(
            get(&container, &path).as_str().is_some(),
            "{} is set",
            path.join(".")
        );
    }
}

#[test]
fn probes_use_health_routes() {
    let container = container();
    let context_path = get_str(&config_map_config(), &["gateway", "contextPath"]).to_owned();

    assert_eq!(
        get_str(&container, &["readinessProbe", "httpGet", "path"]),
        format!("{context_path}/health/readiness")
    );
    assert_eq!(
        get_str(&container, &["livenessProbe", "httpGet", "path"]),
        format!("{context_path}/health")
    );
    assert_eq!(
        get_str(&container, &["readinessProbe", "httpGet", "port"]),
        "http"
    );
    assert_eq!(
        get_str(&container, &["livenessProbe", "httpGet", "port"]),
        "http"
    );
}

#[test]
fn container_ports_match_config() {
    let config = config_map_config();
    let listen = get_str(&config, &["gateway", "listen"]);
    let metrics = get_str(&config, &["gateway", "metrics", "listen"]);

    assert_eq!(container_port("http"), u64::from(port_of(listen)));
    assert_eq!(container_port("metrics"), u64::from(port_of(metrics)));
    assert!(
        metrics.starts_with("0.0.0.0:"),
        "the scrape reaches /metrics from outside the pod: {metrics}"
    );
}

#[test]
fn config_map_mounted_as_folder() {
    let deployment = read_yaml(DEPLOYMENT);
    let container = container();
    let arguments: Vec<&str> = get_seq(&container, &["args"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = Path::new(arguments[1]);
    let mount = get_seq(&container, &["volumeMounts"])
        .iter()
        .find(|mount| mount.get("name").and_then(Value::as_str) == Some("config"))
        .expect("the container mounts the config volume")
        .clone();
    let volume = get_seq(&deployment, &["spec", "template", "spec", "volumes"])
        .iter()
        .find(|volume| volume.get("name").and_then(Value::as_str) == Some("config"))
        .expect("the pod has a config volume")
        .clone();
    let config_map = read_yaml(CONFIG_MAP);

    assert_eq!(arguments[0], "--config");
    assert_eq!(
        Path::new(get_str(&mount, &["mountPath"])),
        config_path.parent().expect("the config path has a folder"),
        "the ConfigMap is mounted as the config file's folder"
    );
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never receives ConfigMap updates"
    );
    assert_eq!(mount.get("readOnly").and_then(Value::as_bool), Some(true));
    assert_eq!(
        get_str(&volume, &["configMap", "name"]),
        get_str(&config_map, &["metadata", "name"])
    );
    let file_name = config_path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("the config path names a file");
    assert!(
        get(&config_map, &["data"]).get(file_name).is_some(),
        "the ConfigMap has the key {file_name}"
    );
}

#[test]
fn config_map_config_passes_check_config() {
    let output = check_config_text(&config_map_config_text());
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(
        output.status.success(),
        "keygate check-config rejected the ConfigMap's application.yml:\n{}",
        describe(&output)
    );
    assert!(stdout.contains("healthCheck:    every 5s"), "{stdout}");
    assert!(stdout.contains("allowedClients: 0"), "{stdout}");
}

#[test]
fn config_map_allows_no_client() {
    let clients = get_seq(&config_map_config(), &["allowedClients"]).len();

    assert_eq!(clients, 0, "{CONFIG_MAP} has a live client");
}

#[test]
fn service_selects_deployment_pods() {
    let service = read_yaml(SERVICE);
    let ports = get_seq(&service, &["spec", "ports"]);
    let target_ports: Vec<&str> = ports
        .iter()
        .map(|port| get_str(port, &["targetPort"]))
        .collect();

    assert!(selects_pods(get(&service, &["spec", "selector"])));
    assert_eq!(target_ports, ["http", "metrics"]);
    for port in ports {
        let name = get_str(port, &["targetPort"]);
        assert_eq!(
            get(port, &["port"]).as_u64(),
            Some(container_port(name)),
            "the Service port {name} keeps the container's number"
        );
    }
}

#[test]
fn disruption_budget_keeps_two_pods() {
    let budget = read_yaml(DISRUPTION_BUDGET);
    let replicas = get(&read_yaml(DEPLOYMENT), &["spec", "replicas"])
        .as_u64()
        .expect("replicas is a number");
    let max_unavailable = get(&budget, &["spec", "maxUnavailable"])
        .as_u64()
        .expect("maxUnavailable is a number");

    assert!(selects_pods(get(
        &budget,
        &["spec", "selector", "matchLabels"]
    )));
    assert_eq!(max_unavailable, 1);
    assert!(replicas - max_unavailable >= 2);
}

/// The ServiceMonitor is a custom resource of the Prometheus Operator, and
/// kubernetes-validate ships schemas for built-in kinds only. So its fields
/// are checked here: the kind, a selector that matches the Service, and an
/// endpoint on a port that the Service names.
#[test]
fn service_monitor_targets_metrics_port() {
    let monitor = read_yaml(SERVICE_MONITOR);
    let service = read_yaml(SERVICE);
    let service_labels = get(&service, &["metadata", "labels"])
        .as_mapping()
        .expect("Service labels are a mapping");
    let selector = get(&monitor, &["spec", "selector", "matchLabels"])
        .as_mapping()
        .expect("matchLabels is a mapping");
    let service_port_names: Vec<&str> = get_seq(&service, &["spec", "ports"])
        .iter()
        .map(|port| get_str(port, &["name"]))
        .collect();
    let endpoints = get_seq(&monitor, &["spec", "endpoints"]);
    let known_keys = ["apiVersion", "kind", "metadata", "spec"];

    assert_eq!(
        get_str(&monitor, &["apiVersion"]),
        "monitoring.coreos.com/v1"
    );
    assert_eq!(get_str(&monitor, &["kind"]), "ServiceMonitor");
    for key in monitor
        .as_mapping()
        .expect("a manifest is a mapping")
        .keys()
    {
        let key = key.as_str().unwrap_or("");
        assert!(known_keys.contains(&key), "unknown top-level key {key}");
    }
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(service_labels.get(key), Some(value), "label {key:?}");
    }
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert!(service_port_names.contains(&get_str(endpoint, &["port"])));
    assert_eq!(get_str(endpoint, &["path"]), "/metrics");
    for duration in ["interval", "scrapeTimeout"] {
        let text = get_str(endpoint, &[duration]);
        assert!(
            humantime::parse_duration(text).is_ok(),
            "{duration} {text:?} is a duration"
        );
    }
}
