//! Rules of one client entry and of the list: clientIds, key forms, expiry,
//! duplicates and warnings, with the place of each error.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::*;
use crate::config::RateLimit;

const HASHED_KEY: &str = "rotation-key-0123456789abcdef0123456789";

fn parse(yaml: &str) -> Result<Vec<ClientEntry>, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(digest(key)))
}

fn at(text: &str) -> OffsetDateTime {
    super::parse_expires(text).unwrap()
}

/// Returns the error message and its line and column.
fn error_of(yaml: &str) -> (String, Option<(usize, usize)>) {
    match parse(yaml) {
        Ok(entries) => panic!("expected an error, read {} entries:\n{yaml}", entries.len()),
        Err(err) => (
            err.to_string(),
            err.location().map(|place| (place.line(), place.column())),
        ),
    }
}

#[test]
fn client_id_rules() {
    assert!(check_client_id("karolin").is_ok());
    assert!(check_client_id("café").is_ok());
    assert!(check_client_id(&"a".repeat(128)).is_ok());
    assert!(check_client_id(&"a".repeat(129)).is_err());
    assert!(check_client_id("").is_err());
    assert!(check_client_id("a:b").is_err());
    assert!(check_client_id("a b").is_err());
    assert!(check_client_id("a\tb").is_err());
    assert!(check_client_id("a\u{7f}").is_err());
    assert!(check_client_id("a\u{a0}b").is_err());
}

#[test]
fn scalars_read_as_written() {
    let entries =
        parse("- clientId: no\n  key: 0e12345\n- clientId: 0123\n  key: 1_000\n").unwrap();
    assert_eq!(entries[0].client_id, "no");
    assert_eq!(entries[0].keys[0].digest, digest("0e12345"));
    assert_eq!(entries[1].client_id, "0123");
    assert_eq!(entries[1].keys[0].digest, digest("1_000"));
}

#[test]
fn missing_or_null_key_rejected() {
    for yaml in [
        "- clientId: a\n",
        "- clientId: a\n  key:\n",
        "- clientId: a\n  key: ~\n",
        "- clientId: a\n  key: null\n",
        "- clientId: a\n  keys: []\n",
    ] {
        let err = parse(yaml).unwrap_err();
        assert!(
            err.to_string().contains("key is missing or null"),
            "{yaml:?}: {err}"
        );
        assert!(err.location().is_some(), "{yaml:?} has no location");
    }
}

#[test]
fn empty_key_and_missing_id_rejected() {
    assert!(parse("- clientId: a\n  key: ''\n")
        .unwrap_err()
        .to_string()
        .contains("key is empty"));
    assert!(parse("- key: abc\n")
        .unwrap_err()
        .to_string()
        .contains("clientId is missing"));
    assert!(parse("- clientId: a:b\n  key: k\n")
        .unwrap_err()
        .to_string()
        .contains("':'"));
}

#[test]
fn duplicate_field_and_unknown_field_rejected() {
    let err = parse("- clientId: a\n  key: k\n  key: j\n").unwrap_err();
    assert!(err.to_string().contains("written twice"), "{err}");
    // Errors raised for an entry point at the line where the entry starts.
    assert_eq!(err.location().map(|at| at.line()), Some(1));
    assert!(parse("- clientId: a\n  kye: k\n")
        .unwrap_err()
        .to_string()
        .contains("unknown setting"));
    let (message, _) = error_of("- clientId: a\n  keys: [k1]\n  keys: [k2]\n");
    assert!(message.contains("keys is written twice"), "{message}");
    let typo = parse("- clientId: a\n  kye: k\n").unwrap_err();
    assert!(
        typo.to_string().contains("unknown setting \"kye\""),
        "{typo}"
    );
}

#[test]
fn multiline_key_rejected() {
    let err = parse("- clientId: a\n  key: |\n    abc\n").unwrap_err();
    assert!(err.to_string().contains("control character"), "{err}");
}

#[test]
fn several_keys_in_order() {
    let yaml = format!(
        "- clientId: a\n  key: first\n  keys:\n    - second\n    - key: third\n      expires: 2027-06-30\n    - keyHash: {}\n",
        key_hash(HASHED_KEY)
    );
    let entries = parse(&yaml).unwrap();
    let keys = &entries[0].keys;
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0].digest, digest("first"));
    assert_eq!(keys[0].place, KeyPlace::Entry);
    assert_eq!(keys[1].digest, digest("second"));
    assert_eq!(keys[1].place, KeyPlace::Item(0));
    assert_eq!(keys[2].digest, digest("third"));
    assert_eq!(keys[2].expires, Some(at("2027-07-01T00:00:00Z")));
    assert_eq!(keys[3].digest, digest(HASHED_KEY));
    assert_eq!(keys[3].form, KeyForm::Hashed);
    assert_eq!(keys[3].expires, None);
}

