"""The contrast convention of a stack of class averages: protein white (RELION, cryoSPARC, most cryo
processing) or protein black (many negative-stain and some EMAN2/SPHIRE outputs).

Everything downstream (features, network, plots) assumes protein white. The convention is a
property of the whole stack, so it is decided once per job: each non-blank average is standardised,
and its mean inside the particle disc is compared with the mean in the ring around it (1.05 to 1.45
radii). When at least ``MAJORITY`` of the classes are darker inside than around by more than
``MARGIN`` (in standard deviations), the stack is protein black and is inverted. Junk classes and a
few odd views do not flip a job: it takes a clear majority.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .classset import ClassSet

log = logging.getLogger(__name__)

MAJORITY = 0.7
MARGIN = 0.1
DEFAULT_RADIUS_FRACTION = 0.3  # of the box, when the particle diameter or pixel size is unknown


def particle_radius_px(classset: ClassSet) -> float:
    box = classset.box_size
    if classset.particle_diameter and classset.pixel_size:
        radius = classset.particle_diameter / 2.0 / classset.pixel_size
    else:
        radius = DEFAULT_RADIUS_FRACTION * box
    return float(np.clip(radius, 0.1 * box, 0.5 * box / 1.45))


def inside_minus_ring(images: np.ndarray, radius: float) -> np.ndarray:
    """Per image: mean of the standardised image inside ``radius`` minus its mean in the ring
    1.05-1.45 radii (NaN for a blank image)."""
    box = images.shape[-1]
    y, x = np.mgrid[:box, :box] - (box - 1) / 2.0
    r = np.hypot(x, y) / radius
    inside, ring = r <= 1.0, (r >= 1.05) & (r <= 1.45)
    # (mean of z inside) - (mean of z in the ring) = (mean inside - mean in the ring) / std: sums of
    # the raw images, in float64, a few images at a time (no float64 copy of the whole stack)
    flat = images.reshape(len(images), -1)
    masks = np.stack([np.ones(flat.shape[1]), inside.ravel(), ring.ravel()], axis=1).astype(np.float64)
    sums, std = np.empty((len(flat), 3)), np.empty(len(flat))
    step = max(1, (1 << 18) // max(flat.shape[1], 1))
    for start in range(0, len(flat), step):
        block = flat[start:start + step].astype(np.float64)
        sums[start:start + step] = block @ masks
        block -= sums[start:start + step, :1] / flat.shape[1]          # np.std's two passes
        std[start:start + step] = np.sqrt(np.einsum("ij,ij->i", block, block) / flat.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / masks.sum(axis=0)
        return (means[:, 1] - means[:, 2]) / np.where(std > 0, std, np.nan)


def protein_is_dark(classset: ClassSet) -> tuple[bool, float]:
    """(True when the stack stores protein black, share of classes that say so)."""
    # a majority vote with a coarse margin: every step-th pixel (about 64 px across) is plenty
    step = max(1, classset.box_size // 64)
    contrast = inside_minus_ring(classset.images[:, ::step, ::step], particle_radius_px(classset) / step)
    contrast = contrast[np.isfinite(contrast)]
    if len(contrast) == 0:
        return False, 0.0
    dark = float((contrast < -MARGIN).mean())
    return dark >= MAJORITY, dark


def orient_contrast(classset: ClassSet, invert: Optional[bool] = None) -> ClassSet:
    """``classset`` with protein white: its images negated when the stack is protein black (or when
    ``invert`` says so). Records ``extra["contrast_inverted"]``."""
    if invert is None:
        invert, share = protein_is_dark(classset)
        if invert:
            log.warning("%s: protein is darker than its surroundings in %.0f%% of the classes (e.g. negative "
                        "stain); the averages are inverted to protein white for scoring",
                        classset.source, 100 * share)
    if invert:
        classset.images = -np.asarray(classset.images, dtype=np.float32)
    classset.extra["contrast_inverted"] = bool(invert)
    return classset
