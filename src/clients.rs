//! The allowed-clients table and the key check: parse one `x-api-key`
//! value, find the client, and compare key digests in constant time.
//!
//! Keys are compared as SHA-256 digests with `subtle`, so the comparison
//! takes the same time whatever the key's length or how much of it matches.
//! The clientId is found with a hash map lookup, whose time can depend on the
//! clientId. An unknown clientId still runs one digest comparison against a
//! dummy digest, so unknown and known clients cost the same work.

use std::collections::HashMap;
use std::sync::Arc;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientEntry;

/// Standard base64 with or without padding; whitespace, newlines and
/// non-zero trailing bits are rejected.
const API_KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decoded values up to this size are decoded on the stack.
const STACK_DECODE_BYTES: usize = 512;

/// The reason a request was refused; the label values are a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No `x-api-key` header, or an empty one.
    Missing,
    /// Several headers, bad base64, invalid UTF-8 or no `:`.
    Malformed,
    UnknownClient,
    BadKey,
}

impl DenyReason {
    pub const ALL: [DenyReason; 4] = [
        DenyReason::Missing,
        DenyReason::Malformed,
        DenyReason::UnknownClient,
        DenyReason::BadKey,
    ];

    /// Returns the value of the `reason` label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Malformed => "malformed",
            DenyReason::UnknownClient => "unknown_client",
            DenyReason::BadKey => "bad_key",
        }
    }
}

/// One snapshot of the allowed clients, keyed by clientId.
pub struct ClientTable {
    digests: HashMap<Arc<str>, [u8; 32]>,
    dummy_digest: [u8; 32],
}

impl ClientTable {
    /// Builds the table, hashing every key once.
    pub fn new(entries: &[ClientEntry]) -> Self {
        let digests = entries
            .iter()
            .map(|entry| {
                (
                    entry.client_id.as_str().into(),
                    Sha256::digest(entry.key.as_bytes()).into(),
                )
            })
            .collect();
        // Random so that no presented key can match it.
        let mut dummy_digest = [0u8; 32];
        if getrandom::fill(&mut dummy_digest).is_err() {
            dummy_digest = Sha256::digest(b"keygate dummy digest for unknown clients").into();
        }
        ClientTable {
            digests,
            dummy_digest,
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn contains(&self, client_id: &str) -> bool {
        self.digests.contains_key(client_id)
    }

    /// Iterates over the configured clientIds.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.digests.keys().map(|id| &**id)
    }

    /// Checks the `x-api-key` values of one request and returns the clientId it proves.
    ///
    /// # Errors
    ///
    /// The reason the request is refused; every reason gets the same response.
    pub fn check<'v>(
        &self,
        mut values: impl Iterator<Item = &'v [u8]>,
    ) -> Result<&Arc<str>, DenyReason> {
        let Some(value) = values.next() else {
            return Err(DenyReason::Missing);
        };
        if values.next().is_some() {
            return Err(DenyReason::Malformed);
        }
        if value.is_empty() {
            return Err(DenyReason::Missing);
        }

        let mut stack = [0u8; STACK_DECODE_BYTES];
        let mut heap = Vec::new();
        let decoded: &[u8] = if base64::decoded_len_estimate(value.len()) <= STACK_DECODE_BYTES {
            let length = API_KEY_BASE64
                .decode_slice(value, &mut stack)
                .map_err(|_| DenyReason::Malformed)?;
            &stack[..length]
        } else {
            API_KEY_BASE64
                .decode_vec(value, &mut heap)
                .map_err(|_| DenyReason::Malformed)?;
            &heap
        };
        let decoded = std::str::from_utf8(decoded).map_err(|_| DenyReason::Malformed)?;
        let (client_id, key) = decoded.split_once(':').ok_or(DenyReason::Malformed)?;

        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let (stored_id, stored) = match self.digests.get_key_value(client_id) {
            Some((id, digest)) => (Some(id), digest),
            None => (None, &self.dummy_digest),
        };
        let matches: bool = presented.ct_eq(stored).into();
        match (stored_id, matches) {
            (Some(id), true) => Ok(id),
            (Some(_), false) => Err(DenyReason::BadKey),
            (None, _) => Err(DenyReason::UnknownClient),
        }
    }
}

/// Encodes `clientId:key` as an `x-api-key` value (standard base64, padded, one line).
pub fn encode_api_key(client_id: &str, key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";

    fn table() -> ClientTable {
        ClientTable::new(&[
            ClientEntry {
                client_id: "karolin".into(),
                key: KEY.into(),
                rate_limit: None,
            },
            ClientEntry {
                client_id: "colon".into(),
                key: "ab:cd".into(),
                rate_limit: None,
            },
            ClientEntry {
                client_id: "café".into(),
                key: "k1".into(),
                rate_limit: None,
            },
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
        let with_newline =
            base64::engine::general_purpose::STANDARD.encode(format!("karolin:{KEY}\n"));
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
        let table = ClientTable::new(&[ClientEntry {
            client_id: "long".into(),
            key: key.clone(),
            rate_limit: None,
        }]);
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
}
