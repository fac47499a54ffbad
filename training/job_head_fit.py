"""Fitting the job head (``classranker_plugin.job_head``): L2-regularised logistic regression on the
head inputs of whole jobs, each job weighted as a unit so that a few big jobs cannot outvote many
small ones.

A ``JobRecord`` is one job's classes: the network's logits, the feature vectors (all of the job's
classes, labelled or not, since ranks are taken within the job) and labels (1, 0, NaN = unlabelled).
``with_metadata_dropped`` adds, for each job, a copy whose metadata statistics are unknown, so the
head also learns to rank from the images alone.

``fit_calibration`` then fits the head's per-job calibration (``job_head.Calibration``) on sub-jobs
drawn from the labelled jobs with every share of good classes (``composition_draws``: a quarter of
them all good, a quarter at least 85 % good), so that a cutoff of 0.5 holds on a job of nearly all
good classes as on a job of mostly junk. ``fit_head(..., calibrate=True)`` does both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from classranker_plugin.checkpoint import calibrated_scores
from classranker_plugin.job_head import JOB_INPUTS, Calibration, JobHead, head_inputs, job_inputs

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


def _group_weighted(records: list, group_weights: Optional[dict]) -> list:
    """``records`` with weights summing to ``group_weights[group]`` per group (unchanged if None)."""
    if not group_weights:
        return records
    totals = {}
    for record in records:
        totals[record.group] = totals.get(record.group, 0.0) + record.weight
    return [JobRecord(r.name, r.logits, r.values, r.labels,
                      r.weight * group_weights.get(r.group, 1.0) / totals[r.group], r.group)
            for r in records]


def _logistic(design: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: np.ndarray,
              beta: Optional[np.ndarray] = None, iterations: int = 50) -> np.ndarray:
    """Newton-Raphson for the weighted mean log-loss plus ``ridge / 2 * beta^2``."""
    w = w / w.sum()
    beta = np.zeros(design.shape[1]) if beta is None else np.array(beta, np.float64)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (w * (p - y)) + ridge * beta
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def fit_head(records: list, names, l2: float = 0.01, group_weights: Optional[dict] = None,
             iterations: int = 50, calibrate: bool = False, draws: int = 24, seed: int = 0) -> JobHead:
    """Newton-Raphson logistic regression; weights sum to 1 per job (times its ``weight``), then to
    ``group_weights[group]`` per group when given. The loss is the weighted mean log-loss plus
    ``l2 / 2 * |w|^2`` (the bias is not penalised). With ``calibrate``, then :func:`fit_calibration`
    on the same jobs (``draws`` sub-jobs each)."""
    x, y, w, input_names = _design(_group_weighted(records, group_weights), names)
    design = np.hstack([x, np.ones((len(x), 1))])
    ridge = np.full(design.shape[1], l2)
    ridge[-1] = 0.0
    beta = _logistic(design, y, w, ridge, iterations=iterations)
    head = JobHead(input_names=input_names, weights=beta[:-1], bias=float(beta[-1]),
                   metrics={"l2": l2, "classes": int(len(x)), "jobs": len(records)})
    if calibrate:
        head.calibration = fit_calibration(head, records, names, draws=draws, l2=l2,
                                           group_weights=group_weights, seed=seed)
        head.metrics["calibration_draws"] = draws
    return head


def composition_draws(record: JobRecord, rng: np.random.Generator, n: int) -> list:
    """``n`` sub-jobs of the labelled classes of ``record`` (at least 6 classes each, when it has
    them): shares of good classes uniform over [0, 1] for half, in [0.85, 1) for a quarter and all
    good for a quarter. Their relative inputs are recomputed within each sub-job."""
    labelled = np.flatnonzero(np.isfinite(record.labels))
    good, junk = labelled[record.labels[labelled] == 1], labelled[record.labels[labelled] == 0]
    out = []
    for k in range(n):
        kind = k % 4
        share = 1.0 if kind == 0 else rng.uniform(0.85, 1.0) if kind == 1 else rng.uniform(0.0, 1.0)
        size = int(rng.integers(min(6, len(labelled)), len(labelled) + 1))
        n_good = min(len(good), int(round(share * size)))
        n_junk = min(len(junk), size - n_good) if share < 1.0 else 0
        if n_good + n_junk < 6:
            continue
        rows = np.concatenate([rng.choice(good, n_good, replace=False),
                               rng.choice(junk, n_junk, replace=False)]).astype(int)
        rows.sort()
        out.append(JobRecord(f"{record.name} [draw {k}]", record.logits[rows], record.values[rows],
                             record.labels[rows], record.weight, record.group))
    return out


def fit_calibration(head: JobHead, records: list, names, draws: int = 24, l2: float = 0.01,
                    group_weights: Optional[dict] = None, seed: int = 0) -> Calibration:
    """The per-job calibration of ``head``: logistic regression of the labels on [head logit, head
    logit x job inputs, job inputs], over each job and ``draws`` sub-jobs of it (each sub-job
    weighted as a job); the job inputs' weights are L2-penalised, the scale and the shift are not."""
    rng = np.random.default_rng(seed)
    rows, labels, weights = [], [], []
    for record in _group_weighted(records, group_weights):
        jobs = [record] + composition_draws(record, rng, draws)
        for job in jobs:
            labelled = np.isfinite(job.labels)
            if not labelled.any():
                continue
            h = head.relative_logits(job.logits, job.values, names)[labelled]
            j = job_inputs(job.logits, job.values, names)
            jobwise = np.tile(j, (len(h), 1))
            rows.append(np.column_stack([h, h[:, None] * jobwise, jobwise, np.ones(len(h))]))
            labels.append(job.labels[labelled])
            weights.append(np.full(len(h), record.weight / (len(jobs) * len(h))))
    design = np.concatenate(rows)
    ridge = np.full(design.shape[1], l2)
    ridge[0] = ridge[-1] = 0.0
    start = np.zeros(design.shape[1])
    start[0] = 1.0
    beta = _logistic(design, np.concatenate(labels), np.concatenate(weights), ridge, beta=start)
    k = len(JOB_INPUTS)
    return Calibration(weights=beta[1 + k:1 + 2 * k], stretch=beta[1:1 + k], scale=float(beta[0]),
                       shift=float(beta[-1]))


def head_scores(head: JobHead, record: JobRecord, names) -> np.ndarray:
    return calibrated_scores(head.logits(record.logits, record.values, names))
