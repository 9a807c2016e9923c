//! Fuzzes the key check and the router with arbitrary bytes.
//!
//! The input is used as one `x-api-key` value, checked against a fixed
//! client table, and, when it is UTF-8, as a request path. The key check
//! must return what a plain reference model written here returns: a small
//! base64 decoder, a `:` split and a lookup in the same table. So a value
//! passes only when it decodes to a configured `clientId:key` whose key is
//! in force. The router must return the same route for other spellings of
//! the same path.

#![no_main]

use keygate::clients::{ClientTable, DenyReason};
use keygate::config::{
    parse_expires, ClientEntry, ClientKey, GatewaySettings, KeyPlace, RoutePrefix,
};
use keygate::routes::{Route, Routes};
use libfuzzer_sys::fuzz_target;

/// Expiry of the `rotating` client's old key.
const OLD_KEY_EXPIRES: &str = "2027-06-30T12:00:00Z";

/// One configured key as the reference model stores it.
struct ModelKey {
    key: String,
    expires_at: Option<i128>,
}

/// The client table under test and the same clients in plain form.
struct Fixture {
    table: ClientTable,
    model: Vec<(String, Vec<ModelKey>)>,
    /// Unix nanoseconds just before and at the expiry of the old key.
    times: [i128; 2],
    routes: [Routes; 2],
}

fn fixture() -> Fixture {
    let expires = parse_expires(OLD_KEY_EXPIRES).expect("the fixed expiry parses");
    let expires_at = expires.unix_timestamp_nanos();
    // A key longer than 512 decoded bytes takes the heap decoding path.
    let long_key = "k".repeat(600);
    let key = |key: &str, expires_at: Option<i128>| ModelKey {
        key: key.to_string(),
        expires_at,
    };
    let model: Vec<(String, Vec<ModelKey>)> = vec![
        (
            "karolin".into(),
            vec![key(
                "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936",
                None,
            )],
        ),
        ("colon".into(), vec![key("ab:cd", None)]),
        ("café".into(), vec![key("k1", None)]),
        (
            "rotating".into(),
            vec![key("old-key", Some(expires_at)), key("new-key", None)],
        ),
        ("long".into(), vec![key(&long_key, None)]),
    ];

    let entries: Vec<ClientEntry> = model
        .iter()
        .map(|(client_id, keys)| ClientEntry {
            client_id: client_id.clone(),
            keys: keys
                .iter()
                .enumerate()
                .map(|(index, stored)| {
                    let expiry = stored.expires_at.map(|_| expires);
                    ClientKey::plain(&stored.key, expiry, KeyPlace::Item(index))
                })
                .collect(),
            rate_limit: None,
        })
        .collect();

    let root = GatewaySettings {
        context_path: RoutePrefix::parse("/").expect("`/` is a valid context path"),
        uri_base: RoutePrefix::parse("/api/v1").expect("`/api/v1` is a valid uriBase"),
        ..GatewaySettings::default()
    };

    Fixture {
        table: ClientTable::new(&entries),
        model,
        times: [expires_at - 1, expires_at],
        routes: [Routes::new(&GatewaySettings::default()), Routes::new(&root)],
    }
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    let fixture = FIXTURE.get_or_init(fixture);

    check_key(fixture, data);
    if let Ok(path) = std::str::from_utf8(data) {
        check_path(fixture, path);
    }
});

