"""Load both benchmark splits once and cache body-graph keypoints (N,15,3) + labels to .npz."""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np

from appliance.pose.layouts import to_body_graph
from export.datasets import load_split

HERE = Path(__file__).resolve().parent
DATA = Path("/work/shared/data")


def cache_path(name: str) -> Path:
    return HERE / "cache" / f"{name}.pkl"


def load_cached(name: str, data_dir: Path = DATA) -> dict:
    """{'classes': {...}, 'train'|'val'|'test': [dict(name, body (N,15,3), labels, width, height, action)]}"""
    p = cache_path(name)
    if p.exists():
        return pickle.loads(p.read_bytes())
    split = load_split(name, data_dir)
    out = {"classes": dict(split.classes)}
    for part in ("train", "val", "test"):
        out[part] = [
            dict(
                name=s.name,
                body=to_body_graph(s.keypoints, s.layout),
                labels=np.asarray(s.labels if s.labels is not None else np.zeros(len(s)), np.int64),
                width=s.width,
                height=s.height,
                action=s.meta.get("action"),
            )
            for s in getattr(split, part)
        ]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps(out))
    return out


if __name__ == "__main__":
    for n in sys.argv[1:] or ["urfd", "mocap"]:
        t = time.time()
        d = load_cached(n)
        print(n, {k: (len(v), sum(len(s["labels"]) for s in v)) for k, v in d.items() if k != "classes"},
              d["classes"], f"{time.time()-t:.1f}s")
