"""The edge path (appliance/) must work where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_edge_modules_import_and_render_with_torch_unimportable(tmp_path):
    code = (
        _BLOCK_TORCH
        + """
import importlib, pkgutil
import numpy as np
import appliance, calibration
imported = 0
for package in (appliance, calibration):  # every module of the device's packages, whatever the layout
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
            imported += 1
assert imported > 60, imported
from appliance.models.posture_motion_fit import fit
from appliance.pose.layouts import COCO17
from appliance.features.skeleton_map import render_keypoints
kp = np.zeros((3, 17, 3), np.float32)
kp[:, 5] = (300, 200, 1); kp[:, 6] = (340, 200, 1); kp[:, 11] = (305, 300, 1); kp[:, 12] = (335, 300, 1)
maps = render_keypoints(kp, COCO17, (640, 480))
assert maps.shape == (3, 28, 28) and maps.sum() > 0
rng = np.random.default_rng(0)  # the device's own fit of the posture-motion model: numpy only
params = fit(rng.random((300, 30, 78), np.float32), rng.random((100, 30, 78), np.float32))
assert np.isfinite(params.score(rng.random((5, 30, 78), np.float32))).all()
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch import was not blocked")
assert "torch" not in sys.modules
print("ok")
"""
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_edge_packages_do_not_import_torch_anywhere():
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("appliance", "calibration")
        for p in (ROOT / pkg).rglob("*.py")
        if any(line.strip().startswith(("import torch", "from torch")) for line in p.read_text().splitlines())
    ]
    assert offenders == []


def test_default_install_resolves_without_torch(tmp_path):
    # a real resolve of the default (edge) install by pip, against the configured package index
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"numpy", "ai-edge-litert", "opencv-python-headless", "paho-mqtt"} <= names
    # one inference runtime: LiteRT runs the pose models and the scorer; onnxruntime is the [onnx] extra
    assert not {n for n in names if n.startswith(("torch", "nvidia", "tensorflow", "jax", "onnxruntime"))}


def test_default_install_does_not_depend_on_torch():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.lower().startswith("torch") for dep in project["dependencies"])
    assert "torch==2.13.0" in project["optional-dependencies"]["export"]
