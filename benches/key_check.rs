//! The key check alone: parse one `x-api-key` value, find the client and
//! compare digests, with 1 to 1,000,000 configured clients.
//!
//! Run with `cargo bench --bench key_check`. Figures are recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keygate::clients::{encode_api_key, ClientTable};
use keygate::config::ClientEntry;

fn clients(count: usize) -> Vec<ClientEntry> {
    (0..count)
        .map(|index| ClientEntry { client_id: format!("client-{index}"), key: format!("{index:064x}"), rate_limit: None })
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
        for (case, value) in [("good", &good), ("wrong_key", &wrong_key), ("unknown_client", &unknown)] {
            group.bench_with_input(BenchmarkId::new(case, count), value, |bench, value| {
                bench.iter(|| table.check(std::iter::once(black_box(value.as_bytes()))).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, key_check);
criterion_main!(benches);
