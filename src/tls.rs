//! TLS material read from the files the config names: the listeners'
//! certificate, private key and client CA, and the CA bundle that
//! `https://` backends are verified against.
//!
//! The files are read whenever the config loads (start, `check-config` and
//! every refresh), so a missing or broken file is a config error that names
//! it. The listeners take their certificate at start only, because pingora
//! builds each TLS listener's settings once, so a new certificate needs a
//! restart.

mod upstream_ca;

pub use upstream_ca::UpstreamCa;

use std::path::Path;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{GatewaySettings, PemPath, TlsFiles};

/// The largest PEM file keygate reads. A bigger one is almost certainly the wrong file.
const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;

/// The TLS material of one config load.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The listeners' certificate, when `gateway.tls` is set.
    pub server: Option<Arc<ServerTls>>,
    /// The CAs of `https://` backends, when `gateway.upstreamCa` is set.
    pub upstream_ca: Option<Arc<UpstreamCa>>,
}

impl TlsMaterial {
    /// Reads every file that `gateway.tls` and `gateway.upstreamCa` name.
    /// Returns the material and warnings, such as an expired certificate.
    ///
    /// # Errors
    ///
    /// A file is missing, unreadable or contains no valid certificate or
    /// key. The message names the setting and the file.
    pub fn load(settings: &GatewaySettings) -> Result<(TlsMaterial, Vec<String>), String> {
        let mut warnings = Vec::new();
        let server = match &settings.tls {
            Some(files) => Some(Arc::new(ServerTls::load(files, &mut warnings)?)),
            None => None,
        };
        let upstream_ca = match &settings.upstream_ca {
            Some(path) => Some(Arc::new(UpstreamCa::load(path, &mut warnings)?)),
            None => None,
        };
        if upstream_ca.is_some() && !settings.upstream.0.iter().any(|entry| entry.url.tls) {
            warnings.push(
                "gateway.upstreamCa is set, but no upstream is https://, so it is not used".into(),
            );
        }
        Ok((
            TlsMaterial {
                server,
                upstream_ca,
            },
            warnings,
        ))
    }
}

/// The listeners' certificate chain and key, and the client certificate check.
pub struct ServerTls {
    certified_key: Arc<CertifiedKey>,
    /// Set with `clientCa`: every client must present a certificate signed by it.
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// SHA-256 over the bytes of every file, to tell whether a refresh read new files.
    fingerprint: [u8; 32],
}

impl ServerTls {
    fn load(files: &TlsFiles, warnings: &mut Vec<String>) -> Result<Self, String> {
        let provider = crypto_provider();
        let mut fingerprint = Sha256::new();

        let cert_bytes = read_pem_file("gateway.tls.cert", &files.cert)?;
        fingerprint.update(&cert_bytes);
        let chain = parse_certificates("gateway.tls.cert", &files.cert, &cert_bytes)?;
        if let Some(warning) = validity_warning("gateway.tls.cert", &files.cert, &chain[0]) {
            warnings.push(warning);
        }

        let key_bytes = read_pem_file("gateway.tls.key", &files.key)?;
        fingerprint.update(&key_bytes);
        let key = parse_private_key(&files.key, &key_bytes)?;
        let certified_key = CertifiedKey::from_der(chain, key, &provider).map_err(|err| {
            format!(
                "gateway.tls.key: the key in {} does not fit the certificate in {}: {err}",
                files.key, files.cert
            )
        })?;

        let client_verifier = match &files.client_ca {
            Some(path) => {
                let ca_bytes = read_pem_file("gateway.tls.clientCa", path)?;
                fingerprint.update(&ca_bytes);
                let roots = root_store("gateway.tls.clientCa", path, &ca_bytes, warnings)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(provider),
                )
                .build()
                .map_err(|err| {
                    format!("gateway.tls.clientCa: cannot use the CAs in {path}: {err}")
                })?;
                Some(verifier)
            }
            None => None,
        };

