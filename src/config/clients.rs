//! The `allowedClients` list: each entry's rules, checked while the YAML is
//! read so errors carry a line and column, and the rules across entries.
//!
//! An entry names its keys in a short form on the entry (`key` or `keyHash`,
//! with an optional `expires` for that key), in a `keys` list, or both. Every
//! key listed passes until it expires, so a client can move to a new key
//! while the old one still works.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::keys::{one_secret, parse_expires, present, unknown_setting, KeyItem};
pub use super::keys::{ClientKey, KeyForm, KeyPlace};
use super::units::RateLimit;

/// Maximum length of a clientId, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Keys shorter than this load with a warning; generated keys have 64 characters.
pub const SHORT_KEY_CHARS: usize = 32;

/// Maximum number of keys of one client. Every key check compares as many
/// digests as the client with the most keys has, so this bounds its cost.
pub const MAX_KEYS_PER_CLIENT: usize = 16;

/// One configured client: its id, the keys it may present and its own rate limit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientEntry {
    pub client_id: String,
    /// At least one key; the short form on the entry comes first.
    pub keys: Vec<ClientKey>,
    /// `None` means `gateway.rateLimit` applies.
    pub rate_limit: Option<RateLimit>,
}

// Keys are secrets: debug output shows the clientId and the key count only.
impl fmt::Debug for ClientEntry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientEntry")
            .field("client_id", &self.client_id)
            .field("keys", &self.keys.len())
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl ClientEntry {
    /// Builds an entry with one plain key that never expires and the default rate limit.
    pub fn with_key(client_id: &str, key: &str) -> Self {
        ClientEntry {
            client_id: client_id.to_string(),
            keys: vec![ClientKey::plain(key, None, KeyPlace::Entry)],
            rate_limit: None,
        }
    }
}

/// Checks a clientId: 1 to 128 bytes of UTF-8, no control characters, no whitespace, no `:`.
pub fn check_client_id(client_id: &str) -> Result<(), String> {
    if client_id.is_empty() {
        return Err("clientId is empty".into());
    }
    if client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(format!(
            "clientId is {} bytes long; the maximum is {MAX_CLIENT_ID_BYTES}",
            client_id.len()
        ));
    }
    if client_id.contains(':') {
        return Err(
            "clientId contains ':', which separates the clientId from the key in x-api-key".into(),
        );
    }
    if client_id
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err("clientId contains whitespace or a control character".into());
    }
    Ok(())
}

impl<'de> Deserialize<'de> for ClientEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

