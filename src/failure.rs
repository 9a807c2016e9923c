//! The response to a failed request: the status for each kind of failure,
//! the backend error kind it counts as, and the message the client reads.

use http::StatusCode;
use pingora::prelude::*;
use pingora::ErrorSource;

use crate::metrics::UpstreamErrorKind;

/// Maps a failure to the status to respond with, and the backend error kind when the backend failed.
pub fn classify_failure(error: &Error) -> (u16, Option<UpstreamErrorKind>) {
    if let HTTPStatus(code) = error.etype() {
        return (*code, None);
    }
    match error.esource() {
        ErrorSource::Upstream => match error.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                (504, Some(UpstreamErrorKind::Timeout))
            }
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
            | TLSHandshakeFailure => (502, Some(UpstreamErrorKind::Connect)),
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
