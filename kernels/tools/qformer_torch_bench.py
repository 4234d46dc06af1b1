"""PyTorch baselines for one causal Q-Former layer at FAVOR shapes (bf16), the same math as
sensorium-kernels' composed layer: eager attention with an explicit block-causal mask, and
torch SDPA with the boolean mask under each backend (flash / efficient / cuDNN / math),
reporting which backends actually ran. Also measures the bf16 GEMM and copy ceilings.
Usage: python3 qformer_torch_bench.py --json out.json [--batches 1,4,16,64,256]
"""
import argparse, json, math, statistics
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

ap = argparse.ArgumentParser()
ap.add_argument("--json")
ap.add_argument("--batches", default="1,4,16,64,256")
args = ap.parse_args()
dev, dt = "cuda", torch.bfloat16
torch.manual_seed(0)
FR, SPF, DS, HS, FS, DQ, HQ, FQ, NQ = 10, 32, 1536, 12, 3072, 768, 12, 3072, 32
S = FR * SPF


def time_ms(fn, warm=3, reps=20):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def lin(o, i):
    return (torch.rand(o, i, device=dev, dtype=dt) * 2 - 1) / math.sqrt(i), (torch.rand(o, device=dev, dtype=dt) - 0.5) * 0.2


W = dict(sqkv=lin(3 * DS, DS), so=lin(DS, DS), sf1=lin(FS, DS), sf2=lin(DS, FS), qqkv=lin(3 * DQ, DQ), qo=lin(DQ, DQ),
         xq=lin(DQ, DQ), xkv=lin(2 * DQ, DS), xo=lin(DQ, DQ), qf1=lin(FQ, DQ), qf2=lin(DQ, FQ))
LN = {k: (torch.ones(d, device=dev, dtype=dt), torch.zeros(d, device=dev, dtype=dt))
      for k, d in dict(s1=DS, s2=DS, q1=DQ, x=DQ, q2=DQ).items()}
fr = torch.arange(S, device=dev) // SPF
causal_mask = fr[None, :] <= fr[:, None]  # [S, S] True = attend (past-only)


def eager_attn(q, k, v, mask):
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return (s.softmax(-1) @ v.float()).to(q.dtype)


def heads(x, h):
    b, n, d = x.shape
    return x.view(b, n, h, d // h).transpose(1, 2)


def merge(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def layer(x, qs, keymask, attn):
    B = x.shape[0]
    qkv = F.linear(x, *W["sqkv"]).split(DS, -1)
    a = merge(attn(*(heads(t, HS) for t in qkv), causal_mask))
    x1 = F.layer_norm(F.linear(a, *W["so"]) + x, (DS,), *LN["s1"], eps=1e-12)
    x2 = F.layer_norm(F.linear(F.gelu(F.linear(x1, *W["sf1"])), *W["sf2"]) + x1, (DS,), *LN["s2"], eps=1e-12)
    qkv = F.linear(qs, *W["qqkv"]).split(DQ, -1)
    a = merge(attn(*(heads(t, HQ) for t in qkv), None))
    q1 = F.layer_norm(F.linear(a, *W["qo"]) + qs, (DQ,), *LN["q1"], eps=1e-12)
    cq = heads(F.linear(q1, *W["xq"]), HQ)
    k, v = (heads(t, HQ) for t in F.linear(x2, *W["xkv"]).split(DQ, -1))
    km = keymask.repeat_interleave(SPF, dim=1)[:, None, None, :]  # [B,1,1,S]
    a = merge(attn(cq, k, v, km))
    q2 = F.layer_norm(F.linear(a, *W["xo"]) + q1, (DQ,), *LN["x"], eps=1e-12)
    q3 = F.layer_norm(F.linear(F.gelu(F.linear(q2, *W["qf1"])), *W["qf2"]) + q2, (DQ,), *LN["q2"], eps=1e-12)
    return x2, q3


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
n = 8192
a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
ms = time_ms(lambda: a @ b, 3, 10)
res["gemm_bf16_tflops"] = 2 * n ** 3 / (ms * 1e-3) / 1e12
src = torch.empty(1 << 30, dtype=torch.uint8, device=dev).random_(0, 255)
dst = torch.empty_like(src)
ms = time_ms(lambda: dst.copy_(src), 3, 10)
res["copy_gbps"] = 2 * (1 << 30) / (ms * 1e-3) / 1e9
del a, b, src, dst
print(f"ceiling: torch bf16 GEMM {res['gemm_bf16_tflops']:.1f} TFLOP/s; copy {res['copy_gbps']:.1f} GB/s")

variants = [("torch eager (explicit mask)", eager_attn, None),
            ("torch SDPA auto", sdpa, None),
            ("torch SDPA flash", sdpa, SDPBackend.FLASH_ATTENTION),
            ("torch SDPA efficient", sdpa, SDPBackend.EFFICIENT_ATTENTION),
            ("torch SDPA cuDNN", sdpa, SDPBackend.CUDNN_ATTENTION),
            ("torch SDPA math", sdpa, SDPBackend.MATH)]
for B in [int(t) for t in args.batches.split(",")]:
    x = torch.rand(B, S, DS, device=dev, dtype=dt) * 2 - 1
    qs = torch.rand(B, NQ, DQ, device=dev, dtype=dt) * 2 - 1
    keymask = torch.ones(B, FR, dtype=torch.bool, device=dev)
    for name, fn, backend in variants:
        def run():
            with torch.no_grad():
                if backend is None:
                    return layer(x, qs, keymask, fn)
                with sdpa_kernel([backend]):
                    return layer(x, qs, keymask, fn)
        try:
            ms = time_ms(run, 3, 10 if B >= 64 else 20)
            row = dict(name=name, batch=B, median_ms=ms, ran=True)
        except Exception as e:  # backend refused this mask/shape
            row = dict(name=name, batch=B, median_ms=None, ran=False, why=str(e).splitlines()[0][:160])
        res["rows"].append(row)
        print(f"{name:<30} batch {B:>4}: " + (f"{row['median_ms']:.4f} ms" if row["ran"] else f"did not run: {row['why']}"), flush=True)
    del x, qs
    torch.cuda.empty_cache()
if args.json:
    json.dump(res, open(args.json, "w"), indent=1)
