#!/usr/bin/env bash
# Load comparison of keygate with nginx and with a bare pingora proxy, all
# in front of the same nginx backend on 127.0.0.1. See benches/load/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benches/load/compare.sh [OPTIONS]

Runs wrk against four contenders on 127.0.0.1, each with one worker:
the backend directly, nginx as a key-checking proxy, a bare pingora proxy,
and keygate. Prints requests/s, p50 and p99 latency and the CPU time per
request of each run, then the keygate/bare and keygate/nginx ratios per
round and their medians. Then the same for the 403 path (wrong key), for
a config with many clients and for keygate with a per-client rate limit
that is never reached, and keygate's peak resident memory.

Options:
  --duration SECONDS  length of each measured run (default 10)
  --rounds N          interleaved rounds per comparison (default 3)
  --clients N         clients in the large config (default 100000)
  --quick             smoke run: 2-second runs, 1 round
  --no-build          use the release binaries already in the target folder
  --keep              keep the work folder (configs, keys, logs) after exit
  -h, --help          show this help

Installs wrk, nginx, curl and python3 with apt-get when missing.
Every server listens on 127.0.0.1 only, on free ports picked at start,
and every process the script starts is stopped when it exits.
EOF
}

readonly CONNECTIONS=64
readonly WRK_THREADS=1
readonly WARMUP_SECONDS=2
# The largest per-client rateLimit keygate accepts. The load sends far
# fewer requests a second, so no request is rejected and the comparison
# measures only the cost of checking the bucket.
readonly UNREACHED_RATE_LIMIT="1000000/s"
duration=10
rounds=3
many_clients=100000
build=1
keep=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="${2:?--duration needs a number of seconds}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --clients) many_clients="${2:?--clients needs a number}"; shift 2 ;;
        --quick) duration=2; rounds=1; shift ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
    esac
done
for value in "$duration" "$rounds" "$many_clients"; do
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "compare.sh: '$value' is not a positive whole number; see --help" >&2
        exit 2
    fi
done
if (( many_clients < 2 )); then
    echo "compare.sh: --clients must be at least 2 to compare with the 1-client config" >&2
    exit 2
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
keygate_bin="$target_dir/release/keygate"
bare_bin="$target_dir/release/examples/bare_proxy"
clk_tck="$(getconf CLK_TCK)"

# shellcheck source=benches/load/servers.sh
source "$script_dir/servers.sh"
# shellcheck source=benches/load/runs.sh
source "$script_dir/runs.sh"

install_missing
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

build_release compare.sh "$build" "--bin keygate --example bare_proxy" "$keygate_bin" "$bare_bin"

make_work_dir load cleanup

# --------------------------------------------------------------- start

mapfile -t ports < <(pick_ports 10)
backend_port="${ports[0]}"
nginx_port="${ports[1]}"
nginx_many_port="${ports[2]}"
bare_port="${ports[3]}"
keygate_port="${ports[4]}"
keygate_metrics_port="${ports[5]}"
keygate_many_port="${ports[6]}"
keygate_many_metrics_port="${ports[7]}"
keygate_limited_port="${ports[8]}"
keygate_limited_metrics_port="${ports[9]}"

if (( many_clients % 1000 == 0 )); then
    many_label="$((many_clients / 1000))k"
else
    many_label="$many_clients"
fi

echo "keygate load comparison on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$("$nginx_bin" -v 2>&1), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "generating configs: 1 client, $many_clients clients, 1 client with rateLimit $UNREACHED_RATE_LIMIT"
python3 "$script_dir/gen_clients.py" "$work" one 1 \
    "$keygate_port" "$keygate_metrics_port" "$backend_port"
python3 "$script_dir/gen_clients.py" "$work" many "$many_clients" \
    "$keygate_many_port" "$keygate_many_metrics_port" "$backend_port"
python3 "$script_dir/gen_clients.py" --rate-limit "$UNREACHED_RATE_LIMIT" "$work" limited 1 \
    "$keygate_limited_port" "$keygate_limited_metrics_port" "$backend_port"