        Ok(ServerTls {
            certified_key: Arc::new(certified_key),
            client_verifier,
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// Returns whether both were read from files with the same content.
    pub fn same_files(&self, other: &ServerTls) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// Returns whether clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.client_verifier.is_some()
    }

    /// Builds the settings of one pingora TLS listener: TLS 1.2 and 1.3
    /// (pingora's rustls listener allows no other), ALPN `h2` then
    /// `http/1.1`, and the client certificate check when `clientCa` is set.
    ///
    /// # Errors
    ///
    /// pingora rejects the settings.
    pub fn listener_settings(&self) -> Result<TlsSettings, String> {
        // The certificate is handed over loaded, so pingora reads no file
        // itself, because its own loader panics on a bad file.
        let mut settings = TlsSettings::intermediate("", "")
            .map_err(|err| format!("cannot set up the TLS listener: {err}"))?;
        let resolver = SingleCertAndKey::from(Arc::clone(&self.certified_key));
        settings.set_cert_resolver(Arc::new(resolver));
        settings.enable_h2();
        if let Some(verifier) = &self.client_verifier {
            settings.set_client_cert_verifier(Arc::clone(verifier));
        }
        Ok(settings)
    }
}

/// Returns rustls's `ring` provider, the one pingora installs as the process default.
fn crypto_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads a PEM file whole, naming the setting and the file on failure.
fn read_pem_file(setting: &str, path: &PemPath) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(&path.0)
        .map_err(|err| format!("{setting}: cannot read {path}: {err}"))?
        .len();
    if size > MAX_PEM_BYTES {
        return Err(format!(
            "{setting}: {path} is {size} bytes; a PEM file may have at most {MAX_PEM_BYTES}"
        ));
    }
    std::fs::read(&path.0).map_err(|err| format!("{setting}: cannot read {path}: {err}"))
}

/// Parses every `CERTIFICATE` section of a PEM file, in file order.
fn parse_certificates(
    setting: &str,
    path: &PemPath,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certificates = Vec::new();
    for (index, section) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let certificate = section.map_err(|err| {
            format!(
                "{setting}: {path} is not valid PEM near certificate {}: {}",
                index + 1,
                describe_pem_error(&err)
            )
        })?;
        if X509Certificate::from_der(&certificate).is_err() {
            return Err(format!(
                "{setting}: certificate {} in {path} is not a valid X.509 certificate",
                index + 1
            ));
        }
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(format!(
            "{setting}: {path} contains no PEM certificate (\"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    Ok(certificates)
}

/// Parses the first private key of a PEM file. The messages never quote the file.
fn parse_private_key(path: &PemPath, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "gateway.tls.key: {path} contains no PEM private key (PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
        ),
        other => format!(
            "gateway.tls.key: {path} is not valid PEM: {}",
            describe_pem_error(&other)
        ),
    })
}

/// Describes a PEM error without the file's bytes, which may be key material.
fn describe_pem_error(err: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a section is not valid base64".into(),
        Error::Io(err) => format!("reading failed: {err}"),
        Error::NoItemsFound => "no section found".into(),
        Error::SectionTooLarge => "a section is too large".into(),
        _ => "the PEM structure is broken".into(),
    }
}

/// Builds a root store from the certificates of a CA bundle.
fn root_store(
    setting: &str,
    path: &PemPath,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in parse_certificates(setting, path, bytes)?
        .into_iter()
        .enumerate()
    {
        if let Some(warning) = validity_warning(setting, path, &certificate) {
            warnings.push(warning);
        }
        roots.add(certificate).map_err(|err| {
            format!(
                "{setting}: certificate {} in {path} cannot be used as a CA: {err}",
                index + 1
            )
        })?;
    }
    Ok(roots)
}

/// Warns about a certificate that has expired or is not valid yet.
fn validity_warning(setting: &str, path: &PemPath, der: &CertificateDer<'_>) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let validity = certificate.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        Some(format!(
            "{setting}: a certificate in {path} ({}) expired on {}; peers will reject it",
            certificate.subject(),
            validity.not_after
        ))
    } else if now < validity.not_before {
        Some(format!(
            "{setting}: a certificate in {path} ({}) is not valid before {}",
            certificate.subject(),
            validity.not_before
        ))
    } else {
        None
    }
}

/// Reads the config's TLS files with [`TlsMaterial::load`] and reports a
/// failure as an error of the config file at `config_path`.
///
/// # Errors
///
/// A TLS file is missing or invalid.
pub fn load_material(
    settings: &GatewaySettings,
    config_path: &Path,
) -> Result<(TlsMaterial, Vec<String>), crate::config::ConfigError> {
    TlsMaterial::load(settings).map_err(|message| crate::config::ConfigError {
        file: config_path.to_path_buf(),
        line: None,
        column: None,
        message,
    })
}
