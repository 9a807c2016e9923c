#!/usr/bin/env bash
# CPU profile of keygate under load on the good path and on the 403 path,
# summed by component. See benches/load/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benches/load/profile.sh [OPTIONS]

Starts an nginx backend and keygate with 1 client on 127.0.0.1, runs wrk
against keygate with a good key and then with a wrong key, and records
keygate's CPU samples with `perf record -e cpu-clock -g` during each run.
Prints each profile's self time by component (kernel, allocator, keygate,
pingora, tokio, std, other crates, libc) and its top symbols.

Options:
  --duration SECONDS  length of each load run; perf records all but the
                      first and last second (default 12)
  --top N             symbols listed per profile (default 20)
  --no-build          use the release binary already in the target folder
  --keep              keep the work folder (perf data, configs, logs) after exit
  -h, --help          show this help

Needs perf (Debian package linux-perf). Installs wrk, nginx, curl and
python3 with apt-get when missing. Every server listens on 127.0.0.1 only.
EOF
}

readonly CONNECTIONS=64
readonly WRK_THREADS=1
duration=12
top=20
build=1
keep=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="${2:?--duration needs a number of seconds}"; shift 2 ;;
        --top) top="${2:?--top needs a number}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "profile.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
    esac
done
for value in "$duration" "$top"; do
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "profile.sh: '$value' is not a positive whole number; see --help" >&2
        exit 2
    fi
done
if (( duration < 3 )); then
    echo "profile.sh: --duration must be at least 3 seconds" >&2
    exit 2
fi
if ! command -v perf >/dev/null; then
    echo "profile.sh: perf not found; install it (apt-get install linux-perf)" >&2
    exit 1
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
keygate_bin="$target_dir/release/keygate"

# shellcheck source=benches/load/servers.sh
source "$script_dir/servers.sh"

install_missing
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

build_release profile.sh "$build" "--bin keygate" "$keygate_bin"

make_work_dir profile cleanup

mapfile -t ports < <(pick_ports 3)
backend_port="${ports[0]}"
keygate_port="${ports[1]}"
keygate_metrics_port="${ports[2]}"

echo "keygate CPU profile on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(perf --version), $("$nginx_bin" -v 2>&1), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
python3 "$script_dir/gen_clients.py" "$work" one 1 \
    "$keygate_port" "$keygate_metrics_port" "$backend_port"
backend_server_block >"$work/backend.server"

start_nginx backend "$backend_port" "$work/backend.server"
backend_pid=$started_pid
start keygate INT "$keygate_bin" --config "$work/one.keygate.yml"
keygate_pid=$started_pid
wait_for_port backend "$backend_pid" "$backend_port"
wait_for_port keygate "$keygate_pid" "$keygate_port"

# Profiles keygate during one load run. Usage: profile NAME TITLE REQUEST_LUA
profile() {
    local name="$1" title="$2" output="$work/$1.wrk" data="$work/$1.perf.data" wrk_pid
    cat "$3" "$script_dir/run_summary.lua" >"$work/$name.lua"
    wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${duration}s" --timeout 5s -s "$work/$name.lua" \
        "http://127.0.0.1:$keygate_port/" >"$output" 2>&1 &
    wrk_pid=$!
    sleep 1
    perf record -q -e cpu-clock -g -p "$keygate_pid" -o "$data" -- sleep "$((duration - 2))" \
        2>"$work/$name.perf.log" || true
    wait "$wrk_pid" || true

    echo
    echo "== $title: $(awk '$1 == "LOAD_RESULT" {
        printf "%d requests in %.1f s, %d with status 400 or above, %d socket errors",
            $2, $3 / 1e6, $6, $7 }' "$output")"
    if [[ ! -s "$data" ]]; then
        echo "  perf recorded nothing; see $work/$name.perf.log"
        keep=1
        return 0
    fi
    perf report -i "$data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0 \
        2>/dev/null | python3 "$script_dir/profile_summary.py" "$top"
}

profile good "good path, 1 configured client" "$work/one.good.lua"
profile forbidden "403 path, wrong key, small POST body" "$work/one.bad.lua"
