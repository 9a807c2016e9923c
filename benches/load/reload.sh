#!/usr/bin/env bash
# Refreshes under load: keygate with many clients must return the backend's
# 200 for every request while its config is reloaded again and again.
# See benches/load/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benches/load/reload.sh [OPTIONS]

Starts an nginx backend and keygate with 100,000 clients on 127.0.0.1, and
runs wrk with a configured client's key against keygate. During each load
run, the script sends POST /nps/refresh to keygate back to back, switching
the config file between two 100,000-client files before each refresh. Both
files keep the client that wrk uses and replace every other client. Then it
runs wrk again without refreshes for as long as the refresh run lasted.

It prints the responses that were not the backend's 200 (status, body and
socket errors), which must be 0, and the refresh run's requests/s, p50 and
p99 latency and CPU time per request against those of the run without
refreshes, as ratios per round with their median, min and max.

Options:
  --clients N          clients in each config file (default 100000)
  --refreshes N        refreshes during each load run (default 100)
  --rounds N           rounds of one run with and one without refreshes (default 2)
  --max-duration SECS  upper bound of each load run in seconds (default 300)
  --no-build           use the release binary already in the target folder
  --keep               keep the work folder (configs, keys, logs) after exit
  -h, --help           show this help

Installs wrk, nginx, curl and python3 with apt-get when missing.
Every server listens on 127.0.0.1 only, on free ports picked at start,
and every process the script starts is stopped when it exits.
EOF
}

readonly CONNECTIONS=64
readonly WRK_THREADS=1
readonly WARMUP_SECONDS=2
# Each refresh has this long to return before it counts as failed.
readonly REFRESH_TIMEOUT_SECONDS=120
clients=100000
refreshes=100
rounds=2
max_duration=300
build=1
keep=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --clients) clients="${2:?--clients needs a number}"; shift 2 ;;
        --refreshes) refreshes="${2:?--refreshes needs a number}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --max-duration) max_duration="${2:?--max-duration needs a number of seconds}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "reload.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
    esac
done
for value in "$clients" "$refreshes" "$rounds" "$max_duration"; do
    if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "reload.sh: '$value' is not a positive whole number; see --help" >&2
        exit 2
    fi
done
if (( clients < 2 )); then
    echo "reload.sh: --clients must be at least 2, so that a refresh replaces a client" >&2
    exit 2
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$script_dir/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
keygate_bin="$target_dir/release/keygate"
clk_tck="$(getconf CLK_TCK)"

# shellcheck source=benches/load/servers.sh
source "$script_dir/servers.sh"
# shellcheck source=benches/load/runs.sh
source "$script_dir/runs.sh"

install_missing
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

build_release reload.sh "$build" "--bin keygate" "$keygate_bin"

# The wrk process of the load run in progress, stopped on exit.
load_pid=""

stop_load_and_servers() {
    if [[ -n "$load_pid" ]]; then
        kill -INT "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    cleanup
}
make_work_dir reload stop_load_and_servers

# --------------------------------------------------------------- start

mapfile -t ports < <(pick_ports 3)
backend_port="${ports[0]}"
keygate_port="${ports[1]}"
keygate_metrics_port="${ports[2]}"

echo "keygate refreshes under load on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$("$nginx_bin" -v 2>&1), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "generating two config files of $clients clients that share the loaded client"
python3 "$script_dir/gen_clients.py" --alternate "$work" reload "$clients" \
    "$keygate_port" "$keygate_metrics_port" "$backend_port"
client_id="$(cat "$work/reload.client-id")"
config="$work/keygate.yml"
config_files=("$work/reload.keygate.yml" "$work/reload.alt.keygate.yml")

# Points the config path at config file INDEX (0 or 1). The symbolic link
# is replaced by a rename, so keygate never reads a half-written file.
switch_config() {
    ln -sfn "${config_files[$1]}" "$config.next"
    mv -Tf "$config.next" "$config"
}
switch_config 0

# The backend returns the clientId that keygate forwarded, so a response
# shows which client keygate matched.
expected_body="{\"ok\":true,\"clientId\":\"$client_id\"}"
cat >"$work/backend.server" <<'EOF'
        location / {
            return 200 '{"ok":true,"clientId":"$http_x_client_id"}';
        }
EOF
{
    printf "expected_body = '%s'\n" "$expected_body"
    cat "$work/reload.good.lua" "$script_dir/check_answers.lua"
} >"$work/load.lua"

