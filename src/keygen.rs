//! New client keys and the YAML snippet that hands them out.
//!
//! The snippet is pasted under `allowedClients:` in a file that the backend
//! may read too, possibly with a YAML 1.1 parser, where `no` or `on` is a
//! boolean and `0123` a number. Any value that such a reader could take for
//! something other than the same string is written double-quoted.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::clients::encode_api_key;
use crate::config::KEY_HASH_PREFIX;

/// Random bytes in a generated key; hex-encoded, the key has twice as many characters.
const KEY_BYTES: usize = 32;

/// Makes a new key: 32 bytes from the operating system's CSPRNG, as 64 lowercase hex characters.
///
/// # Errors
///
/// The operating system's random source failed.
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| format!("the system random source failed: {err}"))?;
    Ok(hex::encode(bytes))
}

/// The form of a generated snippet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnippetForm {
    /// Write `keyHash: sha256:<hex>` in place of the plain key.
    pub hashed: bool,
    /// Write one item for the `keys` list of a configured client instead of a whole entry.
    pub extra_key: bool,
}

/// Writes the snippet for a new client: the header value as a comment, then the list entry.
pub fn snippet(client_id: &str, key: &str) -> String {
    snippet_with(client_id, key, SnippetForm::default())
}

/// Writes a snippet in the given form. The plain key appears only in the
/// header value on the first line when the form is hashed.
pub fn snippet_with(client_id: &str, key: &str, form: SnippetForm) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# X-Api-Key: {}", encode_api_key(client_id, key));
    let key_line = if form.hashed {
        // `sha256:` and hex digits read as one plain string in YAML 1.1 and 1.2.
        let digest = Sha256::digest(key.as_bytes());
        format!("keyHash: {KEY_HASH_PREFIX}{}", hex::encode(digest))
    } else {
        format!("key: {}", yaml_scalar(key))
    };
    if form.extra_key {
        let _ = writeln!(
            text,
            "# An extra key for clientId {client_id}: add this item to the keys list of its entry."
        );
        let _ = writeln!(text, "- {key_line}");
    } else {
        let _ = writeln!(text, "- clientId: {}", yaml_scalar(client_id));
        let _ = writeln!(text, "  {key_line}");
    }
    text
}

/// Writes `value` plain when every YAML reader takes it as that same string, double-quoted otherwise.
fn yaml_scalar(value: &str) -> String {
    if is_safe_plain(value) {
        value.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar with the same value.
        serde_json::Value::String(value.to_string()).to_string()
    }
}

