//! The keys of one client entry: a plain `key`, a `keyHash`, an optional
//! `expires`, and the items of a `keys` list, each checked while the YAML is
//! read so errors carry a line and column.
//!
//! Only digests are kept after parsing: a plain key is hashed at once, and a
//! `keyHash` already is one. The text of a plain key is not stored.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

/// The prefix of a `keyHash` value; the only digest keygate reads.
pub const KEY_HASH_PREFIX: &str = "sha256:";

/// One key a client may present.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    pub form: KeyForm,
    /// The first moment at which the key no longer passes; `None` for a key that never expires.
    pub expires: Option<OffsetDateTime>,
    pub place: KeyPlace,
}

/// The form in which a key is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyForm {
    /// Plain text, with its length in characters.
    Plain { chars: usize },
    /// A `keyHash`, whose key length is unknown.
    Hashed,
}

/// The place of a key in its entry, used to name it in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPlace {
    /// `key` or `keyHash` on the entry itself.
    Entry,
    /// An item of the entry's `keys` list.
    Item(usize),
}

impl fmt::Display for KeyPlace {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPlace::Entry => formatter.write_str("the entry's key"),
            KeyPlace::Item(index) => write!(formatter, "keys[{index}]"),
        }
    }
}

// Digests stand in for keys: debug output leaves them out.
impl fmt::Debug for ClientKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientKey")
            .field("form", &self.form)
            .field("expires", &self.expires)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Builds a key from its plain text, which is hashed and then dropped.
    pub fn plain(key: &str, expires: Option<OffsetDateTime>, place: KeyPlace) -> Self {
        ClientKey {
            digest: Sha256::digest(key.as_bytes()).into(),
            form: KeyForm::Plain {
                chars: key.chars().count(),
            },
            expires,
            place,
        }
    }

    /// Returns whether the key has expired at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|expires| now >= expires)
    }
}

/// Checks a plain key: not empty, and no control characters (a YAML block scalar would add a newline).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.chars().any(char::is_control) {
        return Err(
            "key contains a control character such as a newline; write it on one line".into(),
        );
    }
    Ok(())
}

/// Parses a `keyHash` value, `sha256:` and 64 hex characters of either case.
/// The error never repeats the value.
pub fn parse_key_hash(text: &str) -> Result<[u8; 32], String> {
    let invalid = || {
        "invalid keyHash: write \"sha256:\" followed by the 64 hex characters of the key's SHA-256 digest, as `keygate generate-client --hash` prints it".to_string()
    };
    let hex_digits = text.strip_prefix(KEY_HASH_PREFIX).ok_or_else(invalid)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| invalid())?;
    Ok(digest)
}

/// Parses an `expires` value: an RFC 3339 time such as `2027-06-30T12:00:00Z`,
/// or a date `YYYY-MM-DD`, which means the end of that day in UTC.
pub fn parse_expires(text: &str) -> Result<OffsetDateTime, String> {
    let invalid = |detail: String| {
        format!("invalid expires {text:?} ({detail}); write an RFC 3339 time such as \"2027-06-30T12:00:00Z\", or a date such as \"2027-06-30\" for the end of that day in UTC")
    };
    if let Some(date) = parse_date(text) {
        let date = date.map_err(invalid)?;
        // A key dated 2027-06-30 passes until 2027-07-01T00:00:00Z.
        let day_after = date
            .next_day()
            .ok_or_else(|| invalid("the date is too late".into()))?;
        return Ok(day_after.midnight().assume_utc());
    }
    OffsetDateTime::parse(text, &Rfc3339).map_err(|err| invalid(err.to_string()))
}

/// Reads `YYYY-MM-DD`. Returns `None` when the text does not have that shape,
/// and an error for a shape with an impossible date such as `2027-02-30`.
fn parse_date(text: &str) -> Option<Result<Date, String>> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(index, byte)| index == 4 || index == 7 || byte.is_ascii_digit());
    if !shaped {
        return None;
    }
    // Every part is ASCII digits of a fixed width, so these parses cannot fail.
    let year: i32 = text[0..4].parse().ok()?;
    let month: u8 = text[5..7].parse().ok()?;
    let day: u8 = text[8..10].parse().ok()?;
    let date = Month::try_from(month)
        .and_then(|month| Date::from_calendar_date(year, month, day))
        .map_err(|err| err.to_string());
    Some(date)
}

