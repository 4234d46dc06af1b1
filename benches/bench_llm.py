#!/usr/bin/env python3
"""CPU benchmark: sensorium's LLM decoder vs llama.cpp (llama-cpp-python) on the same files.

A random Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14/2 heads, vocab 151936, tied
embeddings) is generated at bench time by `llm_bench gen` (never committed): f32 safetensors,
f32 GGUF and q4_0 GGUF from the same weights. Then, in one run, each engine prefills the same
prompt ids and greedily decodes the same number of tokens:

  sensorium  f32 safetensors (HF dir), f32 GGUF, q4_0 GGUF
  llama.cpp  f32 GGUF, q4_0 GGUF

Printed: time to first token (prefill + first argmax) and decode tokens/s, and the
sensorium / llama.cpp ratios per file. Threads: both engines use N_THREADS (default: all cores).

Run from the repository root:
  CARGO_TARGET_DIR=... python3 benches/bench_llm.py [--prompt 128] [--gen 32] [--dir /tmp/x]
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np


def cargo_bin():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    subprocess.run(
        ["cargo", "build", "--release", "-p", "sensorium-models", "--example", "llm_bench"],
        check=True,
    )
    return os.path.join(target, "release", "examples", "llm_bench")


def prompt_ids(n):
    return [100 + (7 * i) % 400 for i in range(n)]


def run_sensorium(binary, model, n_prompt, n_gen, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, "run", model, "--prompt", str(n_prompt), "--gen", str(n_gen)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def last_logits(llm):
    # Llama.scores is only filled with logits_all=True (which would compute the vocabulary
    # projection for every prompt position); read the last position's logits directly.
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def run_llama_cpp(model, n_prompt, n_gen, threads):
    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=n_prompt + n_gen + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False)
    load_s = time.perf_counter() - t
    ids = prompt_ids(n_prompt)
    t0 = time.perf_counter()
    llm.eval(ids)
    first = np.array(last_logits(llm))
    nxt = int(np.argmax(first))
    ttft = time.perf_counter() - t0
    out = [nxt]
    t1 = time.perf_counter()
    for _ in range(1, n_gen):
        llm.eval([nxt])
        nxt = int(np.argmax(last_logits(llm)))
        out.append(nxt)
    dt = time.perf_counter() - t1
    return {"engine": "llama.cpp", "model": model, "load_s": load_s, "ttft_ms": ttft * 1e3,
            "decode_tok_s": (n_gen - 1) / dt, "tokens": out,
            "first_logits_head": first[:16].tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/sensorium-llm-bench")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bin", help="prebuilt llm_bench binary (default: cargo build --release)")
    args = ap.parse_args()

    binary = args.bin or cargo_bin()
    if not os.path.exists(os.path.join(args.dir, "q4_0.gguf")):
        tok = os.path.join("models", "tests", "fixtures", "llm", "tokenizer.json")
        subprocess.run([binary, "gen", args.dir, "--tokenizer", tok], check=True)
    hf = os.path.join(args.dir, "hf")
    f32 = os.path.join(args.dir, "f32.gguf")
    q40 = os.path.join(args.dir, "q4_0.gguf")

    rows = []
    for name, fn in [
        ("sensorium f32 safetensors", lambda: run_sensorium(binary, hf, args.prompt, args.gen, args.threads)),
        ("sensorium f32 gguf", lambda: run_sensorium(binary, f32, args.prompt, args.gen, args.threads)),
        ("llama.cpp f32 gguf", lambda: run_llama_cpp(f32, args.prompt, args.gen, args.threads)),
        ("sensorium q4_0 gguf", lambda: run_sensorium(binary, q40, args.prompt, args.gen, args.threads)),
        ("llama.cpp q4_0 gguf", lambda: run_llama_cpp(q40, args.prompt, args.gen, args.threads)),
    ]:
        r = fn()
        rows.append((name, r))
        print(f"{name:28s} load {r['load_s']:6.2f} s  TTFT {r['ttft_ms']:8.1f} ms  "
              f"decode {r['decode_tok_s']:7.2f} tok/s", flush=True)

    by = dict(rows)
    print(f"\nprompt {args.prompt} tokens, {args.gen} generated, {args.threads} threads, "
          f"Qwen2.5-0.5B shape, random weights")
    for fmt in ["f32", "q4_0"]:
        s, l = by[f"sensorium {fmt} gguf"], by[f"llama.cpp {fmt} gguf"]
        same = sum(1 for _ in __import__("itertools").takewhile(
            lambda p: p[0] == p[1], zip(s["tokens"], l["tokens"])))
        print(f"{fmt:5s} sensorium/llama.cpp: TTFT ratio {s['ttft_ms'] / l['ttft_ms']:.2f} "
              f"(higher = slower), decode tok/s ratio {s['decode_tok_s'] / l['decode_tok_s']:.2f} "
              f"(lower = slower); greedy tokens agree {same}/{args.gen}")


if __name__ == "__main__":
    main()
