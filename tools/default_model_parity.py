"""The shipped default model against transformers: each part, loaded by transformers from its
Hugging Face directory, gives the outputs sensorium gives on the same inputs (max abs
difference within 1e-4 of the output's scale).

    cargo run --release -p sensorium-models --example default_parity -- default-model /tmp/dp.safetensors
    python3 tools/default_model_parity.py default-model /tmp/dp.safetensors

Needs torch, transformers and safetensors (pip).
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel, Qwen2ForCausalLM, WhisperModel


def report(name, ours, theirs):
    diff = (ours - theirs).abs().max().item()
    scale = max(theirs.abs().max().item(), 1.0)
    ok = diff <= 1e-4 * scale
    print(f"{name}: shape {tuple(theirs.shape)}, max |diff| {diff:.3g} (scale {scale:.3g}) {'ok' if ok else 'MISMATCH'}")
    return ok


def main(bundle, outputs):
    ref = load_file(outputs)
    ok = True
    with torch.no_grad():
        w = WhisperModel.from_pretrained(f"{bundle}/audio").eval()
        h = w.encoder(input_features=ref["audio.mel"]).last_hidden_state
        ok &= report("audio (Whisper encoder)", ref["audio.hidden"], h)
        v = CLIPVisionModel.from_pretrained(f"{bundle}/vision").eval()
        h = v(pixel_values=ref["vision.pixels"]).last_hidden_state
        ok &= report("vision (CLIP tower)", ref["vision.hidden"], h)
        m = Qwen2ForCausalLM.from_pretrained(f"{bundle}/llm").eval()
        logits = m(input_ids=ref["llm.ids"].long().unsqueeze(0)).logits[0]
        ok &= report("llm (Qwen2 logits)", ref["llm.logits"], logits)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
