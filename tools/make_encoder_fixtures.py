#!/usr/bin/env python3
"""Golden fixtures for sensorium-models' encoders, from PyTorch `transformers`.

Builds tiny random (fixed-seed) Whisper (80 and 128 mel bins), CLIP and SigLIP vision models
in their real HF formats (config.json + model.safetensors), runs the HF reference front ends
(WhisperFeatureExtractor, CLIPImageProcessorPil, SiglipImageProcessorPil) and models, and
writes inputs and outputs as f32 safetensors (`io.safetensors`) next to each checkpoint under
models/tests/fixtures/. Run from the repository root: python3 tools/make_encoder_fixtures.py
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import (CLIPConfig, CLIPModel, SiglipVisionConfig, SiglipVisionModel,
                          WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                          WhisperModel)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

OUT = os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures")
torch.set_grad_enabled(False)


def t(x):
    return torch.as_tensor(np.ascontiguousarray(x)).contiguous()


def waveform(n, seed):
    rng = np.random.RandomState(seed)
    s = np.arange(n) / 16000.0
    w = 0.3 * np.sin(2 * np.pi * 440 * s) + 0.2 * np.sin(2 * np.pi * 1234.5 * s * (1 + s))
    w += 0.05 * rng.randn(n)
    return w.astype(np.float32)


def whisper(name, n_mels, full_model, seed):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=n_mels, d_model=32, encoder_layers=2,
                        encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
                        decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=50,
                        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    model = (WhisperForConditionalGeneration if full_model else WhisperModel)(cfg).eval()
    # Random init leaves LayerNorms at 1/0; perturb every parameter so the test sees them.
    for p in model.parameters():
        p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(d, safe_serialization=True)
    enc = model.get_encoder()
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    io = {}
    for tag, n in (("long", 16000), ("short", 8000)):
        wav = waveform(n, seed + n)
        mel = fe(wav, sampling_rate=16000, return_tensors="np", padding="longest")["input_features"]
        assert mel.shape == (1, n_mels, n // 160), mel.shape
        frames = n // 320
        if frames == cfg.max_source_positions:
            out = enc(torch.from_numpy(mel)).last_hidden_state
        else:
            # HF insists on max_source_positions*2 mel frames; a copy with the positional
            # table cut to `frames` rows is the reference for our sliced short-chunk encode.
            c2 = WhisperConfig(**{**cfg.to_dict(), "max_source_positions": frames})
            enc2 = WhisperModel(c2).eval().get_encoder()
            sd = enc.state_dict()
            sd["embed_positions.weight"] = sd["embed_positions.weight"][:frames]
            enc2.load_state_dict(sd)
            out = enc2(torch.from_numpy(mel)).last_hidden_state
        io[f"{tag}.wav"] = t(wav)
        io[f"{tag}.mel"] = t(mel)
        io[f"{tag}.out"] = out.contiguous()
    save_file(io, os.path.join(d, "io.safetensors"))


def image(w, h, seed):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    img = base + rng.randint(-40, 40, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def perturb(model):
    for p in model.parameters():
        p.add_(0.02 * torch.randn_like(p))


def clip(seed):
    d = os.path.join(OUT, "clip")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16)
    model = CLIPModel(cfg).eval()
    perturb(model)
    model.save_pretrained(d, safe_serialization=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(d)
    img = image(48, 37, seed)
    px = proc(images=img, return_tensors="np")["pixel_values"]
    assert px.shape == (1, 3, 32, 32), px.shape
    out = model.vision_model(pixel_values=torch.from_numpy(px))
    save_file({"image": t(img), "pixels": t(px), "last_hidden_state": out.last_hidden_state,
               "pooled": out.pooler_output.contiguous()}, os.path.join(d, "io.safetensors"))


def siglip(seed):
    d = os.path.join(OUT, "siglip")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, image_size=32, patch_size=8)
    model = SiglipVisionModel(cfg).eval()
    perturb(model)
    model.save_pretrained(d, safe_serialization=True)
    proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    proc.save_pretrained(d)
    img = image(45, 29, seed)
    px = proc(images=img, return_tensors="np")["pixel_values"]
    assert px.shape == (1, 3, 32, 32), px.shape
    out = model(pixel_values=torch.from_numpy(px))
    save_file({"image": t(img), "pixels": t(px), "last_hidden_state": out.last_hidden_state},
              os.path.join(d, "io.safetensors"))


if __name__ == "__main__":
    whisper("whisper80", 80, True, 1)
    whisper("whisper128", 128, False, 2)
    clip(3)
    siglip(4)
    print("fixtures written to", os.path.abspath(OUT))
