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

# pip writes each package's bytecode one file at a time (torch, ray and the rest: 14,000
# files, about 60 s of the install); compileall writes the same files on every core afterwards
# (about 28 s on two). Its one failure, a file of torch's test helpers in Python 3.12 syntax,
# is ignored as pip ignores it: that module fails when imported, as before.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-compile "$(TORCH_PIN)"
	$(PIP) install --quiet --no-compile -e ".[train,dev]" "$(TORCH_PIN)"
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
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