#[test]
fn keys_alone_without_key() {
    let entries = parse("- clientId: a\n  keys: [one, two]\n").unwrap();
    assert_eq!(entries[0].keys.len(), 2);
    assert_eq!(entries[0].keys[1].digest, digest("two"));
}

#[test]
fn short_form_hash_and_expiry() {
    let yaml = format!(
        "- clientId: a\n  keyHash: {}\n  expires: 2027-06-30T12:00:00+02:00\n",
        key_hash(HASHED_KEY)
    );
    let entries = parse(&yaml).unwrap();
    let key = &entries[0].keys[0];
    assert_eq!(key.digest, digest(HASHED_KEY));
    assert_eq!(key.form, KeyForm::Hashed);
    assert_eq!(key.expires, Some(at("2027-06-30T10:00:00Z")));
}

#[test]
fn key_and_key_hash_together_rejected() {
    let yaml = format!(
        "allowedClients:\n  - clientId: a\n    key: k\n    keyHash: {}\n",
        key_hash("k")
    );
    let err = crate::config::parse(&yaml, std::path::Path::new("t.yml")).unwrap_err();
    assert!(err.message.contains("both key and keyHash"), "{err}");
    assert_eq!((err.line, err.column), (Some(2), Some(5)), "{err}");
}

#[test]
fn expires_without_short_key_rejected() {
    let (message, place) = error_of("- clientId: a\n  expires: 2027-06-30\n  keys: [k]\n");
    assert!(
        message.contains("put expires inside each item"),
        "{message}"
    );
    assert_eq!(place, Some((1, 3)), "{message}");
}

#[test]
fn item_errors_point_at_item() {
    let cases = [
        (
            "- clientId: a\n  keys:\n    - key: k\n    - keyHash: sha256:00\n",
            "invalid keyHash",
            4,
        ),
        (
            "- clientId: a\n  keys:\n    - key: k\n      expires: someday\n",
            "invalid expires",
            3,
        ),
        (
            "- clientId: a\n  keys:\n    - key: k\n    - expires: 2027-01-01\n",
            "neither key nor keyHash",
            4,
        ),
        (
            "- clientId: a\n  keys:\n    - key: k\n      kye: j\n",
            "unknown setting \"kye\"",
            3,
        ),
        ("- clientId: a\n  keys:\n    - 123\n", "quote it", 3),
        ("- clientId: a\n  keys:\n    - 0x1F\n", "quote it", 3),
        ("- clientId: a\n  keys:\n    - 1e5\n", "quote it", 3),
        ("- clientId: a\n  keys:\n    - true\n", "quote it", 3),
        ("- clientId: a\n  keys:\n    - ~\n", "quote it", 3),
        (
            "- clientId: a\n  keys:\n    - key:\n",
            "key is missing or null",
            3,
        ),
    ];
    for (yaml, expected, line) in cases {
        let (message, place) = error_of(yaml);
        assert!(message.contains(expected), "{yaml:?}: {message}");
        assert_eq!(
            place.map(|(line, _)| line),
            Some(line),
            "{yaml:?}: {message}"
        );
    }
}

#[test]
fn item_scalars_read_as_written_or_rejected() {
    let entries = parse("- clientId: a\n  keys: ['123', 0123, 1_000, 0e12345x]\n").unwrap();
    let digests: Vec<[u8; 32]> = entries[0].keys.iter().map(|key| key.digest).collect();
    assert_eq!(
        digests,
        [
            digest("123"),
            digest("0123"),
            digest("1_000"),
            digest("0e12345x")
        ]
    );
}

#[test]
fn null_keys_rejected() {
    let (message, _) = error_of("- clientId: a\n  key: k\n  keys:\n");
    assert!(message.contains("keys is null"), "{message}");
    let (message, _) = error_of("- clientId: a\n  key: k\n  expires:\n");
    assert!(message.contains("expires is missing or null"), "{message}");
}

#[test]
fn too_many_keys_rejected() {
    let items: Vec<String> = (0..=MAX_KEYS_PER_CLIENT).map(|n| format!("k{n}")).collect();
    let yaml = format!("- clientId: a\n  keys: [{}]\n", items.join(", "));
    let (message, _) = error_of(&yaml);
    assert!(message.contains("the maximum is 16"), "{message}");
}

#[test]
fn list_rules_name_both_entries() {
    let same_id =
        parse("- clientId: a\n  key: k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1\n- clientId: a\n  key: k2\n")
            .unwrap();
    let err = check_list(&same_id).unwrap_err();
    assert!(
        err.contains("allowedClients[0]") && err.contains("allowedClients[1]"),
        "{err}"
    );

    let same_key = parse("- clientId: a\n  key: k\n- clientId: b\n  key: k\n").unwrap();
    let err = check_list(&same_key).unwrap_err();
    assert!(
        err.contains("same key") && err.contains("\"a\"") && err.contains("\"b\""),
        "{err}"
    );
    assert!(
        !err.contains(": k"),
        "the key must not appear in the message: {err}"
    );
}

