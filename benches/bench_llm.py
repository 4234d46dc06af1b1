#!/usr/bin/env python3
"""CPU benchmark: sensorium's LLM decoder vs llama.cpp (llama-cpp-python) on the same files.

A random Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14/2 heads, vocab 151936, tied
embeddings) is generated at bench time by `llm_bench gen` (never committed): f32 safetensors,
f32 GGUF and q4_0 GGUF from the same weights. Then, in one run, each engine prefills the same
prompt ids and greedily decodes the same number of tokens:

  sensorium  f32 safetensors (HF dir), f32 GGUF, q4_0 GGUF
  llama.cpp  f32 GGUF, q4_0 GGUF

Printed per round: load time, time to first token (prefill + first argmax) and decode
tokens/s; then medians and per-round ratios (llama.cpp time / sensorium time) per file. Threads: both engines use N_THREADS (default: all cores).

Run from the repository root:
  CARGO_TARGET_DIR=... python3 benches/bench_llm.py [--prompt 128] [--gen 32] [--dir /tmp/x]
      [--rounds 3] [--json out.json]
"""
import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
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


def run_sensorium(binary, model, n_prompt, n_gen, threads, extra_env=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), **(extra_env or {}))
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


def run_llama_cpp(model, n_prompt, n_gen, threads, extra_bufts=True):
    from llama_cpp import Llama

    t = time.perf_counter()
    # extra_bufts=False: no weight repacking (AMX, AVX-512 q4_0 tiles); only for machines
    # where llama.cpp's AMX buffer crashes (seen: SIGSEGV in ggml_backend_amx, 0.3.36).
    llm = Llama(model_path=model, n_ctx=n_prompt + n_gen + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False,
                **({} if extra_bufts else {"use_extra_bufts": False}))
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


