#!/usr/bin/env python3
"""Golden fixtures for sensorium-models' LLM decoders (models/tests/llm_*.rs).

Builds, deterministically (fixed seeds, fixed corpus):
  * a byte-level BPE tokenizer.json (vocab 512) with ChatML / Llama-3 / Vicuna special tokens,
    trained with the `tokenizers` library on the small corpus below;
  * a tiny random Qwen2 (tied embeddings, q/k/v bias, GQA 4 heads / 2 kv heads, hidden 64,
    2 layers) and a tiny random LLaMA (untied head, no bias, GQA), saved by `transformers`
    as config.json + model.safetensors (f32; Qwen2 also as bf16);
  * reference outputs from PyTorch `transformers`: logits of every prompt position and a greedy
    32-token continuation (f32), in reference.safetensors + reference.json;
  * GGUF files of the same weights written with the `gguf` package: q8_0 and q4_0 for Qwen2
    (arch qwen2, NEOX rope, no q/k permutation) and q8_0 for LLaMA (arch llama, q/k permuted
    as llama.cpp's convert_hf_to_gguf.py does), with the tokenizer in tokenizer.ggml.* metadata.

Run from the repository root:  python3 tools/make_llm_fixtures.py
Output: models/tests/fixtures/llm/{tokenizer.json,qwen2,qwen2_bf16,llama,*.gguf}
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
import gguf

OUT = os.path.join("models", "tests", "fixtures", "llm")
VOCAB = 512
SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<s>", "</s>",
    "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
]
CORPUS = [
    "USER: <Img></Img> What is happening in the video?\nASSISTANT: A dog is barking at a car.",
    "The camera shows a street. A person walks past while music plays in the background.",
    "What sound do you hear? I hear a siren, then people talking near the door.",
    "Describe the scene in one sentence. Two birds sit on a wire and a train passes.",
    "Is anyone speaking? Yes, a woman is speaking while a baby cries in the next room.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;'\"()[]{}<>/-_=+*&^%$#@",
    "system user assistant You are a helpful assistant that watches and listens to live video.",
] * 20
PROMPT = "<|im_start|>user\nWhat is happening in the video?<|im_end|>\n<|im_start|>assistant\n"
N_NEW = 32
SCALE = float(os.environ.get("FIXTURE_SCALE", "0.12"))


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def scale_init(model, std):
    # Default init (std 0.02) gives near-uniform logits whose greedy argmax hinges on ties;
    # larger weights give clear margins so implementations can be compared token for token.
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:  # RMSNorm weights around 1
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)


def dequantized_reference(model_cls, cfg, path, ids, n_head, n_kv):
    """Reference for a GGUF file: transformers run on the file's dequantised weights (q/k rows
    un-permuted for llama arch), so quantisation of the weights is not counted as a mismatch."""
    inv = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    per = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    r = gguf.GGUFReader(path)
    sd = {}
    for t in r.tensors:
        p = t.name.split(".")
        name = (f"model.layers.{p[1]}.{per[p[2]]}.{p[3]}" if p[0] == "blk"
                else inv[p[0]] + "." + p[1])
        w = gguf.quants.dequantize(t.data, t.tensor_type).copy()
        if model_cls is LlamaForCausalLM and name.endswith(("q_proj.weight", "k_proj.weight")):
            h = n_head if "q_proj" in name else n_kv
            w = w.reshape(h, w.shape[0] // h // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        sd[name] = torch.tensor(w)
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    m = model_cls(cfg).float()
    m.load_state_dict(sd)
    m.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        logits = m(x).logits[0].float().contiguous()
        out = m.generate(x, do_sample=False, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                         eos_token_id=None, pad_token_id=0)
    greedy = out[0, len(ids):].tolist()
    stem = path[: -len(".gguf")]
    save_file({"logits": logits}, stem + ".reference.safetensors")
    with open(stem + ".reference.json", "w") as f:
        json.dump({"prompt": PROMPT, "prompt_ids": ids, "greedy": greedy}, f, indent=1)
    print(os.path.basename(path), "dequantised greedy", greedy)


def reference(model, ids, name):
    model.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        logits = model(x).logits[0].float().contiguous()
        out = model.generate(
            x, do_sample=False, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
            eos_token_id=None, pad_token_id=0,
        )
    greedy = out[0, len(ids):].tolist()
    assert len(greedy) == N_NEW
    d = os.path.join(OUT, name)
    save_file({"logits": logits}, os.path.join(d, "reference.safetensors"))
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"prompt": PROMPT, "prompt_ids": ids, "greedy": greedy}, f, indent=1)
    print(name, "greedy", greedy)
    return greedy


def permute_qk(w, n_head, n_head_kv=None):
    # Same as llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF half-rotation layout ->
    # GGML interleaved-pair layout, so that rope mode NORM (interleaved) applies.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def rope_theta(cfg):
    # transformers >= 5 keeps it in rope_parameters; older versions at the top level.
    rp = getattr(cfg, "rope_parameters", None)
    if rp and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(cfg.rope_theta)


def write_gguf(path, arch, cfg, sd, tok, qtype, permute):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"sensorium-tiny-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(rope_theta(cfg))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(int(qtype))
    # Tokenizer metadata, GPT-2 style byte-level BPE as llama.cpp expects.
    tj = json.loads(tok.to_str())
    vocab = tj["model"]["vocab"]
    tokens = [None] * VOCAB
    for t, i in vocab.items():
        tokens[i] = t
    for a in tj["added_tokens"]:
        tokens[a["id"]] = a["content"]
    special = {a["id"] for a in tj["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # the fixture tokenizer uses the GPT-2 regex
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(VOCAB)])
    w.add_token_merges(merges)
    bos = "<|endoftext|>" if arch == "qwen2" else "<|begin_of_text|>"
    w.add_bos_token_id(tok.token_to_id(bos))
    w.add_eos_token_id(tok.token_to_id("<|im_end|>" if arch == "qwen2" else "<|eot_id|>"))
    w.add_add_bos_token(arch != "qwen2")

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"model.layers.{i}.{hf}.{kind}"] = f"blk.{i}.{gg}.{kind}"
    for hf_name, t in sd.items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        a = t.float().numpy()
        if permute and hf_name.endswith("q_proj.weight"):
            a = permute_qk(a, cfg.num_attention_heads)
        if permute and hf_name.endswith("k_proj.weight"):
            a = permute_qk(a, cfg.num_attention_heads, cfg.num_key_value_heads)
        a = np.ascontiguousarray(a)
        if a.ndim == 2:
            q = gguf.quants.quantize(a, qtype)
            w.add_tensor(names[hf_name], q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(names[hf_name], a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    tok = build_tokenizer()
    tok.save(os.path.join(OUT, "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    print("prompt ids", ids)

    torch.manual_seed(0)
    qcfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
        use_sliding_window=False, torch_dtype="float32",
    )
    qwen = Qwen2ForCausalLM(qcfg).float()
    scale_init(qwen, SCALE)
    qwen.tie_weights()
    d = os.path.join(OUT, "qwen2")
    qwen.save_pretrained(d, safe_serialization=True)
    shutil.copy(os.path.join(OUT, "tokenizer.json"), d)
    reference(qwen, ids, "qwen2")

    # bf16 checkpoint of the same model; reference = f32 compute on the bf16-rounded weights.
    d = os.path.join(OUT, "qwen2_bf16")
    qwen_bf = Qwen2ForCausalLM(qcfg)
    qwen_bf.load_state_dict(qwen.state_dict())
    qwen_bf = qwen_bf.to(torch.bfloat16)
    qwen_bf.save_pretrained(d, safe_serialization=True)
    shutil.copy(os.path.join(OUT, "tokenizer.json"), d)
    qwen_ref = Qwen2ForCausalLM(qcfg).float()
    qwen_ref.load_state_dict({k: v.float() for k, v in qwen_bf.state_dict().items()})
    reference(qwen_ref, ids, "qwen2_bf16")

    torch.manual_seed(1)
    lcfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|eot_id|>"), torch_dtype="float32",
    )
    llama = LlamaForCausalLM(lcfg).float()
    scale_init(llama, SCALE)
    d = os.path.join(OUT, "llama")
    llama.save_pretrained(d, safe_serialization=True)
    shutil.copy(os.path.join(OUT, "tokenizer.json"), d)
    reference(llama, ids, "llama")

    # LLaMA 3.1 rope scaling on the same weights (config + reference only; the Rust test takes
    # model.safetensors from llama/). original_max_position_embeddings = 64 makes the scaled,
    # smoothed and untouched frequency bands all occur with head_dim 16.
    l3cfg = LlamaConfig(**{k: v for k, v in lcfg.to_dict().items()
                           if k not in ("rope_parameters", "rope_scaling", "rope_theta")})
    l3cfg.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64}
    llama3 = LlamaForCausalLM(l3cfg).float()
    llama3.load_state_dict(llama.state_dict())
    d = os.path.join(OUT, "llama_rope_llama3")
    llama3.save_pretrained(d, safe_serialization=True)
    os.remove(os.path.join(d, "model.safetensors"))
    reference(llama3, ids, "llama_rope_llama3")

    Q = gguf.GGMLQuantizationType
    qsd = qwen.state_dict()
    write_gguf(os.path.join(OUT, "qwen2-q8_0.gguf"), "qwen2", qcfg, qsd, tok, Q.Q8_0, False)
    write_gguf(os.path.join(OUT, "qwen2-q4_0.gguf"), "qwen2", qcfg, qsd, tok, Q.Q4_0, False)
    write_gguf(os.path.join(OUT, "llama-q8_0.gguf"), "llama", lcfg, llama.state_dict(), tok,
               Q.Q8_0, True)
    dequantized_reference(Qwen2ForCausalLM, qcfg, os.path.join(OUT, "qwen2-q8_0.gguf"), ids, 4, 2)
    dequantized_reference(Qwen2ForCausalLM, qcfg, os.path.join(OUT, "qwen2-q4_0.gguf"), ids, 4, 2)
    dequantized_reference(LlamaForCausalLM, lcfg, os.path.join(OUT, "llama-q8_0.gguf"), ids, 4, 2)
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.getsize(p):>9} {p}")


if __name__ == "__main__":
    main()
