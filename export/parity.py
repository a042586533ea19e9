"""Parity gate: an exported variant may ship only if it scores like the PyTorch model.

Compared on the real evaluation windows: fp32 variants must match every window score to 1e-4
(relative to max(1, |score|)); every variant needs a Spearman rank correlation >= 0.99 with the
PyTorch scores and a frame-level AUROC within 0.01 of PyTorch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.models.metrics import auroc

FP32_TOLERANCE = 1e-4
MIN_SPEARMAN = 0.99
MAX_AUROC_DIFF = 0.01


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x))
    sx = x[order]  # average the ranks of ties
    starts = np.r_[0, np.flatnonzero(np.diff(sx)) + 1]
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:
            ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class VariantParity:
    variant: str
    windows: int
    max_abs_diff: float
    max_rel_diff: float
    spearman: float
    auroc: float
    auroc_diff: float
    passed: bool
    failures: list[str]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_variant(
    variant: str,
    reference: np.ndarray,
    scores: np.ndarray,
    reference_auroc: float,
    frame_scores: np.ndarray,
    frame_positive: np.ndarray,
) -> VariantParity:
    """Compare one variant's window scores (and frame-level AUROC) with the PyTorch reference."""
    scores = np.asarray(scores, float)
    frame_scores = np.asarray(frame_scores, float)
    failures = []
    finite = np.isfinite(scores)
    if not finite.all() or not np.isfinite(frame_scores).all():
        failures.append(f"{int((~finite).sum())} of {len(scores)} window scores are NaN or infinite")
        keep = np.isfinite(frame_scores)
        frame_scores, frame_positive = frame_scores[keep], frame_positive[keep]
    diff = np.abs(scores - reference)
    rel = diff / np.maximum(1.0, np.abs(reference))
    rho = spearman(reference[finite], scores[finite]) if finite.sum() > 2 else float("nan")
    a = auroc(frame_scores, frame_positive)
    if variant.endswith("fp32") and np.nanmax(rel, initial=0.0) > FP32_TOLERANCE:
        failures.append(f"fp32 scores differ by up to {np.nanmax(rel):.2e} (> {FP32_TOLERANCE:.0e})")
    if not rho >= MIN_SPEARMAN:
        failures.append(f"Spearman {rho:.4f} < {MIN_SPEARMAN}")
    # Evaluation data without anomalies (e.g. a site's normal footage) has no AUROC to compare:
    # the score-level criteria (fp32 tolerance, Spearman) still gate the variant.
    no_auroc = np.isnan(reference_auroc) and np.isnan(a)
    if not no_auroc and not abs(a - reference_auroc) <= MAX_AUROC_DIFF:
        failures.append(
            f"AUROC {a:.4f} is {abs(a - reference_auroc):.4f} from PyTorch's {reference_auroc:.4f}"
        )
    return VariantParity(
        variant,
        len(reference),
        float(np.nanmax(diff, initial=0.0)),
        float(np.nanmax(rel, initial=0.0)),
        rho,
        a,
        a - reference_auroc,
        not failures,
        failures,
    )


def format_parity_table(reference_auroc: float, rows: list[VariantParity]) -> str:
    lines = [
        "| variant | windows | max abs diff | max rel diff | Spearman | AUROC | dAUROC | gate |",
        "|---|---|---|---|---|---|---|---|",
        f"| pytorch | {rows[0].windows if rows else 0} | - | - | 1 | {reference_auroc:.4f} | - | reference |",
    ]
    for r in rows:
        gate = "pass" if r.passed else "FAIL: " + "; ".join(r.failures)
        lines.append(
            f"| {r.variant} | {r.windows} | {r.max_abs_diff:.2e} | {r.max_rel_diff:.2e} | {r.spearman:.5f} | "
            f"{r.auroc:.4f} | {r.auroc_diff:+.4f} | {gate} |"
        )
    return "\n".join(lines)
