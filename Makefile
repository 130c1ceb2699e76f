PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# What ruff lints and formats; mypy checks the package (its settings are in pyproject.toml).
LINT_PATHS := lipaudit tests bench sample_models

.PHONY: install lint test test-slow demo bench bench-models bench-calibrate bench-recursion clean samples

install: $(STAMP)

# torch goes in first and pinned, so the package's own torch range is already satisfied.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The same three commands as .pre-commit-config.yaml; each stops `make test` before the slow suite.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy lipaudit

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(VENV)/bin/lipaudit check sample_models/cnn.onnx

samples: $(STAMP)
	$(PY) sample_models/make_samples.py

bench: $(STAMP)
	$(PY) bench/conv_norms.py

# Whole backbones at the sizes users train them at: auto vs power iteration vs exact FFT.
bench-models: $(STAMP)
	$(PY) bench/model_norms.py

# The convolution cost model's constants on this machine (see lipaudit/spectral/cost.py).
bench-calibrate: $(STAMP)
	$(PY) bench/calibrate_cost.py

# The network bound: product against the recursion at windows 1-4, on nets trained on the digits.
bench-recursion: $(STAMP)
	$(PY) bench/recursion.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
