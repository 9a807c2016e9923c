//! The backends of the `gateway` section: `upstream`, one URL or a list of
//! URLs and `{url, weight}` entries, and the active `healthCheck`.
//!
//! Each value is checked while the YAML is read, so an error carries the
//! line and column of the value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::units::ConfigDuration;
use super::upstream_url::UpstreamUrl;

/// The largest weight of one backend. The balancer keeps one slot per unit
/// of weight, so the bound also bounds its memory.
pub const MAX_WEIGHT: u16 = 100;

/// The largest number of backends in `gateway.upstream`.
pub const MAX_UPSTREAMS: usize = 256;

/// The largest health check threshold.
pub const MAX_THRESHOLD: u16 = 100;

/// `gateway.upstream`: the backends requests are spread over, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamList(pub Vec<UpstreamEntry>);

/// One backend and its share of the requests relative to the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamEntry {
    pub url: UpstreamUrl,
    pub weight: u16,
}

impl UpstreamList {
    /// Returns a list of one backend with weight 1.
    pub fn single(url: UpstreamUrl) -> Self {
        UpstreamList(vec![UpstreamEntry { url, weight: 1 }])
    }
}

impl fmt::Display for UpstreamList {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            write!(formatter, "{}", entry.url)?;
            if entry.weight != 1 {
                write!(formatter, " (weight {})", entry.weight)?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for UpstreamList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = UpstreamList;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .write_str("an http:// or https:// URL, or a list of URLs and {url, weight} entries")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<UpstreamList, E> {
        let url = UpstreamUrl::parse(value).map_err(E::custom)?;
        Ok(UpstreamList::single(url))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UpstreamList, A::Error> {
        let mut entries: Vec<UpstreamEntry> = Vec::new();
        while let Some(entry) = seq.next_element::<UpstreamEntry>()? {
            if let Some(first) = entries.iter().position(|seen| seen.url == entry.url) {
                return Err(de::Error::custom(format!(
                    "upstream[{first}] and upstream[{}] are both {}; list each backend once and use weight for a larger share",
                    entries.len(),
                    entry.url
                )));
            }
            if entries.len() == MAX_UPSTREAMS {
                return Err(de::Error::custom(format!(
                    "upstream lists more than {MAX_UPSTREAMS} backends"
                )));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(de::Error::custom("upstream must name at least one backend"));
        }
        Ok(UpstreamList(entries))
    }
}

impl<'de> Deserialize<'de> for UpstreamEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = UpstreamEntry;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an http:// or https:// URL or an entry {url, weight}")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<UpstreamEntry, E> {
        let url = UpstreamUrl::parse(value).map_err(E::custom)?;
        Ok(UpstreamEntry { url, weight: 1 })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UpstreamEntry, A::Error> {
        let mut url: Option<UpstreamUrl> = None;
        let mut weight: Option<u16> = None;
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "url" if url.is_none() => url = Some(map.next_value()?),
                "weight" if weight.is_none() => weight = Some(map.next_value::<Weight>()?.0),
                "url" | "weight" => {
                    return Err(de::Error::custom(format!(
                        "{name} is written twice in one upstream entry"
                    )))
                }
                other => {
                    return Err(de::Error::custom(format!(
                    "unknown setting {other:?} in an upstream entry; an entry has url and weight"
                )))
                }
            }
        }
        let Some(url) = url else {
            return Err(de::Error::custom("url is missing in an upstream entry"));
        };
        Ok(UpstreamEntry {
            url,
            weight: weight.unwrap_or(1),
        })
    }
}

/// A backend weight, 1 to [`MAX_WEIGHT`].
struct Weight(u16);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u16::try_from(value) {
            Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(Weight(weight)),
            _ => Err(de::Error::custom(format!(
                "invalid weight {value}: write a whole number from 1 to {MAX_WEIGHT}"
            ))),
        }
    }
}

/// `gateway.healthCheck`: an HTTP `GET` sent to every backend on a fixed
/// interval. A 2xx response within `timeout` passes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HealthCheckSettings {
    /// The path to request; `None` means `<contextPath>/health`.
    pub path: Option<HealthPath>,
    pub interval: ConfigDuration,
    /// For connecting, writing the request and each read of the response.
    pub timeout: ConfigDuration,
    /// Failed checks in a row that take a healthy backend out.
    pub unhealthy_threshold: Threshold,
    /// Passed checks in a row that put an unhealthy backend back.
    pub healthy_threshold: Threshold,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        HealthCheckSettings {
            path: None,
            interval: ConfigDuration(Duration::from_secs(5)),
            timeout: ConfigDuration(Duration::from_secs(1)),
            unhealthy_threshold: Threshold(1),
            healthy_threshold: Threshold(1),
        }
    }
}

/// The path and query of the health check request, such as `/nps/health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPath(pub String);

