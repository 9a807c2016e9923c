//! Selection, retry choice and health of the balancer, on loopback addresses.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use super::*;
use crate::config::parse;

fn settings(gateway: &str) -> GatewaySettings {
    let text = format!("gateway:\n{gateway}\nallowedClients: []\n");
    parse(&text, Path::new("test.yml")).unwrap().gateway
}

fn balancer(gateway: &str) -> Balancer {
    Balancer::build(&settings(gateway), None, None).unwrap()
}

/// Counts the picks of `rounds` selections by backend port.
fn picks(balancer: &Balancer, rounds: usize) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for _ in 0..rounds {
        let info = balancer.select().expect("a backend is selected");
        *counts.entry(info.addr.port()).or_insert(0) += 1;
    }
    counts
}

/// Returns a loopback port that refuses connections.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn round_robin_spreads_evenly() {
    let balancer = balancer(
        "  upstream: [http://127.0.0.1:1001, http://127.0.0.1:1002, http://127.0.0.1:1003]",
    );
    let counts = picks(&balancer, 300);
    assert_eq!(counts.get(&1001), Some(&100));
    assert_eq!(counts.get(&1002), Some(&100));
    assert_eq!(counts.get(&1003), Some(&100));
}

#[test]
fn weights_set_the_share() {
    let balancer =
        balancer("  upstream: [{url: 'http://127.0.0.1:1001', weight: 3}, http://127.0.0.1:1002]");
    let counts = picks(&balancer, 400);
    assert_eq!(counts.get(&1001), Some(&300));
    assert_eq!(counts.get(&1002), Some(&100));
}

#[test]
fn retry_picks_another_backend() {
    let balancer = balancer("  upstream: [http://127.0.0.1:1001, http://127.0.0.1:1002]");
    let failed: SocketAddr = "127.0.0.1:1001".parse().unwrap();
    for _ in 0..20 {
        let other = balancer.select_other(failed).expect("another backend");
        assert_eq!(other.addr.port(), 1002);
    }
}

#[test]
fn retry_with_one_backend_finds_none() {
    let balancer = balancer("  upstream: http://127.0.0.1:1001");
    let failed: SocketAddr = "127.0.0.1:1001".parse().unwrap();
    assert!(balancer.select_other(failed).is_none());
}

#[test]
fn labels_are_configured_urls() {
    let balancer = balancer("  upstream: ['http://127.0.0.1:1001/', 'http://[::1]:1002']");
    let labels: Vec<String> = balancer
        .backends()
        .map(|info| info.label.to_string())
        .collect();
    assert_eq!(labels, ["http://127.0.0.1:1001", "http://[::1]:1002"]);
}

#[test]
fn same_address_twice_rejected() {
    // glibc reads the host name "127.1" as 127.0.0.1.
    let err = Balancer::build(
        &settings("  upstream: [http://127.0.0.1:1001, http://127.1:1001]"),
        None,
        None,
    )
    .err()
    .expect("two backends at one address are an error");
    assert!(
        err.contains("gateway.upstream[0] and gateway.upstream[1] both resolve to 127.0.0.1:1001"),
        "{err}"
    );
}

#[test]
fn unresolvable_host_named_with_index() {
    let err = Balancer::build(
        &settings("  upstream: [http://127.0.0.1:1001, http://no-such-host.invalid:1]"),
        None,
        None,
    )
    .err()
    .expect("an unresolvable host is an error");
    assert!(err.starts_with("gateway.upstream[1]: "), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
}

#[test]
fn registry_kept_when_check_is_the_same() {
    let first = balancer("  upstream: http://127.0.0.1:1001\n  healthCheck: { interval: 5s }");
    let faster = Balancer::build(
        &settings("  upstream: [http://127.0.0.1:1001, http://127.0.0.1:1002]\n  healthCheck: { interval: 1s }"),
        None,
        Some(&first),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&first.registry, &faster.registry));
    let other_path = Balancer::build(
        &settings("  upstream: http://127.0.0.1:1001\n  healthCheck: { path: /up }"),
        None,
        Some(&faster),
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&faster.registry, &other_path.registry));
}

#[test]
fn every_backend_up_without_checks() {
    let port = closed_port();
    let balancer = balancer(&format!("  upstream: http://127.0.0.1:{port}"));
    assert_eq!(balancer.health_interval(), None);
    assert!(balancer.any_healthy());
    assert!(balancer.select().is_some());
}

#[tokio::test]
async fn failed_check_takes_backend_out() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed = closed_port();
    let balancer = balancer(&format!(
        "  upstream: [http://127.0.0.1:{open_port}, http://127.0.0.1:{closed}]\n  healthCheck: {{ timeout: 200ms }}"
    ));
    assert!(balancer.any_healthy(), "backends start healthy");

    // The open port accepts but never responds, so its check times out too.
    balancer.run_health_check().await;
    assert!(!balancer.any_healthy());
    assert!(
        balancer.select().is_none(),
        "no backend is selected when none is healthy"
    );
    assert!(
        balancer.any_reachable().await,
        "the open port still accepts connections"
    );
    drop(open);
}
