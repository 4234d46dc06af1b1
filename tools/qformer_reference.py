#!/usr/bin/env python3
"""PyTorch reference of sensorium's causal Q-Former, producing golden fixtures.

Follows the structure of FAVOR's Q-Former (BriansIDP/AudioVisualLLM model/Qformer.py, a
BLIP-2 modification of HF BERT, and model/openllama.py encode_video): BertAttention =
self.{query,key,value} + output.{dense,LayerNorm}; every layer has cross-attention and the
query FFN (intermediate_query/output_query); with causal attention each layer first runs a
block-causal self-attention over the AV slots (FAVOR's mask kron(triu(ones(n,n)),
ones(S,S)) read with rows as queries = frame i sees j >= i; `mask="past"` uses tril instead:
j <= i), optionally limited to a lookback of frames. Slots = [audio ; visual] on the feature
axis, audio projected by speech_pre_qformer_proj then zero-padded to S slots, a missing
modality zeroed; then ln_video, + video_frame_position_embedding, queries through
bert.embeddings.LayerNorm, then llama_proj. Masks are additive with finfo.min as HF's
invert_attention_mask.

Writes models/tests/fixtures/qformer/{config.json, model.safetensors, io.safetensors}
(weights in the layout documented in models/QFORMER_LAYOUT.md). The module's state_dict
names ARE that layout. Run from the repository root: python3 tools/qformer_reference.py
"""
import json
import math
import os

import torch
from safetensors.torch import save_file
from torch import nn

OUT = os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures", "qformer")
torch.set_grad_enabled(False)

CFG = dict(model_type="causal_qformer", hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=64, layer_norm_eps=1e-12, hidden_act="gelu",
           num_query_tokens=4, slots_per_frame=3, audio_width=12, audio_slot_width=8,
           audio_proj=True, visual_width=8, visual_slot_width=8, visual_proj=False,
           max_slot_positions=64, slot_attention_heads=2, causal_slots=True, mask="past",
           context="window", lookback=4, positions="absolute", llm_hidden_size=24)


