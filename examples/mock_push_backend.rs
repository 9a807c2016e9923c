//! Mock Nexus Push Service (NPS) backend for trying keygate by hand and for
//! its integration tests.
//!
//! The mock stores no pushIds, so every push returns 404. `POST .../refresh`
//! returns `[]` and `GET .../health` returns `{"status":"UP"}`. It records
//! every request except those to its report route `/_mock/requests`, which
//! returns the records (`GET`) or clears them (`DELETE`), and those to its
//! health switch `/_mock/health/NNN`.
//!
//! `PUT /_mock/health/NNN` makes `GET .../health` respond with status NNN
//! (200 to 599), with `{"status":"DOWN"}` unless NNN is 2xx. A test can so
//! fail the gateway's health checks while pushes still get through.
//!
//! Two request headers change the response of any request:
//! - `x-mock-delay-ms: N` waits N ms (at most 60000) before responding.
//! - `x-mock-status: NNN` responds with that status (200 to 599) and a small
//!   JSON body in place of the normal response.
//!
//! The integration tests include this file as a module and run [`serve`] or
//! [`serve_tls`] on their own listener, so it compiles both as an example
//! and as a module. Because the records contain header values such as API
//! keys, the binary only listens on loopback addresses.
//!
//! With `--tls-cert` and `--tls-key` it serves HTTPS (HTTP/1.1) instead, to
//! try an `https://` upstream by hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Path of the report route. Requests to it are not recorded.
pub const REPORT_PATH: &str = "/_mock/requests";

/// Prefix of the health switch: `PUT /_mock/health/503` sets the status of
/// `GET .../health`. Requests to it are not recorded.
pub const HEALTH_SWITCH_PATH: &str = "/_mock/health/";

/// Request header that delays the response by the given number of milliseconds.
pub const DELAY_HEADER: &str = "x-mock-delay-ms";

/// Request header that replaces the normal response with one of the given status.
pub const STATUS_HEADER: &str = "x-mock-status";

/// Upper bound for `x-mock-delay-ms`. Larger values are lowered to it.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Maximum number of header fields in one request, above hyper's default of
/// 100, so that tests can send many headers through keygate.
const MAX_REQUEST_HEADERS: usize = 500;

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRequest {
    pub method: String,
    /// Request target as sent: path and query for origin-form requests, the
    /// whole URI for absolute-form ones.
    pub target: String,
    /// Header fields as (name, value) pairs. Names are lowercase because
    /// hyper normalizes them. Values that are not UTF-8 are decoded lossily.
    ///
    /// NOTE: hyper 1 does not expose the original field order. The pairs are
    /// ordered by the first occurrence of each name, with the values of a
    /// repeated name kept together in the order they arrived.
    pub headers: Vec<(String, String)>,
    pub body_length: u64,
    /// Lowercase hex SHA-256 of the body bytes that were received.
    pub body_sha256: String,
    /// False when the connection failed before the body was complete. The
    /// length and hash then cover only the bytes received before the failure.
    pub body_complete: bool,
}

impl ReceivedRequest {
    /// Returns the value of the first header named `name`, compared
    /// case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Returns the path part of the target, without the query.
    pub fn path(&self) -> &str {
        let end = self.target.find('?').unwrap_or(self.target.len());
        &self.target[..end]
    }
}

/// Shared list of received requests, and the status of the health route.
/// Clones refer to the same list and status.
#[derive(Clone, Debug)]
pub struct Received {
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    health_status: Arc<AtomicU16>,
}

impl Default for Received {
    fn default() -> Self {
        Received {
            requests: Arc::default(),
            health_status: Arc::new(AtomicU16::new(200)),
        }
    }
}

impl Received {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the status that `GET .../health` responds with.
    pub fn set_health_status(&self, status: StatusCode) {
        self.health_status.store(status.as_u16(), Ordering::Relaxed);
    }

    fn health_status(&self) -> StatusCode {
        StatusCode::from_u16(self.health_status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK)
    }

    /// Returns a copy of the records, oldest first.
    pub fn snapshot(&self) -> Vec<ReceivedRequest> {
        self.lock().clone()
    }

    /// Removes all records and returns how many there were.
    pub fn clear(&self) -> usize {
        let mut requests = self.lock();
        let count = requests.len();
        requests.clear();
        count
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn push(&self, request: ReceivedRequest) {
        self.lock().push(request);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        // A panic while the lock was held cannot leave the Vec half-changed,
        // so a poisoned lock is still safe to use.
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Accepts connections on `listener` until the returned future is dropped,
/// serving each connection with keep-alive on its own task and recording
/// requests in `received`.
///
/// Dropping the future closes the listener. Connections already accepted
/// live on as tasks of the tokio runtime until the runtime shuts down.
pub async fn serve(listener: TcpListener, received: Received) {
    loop {
        let Some((stream, peer)) = accept(&listener).await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, received.clone()));
    }
}

/// Serves like [`serve`], but each connection first completes a TLS
/// handshake with `acceptor`. A failed handshake is printed and the
/// connection dropped.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, received: Received) {
    loop {
        let Some((stream, peer)) = accept(&listener).await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let received = received.clone();
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(tls) => serve_connection(tls, peer, received).await,
                Err(err) => eprintln!("mock NPS: TLS handshake with {peer} failed: {err}"),
            }
        });
    }
}

