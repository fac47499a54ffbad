"""The job head: the network's verdict combined with where each class stands within its own job.

Sorting a job's classes by class distribution or by resolution is a strong ranker on real data,
because it is *relative*: what counts as a big class or a fine resolution depends on the job (the
number of classes, the particle count, the sampling). The network sees one class at a time and
judges it on an absolute scale learnt from its training data. The head is a logistic regression
over

- the network's logit (absolute), its within-job z-score and rank,
- for each statistic in ``RELATIVE_FEATURES`` that is known: its within-job z-score and rank,

where z = (x - median) / (1.4826 MAD), clipped to [-3, 3], and rank runs from -0.5 (lowest in the
job) to 0.5 (highest), both over the job's non-empty classes with the statistic known; a class whose
statistic is unknown gets 0 for both.

Relative inputs rank well but calibrate badly: in a job where nearly every class is good, the
lowest-ranked good classes fall below the cutoff. So the head has a second, per-job part, the
*calibration*: final logit = (scale + u . J) * head logit + v . J + shift, where J (``JOB_INPUTS``) describes
the whole job through the network's absolute verdicts (median and quartiles of its logits, the mean
of its scores: the share of good classes it expects). J is the same for every class of a job, so
the calibration moves and stretches a job's scores together and never changes their order within
the job (the stretch is floored at ``MIN_STRETCH`` > 0). It is fitted on sub-jobs drawn from
labelled jobs with every share of good classes, all-good ones included (``training/job_head_fit.py``).

The head's output is the final logit; its score is sigmoid(logit). It is stored in the checkpoint as
plain numbers (``JobHead.to_dict``), never code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: feature-vector entries used relative to the job (each with its *_known flag where it has one)
RELATIVE_FEATURES = ("log_class_distribution", "log_particle_count", "resolution_relative",
                     "accuracy_rotations", "accuracy_translations", "log_signal_std", "contrast_in_out",
                     "protein_solvent_contrast", "solvent_flatness", "outside_signal", "com_offset",
                     "radial_spread", "rotational_symmetry", "power_mid")
#: statistics where lower is better (z and rank are negated, so that higher always reads "better")
LOWER_IS_BETTER = ("resolution_relative", "accuracy_rotations", "accuracy_translations")
Z_CLIP = 3.0
MAD_SCALE = 1.4826
#: job-level inputs of the calibration (one value per job, from the network's logits)
JOB_INPUTS = ("job_logit_median", "job_logit_q25", "job_logit_q75", "job_good_share")
HEAD_FORMAT = "classranker-job-head-2"         # 2: may carry a calibration (older readers refuse it)
READABLE_FORMATS = ("classranker-job-head-1", HEAD_FORMAT)


def _usable(values: np.ndarray, names: list, name: Optional[str] = None) -> np.ndarray:
    """Classes that count for the job's statistics: not empty and, for ``name``, its value known."""
    flag = f"{name}_known"
    usable = values[:, names.index(flag)] > 0.5 if name and flag in names else np.ones(len(values), bool)
    if "empty" in names:
        usable &= values[:, names.index("empty")] < 0.5
    return usable


def relative(column: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z-score, rank in [-0.5, 0.5]) of ``column`` among the ``known`` entries; 0 elsewhere."""
    z, rank = np.zeros(len(column)), np.zeros(len(column))
    values = column[known].astype(np.float64)
    if len(values) < 2:
        return z, rank
    median = np.median(values)
    spread = MAD_SCALE * np.median(np.abs(values - median))
    if spread <= 1e-9:
        spread = values.std() or 1.0
    z[known] = np.clip((values - median) / spread, -Z_CLIP, Z_CLIP)
    order = values.argsort(kind="stable").argsort(kind="stable").astype(np.float64)
    # ties share the mean of their ranks
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=order)
    rank[known] = (sums[inverse] / counts[inverse]) / (len(values) - 1) - 0.5
    return z, rank


def head_inputs(logits: np.ndarray, values: np.ndarray, names) -> tuple[np.ndarray, list]:
    """The head's inputs (n, H) and their names, for the classes of ONE job."""
    names = list(names)
    values = np.asarray(values, np.float64)
    logits = np.asarray(logits, np.float64)
    z, rank = relative(logits, _usable(values, names))
    columns, labels = [logits, z, rank], ["logit", "logit_z", "logit_rank"]
    for name in RELATIVE_FEATURES:
        if name not in names:
            continue
        sign = -1.0 if name in LOWER_IS_BETTER else 1.0
        z, rank = relative(sign * values[:, names.index(name)], _usable(values, names, name))
        columns += [z, rank]
        labels += [f"{name}_z", f"{name}_rank"]
    return np.stack(columns, axis=1), labels


