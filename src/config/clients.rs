//! The `allowedClients` list: each entry's rules, checked while the YAML is
//! read so errors carry a line and column, and the rules across entries.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::units::RateLimit;

/// Maximum length of a clientId, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Keys shorter than this load with a warning; generated keys have 64 characters.
pub const SHORT_KEY_CHARS: usize = 32;

/// One configured client: its id, the key it must present and its own rate limit.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientEntry {
    pub client_id: String,
    pub key: String,
    /// `None` means `gateway.rateLimit` applies.
    pub rate_limit: Option<RateLimit>,
}

// The key is a secret: debug output shows the clientId only.
impl fmt::Debug for ClientEntry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientEntry")
            .field("client_id", &self.client_id)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
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

/// Checks a key: not empty, and no control characters (a YAML block scalar would add a newline).
fn check_key(key: &str) -> Result<(), String> {
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

impl<'de> Deserialize<'de> for ClientEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = ClientEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a client entry with clientId, key and an optional rateLimit")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientEntry, A::Error> {
        let mut client_id: Option<Option<String>> = None;
        let mut key: Option<Option<String>> = None;
        let mut rate_limit: Option<Option<RateLimit>> = None;
        while let Some(name) = map.next_key::<String>()? {
            let slot = match name.as_str() {
                "clientId" => &mut client_id,
                "key" => &mut key,
                "rateLimit" if rate_limit.is_some() => {
                    return Err(de::Error::custom(
                        "rateLimit is written twice in one client entry",
                    ))
                }
                "rateLimit" => {
                    rate_limit = Some(map.next_value()?);
                    continue;
                }
                other => return Err(de::Error::custom(unknown_setting(other))),
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!(
                    "{name} is written twice in one client entry"
                )));
            }
            // Plain scalars such as `no`, `0123` or `1_000` arrive as the exact text written.
            *slot = Some(map.next_value::<Option<String>>()?);
        }

        let Some(Some(client_id)) = client_id else {
            return Err(de::Error::custom(
                "clientId is missing or null in a client entry",
            ));
        };
        check_client_id(&client_id)
            .map_err(|reason| de::Error::custom(format!("{reason} (clientId {client_id:?})")))?;
        let Some(Some(key)) = key else {
            return Err(de::Error::custom(format!(
                "key is missing or null for clientId {client_id:?}"
            )));
        };
        check_key(&key)
            .map_err(|reason| de::Error::custom(format!("{reason} for clientId {client_id:?}")))?;
        Ok(ClientEntry {
            client_id,
            key,
            rate_limit: rate_limit.flatten(),
        })
    }
}

/// Describes an unknown setting in a client entry. A long name is left out
/// of the message: it is most likely a key pasted on the wrong line.
fn unknown_setting(name: &str) -> String {
    let shown = name.len() <= 24 && name.chars().all(|c| c.is_ascii_alphabetic());
    if shown {
        format!(
            "unknown setting {name:?} in a client entry; an entry has clientId, key and rateLimit"
        )
    } else {
        "unknown setting in a client entry (its name is not shown, as it may be a key); an entry has clientId, key and rateLimit".into()
    }
}

/// Checks the rules across entries: unique clientIds and unique keys.
/// Returns the warnings that do not stop the file from loading.
pub fn check_list(entries: &[ClientEntry]) -> Result<Vec<String>, String> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut keys: HashMap<[u8; 32], usize> = HashMap::with_capacity(entries.len());
    let mut warnings = Vec::new();

    for (index, entry) in entries.iter().enumerate() {
        if let Some(first) = ids.insert(&entry.client_id, index) {
            return Err(format!(
                "allowedClients[{first}] and allowedClients[{index}] both have clientId {:?}; each clientId must be listed once",
                entry.client_id
            ));
        }
        let digest: [u8; 32] = Sha256::digest(entry.key.as_bytes()).into();
        if let Some(first) = keys.insert(digest, index) {
            return Err(format!(
                "allowedClients[{first}] ({:?}) and allowedClients[{index}] ({:?}) have the same key; give each client its own key",
                entries[first].client_id, entry.client_id
            ));
        }
        let length = entry.key.chars().count();
        if length < SHORT_KEY_CHARS {
            warnings.push(format!(
                "allowedClients[{index}] ({:?}) has a key of {length} characters; generated keys have 64, use at least {SHORT_KEY_CHARS}",
                entry.client_id
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<ClientEntry>, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
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
        assert_eq!(entries[0].key, "0e12345");
        assert_eq!(entries[1].client_id, "0123");
        assert_eq!(entries[1].key, "1_000");
    }

    #[test]
    fn missing_or_null_key_rejected() {
        for yaml in [
            "- clientId: a\n",
            "- clientId: a\n  key:\n",
            "- clientId: a\n  key: ~\n",
            "- clientId: a\n  key: null\n",
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
        let typo = parse("- clientId: a\n  kye: k\n").unwrap_err();
        assert!(
            typo.to_string().contains("unknown setting \"kye\""),
            "{typo}"
        );
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
    fn multiline_key_rejected() {
        let err = parse("- clientId: a\n  key: |\n    abc\n").unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
    }

    #[test]
    fn list_rules_name_both_entries() {
        let same_id = parse(
            "- clientId: a\n  key: k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1\n- clientId: a\n  key: k2\n",
        )
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
    fn debug_hides_key() {
        let entry = ClientEntry {
            client_id: "a".into(),
            key: "secret-value".into(),
            rate_limit: None,
        };
        assert!(!format!("{entry:?}").contains("secret-value"));
    }

    #[test]
    fn rate_limit_read_per_entry() {
        let entries = parse(
            "- clientId: a\n  key: k1\n  rateLimit: 10/s\n- clientId: b\n  key: k2\n- clientId: c\n  key: k3\n  rateLimit: unlimited\n",
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
        let err =
            parse("- clientId: a\n  key: k1\n- clientId: b\n  key: k2\n  rateLimit: 10/hour\n")
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
}