backend_server_block >"$work/backend.server"
proxy_server_block >"$work/proxy.server"
proxy_http_block "$work/one.nginx-map.conf" "$backend_port" >"$work/one.http"
proxy_http_block "$work/many.nginx-map.conf" "$backend_port" >"$work/many.http"

echo "starting servers on 127.0.0.1"
start_nginx backend "$backend_port" "$work/backend.server"
backend_pid=$started_pid
start_nginx nginx "$nginx_port" "$work/proxy.server" "$work/one.http"
nginx_pid=$started_pid
start_nginx "nginx-$many_label" "$nginx_many_port" "$work/proxy.server" "$work/many.http"
nginx_many_pid=$started_pid
start bare INT "$bare_bin" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$backend_port"
bare_pid=$started_pid
start keygate INT "$keygate_bin" --config "$work/one.keygate.yml"
keygate_pid=$started_pid
start "keygate-$many_label" INT "$keygate_bin" --config "$work/many.keygate.yml"
keygate_many_pid=$started_pid
start keygate-limit INT "$keygate_bin" --config "$work/limited.keygate.yml"
keygate_limited_pid=$started_pid

wait_for_port backend "$backend_pid" "$backend_port"
wait_for_port nginx "$nginx_pid" "$nginx_port"
wait_for_port "nginx-$many_label" "$nginx_many_pid" "$nginx_many_port"
wait_for_port bare "$bare_pid" "$bare_port"
wait_for_port keygate "$keygate_pid" "$keygate_port"
wait_for_port "keygate-$many_label" "$keygate_many_pid" "$keygate_many_port"
wait_for_port keygate-limit "$keygate_limited_pid" "$keygate_limited_port"

# Peak memory after start-up and before any load. It includes parsing the config.
keygate_start_hwm="$(memory_kb "$keygate_pid" VmHWM)"
keygate_many_start_hwm="$(memory_kb "$keygate_many_pid" VmHWM)"

results="$work/results.tsv"
: >"$results"
warnings=0

# Routing check without any key: outside /nps/ is 404, a push without a key is 403.
echo
echo "== routing without a key (expected: 404 outside /nps/, 403 on a push)"
for contender in "nginx $nginx_port" "keygate $keygate_port"; do
    read -r label port <<<"$contender"
    outside="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/elsewhere")"
    no_key="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data '{}' "http://127.0.0.1:$port/nps/rest/push/p1")"
    printf '  %-14s outside /nps/: %s, push without key: %s\n' "$label" "$outside" "$no_key"
    if [[ "$outside" != 404 || "$no_key" != 403 ]]; then
        echo "  WARNING: $label routing differs from the expected statuses"
        warnings=$((warnings + 1))
    fi
done

echo
echo "== warm-up, ${WARMUP_SECONDS} s each: response statuses under load"
warm_up direct "$backend_port" "$work/one.good.lua" 200
warm_up nginx "$nginx_port" "$work/one.good.lua" 200
warm_up bare "$bare_port" "$work/one.good.lua" 200
warm_up keygate "$keygate_port" "$work/one.good.lua" 200
warm_up "nginx 403" "$nginx_port" "$work/one.bad.lua" 403
warm_up "keygate 403" "$keygate_port" "$work/one.bad.lua" 403
warm_up "nginx-$many_label" "$nginx_many_port" "$work/many.good.lua" 200
warm_up "keygate-$many_label" "$keygate_many_port" "$work/many.good.lua" 200
warm_up keygate-limit "$keygate_limited_port" "$work/limited.good.lua" 200

cat <<'EOF'

