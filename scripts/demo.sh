#!/usr/bin/env bash
# The main job, end to end on the built-in defaults: build, start `caxton serve`, run a real
# agent request (CLI -> supervisor -> fresh worker process -> toolhost -> WASM tool -> answer),
# store and search a memory and run an agent that recalls it (memory service, local embeddings),
# show the service status, and stop the service.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
bin=target/debug
export CAXTON_RUNTIME_DIR="${CAXTON_RUNTIME_DIR:-$(mktemp -d /tmp/caxton-demo.XXXXXX)}"
export CAXTON_STATE_DIR="${CAXTON_STATE_DIR:-$CAXTON_RUNTIME_DIR/state}"
export CAXTON_LOG_FORMAT=text

"$bin/caxton" serve &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    "$bin/caxton" health >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { echo "caxton serve exited early" >&2; exit 1; }
    sleep 0.1
done
"$bin/caxton" health

echo; echo '$ caxton agent list'
"$bin/caxton" agent list
echo; echo '$ caxton agent run calculator --input "What is 12 * 7 + 3?"'
"$bin/caxton" agent run calculator --input "What is 12 * 7 + 3?"
echo; echo '$ caxton agent run text-stats --input "the quick brown fox"'
"$bin/caxton" agent run text-stats --input "the quick brown fox"
echo; echo '$ caxton memory store "Release train" -o "Releases ship on Tuesdays after the 10:00 standup" --scope workspace:team'
"$bin/caxton" memory store "Release train" -o "Releases ship on Tuesdays after the 10:00 standup" --scope workspace:team
echo; echo '$ caxton memory search "when do we deploy?"'
"$bin/caxton" memory search "when do we deploy?"
echo; echo '$ caxton agent run team-notes --input "When do we ship?"'
"$bin/caxton" agent run team-notes --input "When do we ship?"
echo; echo '$ caxton memory stats'
"$bin/caxton" memory stats
echo; echo '$ caxton status'
"$bin/caxton" status
echo; echo '$ caxton audit verify'
"$bin/caxton" audit verify
