"""Learns a camera's anomaly threshold from normal footage so that false alarms meet the plant's target.

The knob is *false alarms per hour*; what the detector raises is an **alarm start**: ``start_windows``
(N) consecutive stride-1 window scores above the threshold ``u`` (``appliance.alarms.detector``). So the
statistic that matters is the running minimum over the last N windows, ``m_t = min(s_{t-N+1..t})``:
an alarm can start at ``t`` only when ``m_t > u``. Overlapping windows share 29 of 30 frames, so
``m`` crosses ``u`` in long excursions (clusters), not independent windows; one excursion (and any
excursions closer together than ``end_windows``) is one alarm. Hence everything below counts
**alarm starts** (exact replay of the detector), never single exceedances:

* ``empirical``: when the calibration run is long enough to contain at least ``MIN_EMPIRICAL_ALARMS``
  expected alarms at the target, the threshold is searched directly on the replayed alarm count.
* ``gpd``: otherwise peaks over threshold. At a lower base level ``u0`` with enough alarms, each
  alarm's peak of ``m`` is one (nearly independent) cluster maximum; their excesses over ``u0`` are
  fitted with a generalised Pareto distribution (probability-weighted moments, numpy only) and the
  alarm rate ``rate(u) = rate(u0) * P(peak > u)`` is solved for the target.

Footage time is *track time*: the sum over tracks of windows / fps (an hour of one person scored).
Pass ``footage_hours`` for the wall-clock duration instead when several people were in view at
once and the plant's knob is per camera.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from appliance.errors import ApplianceError

# Empirical threshold only when the target rate means at least this many alarms in the calibration
# data: the count is Poisson, so 10 expected alarms give a rate known to about +-30 % (1/sqrt(10)).
MIN_EMPIRICAL_ALARMS = 10
# The GPD tail is fitted on at least this many alarm peaks (PWM shape error ~ 0.2 at 20 peaks).
MIN_GPD_PEAKS = 20
# The base level of the GPD fit sits where the calibration data shows this many alarms, at most.
GPD_BASE_PEAKS = 40
# Extrapolate at most this far: the target must expect >= 1 / MAX_EXTRAPOLATION alarms in the data
# (a return period at most 10x the calibration footage; beyond that the tail shape is a guess).
MAX_EXTRAPOLATION = 10.0
QUANTILES = (0.5, 0.9, 0.99, 0.999)


def minimum_footage_minutes(target_alarms_per_hour: float) -> float:
    """The least footage (camera minutes) any threshold for this target can come from: the target must
    expect 1/MAX_EXTRAPOLATION alarms in it (more may be needed: the tail fit also needs enough
    separate alarm clusters, known only once the footage is scored)."""
    return 60.0 / (target_alarms_per_hour * MAX_EXTRAPOLATION)


class CalibrationError(ApplianceError):
    """The calibration footage cannot support the requested threshold (too short, or unusable)."""


@dataclass
class CalibrationResult:
    """The chosen threshold and how it was reached (serialised into the calibration report)."""

    threshold: float
    method: str  # "empirical" or "gpd"
    windows: int
    tracks: int
    footage_minutes: float
    fps: float
    start_windows: int
    end_windows: int
    target_alarms_per_hour: float
    expected_alarms_per_hour: float
    per_window_probability: float
    alarms_in_calibration: int  # replayed alarm starts at the chosen threshold
    exceedance_fraction: float  # fraction of raw windows above the threshold (cluster effect, vs p)
    score_quantiles: dict[str, float]
    gpd: dict[str, float] | None = None  # base, scale, shape, base_alarms_per_hour, peaks
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def per_window_probability(target_alarms_per_hour: float, fps: float, start_windows: int) -> float:
    """Probability that a given window starts an alarm, for the target rate (alarms per hour of track).

    Why not ``P(score > u) = rate / windows_per_hour``: windows overlap by T-1 frames, so exceedances
    come in excursions of tens of windows (lag-1 autocorrelation ~0.99 on real scores); and not the
    independent-window answer ``q ** N = rate / windows_per_hour`` either, which would put the
    threshold far too low. An alarm is an *upcrossing* of the N-window running minimum ``m_t``; the
    probability asked of the threshold is that of an upcrossing at a given window, ``rate / (3600
    fps)``. N does not change that probability; it changes the statistic (``m`` instead of the score)
    and which windows can start one (from the N-th window of a track on). The fraction of raw windows
    above the threshold is larger by the mean excursion length; ``fit_threshold`` measures and reports
    it (``exceedance_fraction``).
    """
    if target_alarms_per_hour <= 0 or fps <= 0 or start_windows < 1:
        raise CalibrationError(
            f"target_alarms_per_hour ({target_alarms_per_hour}) and fps ({fps}) must be > 0, "
            f"start_windows ({start_windows}) >= 1"
        )
    return float(target_alarms_per_hour) / (3600.0 * float(fps))


def _finite(seq: np.ndarray) -> np.ndarray:
    """The detector ignores non-finite scores entirely (no counter moves), so the replay drops them."""
    a = np.asarray(seq, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _runs(above: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a boolean array: (value, start index, length) per run."""
    if len(above) == 0:
        e = np.empty(0, dtype=np.int64)
        return e.astype(bool), e, e
    edges = np.flatnonzero(np.diff(above.astype(np.int8))) + 1
    starts = np.concatenate(([0], edges))
    lengths = np.diff(np.concatenate((starts, [len(above)])))
    return above[starts], starts, lengths


