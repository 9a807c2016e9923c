//! Reloading a config file of 100,000 clients: parsing and checking it,
//! building the snapshot, and the whole refresh (load, compare, swap and
//! free the old snapshot) through `SnapshotStore::reload`.
//!
//! Run with `cargo bench --bench reload`. Figures are recorded in BENCHMARKS.md.
//! `cargo test` runs each benchmark once with 1,000 clients, to keep the
//! debug-mode test run short.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keygate::metrics::ReloadTrigger;
use keygate::reload::{load_snapshot, SnapshotStore};

/// Clients in each file under `cargo bench`, which passes `--bench`.
const BENCH_CLIENTS: usize = 100_000;
/// Clients in each file when `cargo test` runs the benchmarks once.
const TEST_CLIENTS: usize = 1_000;

/// Writes a config file of `count` clients. Every client of `generation` 1
/// except the first gets a clientId and key of its own, so a refresh from
/// generation 0 to 1 keeps one client and replaces the others.
fn write_config(path: &Path, count: usize, generation: usize) {
    let mut text = String::from(
        "gateway:\n  listen: 127.0.0.1:20200\n  upstream: http://127.0.0.1:20280\n  \
         forwardRefresh: false\n  threads: 1\n  log:\n    level: warn\n    access: false\n\
         allowedClients:\n",
    );
    for index in 0..count {
        let generation = if index == 0 { 0 } else { generation };
        writeln!(
            text,
            "  - clientId: client-{generation}-{index}\n    key: \"{generation:032x}{index:032x}\""
        )
        .expect("writing to a String cannot fail");
    }
    std::fs::write(path, text).expect("the temporary folder is writable");
}

/// Points `link` at `target` by renaming a new symbolic link over it, as an
/// operator who replaces the file in one step would.
fn switch_config(link: &Path, target: &Path) {
    let next = link.with_extension("next");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(target, &next).expect("the temporary folder is writable");
    std::fs::rename(&next, link).expect("the temporary folder is writable");
}

fn reload(criterion: &mut Criterion) {
    let clients = if std::env::args().any(|arg| arg == "--bench") {
        BENCH_CLIENTS
    } else {
        TEST_CLIENTS
    };
    let folder = tempfile::tempdir().expect("a temporary folder can be made");
    let files: [PathBuf; 2] = [
        folder.path().join("first.yml"),
        folder.path().join("second.yml"),
    ];
    for (generation, file) in files.iter().enumerate() {
        write_config(file, clients, generation);
    }
    let config = folder.path().join("keygate.yml");
    switch_config(&config, &files[0]);

    let mut group = criterion.benchmark_group("reload");
    // One iteration takes a good part of a second, so the minimum sample count keeps runs short.
    group.sample_size(10);

    group.bench_function(BenchmarkId::new("parse", clients), |bench| {
        bench.iter_with_large_drop(|| {
            keygate::config::load(black_box(&files[1])).expect("the file is valid")
        })
    });

    let (previous, _) = load_snapshot(&files[0], None).expect("the file is valid");
    group.bench_function(BenchmarkId::new("load_snapshot", clients), |bench| {
        bench.iter_with_large_drop(|| {
            load_snapshot(black_box(&files[1]), Some(&previous)).expect("the file is valid")
        })
    });
    drop(previous);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let (first, _) = load_snapshot(&config, None).expect("the file is valid");
    let store = SnapshotStore::new(config.clone(), first);
    let mut next_file = 1;
    group.bench_function(BenchmarkId::new("refresh", clients), |bench| {
        bench.iter(|| {
            switch_config(&config, &files[next_file]);
            next_file = 1 - next_file;
            let report = runtime
                .block_on(store.reload(ReloadTrigger::Refresh))
                .expect("the file is valid");
            assert_eq!(report.clients_kept, 1, "the two files share one client");
        })
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
