# Two entry points for a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CACHE   := $(CURDIR)/.cache
# Offline caches inside the project; never the user's home.
export DEEPFACE_HOME   := $(CACHE)/deepface
export TORCH_HOME      := $(CACHE)/torch
export HF_HOME         := $(CACHE)/hf
export MPLCONFIGDIR    := $(CACHE)/mpl
export T2I_DEBIAS_CACHE:= $(CACHE)/t2i_debias
export HF_HUB_OFFLINE  := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TF_CPP_MIN_LOG_LEVEL := 3
# Tests run one torch thread per xdist worker (2 workers keep 2 cores busy). The demo is one process
# and uses every core (t2i_debias/core/threads.py), unless OMP_NUM_THREADS is set in your shell.
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: env sysdeps demo test test-fast lint bench clean toy-models

env: $(STAMP)

# Headless Chromium for the report test (Debian packages). Installed when missing and we are root;
# otherwise that one test skips and says why.
sysdeps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; the report browser test will skip"; \
	  else echo "note: chromium not installed; the report browser test will skip"; fi; \
	fi

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first: these pinned wheels lie on the build machine's disk (CUDA builds, run on CPU).
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q -c requirements/constraints.txt -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) finetune/finetune_sd.py --config configs/toy.toml

# Retrain the shipped toy models (VAE, classifier, bases of seeds 0-2) from their seeds, measure the
# gates on what ships and rewrite docs/results/toy_base.md (about 30 min on 2 cores).
toy-models: $(STAMP)
	$(VPY) -m t2i_debias.toyworld.ship

test: $(STAMP) sysdeps
	$(VPY) -m ruff check .
	# Two workers, one torch thread each: both cores busy (CI has 2). Slow and e2e tests included;
	# loadgroup keeps the real-shape tests (xdist_group "real_shapes") on one worker: one real-size model at
	# a time (<= 10 GB RSS each, tests/test_shapes.py). -rs prints each skip with its reason on one line.
	$(ONE_THREAD) $(VPY) -m pytest -q -rs -p no:cacheprovider --timeout=1800 -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(ONE_THREAD) $(VPY) -m pytest -q -m "not e2e and not slow"

lint: $(STAMP)
	$(VPY) -m ruff check .

bench: $(STAMP)
	for f in bench/bench_*.py; do echo "== $$f"; $(ONE_THREAD) $(VPY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .cache runs
