//! Certificates made at test time with rcgen, and an HTTPS client on
//! rustls and hyper that speaks HTTP/1.1 or HTTP/2 (chosen through ALPN).
//! No certificate file is kept in the repository.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// Time limit of each connect, handshake and request of [`HttpsConn`].
pub const TLS_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate and its private key, both in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test certificate authority that signs server and client certificates.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// Makes a self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("failed to generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("failed to sign the CA");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a server certificate for `names` (host names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// Issues a server certificate for `names` that expired in 2020.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// Issues a client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    /// Issues a client certificate with common name `name` that expired in 2020.
    pub fn expired_client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, true)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Issued {
        let key = KeyPair::generate().expect("failed to generate a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid SAN names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("failed to sign a certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A temporary folder for PEM files, deleted on drop.
pub struct PemDir {
    dir: TempDir,
}

impl PemDir {
    pub fn new() -> PemDir {
        let dir = tempfile::Builder::new()
            .prefix("keygate-tls-")
            .tempdir()
            .expect("failed to create a temporary folder for PEM files");
        PemDir { dir }
    }

    /// Writes `text` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|err| panic!("failed to write {}: {err}", path.display()));
        path
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Returns `path` as a YAML-safe string for the config builder.
pub fn path_text(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("temporary path {} is not UTF-8", path.display()))
        .to_owned()
}

/// HTTP version to ask for through ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
}

/// One HTTPS response.
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl TlsResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Builds a client config that trusts `ca_pem`, offers `alpn`, and presents
/// `client` when the server asks for a certificate.
pub fn client_config(ca_pem: &str, alpn: Alpn, client: Option<&Issued>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("valid CA PEM"))
            .expect("the CA certificate is usable");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls supports its default versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("valid client certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                .expect("valid client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("the client certificate and key fit")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Http2 => vec![b"h2".to_vec()],
    };
    config
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection to keygate, for several requests in a row.
pub struct HttpsConn {
    runtime: Runtime,
    sender: Sender,
    authority: String,
    /// The protocol the server chose through ALPN.
    pub alpn: Option<Vec<u8>>,
}

impl HttpsConn {
    /// Connects to `addr`, checks the server's certificate for `server_name`,
    /// and speaks the protocol of `alpn`. Returns the handshake error as text.
    pub fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: rustls::ClientConfig,
        alpn: Alpn,
    ) -> Result<HttpsConn, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("failed to build a runtime for the HTTPS client");
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|err| format!("invalid server name {server_name}: {err}"))?;
        let connector = TlsConnector::from(Arc::new(config));
        let (sender, alpn_chosen) = runtime.block_on(async {
            let tcp = tokio::time::timeout(TLS_IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connecting to {addr} timed out"))?
                .map_err(|err| format!("connecting to {addr} failed: {err}"))?;
            let tls = tokio::time::timeout(TLS_IO_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|err| format!("TLS handshake failed: {err}"))?;
            let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let io = TokioIo::new(tls);
            let sender = match alpn {
                Alpn::Http1 => {
                    let (sender, connection) = http1::handshake(io)
                        .await
                        .map_err(|err| format!("HTTP/1.1 handshake failed: {err}"))?;
                    tokio::spawn(connection);
                    Sender::Http1(sender)
                }
                Alpn::Http2 => {
                    let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|err| format!("HTTP/2 handshake failed: {err}"))?;
                    tokio::spawn(connection);
                    Sender::Http2(sender)
                }
            };
            Ok::<_, String>((sender, chosen))
        })?;
        Ok(HttpsConn {
            runtime,
            sender,
            authority: format!("localhost:{}", addr.port()),
            alpn: alpn_chosen,
        })
    }

    /// Sends one request and reads the whole response. Returns any failure as text.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<TlsResponse, String> {
        let mut builder = http::Request::builder().method(method);
        builder = match self.sender {
            // HTTP/2 takes :scheme and :authority from an absolute URI.
            Sender::Http2(_) => builder.uri(format!("https://{}{path}", self.authority)),
            Sender::Http1(_) => builder
                .uri(path)
                .header(http::header::HOST, self.authority.as_str()),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|err| format!("invalid request: {err}"))?;
        let sender = &mut self.sender;
        self.runtime.block_on(async {
            let exchange = async {
                let response = match sender {
                    Sender::Http1(sender) => sender.send_request(request).await,
                    Sender::Http2(sender) => sender.send_request(request).await,
                }
                .map_err(|err| format!("request failed: {err}"))?;
                let (parts, body) = response.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|err| format!("reading the body failed: {err}"))?
                    .to_bytes();
                Ok(TlsResponse {
                    status: parts.status.as_u16(),
                    version: parts.version,
                    headers: parts.headers,
                    body: body.to_vec(),
                })
            };
            tokio::time::timeout(TLS_IO_TIMEOUT, exchange)
                .await
                .map_err(|_| format!("no response within {TLS_IO_TIMEOUT:?}"))?
        })
    }
}

/// Connects, sends one request and returns the response, or the first failure as text.
pub fn https_request(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    alpn: Alpn,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<TlsResponse, String> {
    let mut conn = HttpsConn::connect(addr, "localhost", config, alpn)?;
    conn.send(method, path, headers, b"")
}
