# One entry point per job; every target sets up what it needs first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DATA   ?= ../shared/data
STAMP   = $(VENV)/.installed

.PHONY: systemd-extra setup pose-onnx demo reproduce bundle bench test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[export,onnx,tflite-export,web,dev]'
	@$(MAKE) --no-print-directory systemd-extra
	$(VENV)/bin/appliance install-models
	$(VENV)/bin/appliance install-web-assets
	touch $(STAMP)

PKG_CONFIG ?= pkg-config

# optional: tried only where it can build, so a bare machine's first run shows no red pip error
systemd-extra:  ## systemd-python (journald fields; sd_notify works without it) where libsystemd-dev is installed
	@if $(PKG_CONFIG) --exists libsystemd 2>/dev/null && command -v cc >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet -e '.[systemd]' 2>/dev/null \
			|| echo "note: systemd-python not built; the appliance speaks sd_notify itself"; \
	else \
		echo "note: systemd-python skipped (optional; needs libsystemd-dev, pkg-config and a C compiler):" \
			"the appliance speaks sd_notify itself"; \
	fi

setup: $(STAMP)  ## virtual environment: edge runtime, LiteRT, training/ONNX/TFLite export, test tools

demo: setup  ## the whole pipeline on the bundled walking clip with the starter model; events to runs/demo/
	$(VENV)/bin/appliance demo --out runs/demo/events.jsonl

reproduce: setup  ## the paper's AUROC table (LSTM-VAE vs AE vs VAE) on the real sets in $(DATA)
	$(VENV)/bin/appliance-export reproduce --data $(DATA) --out runs/paper

CKPT ?= runs/paper/urfd/lstm_vae.pt

$(CKPT): | $(STAMP)
	$(VENV)/bin/appliance-export train --dataset urfd --data $(DATA) --model lstm_vae --out $(CKPT)

bundle: setup $(CKPT)  ## the paper's LSTM-VAE (URFD) as a parity-checked bundle: runs/bundles/urfd-lstm-vae(.tar)
	$(VENV)/bin/appliance-export bundle --checkpoint $(CKPT) --dataset urfd --data $(DATA) \
		--out runs/bundles/urfd-lstm-vae --name urfd-lstm-vae --force

bench: setup $(CKPT)  ## scorer latency/MACs/AUROC per runtime variant
	$(PY) benchmarks/scorer.py --checkpoint $(CKPT) --data $(DATA)

TEST_WORKERS ?= 2

POSE_ONNX_VENV = .venv-pose-onnx
POSE_ONNX = appliance/pose/models/pose_landmark_full.onnx

$(POSE_ONNX): export/pose-onnx-requirements.txt export/pose_onnx_convert.py | $(STAMP)
	$(PYTHON) -m venv $(POSE_ONNX_VENV)
	$(POSE_ONNX_VENV)/bin/python -m pip install --quiet -r export/pose-onnx-requirements.txt
	$(VENV)/bin/appliance-export pose-onnx --python $(POSE_ONNX_VENV)/bin/python

pose-onnx: $(POSE_ONNX)  ## the landmark models in ONNX (accelerators): tf2onnx in its own venv, checked vs LiteRT

test: setup $(POSE_ONNX)  ## the test suite (two pytest-xdist workers, one test file each at a time)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(POSE_ONNX_VENV) runs .pytest_cache
