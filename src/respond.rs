//! Responses that keygate writes itself: one JSON error shape, a
//! `Content-Length` on every response, and connection handling that depends
//! only on how the request body is framed.
//!
//! A body up to `drainBodyMax` that arrives within `drainTime` is read and
//! discarded before the response, so the connection stays open for the next
//! request. A larger or slower body, or `Expect: 100-continue`, gets
//! `Connection: close`; the leftover bytes are never parsed as a request.
//! Over HTTP/2 the same body is read or left unread, and the connection
//! stays open either way, because an unread body ends with its stream.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderName, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::config::GatewaySettings;
use crate::gateway::RequestId;

/// A response keygate makes itself.
pub struct LocalResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, String)>,
}

impl LocalResponse {
    /// Builds the Spring Boot error shape: `{"status":403,"error":"Forbidden","message":"..."}`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        let body = serde_json::json!({
            "status": status.as_u16(),
            "error": status.canonical_reason().unwrap_or("Error"),
            "message": message,
        });
        LocalResponse::json(status, &body)
    }

    pub fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        let mut text = body.to_string();
        text.push('\n');
        LocalResponse {
            status,
            content_type: "application/json",
            body: Bytes::from(text),
            headers: Vec::new(),
        }
    }

    pub fn text(status: StatusCode, body: String) -> Self {
        LocalResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl LocalResponse {
    /// Builds the 403 for a rejected key, the same for every reason.
    pub fn forbidden() -> Self {
        LocalResponse {
            status: StatusCode::FORBIDDEN,
            content_type: "application/json",
            body: Bytes::from_static(FORBIDDEN_BODY.as_bytes()),
            headers: Vec::new(),
        }
    }
}

/// The one 403 body, the same for every failure reason.
pub static FORBIDDEN_BODY: &str =
    "{\"status\":403,\"error\":\"Forbidden\",\"message\":\"Access denied\"}\n";

/// Writes `response` to the client after settling the request body.
///
/// # Errors
///
/// Writing to the client failed.
pub async fn send(
    session: &mut Session,
    settings: &GatewaySettings,
    request_id: &RequestId,
    response: LocalResponse,
) -> Result<()> {
    let framing = settle_body(session, settings).await;
    if framing != Framing::Settled {
        session.set_keepalive(None);
    }

    let header = response_header(settings, request_id, &response)?;
    // A HEAD response carries the length of the body it leaves out.
    if session.req_header().method == http::Method::HEAD {
        session
            .write_response_header(Box::new(header), true)
            .await?;
    } else {
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(response.body), true)
            .await?;
    }

    // Over HTTP/2 the rest of a body ends with its stream, not with the
    // connection, so there is nothing to wait for.
    if framing == Framing::TooLarge && !session.is_http2() {
        linger(session, settings.limits.drain_time.0).await;
    }
    Ok(())
}

/// Builds the head of a local response: its type, length, request id and own headers.
///
/// # Errors
///
/// A header value of the response is not a valid header value.
pub fn response_header(
    settings: &GatewaySettings,
    request_id: &RequestId,
    response: &LocalResponse,
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(response.status, Some(4 + response.headers.len()))?;
    header.insert_header(CONTENT_TYPE, response.content_type)?;
    header.insert_header(CONTENT_LENGTH, response.body.len())?;
    header.insert_header(
        settings.request_id_header.wire_name(),
        request_id.header_value(),
    )?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.as_str())?;
    }
    Ok(header)
}

/// The state of the request body before a local response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body, or all of it read: the connection can stay open.
    Settled,
    /// The client waits for `100 Continue` before it sends the body.
    HeldBack,
    /// Too large or too slow to read; the connection closes after the response.
    TooLarge,
}

async fn settle_body(session: &mut Session, settings: &GatewaySettings) -> Framing {
    if session.is_body_done() {
        return Framing::Settled;
    }
    let header = session.req_header();
    let expects_continue = header
        .headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return Framing::HeldBack;
    }
    let max = settings.limits.drain_body_max.0;
    let declared = header
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max)
        && !header.headers.contains_key(TRANSFER_ENCODING)
    {
        return Framing::TooLarge;
    }

    let drain = async {
        let mut read = 0u64;
        while let Some(chunk) = session.read_request_body().await? {
            read += chunk.len() as u64;
            if read > max {
                return Ok(Framing::TooLarge);
            }
        }
        Ok::<_, Box<pingora::Error>>(Framing::Settled)
    };
    match tokio::time::timeout(settings.limits.drain_time.0, drain).await {
        Ok(Ok(framing)) => framing,
        Ok(Err(_)) | Err(_) => Framing::TooLarge,
    }
}

/// Reads and discards what the client still sends, for at most `time`, so
/// that closing the socket does not reset the connection before the client
/// has read the response.
async fn linger(session: &mut Session, time: Duration) {
    let discard = async { while let Ok(Some(_)) = session.read_request_body().await {} };
    let _ = tokio::time::timeout(time, discard).await;
}
