"""RELION's 24 class-ranker features, computed from their written description.

Written from the behaviour described in ``shared/notes/relion-class-ranker.md`` (RELION's
relion_class_ranker, Kimanius et al. 2021); no RELION code is used. The vector feeds RELION's own
models (relion_models.py), so order, units and normalisation follow RELION:

* the class average is Fourier-resampled to 4 A/px (size = round(box * apix / 4), even, mean
  kept); R = min(size / 2, particle_diameter / 8) pixels;
* raw values of features 0-20 become ``(x - mean) / std`` with RELION's fixed constants
  (``RELION_MEANS``, ``RELION_STDS``); 21-23 are z-scored over the scored classes of the job
  (classes with more than 10 particles; population stddev; 0 when it is < 1e-10).

Where RELION would have data we do not, we fall back as follows (documented choices):

* unknown accuracy, resolution or particle number: the feature's mean (0 after normalisation);
* accuracies of 99 and above (RELION's 999 "not estimated", which RELION recomputes from the
  particles) are capped at ``ACCURACY_CAP`` degrees / Angstrom: large, but finite;
* infinite resolution: weighted resolution 1/res^2 = 0, relative resolution capped at
  ``RELATIVE_RESOLUTION_CAP`` (the whole box);
* unknown pixel size: the average is used at its own sampling as if it were 4 A/px;
* unknown particle diameter: ``DEFAULT_DIAMETER_FRACTION`` of the box.
"""
from __future__ import annotations

import numpy as np

from ..classset import ClassSet
from .image import (as_stack, even_size, fourier_resample, label_stack, lowpass,
                    masked_moments, opening_sums, radius_grid, ring_mask)
from .metadata import positive_or_none, relion_particle_numbers

RELION_FEATURE_NAMES = [
    "accuracy_rotations", "accuracy_translations", "weighted_resolution", "relative_resolution",
    "ring_mean", "ring_stddev", "protein_stddev", "solvent_mean", "solvent_stddev",
    "scattered_signal", "edge_signal",
    "lowpass_mean", "lowpass_stddev", "lowpass_min", "lowpass_max",
    "granulo_1", "granulo_2", "granulo_3", "granulo_4", "granulo_5", "granulo_6",
    "protein_sum", "solvent_sum", "relative_signal_intensity",
]

#: normalisation of features 0-20: (raw - mean) / std
RELION_MEANS = np.array([
    4.352, 3.871, 0.001, 0.061,
    -0.199, 0.424, 0.744, -0.380, 0.292,
    0.024, 0.047,
    0.116, 0.638, -1.112, 2.990,
    837.576, 726.097, 602.175, 483.469, 328.014, 196.059,
])
RELION_STDS = np.array([
    4.759, 3.019, 0.002, 0.088,
    0.283, 0.629, 0.585, 0.378, 0.485,
    0.075, 0.075,
    0.182, 0.429, 1.087, 1.758,
    1958.823, 2845.330, 3605.858, 4001.972, 4399.578, 4709.751,
])
N_FIXED = len(RELION_MEANS)        # features 0-20; 21-23 are z-scored per job

TARGET_PIXEL_SIZE = 4.0            # A/px of the image the features are measured on
LOWPASS_RESOLUTION = 25.0          # A
LOWPASS_EDGE_SHELLS = 2.0
THRESHOLD_FRACTION = 0.05          # of the low-passed image's stddev
INNER_FRACTION = 0.6               # seeds and the protein test live within 0.6 R
PROTEIN_INNER_FRACTION = 0.1       # an island is protein when > 0.1 * pi * (0.6 R)^2 of it is within 0.6 R
RING_INNER_FRACTION = 0.95
GRANULO_RADII = (1, 2, 3, 4, 5, 6)
MIN_SCORED_PARTICLES = 10          # RELION leaves classes with <= 10 particles unscored
ACCURACY_CAP = 99.0
RELATIVE_RESOLUTION_CAP = 1.0
DEFAULT_DIAMETER_FRACTION = 0.75


def _normalise_fixed(raw: np.ndarray) -> np.ndarray:
    """(raw - mean) / std column by column; NaN (unknown) becomes 0, the mean."""
    normalised = (raw - RELION_MEANS) / RELION_STDS
    return np.where(np.isfinite(normalised), normalised, 0.0)


