//! Builder for keygate's YAML configuration file.

use std::net::SocketAddr;

use serde_yaml::{Mapping, Value};

/// Builds the text of keygate's `application.yml`.
///
/// The defaults are those of a test run: listen and metrics addresses on
/// free loopback ports, one worker thread, log level `trace`, so that
/// tests can search the log for leaked keys, and `watchConfig: false`, so
/// that a rewritten file is loaded only when the test asks for it. Settings are stored as YAML
/// values and serialized with serde_yaml, so client ids, keys and strings
/// set with [`ConfigBuilder::set_string`] are quoted as needed.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    gateway: Mapping,
    raw_gateway_lines: Vec<String>,
    clients: Vec<(String, String)>,
    /// `rateLimit` values of client entries, by clientId.
    client_rate_limits: Vec<(String, String)>,
    raw_top_level: Vec<String>,
}

impl ConfigBuilder {
    /// Starts a configuration that forwards to `http://{upstream}` and has no
    /// clients.
    pub fn new(upstream: SocketAddr) -> ConfigBuilder {
        let listen = super::free_addr();
        let metrics = super::free_addr();
        let defaults = format!(
            "
listen: '{listen}'
contextPath: /nps
uriBase: /rest
upstream: 'http://{upstream}'
forwardRefresh: true
hideCredentials: false
clientIdHeader: X-Client-Id
requestIdHeader: X-Request-Id
adminAllowFrom: ['127.0.0.1/32', '::1/128']
watchConfig: false
threads: 1
timeouts: {{ connect: 1s, read: 30s, write: 30s, upstreamIdle: 60s, clientRead: 60s }}
limits: {{ maxHeaderSize: 64KiB, maxBodySize: 10MiB, drainBodyMax: 64KiB, drainTime: 1s }}
log: {{ level: trace, format: text, access: true }}
metrics: {{ listen: '{metrics}', perClient: false }}
"
        );
        let gateway = match serde_yaml::from_str(&defaults) {
            Ok(Value::Mapping(mapping)) => mapping,
            other => panic!("default gateway settings are not a YAML mapping: {other:?}"),
        };
        ConfigBuilder {
            gateway,
            raw_gateway_lines: Vec::new(),
            clients: Vec::new(),
            client_rate_limits: Vec::new(),
            raw_top_level: Vec::new(),
        }
    }

    /// Adds an entry to `allowedClients`.
    pub fn client(mut self, client_id: &str, key: &str) -> ConfigBuilder {
        self.clients.push((client_id.to_owned(), key.to_owned()));
        self
    }

    /// Adds entries to `allowedClients` as (clientId, key) pairs.
    pub fn clients(mut self, clients: &[(&str, &str)]) -> ConfigBuilder {
        for (client_id, key) in clients {
            self.clients
                .push(((*client_id).to_owned(), (*key).to_owned()));
        }
        self
    }

    /// Sets `rateLimit` of the entry of `client_id`, such as `"10/s"`. The
    /// value is written as a string, so invalid values reach keygate as
    /// written.
    pub fn client_rate_limit(mut self, client_id: &str, rate_limit: &str) -> ConfigBuilder {
        self.client_rate_limits
            .push((client_id.to_owned(), rate_limit.to_owned()));
        self
    }

    /// Sets a gateway setting to a YAML value, for example
    /// `set("timeouts.read", "2s")` or `set("listen", "['127.0.0.1:1', '[::1]:2']")`.
    /// Dots separate the keys of nested mappings, which are created as
    /// needed. Panics when `yaml` is not valid YAML.
    pub fn set(mut self, key_path: &str, yaml: &str) -> ConfigBuilder {
        let value: Value = serde_yaml::from_str(yaml)
            .unwrap_or_else(|err| panic!("value for {key_path} is not valid YAML ({err}): {yaml}"));
        set_path(&mut self.gateway, key_path, value);
        self
    }

    /// Sets a gateway setting to a string, quoted as needed.
    pub fn set_string(mut self, key_path: &str, value: &str) -> ConfigBuilder {
        set_path(&mut self.gateway, key_path, Value::String(value.to_owned()));
        self
    }

