# The README's two commands: `make run` (set up + the whole DAG end to end on embedded defaults)
# and `make test` (set up + the test suite). Everything else is a helper target.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PRESET  ?= small
# Subprocesses (KFP tasks, the Triton python stub) may start without a locale; read text as UTF-8 anyway.
export PYTHONUTF8 := 1
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: setup system-deps run test test-all compile images smoke-images clean-data help pretrain

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	# Debian's chromium for the viewer's browser test (Playwright's own browser download is blocked here).
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	# torch FIRST from the CPU wheel on disk: anything that pulls torch later would fetch a CUDA build.
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==2.13.0" "numpy<2"
	# deepspeed is a source package that imports torch at build time.
	$(VPY) -m pip install -q --no-build-isolation "deepspeed>=0.19,<0.20"
	$(VPY) -m pip install -q -e ".[model-io,annotate,train,serve,pipelines,dev]"
	# scenedetect's deps would pull GUI OpenCV 5 + numpy 2; fla's would pull the triton compiler.
	$(VPY) -m pip install -q --no-deps "scenedetect==0.7.*" "flash-linear-attention==0.6.0"
	# DeepSpeed JIT-compiles its CPU shared-memory comm op on first use (about 1 min on 2 cores): build it once per
	# machine here, into the directory components/train/launch.py pins, not inside the first training run or test.
	@echo "building DeepSpeed's CPU comm op (once per machine)"; \
	  TORCH_EXTENSIONS_DIR=$${TORCH_EXTENSIONS_DIR:-$$HOME/.cache/torch_extensions} $(VPY) -c \
	  "from deepspeed.accelerator import get_accelerator; get_accelerator().create_op_builder('ShareMemCommBuilder').load()" \
	  > $(VENV)/deepspeed-ops.log 2>&1 || { tail -20 $(VENV)/deepspeed-ops.log; exit 1; }
	@rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP) system-deps  ## create .venv with every extra + the system packages the tests use (idempotent)

# Debian packages: PostgreSQL for the MLflow-on-PostgreSQL test (tests/infra); buildah/podman/debootstrap
# for `make images`. Installed only when missing (needs root or sudo).
SYSTEM_PKGS := postgresql buildah podman debootstrap
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
system-deps:  ## apt-get install the system packages above when any is missing
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

run: setup  ## run the whole DAG locally (KFP local runner, MLflow/SQLite, DVC, Triton) on PRESET
	$(VPY) -m pipelines run --local --preset $(PRESET)

# The base checkpoint `make run` can fine-tune (params.yaml train.init: assets/base/$(PRESET)): this project's
# own ingest -> annotate -> vae -> train on a seed make run never uses; commands, seeds and sizes are recorded
# in assets/base/$(PRESET)/pretrain.json. Hours on 2 CPU cores at the default budget. PRETRAIN_INIT=assets/base/small
# continues the shipped base for PRETRAIN_STEPS more steps (its VAE kept; pretrain.json nests the earlier record).
PRETRAIN_STEPS ?= 9250
PRETRAIN_CLIPS ?= 128
PRETRAIN_SEED  ?= 1000
PRETRAIN_INIT  ?=
PRETRAIN_DECAY ?= 0
pretrain: setup  ## regenerate the base checkpoint assets/base/PRESET (see components/train/pretrain.py)
	$(VPY) -m components.train.pretrain --preset $(PRESET) --clips $(PRETRAIN_CLIPS) --seed $(PRETRAIN_SEED) --steps $(PRETRAIN_STEPS) \
		--out assets/base/$(PRESET) --work build/pretrain/$(PRESET) $(if $(PRETRAIN_INIT),--init $(PRETRAIN_INIT)) --lr-decay-steps $(PRETRAIN_DECAY)

# One OpenMP thread per test process: the tests run tiny models, where thread start-up costs more than it
# saves. One xdist worker per core (at most 4: several tests start their own subprocesses — Triton, KFP
# tasks, torchrun), each taking whole files so module fixtures (the local DAG run) are built once.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
test: setup  ## the test suite CI runs (slow cases included), TEST_WORKERS processes in parallel
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

test-fast: setup  ## everything but the slow cases
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

compile: setup  ## compile the KFP pipelines to versioned IR YAML under build/pipelines
	$(VPY) -m pipelines compile --out build/pipelines

# Step images without a registry (infra/build_image.sh). DEBIAN_MIRROR is a setting (default: the first mirror
# of this machine's apt sources); TORCH_INDEX= (empty) builds with the CPU torch wheel, e.g. for the smoke run.
DEBIAN_MIRROR ?= $(shell sed -n 's/^URIs: *//p;s/^deb  *\(http[^ ]*\) .*/\1/p' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -1)
TORCH_INDEX   ?= https://download.pytorch.org/whl/cu128
IMAGES        ?= pipelines annotate train serve
images: system-deps  ## build the step images with buildah (debootstrap base) into build/images/*.tar
	DEBIAN_MIRROR=$(DEBIAN_MIRROR) TORCH_INDEX=$(TORCH_INDEX) infra/build_image.sh $(IMAGES)

smoke-images: setup  ## run the serve image's Triton with buildah run and answer one request (after `make images`)
	PYTHON=$(VPY) infra/smoke_serve_image.sh

clean-data:  ## remove local data, MLflow store and Triton repository
	rm -rf data outputs build
