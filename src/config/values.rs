//! Typed values of the `gateway` section: listen addresses, route prefixes,
//! admin networks, header names and thread counts.
//!
//! Each type checks its value while the YAML is read, so a bad value is
//! reported with its line and column.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::HeaderName;
use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Headers that keygate must not use to carry identity or request ids:
/// the key itself, hop-by-hop headers and the headers that frame a request.
const RESERVED_HEADERS: &[&str] = &[
    "x-api-key",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    // Read as `100-continue` on the way in, so it cannot carry a request id.
    "expect",
    // Credentials and forwarding headers: a request id or identity there
    // would log credentials or let clients spoof hops.
    "authorization",
    "cookie",
    "set-cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// Implements `Deserialize` for a type with a `parse(&str) -> Result<Self, String>`.
macro_rules! deserialize_from_str {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;
                impl Visitor<'_> for StrVisitor {
                    type Value = $type;
                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<$type, E> {
                        <$type>::parse(value).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

/// One or more addresses to listen on, written as one string or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddrs(pub Vec<SocketAddr>);

/// A socket address such as `0.0.0.0:20200` or `[::1]:20200`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    pub fn parse(text: &str) -> Result<Self, String> {
        text.trim().parse().map(ListenAddr).map_err(|_| {
            format!("invalid listen address {text:?}: write IP:port, like \"0.0.0.0:20200\" or \"[::]:20200\"")
        })
    }
}

deserialize_from_str!(ListenAddr, "an IP:port address such as \"0.0.0.0:20200\"");

impl<'de> Deserialize<'de> for ListenAddrs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenVisitor;
        impl<'de> Visitor<'de> for ListenVisitor {
            type Value = ListenAddrs;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an IP:port address or a list of them")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ListenAddrs, E> {
                let addr = ListenAddr::parse(value).map_err(E::custom)?;
                Ok(ListenAddrs(vec![addr.0]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListenAddrs, A::Error> {
                let mut addrs = Vec::new();
                while let Some(ListenAddr(addr)) = seq.next_element()? {
                    if addrs.contains(&addr) {
                        return Err(de::Error::custom(format!(
                            "listen address {addr} is listed twice"
                        )));
                    }
                    addrs.push(addr);
                }
                if addrs.is_empty() {
                    return Err(de::Error::custom("listen must name at least one address"));
                }
                Ok(ListenAddrs(addrs))
            }
        }
        deserializer.deserialize_any(ListenVisitor)
    }
}

/// A path prefix such as `/nps`, stored without a trailing `/`; `/` is stored as the empty prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePrefix(pub String);

impl RoutePrefix {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "invalid path prefix {text:?}: it must start with '/', like \"/nps\""
            ));
        }
        let trimmed = text.trim_end_matches('/');
        for segment in trimmed.split('/').skip(1) {
            let plain = segment
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
            if segment.is_empty() || segment == "." || segment == ".." || !plain {
                return Err(format!(
                    "invalid path prefix {text:?}: each segment must be letters, digits, '-', '.', '_' or '~', and not \".\" or \"..\""
                ));
            }
        }
        Ok(RoutePrefix(trimmed.to_string()))
    }

    /// Splits the prefix into its segments, without the leading empty one.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1)
    }
}

deserialize_from_str!(RoutePrefix, "a path prefix such as \"/nps\"");

impl fmt::Display for RoutePrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            formatter.write_str("/")
        } else {
            formatter.write_str(&self.0)
        }
    }
}

/// A network allowed to call the admin routes; a bare address means that address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminNet(pub IpNet);

impl AdminNet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(AdminNet(as_ipv4_if_mapped(net.trunc())));
        }
        text.parse::<IpAddr>().map(|addr| AdminNet(as_ipv4_if_mapped(IpNet::from(addr)))).map_err(|_| {
            format!("invalid network {text:?}: write an address or a CIDR block, like \"127.0.0.1/32\" or \"::1/128\"")
        })
    }
}

/// Reads an IPv4-mapped IPv6 block (`::ffff:127.0.0.1/128`) as the IPv4 block it
/// means, because peer addresses are compared in their IPv4 form.
fn as_ipv4_if_mapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

deserialize_from_str!(
    AdminNet,
    "an address or CIDR block such as \"127.0.0.1/32\""
);

/// A header name that keygate sets on forwarded requests, with its
/// lower-case bytes for the wire, so that setting the header copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedHeader(pub HeaderName, Bytes);

impl ForwardedHeader {
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| {
            format!(
                "invalid header name {text:?}: use letters, digits and '-', like \"X-Client-Id\""
            )
        })?;
        // Some backends read `_` as `-`, so `x_api_key` is as reserved as `x-api-key`.
        let folded = name.as_str().replace('_', "-");
        if RESERVED_HEADERS.contains(&folded.as_str()) {
            return Err(format!(
                "header name {text:?} is not allowed here: it is the key header, a hop-by-hop header or a framing header"
            ));
        }
        Ok(ForwardedHeader::new(name))
    }

    pub fn new(name: HeaderName) -> Self {
        let wire = Bytes::copy_from_slice(name.as_str().as_bytes());
        ForwardedHeader(name, wire)
    }

    /// Returns the name as written on the wire, without copying it.
    pub fn wire_name(&self) -> Bytes {
        self.1.clone()
    }
}

