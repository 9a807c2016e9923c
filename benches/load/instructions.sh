#!/usr/bin/env bash
# Instructions per request of nginx, the bare pingora proxy and keygate,
# counted by callgrind. See benches/load/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benches/load/instructions.sh [OPTIONS]

Runs each proxy under valgrind's callgrind on 127.0.0.1 in front of one
nginx backend, loads it with wrk, and prints the instructions it executed
per request on the good path (a push with a good key) and on the 403 path
(a wrong key). Counting starts after a warm-up and stops when the load
ends, so start-up is not counted.

Instruction counts do not depend on what else the machine is doing, so
this comparison holds on a busy machine where timings do not. It leaves
out the kernel: system calls count as one instruction each.

Options:
  --duration SECONDS  length of each counted load run (default 8)
  --no-build          use the release binaries already in the target folder
  --keep              keep the work folder (callgrind files, logs) after exit
  -h, --help          show this help

Needs valgrind. Installs wrk, nginx, curl and python3 with apt-get when
missing.
EOF
}

readonly CONNECTIONS=8
readonly WARMUP_SECONDS=3
duration=8
build=1
keep=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="${2:?--duration needs a number of seconds}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "instructions.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
    esac
done
if ! [[ "$duration" =~ ^[1-9][0-9]*$ ]]; then
    echo "instructions.sh: '$duration' is not a positive whole number; see --help" >&2
    exit 2
fi
for tool in valgrind callgrind_control callgrind_annotate; do
    if ! command -v "$tool" >/dev/null; then
        echo "instructions.sh: $tool not found; install valgrind (apt-get install valgrind)" >&2
        exit 1
    fi
done

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
keygate_bin="$target_dir/release/keygate"
bare_bin="$target_dir/release/examples/bare_proxy"

# shellcheck source=benches/load/servers.sh
source "$script_dir/servers.sh"

install_missing
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

build_release instructions.sh "$build" "--bin keygate --example bare_proxy" "$keygate_bin" "$bare_bin"

make_work_dir instructions cleanup

mapfile -t ports < <(pick_ports 6)
backend_port="${ports[0]}"
nginx_port="${ports[1]}"
bare_port="${ports[2]}"
keygate_port="${ports[3]}"
keygate_metrics_port="${ports[4]}"

python3 "$script_dir/gen_clients.py" "$work" one 1 \
    "$keygate_port" "$keygate_metrics_port" "$backend_port"
backend_server_block >"$work/backend.server"
proxy_server_block >"$work/proxy.server"
proxy_http_block "$work/one.nginx-map.conf" "$backend_port" >"$work/one.http"
write_nginx_conf "$work/nginx" "$nginx_port" "$work/proxy.server" "$work/one.http"
# One process does the work, so callgrind counts every request.
sed -i 's/^worker_processes .*/worker_processes 1;\nmaster_process off;/' "$work/nginx/nginx.conf"

start_nginx backend "$backend_port" "$work/backend.server"
wait_for_port backend "$started_pid" "$backend_port"

# Counts one proxy's instructions per request under one load.
# Usage: count NAME PORT LUA_FILE STOP_SIGNAL COMMAND...
count() {
    local name="$1" port="$2" lua="$3" signal="$4"
    shift 4
    start "$name" "$signal" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$work/$name.callgrind" "$@"
    local pid=$started_pid
    wait_for_port "$name" "$pid" "$port"
    wrk -t 1 -c "$CONNECTIONS" -d "${WARMUP_SECONDS}s" -s "$lua" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    wrk -t 1 -c "$CONNECTIONS" -d "${duration}s" -s "$lua" "http://127.0.0.1:$port/" >"$work/$name.wrk"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "-$signal" "$pid" 2>/dev/null || true
    # The counts are dumped already; a proxy slow to exit under valgrind is killed after 20 s.
    local tries=0
    while kill -0 "$pid" 2>/dev/null; do
        if (( ++tries == 100 )); then kill -KILL "$pid" 2>/dev/null || true; fi
        sleep 0.2
    done

    local requests total
    requests="$(awk '/requests in/ {print $1}' "$work/$name.wrk")"
    # The dump above is part 1. The part written at exit contains nothing counted.
    total="$(callgrind_annotate "$work/$name.callgrind.1" 2>/dev/null \
        | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
    if ! [[ "$requests" =~ ^[1-9][0-9]*$ && "$total" =~ ^[0-9]+$ ]]; then
        echo "instructions.sh: no count for $name; see $work" >&2
        keep=1
        exit 1
    fi
    printf '%s\t%s\t%s\n' "$name" "$requests" "$((total / requests))" >>"$work/counts.tsv"
    printf '  %-14s %8s requests, %8s instructions per request\n' \
        "$name" "$requests" "$((total / requests))"
}

nginx_command=("$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" -g 'daemon off;')
echo "counting instructions per request, $duration s of load each, on 127.0.0.1"
count nginx-good "$nginx_port" "$work/one.good.lua" TERM "${nginx_command[@]}"
count nginx-403 "$nginx_port" "$work/one.bad.lua" TERM "${nginx_command[@]}"
count bare-good "$bare_port" "$work/one.good.lua" INT \
    "$bare_bin" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$backend_port"
count keygate-good "$keygate_port" "$work/one.good.lua" INT "$keygate_bin" --config "$work/one.keygate.yml"
count keygate-403 "$keygate_port" "$work/one.bad.lua" INT "$keygate_bin" --config "$work/one.keygate.yml"

python3 - "$work/counts.tsv" <<'EOF'
import sys
counts = {}
for line in open(sys.argv[1]):
    name, _, per_request = line.split("\t")
    counts[name] = int(per_request)
print()
print("ratios of instructions per request:")
for label, top, bottom in [
    ("good path, keygate/bare", "keygate-good", "bare-good"),
    ("good path, keygate/nginx", "keygate-good", "nginx-good"),
    ("good path, bare/nginx", "bare-good", "nginx-good"),
    ("403 path, keygate/nginx", "keygate-403", "nginx-403"),
]:
    print(f"  {label:<26} {counts[top] / counts[bottom]:.3f}")
EOF
