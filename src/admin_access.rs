//! Access to the admin routes: a peer inside `adminAllowFrom`, or, when
//! `gateway.adminToken` is set, any peer that sends
//! `Authorization: Bearer <token>` for the token whose SHA-256 digest the
//! file contains. The token is compared as a digest with `subtle`, in constant
//! time, and is never logged.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::GatewaySettings;

/// The authentication scheme of the `Authorization` header that carries the admin token.
const BEARER: &[u8] = b"Bearer";

/// The outcome of the admin access check: how a request was admitted, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAccess {
    /// The peer is inside `adminAllowFrom`.
    AllowedPeer,
    /// The peer is outside `adminAllowFrom` and sent the admin token.
    Token,
    /// The request is rejected, for the reason given, which names no secret.
    Denied(&'static str),
}

/// Decides whether a request from `peer` with these `Authorization` header values may use the admin routes.
pub fn admin_access<'v>(
    settings: &GatewaySettings,
    peer: Option<IpAddr>,
    mut authorization: impl Iterator<Item = &'v [u8]>,
) -> AdminAccess {
    let allowed = peer.is_some_and(|ip| {
        settings
            .admin_allow_from
            .iter()
            .any(|net| net.0.contains(&ip))
    });
    if allowed {
        return AdminAccess::AllowedPeer;
    }
    let Some(token_digest) = &settings.admin_token else {
        return AdminAccess::Denied("peer outside adminAllowFrom");
    };
    let Some(value) = authorization.next() else {
        return AdminAccess::Denied("peer outside adminAllowFrom and no admin token");
    };
    if authorization.next().is_some() {
        return AdminAccess::Denied("several Authorization headers");
    }
    let Some(token) = bearer_token(value) else {
        return AdminAccess::Denied("Authorization is not a Bearer token");
    };
    let presented: [u8; 32] = Sha256::digest(token).into();
    if bool::from(presented.ct_eq(&token_digest.0)) {
        AdminAccess::Token
    } else {
        AdminAccess::Denied("wrong admin token")
    }
}

/// Returns the token of `Bearer <token>`, with the scheme in any case and
/// one or more spaces after it, or `None` for any other value.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    if value.len() <= BEARER.len() || !value[..BEARER.len()].eq_ignore_ascii_case(BEARER) {
        return None;
    }
    let rest = &value[BEARER.len()..];
    if rest[0] != b' ' {
        return None;
    }
    let token = rest.trim_ascii();
    let single = !token.is_empty() && !token.iter().any(u8::is_ascii_whitespace);
    single.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminToken;

    const TOKEN: &[u8] = b"admin-token-0123456789abcdef0123456789abcdef";

    fn settings(token: bool) -> GatewaySettings {
        let mut settings: GatewaySettings =
            serde_yaml::from_str("adminAllowFrom: ['10.0.0.0/8']").unwrap();
        if token {
            settings.admin_token = Some(AdminToken(Sha256::digest(TOKEN).into()));
        }
        settings
    }

    fn access(settings: &GatewaySettings, peer: &str, values: &[&[u8]]) -> AdminAccess {
        admin_access(settings, peer.parse().ok(), values.iter().copied())
    }

    #[test]
    fn allowed_peer_needs_no_token() {
        let settings = settings(true);
        assert_eq!(access(&settings, "10.1.2.3", &[]), AdminAccess::AllowedPeer);
        assert_eq!(
            access(&settings, "10.1.2.3", &[b"Bearer wrong"]),
            AdminAccess::AllowedPeer
        );
    }

    #[test]
    fn token_admits_outside_peer() {
        let settings = settings(true);
        let value = [b"Bearer ".as_slice(), TOKEN].concat();
        assert_eq!(
            access(&settings, "127.0.0.1", &[&value]),
            AdminAccess::Token
        );
        let lower = [b"bearer   ".as_slice(), TOKEN].concat();
        assert_eq!(
            access(&settings, "127.0.0.1", &[&lower]),
            AdminAccess::Token
        );
        assert_eq!(access(&settings, "", &[&value]), AdminAccess::Token);
    }

    #[test]
    fn wrong_or_missing_token_denied() {
        let settings = settings(true);
        let good = [b"Bearer ".as_slice(), TOKEN].concat();
        let cases: [&[&[u8]]; 8] = [
            &[],
            &[b"Bearer wrong-token"],
            &[b"Bearer "],
            &[b"Bearer"],
            &[TOKEN],
            &[b"Basic YWRtaW46YWRtaW4="],
            &[b"BearerX token"],
            &[&good, &good],
        ];
        for values in cases {
            assert!(
                matches!(
                    access(&settings, "127.0.0.1", values),
                    AdminAccess::Denied(_)
                ),
                "{values:?}"
            );
        }
        let with_space = [b"Bearer ".as_slice(), TOKEN, b" extra"].concat();
        assert!(matches!(
            access(&settings, "127.0.0.1", &[&with_space]),
            AdminAccess::Denied(_)
        ));
    }

    #[test]
    fn no_token_configured_denies() {
        let settings = settings(false);
        let value = [b"Bearer ".as_slice(), TOKEN].concat();
        assert_eq!(
            access(&settings, "127.0.0.1", &[&value]),
            AdminAccess::Denied("peer outside adminAllowFrom")
        );
    }

    #[test]
    fn reasons_name_no_secret() {
        let settings = settings(true);
        let value = b"Bearer admin-token-wrong".as_slice();
        let AdminAccess::Denied(reason) = access(&settings, "127.0.0.1", &[value]) else {
            panic!("a wrong token must be denied");
        };
        assert!(!reason.contains("admin-token"), "{reason}");
    }
}
