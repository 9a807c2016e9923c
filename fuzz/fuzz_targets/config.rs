//! Fuzzes the config parser with arbitrary text.
//!
//! `keygate::config::parse` is the step of `config::load` after the file is
//! read, so any UTF-8 input is a possible config file. An error must name the
//! file, carry a message without a secret-like run, and a line and column
//! inside the text or none at all. An accepted file must keep every rule
//! when checked again here, and its clients and routing settings, written
//! back out as YAML with keys as `keyHash`, must load to the same values.

#![no_main]

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use keygate::clients::{ClientTable, DenyReason};
use keygate::config::{
    check_client_id, parse, ClientEntry, Config, ConfigError, KEY_HASH_PREFIX, MAX_KEYS_PER_CLIENT,
};
use keygate::routes::Routes;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

const FILE_NAME: &str = "fuzz.yml";

/// keygate replaces a run of this many base64 or hex characters in an error message.
const SECRET_RUN_CHARS: usize = 32;

fuzz_target!(|data: &[u8]| {
    // `config::load` rejects a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(FILE_NAME);
    let first = parse(text, path);
    let second = parse(text, path);
    match (&first, &second) {
        (Ok(config), Ok(again)) => {
            assert_same_config(config, again);
            check_accepted(text, config);
        }
        (Err(error), Err(again)) => {
            assert_eq!(error, again, "the same text got two errors");
            check_error(text, error);
        }
        _ => panic!("the same text was accepted once and rejected once"),
    }
});

fn assert_same_config(config: &Config, again: &Config) {
    assert_eq!(config.gateway, again.gateway);
    assert_eq!(config.clients, again.clients);
    assert_eq!(config.warnings, again.warnings);
    assert_eq!(config.top_level, again.top_level);
    assert_eq!(config.source_digest, again.source_digest);
}

fn check_error(text: &str, error: &ConfigError) {
    assert_eq!(error.file, Path::new(FILE_NAME));
    assert!(
        !error.message.trim().is_empty(),
        "an error without a message"
    );
    assert_eq!(
        error.line.is_some(),
        error.column.is_some(),
        "a line without a column or a column without a line"
    );
    if let Some(line) = error.line {
        // The YAML parser (libyaml, YAML 1.1) also ends a line at a lone CR,
        // NEL, LS and PS, so each break character is counted, CR LF twice.
        // At the end of a text without a final break it reports the line
        // after the last, so the bound is one higher than the line count.
        let line_count = text
            .chars()
            .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
            .count()
            + 2;
        assert!(
            (1..=line_count).contains(&line),
            "line {line} is past line {line_count}, the last the text can have"
        );
    }
    if let Some(column) = error.column {
        assert!(column >= 1, "column {column} is not 1-based");
    }
    assert!(
        longest_secret_run(&error.message) < SECRET_RUN_CHARS,
        "an error message repeats a long run of base64 or hex characters"
    );
    assert!(error.to_string().starts_with(FILE_NAME));
}

