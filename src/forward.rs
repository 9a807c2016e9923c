//! Header edits on forwarded requests and on the backend's responses:
//! identity, credentials, forwarding headers and hop-by-hop headers.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    UPGRADE,
};
use http::{HeaderMap, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};
use smallvec::SmallVec;

use crate::config::GatewaySettings;
use crate::gateway::RequestId;

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the older `Keep-Alive`
/// and `Proxy-Connection`, and `HTTP2-Settings`, which only an h2c upgrade
/// of this connection uses, RFC 7540 section 3.2.1). pingora 0.9.1's proxy
/// drops all of them before its own filters run, so both forwarding paths
/// send the same request. `Transfer-Encoding` is hop-by-hop too, but the
/// proxy engine owns message framing and rewrites it itself.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    UPGRADE,
];

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The forwarding headers' names as written on the wire. pingora's setters
/// take them without copying.
const X_FORWARDED_FOR_WIRE: &str = "x-forwarded-for";
const X_FORWARDED_PROTO_WIRE: &str = "x-forwarded-proto";

/// Header names to remove; requests seldom carry any, so the common case
/// neither allocates nor touches the header map.
type Doomed = SmallVec<[HeaderName; 4]>;

/// Prepares a checked request for the backend. `client_tls` is whether the
/// client connected over TLS, which sets `X-Forwarded-Proto`.
///
/// # Errors
///
/// A header value could not be set (it never contains client bytes that
/// were not already a valid header value).
pub fn prepare_request(
    request: &mut RequestHeader,
    settings: &GatewaySettings,
    client_id: &str,
    request_id: &RequestId,
    peer_ip: Option<IpAddr>,
    client_tls: bool,
) -> Result<()> {
    let identity = &settings.client_id_header.0;
    // Hop-by-hop headers and those named in `Connection` go, except the
    // identity keygate sets below. A client must not choose its own
    // identity either, in any spelling a backend might fold.
    let listed = connection_tokens(&request.headers);
    let doomed: Doomed = request
        .headers
        .keys()
        .filter(|&name| {
            name != identity
                && (HOP_BY_HOP.contains(name)
                    || is_listed(&listed, name)
                    || spelled_like(name, identity)
                    || (settings.hide_credentials && *name == X_API_KEY))
        })
        .cloned()
        .collect();
    drop(listed);
    for name in &doomed {
        request.remove_header(name);
    }
    request.insert_header(settings.client_id_header.wire_name(), client_id)?;

    if let Some(ip) = peer_ip {
        let mut sent = request.headers.get_all(&X_FORWARDED_FOR).iter().peekable();
        let forwarded_for = if sent.peek().is_none() {
            ip.to_string()
        } else {
            // Repeated fields form one list (RFC 9110 section 5.3), so every earlier hop is kept.
            let mut hops: Vec<&str> = sent
                .filter_map(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .collect();
            let peer = ip.to_string();
            hops.push(&peer);
            hops.join(", ")
        };
        request.insert_header(X_FORWARDED_FOR_WIRE, forwarded_for)?;
    }
    let proto = if client_tls { "https" } else { "http" };
    request.insert_header(X_FORWARDED_PROTO_WIRE, HeaderValue::from_static(proto))?;
    request.insert_header(
        settings.request_id_header.wire_name(),
        request_id.header_value(),
    )?;
    Ok(())
}

/// Removes hop-by-hop headers from the backend's response and adds the request id.
///
/// # Errors
///
/// The request id could not be set as a header value.
pub fn prepare_response(
    response: &mut ResponseHeader,
    settings: &GatewaySettings,
    request_id: &RequestId,
) -> Result<()> {
    let listed = connection_tokens(&response.headers);
    let doomed: Doomed = response
        .headers
        .keys()
        .filter(|&name| HOP_BY_HOP.contains(name) || is_listed(&listed, name))
        .cloned()
        .collect();
    drop(listed);
    for name in &doomed {
        response.remove_header(name);
    }
    if !response.headers.contains_key(&settings.request_id_header.0) {
        response.insert_header(
            settings.request_id_header.wire_name(),
            request_id.header_value(),
        )?;
    }
    Ok(())
}

/// Rejects a `101 Switching Protocols` to a request without `Upgrade`. The
/// backend may switch only to a protocol the request offered (RFC 9110
/// section 15.2.2), so such a response means a broken backend, and the
/// client gets 502.
///
/// # Errors
///
/// `InvalidHTTPHeader` from the upstream side for such a response.
pub fn reject_unrequested_switch(request: &RequestHeader, response: &ResponseHeader) -> Result<()> {
    if response.status == StatusCode::SWITCHING_PROTOCOLS && !request.headers.contains_key(UPGRADE)
    {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "101 response to a request without Upgrade",
        )
        .map_err(|error| error.into_up());
    }
    Ok(())
}

