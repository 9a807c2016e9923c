#!/usr/bin/env bash
# Build keygate, start it in front of the mock push backend, and walk the
# NPS client workflow against it. The walk generates a client, adds it to
# the config, refreshes, pushes with the right key and with a wrong one,
# and reads the metrics.
#
# Usage: scripts/quickstart.sh [--check]
#
# The servers use a copy of config/cod-nps.yml under target/quickstart/, so
# the tracked config is never changed, and write their logs next to it.
# Without --check, both servers keep running until Ctrl-C. With --check,
# the script stops them after the walk and exits 0 only if every step
# passed.
set -euo pipefail

readonly LOOPBACK=127.0.0.1
readonly GATEWAY_PORT=20200
readonly METRICS_PORT=20201
readonly BACKEND_PORT=20280
readonly GATEWAY_URL=http://$LOOPBACK:$GATEWAY_PORT
readonly METRICS_URL=http://$LOOPBACK:$METRICS_PORT/metrics
readonly BACKEND_URL=http://$LOOPBACK:$BACKEND_PORT
readonly CURL_MAX_TIME_SECONDS=10
readonly STARTUP_TIMEOUT_SECONDS=60
readonly STOP_TIMEOUT_SECONDS=5
readonly PUSH_BODY='{"title":"hello","body":"from keygate"}'
readonly PUSH_ID=some-push-id

usage() {
    cat <<EOF
Usage: scripts/quickstart.sh [--check]

Builds keygate and the mock push backend in release mode and starts both on
$LOOPBACK: keygate on port $GATEWAY_PORT with metrics on $METRICS_PORT, and the
backend on $BACKEND_PORT. keygate reads a copy of config/cod-nps.yml in
target/quickstart/. The script then walks the client workflow with curl,
printing each request and response, and keeps both servers running until
Ctrl-C.

Options:
  --check     stop both servers after the walk, and exit 0 only if every
              step passed
  -h, --help  print this help
EOF
}