#[test]
fn same_key_as_plain_and_hash_rejected() {
    let yaml = format!(
        "- clientId: a\n  keys: [{HASHED_KEY}]\n- clientId: b\n  keyHash: {}\n",
        key_hash(HASHED_KEY)
    );
    let err = check_list(&parse(&yaml).unwrap()).unwrap_err();
    assert!(err.contains("allowedClients[0] (\"a\")"), "{err}");
    assert!(err.contains("allowedClients[1] (\"b\")"), "{err}");
    assert!(!err.contains(&hex::encode(digest(HASHED_KEY))), "{err}");
}

#[test]
fn same_key_twice_in_one_client_rejected() {
    let yaml = format!(
        "- clientId: a\n  key: {HASHED_KEY}\n  keys:\n    - keyHash: {}\n",
        key_hash(HASHED_KEY)
    );
    let err = check_list(&parse(&yaml).unwrap()).unwrap_err();
    assert!(err.contains("the same key twice"), "{err}");
    assert!(err.contains("keys[0]"), "{err}");
}

#[test]
fn short_key_warns() {
    let entries = parse("- clientId: a\n  key: short\n").unwrap();
    let warnings = check_list(&entries).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        !warnings[0].contains("short\""),
        "the key must not appear: {}",
        warnings[0]
    );
}

#[test]
fn hashed_key_never_warns_short() {
    let yaml = format!("- clientId: a\n  keyHash: {}\n", key_hash("x"));
    assert!(check_list(&parse(&yaml).unwrap()).unwrap().is_empty());
}

#[test]
fn expired_key_warns() {
    let yaml = format!(
        "- clientId: a\n  keys:\n    - key: {HASHED_KEY}\n      expires: 2027-06-30\n    - key: new-{HASHED_KEY}\n"
    );
    let entries = parse(&yaml).unwrap();
    let before = check_list_at(&entries, at("2027-06-30T23:00:00Z")).unwrap();
    assert!(before.is_empty(), "{before:?}");
    let after = check_list_at(&entries, at("2027-07-01T00:00:00Z")).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].contains("keys[0] expired at 2027-07-01T00:00:00Z"),
        "{}",
        after[0]
    );
}

#[test]
fn debug_hides_key() {
    let entry = ClientEntry::with_key("a", "secret-value");
    let text = format!("{entry:?}");
    assert!(!text.contains("secret-value"), "{text}");
    assert!(text.contains("keys: 1"), "{text}");
}

#[test]
fn pasted_key_as_name_not_echoed() {
    let pasted = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
    let err = parse(&format!("- clientId: a\n  {pasted}: 1\n")).unwrap_err();
    assert!(err.to_string().contains("unknown setting"), "{err}");
    assert!(
        !err.to_string().contains(pasted),
        "a pasted key must not be echoed: {err}"
    );
}

#[test]
fn rate_limit_read_per_entry() {
    let entries = parse(
        "- clientId: a\n  key: k1\n  rateLimit: 10/s\n- clientId: b\n  key: k2\n- clientId: c\n  keys: [k3]\n  rateLimit: unlimited\n",
    )
    .unwrap();
    assert_eq!(
        entries[0].rate_limit.map(|limit| limit.to_string()),
        Some("10/s".into())
    );
    assert_eq!(entries[1].rate_limit, None);
    assert_eq!(entries[2].rate_limit, Some(RateLimit::Unlimited));
}

#[test]
fn bad_rate_limit_points_at_entry() {
    let err = parse("- clientId: a\n  key: k1\n- clientId: b\n  key: k2\n  rateLimit: 10/hour\n")
        .unwrap_err();
    assert!(err.to_string().contains("invalid rate limit"), "{err}");
    // A bad value points at the value itself.
    assert_eq!(
        err.location().map(|at| (at.line(), at.column())),
        Some((5, 14)),
        "{err}"
    );
    let twice =
        parse("- clientId: a\n  key: k1\n  rateLimit: 1/s\n  rateLimit: 2/s\n").unwrap_err();
    assert!(twice.to_string().contains("written twice"), "{twice}");
}

#[test]
fn pasted_key_in_item_not_echoed() {
    let pasted = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
    let (message, place) = error_of(&format!("- clientId: a\n  keys:\n    - {pasted}: 1\n"));
    assert!(
        message.contains("unknown setting in an item of keys"),
        "{message}"
    );
    assert!(
        !message.contains(pasted),
        "a pasted key must not be echoed: {message}"
    );
    assert_eq!(place.map(|(line, _)| line), Some(3), "{message}");
}