/// Compares the key check with the reference model at both fixed times.
fn check_key(fixture: &Fixture, value: &[u8]) {
    for now in fixture.times {
        let result = fixture
            .table
            .check_at(std::iter::once(value), now)
            .map(|id| id.to_string());
        let again = fixture
            .table
            .check_at(std::iter::once(value), now)
            .map(|id| id.to_string());
        assert_eq!(result, again, "the same value got two results");

        let expected = model_check(&fixture.model, value, now);
        assert_eq!(result, expected, "the key check differs from the model");
        if let Ok(client_id) = &result {
            let decoded = decode_base64(value).expect("a passing value is base64");
            let text = String::from_utf8(decoded).expect("a passing value is UTF-8");
            let (id, key) = text.split_once(':').expect("a passing value has a `:`");
            assert_eq!(id, client_id);
            let keys = &fixture
                .model
                .iter()
                .find(|(id, _)| id == client_id)
                .expect("configured")
                .1;
            assert!(keys
                .iter()
                .any(|stored| stored.key == key && stored.expires_at.is_none_or(|at| now < at)));
        }
    }

    // A request may carry one x-api-key header only, whatever its value.
    let now = fixture.times[0];
    let twice = fixture.table.check_at([value, value].into_iter(), now);
    assert_eq!(twice.err(), Some(DenyReason::Malformed));
    let none = fixture.table.check_at(std::iter::empty(), now);
    assert_eq!(none.err(), Some(DenyReason::Missing));
}

/// Returns the result the key check should return, worked out without keygate's code.
fn model_check(
    model: &[(String, Vec<ModelKey>)],
    value: &[u8],
    now: i128,
) -> Result<String, DenyReason> {
    if value.is_empty() {
        return Err(DenyReason::Missing);
    }
    let decoded = decode_base64(value).ok_or(DenyReason::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| DenyReason::Malformed)?;
    let (client_id, key) = text.split_once(':').ok_or(DenyReason::Malformed)?;
    let (_, keys) = model
        .iter()
        .find(|(id, _)| id == client_id)
        .ok_or(DenyReason::UnknownClient)?;
    let matching: Vec<&ModelKey> = keys.iter().filter(|stored| stored.key == key).collect();
    if matching
        .iter()
        .any(|stored| stored.expires_at.is_none_or(|at| now < at))
    {
        Ok(client_id.to_string())
    } else if matching.is_empty() {
        Err(DenyReason::BadKey)
    } else {
        Err(DenyReason::Expired)
    }
}

/// Decodes standard base64 (RFC 4648 section 4) whose padding may be left
/// out in part or in full. Returns `None` for any other byte, for bad
/// padding, a dangling character, and non-zero bits after the last byte.
fn decode_base64(value: &[u8]) -> Option<Vec<u8>> {
    let padding = value.iter().rev().take_while(|&&byte| byte == b'=').count();
    let body = &value[..value.len() - padding];
    let canonical_padding = (4 - body.len() % 4) % 4;
    if body.len() % 4 == 1 || padding > canonical_padding {
        return None;
    }

    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut decoded = Vec::with_capacity(body.len() * 3 / 4);
    for &byte in body {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(sextet);
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            decoded.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    (bits == 0).then_some(decoded)
}

/// Checks that the router returns one route for one path, and the same
/// route for other spellings of it.
fn check_path(fixture: &Fixture, path: &str) {
    for routes in &fixture.routes {
        let route = routes.classify(path);
        assert_eq!(route, routes.classify(path), "the same path got two routes");

        if !path.starts_with('/') {
            assert_eq!(route, Route::NotFound);
            continue;
        }
        if path.contains('\\') {
            assert_eq!(route, Route::BadPath);
        }

        // Empty segments are skipped, so doubling every `/` changes nothing.
        let doubled = path.replace('/', "//");
        assert_eq!(
            routes.classify(&doubled),
            route,
            "doubled slashes changed the route"
        );

        // Percent-encoding letters and digits changes nothing. A path that
        // already contains `%` is left out, because encoding a character
        // after a `%` can turn an invalid escape into a valid one.
        if !path.contains('%') {
            let encoded = encode_alphanumerics(path);
            assert_eq!(
                routes.classify(&encoded),
                route,
                "percent-encoding changed the route"
            );
        }
    }
}

fn encode_alphanumerics(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len() * 3);
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            encoded.push_str(&format!("%{:02X}", c as u32));
        } else {
            encoded.push(c);
        }
    }
    encoded
}
