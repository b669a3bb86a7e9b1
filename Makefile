# fundgym: two commands do all set-up on a fresh machine.
#   make demo   the main job (creates .venv on first use)
#   make test   lint, type check and the test suite (creates .venv on first use)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The only torch we ever install: the CPU wheel that sits on this machine. Installing it
# first means no dependency (stable-baselines3) can pull a newer, multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[train,dev]" "$(TORCH_PIN)"
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '2.13.0' else 'torch was upgraded to ' + torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fundgym demo

lint: $(STAMP)
	$(VENV)/bin/ruff check envs agents tests benchmarks fundgym/__init__.py fundgym/__main__.py
	$(VENV)/bin/ruff format --check envs agents tests benchmarks fundgym/__init__.py fundgym/__main__.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# While ruff and mypy run, tests/warmup.py compiles the numba kernels once into the cache (in
# two parts at once), so the two pytest workers load them instead of both compiling them on a
# fresh clone. Files go to the workers whole (loadfile) and in collection order (no reorder by
# test count), which tests/conftest.py starts with the longest file, tests/test_wheel.py.
test: $(STAMP)
	@$(PY) -m tests.warmup one-market & w1=$$!; $(PY) -m tests.warmup markets & w2=$$!; \
	$(MAKE) --no-print-directory lint typecheck || { kill $$w1 $$w2 2>/dev/null; exit 1; }; \
	{ wait $$w1 && wait $$w2; } || echo "tests.warmup failed: the tests below say where"; \
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

bench: $(STAMP)
	$(VENV)/bin/fundgym bench core

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
