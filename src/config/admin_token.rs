//! `gateway.adminToken`: the SHA-256 digest of a secret that admits a peer
//! outside `adminAllowFrom` to the admin routes. Only the digest is in the
//! file and in memory.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::keys::{parse_key_hash, KEY_HASH_PREFIX};

/// The digest of the admin token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AdminToken(pub [u8; 32]);

// The digest stays out of debug output, and so out of every log line.
impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Parses `sha256:` and 64 hex characters. The error never repeats the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_key_hash(text).map(AdminToken).map_err(|_| {
            format!("invalid adminToken: write \"{KEY_HASH_PREFIX}\" followed by the 64 hex characters of the SHA-256 digest of the token, such as the output of `printf %s \"$TOKEN\" | sha256sum`")
        })
    }
}

impl<'de> Deserialize<'de> for AdminToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TokenVisitor;
        impl Visitor<'_> for TokenVisitor {
            type Value = AdminToken;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("\"sha256:\" followed by 64 hex characters")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<AdminToken, E> {
                AdminToken::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TokenVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digest_forms() {
        let digits = "0f".repeat(32);
        let token = AdminToken::parse(&format!("sha256:{digits}")).unwrap();
        assert_eq!(token.0, [0x0f; 32]);
        let err = AdminToken::parse(&digits).unwrap_err();
        assert!(err.contains("invalid adminToken"), "{err}");
        assert!(!err.contains(&digits), "the value must not appear: {err}");
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }
}
