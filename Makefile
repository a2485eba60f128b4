# Every target creates .venv when missing: torch (CPU wheel) first, then the project with a constraints file
# that pins torch to the CPU build, so nothing pulls a multi-GB CUDA torch.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-ui test lint bench clean

setup: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(VENV_STAMP)

demo: setup
	.venv/bin/recsys demo

# the demo, then the predictor and the storefront page stay up (http://127.0.0.1:8000/) until Ctrl-C
demo-ui: setup
	.venv/bin/recsys demo --ui

test: setup
	$(PY) -m pytest

lint: setup
	.venv/bin/ruff check src components pipelines serving tests bench feature_repo
	.venv/bin/ruff format --check src components pipelines serving tests bench feature_repo

bench: setup
	$(PY) -m bench

clean:
	-.venv/bin/recsys db stop
	rm -rf .recsys