def alarm_spans(
    seq: np.ndarray, threshold: float, start_windows: int, end_windows: int
) -> list[tuple[int, int]]:
    """(start, end) window indices of each alarm of one track: start = window that raises it,
    end = window that closes it (or len when still open). Indices are into the finite scores."""
    s = _finite(seq)
    values, starts, lengths = _runs(s > threshold)
    spans: list[tuple[int, int]] = []
    active_since: int | None = None
    for above, start, length in zip(values.tolist(), starts.tolist(), lengths.tolist(), strict=True):
        if active_since is None:
            if above and length >= start_windows:
                active_since = start + start_windows - 1
        elif not above and length >= end_windows:
            spans.append((active_since, start + end_windows - 1))
            active_since = None
    if active_since is not None:
        spans.append((active_since, len(s)))
    return spans


def count_alarms(
    sequences: Sequence[np.ndarray], threshold: float, start_windows: int, end_windows: int
) -> int:
    """Number of anomaly starts the detector raises on these per-track score sequences (exact replay).

    Run-length form of ``TrackDetector``: idle, a run of >= N windows above starts an alarm; active,
    a run of >= ``end_windows`` at or below ends it. Each sequence is a separate track (fresh state).
    """
    return sum(len(alarm_spans(seq, threshold, start_windows, end_windows)) for seq in sequences)


def running_min(seq: np.ndarray, n: int) -> np.ndarray:
    """Minimum over each n consecutive finite scores (the statistic an alarm start must exceed)."""
    s = _finite(seq)
    if len(s) < n:
        return np.empty(0)
    return np.lib.stride_tricks.sliding_window_view(s, n).min(axis=1)


def _footage_hours(sequences: Sequence[np.ndarray], fps: float) -> tuple[int, float]:
    windows = sum(len(_finite(s)) for s in sequences)
    return windows, windows / fps / 3600.0


def _threshold_for_count(
    sequences: Sequence[np.ndarray], target_count: float, start_windows: int, end_windows: int
) -> tuple[float, int]:
    """Lowest score level, coming down from the top, whose replayed alarm count is still <= target_count.

    The count only changes at score values, so the candidates are the distinct scores. It is not
    monotone: a higher threshold can split one alarm in two, and at low levels one alarm covers a
    whole track, so the count falls again. Hence a descent on a coarse grid from the top to the
    first level with too many alarms, then bisection between it and the grid level above.
    """
    values = np.unique(np.concatenate([_finite(s) for s in sequences]))

    def count(i: int) -> int:
        return count_alarms(sequences, values[i], start_windows, end_windows)

    grid = np.unique(np.linspace(0, len(values) - 1, min(len(values), 200)).round().astype(int))[::-1]
    hi = int(grid[0])  # the top score: nothing exceeds it, count 0
    lo = None
    for i in grid[1:]:
        if count(int(i)) > target_count:
            lo = int(i)
            break
        hi = int(i)
    if lo is None:  # even the lowest level is within the target
        return float(values[hi]), count(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) <= target_count:
            hi = mid
        else:
            lo = mid
    return float(values[hi]), count(hi)


def _base_level(sequences: Sequence[np.ndarray], want: float, start_windows: int, end_windows: int) -> float:
    """GPD base level: the highest score level with at least ``want`` alarms, else the one with most alarms.

    On short tracks one alarm can cover a whole track at low levels, so the most alarm clusters sit
    at an intermediate level, not at the bottom.
    """
    values = np.unique(np.concatenate([_finite(s) for s in sequences]))
    grid = np.unique(np.linspace(0, len(values) - 1, min(len(values), 200)).round().astype(int))[::-1]
    best, best_count = float(values[grid[0]]), -1
    for i in grid:
        c = count_alarms(sequences, values[i], start_windows, end_windows)
        if c >= want:
            return float(values[i])
        if c > best_count:
            best, best_count = float(values[i]), c
    return best


