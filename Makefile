# Every target works from a fresh clone: `install` builds .venv once (stamp file), the rest depend on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARD_WORKERS ?= 2
DEMO_MINUTES ?= 15
DEMO_SEED ?= 0
DEMO_OUT ?= runs/demo

.PHONY: install detect-env lint test shards bench pretrain-smoke finetune-smoke sweep-smoke demo clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e ".[dev,bench]"
	touch $(STAMP)

# `handclr detect`'s MediaPipe 0.10.21 (the last wheel bundling its hand models) pins numpy<2 and its own OpenCV,
# so it gets an environment of its own; the detector runs there as a subprocess.
detect-env: .venv-detect/.installed

.venv-detect/.installed:
	$(PYTHON) -m venv .venv-detect
	.venv-detect/bin/pip install "mediapipe==0.10.21" "decord>=0.6.0"
	touch $@

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest -q

shards: install
	$(BIN)/handclr sample-data --out shards/sample-data
	$(BIN)/handclr shard --recipe shards/sample.yaml --root shards/sample-data --out shards/sample --workers $(SHARD_WORKERS)
	$(BIN)/handclr verify shards/sample --deep
	$(BIN)/handclr shard --recipe shards/freihand_eval.yaml --root shards/sample-data/freihand --out shards/sample-eval \
		--workers $(SHARD_WORKERS)
	$(BIN)/handclr verify shards/sample-eval --deep

pretrain-smoke: shards
	rm -rf runs/smoke
	$(BIN)/python launch/pretrain.py --config launch/configs/smoke.yaml --set checkpoint.dir=runs/smoke
	$(BIN)/python launch/pretrain.py --config launch/configs/smoke.yaml --set checkpoint.dir=runs/smoke \
		--set schedule.max_steps=24 --resume latest

finetune-smoke: pretrain-smoke
	rm -rf runs/finetune_smoke
	$(BIN)/python launch/finetune.py --config launch/configs/finetune_smoke.yaml
	$(BIN)/python launch/evaluate.py --run runs/finetune_smoke --data shards/sample-eval --dataset freihand \
		--out runs/finetune_smoke/evaluation

# label-efficiency curves in miniature: 3 fractions x (smoke encoder, random) x 2 seeds = 12 points, then the plot
# (the sample has 5 FreiHAND ids: below 0.5 no labelled FreiHAND training frame is left)
sweep-smoke: pretrain-smoke
	rm -rf runs/sweep_smoke
	$(BIN)/python launch/sweep.py --config launch/configs/finetune_smoke.yaml --eval-data shards/sample-eval \
		--dataset freihand --fractions 0.5 0.75 1.0 --inits runs/smoke/encoder.safetensors random --seeds 0 1 \
		--out runs/sweep_smoke --set logging.report_to=none --set logging.progress=false

# The synthetic world through the whole pipeline: does pre-training help? (pipeline/demo; ~DEMO_MINUTES on 2 cores;
# a rerun resumes, `rm -rf $(DEMO_OUT)` starts over)
demo: install
	$(BIN)/python launch/demo.py --out $(DEMO_OUT) --minutes $(DEMO_MINUTES) --seed $(DEMO_SEED) --workers $(SHARD_WORKERS)

bench: install
	$(BIN)/python -m benchmarks.sharding
	$(BIN)/python -m benchmarks.stream
	$(BIN)/python -m benchmarks.train_step
	$(BIN)/python -m benchmarks.tracks  # needs ../shared/realdata (the six real hand videos)

clean:
	rm -rf $(VENV) .venv-detect *.egg-info .pytest_cache shards/sample shards/sample-eval shards/sample-data benchmarks/results runs