def job_inputs(logits: np.ndarray, values: np.ndarray, names) -> np.ndarray:
    """J of ONE job (``JOB_INPUTS``): median, quartiles and mean sigmoid of the network's logits over
    its non-empty classes (all of them when every class is empty)."""
    logits = np.asarray(logits, np.float64)
    usable = _usable(np.asarray(values, np.float64), list(names))
    x = logits[usable] if usable.any() else logits
    if not len(x):
        return np.zeros(len(JOB_INPUTS))
    q25, median, q75 = np.percentile(x, [25, 50, 75])
    return np.array([median, q25, q75, float(np.mean(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))))])


MIN_STRETCH = 0.05   # the least stretch of a job's head logits: the order within a job is kept


@dataclass
class Calibration:
    """final logit = (scale + stretch . J) * head logit + weights . J + shift, J = job_inputs (per job)."""

    weights: np.ndarray
    stretch: np.ndarray
    scale: float = 1.0
    shift: float = 0.0

    def job_scale(self, j: np.ndarray) -> float:
        return max(MIN_STRETCH, self.scale + float(j @ self.stretch))

    def apply(self, head_logits: np.ndarray, network_logits: np.ndarray, values, names) -> np.ndarray:
        j = job_inputs(network_logits, values, names)
        return self.job_scale(j) * np.asarray(head_logits, np.float64) + float(j @ self.weights) + self.shift

    def to_dict(self) -> dict:
        return {"job_inputs": list(JOB_INPUTS), "weights": [float(w) for w in self.weights],
                "stretch": [float(w) for w in self.stretch], "scale": float(self.scale),
                "shift": float(self.shift)}

    @classmethod
    def from_dict(cls, payload: dict) -> "Calibration":
        if list(payload.get("job_inputs", [])) != list(JOB_INPUTS):
            raise ValueError(f"job head calibration on unknown inputs {payload.get('job_inputs')!r}")
        return cls(np.asarray(payload["weights"], np.float64), np.asarray(payload["stretch"], np.float64),
                   float(payload["scale"]), float(payload["shift"]))


@dataclass
class JobHead:
    """Logistic regression on :func:`head_inputs` (weights in the order of ``input_names``), then
    the per-job ``calibration`` when it has one."""

    input_names: list
    weights: np.ndarray
    bias: float = 0.0
    metrics: dict = field(default_factory=dict)
    calibration: Optional[Calibration] = None

    def relative_logits(self, network_logits: np.ndarray, values: np.ndarray, names) -> np.ndarray:
        """The head's logits before the calibration."""
        inputs, labels = head_inputs(network_logits, values, names)
        if labels != list(self.input_names):
            missing = [n for n in self.input_names if n not in labels]
            raise ValueError(f"job head inputs differ from the features computed (missing: {missing})")
        return inputs @ np.asarray(self.weights, np.float64) + self.bias

    def logits(self, network_logits: np.ndarray, values: np.ndarray, names) -> np.ndarray:
        out = self.relative_logits(network_logits, values, names)
        if self.calibration is not None:
            out = self.calibration.apply(out, network_logits, values, names)
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        return {"format": HEAD_FORMAT, "input_names": list(self.input_names),
                "weights": [float(w) for w in self.weights], "bias": float(self.bias),
                "metrics": dict(self.metrics),
                **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {})}

    @classmethod
    def from_dict(cls, payload: dict) -> "JobHead":
        if payload.get("format") not in READABLE_FORMATS:
            raise ValueError(f"unknown job head format {payload.get('format')!r}")
        calibration = payload.get("calibration")
        return cls(input_names=list(payload["input_names"]), weights=np.asarray(payload["weights"], np.float64),
                   bias=float(payload["bias"]), metrics=dict(payload.get("metrics", {})),
                   calibration=None if calibration is None else Calibration.from_dict(calibration))
