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
# The script-client test and examples/run_agent.py use Python's standard library only.
if ! command -v python3 >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3
fi