def run_llama_cpp_isolated(model, n_prompt, n_gen, threads, extra_bufts=True):
    """run_llama_cpp in a child process: a crash inside llama.cpp (seen: SIGSEGV in its AMX
    q4_0 path on a machine with AMX, llama-cpp-python 0.3.36) is reported as that run's
    failure instead of ending the benchmark."""
    cmd = [sys.executable, __file__, "--llama-one", model, "--prompt", str(n_prompt),
           "--gen", str(n_gen), "--threads", str(threads)]
    if not extra_bufts:
        cmd.append("--llama-no-extra-bufts")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"engine": "llama.cpp", "model": model, "failed": f"exit {p.returncode}",
                "load_s": float("nan"), "ttft_ms": float("nan"), "decode_tok_s": float("nan"),
                "tokens": []}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/sensorium-llm-bench")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write every round and the ratios here")
    ap.add_argument("--llama-no-extra-bufts", action="store_true",
                    help="llama.cpp without weight repacking (where its AMX path crashes)")
    ap.add_argument("--llama-one", help=argparse.SUPPRESS)
    ap.add_argument("--bin", help="prebuilt llm_bench binary (default: cargo build --release)")
    args = ap.parse_args()
    if args.llama_one:
        r = run_llama_cpp(args.llama_one, args.prompt, args.gen, args.threads,
                          not args.llama_no_extra_bufts)
        print(json.dumps(r))
        return

    binary = args.bin or cargo_bin()
    if not os.path.exists(os.path.join(args.dir, "q4_0.gguf")):
        tok = os.path.join("models", "tests", "fixtures", "llm", "tokenizer.json")
        subprocess.run([binary, "gen", args.dir, "--tokenizer", tok], check=True)
    hf = os.path.join(args.dir, "hf")
    f32 = os.path.join(args.dir, "f32.gguf")
    q40 = os.path.join(args.dir, "q4_0.gguf")

    runs = [
        ("sensorium f32 safetensors", lambda: run_sensorium(binary, hf, args.prompt, args.gen, args.threads)),
        ("sensorium f32 gguf", lambda: run_sensorium(binary, f32, args.prompt, args.gen, args.threads)),
        ("llama.cpp f32 gguf", lambda: run_llama_cpp_isolated(f32, args.prompt, args.gen, args.threads)),
        ("sensorium q4_0 gguf", lambda: run_sensorium(binary, q40, args.prompt, args.gen, args.threads)),
        # The same file through candle's own q4_0 kernel (the VNNI kernel switched off): the
        # before/after of models/src/llm/q4_vnni.rs in the same run.
        ("sensorium q4_0 candle kernel", lambda: run_sensorium(
            binary, q40, args.prompt, args.gen, args.threads, {"SENSORIUM_NO_VNNI": "1"})),
        ("llama.cpp q4_0 gguf", lambda: run_llama_cpp_isolated(
            q40, args.prompt, args.gen, args.threads, not args.llama_no_extra_bufts)),
    ]
    # Rounds alternate the engines on the same files (the page cache warm for both after the
    # first round; a round-0 cold read is reported but is the same for both).
    rounds = []
    for k in range(args.rounds):
        by = {}
        for name, fn in runs:
            r = fn()
            by[name] = r
            if r.get("failed"):
                print(f"round {k} {name:28s} FAILED ({r['failed']})", flush=True)
                continue
            print(f"round {k} {name:28s} load {r['load_s']:6.2f} s  TTFT {r['ttft_ms']:8.1f} ms  "
                  f"decode {r['decode_tok_s']:7.2f} tok/s", flush=True)
        rounds.append(by)

    med = lambda xs: statistics.median(xs)
    print(f"\nprompt {args.prompt} tokens, {args.gen} generated, {args.threads} threads, "
          f"Qwen2.5-0.5B shape, random weights, {args.rounds} rounds (medians; ratio = "
          f"llama.cpp / sensorium time, > 1 = sensorium faster)")
    summary = {"prompt": args.prompt, "gen": args.gen, "threads": args.threads,
               "llama_extra_bufts": not args.llama_no_extra_bufts,
               "rounds": rounds, "ratios": {}}
    for fmt in ["f32", "q4_0"]:
        s_rows = [r[f"sensorium {fmt} gguf"] for r in rounds]
        l_rows = [r[f"llama.cpp {fmt} gguf"] for r in rounds]
        if any(l.get("failed") for l in l_rows):
            summary["ratios"][fmt] = {"failed": [l.get("failed") for l in l_rows]}
            print(f"{fmt:5s} no ratio: llama.cpp failed "
                  f"({', '.join(str(l.get('failed')) for l in l_rows)})")
            continue
        load = [l["load_s"] / s["load_s"] for s, l in zip(s_rows, l_rows)]
        ttft = [l["ttft_ms"] / s["ttft_ms"] for s, l in zip(s_rows, l_rows)]
        dec = [s["decode_tok_s"] / l["decode_tok_s"] for s, l in zip(s_rows, l_rows)]
        same = sum(1 for _ in itertools.takewhile(
            lambda p: p[0] == p[1], zip(s_rows[-1]["tokens"], l_rows[-1]["tokens"])))
        summary["ratios"][fmt] = {"load": load, "ttft": ttft, "decode": dec}
        print(f"{fmt:5s} load {med([s['load_s'] for s in s_rows]):.3f} s vs "
              f"{med([l['load_s'] for l in l_rows]):.3f} s (ratio {med(load):.2f}, rounds "
              f"{' '.join(f'{x:.2f}' for x in load)}); TTFT ratio {med(ttft):.2f}; decode ratio "
              f"{med(dec):.2f}; greedy tokens agree {same}/{args.gen}")
    c_rows = [r["sensorium q4_0 candle kernel"] for r in rounds]
    v_rows = [r["sensorium q4_0 gguf"] for r in rounds]
    summary["vnni_vs_candle_q4_0"] = {
        "decode": [v["decode_tok_s"] / c["decode_tok_s"] for v, c in zip(v_rows, c_rows)],
        "ttft": [c["ttft_ms"] / v["ttft_ms"] for v, c in zip(v_rows, c_rows)],
    }
    print(f"q4_0 VNNI kernel vs candle's: decode {med([c['decode_tok_s'] for c in c_rows]):.1f} "
          f"-> {med([v['decode_tok_s'] for v in v_rows]):.1f} tok/s, TTFT "
          f"{med([c['ttft_ms'] for c in c_rows]):.0f} -> {med([v['ttft_ms'] for v in v_rows]):.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)

if __name__ == "__main__":
    main()
