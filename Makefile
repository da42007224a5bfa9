# The README's two commands: `make run` (set up + the whole DAG end to end on embedded defaults)
# and `make test` (set up + the test suite). Everything else is a helper target.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PRESET  ?= small
# Subprocesses (KFP tasks, the Triton python stub) may start without a locale; read text as UTF-8 anyway.
export PYTHONUTF8 := 1
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: setup run test test-all compile clean-data help pretrain

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	# torch FIRST from the CPU wheel on disk: anything that pulls torch later would fetch a CUDA build.
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==2.13.0" "numpy<2"
	# deepspeed is a source package that imports torch at build time.
	$(VPY) -m pip install -q --no-build-isolation "deepspeed>=0.19,<0.20"
	$(VPY) -m pip install -q -e ".[model-io,annotate,train,serve,pipelines,dev]"
	# scenedetect's deps would pull GUI OpenCV 5 + numpy 2; fla's would pull the triton compiler.
	$(VPY) -m pip install -q --no-deps "scenedetect==0.7.*" "flash-linear-attention==0.6.0"
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)  ## create .venv with every extra (idempotent)

run: setup  ## run the whole DAG locally (KFP local runner, MLflow/SQLite, DVC, Triton) on PRESET
	$(VPY) -m pipelines run --local --preset $(PRESET)

# The base checkpoint `make run` can fine-tune (params.yaml train.init: assets/base/$(PRESET)): this project's
# own ingest -> annotate -> vae -> train on a seed make run never uses; commands, seeds and sizes are recorded
# in assets/base/$(PRESET)/pretrain.json. Hours on 2 CPU cores at the default budget.
PRETRAIN_STEPS ?= 3000
PRETRAIN_CLIPS ?= 32
pretrain: setup  ## regenerate the base checkpoint assets/base/PRESET (see components/train/pretrain.py)
	$(VPY) -m components.train.pretrain --preset $(PRESET) --clips $(PRETRAIN_CLIPS) --steps $(PRETRAIN_STEPS) \
		--out assets/base/$(PRESET) --work build/pretrain/$(PRESET)

# One OpenMP thread: the tests run tiny models, where thread start-up costs more than it saves, and
# several of them start subprocesses (Triton, KFP tasks) that would otherwise oversubscribe 2 cores.
test: setup  ## the test suite CI runs (slow cases included)
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q tests

test-fast: setup  ## everything but the slow cases
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q -m "not slow" tests

compile: setup  ## compile the KFP pipelines to versioned IR YAML under build/pipelines
	$(VPY) -m pipelines compile --out build/pipelines

clean-data:  ## remove local data, MLflow store and Triton repository
	rm -rf data outputs build
