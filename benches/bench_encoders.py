#!/usr/bin/env python3
"""Benchmark driver: sensorium-models (candle, CPU) vs PyTorch eager at real shapes.

Generates random real-shape checkpoints at bench time into a temporary directory
(whisper-base encoder, clip-vit-base-patch16 vision tower, FAVOR-size causal Q-Former), runs
`cargo bench -p sensorium-models --bench encoders` on them, times the same work in PyTorch
eager with the same thread count, and prints both with the ratio (PyTorch / Rust; > 1 means
Rust is faster). Medians of N runs after 2 warm-ups on both sides.

Usage (repository root): python3 benches/bench_encoders.py [--threads 2] [--iters 10] [--rust-bin B]
Needs CARGO_TARGET_DIR as usual for cargo. Nothing is downloaded.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import (CLIPVisionConfig, CLIPVisionModel, WhisperConfig,
                          WhisperFeatureExtractor, WhisperModel)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import qformer_reference as qref  # noqa: E402

torch.set_grad_enabled(False)

FAVOR = dict(qref.CFG, hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
             intermediate_size=3072, num_query_tokens=32, slots_per_frame=32, audio_width=1280,
             audio_slot_width=768, visual_width=768, visual_slot_width=768,
             max_slot_positions=4096, slot_attention_heads=12, lookback=10,
             llm_hidden_size=5120, context="window", mask="past")


def median_ms(iters, f):
    f()
    f()
    ts = []
    for _ in range(iters):
        s = time.perf_counter()
        f()
        ts.append((time.perf_counter() - s) * 1e3)
    return sorted(ts)[len(ts) // 2]


def make_models(d):
    torch.manual_seed(0)
    wcfg = WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8,
                         encoder_ffn_dim=2048, num_mel_bins=80, max_source_positions=1500,
                         decoder_layers=1, decoder_attention_heads=8, decoder_ffn_dim=256,
                         vocab_size=128, max_target_positions=16, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(wcfg).save_pretrained(os.path.join(d, "whisper-base"))
    ccfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, image_size=224, patch_size=16)
    CLIPVisionModel(ccfg).save_pretrained(os.path.join(d, "clip-b16"))
    CLIPImageProcessorPil(size={"shortest_edge": 224},
                          crop_size={"height": 224, "width": 224}).save_pretrained(
        os.path.join(d, "clip-b16"))
    q = qref.CausalQFormer(FAVOR).eval()
    for name, p in q.named_parameters():
        p.copy_(0.02 * torch.randn_like(p) + (1.0 if name.endswith("LayerNorm.weight") or name == "ln_video.weight" else 0.0))
    qd = os.path.join(d, "qformer")
    os.makedirs(qd)
    from safetensors.torch import save_file
    import json
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, os.path.join(qd, "model.safetensors"))
    with open(os.path.join(qd, "config.json"), "w") as f:
        json.dump(FAVOR, f)
    return wcfg, q


def torch_bench(d, wcfg, q, iters):
    out = {}
    out["whisper_load"] = median_ms(iters, lambda: WhisperModel.from_pretrained(
        os.path.join(d, "whisper-base")).encoder.eval())
    out["clip_load"] = median_ms(iters, lambda: CLIPVisionModel.from_pretrained(
        os.path.join(d, "clip-b16")).eval())
    rng = np.random.RandomState(1)
    wav = (rng.rand(8000) - 0.5).astype(np.float32)
    fe = WhisperFeatureExtractor(feature_size=80)
    out["whisper_mel_frame"] = median_ms(iters, lambda: fe(wav, sampling_rate=16000, return_tensors="pt", padding="longest"))
    # HF insists on max_source_positions * 2 mel frames: an encoder with the positional table
    # cut to 25 rows runs the same 25-frame work as ours.
    enc = WhisperModel.from_pretrained(os.path.join(d, "whisper-base")).encoder.eval()
    c2 = WhisperConfig(**{**wcfg.to_dict(), "max_source_positions": 25})
    enc2 = WhisperModel(c2).encoder.eval()
    sd = enc.state_dict()
    sd["embed_positions.weight"] = sd["embed_positions.weight"][:25]
    enc2.load_state_dict(sd)
    mel = fe(wav, sampling_rate=16000, return_tensors="pt", padding="longest")["input_features"]
    out["whisper_encoder_frame"] = median_ms(iters, lambda: enc2(mel))
    out["whisper_e2e_frame"] = median_ms(iters, lambda: enc2(fe(wav, sampling_rate=16000, return_tensors="pt", padding="longest")["input_features"]))
    wavs = [(rng.rand(8000) - 0.5).astype(np.float32) for _ in range(10)]
    out["whisper_e2e_frame_batch10"] = median_ms(iters, lambda: enc2(fe(wavs, sampling_rate=16000, return_tensors="pt", padding="longest")["input_features"])) / 10
    vis = CLIPVisionModel.from_pretrained(os.path.join(d, "clip-b16")).eval()
    proc = CLIPImageProcessorPil.from_pretrained(os.path.join(d, "clip-b16"))
    img = rng.randint(0, 256, (240, 320, 3), dtype=np.uint8)
    out["clip_preprocess_frame"] = median_ms(iters, lambda: proc(images=img, return_tensors="pt"))
    px = proc(images=img, return_tensors="pt")["pixel_values"]
    out["clip_tower_frame"] = median_ms(iters, lambda: vis(pixel_values=px))
    def clip_e2e():
        h = vis(pixel_values=proc(images=img, return_tensors="pt")["pixel_values"]).last_hidden_state
        torch.nn.functional.adaptive_avg_pool1d(h[:, 1:].transpose(1, 2), 32)
    out["clip_e2e_frame"] = median_ms(iters, clip_e2e)
    audio = torch.randn(10, 25, 1280)
    visual = torch.randn(10, 32, 768)
    ones = torch.ones(10)
    out["qformer_window_full"] = median_ms(iters, lambda: q(audio, visual, ones, ones, ones, 0, 10, "past", "window"))
    return out


def run_rust(cmd, env):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"rust bench failed:\n{r.stderr[-4000:]}")
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, ms = line.split()
            out[name] = float(ms)
    return out


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate Rust and PyTorch this many times (a shared machine's load "
                         "drifts; each ratio pairs runs taken back to back)")
    ap.add_argument("--rust-bin", help="prebuilt bench binary (else `cargo bench` builds it)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = tempfile.mkdtemp(prefix="sensorium-bench-")
    rust, pt = [], []
    try:
        wcfg, q = make_models(d)
        env = dict(os.environ, SENSORIUM_BENCH_DIR=d, SENSORIUM_BENCH_ITERS=str(a.iters),
                   RAYON_NUM_THREADS=str(a.threads))
        cmd = [a.rust_bin] if a.rust_bin else ["cargo", "bench", "-q", "-p", "sensorium-models",
                                               "--bench", "encoders"]
        for _ in range(a.rounds):
            rust.append(run_rust(cmd, env))
            pt.append(torch_bench(d, wcfg, q, a.iters))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"threads={a.threads} iters={a.iters} rounds={a.rounds} "
          "(median ms over rounds; ratio = median over rounds of pytorch / rust)")
    print(f"{'case':40s} {'rust':>10s} {'pytorch':>10s} {'ratio':>7s}  per-round ratios")
    for name in rust[0]:
        r = med([x[name] for x in rust])
        if name in pt[0]:
            p = med([x[name] for x in pt])
            ratios = [y[name] / x[name] for x, y in zip(rust, pt)]
            print(f"{name:40s} {r:10.3f} {p:10.3f} {med(ratios):7.2f}  "
                  + " ".join(f"{v:.2f}" for v in ratios))
        else:
            print(f"{name:40s} {r:10.3f} {'-':>10s} {'-':>7s}")
    key_i, key_f = "qformer_window_incremental_stride1", "qformer_window_full"
    ratios = [y[key_f] / x[key_i] for x, y in zip(rust, pt)]
    print(f"{'incremental rust vs full-window pytorch':40s} {med([x[key_i] for x in rust]):10.3f} "
          f"{med([y[key_f] for y in pt]):10.3f} {med(ratios):7.2f}  " + " ".join(f"{v:.2f}" for v in ratios))


if __name__ == "__main__":
    main()
