#!/usr/bin/env python3
"""The default model's vision pretraining (stage 1) reproduced in PyTorch, to compare recipes
quickly (PyTorch trains this tiny tower several times faster than a full `sensorium train`).

The tower has the default model's shape (CLIP layout: pre-LN, quick GELU, CLS token, patch
embedding without bias), its patch tokens average-pooled to `slots` and read by one linear
head over the flattened slots, masked binary cross-entropy, AdamW with a 10% warm-up then
cosine, gradient clipping at 1: what `Trainer::pretrain_encoders` does for the vision tower.

    cargo run --release --example dump_scene_frames -- 1000 4000 64 /tmp/train
    cargo run --release --example dump_scene_frames -- 1 101 64 /tmp/val
    python3 tools/stage1_reference.py /tmp/train /tmp/val steps=6000

Prints the held-out frames' accuracy a quarter of the way at a time: `objects` (every
colour/shape flag of the frame right, `vision.objects` in `sensorium train`'s log), the same
with shapes ignored (`colours`) and with colours ignored (`shapes`), and the object count.
"""
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LABELS = 138  # sensorium_engine::scene::VISION_LABELS
PAIRS, COLOURS, SHAPES = 15, 5, 3
MEAN = torch.tensor([0.4815, 0.4578, 0.4082])
STD = torch.tensor([0.2686, 0.2613, 0.2758])


def load(path, size):
    x = np.fromfile(path + ".rgb", dtype=np.uint8).reshape(-1, size, size, 3)
    lab = np.fromfile(path + ".lab", dtype=np.float32).reshape(-1, 2, LABELS)
    return torch.from_numpy(x), torch.from_numpy(lab[:, 0]), torch.from_numpy(lab[:, 1])


def prep(x):
    return ((x.float() / 255 - MEAN) / STD).permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        h = self.fc1(self.ln2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class Tower(nn.Module):
    def __init__(self, size, patch, width, layers, slots):
        super().__init__()
        n = (size // patch) ** 2
        self.embed = nn.Conv2d(3, width, patch, patch, bias=False)
        self.pos = nn.Parameter(torch.randn(n + 1, width) * 0.05)
        self.cls = nn.Parameter(torch.randn(width) * 0.05)
        self.pre, self.post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, 4) for _ in range(layers)])
        self.grid = int(math.sqrt(slots))
        self.head = nn.Linear(slots * width, LABELS)

    def forward(self, x):
        p = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(p.shape[0], 1, -1), p], 1) + self.pos
        x = self.pre(x)
        for b in self.blocks:
            x = b(x)
        x = self.post(x)[:, 1:]
        side = int(math.sqrt(x.shape[1]))
        x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        x = F.adaptive_avg_pool2d(x, self.grid).flatten(2).transpose(1, 2)
        return self.head(x.flatten(1))


def main():
    train, val = sys.argv[1], sys.argv[2]
    a = dict(arg.split("=") for arg in sys.argv[3:])
    size, patch = int(a.get("size", 64)), int(a.get("patch", 8))
    width, layers = int(a.get("width", 64)), int(a.get("layers", 2))
    steps, batch = int(a.get("steps", 2000)), int(a.get("batch", 64))
    lr, slots = float(a.get("lr", 2e-3)), int(a.get("slots", 16))
    torch.set_num_threads(int(a.get("threads", 2)))
    torch.manual_seed(int(a.get("seed", 0)))
    x, t, m = load(train, size)
    xv, tv, _ = load(val, size)
    model = Tower(size, patch, width, layers, slots)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def evaluate():
        model.eval()
        with torch.no_grad():
            lo = torch.cat([model(prep(xv[i:i + 256])) for i in range(0, len(xv), 256)])
        model.train()
        pred, want = (lo[:, :PAIRS] > 0).float(), tv[:, :PAIRS]
        p, w = pred.view(-1, COLOURS, SHAPES), want.view(-1, COLOURS, SHAPES)
        return {
            "objects": (pred == want).all(1).float().mean().item(),
            "colours": (p.amax(2) == w.amax(2)).all(1).float().mean().item(),
            "shapes": (p.amax(1) == w.amax(1)).all(1).float().mean().item(),
            "count": (lo[:, PAIRS:PAIRS + 3].argmax(1)
                      == tv[:, PAIRS:PAIRS + 3].argmax(1)).float().mean().item(),
        }

    start, warm = time.time(), max(1, steps // 10)
    order, cursor = torch.randperm(len(x)), 0
    for step in range(steps):
        if step < warm:
            rate = lr * (step + 1) / warm
        else:
            rate = lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = rate
        if cursor + batch > len(x):
            order, cursor = torch.randperm(len(x)), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        logits = model(prep(x[idx]))
        bce = F.binary_cross_entropy_with_logits(logits, t[idx], reduction="none")
        loss = (bce * m[idx]).sum() / m[idx].sum()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % max(1, steps // 4) == 0:
            acc = " ".join(f"{k} {v:.3f}" for k, v in evaluate().items())
            print(f"step {step + 1}: loss {loss.item():.4f} held out: {acc} "
                  f"({time.time() - start:.0f} s)", flush=True)
    print(f"{steps * batch / (time.time() - start):.0f} frames/s")


if __name__ == "__main__":
    main()