    /// Removes a gateway setting, so that keygate uses its default. Removing
    /// a setting that is not there does nothing.
    pub fn remove(mut self, key_path: &str) -> ConfigBuilder {
        let (parents, last) = split_path(key_path);
        let mut mapping = &mut self.gateway;
        for key in parents {
            match mapping.get_mut(key) {
                Some(Value::Mapping(nested)) => mapping = nested,
                _ => return self,
            }
        }
        mapping.remove(last);
        self
    }

    /// Appends a line as written under `gateway:`, indented by the builder.
    /// Use it for text that [`ConfigBuilder::set`] cannot produce, such as a
    /// duplicate or unknown key.
    pub fn gateway_line(mut self, line: &str) -> ConfigBuilder {
        self.raw_gateway_lines.push(line.to_owned());
        self
    }

    /// Appends YAML text at the top level, after `allowedClients`, such as
    /// NPS settings that keygate ignores.
    pub fn top_level(mut self, text: &str) -> ConfigBuilder {
        self.raw_top_level.push(text.to_owned());
        self
    }

    /// Returns the first `listen` address. Panics when `listen` was set to
    /// something that is not an address.
    pub fn listen_addr(&self) -> SocketAddr {
        let listen = self
            .gateway
            .get("listen")
            .expect("gateway.listen was removed from the configuration");
        first_addr(listen).unwrap_or_else(|| panic!("gateway.listen is not an address: {listen:?}"))
    }

    /// Returns `metrics.listen`. Panics when it was removed or is not an
    /// address.
    pub fn metrics_addr(&self) -> SocketAddr {
        let listen = self
            .gateway
            .get("metrics")
            .and_then(|metrics| metrics.get("listen"))
            .expect("gateway.metrics.listen was removed from the configuration");
        first_addr(listen)
            .unwrap_or_else(|| panic!("gateway.metrics.listen is not an address: {listen:?}"))
    }

    /// Returns the configuration file text.
    pub fn build(&self) -> String {
        let mut text = String::from("gateway:\n");
        let gateway = serde_yaml::to_string(&self.gateway)
            .expect("gateway settings always serialize to YAML");
        push_indented(&mut text, &gateway);
        for line in &self.raw_gateway_lines {
            push_indented(&mut text, line);
        }

        if self.clients.is_empty() {
            text.push_str("allowedClients: []\n");
        } else {
            let clients: Vec<Value> = self
                .clients
                .iter()
                .map(|(client_id, key)| {
                    let mut entry = Mapping::new();
                    entry.insert("clientId".into(), client_id.as_str().into());
                    entry.insert("key".into(), key.as_str().into());
                    let rate_limit = self
                        .client_rate_limits
                        .iter()
                        .rfind(|(limited_id, _)| limited_id == client_id);
                    if let Some((_, rate_limit)) = rate_limit {
                        entry.insert("rateLimit".into(), rate_limit.as_str().into());
                    }
                    Value::Mapping(entry)
                })
                .collect();
            let clients =
                serde_yaml::to_string(&clients).expect("client entries always serialize to YAML");
            text.push_str("allowedClients:\n");
            push_indented(&mut text, &clients);
        }

        for block in &self.raw_top_level {
            text.push_str(block);
            if !block.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }
}

fn split_path(key_path: &str) -> (Vec<&str>, &str) {
    let mut keys: Vec<&str> = key_path.split('.').collect();
    let last = keys.pop().expect("split always yields at least one part");
    (keys, last)
}

fn set_path(root: &mut Mapping, key_path: &str, value: Value) {
    let (parents, last) = split_path(key_path);
    let mut mapping = root;
    for key in parents {
        let entry = mapping
            .entry(key.into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if !entry.is_mapping() {
            *entry = Value::Mapping(Mapping::new());
        }
        mapping = entry
            .as_mapping_mut()
            .expect("entry was just made a mapping");
    }
    mapping.insert(last.into(), value);
}

/// Parses an address, or the first address of a list.
pub(super) fn first_addr(value: &Value) -> Option<SocketAddr> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Sequence(items) => items.first().and_then(first_addr),
        _ => None,
    }
}

/// Appends `yaml` indented by two spaces. Empty lines stay empty, which
/// keeps block scalars valid.
fn push_indented(text: &mut String, yaml: &str) {
    for line in yaml.lines() {
        if !line.is_empty() {
            text.push_str("  ");
            text.push_str(line);
        }
        text.push('\n');
    }
}