/// Accepts one connection. Errors such as too many open files are
/// temporary, so it waits briefly and returns `None` to try again.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(err) => {
            eprintln!("mock NPS: accept failed: {err}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, received: Received)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle_request(request, received.clone()));
    let result = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .max_headers(MAX_REQUEST_HEADERS)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = result {
        eprintln!("mock NPS: connection from {peer} failed: {err}");
    }
}

/// Builds a TLS acceptor for HTTP/1.1 from a PEM certificate chain and key.
///
/// # Errors
///
/// The PEM text holds no certificate or key, or they do not fit together.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("invalid certificate PEM: {err}"))?;
    if chain.is_empty() {
        return Err("the certificate PEM contains no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| format!("invalid private key PEM: {err}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("invalid TLS versions: {err}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| format!("the certificate and key do not fit together: {err}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn handle_request(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let has_query = parts.uri.query().is_some();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();

    // The whole body is read before the response is sent, so keygate
    // receives no response while it is still sending the request.
    let body = read_body(body).await;
    let record = ReceivedRequest {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers,
        body_length: body.length,
        body_sha256: body.sha256,
        body_complete: body.complete,
    };
    let body_length = record.body_length;
    let body_complete = record.body_complete;
    if path != REPORT_PATH && !path.starts_with(HEALTH_SWITCH_PATH) {
        received.push(record);
    }

    let response = if body_complete {
        respond(&parts.method, &path, &parts.headers, &received).await
    } else {
        error_response(
            StatusCode::BAD_REQUEST,
            "request body was not received completely",
        )
    };

    // The query is left out because tests may put credentials into it.
    let query_note = if has_query { "?[query omitted]" } else { "" };
    println!(
        "mock NPS: {} {path}{query_note} -> {} bodyLength={body_length}",
        parts.method,
        response.status().as_u16(),
    );
    Ok(response)
}

struct BodySummary {
    length: u64,
    sha256: String,
    complete: bool,
}

/// Reads the body to its end, hashing it on the way so that no size limit
/// is needed.
async fn read_body(mut body: Incoming) -> BodySummary {
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    length += data.len() as u64;
                }
            }
            Err(err) => {
                eprintln!("mock NPS: reading request body failed after {length} bytes: {err}");
                complete = false;
                break;
            }
        }
    }
    BodySummary {
        length,
        sha256: hex::encode(hasher.finalize()),
        complete,
    }
}

