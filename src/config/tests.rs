//! Whole-file rules: what loads, what is rejected, and where errors point.

use std::path::Path;

use super::*;

const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";

fn parse_text(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.yml"))
}

fn error_of(text: &str) -> ConfigError {
    match parse_text(text) {
        Ok(config) => panic!("expected an error, loaded {} clients", config.clients.len()),
        Err(err) => err,
    }
}

#[test]
fn shipped_file_loads_without_clients() {
    let text = include_str!("../../config/cod-nps.yml");
    let config = parse_text(text).unwrap();
    assert!(
        config.clients.is_empty(),
        "the shipped file must have no live client"
    );
    assert_eq!(
        config.gateway,
        GatewaySettings::default(),
        "the shipped file must show the defaults"
    );
}

#[test]
fn backend_keys_ignored() {
    let text = format!("server:\n  port: 8080\nspring:\n  anything: [1, 2]\nallowedClients:\n  - clientId: a\n    key: {KEY}\n");
    let config = parse_text(&text).unwrap();
    assert_eq!(config.clients.len(), 1);
    let names: Vec<&str> = config
        .top_level
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["server", "spring", "allowedClients"]);
}

#[test]
fn unknown_gateway_key_points_at_it() {
    let err = error_of("gateway:\n  contextPath: /nps\n  upstrem: http://x\nallowedClients: []\n");
    assert!(err.message.contains("upstrem"), "{err}");
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().starts_with("test.yml:3:"), "{err}");
}

#[test]
fn nested_unknown_key_rejected() {
    let err = error_of("gateway:\n  timeouts:\n    conect: 1s\nallowedClients: []\n");
    assert!(err.message.contains("conect"), "{err}");
    assert_eq!(err.line, Some(3));
}