/// Collects the tokens of every `Connection` header, the names of headers
/// meant for this hop only.
fn connection_tokens(headers: &HeaderMap) -> SmallVec<[&[u8]; 4]> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .collect()
}

fn is_listed(tokens: &[&[u8]], name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    tokens.iter().any(|token| token.eq_ignore_ascii_case(name))
}

/// Returns whether `name` equals `target` once `_` is read as `-`.
fn spelled_like(name: &HeaderName, target: &HeaderName) -> bool {
    let (name, target) = (name.as_str().as_bytes(), target.as_str().as_bytes());
    name.len() == target.len()
        && name
            .iter()
            .zip(target)
            .all(|(got, want)| got == want || (*got == b'_' && *want == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", b"/nps/rest/push/p1", None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    /// Prepares `request` for the client `karolin` with request id `rid` and no peer address.
    fn prepare(request: &mut RequestHeader, settings: &GatewaySettings, client_tls: bool) {
        let id = request_id("rid");
        prepare_request(request, settings, "karolin", &id, None, client_tls).unwrap();
    }

    fn request_id(sent: &str) -> RequestId {
        crate::gateway::RequestIds::new().for_request(Some(sent.as_bytes()))
    }

    fn values(request: &RequestHeader, name: &str) -> Vec<String> {
        request
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn identity_replaced_in_every_spelling() {
        let settings = GatewaySettings::default();
        let mut request = request(&[
            ("X-Client-Id", "someone-else"),
            ("x_client_id", "other"),
            ("X-Client_Id", "third"),
        ]);
        prepare(&mut request, &settings, false);
        assert_eq!(values(&request, "x-client-id"), ["karolin"]);
        assert!(request.headers.get("x_client_id").is_none());
        assert!(request.headers.get("x-client_id").is_none());
    }

    #[test]
    fn hop_by_hop_and_listed_headers_dropped() {
        let settings = GatewaySettings::default();
        let mut request = request(&[
            ("Connection", "keep-alive, x-foo"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("x-foo", "1"),
            ("x-bar", "2"),
        ]);
        prepare(&mut request, &settings, false);
        for name in ["connection", "keep-alive", "te", "http2-settings", "x-foo"] {
            assert!(
                request.headers.get(name).is_none(),
                "{name} must be dropped"
            );
        }
        assert_eq!(values(&request, "x-bar"), ["2"]);
    }

    #[test]
    fn connection_cannot_drop_identity() {
        let settings = GatewaySettings::default();
        let mut request = request(&[("Connection", "x-client-id")]);
        prepare(&mut request, &settings, false);
        assert_eq!(values(&request, "x-client-id"), ["karolin"]);
    }

    #[test]
    fn credentials_kept_or_hidden() {
        let mut settings = GatewaySettings::default();
        let mut kept = request(&[("x-api-key", "value")]);
        prepare(&mut kept, &settings, false);
        assert_eq!(values(&kept, "x-api-key"), ["value"]);

        settings.hide_credentials = true;
        let mut hidden = request(&[("x-api-key", "value")]);
        prepare(&mut hidden, &settings, false);
        assert!(hidden.headers.get("x-api-key").is_none());
    }

    #[test]
    fn forwarding_headers() {
        let settings = GatewaySettings::default();
        let mut request = request(&[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
        ]);
        prepare_request(
            &mut request,
            &settings,
            "karolin",
            &request_id("rid-1"),
            Some("127.0.0.1".parse().unwrap()),
            false,
        )
        .unwrap();
        assert_eq!(
            values(&request, "x-forwarded-for"),
            ["203.0.113.9, 127.0.0.1"]
        );
        assert_eq!(values(&request, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&request, "x-request-id"), ["rid-1"]);
    }

    #[test]
    fn forwarded_proto_https_over_tls() {
        let settings = GatewaySettings::default();
        let mut request = request(&[("X-Forwarded-Proto", "http")]);
        prepare(&mut request, &settings, true);
        assert_eq!(values(&request, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn response_hop_by_hop_dropped() {
        let settings = GatewaySettings::default();
        let mut response = ResponseHeader::build(200, None).unwrap();
        response
            .append_header("Connection", "close, x-secret")
            .unwrap();
        response.append_header("x-secret", "1").unwrap();
        response.append_header("Keep-Alive", "timeout=5").unwrap();
        response.append_header("Content-Length", "2").unwrap();
        prepare_response(&mut response, &settings, &request_id("rid")).unwrap();
        assert!(response.headers.get("x-secret").is_none());
        assert!(response.headers.get("keep-alive").is_none());
        assert_eq!(response.headers.get("content-length").unwrap(), "2");
        assert_eq!(response.headers.get("x-request-id").unwrap(), "rid");
    }
}
