#!/usr/bin/env python3
"""Live latency of the whole binary: a live source (GStreamer `test` or the engine's
`synthetic`) runs for --seconds in realtime mode through `sensorium run`, optionally with the
model stack (the committed tiny fixtures: Whisper, CLIP, seeded Q-Former, Qwen2 answering
every window). Reports percentiles of the window lines' `latency_ms` (capture of the window's
newest data -> its line written) and of the answers' `capture_to_first_token_ms`, and the
windows dropped. Run from the repository root after `cargo build --release`:

    python3 benches/bench_latency.py --bin target/release/sensorium --seconds 30 --models
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def config(kind, seconds, models, fps, window, stride, device, favor, llm):
    if kind == "test":
        source = (f'source = {{ kind = "test", pattern = "ball", wave = "ticks", '
                  f'is_live = true, duration_s = {seconds} }}')
    else:
        source = f'source = {{ kind = "synthetic", is_live = true, duration_s = {seconds} }}'
    text = f"""
[engine]
fps = {fps}
width = 224
height = 224
window = {window}
stride = {stride}
device = "{device}"

[[stream]]
name = "live"
mode = "realtime"
{source}
"""
    if models:
        # `favor`: a FAVOR-width Q-Former (hidden 768, 32 queries) on the tiny encoders.
        size = ("slots = 8\nhidden_size = 768\nlayers = 2\nheads = 8\nqueries = 32\n"
                "init_std = 0.02\n" if favor else
                "slots = 4\nhidden_size = 16\nlayers = 2\nheads = 2\nqueries = 3\n"
                "init_std = 0.2\n")
        text += """
[models]
audio = "models/tests/fixtures/whisper80"
vision = "models/tests/fixtures/clip"
random = true
seed = 7
visual_slots = "pool"
""" + size
    if models and llm:
        text += """
[llm]
model = "models/tests/fixtures/llm/qwen2"
max_tokens = 8
[[llm.question]]
text = "What is happening?"
every_windows = 1
"""
    return text


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q / 100 * (len(values) - 1))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sensorium")
    ap.add_argument("--source", choices=["test", "synthetic"], default="synthetic")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", action="store_true")
    ap.add_argument("--favor", action="store_true",
                    help="with --models: a FAVOR-width Q-Former (hidden 768, 32 queries)")
    ap.add_argument("--no-llm", action="store_true", help="with --models: no answers")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "latency.toml")
        out = os.path.join(d, "out.jsonl")
        with open(cfg, "w") as f:
            f.write(config(a.source, a.seconds, a.models, a.fps, a.window, a.stride, a.device,
                           a.favor, not a.no_llm))
        p = subprocess.run([a.bin, "run", "--config", cfg, "--output", out],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"sensorium exited {p.returncode}: {p.stderr}")
        lines = [json.loads(l) for l in open(out)]
    windows = [l["latency_ms"] for l in lines if "latency_ms" in l]
    answers = [l["capture_to_first_token_ms"] for l in lines if "capture_to_first_token_ms" in l]
    summary = [l for l in p.stderr.splitlines() if "windows written" in l]
    print(f"source {a.source}, {a.seconds:g} s live at {a.fps:g} fps, k={a.window} s={a.stride}, "
          f"models={'off' if not a.models else 'favor-width' if a.favor else 'tiny'}"
          f"{'' if not a.models or not a.no_llm else ' (no LLM)'}, device {a.device}")
    for name, v in (("window latency_ms", windows), ("capture_to_first_token_ms", answers)):
        if v:
            print(f"{name:<27} n={len(v):<4} p50 {pct(v, 50):8.2f}  p95 {pct(v, 95):8.2f}  "
                  f"max {max(v):8.2f}  mean {statistics.mean(v):8.2f}")
    for s in summary:
        print(s)


if __name__ == "__main__":
    main()
