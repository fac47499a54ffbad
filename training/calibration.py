"""Temperature scaling: one scalar T so that sigmoid(logit / T) matches the validation labels.

The ranking (and so every AUC) does not change; only how far scores sit from 0.5 does, which makes
a cutoff of 0.5 mean "more likely good than not". T is found by minimising the binary cross-entropy
on the validation split over log T in [log 0.05, log 20].
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

T_MIN, T_MAX = 0.05, 20.0


def _bce(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-|z|)) form: stable for large |z|
    return float(np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))))


def fit_temperature(logits, labels) -> float:
    """Calibration temperature for validation ``logits`` and soft ``labels`` in [0, 1]."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(logits) < 2 or labels.min() == labels.max():
        return 1.0
    result = minimize_scalar(lambda log_t: _bce(logits, labels, np.exp(log_t)),
                             bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    # never worse than uncalibrated (the bounded search can stop at an edge on odd data)
    return temperature if _bce(logits, labels, temperature) <= _bce(logits, labels, 1.0) else 1.0


def calibrated_scores(logits, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / temperature))
