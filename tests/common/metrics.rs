//! Reading single series from keygate's Prometheus text.

use std::net::SocketAddr;

use super::http::metrics_text;

/// Returns the value of the series `name` whose labels are exactly `labels`,
/// in any order, or `None` when the text has no such series.
pub fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut expected: Vec<(&str, &str)> = labels.to_vec();
    expected.sort_unstable();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find_map(|(series, value)| {
            let (series_name, label_text) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = label_text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(label, value)| (label, value.trim_matches('"')))
                .collect();
            found.sort_unstable();
            if found != expected {
                return None;
            }
            value.parse().ok()
        })
}

/// Fetches the metrics from `metrics_addr` and returns one counter, 0 when the series is absent.
pub fn counter(metrics_addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    series_value(&metrics_text(metrics_addr), name, labels).unwrap_or(0.0)
}

/// Returns `keygate_config_reloads_total` for one trigger and result.
pub fn reloads(metrics_addr: SocketAddr, trigger: &str, result: &str) -> f64 {
    counter(
        metrics_addr,
        "keygate_config_reloads_total",
        &[("trigger", trigger), ("result", result)],
    )
}
