# sensorium: `make run` runs the default pipeline, `make test` runs every test.
# System packages (GStreamer) are installed by `make deps` only when missing.

DEB_PACKAGES := libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools \
	gstreamer1.0-x fonts-dejavu-core
TEST_DEB_PACKAGES := vlc-bin vlc-plugin-base chromium chromium-driver nats-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo
CONFIG ?= pipelines/configs/test.toml

.PHONY: bench-deps bench-llm bench-scaling bench-encoders bench-cluster bench-latency bench-streams soak fuzz test-deps deps nvrtc build run test bench bench-train bench-ablations check train-default

# The default model: trained from scratch (seeded) on the scene world, then copied into
# default-model/ (see README, "The default model").
DEFAULT_INIT ?= target/default-init
DEFAULT_STEPS ?= 4200
DEFAULT_PRETRAIN ?= 8000
QUESTIONS := --question "What do you see?" --question "What do you hear?" \
	--question "Describe what you see and hear."

# Installs the Debian packages in $(1) that are missing.
define install_missing
	@missing=""; \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "packages present: $(1)"; \
	fi
endef

deps:
	$(call install_missing,$(DEB_PACKAGES))

# For the tests only: NATS with JetStream (the cluster tests), Chromium (the live view's
# browser tests) and VLC's RTSP server (the second, independent server of the outage harness).
test-deps: deps
	$(call install_missing,$(TEST_DEB_PACKAGES))

build: deps
	$(CARGO) build --release --workspace

# A live scene stream, answered by the default model as it plays (Ctrl-C stops).
run: build
	$(CARGO) run --release -p sensorium -- run --source scene:1 $(QUESTIONS)

# The engine alone on a test pipeline, one JSON line per window.
run-pipeline: build
	$(CARGO) run --release -p sensorium -- run --config $(CONFIG)

train-default: build
	$(CARGO) run --release --example init_default -- $(DEFAULT_INIT) $(DEFAULT_STEPS) $(DEFAULT_PRETRAIN)
	rm -rf $(DEFAULT_INIT)/run
	target/release/sensorium train --config $(DEFAULT_INIT)/train.toml
	for part in audio vision qformer llm; do \
		rm -rf default-model/$$part && cp -r $(DEFAULT_INIT)/run/$$part default-model/$$part; \
	done
	target/release/sensorium eval --bench scenes --questions 1000

# NVRTC alone (no driver, no GPU) lets the kernel tests compile every CUDA kernel to PTX for
# sm_80/sm_90. Optional: without it those tests say why they skipped.
nvrtc:
	@ls $$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | sed 's|$$|/nvidia/*/lib/libnvrtc.so.13|; s| |/nvidia/*/lib/libnvrtc.so.13 |g') >/dev/null 2>&1 \
		&& echo "libnvrtc present" \
		|| python3 -m pip install -q "nvidia-cuda-nvrtc>=13,<14" \
		|| echo "warning: could not install nvidia-cuda-nvrtc; the NVRTC compile check will be skipped"

test: test-deps nvrtc
	$(CARGO) test --workspace --no-fail-fast
	# The build without GStreamer (carried to GPU hosts) must keep compiling, and refuse the
	# GStreamer kinds naming the kind.
	$(CARGO) build -p sensorium --no-default-features
	$(CARGO) run -q -p sensorium --no-default-features -- run --source rtsp://127.0.0.1:9/x \
	  -o /dev/null 2>&1 | grep "source kind 'rtsp' needs GStreamer, which this build"

# The quick set: the synchroniser's criterion bench and the encoders, front end and Q-Former
# side by side with PyTorch (one round; `make bench-encoders` runs three).
bench: bench-deps
	$(CARGO) bench -p sensorium-engine --bench sync_window
	python3 benches/bench_encoders.py --threads 2 --iters 10 --rounds 1

# How the per-window cost grows with the window length, the stride, the number of streams
# and the LLM's context (models/benches/scaling.rs): benches/scaling.json and scaling.png.
bench-scaling:
	$(CARGO) bench -p sensorium-models --bench scaling -- --json $(CURDIR)/benches/scaling.json --plot $(CURDIR)/benches/scaling.png

# Every row of benches/bench_encoders.py, 3 rounds alternating with PyTorch.
bench-encoders: bench-deps
	python3 benches/bench_encoders.py --threads 2 --iters 10 --rounds 3

