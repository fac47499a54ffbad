"""Fitting the job head (``classranker_plugin.job_head``): L2-regularised logistic regression on the
head inputs of whole jobs, each job weighted as a unit so that a few big jobs cannot outvote many
small ones.

A ``JobRecord`` is one job's classes: the network's logits, the feature vectors (all of the job's
classes, labelled or not, since ranks are taken within the job) and labels (1, 0, NaN = unlabelled).
``with_metadata_dropped`` adds, for each job, a copy whose metadata statistics are unknown, so the
head also learns to rank from the images alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from classranker_plugin.checkpoint import calibrated_scores
from classranker_plugin.job_head import JobHead, head_inputs

from .masking import metadata_groups


@dataclass
class JobRecord:
    name: str
    logits: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    weight: float = 1.0
    group: str = ""  # e.g. "real" or "corpus": fit_head can balance groups


def drop_metadata(values: np.ndarray, names, feature_set: str = "classranker") -> np.ndarray:
    """Feature vectors with every metadata statistic set to its 'unknown' encoding."""
    values = np.array(values, np.float32, copy=True)
    for group in metadata_groups(feature_set, list(names)):
        values[:, group.indices] = np.asarray(group.unknown_values, np.float32)
    return values


def with_metadata_dropped(records: Iterable[JobRecord], names, network_logits: Callable) -> list:
    """``records`` plus, for each, a copy without metadata (``network_logits(record, values)``
    recomputes the network's logits for the masked feature vectors)."""
    out = []
    for record in records:
        out.append(record)
        values = drop_metadata(record.values, names)
        out.append(JobRecord(f"{record.name} (no metadata)", network_logits(record, values), values,
                             record.labels, record.weight, record.group))
    return out


def _design(records, names):
    rows, labels, weights, input_names = [], [], [], None
    for record in records:
        inputs, input_names = head_inputs(record.logits, record.values, names)
        labelled = np.isfinite(record.labels)
        if not labelled.any():
            continue
        rows.append(inputs[labelled])
        labels.append(record.labels[labelled])
        weights.append(np.full(labelled.sum(), record.weight / labelled.sum()))
    return np.concatenate(rows), np.concatenate(labels), np.concatenate(weights), input_names


def fit_head(records: list, names, l2: float = 0.01, group_weights: Optional[dict] = None,
             iterations: int = 50) -> JobHead:
    """Newton-Raphson logistic regression; weights sum to 1 per job (times its ``weight``), then to
    ``group_weights[group]`` per group when given. The loss is the weighted mean log-loss plus
    ``l2 / 2 * |w|^2`` (the bias is not penalised)."""
    if group_weights:
        totals = {}
        for record in records:
            totals[record.group] = totals.get(record.group, 0.0) + record.weight
        records = [JobRecord(r.name, r.logits, r.values, r.labels,
                             r.weight * group_weights.get(r.group, 1.0) / totals[r.group], r.group)
                   for r in records]
    x, y, w, input_names = _design(records, names)
    w = w / w.sum()
    design = np.hstack([x, np.ones((len(x), 1))])
    ridge = np.full(design.shape[1], l2)
    ridge[-1] = 0.0
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (w * (p - y)) + ridge * beta
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return JobHead(input_names=input_names, weights=beta[:-1], bias=float(beta[-1]),
                   metrics={"l2": l2, "classes": int(len(x)), "jobs": len(records)})


def head_scores(head: JobHead, record: JobRecord, names) -> np.ndarray:
    return calibrated_scores(head.logits(record.logits, record.values, names))
