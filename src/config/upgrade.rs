//! `gateway.upgradeSocket`: the Unix socket over which a running keygate
//! hands its listening sockets to a new one started with `run --upgrade`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The default path. /tmp is writable by every user, also in a container
/// image without other writable folders.
pub const DEFAULT_UPGRADE_SOCKET: &str = "/tmp/keygate-upgrade.sock";

/// The longest path accepted, in bytes. A Unix socket path has at most
/// 107 bytes on Linux, and the new keygate binds a second, private socket
/// whose path is 11 bytes longer (see `crate::handover`).
pub const MAX_UPGRADE_SOCKET_BYTES: usize = 96;

/// The absolute path of the handover socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeSocket(pub PathBuf);

impl UpgradeSocket {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "invalid upgradeSocket {text:?}: write an absolute path, like \"{DEFAULT_UPGRADE_SOCKET}\", because the running and the new keygate may have different working folders"
            ));
        }
        if text.ends_with('/') || text.contains('\0') {
            return Err(format!(
                "invalid upgradeSocket {text:?}: write the path of a file, without a NUL byte or a trailing '/'"
            ));
        }
        if text.len() > MAX_UPGRADE_SOCKET_BYTES {
            return Err(format!(
                "upgradeSocket is {} bytes long, more than the {MAX_UPGRADE_SOCKET_BYTES} bytes a Unix socket path may have here; pick a shorter path",
                text.len()
            ));
        }
        Ok(UpgradeSocket(PathBuf::from(text)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for UpgradeSocket {
    fn default() -> Self {
        UpgradeSocket(PathBuf::from(DEFAULT_UPGRADE_SOCKET))
    }
}

impl fmt::Display for UpgradeSocket {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0.display())
    }
}

impl<'de> Deserialize<'de> for UpgradeSocket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl Visitor<'_> for PathVisitor {
            type Value = UpgradeSocket;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an absolute path such as \"/tmp/keygate-upgrade.sock\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<UpgradeSocket, E> {
                UpgradeSocket::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PathVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_socket_forms() {
        assert_eq!(
            UpgradeSocket::parse("/run/keygate/upgrade.sock").unwrap().0,
            PathBuf::from("/run/keygate/upgrade.sock")
        );
        let longest = format!("/{}", "a".repeat(MAX_UPGRADE_SOCKET_BYTES - 1));
        assert!(UpgradeSocket::parse(&longest).is_ok());
    }

    #[test]
    fn upgrade_socket_rules() {
        let too_long = format!("/{}", "a".repeat(MAX_UPGRADE_SOCKET_BYTES));
        for (text, expected) in [
            ("keygate.sock", "absolute path"),
            ("", "absolute path"),
            ("/tmp/", "trailing '/'"),
            ("/tmp/a\0b", "NUL byte"),
            (too_long.as_str(), "bytes long"),
        ] {
            let err = UpgradeSocket::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn upgrade_socket_from_yaml() {
        let socket: UpgradeSocket = serde_yaml::from_str("/tmp/k.sock").unwrap();
        assert_eq!(socket.path(), Path::new("/tmp/k.sock"));
        let err = serde_yaml::from_str::<UpgradeSocket>("[a]").unwrap_err();
        assert!(err.to_string().contains("absolute path"), "{err}");
    }
}
