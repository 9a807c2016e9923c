//! The TLS settings of the `gateway` section: `tls` for the listeners and
//! `upstreamCa` for `https://` backends. The config contains only the file
//! paths, and [`crate::tls`] reads the files.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `gateway.tls`: the listeners serve HTTPS with this certificate and key,
/// and with `clientCa` they require a client certificate signed by it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// The certificate chain in PEM, server certificate first.
    pub cert: PemPath,
    /// The private key of the server certificate in PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PemPath,
    /// The CAs that sign client certificates. Without it, no client certificate is requested.
    pub client_ca: Option<PemPath>,
}

/// The path of a PEM file, relative to keygate's working directory unless absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemPath(pub PathBuf);

impl PemPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err(
                "a PEM file path is empty; write a path like \"certificates/server.pem\"".into(),
            );
        }
        if text.contains('\0') {
            return Err(format!(
                "invalid PEM file path {text:?}: it contains a NUL byte"
            ));
        }
        Ok(PemPath(PathBuf::from(text)))
    }
}

impl fmt::Display for PemPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0.display())
    }
}

impl<'de> Deserialize<'de> for PemPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl Visitor<'_> for PathVisitor {
            type Value = PemPath;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a PEM file path such as \"certificates/server.pem\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<PemPath, E> {
                PemPath::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PathVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_forms() {
        let files: TlsFiles =
            serde_yaml::from_str("{cert: certificates/server.pem, key: certificates/server.key}")
                .unwrap();
        assert_eq!(files.cert.0, PathBuf::from("certificates/server.pem"));
        assert_eq!(files.key.0, PathBuf::from("certificates/server.key"));
        assert_eq!(files.client_ca, None);

        let mutual: TlsFiles =
            serde_yaml::from_str("{cert: a.pem, key: a.key, clientCa: cacerts/clients.pem}")
                .unwrap();
        assert_eq!(
            mutual.client_ca,
            Some(PemPath(PathBuf::from("cacerts/clients.pem")))
        );
    }

    #[test]
    fn tls_files_rules() {
        for (yaml, expected) in [
            ("{key: a.key}", "missing field `cert`"),
            ("{cert: a.pem}", "missing field `key`"),
            ("{cert: '', key: a.key}", "path is empty"),
            (
                "{cert: a.pem, key: a.key, clientCA: b.pem}",
                "unknown field",
            ),
            ("{cert: [a.pem], key: a.key}", "invalid type"),
        ] {
            let err = serde_yaml::from_str::<TlsFiles>(yaml).unwrap_err();
            assert!(err.to_string().contains(expected), "{yaml}: {err}");
            assert!(err.location().is_some(), "{yaml}: no location in {err}");
        }
    }
}
