#!/usr/bin/env bash
# Run keygate's test suite in debug mode after installing the build
# prerequisites. `cargo test --locked --all-targets` covers the library,
# binaries, tests, examples and benches, and cargo runs each bench once in
# test mode. The doc tests run too when the crate has a library. Extra
# arguments go to the all-targets run, as in `scripts/test.sh -- --nocapture`.
# Exits with cargo's status.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo_root"

# rustup installs cargo here, and a non-login shell may not have it on PATH.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
    PATH=$cargo_bin:$PATH
fi

scripts/setup.sh

echo "test: cargo test --locked --all-targets${*:+ $*}"
cargo test --locked --all-targets "$@"

# --all-targets leaves out doc tests, and `cargo test --doc` fails when
# there is no library target.
if [[ -f src/lib.rs ]]; then
    echo "test: cargo test --locked --doc"
    cargo test --locked --doc
fi
