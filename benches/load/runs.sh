# shellcheck shell=bash
# Functions that compare.sh sources to run wrk and read the CPU time and
# memory of the servers. reload.sh uses cpu_ticks and memory_kb too. They
# use compare.sh's variables: work, duration, rounds, results, warnings,
# keep, backend_pid, clk_tck, script_dir, CONNECTIONS, WRK_THREADS and
# WARMUP_SECONDS.

# Prints the CPU time in clock ticks (utime + stime) of PID and its
# children, which for nginx are the master and its worker.
cpu_ticks() {
    local pid="$1" total=0 child stat fields
    for child in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null || true); do
        stat="$(cat "/proc/$child/stat" 2>/dev/null)" || continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# Prints a field of /proc/PID/status in kB, for example VmHWM.
memory_kb() {
    awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"
}

# Runs wrk against 127.0.0.1:PORT. Usage: run_wrk SECONDS PORT SCRIPT OUTPUT
run_wrk() {
    timeout "$(($1 + 30))" wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${1}s" --timeout 5s \
        -s "$3" "http://127.0.0.1:$2/" >"$4" 2>&1
}

# Checks that a contender returns only the expected status under load.
# Usage: warm_up LABEL PORT REQUEST_LUA EXPECTED_STATUS
warm_up() {
    local label="$1" port="$2" output="$work/warmup.out" statuses
    cat "$3" "$script_dir/count_statuses.lua" >"$work/warmup.lua"
    run_wrk "$WARMUP_SECONDS" "$port" "$work/warmup.lua" "$output" || true
    statuses="$(awk '$1 == "LOAD_STATUSES" { $1 = ""; print substr($0, 2) }' "$output")"
    printf '  %-14s %s\n' "$label" "${statuses:-no responses}"
    if [[ "$statuses" != "$4="* || "$statuses" == *" "* ]]; then
        echo "  WARNING: $label returned statuses other than $4 (see above)"
        warnings=$((warnings + 1))
    fi
}

# Runs one measured load, prints its row and appends the row to the results file.
# Usage: measure SECTION ROUND LABEL PORT REQUEST_LUA CPU_PID
measure() {
    local section="$1" round_no="$2" label="$3" port="$4" cpu_pid="$6"
    local output="$work/run.out" before backend_before after backend_after
    cat "$5" "$script_dir/run_summary.lua" >"$work/run.lua"
    before="$(cpu_ticks "$cpu_pid")"
    backend_before="$(cpu_ticks "$backend_pid")"
    if ! run_wrk "$duration" "$port" "$work/run.lua" "$output"; then
        echo "  WARNING: wrk failed against $label; its output:"
        sed 's/^/    /' "$output"
        warnings=$((warnings + 1))
        return 0
    fi
    after="$(cpu_ticks "$cpu_pid")"
    backend_after="$(cpu_ticks "$backend_pid")"
    if ! kill -0 "$cpu_pid" 2>/dev/null; then
        keep=1
        echo "compare.sh: $label exited during the run; see the logs in $work" >&2
        exit 1
    fi

    local requests duration_us p50_us p99_us http_errors socket_errors
    local row rps p50 p99 cpu backend_cpu
    read -r requests duration_us p50_us p99_us http_errors socket_errors < <(
        awk '$1 == "LOAD_RESULT" { print $2, $3, $4, $5, $6, $7 }' "$output")
    if [[ -z "${requests:-}" || "$requests" -eq 0 ]]; then
        echo "  WARNING: no requests completed against $label"
        warnings=$((warnings + 1))
        return 0
    fi
    row="$(awk -v r="$requests" -v d="$duration_us" -v p50="$p50_us" -v p99="$p99_us" \
        -v c="$((after - before))" -v bc="$((backend_after - backend_before))" -v hz="$clk_tck" '
        BEGIN {
            printf "%.1f\t%.3f\t%.3f\t%.2f\t%.2f",
                r / (d / 1e6), p50 / 1000, p99 / 1000, c * 1e6 / hz / r, bc * 1e6 / hz / r
        }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$round_no" "$label" "$row" \
        "$http_errors" "$socket_errors" >>"$results"
    IFS=$'\t' read -r rps p50 p99 cpu backend_cpu <<<"$row"
    printf '  %-14s %10s %8s %8s %11s %11s %10s %9s\n' "$label" "$rps" "$p50" "$p99" \
        "$cpu" "$backend_cpu" "$http_errors" "$socket_errors"
    if [[ "$section" != forbidden && "$http_errors" -ne 0 ]]; then
        echo "  WARNING: $label returned $http_errors responses with status 400 or above"
        warnings=$((warnings + 1))
    fi
    if [[ "$socket_errors" -ne 0 ]]; then
        echo "  WARNING: $label had $socket_errors socket errors (connect, read, write, timeout)"
        warnings=$((warnings + 1))
    fi
    sleep 1
}

table_header() {
    printf '  %-14s %10s %8s %8s %11s %11s %10s %9s\n' contender "req/s" "p50 ms" "p99 ms" \
        "CPU us/req" "backend us" "HTTP>=400" "sock err"
}

# Runs each contender once a round, in the given order, for every round.
# Usage: run_section SECTION TITLE "LABEL PORT LUA PID"...
run_section() {
    local section="$1" title="$2" round_no contender label port lua pid
    shift 2
    echo
    echo "== $title: $rounds round(s) of ${duration} s, $CONNECTIONS connections, 1 wrk thread"
    for round_no in $(seq 1 "$rounds"); do
        echo "round $round_no"
        table_header
        for contender in "$@"; do
            read -r label port lua pid <<<"$contender"
            measure "$section" "$round_no" "$label" "$port" "$lua" "$pid"
        done
    done
}