/// Plain is safe for a word of ASCII letters, digits, `-` and `_` that is not
/// a YAML 1.1 boolean or null word and cannot read as a number.
fn is_safe_plain(value: &str) -> bool {
    const RESERVED_WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let Some(first) = value.chars().next() else {
        return false;
    };
    let word_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !word_chars
        || RESERVED_WORDS
            .iter()
            .any(|word| word.eq_ignore_ascii_case(value))
    {
        return false;
    }
    if first.is_ascii_alphabetic() {
        return true;
    }
    if !first.is_ascii_digit() {
        return false;
    }
    // Starts with a digit: a number unless it has a letter no number can
    // hold. `e` is an exponent, and `0x`, `0o`, `0b` start based integers.
    let based = value.len() > 1
        && value.starts_with('0')
        && matches!(value.as_bytes()[1].to_ascii_lowercase(), b'x' | b'o' | b'b');
    !based
        && value
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !c.eq_ignore_ascii_case(&'e'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientEntry;

    fn digest(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    fn round_trip(client_id: &str, key: &str) {
        let text = snippet(client_id, key);
        let entries: Vec<ClientEntry> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(entries.len(), 1, "{text}");
        assert_eq!(entries[0].client_id, client_id, "{text}");
        assert_eq!(entries[0].keys.len(), 1, "{text}");
        assert_eq!(entries[0].keys[0].digest, digest(key), "{text}");
    }

    #[test]
    fn new_key_is_64_hex() {
        let key = new_key().unwrap();
        assert_eq!(key.len(), 64);
        assert!(key
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(key, new_key().unwrap());
    }

    #[test]
    fn snippet_shape() {
        let key = "fd04de2f1e5544b2915d1a65098c490637a0715f5c9843459f05dfc298342936";
        let text = snippet("karolin", key);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            format!("# X-Api-Key: {}", encode_api_key("karolin", key))
        );
        assert_eq!(lines[1], "- clientId: karolin");
        assert_eq!(lines[2], format!("  key: {key}"));
    }

    #[test]
    fn misreadable_values_quoted() {
        for client_id in [
            "no", "No", "on", "y", "true", "null", "0123", "1_000", "0x1F", "1e5", "café", "a#b",
            "-a", "~", "a b",
        ] {
            let text = snippet(client_id, "k");
            assert!(
                text.contains(&format!(
                    "clientId: \"{}",
                    client_id.chars().next().unwrap()
                )),
                "{client_id}: {text}"
            );
        }
        assert!(snippet("a", "1d04de2f").contains("key: 1d04de2f"));
        assert!(snippet("a", "0b1d").contains("key: \"0b1d\""));
        let numeric_key = "1234567890123456789012345678901234567890123456789012345678901234";
        assert!(snippet("a", numeric_key).contains(&format!("key: \"{numeric_key}\"")));
        let float_key = format!("{}e{}", "1".repeat(30), "2".repeat(33));
        assert!(snippet("a", &float_key).contains(&format!("key: \"{float_key}\"")));
    }

    #[test]
    fn snippet_round_trips() {
        for (client_id, key) in [
            ("karolin", new_key().unwrap().as_str()),
            ("no", "0e12345"),
            ("0123", "1_000"),
            ("café", "k1"),
            ("quote\"d", "back\\slash"),
            ("a#b", "x: y"),
            ("é", "ünïcode"),
        ] {
            round_trip(client_id, key);
        }
    }

    #[test]
    fn hashed_snippet_hides_key() {
        let key = new_key().unwrap();
        let form = SnippetForm {
            hashed: true,
            extra_key: false,
        };
        let text = snippet_with("no", &key, form);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            format!("# X-Api-Key: {}", encode_api_key("no", &key))
        );
        assert_eq!(lines[1], "- clientId: \"no\"");
        assert_eq!(
            lines[2],
            format!("  keyHash: sha256:{}", hex::encode(digest(&key)))
        );
        assert!(!lines[1..].join("\n").contains(&key), "{text}");
        let entries: Vec<ClientEntry> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(entries[0].client_id, "no");
        assert_eq!(entries[0].keys[0].digest, digest(&key));
        assert_eq!(entries[0].keys[0].form, crate::config::KeyForm::Hashed);
    }

    #[test]
    fn extra_key_snippet_is_keys_item() {
        for hashed in [false, true] {
            let key = new_key().unwrap();
            let form = SnippetForm {
                hashed,
                extra_key: true,
            };
            let text = snippet_with("karolin", &key, form);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            assert!(lines[0].starts_with("# X-Api-Key: "), "{text}");
            assert!(
                lines[1].starts_with("# An extra key for clientId karolin"),
                "{text}"
            );
            let indented: String = text.lines().map(|line| format!("    {line}\n")).collect();
            let entry = format!("- clientId: karolin\n  key: old-key\n  keys:\n{indented}");
            let entries: Vec<ClientEntry> = serde_yaml::from_str(&entry).unwrap();
            assert_eq!(entries[0].keys.len(), 2, "{entry}");
            assert_eq!(entries[0].keys[1].digest, digest(&key), "{entry}");
            assert_eq!(
                entries[0].keys[1].form == crate::config::KeyForm::Hashed,
                hashed,
                "{entry}"
            );
        }
    }
}
