//! The response to a failed request: the status for each kind of failure,
//! the backend error kind it counts as, and the message the client reads.

use http::StatusCode;
use pingora::prelude::*;
use pingora::ErrorSource;
use tracing::warn;

use crate::metrics::UpstreamErrorKind;

/// Maps a failure to the status to respond with, and the backend error kind when the backend failed.
pub fn classify_failure(error: &Error) -> (u16, Option<UpstreamErrorKind>) {
    if let HTTPStatus(code) = error.etype() {
        return (*code, None);
    }
    match error.esource() {
        ErrorSource::Upstream => match error.etype() {
            ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout => {
                (504, Some(UpstreamErrorKind::Timeout))
            }
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
                (502, Some(UpstreamErrorKind::Connect))
            }
            TLSHandshakeFailure | InvalidCert | HandshakeError => {
                (502, Some(UpstreamErrorKind::Tls))
            }
            ConnectionClosed | ReadError | WriteError | H2Error | InvalidHTTPHeader => {
                (502, Some(UpstreamErrorKind::Reset))
            }
            _ => (502, Some(UpstreamErrorKind::Other)),
        },
        ErrorSource::Downstream => match error.etype() {
            // The client is gone or stalled, so no response can reach it.
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => (0, None),
            _ => (400, None),
        },
        ErrorSource::Internal | ErrorSource::Unset => (500, None),
    }
}

/// Logs a failed backend request with its kind, backend and request id.
/// `sent_status` is the status of a response head already sent to the
/// client. It is logged in place of `status`, which then never reaches the client.
pub fn log_backend_failure(
    kind: UpstreamErrorKind,
    backend: &str,
    status: u16,
    sent_status: Option<u16>,
    error: &Error,
    request_id: &str,
) {
    let kind_label = kind.as_str();
    if let Some(sent_status) = sent_status {
        warn!(kind = kind_label, backend, status = sent_status, error = %error, request_id, "backend request failed after the response head was sent; closing the client connection before the end of the body");
    } else if kind == UpstreamErrorKind::Tls {
        warn!(kind = kind_label, backend, status, error = %error, request_id, "TLS handshake with the backend failed; check that its certificate is signed by gateway.upstreamCa (or the system's CA store), is not expired and names the upstream URL's host");
    } else {
        warn!(kind = kind_label, backend, status, error = %error, request_id, "backend request failed");
    }
}

/// Returns the message of the error body for a failure that gets `status`.
pub fn failure_message(status: StatusCode, no_backend: bool) -> &'static str {
    match status.as_u16() {
        502 if no_backend => "no backend is healthy; try again later",
        413 => "the request body is larger than the gateway accepts",
        502 => "the backend could not be reached or broke the connection",
        504 => "the backend did not respond in time",
        _ => status.canonical_reason().unwrap_or("error"),
    }
}
