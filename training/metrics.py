"""Ranking and classification metrics in numpy: ROC and PR curves and areas, MCC, thresholds.

Conventions: ``labels`` are 0/1 (soft labels are binarised with :func:`binarise`, good = label >=
0.5), ``scores`` are higher-is-better, and a class is called good at threshold ``t`` when
``score >= t``. Tied scores are handled as one step of the curves (no arbitrary order among ties):
the ROC AUC equals the Mann-Whitney probability that a random good class outscores a random bad
one, ties counting one half. Areas are NaN when one of the two labels is absent.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def binarise(labels) -> np.ndarray:
    """Soft labels in [0, 1] -> bool (good = label >= 0.5)."""
    return np.asarray(labels, dtype=float) >= 0.5


def _clean(labels, scores):
    """(bool labels, scores) of the labelled classes: a NaN label (unlabelled, uncertain) is left
    out, never counted as junk."""
    labels = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if labels.shape != s.shape:
        raise ValueError(f"{labels.shape[0]} labels but {s.shape[0]} scores")
    if labels.dtype != bool:
        known = np.isfinite(labels.astype(float))
        labels, s = binarise(labels[known]), s[known]
    # unknown scores (NaN, e.g. a baseline without the statistic) rank below every known one
    s = np.where(np.isnan(s), -np.inf, s)
    return labels, s


def _cumulative_counts(y: np.ndarray, s: np.ndarray):
    """Thresholds (distinct scores, descending) and the true/false positives at each of them."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    changes = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])  # (not np.diff: -inf - -inf is NaN)
    last_of_tie = np.r_[changes, len(s_sorted) - 1] if len(s) else np.zeros(0, int)
    tps = np.cumsum(y_sorted)[last_of_tie].astype(float)
    fps = (last_of_tie + 1 - tps).astype(float)
    return s_sorted[last_of_tie], tps, fps


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve, ties counted one half (Mann-Whitney U / (n_pos * n_neg))."""
    y, s = _clean(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    rank_sum = average_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels, scores):
    """(false positive rate, true positive rate, thresholds), starting at (0, 0) with threshold inf."""
    y, s = _clean(labels, scores)
    thresholds, tps, fps = _cumulative_counts(y, s)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds])


def pr_curve(labels, scores):
    """(precision, recall, thresholds) at each distinct score, highest threshold first."""
    y, s = _clean(labels, scores)
    thresholds, tps, fps = _cumulative_counts(y, s)
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / max(int(y.sum()), 1)
    return precision, recall, thresholds


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve as the step sum of precision over recall increments."""
    y, _ = _clean(labels, scores)
    if y.all() or not y.any():
        return float("nan")
    precision, recall, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mcc_from_counts(tp, fp, tn, fn):
    """Matthews correlation coefficient (array-friendly); 0 where a margin of the table is empty."""
    tp, fp, tn, fn = (np.asarray(v, dtype=float) for v in (tp, fp, tn, fn))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0)
    return value if value.ndim else float(value)


def confusion(labels, scores, threshold: float) -> dict:
    """Counts and rates when classes with score >= threshold are called good."""
    y, s = _clean(labels, scores)
    predicted = s >= threshold
    tp = int((predicted & y).sum())
    fp = int((predicted & ~y).sum())
    fn = int((~predicted & y).sum())
    tn = int((~predicted & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "precision": precision, "recall": recall, "f1": f1,
            "accuracy": (tp + tn) / max(len(y), 1), "mcc": mcc_from_counts(tp, fp, tn, fn),
            "kept": tp + fp}


def mcc(labels, scores, threshold: float = 0.5) -> float:
    """MCC when classes with score >= threshold are called good."""
    return confusion(labels, scores, threshold)["mcc"]


def best_mcc_threshold(labels, scores) -> tuple[float, float]:
    """(threshold, MCC) maximising MCC over every distinct score; the highest such threshold wins ties."""
    y, s = _clean(labels, scores)
    thresholds, tps, fps = _cumulative_counts(y, s)
    if not len(thresholds):
        return float("nan"), 0.0
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    values = mcc_from_counts(tps, fps, n_neg - fps, n_pos - tps)
    best = int(np.argmax(values))
    return float(thresholds[best]), float(values[best])


def calibration_table(labels, scores, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table: per score bin, the number of classes, mean score and fraction good."""
    y, s = _clean(labels, scores)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"bin_lower": edges[b], "bin_upper": edges[b + 1], "classes": n,
                     "mean_score": float(s[inside].mean()) if n else float("nan"),
                     "fraction_good": float(y[inside].mean()) if n else float("nan")})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Class-weighted mean |mean score - fraction good| over the bins of a calibration table."""
    used = table[table["classes"] > 0]
    if used.empty:
        return float("nan")
    gap = (used["mean_score"] - used["fraction_good"]).abs()
    return float((gap * used["classes"]).sum() / used["classes"].sum())


def binary_report(labels, scores, cutoff: float = 0.5) -> dict:
    """ROC/PR AUC, and precision/recall/MCC at ``cutoff`` and at the MCC-maximising threshold."""
    y, s = _clean(labels, scores)
    threshold, _ = best_mcc_threshold(y, s)
    return {"classes": int(len(y)), "good": int(y.sum()), "bad": int((~y).sum()),
            "roc_auc": roc_auc(y, s), "pr_auc": average_precision(y, s),
            "at_cutoff": confusion(y, s, cutoff),
            "at_best_mcc": confusion(y, s, threshold) if np.isfinite(threshold) else None}
