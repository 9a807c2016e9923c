//! The key check on single values: parsing, reasons, several keys,
//! hashed keys and expiry.

use super::*;

const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";

fn table() -> ClientTable {
    ClientTable::new(&[
        ClientEntry::with_key("karolin", KEY),
        ClientEntry::with_key("colon", "ab:cd"),
        ClientEntry::with_key("café", "k1"),
    ])
}

fn check_one(table: &ClientTable, value: &[u8]) -> Result<String, DenyReason> {
    table.check(std::iter::once(value)).map(|id| id.to_string())
}

#[test]
fn good_key_passes() {
    let value = encode_api_key("karolin", KEY);
    assert_eq!(check_one(&table(), value.as_bytes()), Ok("karolin".into()));
}

#[test]
fn padding_is_optional() {
    let value = encode_api_key("colon", "ab:cd");
    let unpadded = value.trim_end_matches('=');
    assert_ne!(
        unpadded, value,
        "this value must carry padding for the test to mean anything"
    );
    assert_eq!(check_one(&table(), unpadded.as_bytes()), Ok("colon".into()));
    assert_eq!(check_one(&table(), value.as_bytes()), Ok("colon".into()));
}

#[test]
fn colon_in_key_and_utf8_id() {
    let table = table();
    assert_eq!(
        check_one(&table, encode_api_key("colon", "ab:cd").as_bytes()),
        Ok("colon".into())
    );
    assert_eq!(
        check_one(&table, encode_api_key("café", "k1").as_bytes()),
        Ok("café".into())
    );
    assert_eq!(
        check_one(&table, encode_api_key("colon", "ab").as_bytes()),
        Err(DenyReason::BadKey)
    );
    let latin1 = base64::engine::general_purpose::STANDARD.encode(b"caf\xe9:k1");
    assert_eq!(
        check_one(&table, latin1.as_bytes()),
        Err(DenyReason::Malformed)
    );
}

#[test]
fn reasons() {
    let table = table();
    assert_eq!(
        table.check(std::iter::empty()).err(),
        Some(DenyReason::Missing)
    );
    assert_eq!(check_one(&table, b""), Err(DenyReason::Missing));
    assert_eq!(
        check_one(&table, b"not base64!"),
        Err(DenyReason::Malformed)
    );
    let no_colon = base64::engine::general_purpose::STANDARD.encode("karolin");
    assert_eq!(
        check_one(&table, no_colon.as_bytes()),
        Err(DenyReason::Malformed)
    );
    assert_eq!(
        check_one(&table, encode_api_key("nobody", KEY).as_bytes()),
        Err(DenyReason::UnknownClient)
    );
    assert_eq!(
        check_one(&table, encode_api_key("karolin", "wrong").as_bytes()),
        Err(DenyReason::BadKey)
    );
}

#[test]
fn two_values_rejected() {
    let good = encode_api_key("karolin", KEY);
    let values = [good.as_bytes(), good.as_bytes()];
    assert_eq!(
        table().check(values.into_iter()).err(),
        Some(DenyReason::Malformed)
    );
}

#[test]
fn shell_made_base64_rejected() {
    let table = table();
    // `echo id:key | base64 -w0` encodes a trailing newline into the key.
    let with_newline = base64::engine::general_purpose::STANDARD.encode(format!("karolin:{KEY}\n"));
    assert_eq!(
        check_one(&table, with_newline.as_bytes()),
        Err(DenyReason::BadKey)
    );
    // Plain `base64` wraps its output at 76 columns.
    let good = encode_api_key("karolin", KEY);
    let wrapped = format!("{}\n{}", &good[..76], &good[76..]);
    assert_eq!(
        check_one(&table, wrapped.as_bytes()),
        Err(DenyReason::Malformed)
    );
    let spaced = format!(" {good}");
    assert_eq!(
        check_one(&table, spaced.as_bytes()),
        Err(DenyReason::Malformed)
    );
}

