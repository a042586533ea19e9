"""Calibration report: the JSON (the result and the chart's data) and, where matplotlib is installed
(the ``[render]`` extra, kept off the device install), a PNG drawn from that same data.

The chart has two parts, in plain words: *score per window on this site's normal footage* (a
histogram, log scale, the threshold line exactly at its value and labelled with it, the fitted tail
when there is one) and *alarms per hour at this threshold* (what the detector raises on this footage
at each threshold, replayed, and the fitted tail's estimate beyond it, with the target). The
console draws the same data with uPlot; the PNG is for headless use. Both files are written
atomically, so a reader never sees half a report.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.storage import write_atomic
from calibration.thresholds import CalibrationResult, count_alarms, gpd_survival, running_min

log = logging.getLogger("appliance.calibration")

RATE_POINTS = 60


def chart_data(result: CalibrationResult, sequences: Sequence[np.ndarray], bins: int = 60) -> dict[str, Any]:
    """What the report's chart shows, as plain numbers (the JSON's ``chart``)."""
    seqs = [np.asarray(s, np.float64)[np.isfinite(np.asarray(s, np.float64))] for s in sequences]
    scores = np.concatenate(seqs) if seqs else np.zeros(0)
    lo = float(min(scores.min(), result.threshold)) if len(scores) else result.threshold - 1.0
    hi = float(max(scores.max(), result.threshold)) if len(scores) else result.threshold + 1.0
    pad = 0.03 * (hi - lo or 1.0)
    counts, edges = np.histogram(scores, bins=bins, range=(lo - pad, hi + pad))
    hours = result.footage_minutes / 60.0
    grid = np.linspace(float(np.quantile(scores, 0.5)) if len(scores) else lo, hi + pad, RATE_POINTS)
    replayed = [count_alarms(seqs, float(t), result.start_windows, result.end_windows) / hours for t in grid]
    tail = fitted = None
    if result.gpd:
        g = result.gpd
        # the alarm-peak GPD scaled to the histogram of the N-window running minimum above its base
        mins = np.concatenate([running_min(s, result.start_windows) for s in seqs])
        n_above = int(np.sum(mins > g["base"]))
        centres, expected = [], []
        for a, b in itertools.pairwise(edges):
            if b <= g["base"]:
                continue
            a = max(a, g["base"])
            mass = gpd_survival(a - g["base"], g["scale"], g["shape"]) - gpd_survival(
                b - g["base"], g["scale"], g["shape"]
            )
            centres.append(float((a + b) / 2))
            expected.append(n_above * float(mass))
        tail = {"centres": centres, "expected_windows": expected}
        above = grid >= g["base"]
        fitted = [
            float(g["base_alarms_per_hour"] * gpd_survival(t - g["base"], g["scale"], g["shape"]))
            if ok
            else None
            for t, ok in zip(grid.tolist(), above.tolist(), strict=True)
        ]
    return {
        "threshold": result.threshold,
        "target_alarms_per_hour": result.target_alarms_per_hour,
        "expected_alarms_per_hour": result.expected_alarms_per_hour,
        "method": result.method,
        "footage_minutes": result.footage_minutes,
        "windows": result.windows,
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "tail": tail,
        "rate": {"thresholds": grid.tolist(), "replayed_per_hour": replayed, "fitted_per_hour": fitted},
    }


def draw_chart(data: dict[str, Any]):
    """The report's figure (matplotlib) from :func:`chart_data`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 7.5), dpi=100, layout="constrained")
    hist_ax, rate_ax = fig.subplots(2, 1)
    t = data["threshold"]
    edges, counts = np.asarray(data["histogram"]["edges"]), np.asarray(data["histogram"]["counts"])
    hist_ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#5a8fd0", label="windows")
    hist_ax.set_yscale("log")
    if data["tail"]:
        hist_ax.plot(data["tail"]["centres"], data["tail"]["expected_windows"], color="#2f9e44", lw=2,
                     label="fitted tail (generalised Pareto)")  # fmt: skip
    hist_ax.axvline(t, color="#d62728", lw=2, label=f"threshold {t:.2f}")
    hist_ax.annotate(f"threshold {t:.2f}", (t, 1), xycoords=("data", "axes fraction"), xytext=(4, -14),
                     textcoords="offset points", color="#d62728")  # fmt: skip
    hist_ax.set(
        title="Score per window on this site's normal footage",
        xlabel="window score (higher = more unusual)",
        ylabel="windows (log scale)",
    )
    hist_ax.legend(loc="upper right")
    rate = data["rate"]
    rate_ax.step(rate["thresholds"], rate["replayed_per_hour"], where="post", color="#5a8fd0",
                 label="alarms per hour, replayed on this footage")  # fmt: skip
    if rate["fitted_per_hour"]:
        pts = [(x, y) for x, y in zip(rate["thresholds"], rate["fitted_per_hour"], strict=True) if y]
        if pts:
            rate_ax.plot(*zip(*pts, strict=True), color="#2f9e44", lw=2, label="alarms per hour, fitted tail")
    rate_ax.set_yscale("symlog", linthresh=0.01)
    rate_ax.axhline(data["target_alarms_per_hour"], color="#888888", ls="--",
                    label=f"target {data['target_alarms_per_hour']:g} per hour")  # fmt: skip
    rate_ax.axvline(t, color="#d62728", lw=2, label=f"threshold {t:.2f}")
    rate_ax.set(
        title="Alarms per hour at this threshold", xlabel="threshold (window score)", ylabel="alarms per hour"
    )
    rate_ax.legend(loc="upper right")
    fig.suptitle(
        f"Calibration ({data['method']}): {data['footage_minutes']:.1f} min of footage, "
        f"{data['windows']} windows, expected {data['expected_alarms_per_hour']:.3g} alarms per hour"
    )
    return fig


def write_report(
    result: CalibrationResult, sequences: Sequence[np.ndarray], png_path: str | Path, json_path: str | Path
) -> bool:
    """Write the JSON (``result.to_dict()`` and ``chart``) and, where matplotlib is installed, the PNG,
    each atomically; whether the PNG was written."""
    data = chart_data(result, sequences)
    body = {**result.to_dict(), "chart": data}
    write_atomic(Path(json_path), (json.dumps(body, indent=2) + "\n").encode())
    try:
        fig = draw_chart(data)
    except ImportError:
        log.info("calibration chart: no PNG without matplotlib (pip install '.[render]'); the web console "
                 "and %s hold the same chart", json_path)  # fmt: skip
        return False
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(Path(png_path), buf.getvalue())
    return True
