#!/usr/bin/env bash
# Build the cargo-fuzz targets in fuzz/ and run each for a bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS]
#
# Runs each target in fuzz/fuzz_targets/ for SECONDS (default 60) with
# libFuzzer, starting from the inputs in fuzz/seeds/<target>/ and from what
# earlier runs kept in fuzz/corpus/<target>/. Each input may take at most
# FUZZ_INPUT_TIMEOUT seconds (default 10) and the process at most
# FUZZ_RSS_LIMIT_MB of memory (default 2048). libFuzzer stores a crashing,
# slow or memory-hungry input in fuzz/artifacts/<target>/, and the script
# exits 1 when any target found one. The output of each run is kept in
# fuzz/logs/<target>.log.
#
# Installs cargo-fuzz with `cargo install --locked` into cargo's bin folder
# when it is missing. The targets build with AddressSanitizer unless
# FUZZ_SANITIZER names another one (`none` builds without a sanitizer).
set -euo pipefail

readonly CARGO_FUZZ_VERSION=0.13.2
readonly DEFAULT_SECONDS=60
# libFuzzer options for each target. libFuzzer's default max_len is 4096
# bytes, or the largest seed, and it lets inputs grow to it slowly. Config
# files get more room from the start, so that deep nesting, long lists and
# many aliases are tried within a short run.
readonly -A TARGET_OPTIONS=(
    [api_key]="-max_len=4096"
    [config]="-max_len=16384 -len_control=0"
)

say() {
    printf 'fuzz: %s\n' "$*"
}

die() {
    printf 'fuzz: error: %s\n' "$*" >&2
    exit 2
}

seconds=${1:-$DEFAULT_SECONDS}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number, got '$seconds'"
input_timeout=${FUZZ_INPUT_TIMEOUT:-10}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}
sanitizer=${FUZZ_SANITIZER:-address}

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo_root"

# rustup installs cargo here, and a non-login shell may not have it on PATH.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
    PATH=$cargo_bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; install a Rust toolchain first"

if cargo fuzz --version >/dev/null 2>&1; then
    say "found $(cargo fuzz --version)"
else
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $cargo_bin"
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

# cargo-fuzz passes nightly-only flags (-Z sanitizer, sanitizer coverage
# options) to rustc. RUSTC_BOOTSTRAP=1 lets a stable rustc accept them.
export RUSTC_BOOTSTRAP=1

# cargo-fuzz has no --locked option. Fetching with --locked first fails when
# fuzz/Cargo.lock is out of date, so the build below uses the committed lock.
cargo fetch --locked --manifest-path fuzz/Cargo.toml

mapfile -t targets < <(cargo fuzz list)
((${#targets[@]} > 0)) || die "cargo fuzz list found no targets in fuzz/"

say "building ${targets[*]} with sanitizer $sanitizer"
cargo fuzz build --sanitizer "$sanitizer"

mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    seeds=fuzz/seeds/$target
    log=fuzz/logs/$target.log
    mkdir -p "$corpus"
    [[ -d $seeds ]] || seeds=

    say "running $target for $seconds s (input timeout ${input_timeout} s, memory ${rss_limit_mb} MB), log: $log"
    # New inputs go to the first folder only, so the seeds stay as written.
    read -r -a target_options <<<"${TARGET_OPTIONS[$target]:-}"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" ${seeds:+"$seeds"} -- \
        -max_total_time="$seconds" \
        -timeout="$input_timeout" \
        -rss_limit_mb="$rss_limit_mb" \
        -report_slow_units=1 \
        -print_final_stats=1 \
        "${target_options[@]}" \
        >"$log" 2>&1 || status=$?

    # The last status line reads like "#123456 DONE cov: 1234 ft: 5678 corp: 90/12Kb ...".
    summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    if ((status == 0)); then
        say "$target passed: ${summary:-no summary line, see $log}"
    else
        say "$target failed with status $status; the end of $log:"
        tail -n 40 -- "$log" >&2
        failed+=("$target")
    fi
    slow=$(grep -c '^Slowest unit' "$log" || true)
    ((slow == 0)) || say "$target: $slow new slowest inputs over 1 s, see 'Slowest unit' in $log"
done

if ((${#failed[@]} > 0)); then
    say "failed: ${failed[*]}; the inputs are in fuzz/artifacts/"
    exit 1
fi
say "all targets ran $seconds s without a failure"