/// The fields of an entry as read, before the rules across them are checked.
#[derive(Default)]
struct EntryFields {
    client_id: Option<Option<String>>,
    key: Option<Option<String>>,
    key_hash: Option<Option<String>>,
    expires: Option<Option<String>>,
    keys: Option<Option<Vec<KeyItem>>>,
    rate_limit: Option<Option<RateLimit>>,
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = ClientEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(
            "a client entry with clientId, key, keyHash or keys, and an optional rateLimit",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientEntry, A::Error> {
        let mut fields = EntryFields::default();
        while let Some(name) = map.next_key::<String>()? {
            let written_twice = match name.as_str() {
                "keys" => fields.keys.is_some(),
                "rateLimit" => fields.rate_limit.is_some(),
                _ => {
                    let slot =
                        match name.as_str() {
                            "clientId" => &mut fields.client_id,
                            "key" => &mut fields.key,
                            "keyHash" => &mut fields.key_hash,
                            "expires" => &mut fields.expires,
                            other => return Err(de::Error::custom(unknown_setting(
                                other,
                                "a client entry",
                                "an entry has clientId, key, keyHash, expires, keys and rateLimit",
                            ))),
                        };
                    slot.is_some()
                }
            };
            if written_twice {
                return Err(de::Error::custom(format!(
                    "{name} is written twice in one client entry"
                )));
            }
            // Plain scalars such as `no`, `0123` or `1_000` arrive as the exact text written.
            match name.as_str() {
                "clientId" => fields.client_id = Some(map.next_value()?),
                "key" => fields.key = Some(map.next_value()?),
                "keyHash" => fields.key_hash = Some(map.next_value()?),
                "expires" => fields.expires = Some(map.next_value()?),
                "rateLimit" => fields.rate_limit = Some(map.next_value()?),
                _ => fields.keys = Some(map.next_value()?),
            }
        }
        fields.into_entry()
    }
}

impl EntryFields {
    fn into_entry<E: de::Error>(self) -> Result<ClientEntry, E> {
        let Some(Some(client_id)) = self.client_id else {
            return Err(E::custom("clientId is missing or null in a client entry"));
        };
        check_client_id(&client_id)
            .map_err(|reason| E::custom(format!("{reason} (clientId {client_id:?})")))?;
        let within = format!("the entry of clientId {client_id:?}");
        let named = |reason: String| E::custom(format!("{reason} for clientId {client_id:?}"));

        let key = present::<E>(self.key, "key", &within)?;
        let key_hash = present::<E>(self.key_hash, "keyHash", &within)?;
        let expires = present::<E>(self.expires, "expires", &within)?
            .map(|text| parse_expires(&text))
            .transpose()
            .map_err(named)?;
        let items = match self.keys {
            None => Vec::new(),
            Some(Some(items)) => items,
            Some(None) => {
                return Err(E::custom(format!(
                    "keys is null in {within}; list at least one key or remove the line"
                )))
            }
        };

        let mut keys = Vec::with_capacity(1 + items.len());
        match one_secret(key, key_hash, &within).map_err(named)? {
            Some(secret) => keys.push(secret.into_key(expires, KeyPlace::Entry)),
            None if expires.is_some() => {
                return Err(E::custom(format!(
                    "expires on {within} belongs to its key or keyHash, and it has neither; put expires inside each item of keys"
                )))
            }
            None => {}
        }
        for (index, item) in items.into_iter().enumerate() {
            keys.push(item.secret.into_key(item.expires, KeyPlace::Item(index)));
        }

        if keys.is_empty() {
            return Err(E::custom(format!(
                "key is missing or null for clientId {client_id:?}; give the entry a key, a keyHash or a keys list"
            )));
        }
        if keys.len() > MAX_KEYS_PER_CLIENT {
            return Err(E::custom(format!(
                "clientId {client_id:?} has {} keys; the maximum is {MAX_KEYS_PER_CLIENT}, so remove keys that are no longer used",
                keys.len()
            )));
        }
        Ok(ClientEntry {
            client_id,
            keys,
            rate_limit: self.rate_limit.flatten(),
        })
    }
}

/// Checks the rules across entries: unique clientIds and unique keys.
/// Returns the warnings that do not stop the file from loading.
pub fn check_list(entries: &[ClientEntry]) -> Result<Vec<String>, String> {
    check_list_at(entries, OffsetDateTime::now_utc())
}

/// Checks the rules across entries, with `now` deciding which keys have expired.
pub fn check_list_at(entries: &[ClientEntry], now: OffsetDateTime) -> Result<Vec<String>, String> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut digests: HashMap<[u8; 32], (usize, KeyPlace)> = HashMap::with_capacity(entries.len());
    let mut warnings = Vec::new();

    for (index, entry) in entries.iter().enumerate() {
        if let Some(first) = ids.insert(&entry.client_id, index) {
            return Err(format!(
                "allowedClients[{first}] and allowedClients[{index}] both have clientId {:?}; each clientId must be listed once",
                entry.client_id
            ));
        }
        for key in &entry.keys {
            if let Some((first, first_place)) = digests.insert(key.digest, (index, key.place)) {
                return Err(if first == index {
                    format!(
                        "allowedClients[{index}] ({:?}) has the same key twice, in {first_place} and in {}; list each key once",
                        entry.client_id, key.place
                    )
                } else {
                    format!(
                        "allowedClients[{first}] ({:?}) and allowedClients[{index}] ({:?}) have the same key; give each client its own key",
                        entries[first].client_id, entry.client_id
                    )
                });
            }
            warnings.extend(key_warning(index, entry, key, now));
        }
    }
    Ok(warnings)
}

/// Returns the warning for a key that is short or has already expired.
fn key_warning(
    index: usize,
    entry: &ClientEntry,
    key: &ClientKey,
    now: OffsetDateTime,
) -> Option<String> {
    let name = format!("allowedClients[{index}] ({:?})", entry.client_id);
    if let Some(expires) = key.expires.filter(|_| key.is_expired_at(now)) {
        let when = expires
            .format(&Rfc3339)
            .unwrap_or_else(|_| expires.to_string());
        return Some(format!(
            "{name}: {} expired at {when} and no longer passes; remove it",
            key.place
        ));
    }
    match key.form {
        KeyForm::Plain { chars } if chars < SHORT_KEY_CHARS => Some(format!(
            "{name}: {} has {chars} characters; generated keys have 64, use at least {SHORT_KEY_CHARS}",
            key.place
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
