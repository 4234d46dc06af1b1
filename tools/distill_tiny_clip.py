#!/usr/bin/env python3
"""Make the tiny CLIP fixture of the distillation zero-shot teacher, with golden outputs.

Writes models/tests/fixtures/distill_tiny_clip/{config.json, model.safetensors,
tokenizer.json, golden.json}: a randomly initialised (seeded) transformers CLIPModel with a
2-layer text tower in the Hugging Face layout, a word-level tokenizer with CLIP's special
tokens (<|startoftext|>, <|endoftext|> as the highest id), and, as reference, the
L2-normalised `get_text_features` of one prompt per class computed by transformers.
Run: python3 tools/distill_tiny_clip.py
"""
import json
import os

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel

OUT = os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures", "distill_tiny_clip")
CLASSES = ["ball", "snow", "smpte", "checkers", "red", "circular", "pinwheel", "zone-plate"]
TEMPLATE = "a photo of a {}"

words = ["<pad>", "<unk>", "a", "photo", "of", "zone", "-", "plate"] + CLASSES[:-1] + ["dog", "car"]
vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
vocab["<|startoftext|>"] = len(vocab)
vocab["<|endoftext|>"] = len(vocab)
V = len(vocab)

tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
)
tok.post_processor = processors.TemplateProcessing(
    single="<|startoftext|> $A <|endoftext|>",
    special_tokens=[("<|startoftext|>", V - 2), ("<|endoftext|>", V - 1)],
)

torch.manual_seed(0)
cfg = CLIPConfig(
    text_config=dict(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
        bos_token_id=V - 2, eos_token_id=V - 1, pad_token_id=0,
    ),
    vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        image_size=32, patch_size=16, hidden_act="quick_gelu",
    ),
    projection_dim=24,
)
model = CLIPModel(cfg).eval()
# Random init leaves some tensors at constants; perturb everything so the test sees real math.
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
tok.save(os.path.join(OUT, "tokenizer.json"))

golden = {"template": TEMPLATE, "classes": CLASSES, "ids": [], "text_embeds": []}
with torch.no_grad():
    for c in CLASSES:
        ids = tok.encode(TEMPLATE.format(c)).ids
        out = model.get_text_features(input_ids=torch.tensor([ids]))
        if not torch.is_tensor(out):
            out = out.pooler_output
        e = torch.nn.functional.normalize(out, dim=-1)[0]
        golden["ids"].append(ids)
        golden["text_embeds"].append([round(float(x), 7) for x in e])
    golden["logit_scale"] = float(model.logit_scale)
with open(os.path.join(OUT, "golden.json"), "w") as f:
    json.dump(golden, f, indent=1)
print("wrote", OUT, "vocab", V)
