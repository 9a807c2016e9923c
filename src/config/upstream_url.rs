//! The URL of one backend, `http://` or `https://`, checked while the
//! YAML is read so an error carries the value's line and column.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The backend's base URL, `http://host:port` or `https://host:port`. Requests keep their own path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `https://`: keygate connects with TLS and verifies the backend's certificate.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write it like \"http://127.0.0.1:20280\" or \"https://nps:20443\"";
        let uri: http::Uri = text
            .trim()
            .parse()
            .map_err(|err| format!("invalid upstream URL {text:?} ({err}); {hint}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid upstream URL {text:?}: the scheme must be http:// or https://; {hint}"
                ))
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "invalid upstream URL {text:?}: a host is missing; {hint}"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid upstream URL {text:?}: user names and passwords are not allowed"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "invalid upstream URL {text:?}: remove the path and query; keygate forwards each request's own path unchanged"
            ));
        }
        let after_host = authority
            .as_str()
            .rsplit_once(']')
            .map_or(authority.as_str(), |(_, tail)| tail);
        if after_host.contains(':') && authority.port_u16().is_none() {
            return Err(format!(
                "invalid upstream URL {text:?}: the port must be a number from 1 to 65535"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if tls { 443 } else { 80 };
        Ok(UpstreamUrl {
            tls,
            host,
            port: authority.port_u16().unwrap_or(default_port),
        })
    }

    /// Returns `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Returns whether the port is the scheme's default, so a `Host` header may leave it out.
    pub fn has_default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlVisitor;
        impl Visitor<'_> for UrlVisitor {
            type Value = UpstreamUrl;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an http:// or https:// URL such as \"http://127.0.0.1:20280\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<UpstreamUrl, E> {
                UpstreamUrl::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(UrlVisitor)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        if self.host.contains(':') {
            write!(formatter, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_forms() {
        let url = UpstreamUrl::parse("http://127.0.0.1:20280").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 20280));
        assert_eq!(UpstreamUrl::parse("http://backend").unwrap().port, 80);
        assert_eq!(
            UpstreamUrl::parse("http://[::1]:9000/").unwrap().host,
            "::1"
        );
        let secure = UpstreamUrl::parse("https://backend").unwrap();
        assert!(secure.tls);
        assert_eq!(secure.port, 443);
        assert!(secure.has_default_port());
        assert_eq!(secure.to_string(), "https://backend:443");
        assert_eq!(
            UpstreamUrl::parse("https://[::1]:8443")
                .unwrap()
                .to_string(),
            "https://[::1]:8443"
        );
        assert!(!UpstreamUrl::parse("http://backend").unwrap().tls);
        assert!(UpstreamUrl::parse("ftp://backend").is_err());
        assert!(UpstreamUrl::parse("http://backend/nps").is_err());
        assert!(UpstreamUrl::parse("http://user:pw@backend").is_err());
        assert!(UpstreamUrl::parse("127.0.0.1:20280").is_err());
        assert!(UpstreamUrl::parse("https://127.0.0.1:99999").is_err());
    }

    #[test]
    fn upstream_port_and_query_rejected() {
        let port = UpstreamUrl::parse("http://127.0.0.1:99999").unwrap_err();
        assert!(port.contains("1 to 65535"), "{port}");
        let query = UpstreamUrl::parse("http://backend?x=1").unwrap_err();
        assert!(query.contains("query"), "{query}");
        assert_eq!(UpstreamUrl::parse("http://[::1]:9000").unwrap().port, 9000);
    }
}