# The LLM against llama.cpp on the same random Qwen2.5-0.5B-shaped GGUF files
# (benches/bench_llm.py; models/BENCH.md). llama-cpp-python is built from source by pip with
# llama.cpp's AMX paths off: its AMX q4_0 repack crashes on machines with AMX (seen with
# 0.3.36); the AVX-512/VNNI paths it would use anyway stay on.
LLAMA_CMAKE_ARGS := -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_NATIVE=ON
bench-llm:
	python3 -c 'import llama_cpp, numpy' 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		python3 -m pip install -q --no-binary llama-cpp-python llama-cpp-python numpy
	python3 benches/bench_llm.py --rounds 3 --json benches/llm.json

# The peers' Python side (PyTorch, transformers, Pillow for CLIP's image processor), from pip
# when missing.
bench-deps:
	python3 -c 'import torch, transformers, PIL' 2>/dev/null || python3 -m pip install -q torch transformers pillow

# Live latency of the whole binary per stage (`sensorium bench`, 30 s each): the engine alone
# and the tiny model stack, on a synthetic and a GStreamer test source; writes
# benches/latency/NAME.json and NAME.png.
BENCH_S ?= 30
bench-latency: build
	for c in synthetic synthetic-models test test-models; do \
		target/release/sensorium bench --config benches/latency/$$c.toml --duration $(BENCH_S) \
			--json benches/latency/$$c.json --plot benches/latency/$$c.png || exit 1; \
	done

# Always on (not in CI): 100 camera outages of up to 10 s against both RTSP servers, and
# the one-hour soak (tests/soak.rs); each prints its table.
SOAK_OUTAGES ?= 100
soak: test-deps
	SENSORIUM_OUTAGES=$(SOAK_OUTAGES) SENSORIUM_MAX_OUTAGE_MS=10000 \
		$(CARGO) test --release --test outages -- --nocapture
	SENSORIUM_SOAK_S=1200 SENSORIUM_SOAK_LIVE_S=600 $(CARGO) test --release --test soak -- --nocapture

# The cluster (needs nats-server): takeover after `kill -9` of a worker at the default lease
# (10 s; 3 workers, the six streams of pipelines/configs/cluster.toml, ROUNDS rounds), then
# one worker's publishing rate (4 streams as fast as they go).
bench-cluster: build test-deps
	ROUNDS=$${ROUNDS:-3} benches/cluster_takeover.sh
	benches/cluster_publish.sh

# The most streams kept at real time, without models and with the default model (CPU per
# stream, peak RSS); several minutes.
bench-streams:
	$(CARGO) test --release --test many_streams -- --ignored --nocapture

# Hostile input, fuzzed (seven properties: configs, raw config bytes, synchroniser inputs,
# GGUF, safetensors, manifests, HTTP requests) with FUZZ_CASES cases each; `make test` runs
# the same properties with a small budget.
FUZZ_CASES ?= 150000
fuzz:
	SENSORIUM_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p sensorium-engine --test hostile_input
	SENSORIUM_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p sensorium-models --test hostile_files
	SENSORIUM_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p sensorium-server --test hostile_http

# Training step vs PyTorch + PEFT (benches/TRAINING.md); installs torch, transformers, peft.
# FAVOR's ablations (see benches/ablations.md): the default recipe once per variant, at the
# budget below; one training run per variant.
ABLATION_STEPS ?= 600
ABLATION_PRETRAIN ?= 500
ABLATION_STREAMS ?= 600
bench-ablations: build
	$(CARGO) run --release --example init_default -- $(DEFAULT_INIT) $(DEFAULT_STEPS) $(DEFAULT_PRETRAIN)
	$(CARGO) run --release --example ablations -- $(DEFAULT_INIT) $(ABLATION_STEPS) \
		$(ABLATION_PRETRAIN) $(ABLATION_STREAMS) 1000

bench-train:
	python3 -c 'import torch, transformers, peft' 2>/dev/null || python3 -m pip install -q torch transformers peft
	python3 benches/train_vs_torch.py --steps 3 --layers 24

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p sensorium --no-default-features --bins -- -D warnings
	python3 tools/import_cycles.py . app engine pipelines models server cluster kernels
