"""Per-class statistics of a simulated Class2D job: particle counts, accuracies, resolution.

"realistic" follows what RELION writes (see the tutorial's labels.csv): good classes are populated,
with rotational accuracies of 1.5-4.5 degrees, translational accuracies of 0.4-1 pixel and a
resolution of 2.4-6.5 pixels (10-20 A at 3.5 A/px); junk classes are mostly sparse, and any class
holding less than 1% of the particles gets RELION's "not estimated" accuracies of 999 and a
coarse resolution (25-30 A at 3.5 A/px) or ``inf`` when (almost) empty. Resolutions scale with the
pixel size but have physical floors (good classes 6-9 A, junk 20-32 A). Some good classes are
small and some junk classes populated, as in real jobs.

"uninformative" draws every class's statistics from the same mixture whatever its label (the
labels are shuffled before the draw), so metadata alone cannot tell junk from good classes.

Resolutions are quantised like RELION's: box * pixel_size / shell for an integer Fourier shell.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METADATA_MODES = ("realistic", "uninformative")
NOT_ESTIMATED = 999.0
#: RELION does not estimate accuracies for classes holding less than 1% of the particles
ACCURACY_MIN_FRACTION = 0.01


def draw_counts(rng: np.random.Generator, labels: np.ndarray, kinds, n_particles: int,
                mode: str) -> tuple:
    """(counts, meta_labels): particles per class summing to ``n_particles``.

    meta_labels are the labels the statistics are drawn from: the true ones for "realistic",
    a shuffled copy for "uninformative".
    """
    labels = np.asarray(labels, dtype=int)
    kinds = np.asarray(kinds, dtype=object)
    k = len(labels)
    meta = labels.copy() if mode == "realistic" else rng.permutation(labels)
    good = meta == 1
    log_w = np.where(good, rng.normal(0.0, 0.45, k), rng.normal(np.log(0.04), 1.3, k))
    swap = rng.random(k) < 0.12  # small good classes and populated junk classes
    log_w = np.where(swap & good, rng.normal(np.log(0.12), 0.5, k), log_w)
    log_w = np.where(swap & ~good, rng.normal(np.log(0.7), 0.5, k), log_w)
    weights = np.exp(log_w)
    base = max(0, min(10, n_particles // (2 * k)))
    if mode == "realistic":
        zero = (kinds == "empty") & (rng.random(k) < 0.6)
        weights[zero] = 0.0
        floors = np.where(good, base, np.where(zero, 0, 1))
    else:
        floors = np.full(k, max(1, base))
    while floors.sum() > n_particles:  # tiny jobs: relax the floors
        floors = np.maximum(floors - 1, 0)
    counts = floors + rng.multinomial(n_particles - floors.sum(), weights / weights.sum())
    return counts.astype(np.int64), meta


def quantise_resolution(resolution, box: int, pixel_size: float) -> np.ndarray:
    """Snap resolutions (A) to RELION's Fourier shells: box * pixel_size / shell; inf stays inf."""
    res = np.asarray(resolution, dtype=float)
    finite = np.isfinite(res)
    shell = np.clip(np.round(box * pixel_size / np.where(finite, res, 1.0)), 1, box // 2)
    return np.where(finite, box * pixel_size / shell, np.inf)


def draw_statistics(rng: np.random.Generator, meta_labels: np.ndarray, counts: np.ndarray,
                    box: int, pixel_size: float) -> pd.DataFrame:
    """Class distribution, accuracies (deg, A), resolution (A) and Fourier completeness per class."""
    counts = np.asarray(counts, dtype=np.int64)
    good = np.asarray(meta_labels) == 1
    k = len(counts)
    fraction = counts / max(1, counts.sum())
    estimated = fraction >= ACCURACY_MIN_FRACTION
    quality = np.clip((np.log10(np.maximum(counts, 1)) - 1.0) / 2.0, 0.0, 1.0)

    rot = np.where(good, 4.0 - 2.3 * quality + rng.normal(0, 0.3, k), rng.uniform(3.0, 6.0, k))
    rot = np.round(np.clip(rot, 1.5, 6.0), 1)
    trans_px = np.where(good, 1.0 - 0.5 * quality + rng.normal(0, 0.08, k), rng.uniform(0.7, 1.3, k))
    trans = np.round(np.clip(trans_px, 0.4, 1.3) * pixel_size, 2)
    # resolution: in pixels (Nyquist-limited) but never finer than physically plausible for 2D classes
    res_px = np.where(good, 5.6 - 2.6 * quality + rng.normal(0, 0.4, k), rng.uniform(6.2, 8.8, k))
    res_px = np.clip(res_px, 2.4, 9.0)
    floor = np.where(good, rng.uniform(6.0, 9.0, k), rng.uniform(20.0, 32.0, k))
    sparse_res_px = np.where(good, rng.uniform(5.5, 8.0, k), rng.uniform(6.5, 11.0, k))
    sparse_floor = np.where(good, rng.uniform(12.0, 20.0, k), rng.uniform(22.0, 40.0, k))
    resolution = np.where(estimated, np.maximum(res_px * pixel_size, floor),
                          np.maximum(sparse_res_px * pixel_size, sparse_floor))
    unresolved = (counts == 0) | ((counts <= 3) & (rng.random(k) < 0.6))
    resolution = np.where(unresolved, np.inf, resolution)
    completeness = np.where(estimated, 1.0 - np.abs(rng.normal(0, 0.002, k)), rng.uniform(0.65, 1.0, k))
    completeness = np.where(unresolved, 0.0, completeness)
    return pd.DataFrame({
        "class_distribution": fraction,
        "accuracy_rotations": np.where(estimated, rot, NOT_ESTIMATED),
        "accuracy_translations": np.where(estimated, trans, NOT_ESTIMATED),
        "resolution": quantise_resolution(resolution, box, pixel_size),
        "completeness": np.round(completeness, 6),
        "particle_count": counts,
    })