Columns:
  req/s        requests per second
  p50, p99     latency percentiles in milliseconds
  CPU us/req   CPU microseconds per request of the contender's process
               (for direct, the backend's)
  backend us   CPU microseconds per request of the backend nginx
  HTTP>=400    responses with status 400 or above
  sock err     socket errors: connect, read, write and timeout
EOF

run_section good "good path, 1 configured client" \
    "direct $backend_port $work/one.good.lua $backend_pid" \
    "nginx $nginx_port $work/one.good.lua $nginx_pid" \
    "bare $bare_port $work/one.good.lua $bare_pid" \
    "keygate $keygate_port $work/one.good.lua $keygate_pid"

run_section forbidden "403 path, wrong key, small POST body" \
    "nginx $nginx_port $work/one.bad.lua $nginx_pid" \
    "keygate $keygate_port $work/one.bad.lua $keygate_pid"

run_section many "good path, $many_clients configured clients" \
    "nginx-$many_label $nginx_many_port $work/many.good.lua $nginx_many_pid" \
    "keygate-$many_label $keygate_many_port $work/many.good.lua $keygate_many_pid" \
    "keygate $keygate_port $work/one.good.lua $keygate_pid"

run_section ratelimit "good path, 1 client, rateLimit $UNREACHED_RATE_LIMIT against none" \
    "keygate-limit $keygate_limited_port $work/limited.good.lua $keygate_limited_pid" \
    "keygate $keygate_port $work/one.good.lua $keygate_pid"

# ------------------------------------------------------------- summary

echo
echo "== ratios per round (above 1: the numerator serves more requests/s or spends more CPU a request)"
python3 "$script_dir/report.py" "$results" \
    good:keygate/bare good:keygate/nginx good:bare/nginx \
    forbidden:keygate/nginx \
    "many:keygate-$many_label/nginx-$many_label" "many:keygate-$many_label/keygate" \
    ratelimit:keygate-limit/keygate

echo
echo "== keygate memory (kB; VmHWM is the peak resident set size)"
keygate_hwm="$(memory_kb "$keygate_pid" VmHWM)"
keygate_many_hwm="$(memory_kb "$keygate_many_pid" VmHWM)"
keygate_rss="$(memory_kb "$keygate_pid" VmRSS)"
keygate_many_rss="$(memory_kb "$keygate_many_pid" VmRSS)"
printf '  %-14s peak at start-up %8s, peak after load %8s, resident now %8s\n' \
    "keygate" "$keygate_start_hwm" "$keygate_hwm" "$keygate_rss"
printf '  %-14s peak at start-up %8s, peak after load %8s, resident now %8s\n' \
    "keygate-$many_label" "$keygate_many_start_hwm" "$keygate_many_hwm" "$keygate_many_rss"
awk -v one="$keygate_hwm" -v many="$keygate_many_hwm" -v n="$many_clients" \
    -v one_rss="$keygate_rss" -v many_rss="$keygate_many_rss" 'BEGIN {
    printf "  bytes per extra client, peak:     %6.0f ((%d - %d) kB / %d)\n",
        (many - one) * 1024 / (n - 1), many, one, n - 1
    printf "  bytes per extra client, resident: %6.0f ((%d - %d) kB / %d)\n",
        (many_rss - one_rss) * 1024 / (n - 1), many_rss, one_rss, n - 1
}'

echo
echo "== keygate's own counts"
for contender in "keygate $keygate_metrics_port" "keygate-$many_label $keygate_many_metrics_port" \
    "keygate-limit $keygate_limited_metrics_port"; do
    read -r label port <<<"$contender"
    echo "  $label metrics:"
    metrics="$(curl -s "http://127.0.0.1:$port/metrics")"
    grep -E '^keygate_(requests_total|upstream_errors_total|auth_failures_total|rate_limited_total)' \
        <<<"$metrics" | sed 's/^/    /' || echo "    (none)"
    rate_limited="$(awk '/^keygate_rate_limited_total/ { sum += $NF } END { print sum + 0 }' <<<"$metrics")"
    if [[ "$rate_limited" != 0 ]]; then
        echo "  WARNING: $label rejected $rate_limited requests with 429; the rate limit was reached"
        warnings=$((warnings + 1))
    fi
    echo "  $label log: $(wc -l <"$work/$label.log") lines," \
        "$(grep -c -E 'WARN|ERROR' "$work/$label.log" || true) at warn or error"
done

echo
if (( warnings > 0 )); then
    echo "finished with $warnings warning(s); see the WARNING lines above"
    exit 1
fi
echo "finished without warnings"