class BertSelfAttention(nn.Module):
    def __init__(self, width, kv_width, heads):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)

    def split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, kv, ext_mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(kv)), self.split(self.value(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if ext_mask is not None:
            scores = scores + ext_mask
        ctx = scores.softmax(-1) @ v
        b, h, t, dh = ctx.shape
        return ctx.permute(0, 2, 1, 3).reshape(b, t, h * dh)


class BertSelfOutput(nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertAttention(nn.Module):
    def __init__(self, width, kv_width, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(width, kv_width, heads)
        self.output = BertSelfOutput(width, eps)

    def forward(self, x, kv, ext_mask=None):
        return self.output(self.self(x, kv, ext_mask), x)


class Dense(nn.Module):
    def __init__(self, i, o, eps=None):
        super().__init__()
        self.dense = nn.Linear(i, o)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(o, eps=eps)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, ws, eps = c["hidden_size"], c["audio_slot_width"] + c["visual_slot_width"], c["layer_norm_eps"]
        if c["causal_slots"]:
            self.causal_attention = BertAttention(ws, ws, c["slot_attention_heads"], eps)
        self.attention = BertAttention(h, h, c["num_attention_heads"], eps)
        self.crossattention = BertAttention(h, ws, c["num_attention_heads"], eps)
        self.intermediate_query = Dense(h, c["intermediate_size"])
        self.output_query = Dense(c["intermediate_size"], h, eps)

    def forward(self, q, slots, slot_mask, cross_mask):
        if hasattr(self, "causal_attention"):
            slots = self.causal_attention(slots, slots, slot_mask)
        q = self.attention(q, q)
        q = self.crossattention(q, slots, cross_mask)
        f = self.output_query.dense(nn.functional.gelu(self.intermediate_query.dense(q)))
        return self.output_query.LayerNorm(f + q), slots


class Embeddings(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(h, eps=eps)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])


class Bert(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c["hidden_size"], c["layer_norm_eps"])
        self.encoder = Encoder(c)


class QformerHolder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bert = Bert(c)


class CausalQFormer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        ws = c["audio_slot_width"] + c["visual_slot_width"]
        self.video_query_tokens = nn.Parameter(torch.zeros(1, c["num_query_tokens"], c["hidden_size"]))
        self.ln_video = nn.LayerNorm(ws, eps=c["layer_norm_eps"])
        self.video_frame_position_embedding = nn.Embedding(c["max_slot_positions"], ws)
        self.speech_pre_qformer_proj = nn.Linear(c["audio_width"], c["audio_slot_width"])
        self.video_Qformer = QformerHolder(c)
        self.llama_proj = nn.Linear(c["hidden_size"], c["llm_hidden_size"])

    def slots(self, audio, visual, has_audio, has_video):
        """audio [n, Ta, Wa], visual [n, S, Wv] -> raw slots [n, S, Ws] (sequence_align)."""
        S = self.c["slots_per_frame"]
        a = self.speech_pre_qformer_proj(audio)
        a = torch.cat([a, a.new_zeros(a.shape[0], S - a.shape[1], a.shape[2])], 1)
        a = a * has_audio[:, None, None]
        v = visual * has_video[:, None, None]
        return torch.cat([a, v], -1)

    def frame_mask(self, n, mask, lookback):
        ones = torch.ones(n, n)
        m = torch.triu(ones) if mask == "future" else torch.tril(ones)
        if lookback is not None:
            i = torch.arange(n)
            m = m * ((i[:, None] - i[None, :]).abs() < lookback).float()
        return m

    def forward(self, audio, visual, has_audio, has_video, valid, first_index, k, mask, context):
        c, S = self.c, self.c["slots_per_frame"]
        n = audio.shape[0]
        if context == "window":
            sl = slice(n - k, n)
            audio, visual, has_audio, has_video, valid = (t[sl] for t in (audio, visual, has_audio, has_video, valid))
            first_index += n - k
            n = k
        raw = self.slots(audio, visual, has_audio, has_video).reshape(1, n * S, -1)
        period = c["max_slot_positions"] // S
        frame_pos = (torch.arange(n) + first_index) % period
        pos_ids = (frame_pos[:, None] * S + torch.arange(S)[None, :]).reshape(-1)
        x = self.ln_video(raw) + self.video_frame_position_embedding(pos_ids)[None]
        fm = self.frame_mask(n, mask, c["lookback"] if context == "lookback" else None)
        fm = fm * valid[None, :]
        slot_mask = torch.kron(fm, torch.ones(S, S))
        neg = torch.finfo(torch.float32).min
        slot_ext = (1.0 - slot_mask)[None, None] * neg
        win_valid = valid[n - k:].repeat_interleave(S)
        cross_ext = (1.0 - win_valid)[None, None, None, :] * neg
        q = self.video_Qformer.bert.embeddings.LayerNorm(self.video_query_tokens)
        for layer in self.video_Qformer.bert.encoder.layer:
            if hasattr(layer, "causal_attention"):
                x = layer.causal_attention(x, x, slot_ext)
            q = layer.attention(q, q)
            q = layer.crossattention(q, x[:, (n - k) * S:], cross_ext)
            f = layer.output_query.dense(nn.functional.gelu(layer.intermediate_query.dense(q)))
            q = layer.output_query.LayerNorm(f + q)
        return q, self.llama_proj(q)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(7)
    model = CausalQFormer(CFG).eval()
    for name, p in model.named_parameters():
        p.copy_(0.2 * torch.randn_like(p) + (1.0 if name.endswith("LayerNorm.weight") or name == "ln_video.weight" else 0.0))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CFG, f, indent=2)

    g = torch.Generator().manual_seed(11)
    n = 9
    S = CFG["slots_per_frame"]
    audio = torch.randn(n, 2, CFG["audio_width"], generator=g)
    visual = torch.randn(n, S, CFG["visual_width"], generator=g)
    has_audio = torch.ones(n)
    has_video = torch.ones(n)
    has_audio[5] = 0.0
    has_video[6] = 0.0
    io = {"audio": audio, "visual": visual, "has_audio": has_audio, "has_video": has_video}
    cases = [
        # name, frames used, valid flags, k, mask, context
        ("past_window", 5, [1, 1, 1, 1, 0], 5, "past", "window"),
        ("future_window", 5, [1, 1, 1, 1, 0], 5, "future", "window"),
        ("past_lookback", 9, [1] * 9, 5, "past", "lookback"),
        ("past_lookback_pad", 9, [1] * 8 + [0], 5, "past", "lookback"),
    ]
    # Cases use the LAST `used` frames of the inputs, starting at stream index 9 - used.
    for name, used, valid, k, mask, context in cases:
        sl = slice(n - used, n)
        v = torch.tensor(valid, dtype=torch.float32)
        hidden, proj = model(audio[sl], visual[sl], has_audio[sl], has_video[sl], v, n - used, k, mask, context)
        io[f"{name}.valid"] = v
        io[f"{name}.hidden"] = hidden.contiguous()
        io[f"{name}.projected"] = proj.contiguous()
    save_file(io, os.path.join(OUT, "io.safetensors"))
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