deserialize_from_str!(ForwardedHeader, "a header name such as \"X-Client-Id\"");

/// Worker threads of the proxy service: `auto` (one a core) or a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    #[default]
    Auto,
    Count(usize),
}

impl Threads {
    pub const MAX: usize = 1024;

    /// Returns the thread count to run with, resolving `auto` to the number of cores.
    pub fn resolve(self) -> usize {
        match self {
            Threads::Auto => std::thread::available_parallelism().map_or(1, |count| count.get()),
            Threads::Count(count) => count,
        }
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ThreadsVisitor;
        impl Visitor<'_> for ThreadsVisitor {
            type Value = Threads;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("\"auto\" or a number of threads")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Threads, E> {
                match value.trim() {
                    "auto" => Ok(Threads::Auto),
                    other => Err(E::custom(format!(
                        "invalid threads {other:?}: write \"auto\" or a number from 1 to {}",
                        Threads::MAX
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Threads, E> {
                match usize::try_from(value) {
                    Ok(count) if (1..=Threads::MAX).contains(&count) => Ok(Threads::Count(count)),
                    _ => Err(E::custom(format!(
                        "invalid threads {value}: write \"auto\" or a number from 1 to {}",
                        Threads::MAX
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Threads, E> {
                Err(E::custom(format!(
                    "invalid threads {value}: write \"auto\" or a number from 1 to {}",
                    Threads::MAX
                )))
            }
        }
        deserializer.deserialize_any(ThreadsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_prefix_forms() {
        assert_eq!(RoutePrefix::parse("/nps").unwrap().0, "/nps");
        assert_eq!(RoutePrefix::parse("/nps/").unwrap().0, "/nps");
        assert_eq!(RoutePrefix::parse("/").unwrap().0, "");
        assert!(RoutePrefix::parse("nps").is_err());
        assert!(RoutePrefix::parse("/a/../b").is_err());
        assert!(RoutePrefix::parse("/a;b").is_err());
        assert!(RoutePrefix::parse("/a//b").is_err());
        assert!(RoutePrefix::parse("/a%2fb").is_err());
    }

    #[test]
    fn admin_net_forms() {
        assert_eq!(
            AdminNet::parse("127.0.0.1").unwrap().0.to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            AdminNet::parse("10.1.2.3/8").unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(AdminNet::parse("::1/128").unwrap().0.to_string(), "::1/128");
        assert!(AdminNet::parse("localhost").is_err());
        assert_eq!(
            AdminNet::parse("::ffff:127.0.0.1/128")
                .unwrap()
                .0
                .to_string(),
            "127.0.0.1/32"
        );
    }

    #[test]
    fn forwarded_header_rules() {
        assert_eq!(
            ForwardedHeader::parse("X-Client-Id").unwrap().0.as_str(),
            "x-client-id"
        );
        for name in [
            "x-api-key",
            "X-Api-Key",
            "Connection",
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "TE",
            "Expect",
        ] {
            assert!(
                ForwardedHeader::parse(name).is_err(),
                "{name} must be rejected"
            );
        }
        assert!(ForwardedHeader::parse("bad header").is_err());
    }

    #[test]
    fn listen_forms() {
        let one: ListenAddrs = serde_yaml::from_str("127.0.0.1:1").unwrap();
        assert_eq!(one.0.len(), 1);
        let two: ListenAddrs = serde_yaml::from_str("[\"127.0.0.1:1\", \"[::1]:1\"]").unwrap();
        assert_eq!(two.0.len(), 2);
        assert!(serde_yaml::from_str::<ListenAddrs>("[]").is_err());
        assert!(serde_yaml::from_str::<ListenAddrs>("localhost:1").is_err());
    }

    #[test]
    fn threads_forms() {
        assert_eq!(
            serde_yaml::from_str::<Threads>("auto").unwrap(),
            Threads::Auto
        );
        assert_eq!(
            serde_yaml::from_str::<Threads>("4").unwrap(),
            Threads::Count(4)
        );
        assert!(serde_yaml::from_str::<Threads>("0").is_err());
        assert!(serde_yaml::from_str::<Threads>("-1").is_err());
        assert!(serde_yaml::from_str::<Threads>("many").is_err());
    }

    #[test]
    fn reserved_header_spellings() {
        for name in [
            "x_api_key",
            "Authorization",
            "Cookie",
            "X-Forwarded-For",
            "forwarded",
        ] {
            assert!(
                ForwardedHeader::parse(name).is_err(),
                "{name} must be rejected"
            );
        }
    }
}