/// Builds the response after applying the test control headers.
async fn respond(
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    received: &Received,
) -> Response<Full<Bytes>> {
    let delay_ms = match parse_delay(headers) {
        Ok(delay_ms) => delay_ms,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let forced_status = match parse_forced_status(headers) {
        Ok(status) => status,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };

    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    if let Some(status) = forced_status {
        return forced_response(status);
    }
    route(method, path, received)
}

fn parse_delay(headers: &http::HeaderMap) -> Result<u64, String> {
    let Some(value) = headers.get(DELAY_HEADER) else {
        return Ok(0);
    };
    let text = value.to_str().unwrap_or("").trim();
    match text.parse::<u64>() {
        Ok(delay_ms) => Ok(delay_ms.min(MAX_DELAY_MS)),
        Err(_) => Err(format!(
            "{DELAY_HEADER} must be a whole number of milliseconds, got '{text}'"
        )),
    }
}

fn parse_forced_status(headers: &http::HeaderMap) -> Result<Option<StatusCode>, String> {
    let Some(value) = headers.get(STATUS_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    match text.parse::<u16>() {
        Ok(code @ 200..=599) => Ok(StatusCode::from_u16(code).ok()),
        _ => Err(format!(
            "{STATUS_HEADER} must be a status code from 200 to 599, got '{text}'"
        )),
    }
}

fn route(method: &Method, path: &str, received: &Received) -> Response<Full<Bytes>> {
    if path == REPORT_PATH {
        return report_response(method, received);
    }
    if let Some(status) = path.strip_prefix(HEALTH_SWITCH_PATH) {
        return health_switch_response(method, status, received);
    }
    if method == Method::POST {
        if let Some(push_id) = push_id(path) {
            let message = format!("pushId '{push_id}' is not known");
            return error_response(StatusCode::NOT_FOUND, &message);
        }
        if path.ends_with("/refresh") {
            // NPS returns an empty list when no pushId changed.
            return json_response(StatusCode::OK, "[]".to_owned());
        }
    }
    if method == Method::GET && path.ends_with("/health") {
        let status = received.health_status();
        let state = if status.is_success() { "UP" } else { "DOWN" };
        return json_response(status, json!({ "status": state }).to_string());
    }
    let message = format!("path '{path}' is not known");
    error_response(StatusCode::NOT_FOUND, &message)
}

/// Returns the pushId of a path of the form `.../push/{pushId}`.
fn push_id(path: &str) -> Option<&str> {
    let mut segments = path.rsplit('/');
    let last = segments.next()?;
    let before_last = segments.next()?;
    (before_last == "push" && !last.is_empty()).then_some(last)
}

fn report_response(method: &Method, received: &Received) -> Response<Full<Bytes>> {
    match *method {
        Method::GET => {
            let requests = serde_json::to_string(&received.snapshot())
                .expect("received requests always serialize to JSON");
            json_response(StatusCode::OK, requests)
        }
        Method::DELETE => {
            let cleared = received.clear();
            json_response(StatusCode::OK, json!({ "cleared": cleared }).to_string())
        }
        _ => {
            let message = format!("{REPORT_PATH} supports only GET and DELETE");
            let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, &message);
            response.headers_mut().insert(
                header::ALLOW,
                header::HeaderValue::from_static("GET, DELETE"),
            );
            response
        }
    }
}

fn health_switch_response(
    method: &Method,
    status: &str,
    received: &Received,
) -> Response<Full<Bytes>> {
    if method != Method::PUT {
        let message = format!("{HEALTH_SWITCH_PATH}NNN supports only PUT");
        let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, &message);
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("PUT"));
        return response;
    }
    match status.parse::<u16>() {
        Ok(code @ 200..=599) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            received.set_health_status(status);
            json_response(StatusCode::OK, json!({ "healthStatus": code }).to_string())
        }
        _ => {
            let message =
                format!("the health status must be a status code from 200 to 599, got '{status}'");
            error_response(StatusCode::BAD_REQUEST, &message)
        }
    }
}

fn forced_response(status: StatusCode) -> Response<Full<Bytes>> {
    if status == StatusCode::NO_CONTENT {
        // A 204 response must not carry a body or a Content-Length.
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        return response;
    }
    let message = format!("status set by {STATUS_HEADER}");
    error_response(status, &message)
}

/// Body of an error response, with the fields in the order NPS sends them.
#[derive(Serialize)]
struct ErrorBody<'a> {
    status: u16,
    error: &'a str,
    message: &'a str,
}

fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = ErrorBody {
        status: status.as_u16(),
        error: status.canonical_reason().unwrap_or("Unknown"),
        message,
    };
    let body = serde_json::to_string(&body).expect("an error body always serializes to JSON");
    json_response(status, body)
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let bytes = Bytes::from(body);
    let length = bytes.len();
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    response
}

#[derive(Parser, Debug)]
#[command(
    name = "mock_push_backend",
    about = "Mock Nexus Push Service backend for keygate: records every request, \
             returns 404 for every push and serves the records at GET /_mock/requests"
)]
struct Cli {
    /// Loopback address and port to listen on, as IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:20280", value_parser = parse_loopback_addr)]
    listen: SocketAddr,

    /// PEM certificate chain; with --tls-key the mock serves HTTPS instead of HTTP.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Reads the certificate and key files and builds the TLS acceptor.
fn load_tls(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|err| format!("cannot read {}: {err}", cert.display()))?;
    let key_pem =
        std::fs::read(key).map_err(|err| format!("cannot read {}: {err}", key.display()))?;
    tls_acceptor(&cert_pem, &key_pem)
}

fn parse_loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|err| format!("invalid address '{text}', expected IP:PORT: {err}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "address '{text}' is not a loopback address; use 127.0.0.1 or [::1] \
             because the mock serves recorded API keys to anyone who connects"
        ));
    }
    Ok(addr)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let acceptor = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => match load_tls(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let listener = match TcpListener::bind(cli.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: failed to listen on {}: {err}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!("mock NPS: listening on {scheme}://{}", cli.listen);

    let server = async {
        match acceptor {
            Some(acceptor) => serve_tls(listener, acceptor, Received::new()).await,
            None => serve(listener, Received::new()).await,
        }
    };
    tokio::select! {
        () = server => {}
        signal = tokio::signal::ctrl_c() => {
            if let Err(err) = signal {
                eprintln!("error: failed to wait for Ctrl-C: {err}");
                return ExitCode::FAILURE;
            }
            println!("mock NPS: stopping on Ctrl-C");
        }
    }
    ExitCode::SUCCESS
}
