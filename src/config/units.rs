//! Duration and size values as the config file writes them: `"500ms"`, `"5s"`,
//! `"2m"`, `"64KiB"`, `"10MiB"`.
//!
//! Each type rejects a bad value while the YAML is being read, so the error
//! carries the line and column of the value.

use std::fmt;
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
}