def gpd_fit_pwm(excesses: np.ndarray) -> tuple[float, float]:
    """Generalised Pareto (scale, shape xi) of positive excesses by probability-weighted moments.

    Hosking & Wallis (1987): with a0 = mean and a1 = E[Y (1 - F(Y))], k = a0 / (a0 - 2 a1) - 2 and
    sigma = 2 a0 a1 / (a0 - 2 a1); xi = -k. Chosen over maximum likelihood because it is stable at
    20-40 peaks and has no optimiser to fail. Shape is clipped to [-0.5, 0.5] (PWM's range).
    """
    y = np.sort(np.asarray(excesses, dtype=np.float64))
    n = len(y)
    if n < 3 or not np.all(np.isfinite(y)):
        raise CalibrationError(f"GPD fit needs at least 3 finite excesses, got {n}")
    a0 = y.mean()
    a1 = np.sum(y * (n - np.arange(1, n + 1)) / (n - 1)) / n
    denom = a0 - 2.0 * a1
    if a0 <= 0 or denom <= 0:
        return max(a0, 1e-9), 0.0
    k = a0 / denom - 2.0
    sigma = 2.0 * a0 * a1 / denom
    xi = float(np.clip(-k, -0.5, 0.5))
    return float(max(sigma, 1e-9)), xi


