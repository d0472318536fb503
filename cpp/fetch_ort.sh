#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers (Debian trixie's libonnxruntime-dev, headers only) and make a
# libonnxruntime.so.1 link to the Python wheel's library, for the C++ runtime's CMake build.
#
#   cpp/fetch_ort.sh [OUT_DIR] [PYTHON]      (default: build/third_party, .venv/bin/python)
#
# Debian 12 ships no onnxruntime headers; the C API is versioned, so trixie's 1.21 headers work
# against the wheel's newer library. Idempotent: does nothing when both are already in place.
# Prints the include and library folders on its last two lines (ORT_INCLUDE=..., ORT_LIB=...).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/third_party}"
py="${2:-$root/.venv/bin/python}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
inc="$out/onnxruntime/include"
lib="$out/onnxruntime/lib"

fetch_headers() {
    local d="$out/debian"
    mkdir -p "$d/lists/partial" "$d/dl/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$d/trixie.list"
    local o=(-o "Dir::Etc::SourceList=$d/trixie.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$d/lists" -o "Dir::Cache::archives=$d/dl")
    if ! ls "$d"/dl/libonnxruntime-dev_*.deb >/dev/null 2>&1; then
        apt-get "${o[@]}" update >/dev/null
        (cd "$d/dl" && apt-get "${o[@]}" download libonnxruntime-dev)
    fi
    rm -rf "$d/x"
    dpkg -x "$(ls "$d"/dl/libonnxruntime-dev_*.deb | head -n1)" "$d/x"
    local h
    h="$(dirname "$(find "$d/x" -name onnxruntime_cxx_api.h | head -n1)")"
    [ -f "$h/onnxruntime_cxx_api.h" ] || { echo "fetch_ort: no onnxruntime_cxx_api.h in the .deb" >&2; exit 1; }
    rm -rf "$inc" && mkdir -p "$inc" && cp -r "$h"/. "$inc"/
}

link_library() {
    local capi
    capi="$("$py" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
    local so
    so="$(ls "$capi"/libonnxruntime.so.1.* 2>/dev/null | head -n1)"
    [ -n "$so" ] || { echo "fetch_ort: no libonnxruntime.so.1.* in $capi" >&2; exit 1; }
    mkdir -p "$lib"
    ln -sfn "$so" "$lib/libonnxruntime.so.1"
    ln -sfn libonnxruntime.so.1 "$lib/libonnxruntime.so"
}

[ -f "$inc/onnxruntime_cxx_api.h" ] || fetch_headers
[ -e "$lib/libonnxruntime.so.1" ] || link_library
echo "ORT_INCLUDE=$inc"
echo "ORT_LIB=$lib"
