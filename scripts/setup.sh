#!/usr/bin/env bash
# Install what a Debian machine needs to build and test keygate.
#
# Installs a C compiler (build-essential), cmake, pkg-config, curl,
# ca-certificates and testssl.sh, each only when it is missing, through
# apt-get. Some of pingora's dependencies compile C code, and libz-ng-sys
# builds zlib-ng with cmake. tests/tls_testssl.rs runs testssl.sh against
# the TLS listener. Safe to run again: when nothing is missing, it does not call apt-get.
# Finally checks that cargo is on PATH, because this script does not install
# the Rust toolchain.
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

    log "installing ${missing_packages[*]}"
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing_packages[@]}"
else
    log "all build packages are present, nothing to install"
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
