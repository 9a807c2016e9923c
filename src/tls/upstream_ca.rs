//! The CA bundle of `gateway.upstreamCa`, in the form pingora's rustls
//! connector takes per backend peer.

use std::sync::Arc;

use pingora::utils::tls::WrappedX509;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{parse_certificates, read_pem_file, root_store};
use crate::config::PemPath;

const SETTING: &str = "gateway.upstreamCa";

/// The CAs that `https://` backends are verified against.
pub struct UpstreamCa {
    certificates: Arc<[WrappedX509]>,
    /// Derived from the certificates' bytes. pingora's connection pool does
    /// not tell peers apart by CA, so peers carry this as their group key: a
    /// refresh that changes the bundle never reuses a connection verified
    /// against the old one.
    group_key: u64,
}

impl UpstreamCa {
    pub(super) fn load(path: &PemPath, warnings: &mut Vec<String>) -> Result<Self, String> {
        let bytes = read_pem_file(SETTING, path)?;
        // pingora adds each certificate to a rustls root store on every new
        // connection, so each must pass that check now.
        root_store(SETTING, path, &bytes, warnings)?;

        let mut digest = Sha256::new();
        let mut certificates = Vec::new();
        for (index, der) in parse_certificates(SETTING, path, &bytes)?
            .into_iter()
            .enumerate()
        {
            digest.update(&der);
            let wrapped = WrappedX509::try_new(der.to_vec(), parse_der).map_err(|()| {
                format!(
                    "{SETTING}: certificate {} in {path} is not a valid X.509 certificate",
                    index + 1
                )
            })?;
            certificates.push(wrapped);
        }
        let digest = digest.finalize();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        Ok(UpstreamCa {
            certificates: Arc::from(certificates),
            group_key: u64::from_be_bytes(key),
        })
    }

    /// Returns the certificates as pingora's per-peer CA list.
    pub fn certificates(&self) -> Arc<[WrappedX509]> {
        Arc::clone(&self.certificates)
    }

    pub fn group_key(&self) -> u64 {
        self.group_key
    }

    /// Returns how many certificates the bundle has.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }
}

fn parse_der<C: AsRef<[u8]> + ?Sized>(raw: &C) -> Result<X509Certificate<'_>, ()> {
    X509Certificate::from_der(raw.as_ref())
        .map(|(_, certificate)| certificate)
        .map_err(|_| ())
}
