"""Shared plumbing of the issue #9 scripts: each split's features, cached; and thin adapters that run
the product's own evaluation code on them.

Nothing here computes features, windows, frame scores or AUROC itself: the splits come from
:func:`export.datasets.load_split`, the features from :mod:`appliance.features.motion`, and the
protocol (normal windows, window -> frame scores, pooled and per-type AUROC) from
:mod:`export.motion_eval` / :class:`export.evaluate.Evaluation`, the code behind
``appliance-export compare``. The adapters only keep the scripts' per-sequence dicts
(``name``, ``body`` (N, 15, 3) body-graph keypoints, ``labels``, ``feat`` (N, RAW_DIM) raw features)
and their ``{"auroc", "per_class", "frames"}`` metrics, in which ``results/`` was written.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the repository: docs/research/issue9 -> .
DATA = ROOT.parent / "shared" / "data"  # as the README's commands (../shared/data)
WINDOW = 30
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from appliance.features.motion import sequence_features  # noqa: E402
from appliance.pose.layouts import to_body_graph  # noqa: E402
from export import motion_eval  # noqa: E402
from export.datasets import load_split  # noqa: E402


def load_features(name: str, data_dir: Path = DATA) -> dict:
    """{'classes': {...}, 'train'|'val'|'test': [dict(name, body, labels, feat)]}, cached under cache/
    (git-ignored: derived from the data sets, which are not ours to publish)."""
    p = HERE / "cache" / f"{name}_features.pkl"
    if p.exists():
        return pickle.loads(p.read_bytes())
    split = load_split(name, data_dir)
    out: dict = {"classes": dict(split.classes)}
    for part in ("train", "val", "test"):
        out[part] = []
        for s in getattr(split, part):
            body = to_body_graph(s.keypoints, s.layout)
            labels = np.asarray(s.labels if s.labels is not None else np.zeros(len(s)), np.int64)
            out[part].append(dict(name=s.name, body=body, labels=labels, feat=sequence_features(body)))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps(out))
    return out


def _sequences(seqs: list[dict]) -> list[motion_eval.FeatureSequence]:
    return [motion_eval.FeatureSequence(q["name"], q["feat"], q["labels"]) for q in seqs]


def normal_windows(seqs: list[dict], window: int = WINDOW) -> np.ndarray:
    """(W, window, FEATURE_DIM) normalised windows whose frames are all normal (export.motion_eval)."""
    return motion_eval.normal_windows(_sequences(seqs), window)


def frame_scores(seqs: list[dict], window_score_fn, window: int = WINDOW) -> list[np.ndarray]:
    """window_score_fn((W, window, FEATURE_DIM) normalised windows of one sequence) -> (W,) scores;
    frame scores as the product's evaluation assigns them (export.motion_eval.frame_scores)."""
    return motion_eval.frame_scores(_sequences(seqs), window_score_fn, window)


def metrics(seqs: list[dict], scores: list[np.ndarray], classes: dict[int, str]) -> dict:
    """Pooled and per-class frame AUROC, computed by export.evaluate.Evaluation.metrics."""
    m = motion_eval.metrics("research", _sequences(seqs), scores, classes)
    return {"auroc": m["auroc"], "per_class": m["auroc_per_class"], "frames": m["frames"]}


if __name__ == "__main__":  # build the cache: python docs/research/issue9/common.py [urfd mocap]
    for n in sys.argv[1:] or ["urfd", "mocap"]:
        t = time.time()
        d = load_features(n)
        sizes = {k: (len(v), sum(len(s["labels"]) for s in v)) for k, v in d.items() if k != "classes"}
        print(n, sizes, d["classes"], f"{time.time() - t:.1f}s")
