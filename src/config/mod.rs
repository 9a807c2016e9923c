//! The config file: an NPS-style YAML file whose `gateway` section and
//! `allowedClients` list keygate reads. Every other top-level key belongs to
//! the backend and is kept only to report what a refresh changed.

mod admin_token;
mod alias_budget;
mod clients;
mod flow_depth;
mod gateway;
mod keys;
mod tls;
mod units;
mod upgrade;
mod upstream_url;
mod upstreams;
mod values;

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use admin_token::AdminToken;
pub use clients::{
    check_client_id, ClientEntry, ClientKey, KeyForm, KeyPlace, MAX_KEYS_PER_CLIENT,
};
pub use gateway::{
    ConnectionCap, GatewaySettings, LogFormat, LogLevel, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, MAX_CONNECTION_CAP,
};
pub use keys::{parse_expires, parse_key_hash, KEY_HASH_PREFIX};
pub use tls::{PemPath, TlsFiles};
pub use units::{RateLimit, RatePeriod};
pub use upgrade::{UpgradeSocket, DEFAULT_UPGRADE_SOCKET};
pub use upstream_url::UpstreamUrl;
pub use upstreams::{HealthCheckSettings, UpstreamEntry, UpstreamList};
pub use values::RoutePrefix;

/// The largest config file keygate reads; a bigger one is almost certainly the wrong file.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A config file that passed every rule.
#[derive(Debug)]
pub struct Config {
    pub gateway: GatewaySettings,
    pub clients: Vec<ClientEntry>,
    /// Problems that do not stop the file from loading, such as short keys.
    pub warnings: Vec<String>,
    /// Each top-level key with a fingerprint of its value, in file order.
    pub top_level: Vec<(String, u64)>,
    /// SHA-256 of the file's bytes, to tell whether the file on disk changed since.
    pub source_digest: [u8; 32],
}

/// The reason a config file was rejected, with the place when the parser reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(formatter, ":{line}:{column}")?;
        }
        write!(formatter, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn without_place(file: &Path, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: redact_secrets(&message),
        }
    }

    fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        let (line, column) = match err.location() {
            Some(at) => {
                // serde_yaml writes the place into the message too; keep it once, in the prefix.
                message = message.replace(
                    &format!(" at line {} column {}", at.line(), at.column()),
                    "",
                );
                (Some(at.line()), Some(at.column()))
            }
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message: redact_secrets(&message),
        }
    }
}

/// The shortest run of base64 or hex characters that an error message never repeats.
const REDACT_MIN_CHARS: usize = 32;

/// Replaces long runs of base64 or hex characters in an error message.
///
/// Parser messages quote the text they could not read. When a key or an
/// `x-api-key` value sits in the wrong place (a field name, a plain list item,
/// a clientId), the message would quote it into logs and refresh responses.
fn redact_secrets(message: &str) -> String {
    let is_secret_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut redacted = String::with_capacity(message.len());
    let mut run = String::new();
    for c in message.chars().chain(std::iter::once(' ')) {
        if is_secret_char(c) {
            run.push(c);
            continue;
        }
        if run.len() >= REDACT_MIN_CHARS {
            redacted.push_str("<redacted>");
        } else {
            redacted.push_str(&run);
        }
        run.clear();
        redacted.push(c);
    }
    redacted.pop();
    redacted
}

/// Reads and checks the config file at `path`.
///
/// # Errors
///
/// A file that cannot be read, is not valid YAML, or breaks a rule.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;

    let unreadable = |err: std::io::Error| {
        ConfigError::without_place(path, format!("cannot read the config file: {err}"))
    };
    // Devices and FIFOs report no size and may never end, so only regular files are read.
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(ConfigError::without_place(
            path,
            "the config path is not a regular file; point --config at a YAML file".into(),
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::without_place(
            path,
            format!("the config file is larger than the maximum of {MAX_FILE_BYTES} bytes"),
        ));
    }
    parse(&text, path)
}

/// Checks config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    if let Err(too_deep) = flow_depth::check(text) {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: Some(too_deep.line),
            column: Some(too_deep.column),
            message: format!(
                "[...] and {{...}} are nested more than {} levels deep, which no config file needs; check that --config names the right file",
                flow_depth::MAX_FLOW_DEPTH
            ),
        });
    }
    alias_budget::check(text).map_err(|err| ConfigError::from_yaml(path, &err))?;
    let file: FileModel =
        serde_yaml::from_str(text).map_err(|err| ConfigError::from_yaml(path, &err))?;

    let gateway = file.gateway.unwrap_or_default();
    gateway
        .check_combinations()
        .map_err(|message| ConfigError::without_place(path, format!("gateway: {message}")))?;

    let Some(clients) = file.allowed_clients else {
        return Err(ConfigError::without_place(
            path,
            "allowedClients is missing or null; list the clients, or write `allowedClients: []` to let nobody in".into(),
        ));
    };
    let warnings = clients::check_list(&clients)
        .map_err(|message| ConfigError::without_place(path, message))?;

    Ok(Config {
        gateway,
        clients,
        warnings,
        top_level: file.top_level,
        source_digest: Sha256::digest(text.as_bytes()).into(),
    })
}

/// The file as keygate reads it. It is written by hand rather than derived,
/// so every top-level value is fingerprinted in the same pass that keeps line
/// numbers. A refresh compares fingerprints to report what changed.
struct FileModel {
    gateway: Option<GatewaySettings>,
    allowed_clients: Option<Vec<ClientEntry>>,
    top_level: Vec<(String, u64)>,
}

impl<'de> Deserialize<'de> for FileModel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FileVisitor)
    }
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = FileModel;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML mapping with `gateway` and `allowedClients` keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileModel, A::Error> {
        let mut file = FileModel {
            gateway: None,
            allowed_clients: None,
            top_level: Vec::new(),
        };
        while let Some(name) = map.next_key::<serde_yaml::Value>()? {
            let name = match name {
                serde_yaml::Value::String(text) => text,
                other => serde_yaml::to_string(&other)
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
            };
            let misspelt = ["gateway", "allowedClients"]
                .into_iter()
                .find(|known| known.eq_ignore_ascii_case(&name) && *known != name);
            if let Some(known) = misspelt {
                return Err(de::Error::custom(format!(
                    "top-level key {name:?} is not {known:?}; keys are case-sensitive"
                )));
            }
            if file.top_level.iter().any(|(seen, _)| *seen == name) {
                return Err(de::Error::custom(format!(
                    "top-level key {name:?} is written twice"
                )));
            }
            let mut hasher = DefaultHasher::new();
            match name.as_str() {
                "gateway" => {
                    file.gateway = map.next_value()?;
                    format!("{:?}", file.gateway).hash(&mut hasher);
                    // Debug output leaves the token digest out, so it is hashed on its own.
                    file.gateway
                        .as_ref()
                        .map(|gateway| &gateway.admin_token)
                        .hash(&mut hasher);
                }
                "allowedClients" => {
                    file.allowed_clients = map.next_value()?;
                    file.allowed_clients.hash(&mut hasher);
                }
                _ => map.next_value::<serde_yaml::Value>()?.hash(&mut hasher),
            }
            let fingerprint = hasher.finish();
            file.top_level.push((name, fingerprint));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests;
