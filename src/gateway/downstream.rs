//! Facts about the client's side of a request: the peer address, whether
//! the connection is TLS, and the size of the request head.

use std::net::IpAddr;

use pingora::proxy::Session;

/// Returns the client's IP address, with IPv4-mapped IPv6 addresses read as IPv4.
pub(super) fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip().to_canonical())
}

/// Returns whether the client connected over TLS, on HTTP/1.1 or HTTP/2 alike.
pub(super) fn client_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

pub(super) fn head_size(session: &Session) -> usize {
    match session.as_downstream().as_http1() {
        Some(h1) => h1.get_headers_raw_bytes().len(),
        None => {
            let header = session.req_header();
            header.uri.to_string().len()
                + header
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 4)
                    .sum::<usize>()
        }
    }
}
