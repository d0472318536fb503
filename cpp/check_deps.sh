#!/usr/bin/env bash
# Can the C++ runtime be built and tested here? Prints nothing and exits 0 when it can; else prints
# the reason on one line and exits 1. With --install (and root + apt-get), first tries to install
# the missing Debian -dev packages, saying what it does.
#
#   cpp/check_deps.sh [--install]
set -uo pipefail

declare -A HEADER=(
    [libopencv-dev]=/usr/include/opencv4/opencv2/core.hpp
    [nlohmann-json3-dev]=/usr/include/nlohmann/json.hpp
    [libgtest-dev]=/usr/include/gtest/gtest.h
    [libssl-dev]=/usr/include/openssl/evp.h
)

missing_packages() {
    local p out=""
    for p in "${!HEADER[@]}"; do [ -f "${HEADER[$p]}" ] || out="$out $p"; done
    echo "${out# }"
}

if [ "${1:-}" = "--install" ]; then
    missing="$(missing_packages)"
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "C++ deps: apt-get install $missing" >&2
            install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2; }
            # stale package lists on a fresh machine: update once and retry
            install || { apt-get update >&2 && install; } || echo "C++ deps: apt-get install failed" >&2
        else
            echo "C++ deps: missing $missing (not root or no apt-get: not installing)" >&2
        fi
    fi
fi

command -v cmake >/dev/null || { echo "cmake not found"; exit 1; }
command -v c++ >/dev/null || command -v g++ >/dev/null || { echo "no C++ compiler (c++/g++) found"; exit 1; }
version="$(cmake --version | head -n1 | awk '{print $3}')"
if [ "$(printf '%s\n3.25\n' "$version" | sort -V | head -n1)" != "3.25" ]; then
    echo "cmake $version is older than 3.25"; exit 1
fi
missing="$(missing_packages)"
[ -z "$missing" ] || { echo "missing Debian packages: $missing (apt-get install $missing)"; exit 1; }
exit 0