#[test]
fn long_value_decodes_on_heap() {
    let key = "k".repeat(2000);
    let table = ClientTable::new(&[ClientEntry::with_key("long", &key)]);
    assert_eq!(
        check_one(&table, encode_api_key("long", &key).as_bytes()),
        Ok("long".into())
    );
    assert_eq!(
        check_one(&table, encode_api_key("long", &key[1..]).as_bytes()),
        Err(DenyReason::BadKey)
    );
}

#[test]
fn value_joined_with_comma_rejected() {
    let good = encode_api_key("karolin", KEY);
    let joined = format!("{good}, {}", encode_api_key("karolin", "bad"));
    assert_eq!(
        check_one(&table(), joined.as_bytes()),
        Err(DenyReason::Malformed)
    );
}

const OLD_KEY: &str = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0";
const NEW_KEY: &str = "9e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e79e7";

/// Unix nanoseconds of an RFC 3339 time.
fn nanos(text: &str) -> i128 {
    crate::config::parse_expires(text)
        .unwrap()
        .unix_timestamp_nanos()
}

fn rotating_table() -> ClientTable {
    let yaml = format!(
        "- clientId: rotating\n  keys:\n    - key: {OLD_KEY}\n      expires: 2027-06-30\n    - keyHash: sha256:{}\n- clientId: single\n  key: {KEY}\n",
        hex::encode(Sha256::digest(NEW_KEY.as_bytes()))
    );
    let entries: Vec<ClientEntry> = serde_yaml::from_str(&yaml).unwrap();
    ClientTable::new(&entries)
}

fn check_at(
    table: &ClientTable,
    client_id: &str,
    key: &str,
    now: &str,
) -> Result<String, DenyReason> {
    let value = encode_api_key(client_id, key);
    table
        .check_at(std::iter::once(value.as_bytes()), nanos(now))
        .map(|id| id.to_string())
}

#[test]
fn either_key_passes() {
    let table = rotating_table();
    let before = "2027-06-30T23:59:59Z";
    assert_eq!(
        check_at(&table, "rotating", OLD_KEY, before),
        Ok("rotating".into())
    );
    assert_eq!(
        check_at(&table, "rotating", NEW_KEY, before),
        Ok("rotating".into())
    );
    assert_eq!(
        check_at(&table, "rotating", KEY, before),
        Err(DenyReason::BadKey)
    );
    assert_eq!(
        check_at(&table, "single", OLD_KEY, before),
        Err(DenyReason::BadKey)
    );
    assert_eq!(check_at(&table, "single", KEY, before), Ok("single".into()));
}

#[test]
fn expired_key_has_own_reason() {
    let table = rotating_table();
    let after = "2027-07-01T00:00:00Z";
    assert_eq!(
        check_at(&table, "rotating", OLD_KEY, after),
        Err(DenyReason::Expired)
    );
    assert_eq!(
        check_at(&table, "rotating", NEW_KEY, after),
        Ok("rotating".into())
    );
    assert_eq!(
        check_at(&table, "rotating", "other", after),
        Err(DenyReason::BadKey)
    );
    assert_eq!(
        check_at(&table, "nobody", OLD_KEY, after),
        Err(DenyReason::UnknownClient)
    );
}

#[test]
fn comparisons_follow_largest_client() {
    assert_eq!(table().comparisons, 1);
    assert_eq!(rotating_table().comparisons, 2);
    assert_eq!(ClientTable::new(&[]).comparisons, 1);
}

#[test]
fn reason_labels_unique() {
    let labels: std::collections::HashSet<&str> = DenyReason::ALL
        .iter()
        .map(|reason| reason.as_str())
        .collect();
    assert_eq!(labels.len(), DenyReason::ALL.len());
    for (index, reason) in DenyReason::ALL.iter().enumerate() {
        assert_eq!(
            *reason as usize, index,
            "{reason:?} must sit at its index in ALL"
        );
    }
}
