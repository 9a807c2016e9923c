//! The allowed-clients table and the key check: parse one `x-api-key`
//! value, find the client, and compare key digests in constant time.
//!
//! Keys are compared as SHA-256 digests with `subtle`, so the comparison
//! takes the same time whatever the key's length or how much of it matches.
//! Every check compares the presented digest with as many stored digests as
//! the client with the most keys has, filling up with a dummy digest, and
//! combines the results without stopping at a match. So the work does not
//! depend on which key matched, or on how many keys the client has. The
//! clientId is found with a hash map lookup, whose time can depend on the
//! clientId. An unknown clientId runs the same comparisons, against the dummy
//! digest only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

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
    /// The key matched one of the client's keys, but that key has expired.
    Expired,
}

impl DenyReason {
    pub const ALL: [DenyReason; 5] = [
        DenyReason::Missing,
        DenyReason::Malformed,
        DenyReason::UnknownClient,
        DenyReason::BadKey,
        DenyReason::Expired,
    ];

    /// Returns the value of the `reason` label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Malformed => "malformed",
            DenyReason::UnknownClient => "unknown_client",
            DenyReason::BadKey => "bad_key",
            DenyReason::Expired => "expired",
        }
    }
}

/// One snapshot of the allowed clients, keyed by clientId.
pub struct ClientTable {
    keys: HashMap<Arc<str>, Box<[StoredKey]>>,
    /// The maximum number of keys of one client, which is the number of comparisons every check makes.
    comparisons: usize,
    /// The key compared in place of missing ones. Its digest is random, so no presented key matches it.
    dummy: StoredKey,
}

/// A key as the check needs it: its digest and when it stops passing.
#[derive(Clone, Copy)]
struct StoredKey {
    digest: [u8; 32],
    /// Unix time in nanoseconds from which the key no longer passes; `i128::MAX` for never.
    expires_at: i128,
}

impl ClientTable {
    /// Builds the table from entries whose keys are already hashed.
    pub fn new(entries: &[ClientEntry]) -> Self {
        let keys: HashMap<Arc<str>, Box<[StoredKey]>> = entries
            .iter()
            .map(|entry| {
                let stored = entry
                    .keys
                    .iter()
                    .map(|key| StoredKey {
                        digest: key.digest,
                        expires_at: key
                            .expires
                            .map_or(i128::MAX, |expires| expires.unix_timestamp_nanos()),
                    })
                    .collect();
                (entry.client_id.as_str().into(), stored)
            })
            .collect();
        let comparisons = keys
            .values()
            .map(|stored| stored.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut digest = [0u8; 32];
        if getrandom::fill(&mut digest).is_err() {
            digest = Sha256::digest(b"keygate dummy digest for unknown clients").into();
        }
        ClientTable {
            keys,
            comparisons,
            dummy: StoredKey {
                digest,
                expires_at: i128::MAX,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, client_id: &str) -> bool {
        self.keys.contains_key(client_id)
    }

    /// Iterates over the configured clientIds.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(|id| &**id)
    }

    /// Checks the `x-api-key` values of one request at the current time and returns the clientId they prove.
    ///
    /// # Errors
    ///
    /// The reason the request is refused; every reason gets the same response.
    pub fn check<'v>(
        &self,
        values: impl Iterator<Item = &'v [u8]>,
    ) -> Result<&Arc<str>, DenyReason> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        self.check_at(values, i128::try_from(now).unwrap_or(i128::MAX))
    }

    /// Checks the `x-api-key` values of one request at `now`, in Unix nanoseconds.
    ///
    /// # Errors
    ///
    /// The reason the request is refused; every reason gets the same response.
    pub fn check_at<'v>(
        &self,
        mut values: impl Iterator<Item = &'v [u8]>,
        now: i128,
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
        let (stored_id, stored): (Option<&Arc<str>>, &[StoredKey]) =
            match self.keys.get_key_value(client_id) {
                Some((id, keys)) => (Some(id), keys),
                None => (None, &[]),
            };
        let (in_force, expired) = self.compare(&presented, stored, now);
        match (stored_id, in_force, expired) {
            (Some(id), true, _) => Ok(id),
            (Some(_), false, true) => Err(DenyReason::Expired),
            (Some(_), false, false) => Err(DenyReason::BadKey),
            (None, _, _) => Err(DenyReason::UnknownClient),
        }
    }

    /// Compares `presented` with every stored key, and with the dummy in place
    /// of missing ones, without stopping at a match. Returns whether a key in
    /// force matched, and whether an expired key matched.
    fn compare(&self, presented: &[u8; 32], stored: &[StoredKey], now: i128) -> (bool, bool) {
        let mut in_force = Choice::from(0);
        let mut expired = Choice::from(0);
        for index in 0..self.comparisons {
            let key = stored.get(index).unwrap_or(&self.dummy);
            let equal = presented.ct_eq(&key.digest);
            let live = Choice::from(u8::from(now < key.expires_at));
            in_force |= equal & live;
            expired |= equal & !live;
        }
        (in_force.into(), expired.into())
    }
}

/// Encodes `clientId:key` as an `x-api-key` value (standard base64, padded, one line).
pub fn encode_api_key(client_id: &str, key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{key}"))
}

#[cfg(test)]
mod tests;
