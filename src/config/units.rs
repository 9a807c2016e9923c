//! Duration, size and rate values as the config file writes them: `"500ms"`,
//! `"5s"`, `"2m"`, `"64KiB"`, `"10MiB"`, `"10/s"`, `"600/min"`.
//!
//! Each type rejects a bad value while the YAML is being read, so the error
//! carries the line and column of the value.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A positive duration written with a unit, such as `"500ms"` or `"2m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// A positive size in bytes, written as a number of bytes or with a unit such as `"64KiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl ConfigDuration {
    /// Parses a duration string, rejecting zero and bare numbers without a unit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(text.trim()).map_err(|err| {
            format!("invalid duration {text:?} ({err}); write a number with a unit, like \"500ms\", \"5s\" or \"2m\"")
        })?;
        if duration.is_zero() {
            return Err(format!(
                "invalid duration {text:?}: it must be greater than zero"
            ));
        }
        Ok(ConfigDuration(duration))
    }
}

impl ConfigSize {
    /// Parses a size string, rejecting zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let size: bytesize::ByteSize = text.trim().parse().map_err(|err| {
            format!("invalid size {text:?} ({err}); write bytes or a number with a unit, like \"64KiB\" or \"10MiB\"")
        })?;
        if size.as_u64() == 0 {
            return Err(format!(
                "invalid size {text:?}: it must be greater than zero"
            ));
        }
        Ok(ConfigSize(size.as_u64()))
    }
}

/// The largest request count a rate limit may name, per second or per minute.
pub const MAX_RATE_COUNT: u32 = 1_000_000;

/// A per-client request rate, `"N/s"` or `"N/min"`, or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimit {
    /// At most `count` requests a `period`, with bursts of up to `count`.
    Limited {
        count: NonZeroU32,
        period: RatePeriod,
    },
    /// No limit, even when `gateway.rateLimit` sets one.
    Unlimited,
}

/// The period of a [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RatePeriod {
    Second,
    Minute,
}

impl RatePeriod {
    pub fn as_duration(self) -> Duration {
        match self {
            RatePeriod::Second => Duration::from_secs(1),
            RatePeriod::Minute => Duration::from_secs(60),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RatePeriod::Second => "s",
            RatePeriod::Minute => "min",
        }
    }
}

impl RateLimit {
    /// Parses `"N/s"`, `"N/min"` or `"unlimited"`, with N from 1 to [`MAX_RATE_COUNT`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write a number of requests per second or minute, like \"10/s\" or \"600/min\", or \"unlimited\"";
        let trimmed = text.trim();
        if trimmed == "unlimited" {
            return Ok(RateLimit::Unlimited);
        }
        let Some((count, period)) = trimmed.split_once('/') else {
            return Err(format!("invalid rate limit {text:?}; {hint}"));
        };
        let period = match period.trim() {
            "s" => RatePeriod::Second,
            "min" => RatePeriod::Minute,
            other => {
                return Err(format!(
                    "invalid rate limit {text:?}: unknown period {other:?}; {hint}"
                ))
            }
        };
        let count = count
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|count| *count <= MAX_RATE_COUNT)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                format!("invalid rate limit {text:?}: the count must be a whole number from 1 to {MAX_RATE_COUNT}; {hint}")
            })?;
        Ok(RateLimit::Limited { count, period })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Limited { count, period } => {
                write!(formatter, "{count}/{}", period.as_str())
            }
            RateLimit::Unlimited => formatter.write_str("unlimited"),
        }
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for ConfigSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", bytesize::ByteSize(self.0))
    }
}

/// Reads a string or a YAML integer; integers are accepted for sizes only.
struct UnitVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    accept_integer: bool,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        (self.parse)(value).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        if !self.accept_integer {
            return Err(E::custom(format!(
                "invalid duration {value}: a unit is required, like \"{value}s\" or \"{value}ms\""
            )));
        }
        (self.parse)(&value.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Err(E::custom(format!(
            "invalid value {value}: it must be greater than zero"
        )))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnitVisitor {
            expecting: "a duration such as \"500ms\", \"5s\" or \"2m\"",
            parse: ConfigDuration::parse,
            accept_integer: false,
        })
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnitVisitor {
            expecting: "a size such as \"64KiB\" or \"10MiB\"",
            parse: ConfigSize::parse,
            accept_integer: true,
        })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = RateLimit;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a rate limit such as \"10/s\" or \"600/min\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RateLimit, E> {
                RateLimit::parse(value).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RateLimit, E> {
                Err(E::custom(format!(
                    "invalid rate limit {value}: a period is required, like \"{value}/s\" or \"{value}/min\""
                )))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RateLimit, E> {
                Err(E::custom(format!(
                    "invalid rate limit {value}: write a positive count with a period, like \"10/s\""
                )))
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(
            ConfigDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            ConfigDuration::parse("5s").unwrap().0,
            Duration::from_secs(5)
        );
        assert_eq!(
            ConfigDuration::parse("2m").unwrap().0,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn durations_rejected() {
        assert!(ConfigDuration::parse("0s").is_err());
        assert!(ConfigDuration::parse("5").is_err());
        assert!(ConfigDuration::parse("soon").is_err());
        let err = serde_yaml::from_str::<ConfigDuration>("5").unwrap_err();
        assert!(err.to_string().contains("unit is required"), "{err}");
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(ConfigSize::parse("64KiB").unwrap().0, 65536);
        assert_eq!(ConfigSize::parse("10MiB").unwrap().0, 10 * 1024 * 1024);
        assert_eq!(serde_yaml::from_str::<ConfigSize>("1000").unwrap().0, 1000);
    }

    #[test]
    fn sizes_rejected() {
        assert!(ConfigSize::parse("0").is_err());
        assert!(ConfigSize::parse("-1").is_err());
        assert!(ConfigSize::parse("big").is_err());
        assert!(serde_yaml::from_str::<ConfigSize>("-5").is_err());
    }

    #[test]
    fn rates_with_periods() {
        let ten = RateLimit::parse("10/s").unwrap();
        let RateLimit::Limited { count, period } = ten else {
            panic!("10/s must be a limit");
        };
        assert_eq!((count.get(), period), (10, RatePeriod::Second));
        assert_eq!(ten.to_string(), "10/s");
        assert_eq!(
            RateLimit::parse(" 600 / min ").unwrap().to_string(),
            "600/min"
        );
        assert_eq!(RateLimit::parse("unlimited").unwrap(), RateLimit::Unlimited);
        assert_eq!(
            RateLimit::parse("1000000/s").unwrap().to_string(),
            "1000000/s"
        );
    }

    #[test]
    fn rates_rejected() {
        for text in [
            "",
            "10",
            "/s",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/h",
            "10/m",
            "10/sec",
            "ten/s",
            "1000001/s",
            "10/s/s",
            "fast",
        ] {
            assert!(RateLimit::parse(text).is_err(), "{text:?} must be rejected");
        }
        let err = serde_yaml::from_str::<RateLimit>("10").unwrap_err();
        assert!(err.to_string().contains("period is required"), "{err}");
        assert!(serde_yaml::from_str::<RateLimit>("-3").is_err());
    }
}