fn longest_secret_run(message: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in message.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// Checks the rules again on an accepted file, independently of the loader.
fn check_accepted(text: &str, config: &Config) {
    let source_digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    assert_eq!(config.source_digest, source_digest);
    let mut names = HashSet::new();
    for (name, _) in &config.top_level {
        assert!(
            names.insert(name.as_str()),
            "top-level key {name:?} listed twice"
        );
    }
    assert!(names.contains("allowedClients"));

    let gateway = &config.gateway;
    assert_eq!(gateway.check_combinations(), Ok(()));
    assert!(gateway.settings_needing_restart(gateway).is_empty());
    let _routes = Routes::new(gateway);

    let mut client_ids = HashSet::new();
    let mut digests = HashSet::new();
    for entry in &config.clients {
        assert_eq!(check_client_id(&entry.client_id), Ok(()));
        assert!(
            client_ids.insert(entry.client_id.as_str()),
            "clientId listed twice"
        );
        assert!((1..=MAX_KEYS_PER_CLIENT).contains(&entry.keys.len()));
        for key in &entry.keys {
            assert!(digests.insert(key.digest), "a key listed twice");
        }
    }
    check_table(&config.clients);
    check_round_trip(config);
}

/// Builds the key table from the accepted clients and checks a key that no
/// client has.
fn check_table(clients: &[ClientEntry]) {
    let table = ClientTable::new(clients);
    assert_eq!(table.len(), clients.len());
    let probe_key = "a key that the file does not list";
    let probe_digest: [u8; 32] = Sha256::digest(probe_key.as_bytes()).into();
    for entry in clients {
        assert!(table.contains(&entry.client_id));
        if entry.keys.iter().any(|key| key.digest == probe_digest) {
            continue;
        }
        let value = keygate::clients::encode_api_key(&entry.client_id, probe_key);
        let result = table.check_at(std::iter::once(value.as_bytes()), 0);
        assert_eq!(result.err(), Some(DenyReason::BadKey));
    }
}

/// Writes the clients and the routing settings back out as YAML, loads that,
/// and compares.
fn check_round_trip(config: &Config) {
    let gateway = &config.gateway;
    let mut yaml = String::from("gateway:\n");
    writeln!(
        yaml,
        "  contextPath: {}",
        quote(&gateway.context_path.to_string())
    )
    .unwrap();
    writeln!(yaml, "  uriBase: {}", quote(&gateway.uri_base.to_string())).unwrap();
    if let Some(rate_limit) = gateway.rate_limit {
        writeln!(yaml, "  rateLimit: {}", quote(&rate_limit.to_string())).unwrap();
    }
    yaml.push_str("allowedClients:");
    if config.clients.is_empty() {
        yaml.push_str(" []");
    }
    yaml.push('\n');
    for entry in &config.clients {
        writeln!(yaml, "  - clientId: {}", quote(&entry.client_id)).unwrap();
        if let Some(rate_limit) = entry.rate_limit {
            writeln!(yaml, "    rateLimit: {}", quote(&rate_limit.to_string())).unwrap();
        }
        yaml.push_str("    keys:\n");
        for key in &entry.keys {
            writeln!(
                yaml,
                "      - keyHash: {KEY_HASH_PREFIX}{}",
                hex(&key.digest)
            )
            .unwrap();
            if let Some(expires) = key.expires {
                let expires = expires
                    .format(&Rfc3339)
                    .expect("an expiry read from RFC 3339 text formats as RFC 3339");
                writeln!(yaml, "        expires: {}", quote(&expires)).unwrap();
            }
        }
    }

    let reloaded = match parse(&yaml, Path::new(FILE_NAME)) {
        Ok(reloaded) => reloaded,
        Err(error) => panic!("the written-out config is rejected: {error}"),
    };
    assert_eq!(reloaded.gateway.context_path, gateway.context_path);
    assert_eq!(reloaded.gateway.uri_base, gateway.uri_base);
    assert_eq!(reloaded.gateway.rate_limit, gateway.rate_limit);
    assert_eq!(reloaded.clients.len(), config.clients.len());
    for (entry, again) in config.clients.iter().zip(&reloaded.clients) {
        assert_eq!(again.client_id, entry.client_id);
        assert_eq!(again.rate_limit, entry.rate_limit);
        let keys: Vec<_> = entry
            .keys
            .iter()
            .map(|key| (key.digest, key.expires))
            .collect();
        let keys_again: Vec<_> = again
            .keys
            .iter()
            .map(|key| (key.digest, key.expires))
            .collect();
        assert_eq!(keys_again, keys);
    }
}

/// Writes `text` as a YAML double-quoted scalar, escaping all but printable ASCII.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            c if u32::from(c) <= 0xFFFF => write!(quoted, "\\u{:04X}", u32::from(c)).unwrap(),
            c => write!(quoted, "\\U{:08X}", u32::from(c)).unwrap(),
        }
    }
    quoted.push('"');
    quoted
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
