"""Training gives bit-identical weights for one seed whatever the machine's or the caller's threads.

Why: torch defaults to one thread per core, and float sums split over a different number of threads
round differently, so the same command gave other weights (and another AUROC than the README's) on
a machine with another core count, or in a process that had changed its thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the [export] extra")

from export.datasets import render_sequences, urfd_split  # noqa: E402
from export.models import ModelConfig  # noqa: E402
from export.train import TrainConfig, reproducible, train_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason=f"real data not found at {DATA}")


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def urfd_train():
    return render_sequences(urfd_split(DATA).train)  # all 16 videos: 4 of them gave equal weights


@needs_data
def test_training_gives_the_same_weights_whatever_thread_count_the_caller_set(urfd_train):
    cfg = TrainConfig(epochs=1, seed=5)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what torch picks by itself on a 2-core machine
        a = train_model(ModelConfig(), cfg, urfd_train, progress=False)
        torch.set_num_threads(1)
        b = train_model(ModelConfig(), cfg, urfd_train, progress=False)
        assert torch.get_num_threads() == 1, "training must give the caller its thread count back"
    finally:
        torch.set_num_threads(saved)
    assert a.history == b.history
    assert _same_weights(a.model.state_dict(), b.model.state_dict())


def test_reproducible_restores_the_callers_settings_and_refuses_zero_threads():
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with reproducible(seed=1, threads=1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        first = torch.rand(3)
    with reproducible(seed=1, threads=1):
        assert torch.equal(torch.rand(3), first)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == saved
    with pytest.raises(ValueError, match="threads"), reproducible(seed=1, threads=0):
        pass


@needs_data
def test_train_command_writes_identical_weights_on_machines_with_different_core_counts(tmp_path):
    """Two runs of ``appliance-export train`` whose torch defaults differ (1 and 2 threads, as on a
    1- and a 2-core machine) write the same weights."""
    paths = []
    for threads in (1, 2):
        out = tmp_path / f"omp{threads}.pt"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", "export", "train", "--dataset", "urfd", "--data", str(DATA)]
        command += ["--model", "lstm_vae", "--epochs", "1", "--seed", "3", "--out", str(out)]
        subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        paths.append(out)
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in paths)
    assert _same_weights(a["state_dict"], b["state_dict"])
    assert a["train_config"]["threads"] == 1
