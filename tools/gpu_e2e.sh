#!/usr/bin/env bash
# End to end on a GPU host (no GStreamer, no Rust there): the binary built with
#   cargo build --release -p sensorium --no-default-features
# runs one synthetic stream through the whole model stack (committed tiny Whisper / CLIP /
# Qwen2 fixtures, a seeded random Q-Former of hidden size 256) with the Q-Former on the CPU
# and then on CUDA (our NVRTC kernels), and compares the window lines: the same windows,
# Q-Former token norms within 1e-4 relative, the same answers.
# Usage: tools/gpu_e2e.sh [BINARY] [OUTDIR]   (run from the repository root)
set -euo pipefail
BIN=${1:-.dev/sensorium}
OUT=${2:-${OUT:-/tmp/gpu_e2e}}
mkdir -p "$OUT"
cfg="$OUT/gpu_e2e.toml"
cat > "$cfg" <<TOML
[engine]
fps = 2.0
width = 64
height = 48
window = 10
stride = 10

[[stream]]
name = "gen"
source = { kind = "synthetic", is_live = false, duration_s = 30.0 }

[models]
audio = "models/tests/fixtures/whisper80"
vision = "models/tests/fixtures/clip"
random = true
seed = 11
init_std = 0.05
visual_slots = "pool"
slots = 4
hidden_size = 256
layers = 2
heads = 4
queries = 8

[llm]
model = "models/tests/fixtures/llm/qwen2"
max_tokens = 6
[[llm.question]]
text = "What is happening?"
every_windows = 1
TOML
for dev in cpu cuda; do
  start=$(date +%s%N)
  "$BIN" run --config "$cfg" --device "$dev" --output "$OUT/$dev.jsonl" > "$OUT/$dev.out" 2> "$OUT/$dev.err"
  end=$(date +%s%N)
  echo "$dev: $(wc -l < "$OUT/$dev.jsonl") lines in $(( (end - start) / 1000000 )) ms; $(grep -m1 'Q-Former on' "$OUT/$dev.err")"
done
python3 - "$OUT/cpu.jsonl" "$OUT/cuda.jsonl" <<'PY'
import json, sys
def load(path):
    lines = [json.loads(l) for l in open(path)]
    # Answers are written when the LLM finishes, interleaved with later windows: compare
    # windows by index and answers in their order.
    windows = sorted((l for l in lines if "qformer" in l), key=lambda l: l["index"])
    answers = [(l["t_end_ns"], l["answer"]) for l in lines if "answer" in l]
    return windows, answers
wa, aa = load(sys.argv[1])
wb, ab = load(sys.argv[2])
assert len(wa) == len(wb) and len(wa) > 0, (len(wa), len(wb))
worst = 0.0
for x, y in zip(wa, wb):
    for k in ("index", "t_start", "t_end", "frames", "audio_samples"):
        assert x[k] == y[k], (k, x[k], y[k])
    nx, ny = x["qformer"]["norm"], y["qformer"]["norm"]
    worst = max(worst, abs(nx - ny) / max(abs(nx), 1e-12))
assert aa == ab, (aa, ab)
print(f"{len(wa)} windows and {len(aa)} answers identical; worst Q-Former norm rel diff {worst:.2e}")
assert worst <= 1e-4, worst
PY

# Throughput: a FAVOR-width Q-Former (hidden 768, 2 layers, 32 queries) sliding one frame
# per window (stride 1) over 5 minutes of synthetic stream, no LLM: windows per second of
# the whole binary (sources, encoders on the CPU, Q-Former on the device, sink).
tp="$OUT/throughput.toml"
sed -e 's/^stride = 10/stride = 1/' -e 's/duration_s = 30.0/duration_s = 300.0/' \
    -e 's/^slots = 4/slots = 8/' -e 's/^hidden_size = 256/hidden_size = 768/' \
    -e 's/^heads = 4/heads = 8/' -e 's/^queries = 8/queries = 32/' -e 's/^init_std = 0.05/init_std = 0.02/' \
    -e '/^\[llm\]/,$d' "$cfg" > "$tp"
for dev in cpu cuda; do
  start=$(date +%s%N)
  "$BIN" run --config "$tp" --device "$dev" --output "$OUT/tp-$dev.jsonl" 2> "$OUT/tp-$dev.err"
  end=$(date +%s%N)
  n=$(wc -l < "$OUT/tp-$dev.jsonl")
  ms=$(( (end - start) / 1000000 ))
  echo "throughput $dev: $n windows in $ms ms = $(( n * 1000 / ms )) windows/s"
done
python3 - "$OUT/tp-cpu.jsonl" "$OUT/tp-cuda.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
a = sorted(a, key=lambda l: l["index"]); b = sorted(b, key=lambda l: l["index"])
assert [l["index"] for l in a] == [l["index"] for l in b]
worst = max(abs(x["qformer"]["norm"] - y["qformer"]["norm"]) / abs(x["qformer"]["norm"])
            for x, y in zip(a, b))
print(f"throughput runs: {len(a)} windows, worst Q-Former norm rel diff {worst:.2e}")
assert worst <= 1e-4, worst
PY