#[test]
fn allowed_clients_missing_or_null() {
    for text in [
        "gateway: {}\n",
        "allowedClients:\n",
        "allowedClients: ~\n",
        "other: 1\n",
    ] {
        let err = error_of(text);
        assert!(
            err.message.contains("allowedClients is missing or null"),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn empty_list_loads() {
    let config = parse_text("allowedClients: []\n").unwrap();
    assert!(config.clients.is_empty());
}

#[test]
fn not_a_mapping() {
    for text in ["", "- a\n- b\n", "just text\n"] {
        let err = error_of(text);
        assert!(!err.message.is_empty(), "{text:?}");
    }
}

#[test]
fn tab_indentation_points_at_place() {
    let err = error_of("allowedClients:\n\t- clientId: a\n");
    assert_eq!((err.line, err.column), (Some(2), Some(1)), "{err}");
}

#[test]
fn duplicate_key_in_entry() {
    let err = error_of(&format!(
        "allowedClients:\n  - clientId: a\n    key: {KEY}\n    key: {KEY}\n"
    ));
    assert!(err.message.contains("written twice"), "{err}");
    assert!(err.message.contains("allowedClients[0]"), "{err}");
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        !err.to_string().contains(KEY),
        "the key must not appear in errors: {err}"
    );
}

#[test]
fn duplicate_client_names_both() {
    let err = error_of(&format!(
        "allowedClients:\n  - clientId: a\n    key: {KEY}\n  - clientId: a\n    key: other{KEY}\n"
    ));
    assert!(
        err.message.contains("allowedClients[0]") && err.message.contains("allowedClients[1]"),
        "{err}"
    );
}

#[test]
fn duplicate_top_level_key() {
    let err = error_of("allowedClients: []\nallowedClients: []\n");
    assert!(
        err.message.contains("twice") || err.message.contains("duplicate"),
        "{err}"
    );
}

#[test]
fn alias_bomb_rejected_quickly() {
    let mut text =
        String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for level in 1..12 {
        let previous = (b'a' + level - 1) as char;
        let name = (b'a' + level) as char;
        text.push_str(&format!("{name}: &{name} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"));
    }
    text.push_str("allowedClients: []\n");
    let started = std::time::Instant::now();
    let err = error_of(&text);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!err.message.is_empty());
}

#[test]
fn deep_flow_nesting_rejected_first() {
    // The YAML scanner's time grows with the square of the flow depth, so
    // this text kept it busy for minutes before the depth check.
    let text = format!("allowedClients: {}\n", "[".repeat(256 * 1024));
    let err = error_of(&text);
    assert_eq!(err.line, Some(1), "{err}");
    assert_eq!(err.column, Some(16 + 129), "{err}");
    assert!(
        err.message.contains("nested more than 128 levels deep"),
        "{err}"
    );
}

#[test]
fn flow_nesting_within_limit_loads() {
    let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let quoted = format!("\"{}\"", "[".repeat(200));
    let text = format!("backend: {nested}\nnote: {quoted}\nallowedClients: []\n");
    let config = parse_text(&text).unwrap();
    assert_eq!(config.top_level.len(), 3);
}

#[test]
fn alias_repeats_limited() {
    // Before the limit, these 16 KB took 1.2 s and 1 GB of memory to load.
    let items = vec!["x"; 4000].join(",");
    let aliases = vec!["*a"; 2600].join(",");
    let text = format!("backend: &a [{items}]\ncopies: [{aliases}]\nallowedClients: []\n");
    let err = error_of(&text);
    assert!(err.message.contains("aliases (*name) repeat"), "{err}");
    assert_eq!(err.line, Some(1), "{err}");
}

#[test]
fn few_aliases_load() {
    let text = "defaults: &defaults {timeout: 5s}\nfirst: *defaults\nsecond: *defaults\nallowedClients: []\n";
    let config = parse_text(text).unwrap();
    assert_eq!(config.top_level.len(), 4);
}

#[test]
fn gateway_values_checked_with_place() {
    let cases = [
        (
            "gateway:\n  listen: nowhere\nallowedClients: []\n",
            "invalid listen address",
        ),
        (
            "gateway:\n  upstream: ftp://x\nallowedClients: []\n",
            "scheme",
        ),
        (
            "gateway:\n  timeouts: { read: 5 }\nallowedClients: []\n",
            "unit is required",
        ),
        (
            "gateway:\n  limits: { maxBodySize: lots }\nallowedClients: []\n",
            "invalid size",
        ),
        (
            "gateway:\n  clientIdHeader: x-api-key\nallowedClients: []\n",
            "not allowed",
        ),
        (
            "gateway:\n  adminAllowFrom: [everyone]\nallowedClients: []\n",
            "invalid network",
        ),
        (
            "gateway:\n  threads: 0\nallowedClients: []\n",
            "invalid threads",
        ),
        (
            "gateway:\n  log: { level: loud }\nallowedClients: []\n",
            "unknown variant",
        ),
        (
            "gateway:\n  forwardRefresh: maybe\nallowedClients: []\n",
            "invalid type",
        ),
        (
            "gateway:\n  rateLimit: 100/hour\nallowedClients: []\n",
            "invalid rate limit",
        ),
        (
            "gateway:\n  upstream: [{url: 'http://a:1', weight: 1000}]\nallowedClients: []\n",
            "invalid weight",
        ),
        (
            "gateway:\n  healthCheck: { intervall: 5s }\nallowedClients: []\n",
            "intervall",
        ),
        (
            "gateway:\n  healthCheck: { timeout: 0s }\nallowedClients: []\n",
            "greater than zero",
        ),
        (
            "gateway:\n  limits: { maxConnections: 0 }\nallowedClients: []\n",
            "invalid connection cap 0",
        ),
        (
            "gateway:\n  limits: { maxConnectionsPerPeer: -1 }\nallowedClients: []\n",
            "invalid connection cap -1",
        ),
        (
            "gateway:\n  limits: { maxConnections: 1000001 }\nallowedClients: []\n",
            "from 1 to 1000000",
        ),
        (
            "gateway:\n  limits: { maxConnections: many }\nallowedClients: []\n",
            "invalid type",
        ),
    ];
    for (text, expected) in cases {
        let err = error_of(text);
        assert!(err.message.contains(expected), "{text:?}: {err}");
        assert!(err.line.is_some(), "{text:?} has no line: {err}");
    }
}

#[test]
fn combination_rules() {
    let same_headers =
        error_of("gateway:\n  clientIdHeader: X-A\n  requestIdHeader: x-a\nallowedClients: []\n");
    assert!(
        same_headers.message.contains("different names"),
        "{same_headers}"
    );
    let big_head = error_of("gateway:\n  limits: { maxHeaderSize: 2MiB }\nallowedClients: []\n");
    assert!(big_head.message.contains("1 MiB"), "{big_head}");
    let peer_over_total = error_of(
        "gateway:\n  limits: { maxConnections: 10, maxConnectionsPerPeer: 11 }\nallowedClients: []\n",
    );
    assert!(
        peer_over_total
            .message
            .contains("limits.maxConnectionsPerPeer 11 is larger than limits.maxConnections 10"),
        "{peer_over_total}"
    );
    let shared_port = error_of("gateway:\n  listen: 127.0.0.1:9000\n  metrics: { listen: 127.0.0.1:9000 }\nallowedClients: []\n");
    assert!(
        shared_port.message.contains("its own port"),
        "{shared_port}"
    );
}

#[test]
fn connection_caps_read() {
    let defaults = parse_text("allowedClients: []\n").unwrap();
    assert_eq!(defaults.gateway.limits.max_connections.0, 2048);
    assert_eq!(defaults.gateway.limits.max_connections_per_peer.0, 256);
    let set = parse_text(
        "gateway:\n  limits: { maxConnections: 20, maxConnectionsPerPeer: 20 }\nallowedClients: []\n",
    )
    .unwrap();
    assert_eq!(set.gateway.limits.max_connections.0, 20);
    assert_eq!(set.gateway.limits.max_connections_per_peer.0, 20);
}

#[test]
fn missing_file_named() {
    let err = load(Path::new("/nonexistent/keygate.yml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/keygate.yml: cannot read"),
        "{err}"
    );
}

#[test]
fn fingerprints_follow_changes() {
    let one = parse_text(&format!(
        "other: 1\nallowedClients:\n  - clientId: a\n    key: {KEY}\n"
    ))
    .unwrap();
    let same = parse_text(&format!(
        "other: 1\nallowedClients:\n  - clientId: a\n    key: {KEY}\n"
    ))
    .unwrap();
    let new_key = parse_text(&format!(
        "other: 1\nallowedClients:\n  - clientId: a\n    key: x{KEY}\n"
    ))
    .unwrap();
    assert_eq!(one.top_level, same.top_level);
    assert_eq!(one.top_level[0], new_key.top_level[0]);
    assert_ne!(
        one.top_level[1], new_key.top_level[1],
        "a changed key must change the fingerprint"
    );
}

#[test]
fn admin_token_and_watch_config_checked() {
    let digest = "ab".repeat(32);
    let config = parse_text(&format!(
        "gateway:\n  adminToken: sha256:{digest}\n  watchConfig: false\nallowedClients: []\n"
    ))
    .unwrap();
    assert_eq!(config.gateway.admin_token, Some(AdminToken([0xab; 32])));
    assert!(!config.gateway.watch_config);

    let bad_token = error_of("gateway:\n  adminToken: secret\nallowedClients: []\n");
    assert!(
        bad_token.message.contains("invalid adminToken"),
        "{bad_token}"
    );
    assert_eq!(bad_token.line, Some(2), "{bad_token}");
    assert!(!bad_token.message.contains("secret"), "{bad_token}");

    let bad_watch = error_of("gateway:\n  watchConfig: maybe\nallowedClients: []\n");
    assert!(bad_watch.message.contains("invalid type"), "{bad_watch}");
    assert_eq!(bad_watch.line, Some(2), "{bad_watch}");
}

#[test]
fn admin_token_change_is_reported() {
    let with_token = |digit: &str| {
        parse_text(&format!(
            "gateway:\n  adminToken: sha256:{}\nallowedClients: []\n",
            digit.repeat(64)
        ))
        .unwrap()
    };
    assert_ne!(
        with_token("a").top_level,
        with_token("b").top_level,
        "a changed adminToken must change the gateway fingerprint"
    );
}

#[test]
fn client_key_error_has_place() {
    let err = error_of(
        "allowedClients:\n  - clientId: a\n    keys:\n      - key: k\n      - keyHash: md5:00\n",
    );
    assert!(err.message.contains("invalid keyHash"), "{err}");
    assert_eq!((err.line, err.column), (Some(5), Some(9)), "{err}");
    assert!(err.to_string().starts_with("test.yml:5:9: "), "{err}");
}

#[test]
fn bad_client_rate_limit_points_at_value() {
    let err = error_of(&format!(
        "allowedClients:\n  - clientId: a\n    key: {KEY}\n    rateLimit: 10 per second\n"
    ));
    assert!(err.message.contains("invalid rate limit"), "{err}");
    assert!(err.message.contains("allowedClients[0].rateLimit"), "{err}");
    assert_eq!((err.line, err.column), (Some(4), Some(16)), "{err}");
    assert!(
        !err.to_string().contains(KEY),
        "the key must not appear in errors: {err}"
    );
}

#[test]
fn traffic_settings_load() {
    let config = parse_text(&format!(
        "gateway:\n  upstream:\n    - http://127.0.0.1:1\n    - url: http://127.0.0.1:2\n      weight: 4\n  healthCheck:\n    interval: 2s\n  rateLimit: 100/s\nallowedClients:\n  - clientId: a\n    key: {KEY}\n    rateLimit: 5/min\n"
    ))
    .unwrap();
    let gateway = &config.gateway;
    assert_eq!(gateway.upstream.0.len(), 2);
    assert_eq!(gateway.upstream.0[1].weight, 4);
    let check = gateway.health_check.as_ref().expect("healthCheck is set");
    assert_eq!(check.interval.0, std::time::Duration::from_secs(2));
    assert_eq!(
        gateway.rate_limit.map(|limit| limit.to_string()),
        Some("100/s".into())
    );
    assert_eq!(
        config.clients[0].rate_limit.map(|limit| limit.to_string()),
        Some("5/min".into())
    );
}

#[test]
fn rate_limit_change_changes_fingerprint() {
    let plain = parse_text(&format!(
        "allowedClients:\n  - clientId: a\n    key: {KEY}\n"
    ))
    .unwrap();
    let limited = parse_text(&format!(
        "allowedClients:\n  - clientId: a\n    key: {KEY}\n    rateLimit: 1/s\n"
    ))
    .unwrap();
    assert_ne!(
        plain.top_level[0], limited.top_level[0],
        "a refresh must report allowedClients as changed"
    );
}

#[test]
fn misplaced_key_redacted_in_errors() {
    let cases = [
        format!("allowedClients:\n  - karolin:{KEY}\n"),
        format!("allowedClients: {KEY}\n"),
        format!("gateway:\n  {KEY}: 1\nallowedClients: []\n"),
        format!("allowedClients:\n  - clientId: karolin {KEY}\n    key: {KEY}\n"),
    ];
    for text in cases {
        let err = error_of(&text);
        assert!(
            !err.to_string().contains(KEY),
            "the key must not appear: {err}"
        );
        assert!(
            err.to_string().contains("<redacted>"),
            "the error must say what it hid: {err}"
        );
    }
}

#[test]
fn short_words_kept_in_errors() {
    assert_eq!(
        redact_secrets("unknown field `upstrem`"),
        "unknown field `upstrem`"
    );
    assert_eq!(redact_secrets(&format!("x {KEY}: y")), "x <redacted>: y");
}

#[test]
fn non_regular_file_rejected() {
    let err = load(Path::new("/dev/zero")).unwrap_err();
    assert!(err.message.contains("not a regular file"), "{err}");
    let dir = load(Path::new("/tmp")).unwrap_err();
    assert!(dir.message.contains("not a regular file"), "{dir}");
}

#[test]
fn top_level_case_typo_rejected() {
    let err = error_of("Gateway:\n  threads: 1\nallowedClients: []\n");
    assert!(err.message.contains("case-sensitive"), "{err}");
    let clients = error_of("allowedclients: []\n");
    assert!(clients.message.contains("case-sensitive"), "{clients}");
}
