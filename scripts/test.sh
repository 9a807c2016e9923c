#!/usr/bin/env bash
# Run keygate's test suite in debug mode after installing the build
# prerequisites. `cargo test --locked --all-targets` covers the library,
# binaries, tests, examples and benches, and cargo runs each bench once in
# test mode. The doc tests run too when the crate has a library, and the
# fuzz targets in fuzz/ are type-checked. Extra arguments go to the
# all-targets run, as in `scripts/test.sh -- --nocapture`.
# Closes with one summary line of all test counts, and exits with cargo's
# status.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo_root"

# rustup installs cargo here, and a non-login shell may not have it on PATH.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
    PATH=$cargo_bin:$PATH
fi

scripts/setup.sh

# cargo prints one "test result:" line per test binary, and the last one
# is often an example or the doc tests with 0 tests. The closing summary
# adds them up so that the last line covers the whole run.
cargo_output=$(mktemp)
trap 'rm -f -- "$cargo_output"' EXIT

run_cargo_test() {
    echo "test: cargo test --locked $*"
    cargo test --locked "$@" | tee -a -- "$cargo_output"
}

status=0
run_cargo_test --all-targets "$@" || status=$?

# --all-targets leaves out doc tests, and `cargo test --doc` fails when
# there is no library target.
if ((status == 0)) && [[ -f src/lib.rs ]]; then
    run_cargo_test --doc || status=$?
fi

# The fuzz targets have their own workspace in fuzz/, which the run above
# does not build. Checking them keeps them compiling as the library changes.
# Running them needs a sanitizer build of pingora, which scripts/fuzz.sh makes.
if ((status == 0)); then
    echo "test: cargo check --locked --manifest-path fuzz/Cargo.toml"
    cargo check --locked --manifest-path fuzz/Cargo.toml || status=$?
fi

# Every gateway in the tests logs at trace level; none of those logs may show a key.
if ((status == 0)); then
    python3 scripts/check-test-logs.py target/test-logs || status=$?
fi

awk '
    /^test result: / {
        for (field = 1; field < NF; field++) {
            count = $field + 0
            if ($(field + 1) ~ /^passed/) passed += count
            if ($(field + 1) ~ /^failed/) failed += count
            if ($(field + 1) ~ /^ignored/) ignored += count
        }
        binaries++
    }
    END {
        if (binaries > 0) printf "summary: %d passed, %d failed, %d skipped\n", passed, failed, ignored
    }
' "$cargo_output"
exit "$status"
