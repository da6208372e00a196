#!/usr/bin/env bash
# CPU time per agent run, by process: starts `caxton serve` from BIN_DIR on a scratch directory with
# the scripted provider and the calculator agent (2 LLM calls, 1 WASM tool call), warms it with 100
# runs over the JSON socket, then counts the clock ticks (1/100 s) the supervisor, its exited workers
# and the toolhost spend on 1000 sequential runs.
#   usage: benches/scripts/cpu-per-run.sh BIN_DIR [REPO]
set -euo pipefail
BIN=$1
REPO=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/agents"
cp "$REPO/agents/calculator.toml" "$D/agents/"
cat > "$D/caxton.toml" <<EOC
runtime_dir = "$D/run"
agents_dir = "$D/agents"
state_dir = "$D/state"
[providers.local]
kind = "scripted"
rules = "$REPO/tests/agents/rules.toml"
EOC
"$BIN/caxton" serve --config "$D/caxton.toml" > "$D/log" 2>&1 &
SUP=$!
for _ in $(seq 100); do [ -S "$D/run/api.sock" ] && break; sleep 0.1; done
sleep 1
python3 "$HERE/json-runs.py" "$D/run/api.sock" 100 > /dev/null
TH=$(pgrep -P "$SUP" caxton-toolhost)
cpu() { awk '{print $14+$15, $16+$17}' "/proc/$1/stat"; }
read -r s1 c1 < <(cpu "$SUP"); read -r t1 _ < <(cpu "$TH")
python3 "$HERE/json-runs.py" "$D/run/api.sock" 1000
read -r s2 c2 < <(cpu "$SUP"); read -r t2 _ < <(cpu "$TH")
echo "ticks per 1000 runs: supervisor $((s2-s1)) workers $((c2-c1)) toolhost $((t2-t1))"
kill "$SUP"; wait "$SUP" 2>/dev/null || true
