#!/usr/bin/env python3
"""PEFT compatibility of sensorium's LoRA adapters (issue: `sensorium train` outputs).

Two directions, on the committed tiny Qwen2 fixture (or any HF model directory):
  1. An adapter made by PEFT (random A and B, so it is not a no-op) is saved with
     `save_pretrained`, loaded by sensorium (`models/examples/lora_logits.rs`, the same code
     `[llm] adapter` uses) and PEFT's logits are compared with sensorium's.
  2. With `--adapter DIR` (e.g. a `sensorium train` output's `adapter/`), that adapter is
     loaded with `PeftModel.from_pretrained` onto the HF model and compared the same way.

Passes when the largest absolute logit difference is below 1e-4.
Needs: torch, transformers, peft (pip). Run from the repository root:
  python3 tools/peft_check.py [--model models/tests/fixtures/llm/qwen2] [--adapter DIR]
"""
import argparse
import json
import subprocess
import sys
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

IDS = [1, 92, 266, 443, 73, 229, 313, 76, 294, 291, 75, 292, 2]


def sensorium_logits(model_dir, adapter_dir):
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "sensorium-models", "--example",
         "lora_logits", "--", model_dir, adapter_dir, ",".join(map(str, IDS))],
        check=True, capture_output=True, text=True,
    ).stdout
    return torch.tensor(json.loads(out)["logits"])


def peft_logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float()


def compare(name, a, b):
    diff = (a - b).abs().max().item()
    print(f"{name}: max |logit difference| = {diff:.3e}")
    return diff < 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/tests/fixtures/llm/qwen2")
    ap.add_argument("--adapter", default=None)
    args = ap.parse_args()
    ok = True
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"])
    peft_model = get_peft_model(base, cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        peft_model.save_pretrained(d)
        ok &= compare("PEFT adapter in sensorium", peft_logits(peft_model), sensorium_logits(args.model, d))
    if args.adapter:
        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        m = PeftModel.from_pretrained(base, args.adapter).eval()
        ok &= compare("sensorium adapter in PEFT", peft_logits(m), sensorium_logits(args.model, args.adapter))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
