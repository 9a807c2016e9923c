# shellcheck shell=bash
# Functions that the load scripts source to install their tools, build
# keygate and to start, configure and stop their servers. They use the
# sourcing script's variables: repo, work, keep, pids, stop_signals,
# nginx_bin and CONNECTIONS.

# Installs the missing packages. apt-get update runs only when the first
# install attempt fails, which is the case on a machine with no package lists.
install_missing() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    [[ ${#missing[@]} -eq 0 ]] && return 0

    local as_root=()
    [[ "$(id -u)" -eq 0 ]] || as_root=(sudo)
    echo "installing ${missing[*]} with apt-get"

    # Debian's nginx package starts the system service (port 80 on every
    # address) unless policy-rc.d forbids it. Forbid it for this install only.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local status=0
    if ! DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q \
        --no-install-recommends "${missing[@]}"; then
        "${as_root[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q \
            --no-install-recommends "${missing[@]}" || status=$?
    fi
    if (( added_policy )); then
        "${as_root[@]}" rm -f "$policy"
    fi
    return "$status"
}

# Builds the release binaries named by the cargo arguments when BUILD is 1,
# then exits with a message unless every BINARY exists.
# Usage: build_release SCRIPT BUILD "CARGO_ARGS" BINARY...
build_release() {
    local script="$1" build="$2" cargo_args="$3" binary
    shift 3
    if (( build )); then
        echo "building in release mode: cargo build $cargo_args"
        # shellcheck disable=SC2086 # the arguments are split on purpose
        (cd "$repo" && cargo build --release --quiet $cargo_args)
    fi
    for binary in "$@"; do
        if [[ ! -x "$binary" ]]; then
            echo "$script: $binary not found; run without --no-build" >&2
            exit 1
        fi
    done
}

# Creates the work folder keygate-NAME.XXXXXX and empty lists of started
# processes, and runs ON_EXIT when the script ends or is interrupted.
# Usage: make_work_dir NAME ON_EXIT
make_work_dir() {
    work="$(mktemp -d -t "keygate-$1.XXXXXX")"
    pids=()
    stop_signals=()
    # shellcheck disable=SC2064 # ON_EXIT is fixed when the trap is set
    trap "$2" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Prints COUNT free TCP ports on 127.0.0.1, one per line. All sockets stay
# open until every port is chosen, so the ports differ from each other.
pick_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
for s in sockets:
    print(s.getsockname()[1])
EOF
}

# Stops every process this script started, by its pid, and removes the
# work folder unless --keep was given or a start-up failed.
cleanup() {
    local index pid waited
    trap - EXIT INT TERM
    for index in "${!pids[@]}"; do
        kill "-${stop_signals[$index]}" "${pids[$index]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        waited=0
        while kill -0 "$pid" 2>/dev/null && (( waited < 50 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if (( keep )); then
        echo "work folder kept: $work"
    else
        rm -rf "$work"
    fi
}

# Starts a server in the background. Usage: start NAME SIGNAL COMMAND...
# Output goes to $work/NAME.log. Sets started_pid.
start() {
    local name="$1" signal="$2"
    shift 2
    "$@" >"$work/$name.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    stop_signals+=("$signal")
}

# Waits until PORT on 127.0.0.1 accepts connections, or fails when PID exits
# or 60 seconds pass.
wait_for_port() {
    local name="$1" pid="$2" port="$3" tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            keep=1
            echo "${0##*/}: $name exited during start-up; see $work/$name.log" >&2
            exit 1
        fi
        tries=$((tries + 1))
        if (( tries > 600 )); then
            keep=1
            echo "${0##*/}: $name did not listen on 127.0.0.1:$port within 60 s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# Writes DIR/nginx.conf for one nginx process with one worker.
# Usage: write_nginx_conf DIR PORT SERVER_FILE [HTTP_FILE]
# SERVER_FILE contains the directives inside the one `server` block, HTTP_FILE
# optional directives for the `http` block (maps, upstreams).
write_nginx_conf() {
    local dir="$1" port="$2" server_file="$3" http_file="${4:-}"
    mkdir -p "$dir/tmp"
    {
        echo "worker_processes 1;"
        echo "pid $dir/nginx.pid;"
        echo "error_log $dir/error.log warn;"
        echo "events { worker_connections 1024; }"
        echo "http {"
        echo "    access_log off;"
        echo "    default_type application/json;"
        echo "    keepalive_timeout 65s;"
        echo "    keepalive_requests 1000000;"
        for temp in client_body proxy fastcgi uwsgi scgi; do
            echo "    ${temp}_temp_path $dir/tmp/$temp;"
        done
        if [[ -n "$http_file" ]]; then
            cat "$http_file"
        fi
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        cat "$server_file"
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
}

# Prints the http-level directives of the key-checking nginx proxy.
# Usage: proxy_http_block MAP_FILE BACKEND_PORT
proxy_http_block() {
    cat <<EOF
    map_hash_max_size 524288;
    map_hash_bucket_size 256;
    include $1;
    map \$http_x_request_id \$forward_request_id {
        "" \$request_id;
        default \$http_x_request_id;
    }
    upstream push_backend {
        server 127.0.0.1:$2;
        keepalive $CONNECTIONS;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
EOF
}

# Prints the server block of the backend: a fixed JSON body for every request.
backend_server_block() {
    cat <<'EOF'
        location / {
            return 200 '{"ok":true}';
        }
EOF
}

# Prints the server block of the key-checking nginx proxy: keys are checked
# and forwarded only under /nps/, with the forwarding headers keygate sets.
proxy_server_block() {
    cat <<'EOF'
        location /nps/ {
            if ($client_id = "") {
                return 403 '{"status":403,"error":"Forbidden","message":"Access denied"}';
            }
            proxy_pass http://push_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Client-Id $client_id;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $forward_request_id;
        }
        location / {
            return 404 '{"status":404,"error":"Not Found","message":"Not found"}';
        }
EOF
}

# Starts an nginx master in the foreground with its own prefix.
# Usage: start_nginx NAME PORT SERVER_FILE [HTTP_FILE]. Sets started_pid.
start_nginx() {
    local name="$1" port="$2" dir="$work/$1"
    write_nginx_conf "$dir" "$port" "$3" "${4:-}"
    start "$name" TERM "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        -g 'daemon off;'
}
