//! The key check alone: parse one `x-api-key` value, find the client and
//! compare digests.
//!
//! `key_check` measures it with 1 to 1,000,000 configured clients.
//! `key_timing` puts side by side the ways a presented key can be wrong: a
//! good key, an unknown clientId, a wrong key, a key wrong only in its last
//! character, and keys one character short and twice as long. Its table has
//! 1,000 clients, and one of them has two keys, so every check makes two
//! digest comparisons. If the check leaked how much of a key matched, the
//! last three cases would differ from the wrong key.
//!
//! Run with `cargo bench --bench key_check`, or
//! `cargo bench --bench key_check -- --quick key_timing` for the side by side
//! alone. `benches/key_timing.rs` measures the same cases in interleaved
//! rounds, which a busy machine skews less. BENCHMARKS.md records the
//! results.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keygate::clients::{encode_api_key, ClientTable};
use keygate::config::{ClientEntry, ClientKey, KeyPlace};

/// Clients in the `key_timing` table.
const TIMING_CLIENTS: usize = 1_000;

fn clients(count: usize) -> Vec<ClientEntry> {
    (0..count)
        .map(|index| ClientEntry::with_key(&format!("client-{index}"), &format!("{index:064x}")))
        .collect()
}

fn key_check(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("key_check");
    for count in [1usize, 1_000, 100_000, 1_000_000] {
        let table = ClientTable::new(&clients(count));
        let last = count - 1;
        let good = encode_api_key(&format!("client-{last}"), &format!("{last:064x}"));
        let wrong_key = encode_api_key(&format!("client-{last}"), &format!("{:064x}", last + 1));
        let unknown = encode_api_key("nobody", &format!("{last:064x}"));
        for (case, value) in [
            ("good", &good),
            ("wrong_key", &wrong_key),
            ("unknown_client", &unknown),
        ] {
            group.bench_with_input(BenchmarkId::new(case, count), value, |bench, value| {
                bench.iter(|| {
                    table
                        .check(std::iter::once(black_box(value.as_bytes())))
                        .is_ok()
                })
            });
        }
    }
    group.finish();
}

fn key_timing(criterion: &mut Criterion) {
    let mut entries = clients(TIMING_CLIENTS);
    // A client in the middle of a rotation, with a second key.
    entries[0]
        .keys
        .push(ClientKey::plain(&"e".repeat(64), None, KeyPlace::Item(0)));
    let table = ClientTable::new(&entries);

    let target = TIMING_CLIENTS / 2;
    let client_id = format!("client-{target}");
    let key = format!("{target:064x}");
    let mut last_char_wrong = key.clone();
    last_char_wrong.pop();
    last_char_wrong.push('x');
    let cases = [
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

    let mut group = criterion.benchmark_group("key_timing");
    for (case, value) in &cases {
        group.bench_with_input(*case, value, |bench, value| {
            bench.iter(|| {
                table
                    .check(std::iter::once(black_box(value.as_bytes())))
                    .is_ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, key_check, key_timing);
criterion_main!(benches);
