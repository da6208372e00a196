#!/usr/bin/env python3
"""llama.cpp's speed on the embedded model's GGUF, for the side-by-side in benches/RESULTS.md.

Measures what `cargo run --release -p caxton-benches local` measures for candle: load time, prompt
processing tokens/s (a ~200-token prompt) and greedy generation tokens/s (128 tokens), 2 threads,
median of 3 runs. Needs llama-cpp-python (compiles llama.cpp, ~8 min here; not part of CI):

    python3 -m venv /tmp/llamacpp && /tmp/llamacpp/bin/pip install "llama-cpp-python[server]"
    /tmp/llamacpp/bin/python benches/scripts/llama_cpp_speed.py [MODEL.gguf]
"""
import os
import statistics
import sys
import time

from llama_cpp import Llama

DEFAULT = os.path.join(
    os.environ.get("CAXTON_DATA_DIR")
    or os.path.join(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "caxton"),
    "models",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
RUNS = 3
GEN_TOKENS = 128


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    t = time.perf_counter()
    llm = Llama(model_path=path, n_threads=2, n_threads_batch=2, n_ctx=2048, verbose=False, seed=1)
    load_s = time.perf_counter() - t
    prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + (
        "Explain in detail how a multi-agent orchestration server runs agents, tools and models. " * 12
    ) + "<|im_end|>\n<|im_start|>assistant\n"
    n_prompt = len(llm.tokenize(prompt.encode(), special=True))
    pp, tg = [], []
    for _ in range(RUNS):
        llm.reset()
        t = time.perf_counter()
        llm.eval(llm.tokenize(prompt.encode(), special=True))
        pp.append(n_prompt / (time.perf_counter() - t))
        # Greedy generation of exactly GEN_TOKENS tokens after the prompt (EOS ignored).
        t = time.perf_counter()
        for _ in range(GEN_TOKENS):
            tok = llm.sample(temp=0.0)
            llm.eval([tok])
        tg.append(GEN_TOKENS / (time.perf_counter() - t))
    print(f"llama.cpp (llama-cpp-python) on {os.path.basename(path)}, 2 threads")
    print(f"load: {load_s * 1000:.0f} ms")
    print(f"prompt: {n_prompt} tokens, {statistics.median(pp):.0f} tok/s (median of {RUNS})")
    print(f"generation: {GEN_TOKENS} tokens, {statistics.median(tg):.1f} tok/s (median of {RUNS})")


if __name__ == "__main__":
    main()