check_mode=false
while (($# > 0)); do
    case $1 in
        --check) check_mode=true ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'quickstart: error: unknown argument %q\n\n' "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo_root"

# Relative paths below are relative to the repository root.
target_dir=${CARGO_TARGET_DIR:-target}
work_dir=$target_dir/quickstart
config_copy=$work_dir/application.yml
keygate_log=$work_dir/keygate.log
backend_log=$work_dir/mock_push_backend.log
keygate_bin=$target_dir/release/keygate
backend_bin=$target_dir/release/examples/mock_push_backend

# rustup installs cargo here, and a non-login shell may not have it on PATH.
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
    PATH=$cargo_bin:$PATH
fi

say() {
    printf 'quickstart: %s\n' "$*"
}

die() {
    printf 'quickstart: error: %s\n' "$*" >&2
    exit 1
}

heading() {
    printf '\n== %s ==\n' "$*"
}

# --- Processes started by this script, stopped on any exit ---

started_pids=()
started_names=()

# Stop one server: SIGINT first, because pingora treats it as a fast
# shutdown while SIGTERM waits out a grace period (300 s by default in
# pingora 0.9). SIGTERM and then SIGKILL follow for a server that ignores it.
stop_process() {
    local pid=$1 name=$2 signal waited
    for signal in INT TERM KILL; do
        kill -0 "$pid" 2>/dev/null || break
        if [[ $signal == INT ]]; then
            say "stopping $name (pid $pid)"
        else
            say "$name (pid $pid) is still running after $STOP_TIMEOUT_SECONDS s, sending SIG$signal"
        fi
        kill -s "$signal" "$pid" 2>/dev/null || true
        for ((waited = 0; waited < STOP_TIMEOUT_SECONDS * 10; waited++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    done
    wait "$pid" 2>/dev/null || true
}

stop_servers() {
    local index
    # Stop keygate before the backend it forwards to.
    for ((index = ${#started_pids[@]} - 1; index >= 0; index--)); do
        stop_process "${started_pids[index]}" "${started_names[index]}"
    done
    started_pids=()
    started_names=()
}

# shellcheck disable=SC2317 # Called through trap.
on_exit() {
    local status=$?
    # Finish stopping the servers even if another Ctrl-C arrives.
    trap '' INT TERM HUP
    trap - EXIT
    stop_servers
    exit "$status"
}

# shellcheck disable=SC2317 # Called through trap.
on_signal() {
    local status=$1
    printf '\n'
    say "interrupted, stopping keygate and the mock backend"
    exit "$status"
}

trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# --- Ports ---

# Print the local address, as the kernel's hex text, of every listening
# TCP socket on port $1, read from /proc/net/tcp and /proc/net/tcp6.
listening_addresses() {
    local port_hex table tables=()
    port_hex=$(printf '%04X' "$1")
    # /proc/net/tcp6 is missing when the kernel has IPv6 disabled.
    for table in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $table ]] && tables+=("$table")
    done
    # Column 4 is the socket state, and 0A is LISTEN.
    awk -v port="$port_hex" '
        FNR > 1 && $4 == "0A" {
            split($2, local_address, ":")
            if (local_address[2] == port) print local_address[1]
        }
    ' "${tables[@]}"
}

# Succeed when the hex address from /proc/net/tcp{,6} is a loopback address:
# 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. The kernel prints each 32-bit
# word of an address as a number in host byte order, so on little-endian
# machines (x86-64, arm64) the first IPv4 byte is the last two hex digits.
# NOTE: a big-endian machine would need the opposite digit positions.
is_loopback_hex() {
    local address=$1
    case ${#address} in
        8) [[ ${address:6:2} == 7F ]] ;;
        32)
            [[ $address == 00000000000000000000000001000000 ]] ||
                [[ ${address:0:24} == 0000000000000000FFFF0000 && ${address:30:2} == 7F ]]
            ;;
        *) return 1 ;;
    esac
}

require_free_port() {
    local port=$1 name=$2
    if [[ -n $(listening_addresses "$port") ]]; then
        die "port $port ($name) is already in use. Stop the program listening on it" \
            "(find it with: ss -ltnp 'sport = :$port') and run the quickstart again."
    fi
}

require_free_ports() {
    require_free_port "$GATEWAY_PORT" "keygate"
    require_free_port "$METRICS_PORT" "keygate metrics"
    require_free_port "$BACKEND_PORT" "mock push backend"
}

# Fail when anything listens on port $1 outside loopback.
require_loopback_only() {
    local port=$1 name=$2 address
    for address in $(listening_addresses "$port"); do
        if ! is_loopback_hex "$address"; then
            die "$name listens on port $port on a non-loopback address (hex $address)," \
                "but the quickstart must listen on $LOOPBACK only; check $config_copy"
        fi
    done
}

# --- Config editing ---

# An awk program that edits block-style YAML line by line, so comments and
# layout survive. mode=set sets the scalar at the dotted path `path` to
# `new_value`, adding the missing keys at the end of their parent mapping.
# mode=append_item appends the block sequence item in the environment
# variable YAML_ITEM to the list at the top-level key `path`, and turns
# `[]`, `~` or `null` into a block list. It exits 2 with a message when the
# file uses a flow style that it cannot edit.
# NOTE: keys are matched only when plain (letters, digits, `_`, `-`, `.`),
# so a quoted key such as "gateway": is not found.
read -r -d '' YAML_EDIT_AWK <<'AWK' || true
function indent_of(text) {
    match(text, /^ */)
    return RLENGTH
}

function spaces(count,    result) {
    result = ""
    while (count-- > 0) result = result " "
    return result
}

function stop_with_error(message) {
    print "quickstart: error: " message > "/dev/stderr"
    failed = 1
    exit 2
}

# Return the index of the last line of the value of key line i. The value
# is the following lines that are more indented, or are sequence items at
# the same indentation.
function block_end(i,    j, last) {
    last = i
    for (j = i + 1; j <= line_count; j++) {
        if (kind[j] == "blank") continue
        if (indent[j] > indent[i] || (indent[j] == indent[i] && kind[j] == "item")) {
            last = j
        } else {
            break
        }
    }
    return last
}

function first_content_after(i, end,    j) {
    for (j = i + 1; j <= end; j++) {
        if (kind[j] != "blank") return j
    }
    return 0
}

function add_after(i, text) {
    if (i in inserted) {
        inserted[i] = inserted[i] "\n" text
    } else {
        inserted[i] = text
    }
}

{
    sub(/\r$/, "")
    line[NR] = $0
}

END {
    if (failed) exit 2
    line_count = NR
    depth = 0
    scalar_indent = -1
    for (i = 1; i <= line_count; i++) {
        text = line[i]
        indent[i] = indent_of(text)
        rest = substr(text, indent[i] + 1)
        if (rest ~ /^(#.*)?$/) {
            kind[i] = "blank"
            continue
        }
        # Lines of a literal or folded block scalar are text, whatever they look like.
        if (scalar_indent >= 0 && indent[i] > scalar_indent) {
            kind[i] = "text"
            continue
        }
        scalar_indent = -1

        item_key = ""
        if (rest ~ /^-( |$)/) {
            kind[i] = "item"
            while (depth > 0 && stack_indent[depth] >= indent[i]) depth--
            depth++
            stack_indent[depth] = indent[i]
            stack_key[depth] = "-"
            after_dash = substr(rest, 2)
            key_column = indent[i] + 1 + indent_of(after_dash)
            rest = substr(after_dash, indent_of(after_dash) + 1)
            if (rest !~ /^[A-Za-z_][A-Za-z0-9_.-]*:([ \t]|$)/) continue
            item_key = rest
        } else if (rest ~ /^[A-Za-z_][A-Za-z0-9_.-]*:([ \t]|$)/) {
            kind[i] = "key"
            key_column = indent[i]
        } else {
            kind[i] = "text"
            continue
        }

        colon = index(rest, ":")
        key[i] = substr(rest, 1, colon - 1)
        value[i] = substr(rest, colon + 1)
        sub(/^[ \t]+/, "", value[i])
        if (value[i] !~ /^["']/) sub(/[ \t]*#.*$/, "", value[i])
        sub(/[ \t]+$/, "", value[i])

        while (depth > 0 && stack_indent[depth] >= key_column) depth--
        key_path = ""
        for (level = 1; level <= depth; level++) key_path = key_path stack_key[level] "."
        key_path = key_path key[i]
        depth++
        stack_indent[depth] = key_column
        stack_key[depth] = key[i]
        if (item_key == "" && !(key_path in line_of)) line_of[key_path] = i
        if (value[i] ~ /^[|>]/) scalar_indent = key_column
    }

    part_count = split(path, parts, ".")

    if (mode == "set") {
        if (path in line_of) {
            i = line_of[path]
            line[i] = spaces(indent[i]) key[i] ": " new_value
            end = block_end(i)
            for (j = i + 1; j <= end; j++) {
                if (kind[j] != "blank") removed[j] = 1
            }
        } else {
            found = 0
            prefix = ""
            for (level = 1; level < part_count; level++) {
                prefix = (level == 1) ? parts[1] : prefix "." parts[level]
                if (!(prefix in line_of)) break
                found = level
                parent_path = prefix
            }
            if (found == 0) {
                parent = line_count
                child_indent = 0
            } else {
                parent = line_of[parent_path]
                if (value[parent] !~ /^(|\{\}|~|null)$/) {
                    stop_with_error(parent_path " is written as \"" value[parent] "\", so " path " cannot be added; write it as a block mapping")
                }
                line[parent] = spaces(indent[parent]) key[parent] ":"
                end = block_end(parent)
                next_line = first_content_after(parent, end)
                child_indent = next_line ? indent[next_line] : indent[parent] + 2
                parent = end
            }
            for (level = found + 1; level <= part_count; level++) {
                entry = spaces(child_indent + 2 * (level - found - 1)) parts[level] ":"
                if (level == part_count) entry = entry " " new_value
                add_after(parent, entry)
            }
        }
    } else if (mode == "append_item") {
        item_count = split(ENVIRON["YAML_ITEM"], item_lines, "\n")
        if (path in line_of) {
            parent = line_of[path]
            if (value[parent] ~ /^(\[\]|~|null)$/) {
                line[parent] = spaces(indent[parent]) key[parent] ":"
                item_indent = indent[parent] + 2
            } else if (value[parent] == "") {
                end = block_end(parent)
                next_line = first_content_after(parent, end)
                item_indent = (next_line && kind[next_line] == "item") ? indent[next_line] : indent[parent] + 2
                parent = end
            } else {
                stop_with_error(path " is written as \"" value[parent] "\", so no client can be added; write it as a block list or as []")
            }
        } else {
            parent = line_count
            add_after(parent, path ":")
            item_indent = 2
        }
        for (n = 1; n <= item_count; n++) {
            if (item_lines[n] != "") add_after(parent, spaces(item_indent) item_lines[n])
        }
    } else {
        stop_with_error("unknown edit mode " mode)
    }

    if (line_count == 0 && (0 in inserted)) print inserted[0]
    for (i = 1; i <= line_count; i++) {
        if (!(i in removed)) print line[i]
        if (i in inserted) print inserted[i]
    }
}
AWK

# Set the dotted key $1 to the YAML scalar $2 in the config copy.
set_config_value() {
    local path=$1 value=$2 edited
    edited=$(mktemp "$work_dir/application.yml.XXXXXX")
    if ! awk -v mode=set -v path="$path" -v new_value="$value" "$YAML_EDIT_AWK" \
        "$config_copy" >"$edited"; then
        rm -f -- "$edited"
        return 1
    fi
    mv -- "$edited" "$config_copy"
}

# Append the block sequence item $1 (lines starting at "- ") to allowedClients.
append_allowed_client() {
    local item=$1 edited
    edited=$(mktemp "$work_dir/application.yml.XXXXXX")
    if ! YAML_ITEM=$item awk -v mode=append_item -v path=allowedClients "$YAML_EDIT_AWK" \
        "$config_copy" >"$edited"; then
        rm -f -- "$edited"
        return 1
    fi
    mv -- "$edited" "$config_copy"
}

# --- Requests and step results ---

passed=0
failed=0
response_status=
response_type=
response_body=

pass() {
    passed=$((passed + 1))
    printf 'PASS: %s\n' "$*"
}

fail() {
    failed=$((failed + 1))
    printf 'FAIL: %s\n' "$*"
}

# Print the command line $1, then send the request with the curl arguments
# that follow and print the response. Sets response_status ("000" when no
# response came), response_type and response_body. Every request goes to
# 127.0.0.1, bypasses any proxy setting and ignores ~/.curlrc.
send_request() {
    local shown=$1 body_file write_out
    shift
    printf '\n$ %s\n' "$shown"
    body_file=$(mktemp "$work_dir/response.XXXXXX")
    write_out=$(curl -q --noproxy '*' --silent --show-error \
        --max-time "$CURL_MAX_TIME_SECONDS" \
        --output "$body_file" --write-out '%{http_code} %{content_type}' \
        "$@") || true
    response_status=${write_out%% *}
    response_type=${write_out#* }
    [[ -n $response_status ]] || response_status=000
    [[ $response_type != "$write_out" ]] || response_type=
    response_body=$(cat -- "$body_file")
    rm -f -- "$body_file"
    printf 'HTTP %s%s\n' "$response_status" "${response_type:+, Content-Type: $response_type}"
    if [[ -n $response_body ]]; then
        printf '%s\n' "$response_body"
    fi
}

# Record one step: PASS when the response status is $2, FAIL otherwise.
check_status() {
    local step=$1 expected=$2
    if [[ $response_status == "$expected" ]]; then
        pass "$step (HTTP $response_status)"
        return 0
    fi
    fail "$step: expected HTTP $expected, got HTTP $response_status"
    return 1
}

# --- Build ---

heading "Setup"
require_free_ports
scripts/setup.sh

heading "Build"
say "cargo build --release --locked --bin keygate --example mock_push_backend"
cargo build --release --locked --bin keygate --example mock_push_backend
[[ -x $keygate_bin ]] || die "the build finished but $keygate_bin is missing"
[[ -x $backend_bin ]] || die "the build finished but $backend_bin is missing"

# --- Config copy ---

heading "Config"
[[ -f config/cod-nps.yml ]] || die "config/cod-nps.yml not found in $repo_root"
mkdir -p -- "$work_dir"
rm -f -- "$config_copy"
# cat follows symbolic links and creates a plain, writable file.
cat -- config/cod-nps.yml >"$config_copy"
say "copied config/cod-nps.yml to $config_copy"
# keygate listens on 0.0.0.0 by default. The copy keeps every server on
# loopback and points keygate at the mock backend started below.
set_config_value gateway.listen "\"$LOOPBACK:$GATEWAY_PORT\"" ||
    die "failed to set gateway.listen in $config_copy"
set_config_value gateway.upstream "\"$BACKEND_URL\"" ||
    die "failed to set gateway.upstream in $config_copy"
set_config_value gateway.metrics.listen "\"$LOOPBACK:$METRICS_PORT\"" ||
    die "failed to set gateway.metrics.listen in $config_copy"
# The walk shows the refresh route, whose answer names what changed. With
# the file watch on, keygate could load the edited copy first, and the
# refresh would then report no change.
set_config_value gateway.watchConfig false ||
    die "failed to set gateway.watchConfig in $config_copy"
say "set gateway.listen to $LOOPBACK:$GATEWAY_PORT, gateway.metrics.listen to" \
    "$LOOPBACK:$METRICS_PORT and gateway.upstream to $BACKEND_URL in the copy," \
    "and turned the file watch off (gateway.watchConfig: false)"
say "$keygate_bin check-config --config $config_copy"
"$keygate_bin" check-config --config "$config_copy" ||
    die "keygate rejected $config_copy (see the message above)"

# --- Servers ---

heading "Start"
# The build can take minutes, so check again just before binding.
require_free_ports

say "starting the mock push backend on $BACKEND_URL, log: $backend_log"
"$backend_bin" --listen "$LOOPBACK:$BACKEND_PORT" </dev/null >"$backend_log" 2>&1 &
started_pids+=("$!")
started_names+=("the mock push backend")
backend_pid=$!

say "starting keygate on $GATEWAY_URL, log: $keygate_log"
"$keygate_bin" --config "$config_copy" </dev/null >"$keygate_log" 2>&1 &
started_pids+=("$!")
started_names+=("keygate")
keygate_pid=$!

# Fail with the end of the log when the server with pid $1 has exited.
require_running() {
    local pid=$1 name=$2 log_file=$3
    if ! kill -0 "$pid" 2>/dev/null; then
        printf 'quickstart: last lines of %s:\n' "$log_file" >&2
        tail -n 20 -- "$log_file" >&2 || true
        die "$name exited during startup"
    fi
}

deadline=$((SECONDS + STARTUP_TIMEOUT_SECONDS))
say "waiting up to $STARTUP_TIMEOUT_SECONDS s for the mock backend to listen on port $BACKEND_PORT"
until [[ -n $(listening_addresses "$BACKEND_PORT") ]]; do
    require_running "$backend_pid" "the mock push backend" "$backend_log"
    ((SECONDS < deadline)) || die "timed out waiting for the mock backend on port $BACKEND_PORT; see $backend_log"
    sleep 0.2
done

say "waiting up to $STARTUP_TIMEOUT_SECONDS s for $GATEWAY_URL/nps/health"
until curl -q --noproxy '*' --silent --fail --max-time 2 --output /dev/null "$GATEWAY_URL/nps/health"; do
    require_running "$keygate_pid" "keygate" "$keygate_log"
    ((SECONDS < deadline)) || die "timed out waiting for $GATEWAY_URL/nps/health; see $keygate_log"
    sleep 0.2
done
require_loopback_only "$GATEWAY_PORT" "keygate"
require_loopback_only "$METRICS_PORT" "keygate metrics"
require_loopback_only "$BACKEND_PORT" "the mock push backend"

# --- Workflow ---

heading "1. Health"
send_request "curl -sS $GATEWAY_URL/nps/health" "$GATEWAY_URL/nps/health"
if check_status "health" 200; then
    if [[ $response_body == *'"UP"'* ]]; then
        pass "health reports UP"
    else
        fail "health: the body does not report \"UP\""
    fi
fi

heading "2. Generate a client"
client_id=quickstart-$(date +%Y%m%d-%H%M%S)-$$
generate_url=$GATEWAY_URL/nps/rest/util/generateclient/$client_id
send_request "curl -sS $generate_url" "$generate_url"
check_status "generate client $client_id" 200 ||
    die "generating a client failed, so the remaining steps cannot run; see $keygate_log"

# The snippet is a comment with the header value, then one list entry.
api_key=$(printf '%s\n' "$response_body" | sed -n 's/^#[[:space:]]*X-Api-Key:[[:space:]]*//p' | head -n 1)
api_key=${api_key%%[[:space:]]*}
client_entry=$(printf '%s\n' "$response_body" | sed -n '/^-[[:space:]]/,$p' | grep -v '^[[:space:]]*#' || true)
if [[ -z $api_key ]]; then
    fail "generate client: the response has no '# X-Api-Key:' line"
    die "the X-Api-Key value is missing, so the remaining steps cannot run"
fi
if [[ -z $client_entry ]]; then
    fail "generate client: the response has no '- clientId:' list entry"
    die "the client's list entry is missing, so the remaining steps cannot run"
fi
decoded_key=$(printf '%s' "$api_key" | base64 --decode 2>/dev/null || true)
if [[ $decoded_key == "$client_id:"?* ]]; then
    pass "X-Api-Key is base64 of $client_id:<key>"
else
    fail "generate client: X-Api-Key does not decode to $client_id:<key>"
fi
unset decoded_key

heading "3. Add the client to allowedClients"
if append_allowed_client "$client_entry" && grep -q -- "$client_id" "$config_copy"; then
    say "added the entry for $client_id under allowedClients in $config_copy"
else
    die "failed to add $client_id to allowedClients in $config_copy"
fi
printf '\n$ %s\n' "$keygate_bin check-config --config $config_copy"
if "$keygate_bin" check-config --config "$config_copy"; then
    pass "check-config accepts the edited copy"
else
    fail "check-config rejects the edited copy"
fi

heading "4. Refresh"
send_request "curl -sS -X POST $GATEWAY_URL/nps/refresh" -X POST "$GATEWAY_URL/nps/refresh"
if check_status "refresh" 200; then
    if [[ $response_body == *'"allowedClients"'* ]]; then
        pass "refresh reports allowedClients as changed"
    else
        fail "refresh: the response does not list \"allowedClients\""
    fi
fi

heading "5. Push with the client's key"
push_url=$GATEWAY_URL/nps/rest/push/$PUSH_ID
say "API_KEY below is the X-Api-Key value from the snippet in step 2"
send_request "curl -sS -X POST -H \"x-api-key: \$API_KEY\" -H 'content-type: application/json' -d '$PUSH_BODY' $push_url" \
    -X POST -H "x-api-key: $api_key" -H 'content-type: application/json' --data "$PUSH_BODY" "$push_url"
if check_status "push with the right key reaches the backend" 404; then
    if [[ $response_body == *"$PUSH_ID"* ]]; then
        pass "the backend's 'pushId not known' error came back through keygate"
    else
        fail "push: the 404 body does not mention $PUSH_ID, so it may not come from the backend"
    fi
fi

heading "6. Push with a wrong key"
wrong_api_key=$(printf '%s:%064d' "$client_id" 0 | base64 --wrap=0)
send_request "curl -sS -X POST -H 'x-api-key: $wrong_api_key' -H 'content-type: application/json' -d '$PUSH_BODY' $push_url" \
    -X POST -H "x-api-key: $wrong_api_key" -H 'content-type: application/json' --data "$PUSH_BODY" "$push_url"
if check_status "push with a wrong key is rejected" 403; then
    if [[ $response_body == *'"Forbidden"'* ]]; then
        pass "the 403 body is keygate's Forbidden error"
    else
        fail "push with a wrong key: the body does not contain \"Forbidden\""
    fi
fi

heading "7. Metrics"
# Histogram buckets fill the screen, so the listing leaves them out.
printf '\n$ %s\n' "curl -sS $METRICS_URL | grep '^keygate_' | grep -v '_bucket{'"
metrics_file=$(mktemp "$work_dir/metrics.XXXXXX")
metrics_status=$(curl -q --noproxy '*' --silent --show-error --max-time "$CURL_MAX_TIME_SECONDS" \
    --output "$metrics_file" --write-out '%{http_code}' "$METRICS_URL") || true
metrics_line_count=$(awk '/^keygate_/' "$metrics_file" | wc -l)
awk '/^keygate_/ && !/_bucket\{/ && shown < 20 { print; shown++ }' "$metrics_file"
rm -f -- "$metrics_file"
if [[ $metrics_status == 200 ]] && ((metrics_line_count > 0)); then
    pass "metrics (HTTP 200, $metrics_line_count keygate_ lines)"
else
    fail "metrics: expected HTTP 200 with keygate_ lines, got HTTP ${metrics_status:-000} with $metrics_line_count"
fi

# --- Result ---

heading "Result"
printf '%d passed, %d failed\n' "$passed" "$failed"

if $check_mode; then
    stop_servers
    if ((failed > 0)); then
        die "$failed check(s) failed; logs are in $work_dir"
    fi
    say "all checks passed"
    exit 0
fi

if ((failed > 0)); then
    say "$failed check(s) failed; logs are in $work_dir"
fi
say "keygate is serving on $GATEWAY_URL/nps/ with the config $config_copy"
say "mock push backend on $BACKEND_URL, metrics on $METRICS_URL"
say "press Ctrl-C to stop both"
wait "$keygate_pid" || true
die "keygate exited on its own; see $keygate_log"
