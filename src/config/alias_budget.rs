//! A limit on how many values the YAML aliases in a config file may add.
//!
//! An alias (`*name`) repeats the value of its anchor (`&name`), so a few
//! aliases to a large anchored list describe far more values than the file
//! spells out. serde_yaml 0.9 stops a load after 100 alias jumps for each
//! parser event. That stops nested alias chains, but not a large list
//! repeated by many aliases, whose time and memory grow with the square of
//! the file size. 16 KB that repeat a 4000-item list 2600 times took 1.2 s
//! and 1 GB (figures in BENCHMARKS.md, "Fuzzing"). A load builds the
//! values under keys that keygate does not read in full, to fingerprint
//! them for the refresh report, so they take memory too.
//!
//! A first pass visits the document as serde_yaml replays it, without
//! keeping anything, and stops when the values exceed the budget.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// The values a file may have beyond one for each byte of its text. A file
/// without aliases has fewer values than bytes, so only aliases use these.
pub const MAX_EXTRA_VALUES: usize = 100_000;

/// Counts the values of the YAML document in `text`, each alias counting
/// as the values it repeats.
///
/// # Errors
///
/// The text is not valid YAML, or it has more than its length in bytes plus
/// [`MAX_EXTRA_VALUES`] values.
pub fn check(text: &str) -> Result<(), serde_yaml::Error> {
    let remaining = Cell::new(text.len().saturating_add(MAX_EXTRA_VALUES));
    ValueCounter {
        remaining: &remaining,
    }
    .deserialize(serde_yaml::Deserializer::from_str(text))
}

/// Visits every value and takes one from `remaining` for each.
#[derive(Clone, Copy)]
struct ValueCounter<'budget> {
    remaining: &'budget Cell<usize>,
}

impl ValueCounter<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        match self.remaining.get().checked_sub(1) {
            Some(left) => {
                self.remaining.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "aliases (*name) repeat so many values that this file has more than its size in bytes plus {MAX_EXTRA_VALUES} values; write fewer aliases to large anchored values"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueCounter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueCounter<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.count()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.count()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.count()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.count()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.count()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.count()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.count()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.count()?;
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.count()?;
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// Counts a tagged value such as `!name value`, which arrives as an enum whose variant is the tag.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.count()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an anchored list of `items` scalars and a list of `aliases` aliases to it.
    fn repeated_list(items: usize, aliases: usize) -> String {
        format!(
            "a: &a [{}]\nb: [{}]\n",
            vec!["x"; items].join(","),
            vec!["*a"; aliases].join(",")
        )
    }

    #[test]
    fn few_aliases_pass() {
        assert!(check(&repeated_list(100, 100)).is_ok());
    }

    #[test]
    fn many_repeats_rejected() {
        // 2600 aliases to 4000 items: over 10 million values in about 16 KB.
        let err = check(&repeated_list(4000, 2600)).unwrap_err();
        assert!(err.to_string().contains("aliases (*name) repeat"), "{err}");
        // The parser reports the place of the repeated value, not of the alias.
        let place = err.location().expect("the error has a place");
        assert_eq!(place.line(), 1);
    }

    #[test]
    fn large_file_without_aliases_passes() {
        let text = format!("a: [{}]\n", vec!["1"; 200_000].join(","));
        assert!(check(&text).is_ok());
    }

    #[test]
    fn tagged_values_counted() {
        let text = "a: &a !tag [x, y]\nb: !other {c: *a}\n";
        assert!(check(text).is_ok());
    }

    #[test]
    fn syntax_error_has_place() {
        let err = check("a: [b\nc: d\n").unwrap_err();
        assert!(err.location().is_some(), "{err}");
    }
}