impl HealthPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = text.starts_with('/')
            && text.parse::<http::uri::PathAndQuery>().is_ok()
            && !text.bytes().any(|byte| byte.is_ascii_whitespace());
        if !valid {
            return Err(format!(
                "invalid health check path {text:?}: write an absolute path like \"/nps/health\""
            ));
        }
        Ok(HealthPath(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for HealthPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HealthPath::parse(&text).map_err(de::Error::custom)
    }
}

/// A count of health checks in a row, 1 to [`MAX_THRESHOLD`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold(pub u16);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        match u16::try_from(value) {
            Ok(count) if (1..=MAX_THRESHOLD).contains(&count) => Ok(Threshold(count)),
            _ => Err(de::Error::custom(format!(
                "invalid threshold {value}: write a whole number from 1 to {MAX_THRESHOLD}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(yaml: &str) -> Result<UpstreamList, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn one_url_is_a_list_of_one() {
        let upstreams = list("http://127.0.0.1:20280").unwrap();
        assert_eq!(upstreams.0.len(), 1);
        assert_eq!(upstreams.0[0].weight, 1);
        assert_eq!(upstreams.0[0].url.port, 20280);
    }

    #[test]
    fn list_of_urls_and_entries() {
        let upstreams = list(
            "- http://10.0.0.1:1\n- url: http://10.0.0.2:2\n  weight: 3\n- {url: 'http://[::1]:3'}\n",
        )
        .unwrap();
        let weights: Vec<u16> = upstreams.0.iter().map(|entry| entry.weight).collect();
        assert_eq!(weights, [1, 3, 1]);
        assert_eq!(upstreams.0[2].url.host, "::1");
        assert_eq!(
            upstreams.to_string(),
            "http://10.0.0.1:1, http://10.0.0.2:2 (weight 3), http://[::1]:3"
        );
    }

    #[test]
    fn list_rules() {
        let cases = [
            ("[]", "at least one backend"),
            ("[http://a:1, http://a:1/]", "upstream[0] and upstream[1]"),
            ("[{url: http://a:1, weight: 0}]", "invalid weight 0"),
            ("[{url: http://a:1, weight: 101}]", "invalid weight 101"),
            ("[{url: http://a:1, weight: -2}]", "invalid weight -2"),
            ("[{url: http://a:1, weight: heavy}]", "invalid type"),
            ("[{weight: 2}]", "url is missing"),
            (
                "[{url: http://a:1, wieght: 2}]",
                "unknown setting \"wieght\"",
            ),
            ("[{url: http://a:1, url: http://b:1}]", "written twice"),
            ("[ftp://a:1]", "scheme"),
            ("[{url: 'wss://a:1'}]", "scheme"),
        ];
        for (yaml, expected) in cases {
            let err = list(yaml).unwrap_err();
            assert!(err.to_string().contains(expected), "{yaml}: {err}");
            assert!(err.location().is_some(), "{yaml}: no location in {err}");
        }
    }

    #[test]
    fn too_many_backends() {
        let yaml: String = (0..=MAX_UPSTREAMS)
            .map(|port| format!("- http://127.0.0.1:{}\n", port + 1))
            .collect();
        let err = list(&yaml).unwrap_err();
        assert!(err.to_string().contains("more than 256"), "{err}");
    }

    #[test]
    fn health_check_defaults() {
        let settings: HealthCheckSettings = serde_yaml::from_str("{}").unwrap();
        assert_eq!(settings, HealthCheckSettings::default());
        assert_eq!(settings.interval.0, Duration::from_secs(5));
        assert_eq!(settings.timeout.0, Duration::from_secs(1));
        assert_eq!(settings.path, None);
    }

    #[test]
    fn health_check_values() {
        let settings: HealthCheckSettings = serde_yaml::from_str(
            "{path: /status?full=1, interval: 500ms, timeout: 200ms, unhealthyThreshold: 3, healthyThreshold: 2}",
        )
        .unwrap();
        assert_eq!(settings.path, Some(HealthPath("/status?full=1".into())));
        assert_eq!(settings.interval.0, Duration::from_millis(500));
        assert_eq!(settings.unhealthy_threshold, Threshold(3));
        assert_eq!(settings.healthy_threshold, Threshold(2));
        for (yaml, expected) in [
            ("{path: status}", "invalid health check path"),
            ("{path: '/a b'}", "invalid health check path"),
            ("{interval: 5}", "unit is required"),
            ("{unhealthyThreshold: 0}", "invalid threshold"),
            ("{paht: /x}", "unknown field"),
        ] {
            let err = serde_yaml::from_str::<HealthCheckSettings>(yaml).unwrap_err();
            assert!(err.to_string().contains(expected), "{yaml}: {err}");
        }
    }
}
