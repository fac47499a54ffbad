"""Trivial rankers that any model must beat, computed on the same classes as the model.

Each baseline turns per-class statistics into a higher-is-better score:

==================== ===========================================================================
name                 score
==================== ===========================================================================
class_distribution   fraction of the particles in the class (big classes are often good)
resolution           minus the estimated resolution in Angstrom (finer is better; inf = worst)
particle_count       number of particles in the class
empty_heuristic      variance of the class average inside the particle mask divided by the total
                     variance inside + outside it (signal in the middle, flat solvent around)
==================== ===========================================================================

A statistic that is unknown for a class (NaN) ranks that class below all others; a baseline whose
statistic is unknown for every class is reported as unavailable.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

BASELINES = ("class_distribution", "resolution", "particle_count", "empty_heuristic")
#: fraction of the box taken as the particle radius when the particle diameter is unknown
DEFAULT_RADIUS_FRACTION = 0.35


def mask_radius_px(box: int, pixel_size: Optional[float], particle_diameter: Optional[float]) -> float:
    """Particle radius in pixels: diameter / 2 / pixel size, or 0.35 box when either is unknown."""
    if pixel_size and particle_diameter and np.isfinite(pixel_size) and np.isfinite(particle_diameter):
        radius = particle_diameter / 2.0 / pixel_size
    else:
        radius = DEFAULT_RADIUS_FRACTION * box
    return float(np.clip(radius, 0.1 * box, 0.45 * box))


def empty_heuristic(images: np.ndarray, pixel_size: Optional[float] = None,
                    particle_diameter: Optional[float] = None, chunk: int = 256) -> np.ndarray:
    """Per image: var(inside the mask) / (var(inside) + var(outside)); 0 for a constant image."""
    n, box = len(images), images.shape[-1]
    radius = mask_radius_px(box, pixel_size, particle_diameter)
    y, x = np.mgrid[:box, :box] - (box - 1) / 2.0
    r = np.hypot(x, y)
    inside, outside = r <= radius, (r > radius) & (r <= box / 2.0)
    out = np.zeros(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64)
        var_in = block[:, inside].var(axis=1)
        var_out = block[:, outside].var(axis=1)
        total = var_in + var_out
        out[start:start + chunk] = np.where(total > 0, var_in / np.where(total > 0, total, 1.0), 0.0)
    return out


def baseline_scores(table: pd.DataFrame) -> dict:
    """name -> score array from a per-class table with our statistic columns and ``empty_score``.

    Only the baselines with at least one known value are returned.
    """
    def column(name):
        if name not in table:
            return np.full(len(table), np.nan)
        return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)

    resolution = column("resolution")
    candidates = {
        "class_distribution": column("class_distribution"),
        "resolution": np.where(np.isnan(resolution), np.nan, -resolution),
        "particle_count": column("particle_count"),
        "empty_heuristic": column("empty_score"),
    }
    return {name: values for name, values in candidates.items() if not np.isnan(values).all()}