echo "starting servers on 127.0.0.1"
start_nginx backend "$backend_port" "$work/backend.server"
backend_pid=$started_pid
start keygate INT "$keygate_bin" --config "$config"
keygate_pid=$started_pid
wait_for_port backend "$backend_pid" "$backend_port"
wait_for_port keygate "$keygate_pid" "$keygate_port"
start_hwm="$(memory_kb "$keygate_pid" VmHWM)"
start_rss="$(memory_kb "$keygate_pid" VmRSS)"

results="$work/results.tsv"
: >"$results"
warnings=0
wrong_answers=0

# Sends one refresh and appends "STATUS SECONDS" to FILE. Usage: refresh FILE
refresh() {
    local answer
    answer="$(curl -s -o "$work/refresh.body" -w '%{http_code} %{time_total}' \
        --max-time "$REFRESH_TIMEOUT_SECONDS" -X POST "http://127.0.0.1:$keygate_port/nps/refresh")" ||
        true
    echo "${answer:-000 0}" >>"$1"
}

# Starts wrk in the background for at most SECONDS. Usage: start_load SECONDS OUTPUT
start_load() {
    wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 5s -s "$work/load.lua" \
        "http://127.0.0.1:$keygate_port/" >"$2" 2>&1 &
    load_pid=$!
}

# Waits for the wrk started by start_load and fails when it failed.
wait_load() {
    local status=0
    wait "$load_pid" || status=$?
    load_pid=""
    if (( status != 0 )); then
        keep=1
        echo "reload.sh: wrk exited with status $status; see $work" >&2
        exit 1
    fi
}

# Reads one load run's output, prints its row and appends it to the results
# file. Usage: record ROUND LABEL OUTPUT CPU_TICKS
record() {
    local round_no="$1" label="$2" output="$3" ticks="$4"
    local requests duration_us p50_us p99_us http_errors socket_errors statuses wrong_bodies
    local row rps p50 p99 cpu others
    read -r requests duration_us p50_us p99_us http_errors socket_errors < <(
        awk '$1 == "LOAD_RESULT" { print $2, $3, $4, $5, $6, $7 }' "$output")
    statuses="$(awk '$1 == "LOAD_STATUSES" { $1 = ""; print substr($0, 2) }' "$output")"
    wrong_bodies="$(awk '$1 == "LOAD_WRONG_BODIES" { print $2 }' "$output")"
    if [[ -z "${requests:-}" || "$requests" -eq 0 ]]; then
        keep=1
        echo "reload.sh: no requests completed in the $label run; see $work" >&2
        exit 1
    fi
    # Responses with a status other than 200.
    others="$(tr ' ' '\n' <<<"$statuses" | awk -F= '$1 != 200 { sum += $2 } END { print sum + 0 }')"
    row="$(awk -v r="$requests" -v d="$duration_us" -v p50="$p50_us" -v p99="$p99_us" \
        -v c="$ticks" -v hz="$clk_tck" 'BEGIN {
            printf "%.1f\t%.3f\t%.3f\t%.2f", r / (d / 1e6), p50 / 1000, p99 / 1000, c * 1e6 / hz / r
        }')"
    printf 'reload\t%s\t%s\t%s\t0\t%s\t%s\n' "$round_no" "$label" "$row" "$http_errors" \
        "$socket_errors" >>"$results"
    IFS=$'\t' read -r rps p50 p99 cpu <<<"$row"
    printf '  %-11s %8.1f %10s %8s %8s %11s %10s %10s %9s\n' "$label" \
        "$(awk -v d="$duration_us" 'BEGIN { print d / 1e6 }')" "$rps" "$p50" "$p99" "$cpu" \
        "$others" "$wrong_bodies" "$socket_errors"
    echo "              statuses: ${statuses:-none}"
    wrong_answers=$((wrong_answers + others + wrong_bodies + socket_errors))
}

echo
echo "== warm-up: ${WARMUP_SECONDS} s of load, then one refresh to each file without load"
start_load "$WARMUP_SECONDS" "$work/warmup.out"
wait_load
echo "  load statuses: $(awk '$1 == "LOAD_STATUSES" { $1 = ""; print substr($0, 2) }' \
    "$work/warmup.out"), bodies other than the backend's 200 for $client_id:" \
    "$(awk '$1 == "LOAD_WRONG_BODIES" { print $2 }' "$work/warmup.out")"
: >"$work/warmup.refreshes"
for index in 1 0; do
    switch_config "$index"
    refresh "$work/warmup.refreshes"