def gpd_survival(x: np.ndarray | float, scale: float, shape: float) -> np.ndarray:
    """P(Y > x) of the GPD (x >= 0)."""
    x = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    if abs(shape) < 1e-9:
        return np.exp(-x / scale)
    base = np.maximum(1.0 + shape * x / scale, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(base > 0, base ** (-1.0 / shape), 0.0)


def gpd_quantile_excess(p: float, scale: float, shape: float) -> float:
    """Excess x with P(Y > x) = p."""
    if abs(shape) < 1e-9:
        return -scale * math.log(p)
    return scale / shape * (p ** (-shape) - 1.0)


def alarm_peaks(
    sequences: Sequence[np.ndarray], threshold: float, start_windows: int, end_windows: int
) -> np.ndarray:
    """Per alarm at ``threshold``: the peak of the N-window running minimum during that alarm.

    An alarm at a higher level u happens (to first order: once) for each of these alarms whose peak
    exceeds u, so the peaks are the cluster maxima the GPD is fitted to.
    """
    peaks = []
    for seq in sequences:
        m = running_min(seq, start_windows)
        for start, end in alarm_spans(seq, threshold, start_windows, end_windows):
            # m[t - N + 1] is the minimum of the N windows ending at window t
            lo, hi = max(start - start_windows + 1, 0), max(end - start_windows + 1, 1)
            peaks.append(m[lo:hi].max())
    return np.asarray(peaks, dtype=np.float64)


def fit_threshold(
    sequences: Sequence[np.ndarray],
    fps: float,
    target_alarms_per_hour: float,
    start_windows: int = 5,
    end_windows: int = 15,
    footage_hours: float | None = None,
) -> CalibrationResult:
    """Threshold at which normal footage raises ``target_alarms_per_hour`` alarms (see module doc)."""
    p = per_window_probability(target_alarms_per_hour, fps, start_windows)
    sequences = [_finite(s) for s in sequences]
    windows, hours = _footage_hours(sequences, fps)
    if footage_hours is not None:
        hours = float(footage_hours)
    tracks = sum(1 for s in sequences if len(s))
    usable = sum(max(len(s) - start_windows + 1, 0) for s in sequences)
    minutes = hours * 60.0
    if usable < 1 or hours <= 0:
        raise CalibrationError(
            f"no usable score windows: every track is shorter than start_windows={start_windows}"
        )
    expected = target_alarms_per_hour * hours  # alarms the target allows in this footage
    all_scores = np.concatenate(sequences)
    quantiles = {f"q{q * 100:g}": float(np.quantile(all_scores, q)) for q in QUANTILES}
    warnings: list[str] = []
    gpd: dict[str, float] | None = None

    if expected >= MIN_EMPIRICAL_ALARMS:
        method = "empirical"
        threshold, count = _threshold_for_count(sequences, expected, start_windows, end_windows)
        rate = count / hours
        if count < 0.5 * expected:
            warnings.append(
                f"target unreachable: even the lowest threshold gives {count} alarms ({rate:.1f}/hour); "
                f"at most one alarm per track fits in short tracks"
            )
    else:
        need_minutes = MIN_EMPIRICAL_ALARMS / target_alarms_per_hour * 60.0
        if expected < 1.0 / MAX_EXTRAPOLATION:
            raise CalibrationError(
                f"too little normal footage for {target_alarms_per_hour:g} alarms/hour: {windows} windows "
                f"({minutes:.1f} min of track time) would see {expected:.3f} alarms at that rate; "
                f"extrapolating the tail is allowed to 1/{MAX_EXTRAPOLATION:g} expected alarm, i.e. "
                f"at least {60.0 / (target_alarms_per_hour * MAX_EXTRAPOLATION):.1f} min (for a direct "
                f"count {need_minutes:.0f} min), or raise the target"
            )
        base = _base_level(sequences, max(GPD_BASE_PEAKS, 4 * expected), start_windows, end_windows)
        peaks = alarm_peaks(sequences, base, start_windows, end_windows)
        peaks = peaks[peaks > base]
        if len(peaks) < MIN_GPD_PEAKS:
            raise CalibrationError(
                f"too little normal footage for {target_alarms_per_hour:g} alarms/hour: {windows} windows "
                f"({minutes:.1f} min of track time, {tracks} tracks) contain only {len(peaks)} separate "
                f"alarm clusters at any level; the tail (GPD) fit needs at least {MIN_GPD_PEAKS}. "
                f"Record more normal footage (a direct count needs {need_minutes:.0f} min) "
                "or raise the target"
            )
        scale, shape = gpd_fit_pwm(peaks - base)
        base_rate = len(peaks) / hours
        excess = gpd_quantile_excess(min(target_alarms_per_hour / base_rate, 1.0), scale, shape)
        threshold = base + excess
        count = count_alarms(sequences, threshold, start_windows, end_windows)
        rate = target_alarms_per_hour
        method = "gpd"
        gpd = {
            "base": float(base),
            "scale": scale,
            "shape": shape,
            "base_alarms_per_hour": float(base_rate),
            "peaks": float(len(peaks)),
        }
        warnings.append(
            f"extrapolated: the target expects {expected:.2f} alarms in {minutes:.1f} min of footage; "
            f"threshold from a GPD tail of {len(peaks)} alarm peaks "
            f"(a direct count needs {need_minutes:.0f} min)"
        )
        if shape >= 0.3:
            warnings.append(f"heavy score tail (GPD shape {shape:.2f}): the threshold is uncertain")
    drift = drift_check(sequences, fps)
    if drift:
        warnings.append(drift)
    return CalibrationResult(
        threshold=float(threshold),
        method=method,
        windows=windows,
        tracks=tracks,
        footage_minutes=float(minutes),
        fps=float(fps),
        start_windows=start_windows,
        end_windows=end_windows,
        target_alarms_per_hour=float(target_alarms_per_hour),
        expected_alarms_per_hour=float(rate),
        per_window_probability=p,
        alarms_in_calibration=int(count),
        exceedance_fraction=float(np.mean(all_scores > threshold)),
        score_quantiles=quantiles,
        gpd=gpd,
        warnings=warnings,
    )


# Drift: fraction of the last third's windows above the first third's 90th percentile. Steady
# footage gives 0.10; a factor of 2 either way (> 0.20 or < 0.05) changes the alarm rate near the
# tail by about that factor, which is the error the plant would notice. With ~30-window excursions
# the effective sample is windows / 30, so one minute per third (1800 windows, ~60 independent
# excursions) gives a standard error of ~0.04 around 0.10: below that the check is not run.
DRIFT_QUANTILE = 0.9
DRIFT_FACTOR = 2.0
DRIFT_MIN_WINDOWS_PER_THIRD = 1800


def drift_check(sequences: Sequence[np.ndarray], fps: float = 30.0) -> str | None:
    """A message when the scores drift during the calibration run (first vs last third), else None.

    Sequences must be in recording order. The statistic is robust (a quantile and a fraction, no
    mean or variance) and reads directly as a change of the tail rate.
    """
    scores = np.concatenate([_finite(s) for s in sequences]) if len(sequences) else np.empty(0)
    third = len(scores) // 3
    if third < DRIFT_MIN_WINDOWS_PER_THIRD:
        return None
    first, last = scores[:third], scores[-third:]
    level = np.quantile(first, DRIFT_QUANTILE)
    expected = 1.0 - DRIFT_QUANTILE
    frac = float(np.mean(last > level))
    if frac > expected * DRIFT_FACTOR or frac < expected / DRIFT_FACTOR:
        shift = float(np.median(last) - np.median(first))
        mad = float(np.median(np.abs(first - np.median(first)))) * 1.4826 or 1.0
        return (
            f"scores drift during calibration: {frac:.0%} of the last third's windows exceed the first "
            f"third's {DRIFT_QUANTILE:.0%} quantile ({level:.1f}; steady footage gives {expected:.0%}); "
            f"median moved {shift:+.1f} ({shift / mad:+.1f} robust s.d.) over "
            f"{len(scores) / fps / 60.0:.1f} min. Check the scene (lighting, camera, activity) "
            "and recalibrate"
        )
    return None
