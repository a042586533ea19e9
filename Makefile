# One entry point per job; every target sets up what it needs first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DATA   ?= ../shared/data
STAMP   = $(VENV)/.installed

.PHONY: setup reproduce test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

setup: $(STAMP)  ## virtual environment with the edge runtime, training/export extras and test tools

reproduce: setup  ## the paper's AUROC table (LSTM-VAE vs AE vs VAE) on the real sets in $(DATA)
	$(VENV)/bin/appliance-export reproduce --data $(DATA) --out runs/paper

test: setup  ## the test suite
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