done
echo "  refresh statuses and seconds: $(paste -sd, "$work/warmup.refreshes"), last body: $(cat "$work/refresh.body")"
if [[ "$(awk '$1 != 200' "$work/warmup.refreshes")" != "" ]]; then
    keep=1
    echo "reload.sh: a warm-up refresh failed; see $work/keygate.log" >&2
    exit 1
fi

cat <<EOF

Each round runs wrk with $CONNECTIONS connections and 1 thread twice: first while
$refreshes refreshes run back to back, then for as long again without refreshes.

Columns:
  seconds      length of the load run
  req/s        requests per second
  p50, p99     latency percentiles in milliseconds
  CPU us/req   CPU microseconds of keygate per request, refresh work included
  not 200      responses with a status other than 200
  wrong body   200 responses whose body is not the backend's for $client_id
  sock err     socket errors: connect, read, write and timeout
EOF

for round_no in $(seq 1 "$rounds"); do
    echo
    echo "round $round_no"
    printf '  %-11s %8s %10s %8s %8s %11s %10s %10s %9s\n' run seconds "req/s" "p50 ms" "p99 ms" \
        "CPU us/req" "not 200" "wrong body" "sock err"

    refresh_log="$work/round$round_no.refreshes"
    : >"$refresh_log"
    before="$(cpu_ticks "$keygate_pid")"
    start_load "$max_duration" "$work/refreshing.out"
    for index in $(seq 1 "$refreshes"); do
        if ! kill -0 "$load_pid" 2>/dev/null; then
            echo "  WARNING: the load run ended after $((index - 1)) refreshes; raise --max-duration"
            warnings=$((warnings + 1))
            break
        fi
        switch_config $((index % 2))
        refresh "$refresh_log"
    done
    kill -INT "$load_pid" 2>/dev/null || true
    wait_load
    after="$(cpu_ticks "$keygate_pid")"
    record "$round_no" refreshing "$work/refreshing.out" $((after - before))

    # The run without refreshes lasts as long as the run with them, in whole seconds.
    seconds="$(awk '$1 == "LOAD_RESULT" { printf "%d", $3 / 1e6 + 0.5 }' "$work/refreshing.out")"
    (( seconds >= 1 )) || seconds=1
    before="$(cpu_ticks "$keygate_pid")"
    start_load "$seconds" "$work/steady.out"
    wait_load
    after="$(cpu_ticks "$keygate_pid")"
    record "$round_no" steady "$work/steady.out" $((after - before))

    failed="$(awk '$1 != 200' "$refresh_log" | wc -l)"
    echo "  refreshes: $(wc -l <"$refresh_log") sent, $failed not answered with 200;" \
        "seconds each: $(sort -n -k2 "$refresh_log" | awk '
            { times[NR] = $2 }
            END { printf "min %.3f, median %.3f, max %.3f", times[1], times[int((NR + 1) / 2)], times[NR] }')"
    if (( failed > 0 )); then
        echo "  WARNING: $failed refreshes failed; see $work/keygate.log"
        warnings=$((warnings + 1))
    fi
    sleep 1
done

# ------------------------------------------------------------- summary

echo
echo "== ratios per round, refreshing/steady (above 1: more requests/s, CPU or latency while refreshing)"
python3 "$script_dir/report.py" --latency "$results" reload:refreshing/steady

echo
echo "== answers other than the backend's 200 over all runs: $wrong_answers"
if (( wrong_answers > 0 )); then
    echo "  WARNING: $wrong_answers requests did not get the backend's 200 (see the rows above)"
    warnings=$((warnings + 1))
fi

echo
echo "== keygate memory (kB; VmHWM is the peak resident set size)"
printf '  after start-up:   peak %8s, resident %8s\n' "$start_hwm" "$start_rss"
printf '  after refreshes:  peak %8s, resident %8s\n' \
    "$(memory_kb "$keygate_pid" VmHWM)" "$(memory_kb "$keygate_pid" VmRSS)"

echo
echo "== keygate's own counts"
curl -s "http://127.0.0.1:$keygate_metrics_port/metrics" |
    grep -E '^keygate_(requests_total|upstream_errors_total|auth_failures_total|config_reloads_total|allowed_clients)' |
    sed 's/^/  /' || echo "  (none)"
echo "  keygate log: $(wc -l <"$work/keygate.log") lines," \
    "$(grep -c -E 'WARN|ERROR' "$work/keygate.log" || true) at warn or error"

echo
if (( warnings > 0 )); then
    echo "finished with $warnings warning(s); see the WARNING lines above"
    exit 1
fi
echo "finished without warnings"