def _zscore(values: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Per-job z-score with the mean and population stddev of the scored classes."""
    reference = values[scored] if scored.any() else values
    mean = reference.mean() if reference.size else 0.0
    std = reference.std() if reference.size else 0.0
    if not np.isfinite(std) or std < 1e-10:
        return np.zeros_like(values)
    return (values - mean) / std


def _metadata_features(classset: ClassSet) -> np.ndarray:
    """(n, 4) raw accuracy rotations, accuracy translations, weighted and relative resolution."""
    rotations = np.minimum(classset.stat("accuracy_rotations"), ACCURACY_CAP)
    translations = np.minimum(classset.stat("accuracy_translations"), ACCURACY_CAP)
    resolution = classset.stat("resolution")
    resolution = np.where(resolution > 0, resolution, np.nan)
    particles = relion_particle_numbers(classset)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_particles = np.where(particles > 1, np.log(np.where(particles > 1, particles, 2.0)), np.nan)
        weighted = (1.0 / resolution ** 2) / log_particles
        apix = positive_or_none(classset.pixel_size)
        if apix is None:
            relative = np.full(len(classset), np.nan)
        else:
            relative = np.minimum(resolution / (classset.box_size * apix), RELATIVE_RESOLUTION_CAP)
    return np.stack([rotations, translations, weighted, relative], axis=1)


def relion_segmentation(lowpassed: np.ndarray, radius: float):
    """RELION's protein mask of every low-passed 4 A/px image and the area of its scattered islands.

    Pixels above 0.05 x the image's stddev inside R form 4-connected islands; islands reaching
    within 0.6 R are seeds; a seeded island with more than 0.1 * pi * (0.6 R)^2 pixels within 0.6 R
    is protein, the other seeded islands are scattered signal. Returns ``(protein (n, s, s) bool,
    scattered_area (n,))``.
    """
    lowpassed = np.asarray(lowpassed, dtype=np.float64)
    n, size = lowpassed.shape[0], lowpassed.shape[1]
    r = radius_grid(size)
    r2 = r * r
    inside = r2 <= radius * radius
    inner = r2 <= (INNER_FRACTION * radius) ** 2
    threshold = THRESHOLD_FRACTION * lowpassed.reshape(n, -1).std(axis=1)
    binary = (lowpassed > threshold[:, None, None]) & inside
    labels, owner, n_labels = label_stack(binary, connectivity=4)
    inner_count = np.bincount(labels[:, inner].ravel(), minlength=n_labels + 1)
    area = np.bincount(labels.ravel(), minlength=n_labels + 1)
    is_protein = inner_count > PROTEIN_INNER_FRACTION * np.pi * (INNER_FRACTION * radius) ** 2
    is_scattered = (inner_count > 0) & ~is_protein
    is_protein[0] = is_scattered[0] = False
    scattered_area = np.bincount(owner[is_scattered], weights=area[is_scattered], minlength=n)
    return is_protein[labels], scattered_area


def _image_features(classset: ClassSet):
    """(n, 17) raw image features 4-20 and (n, 3) raw per-job features 21-23."""
    images = as_stack(classset.images)
    n, box = images.shape[0], images.shape[1]
    apix = positive_or_none(classset.pixel_size)
    size = even_size(box * apix / TARGET_PIXEL_SIZE, minimum=8) if apix else box
    small = fourier_resample(images, size).astype(np.float64)

    diameter = positive_or_none(classset.particle_diameter)
    if diameter is None:
        radius = DEFAULT_DIAMETER_FRACTION * size / 2.0
    else:
        radius = min(size / 2.0, diameter / (2.0 * TARGET_PIXEL_SIZE))

    ring = masked_moments(small, ring_mask(size, RING_INNER_FRACTION * radius, radius))

    low = lowpass(small.astype(np.float32), size * TARGET_PIXEL_SIZE / LOWPASS_RESOLUTION,
                  LOWPASS_EDGE_SHELLS).astype(np.float64)
    low_flat = low.reshape(n, -1)
    low_stats = [low_flat.mean(axis=1), low_flat.std(axis=1), low_flat.min(axis=1), low_flat.max(axis=1)]

    r = radius_grid(size)
    inside = r * r <= radius * radius
    protein, scattered_area = relion_segmentation(low, radius)
    solvent = inside & ~protein
    protein_area = protein.sum(axis=(1, 2)).astype(np.float64)

    protein_moments = masked_moments(small, protein)
    solvent_moments = masked_moments(small, solvent)
    scattered = scattered_area / (scattered_area + protein_area + 1.0)
    edge = np.rint(r) == np.rint(radius)
    edge_signal = (protein & edge).sum(axis=(1, 2)) / max(int(edge.sum()), 1)

    granulo = list(opening_sums(small, GRANULO_RADII).T)

    fixed = np.stack([ring.mean, ring.std, protein_moments.std, solvent_moments.mean,
                      solvent_moments.std, scattered, edge_signal, *low_stats, *granulo], axis=1)
    relative_signal = protein_moments.sum - solvent_moments.mean * protein_area
    per_job = np.stack([protein_moments.sum, solvent_moments.sum, relative_signal], axis=1)
    return fixed, per_job


def relion_raw_features(classset: ClassSet) -> np.ndarray:
    """(n, 24) float64 raw (unnormalised) features; NaN where metadata is unknown."""
    if len(classset) == 0:
        return np.zeros((0, len(RELION_FEATURE_NAMES)))
    fixed_image, per_job = _image_features(classset)
    return np.concatenate([_metadata_features(classset), fixed_image, per_job], axis=1)


def scored_classes(classset: ClassSet) -> np.ndarray:
    """(n,) bool: the classes RELION scores (more than 10 particles); all when counts are unknown."""
    particles = relion_particle_numbers(classset)
    if not np.isfinite(particles).any():
        return np.ones(len(classset), bool)
    return particles > MIN_SCORED_PARTICLES


def normalise_relion(raw: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """RELION's normalisation of (n, 24) raw features: fixed constants for 0-20, per-job z-scores
    over the ``scored`` classes for 21-23; unknown (NaN) -> 0."""
    fixed = _normalise_fixed(raw[:, :N_FIXED])
    zscored = np.stack([_zscore(raw[:, i], scored) for i in range(N_FIXED, raw.shape[1])], axis=1)
    values = np.concatenate([fixed, zscored], axis=1)
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def relion_features(classset: ClassSet) -> np.ndarray:
    """(n, 24) float32 RELION class-ranker features, normalised as RELION does."""
    if len(classset) == 0:
        return np.zeros((0, len(RELION_FEATURE_NAMES)), dtype=np.float32)
    return normalise_relion(relion_raw_features(classset), scored_classes(classset))
