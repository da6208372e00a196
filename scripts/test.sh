#!/usr/bin/env bash
# The whole test gate, the same locally and in CI: format, lints, build, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests start the real binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The tool servers' own unit tests (native target).
cargo test --manifest-path tools/Cargo.toml --locked
# The tool written in C: its own protocol tests against a native build.
make -s -C tools/checksum-c test