/// An item of a `keys` list, before its place is known.
pub(super) struct KeyItem {
    pub secret: KeySecret,
    pub expires: Option<OffsetDateTime>,
}

/// The key of an item or entry as written.
pub(super) enum KeySecret {
    Plain(String),
    Hash([u8; 32]),
}

impl KeySecret {
    pub fn into_key(self, expires: Option<OffsetDateTime>, place: KeyPlace) -> ClientKey {
        match self {
            KeySecret::Plain(key) => ClientKey::plain(&key, expires, place),
            KeySecret::Hash(digest) => ClientKey {
                digest,
                form: KeyForm::Hashed,
                expires,
                place,
            },
        }
    }
}

/// Builds the secret from a `key` and a `keyHash` field. Giving both is an error, and giving neither returns `None`.
pub(super) fn one_secret(
    key: Option<String>,
    key_hash: Option<String>,
    within: &str,
) -> Result<Option<KeySecret>, String> {
    match (key, key_hash) {
        (Some(_), Some(_)) => Err(format!(
            "{within} has both key and keyHash; write one of them, and list further keys under keys"
        )),
        (Some(key), None) => {
            check_key(&key)?;
            Ok(Some(KeySecret::Plain(key)))
        }
        (None, Some(hash)) => Ok(Some(KeySecret::Hash(parse_key_hash(&hash)?))),
        (None, None) => Ok(None),
    }
}

impl<'de> Deserialize<'de> for KeyItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyItemVisitor)
    }
}

struct KeyItemVisitor;

impl KeyItemVisitor {
    fn not_a_string<E: de::Error>() -> E {
        E::custom("an item of keys that is a number, boolean or null would not be read as the text written; quote it, or write it as `- key: ...`")
    }
}

