#!/usr/bin/env bash
# Install what a Debian machine needs to build and test keygate.
#
# Installs a C compiler (build-essential), cmake, pkg-config, curl,
# ca-certificates, testssl.sh and slowhttptest, each only when it is
# missing, through apt-get. Some of pingora's dependencies compile C code,
# and libz-ng-sys builds zlib-ng with cmake. tests/tls_testssl.rs runs
# testssl.sh against the TLS listener, and tests/reliability_connections.rs
# runs slowhttptest against the connection caps. The deployment tests (tests/deploy_*.rs) also need
# docker-compose (to parse docker-compose.yml without a Docker engine),
# prometheus and promtool, and python3 with venv. Safe to run again: when
# nothing is missing, it does not call apt-get.
#
# Then creates a Python venv at <target dir>/deploy-venv with a pinned
# kubernetes-validate, which checks deploy/kubernetes/ against the
# Kubernetes schemas. Finally checks that cargo is on PATH, because this
# script does not install the Rust toolchain.
set -euo pipefail

log() {
    printf 'setup: %s\n' "$*"
}

die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

# Debian packages to install, in order, without duplicates.
missing_packages=()

add_package() {
    local package=$1 listed
    for listed in "${missing_packages[@]}"; do
        [[ $listed == "$package" ]] && return 0
    done
    missing_packages+=("$package")
}

require_command() {
    local command_name=$1 package=$2
    if command -v "$command_name" >/dev/null 2>&1; then
        log "found $command_name"
    else
        log "missing $command_name (package $package)"
        add_package "$package"
    fi
}

require_command cc build-essential
require_command c++ build-essential
require_command make build-essential
require_command cmake cmake
require_command pkg-config pkg-config
require_command curl curl
require_command docker-compose docker-compose
require_command prometheus prometheus
require_command promtool prometheus
require_command slowhttptest slowhttptest
# scripts/check-test-logs.py reads the test logs for leaked keys.
require_command python3 python3

# The venv below needs python3 with the venv and ensurepip modules, which
# Debian ships in python3-venv.
if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "found python3 with venv"
else
    log "missing python3 with venv (package python3-venv)"
    add_package python3-venv
fi

# Debian's testssl.sh package installs the command as `testssl`.
if command -v testssl >/dev/null 2>&1 || command -v testssl.sh >/dev/null 2>&1; then
    log "found testssl.sh"
else
    log "missing testssl.sh (package testssl.sh)"
    add_package testssl.sh
fi

# ca-certificates ships no command, so look for the bundle it installs.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [[ -s $ca_bundle ]]; then
    log "found $ca_bundle"
else
    log "missing $ca_bundle (package ca-certificates)"
    add_package ca-certificates
fi

if ((${#missing_packages[@]} > 0)); then
    if ! command -v apt-get >/dev/null 2>&1; then
        die "apt-get not found, so ${missing_packages[*]} cannot be installed automatically." \
            "Install them with this system's package manager and run scripts/setup.sh again."
    fi

    as_root=()
    if ((EUID != 0)); then
        if ! command -v sudo >/dev/null 2>&1; then
            die "installing ${missing_packages[*]} needs root, and sudo was not found." \
                "Run scripts/setup.sh as root or install sudo."
        fi
        as_root=(sudo)
    fi

    # Debian's prometheus package starts its daemon on install, listening on
    # every interface at port 9090. The tests start their own Prometheus on
    # loopback, so a policy-rc.d that exits 101 ("action forbidden") keeps
    # package scripts from starting services during this install. An
    # existing policy-rc.d belongs to the machine's admin and is left alone.
    policy_rc=/usr/sbin/policy-rc.d
    if [[ ! -e $policy_rc ]]; then
        log "writing a temporary $policy_rc so that no installed service starts"
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy_rc" >/dev/null
        "${as_root[@]}" chmod 755 "$policy_rc"
        trap '"${as_root[@]}" rm -f -- "$policy_rc"' EXIT
    fi

    log "installing ${missing_packages[*]}"
    "${as_root[@]}" apt-get update
    # Another apt-get (an unattended upgrade, say) may hold the dpkg lock;
    # wait for it up to 5 minutes before failing.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 \
        "${missing_packages[@]}"
else
    log "all build packages are present, nothing to install"
fi

# The venv lives in cargo's target folder, where the deployment tests look
# for it. A relative CARGO_TARGET_DIR is relative to the repository root,
# as it is for cargo run from there.
repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$repo_root/$target_dir
deploy_venv=$target_dir/deploy-venv
kubernetes_validate_version=1.37.0

installed_version=$("$deploy_venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)
if [[ $installed_version == "$kubernetes_validate_version" ]]; then
    log "found kubernetes-validate $installed_version in $deploy_venv"
else
    log "installing kubernetes-validate $kubernetes_validate_version into $deploy_venv"
    python3 -m venv "$deploy_venv"
    "$deploy_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$kubernetes_validate_version"
fi

if command -v cargo >/dev/null 2>&1; then
    log "found $(cargo --version)"
elif [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    die "cargo is installed in ${CARGO_HOME:-$HOME/.cargo}/bin but that folder is not on PATH." \
        "Add it to PATH (for example: . \"${CARGO_HOME:-$HOME/.cargo}/env\") and run again."
else
    die "cargo not found. keygate needs a Rust toolchain with cargo, which this script does not install." \
        "Install one (for example with rustup) and run scripts/setup.sh again."
fi
