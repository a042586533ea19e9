"""Calibration report: a score histogram with the chosen threshold and fitted tail (PNG), and the JSON.

Drawn with OpenCV only (edge side: no matplotlib). Both files are written atomically (temporary
file in the same directory, fsync, ``os.replace``) so a reader never sees half a report.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from appliance.storage import write_atomic
from calibration.thresholds import CalibrationResult, gpd_survival, running_min

WIDTH, HEIGHT = 900, 520
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 80, 30, 60, 70
FONT = cv2.FONT_HERSHEY_SIMPLEX


def render_histogram(
    result: CalibrationResult, sequences: Sequence[np.ndarray], bins: int = 60
) -> np.ndarray:
    """BGR image: log10(1 + count) histogram of window scores, threshold line, GPD tail (if fitted)."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    scores = np.concatenate([np.asarray(s, np.float64).ravel() for s in sequences])
    scores = scores[np.isfinite(scores)]
    lo = float(min(scores.min(), result.threshold)) if len(scores) else 0.0
    hi = float(max(scores.max(), result.threshold)) if len(scores) else 1.0
    pad = 0.03 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    ymax = max(np.log10(1 + counts.max(initial=1)), 1.0)
    x0, x1, y0, y1 = MARGIN_L, WIDTH - MARGIN_R, HEIGHT - MARGIN_B, MARGIN_T

    def px(v: float) -> int:
        return round(x0 + (v - lo) / (hi - lo) * (x1 - x0))

    def py(c: float) -> int:
        return round(y0 - min(c, ymax) / ymax * (y0 - y1))

    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            cv2.rectangle(img, (px(a), py(np.log10(1 + c))), (max(px(b) - 1, px(a)), y0), (200, 150, 90), -1)
    cv2.line(img, (x0, y0), (x1, y0), (0, 0, 0), 1)
    cv2.line(img, (x0, y0), (x0, y1), (0, 0, 0), 1)
    for k in range(int(ymax) + 1):
        cv2.line(img, (x0 - 5, py(k)), (x0, py(k)), (0, 0, 0), 1)
        cv2.putText(img, f"1e{k}", (x0 - 50, py(k) + 5), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for v in np.linspace(lo, hi, 7):
        cv2.line(img, (px(v), y0), (px(v), y0 + 5), (0, 0, 0), 1)
        cv2.putText(img, f"{v:.0f}", (px(v) - 15, y0 + 22), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "window score", (WIDTH // 2 - 50, HEIGHT - 20), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "windows (log)", (5, MARGIN_T - 15), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if result.gpd:
        # Fitted tail, as expected windows per bin: the alarm-peak GPD is scaled to the histogram of
        # the N-window running minimum above the base level (the statistic it describes).
        g = result.gpd
        mins = np.concatenate([running_min(s, result.start_windows) for s in sequences])
        n_above = int(np.sum(mins > g["base"]))
        pts = []
        for a, b in itertools.pairwise(edges):
            if b <= g["base"]:
                continue
            a = max(a, g["base"])
            mass = gpd_survival(a - g["base"], g["scale"], g["shape"]) - gpd_survival(
                b - g["base"], g["scale"], g["shape"]
            )
            expect = n_above * float(mass)
            pts.append((px((a + b) / 2), py(np.log10(1 + expect))))
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, (40, 160, 40), 2, cv2.LINE_AA)
            cv2.putText(
                img,
                f"GPD tail (xi={g['shape']:.2f}, sigma={g['scale']:.1f})",
                (x1 - 330, MARGIN_T + 40),
                FONT,
                0.5,
                (40, 140, 40),
                1,
                cv2.LINE_AA,
            )
    tx = px(result.threshold)
    cv2.line(img, (tx, y0), (tx, y1), (0, 0, 220), 2)
    cv2.putText(
        img,
        f"threshold {result.threshold:.2f}",
        (min(tx + 5, x1 - 170), y1 + 15),
        FONT,
        0.5,
        (0, 0, 220),
        1,
        cv2.LINE_AA,
    )
    title = (
        f"{result.method}: {result.target_alarms_per_hour:g} alarms/h target, {result.windows} windows, "
        f"{result.footage_minutes:.1f} min, {result.tracks} tracks"
    )
    cv2.putText(img, title, (MARGIN_L, 28), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_report(
    result: CalibrationResult, sequences: Sequence[np.ndarray], png_path: str | Path, json_path: str | Path
) -> None:
    """Write the histogram PNG and the JSON summary (``result.to_dict()``), each atomically."""
    ok, png = cv2.imencode(".png", render_histogram(result, sequences))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    write_atomic(Path(png_path), png.tobytes())
    write_atomic(Path(json_path), (json.dumps(result.to_dict(), indent=2) + "\n").encode())