impl<'de> Visitor<'de> for KeyItemVisitor {
    type Value = KeyItem;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a key, or a mapping with key or keyHash and an optional expires")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<KeyItem, E> {
        check_key(value).map_err(|reason| E::custom(format!("{reason} in keys")))?;
        Ok(KeyItem {
            secret: KeySecret::Plain(value.to_string()),
            expires: None,
        })
    }

    fn visit_bool<E: de::Error>(self, _value: bool) -> Result<KeyItem, E> {
        Err(Self::not_a_string())
    }

    fn visit_i64<E: de::Error>(self, _value: i64) -> Result<KeyItem, E> {
        Err(Self::not_a_string())
    }

    fn visit_u64<E: de::Error>(self, _value: u64) -> Result<KeyItem, E> {
        Err(Self::not_a_string())
    }

    fn visit_f64<E: de::Error>(self, _value: f64) -> Result<KeyItem, E> {
        Err(Self::not_a_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeyItem, E> {
        Err(Self::not_a_string())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyItem, A::Error> {
        let mut key: Option<Option<String>> = None;
        let mut key_hash: Option<Option<String>> = None;
        let mut expires: Option<Option<String>> = None;
        while let Some(name) = map.next_key::<String>()? {
            let slot = match name.as_str() {
                "key" => &mut key,
                "keyHash" => &mut key_hash,
                "expires" => &mut expires,
                other => {
                    return Err(de::Error::custom(unknown_setting(
                        other,
                        "an item of keys",
                        "an item has key or keyHash, and expires",
                    )))
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!(
                    "{name} is written twice in one item of keys"
                )));
            }
            // Plain scalars such as `0123` arrive as the exact text written.
            *slot = Some(map.next_value::<Option<String>>()?);
        }

        let key = present(key, "key", "an item of keys")?;
        let key_hash = present(key_hash, "keyHash", "an item of keys")?;
        let expires = present(expires, "expires", "an item of keys")?
            .map(|text| parse_expires(&text))
            .transpose()
            .map_err(de::Error::custom)?;
        let secret = one_secret(key, key_hash, "an item of keys")
            .map_err(de::Error::custom)?
            .ok_or_else(|| de::Error::custom("an item of keys has neither key nor keyHash"))?;
        Ok(KeyItem { secret, expires })
    }
}

/// Describes an unknown setting `name` found `within` a client entry. A long
/// name, or one with characters other than letters, is left out of the
/// message: it is most likely a key pasted on the wrong line.
pub(super) fn unknown_setting(name: &str, within: &str, known: &str) -> String {
    let shown = name.len() <= 24 && name.chars().all(|c| c.is_ascii_alphabetic());
    if shown {
        format!("unknown setting {name:?} in {within}; {known}")
    } else {
        format!("unknown setting in {within} (its name is not shown, as it may be a key); {known}")
    }
}

/// Turns a field that was written with no value (`key:` or `key: ~`) into an error.
pub(super) fn present<E: de::Error>(
    field: Option<Option<String>>,
    name: &str,
    within: &str,
) -> Result<Option<String>, E> {
    match field {
        None => Ok(None),
        Some(Some(value)) => Ok(Some(value)),
        Some(None) => Err(E::custom(format!(
            "{name} is missing or null in {within}; write a value or remove the line"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_forms() {
        let hex_digits = "ab".repeat(32);
        let digest = parse_key_hash(&format!("sha256:{hex_digits}")).unwrap();
        assert_eq!(digest, [0xab; 32]);
        let upper = parse_key_hash(&format!("sha256:{}", hex_digits.to_uppercase())).unwrap();
        assert_eq!(upper, [0xab; 32]);
        for bad in [
            hex_digits.clone(),
            format!("sha1:{hex_digits}"),
            format!("sha256:{}", &hex_digits[2..]),
            format!("sha256:{hex_digits}00"),
            format!("sha256:{}zz", &hex_digits[2..]),
            format!("sha256: {}", &hex_digits[1..]),
        ] {
            let err = parse_key_hash(&bad).unwrap_err();
            assert!(err.contains("invalid keyHash"), "{bad}: {err}");
            assert!(
                !err.contains(&hex_digits[2..]),
                "the value must not appear: {err}"
            );
        }
    }

    #[test]
    fn date_means_end_of_day_utc() {
        let expires = parse_expires("2027-06-30").unwrap();
        assert_eq!(expires, parse_expires("2027-07-01T00:00:00Z").unwrap());
    }

    #[test]
    fn rfc3339_with_offset() {
        let expires = parse_expires("2027-06-30T12:00:00+02:00").unwrap();
        assert_eq!(expires, parse_expires("2027-06-30T10:00:00Z").unwrap());
        let fraction = parse_expires("2027-06-30T10:00:00.5Z").unwrap();
        assert!(fraction > expires);
    }

    #[test]
    fn bad_expires_rejected() {
        for bad in [
            "2027-02-30",
            "2027-13-01",
            "2027-6-30",
            "30.06.2027",
            "2027-06-30T12:00:00",
            "tomorrow",
            "",
        ] {
            let err = parse_expires(bad).unwrap_err();
            assert!(err.contains("invalid expires"), "{bad}: {err}");
        }
    }

    #[test]
    fn expiry_is_exclusive() {
        let key = ClientKey::plain(
            "k",
            Some(parse_expires("2027-06-30").unwrap()),
            KeyPlace::Entry,
        );
        let last_moment = parse_expires("2027-06-30T23:59:59.999Z").unwrap();
        let next_day = parse_expires("2027-07-01T00:00:00Z").unwrap();
        assert!(!key.is_expired_at(last_moment));
        assert!(key.is_expired_at(next_day));
    }

    #[test]
    fn debug_hides_digest() {
        let key = ClientKey::plain("secret-value", None, KeyPlace::Item(1));
        let text = format!("{key:?}");
        assert!(!text.contains("secret-value"), "{text}");
        assert!(!text.contains(&hex::encode(key.digest)[..8]), "{text}");
        assert!(!text.contains("digest"), "{text}");
    }
}
