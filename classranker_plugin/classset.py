"""The one in-memory description of a set of 2D class averages that every engine shares.

A ``ClassSet`` holds the class images, a per-class table of statistics and, when known, the
particles assigned to the classes. Readers in :mod:`classranker_plugin.io` build it; features,
scoring, the trainer and the Scipion protocols consume it.

Per-class table columns (``ClassSet.table``), one row per class, in stack order:

==================== ======================================================= ==========================
column               meaning                                                 RELION label
==================== ======================================================= ==========================
class_number         1-based class number (as rlnClassNumber)                rlnClassNumber
reference_image      ``index@path`` of the class average ('' if unknown)     rlnReferenceImage
class_distribution   fraction of particles in the class                      rlnClassDistribution
accuracy_rotations   angular accuracy, degrees                               rlnAccuracyRotations
accuracy_translations translational accuracy, Angstrom                       rlnAccuracyTranslationsAngst
resolution           estimated resolution, Angstrom                          rlnEstimatedResolution
particle_count       number of particles in the class                        (counted from data.star)
==================== ======================================================= ==========================

Unknown statistics are NaN; RELION's 999 ("not estimated") accuracies are kept as 999 because
they carry information (the class never converged), and an infinite resolution stays ``inf``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

STAT_COLUMNS = ("class_distribution", "accuracy_rotations", "accuracy_translations",
                "resolution", "particle_count")

#: our column name -> RELION STAR label
RELION_LABELS = {
    "class_number": "rlnClassNumber",
    "reference_image": "rlnReferenceImage",
    "class_distribution": "rlnClassDistribution",
    "accuracy_rotations": "rlnAccuracyRotations",
    "accuracy_translations": "rlnAccuracyTranslationsAngst",
    "resolution": "rlnEstimatedResolution",
}


@dataclass
class ClassSet:
    """Class averages with their per-class statistics and, optionally, their particles.

    images:            (n, box, box) float32 array (may be a read-only memory map)
    table:             per-class statistics, columns as in the module docstring
    pixel_size:        Angstrom per pixel of ``images``; None when unknown
    particle_diameter: mask diameter used by the classification, Angstrom; None when unknown
    particles:         particle table (RELION data.star ``particles`` block) with rlnClassNumber
    optics:            RELION 3.1+ optics table, None for RELION 3.0 files or non-RELION inputs
    source:            the file the classes were read from (for messages and provenance)
    """

    images: np.ndarray
    table: pd.DataFrame
    pixel_size: Optional[float] = None
    particle_diameter: Optional[float] = None
    particles: Optional[pd.DataFrame] = None
    optics: Optional[pd.DataFrame] = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"{self.source}: class averages must be a stack of square images, "
                             f"got shape {self.images.shape}")
        if len(self.table) != len(self.images):
            raise ValueError(f"{self.source}: {len(self.table)} classes in the table but "
                             f"{len(self.images)} images in the stack")
        for column in STAT_COLUMNS:
            if column not in self.table:
                self.table[column] = np.nan
        if "class_number" not in self.table:
            self.table["class_number"] = np.arange(1, len(self.images) + 1)
        if "reference_image" not in self.table:
            self.table["reference_image"] = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def box_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def class_numbers(self) -> np.ndarray:
        return self.table["class_number"].to_numpy(dtype=int)

    def stat(self, column: str) -> np.ndarray:
        """One statistic as a float array (NaN where unknown)."""
        return self.table[column].to_numpy(dtype=float)

    def available_stats(self) -> list[str]:
        """Names of the statistics known for every class (used to report which inputs were used)."""
        return [c for c in STAT_COLUMNS if not np.isnan(self.stat(c)).all()]
