"""Per-class metadata the feature sets share: particle numbers and the sampling of the averages."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..classset import ClassSet


def positive_or_none(value) -> Optional[float]:
    """``value`` as a float when it is a finite positive number, else None (unknown)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def total_particles(classset: ClassSet) -> float:
    """Number of particles of the whole job: the particle table when present, else the sum of the
    known per-class counts, else NaN."""
    if classset.particle_set is not None:
        return float(len(classset.particle_set))
    counts = classset.stat("particle_count")
    return float(np.nansum(counts)) if np.isfinite(counts).any() else float("nan")


def counted_particles(classset: ClassSet) -> np.ndarray:
    """(n,) particles per class from the particle table (NaN without one)."""
    n = len(classset)
    particles = classset.particle_set  # per-class counts; a streamed data.star is not read again
    if particles is None or not particles.has_class_column:
        return np.full(n, np.nan)
    return particles.counts_for(classset.class_numbers)


def particle_counts(classset: ClassSet) -> np.ndarray:
    """(n,) particles per class: the ``particle_count`` column, else counted from the particle
    table, else NaN (unknown)."""
    counts = classset.stat("particle_count").copy()
    missing = ~np.isfinite(counts)
    if missing.any():
        counts[missing] = counted_particles(classset)[missing]
    return counts


def relion_particle_numbers(classset: ClassSet) -> np.ndarray:
    """(n,) RELION's per-class particle number: class_distribution x total particles of the job.

    Where the distribution or the total is unknown the per-class count is used; NaN if neither.
    """
    estimate = classset.stat("class_distribution") * total_particles(classset)
    missing = ~np.isfinite(estimate)
    if missing.any():
        estimate[missing] = particle_counts(classset)[missing]
    return estimate
