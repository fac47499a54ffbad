"""Calibration: T (and an offset b) so that sigmoid(logit / T + b) matches the validation labels.

The ranking (and so every AUC) does not change; only how far scores sit from 0.5 does, which makes
a cutoff of 0.5 mean "more likely good than not". T is the maximum a posteriori estimate on the
validation split: binary cross-entropy plus a standard normal prior on log T, searched over
[0.05, 20]. The prior matters on small, perfectly separated validation sets, where the
cross-entropy alone keeps falling as T -> 0 and would give needlessly extreme scores.
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
    n = len(logits)
    result = minimize_scalar(lambda log_t: _bce(logits, labels, np.exp(log_t)) + log_t ** 2 / (2.0 * n),
                             bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    return temperature


def fit_calibration(logits, labels) -> tuple:
    """(temperature, bias) so that sigmoid(logit / T + b) matches the validation labels.

    The temperature comes from :func:`fit_temperature`; the bias (Platt's offset, with a weak normal
    prior) then moves the 0.5 point to where the validation classes are as likely good as not. A
    temperature alone cannot do that: a model whose logits are all shifted keeps every score on
    one side of 0.5.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    temperature = fit_temperature(logits, labels)
    if len(logits) < 2 or labels.min() == labels.max():
        return temperature, 0.0
    z, n = logits / temperature, len(logits)
    result = minimize_scalar(lambda b: _bce(z + b, labels, 1.0) + b ** 2 / (2.0 * 4.0 * n),
                             bounds=(-10.0, 10.0), method="bounded", options={"xatol": 1e-4})
    return temperature, float(result.x)

