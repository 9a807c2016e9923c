//! The key check's time for each way a key can be wrong, measured in
//! interleaved rounds so that load from other processes falls on every case
//! alike. `key_timing` in `key_check.rs` measures the same cases with
//! criterion, one case after another, which a busy machine skews.
//!
//! Each round times a batch of checks for every case, in an order that
//! rotates from round to round. The output is each case's median time per
//! check over all rounds, and its difference from the wrong-key case.
//!
//! Run with `cargo bench --bench key_timing`. Under `cargo test` it runs one
//! short round only, to show that it works.

use std::hint::black_box;
use std::time::Instant;

use keygate::clients::{encode_api_key, ClientTable};
use keygate::config::{ClientEntry, ClientKey, KeyPlace};

/// Clients in the table; one of them has two keys, so every check makes two digest comparisons.
const CLIENTS: usize = 1_000;

/// Rounds and checks per batch of a full run.
const ROUNDS: usize = 301;
const BATCH: usize = 2_000;

/// Builds the table and the cases, named as in `key_check.rs`, with the `x-api-key` value of each.
fn cases() -> (ClientTable, Vec<(&'static str, String)>) {
    let mut entries: Vec<ClientEntry> = (0..CLIENTS)
        .map(|index| ClientEntry::with_key(&format!("client-{index}"), &format!("{index:064x}")))
        .collect();
    entries[0]
        .keys
        .push(ClientKey::plain(&"e".repeat(64), None, KeyPlace::Item(0)));
    let table = ClientTable::new(&entries);

    let target = CLIENTS / 2;
    let client_id = format!("client-{target}");
    let key = format!("{target:064x}");
    let mut last_char_wrong = key.clone();
    last_char_wrong.pop();
    last_char_wrong.push('x');
    let cases = vec![
        ("good", encode_api_key(&client_id, &key)),
        (
            "unknown_client",
            encode_api_key(&format!("nobody-{target}"), &key),
        ),
        (
            "wrong_key",
            encode_api_key(&client_id, &format!("{:064x}", target + 1)),
        ),
        (
            "wrong_last_char",
            encode_api_key(&client_id, &last_char_wrong),
        ),
        (
            "wrong_length_short",
            encode_api_key(&client_id, &key[..key.len() - 1]),
        ),
        (
            "wrong_length_long",
            encode_api_key(&client_id, &key.repeat(2)),
        ),
    ];
    (table, cases)
}

/// Returns the nanoseconds per check of one batch.
fn time_batch(table: &ClientTable, value: &[u8], batch: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..batch {
        black_box(table.check(std::iter::once(black_box(value))).is_ok());
    }
    started.elapsed().as_nanos() as f64 / batch as f64
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let full_run = std::env::args().any(|argument| argument == "--bench");
    let (rounds, batch) = if full_run { (ROUNDS, BATCH) } else { (1, 10) };
    let (table, cases) = cases();

    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds {
        for offset in 0..cases.len() {
            let index = (round + offset) % cases.len();
            let value = cases[index].1.as_bytes();
            samples[index].push(time_batch(&table, value, batch));
        }
    }

    if !full_run {
        println!("key_timing: one short round ran in test mode; `cargo bench --bench key_timing` measures");
        return;
    }
    let medians: Vec<f64> = samples.iter_mut().map(|case| median(case)).collect();
    let wrong_key = medians[2];
    println!("key_timing: median ns per check over {rounds} interleaved rounds of {batch} checks");
    for ((name, _), value) in cases.iter().zip(&medians) {
        let difference = (value - wrong_key) / wrong_key * 100.0;
        println!("  {name:<20} {value:>8.1} ns  ({difference:+.1}% against wrong_key)");
    }
}
