//! The config file: an NPS-style YAML file whose `gateway` section and
//! `allowedClients` list keygate reads. Every other top-level key belongs to
//! the backend and is kept only to report what a refresh changed.

mod clients;
mod gateway;
mod tls;
mod units;
mod upstream_url;
mod upstreams;
mod values;

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub use clients::{check_client_id, ClientEntry};
pub use gateway::{GatewaySettings, LogFormat, LogLevel};
pub use tls::{PemPath, TlsFiles};
pub use units::{RateLimit, RatePeriod};
pub use upstreams::{HealthCheckSettings, UpstreamEntry, UpstreamList};
pub use upstream_url::UpstreamUrl;
pub use values::RoutePrefix;

/// The largest config file keygate reads; a bigger one is almost certainly the wrong file.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A config file that passed every rule.
#[derive(Debug)]
pub struct Config {
    pub gateway: GatewaySettings,
    pub clients: Vec<ClientEntry>,
    /// Problems that do not stop the file from loading, such as short keys.
    pub warnings: Vec<String>,
    /// Each top-level key with a fingerprint of its value, in file order.
    pub top_level: Vec<(String, u64)>,
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
            message,
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
            message,
        }
    }
}

/// Reads and checks the config file at `path`.
///
/// # Errors
///
/// A file that cannot be read, is not valid YAML, or breaks a rule.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let size = std::fs::metadata(path)
        .map_err(|err| {
            ConfigError::without_place(path, format!("cannot read the config file: {err}"))
        })?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(ConfigError::without_place(
            path,
            format!("the config file is {size} bytes; the maximum is {MAX_FILE_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigError::without_place(path, format!("cannot read the config file: {err}"))
    })?;
    parse(&text, path)
}

/// Checks config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
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
                }
                "allowedClients" => {
                    file.allowed_clients = map.next_value()?;
                    for entry in file.allowed_clients.iter().flatten() {
                        (&entry.client_id, &entry.key, &entry.rate_limit).hash(&mut hasher);
                    }
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
