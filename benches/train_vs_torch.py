#!/usr/bin/env python3
"""Training-step throughput and peak memory: `sensorium train`'s step (candle) against the same
step in PyTorch + PEFT, same shapes, same machine, one run.

Shapes: FAVOR's causal Q-Former (BERT-base width 768, 2 layers, 32 queries, 32 slots per
frame, Whisper-large audio width 1280 (25 tokens per frame), visual width 768, one 10-frame
window, past-only lookback) projected into a random Qwen2.5-0.5B-shaped LLM (hidden 896,
24 layers, 14 heads / 2 KV heads, FFN 4864, vocab 151936, tied embeddings) carrying LoRA
(r = 32, alpha = 32, dropout 0.1 on q/k/v/o), batch 1, AdamW, clip 1.0; loss on the answer
tokens. The LLM weights are made once (transformers, seeded) and loaded by both sides.

Each side runs in its own process (peak RSS is per process): one warm-up step, then --steps
timed steps. Needs torch, transformers, peft; run from the repository root:
  python3 benches/train_vs_torch.py [--steps 3] [--threads 2] [--layers 24]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "models", "tests", "fixtures", "llm", "tokenizer.json")


def qwen_config(layers):
    from transformers import Qwen2Config
    return Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
        max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, torch_dtype="float32",
    )


def make_llm(d, layers):
    import torch
    from transformers import Qwen2ForCausalLM
    torch.manual_seed(0)
    Qwen2ForCausalLM(qwen_config(layers)).save_pretrained(d, safe_serialization=True,
                                                         max_shard_size="20GB")
    shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.json"))


def torch_side(model_dir, steps, threads, positions, answer):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import qformer_reference as ref
    torch.set_grad_enabled(True)  # the reference module turns it off at import
    torch.set_num_threads(threads)
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(1)
    c = dict(ref.CFG, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
             num_query_tokens=32, slots_per_frame=32, audio_width=1280, audio_slot_width=768,
             visual_width=768, visual_slot_width=768, max_slot_positions=4096,
             slot_attention_heads=12, lookback=10, llm_hidden_size=896)
    qf = ref.CausalQFormer(c)
    llm = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    llm = get_peft_model(llm, LoraConfig(r=32, lora_alpha=32, lora_dropout=0.1,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    params = list(qf.parameters()) + [p for p in llm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    n = 10
    audio, visual = torch.randn(n, 25, 1280), torch.randn(n, 32, 768)
    ones = torch.ones(n)
    text = positions - 32  # text positions around the AV tokens
    ids = torch.randint(0, 512, (text,))
    targets = torch.randint(0, 512, (answer,))
    emb = llm.get_input_embeddings()

    def step():
        _, proj = qf(audio, visual, ones, ones, ones, 0, n, "past", "lookback")
        e = emb(ids)[None]
        x = torch.cat([e[:, :10], proj, e[:, 10:]], 1)
        logits = llm(inputs_embeds=x).logits[0, -answer:]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - start
    return {
        "system": f"PyTorch {torch.__version__} + PEFT",
        "steps": steps, "seconds": secs, "samples_per_s": steps / secs,
        "tokens_per_s": steps * positions / secs, "positions": positions,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--torch-side", nargs=3, metavar=("MODEL", "POSITIONS", "ANSWER"))
    a = ap.parse_args()
    if a.torch_side:
        m, p, ans = a.torch_side
        print(json.dumps(torch_side(m, a.steps, a.threads, int(p), int(ans))))
        return
    with tempfile.TemporaryDirectory() as d:
        make_llm(d, a.layers)
        ours = json.loads(subprocess.run(
            ["cargo", "run", "--quiet", "--release", "-p", "sensorium-models", "--example",
             "train_bench", "--", d, os.path.join(d, "tokenizer.json"), str(a.steps)],
            cwd=ROOT, check=True, capture_output=True, text=True,
            env=dict(os.environ, RAYON_NUM_THREADS=str(a.threads))).stdout)
        answer = round(ours["answer_tokens_per_s"] * ours["seconds"] / ours["steps"])
        theirs = json.loads(subprocess.run(
            [sys.executable, __file__, "--steps", str(a.steps), "--threads", str(a.threads),
             "--torch-side", d, str(ours["positions"]), str(answer)],
            check=True, capture_output=True, text=True).stdout)
    print(f"{'system':<28} {'samples/s':>10} {'tokens/s':>10} {'peak RSS MB':>12}")
    for r in (ours, theirs):
        print(f"{r['system']:<28} {r['samples_per_s']:>10.3f} {r['tokens_per_s']:>10.1f} {r['peak_rss_mb']:>12.0f}")
    print(f"ratio sensorium / PyTorch: throughput {ours['samples_per_s'] / theirs['samples_per_s']:.2f}x, "
          f"peak memory {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x "
          f"({a.layers} layers, {ours['positions']} positions, {a.threads} threads)")
    print(json.dumps({"sensorium": ours, "torch": theirs}))


if __name__ == "__main__":
    main()
