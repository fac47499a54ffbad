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
from typing import Callable, Optional, Union

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


@dataclass(frozen=True)
class Selection:
    """Which particles a subset keeps: those of ``classes``, or ``rows`` (one bool per particle)."""

    classes: Optional[np.ndarray] = None
    rows: Optional[np.ndarray] = None
    invert: bool = False

    def mask(self, particle_classes: np.ndarray, first_row: int = 0) -> np.ndarray:
        """Bool per particle of ``particle_classes`` (the particles ``first_row``, ``first_row + 1``, ...)."""
        if self.rows is not None:
            keep = np.asarray(self.rows[first_row:first_row + len(particle_classes)], dtype=bool)
            if len(keep) != len(particle_classes):
                raise ValueError(f"{len(self.rows)} row flags for at least "
                                 f"{first_row + len(particle_classes)} particles")
        else:
            keep = _member(np.asarray(particle_classes), np.asarray(self.classes, dtype=np.int64))
        return ~keep if self.invert else keep

    def inverted(self) -> "Selection":
        return Selection(self.classes, self.rows, not self.invert)


def _member(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """np.isin(values, wanted): a lookup table when both are small non-negative integers (class
    numbers; 10x faster than isin's sort on every chunk of a 10^7-particle scan)."""
    if (values.size and wanted.size and values.dtype.kind in "iu" and values.min() >= 0
            and wanted.min() >= 0 and max(values.max(), wanted.max()) < 1 << 20):
        table = np.zeros(int(max(values.max(), wanted.max())) + 1, dtype=bool)
        table[wanted] = True
        return table[values]
    return np.isin(values, wanted)


#: write_subset(path, selection, rejected_path) -> path: writes the selected particles (and, if
#: rejected_path is given, the others) from the particles' own file, in one pass
SubsetWriter = Callable[..., object]


class ParticleSet:
    """The particles of a ClassSet without their whole table: enough to count, check and subset them.

    Built from one class number per particle (``from_classes``), from a table (``from_table``) or
    by a streaming reader that gives per-class counts and loads the class numbers only on demand.
    Besides the class numbers it holds two strategies: ``write_subset(path, selection,
    rejected_path=None)`` writes a subset from the particles' own file (a RELION data.star is
    copied row by row, verbatim) and ``load_table()`` reads the full table (a DataFrame), only for
    code that needs every column (Scipion import, rebalance on a table).

    class_numbers: int array, one per particle in file order (or None with ``load_class_numbers``)
    counts:        (distinct class numbers, particles in each) when known without the array
    source:        the particles' file, for messages
    """

    def __init__(self, class_numbers: Optional[np.ndarray] = None, *, source: str = "",
                 counts: Optional[tuple] = None,
                 load_class_numbers: Optional[Callable[[], np.ndarray]] = None,
                 write_subset: Optional[SubsetWriter] = None,
                 load_table: Optional[Callable[[], pd.DataFrame]] = None,
                 table: Optional[pd.DataFrame] = None):
        if class_numbers is None and counts is None and table is None:
            raise ValueError("a ParticleSet needs class numbers, counts or a table")
        self._class_numbers = None if class_numbers is None else np.asarray(class_numbers)
        self._counts = None if counts is None else (np.asarray(counts[0], dtype=np.int64),
                                                    np.asarray(counts[1], dtype=np.int64))
        self._load_class_numbers = load_class_numbers
        self._table = table
        self.source = str(source)
        self.write_subset = write_subset
        self.load_table = load_table

    @classmethod
    def from_classes(cls, class_numbers: np.ndarray, source: str = "",
                     write_subset: Optional[SubsetWriter] = None,
                     load_table: Optional[Callable[[], pd.DataFrame]] = None) -> "ParticleSet":
        """From one class number per particle (e.g. a cryoSPARC .cs column, + 1)."""
        return cls(np.asarray(class_numbers), source=source, write_subset=write_subset,
                   load_table=load_table)

    @classmethod
    def from_table(cls, table: pd.DataFrame, source: str = "",
                   write_subset: Optional[SubsetWriter] = None) -> "ParticleSet":
        """From a particle table; class numbers are read from its rlnClassNumber column, live."""
        return cls(table=table, source=source, write_subset=write_subset)

    # ------------------------------------------------------------------ class numbers
    @property
    def has_class_column(self) -> bool:
        return self._table is None or "rlnClassNumber" in self._table

    @property
    def class_numbers(self) -> np.ndarray:
        """Class number of every particle, file order (may read the file once more)."""
        if self._table is not None:
            if "rlnClassNumber" not in self._table:
                raise KeyError("rlnClassNumber")
            return self._table["rlnClassNumber"].to_numpy()
        if self._class_numbers is None:
            self._class_numbers = np.asarray(self._load_class_numbers())
        return self._class_numbers

    def class_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct class numbers, increasing; number of particles of each)."""
        if self._table is None and self._counts is not None:
            return self._counts
        numbers = self.class_numbers
        numbers = numbers[np.isfinite(numbers.astype(float))].astype(np.int64) \
            if numbers.dtype.kind not in "iu" else numbers.astype(np.int64, copy=False)
        values, counts = np.unique(numbers, return_counts=True)
        if self._table is None:
            self._counts = (values, counts)
        return values, counts

    def counts_for(self, class_numbers: np.ndarray) -> np.ndarray:
        """Particles of each of ``class_numbers`` (float array aligned with it; 0 where none)."""
        class_numbers = np.asarray(class_numbers, dtype=np.int64)
        values, counts = self.class_counts()
        where = np.searchsorted(values, class_numbers)
        found = where < len(values)
        found[found] = values[where[found]] == class_numbers[found]
        out = np.zeros(len(class_numbers))
        out[found] = counts[where[found]]
        return out

    def __len__(self) -> int:
        if self._table is not None:
            return len(self._table)
        if self._class_numbers is not None:
            return len(self._class_numbers)
        return int(self._counts[1].sum())

    # ------------------------------------------------------------------ table
    @property
    def table_loaded(self) -> bool:
        return self._table is not None

    def table(self) -> pd.DataFrame:
        """The full particle table (read once, then kept)."""
        if self._table is None:
            if self.load_table is None:
                raise ValueError(f"{self.source or 'particles'}: no table to load")
            self._table = self.load_table()
        return self._table



@dataclass
class ClassSet:
    """Class averages with their per-class statistics and, optionally, their particles.

    images:            (n, box, box) float32 array (may be a read-only memory map)
    table:             per-class statistics, columns as in the module docstring
    pixel_size:        Angstrom per pixel of ``images``; None when unknown
    particle_diameter: mask diameter used by the classification, Angstrom; None when unknown
    particles:         particle table (RELION data.star ``particles`` block) with rlnClassNumber, or
                       a :class:`ParticleSet` (then the table is read only if ``.particles`` is asked
                       for); ``particle_set`` is the light view every engine uses
    optics:            RELION 3.1+ optics table, None for RELION 3.0 files or non-RELION inputs
    source:            the file the classes were read from (for messages and provenance)
    """

    images: np.ndarray
    table: pd.DataFrame
    pixel_size: Optional[float] = None
    particle_diameter: Optional[float] = None
    particles: Union[pd.DataFrame, "ParticleSet", None] = field(default=None, repr=False, compare=False)
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

    @property
    def particle_set(self) -> Optional[ParticleSet]:
        """The light view of the particles (None without particles); never reads the whole table."""
        return self._particle_set

    @property
    def has_particles(self) -> bool:
        return self._particle_set is not None


def _get_particles(self) -> Optional[pd.DataFrame]:
    """The particle table; a streamed data.star is read in full (starfile) the first time."""
    particle_set = self.__dict__.get("_particle_set")
    return None if particle_set is None else particle_set.table()


def _set_particles(self, value) -> None:
    if value is None or isinstance(value, ParticleSet):
        self._particle_set = value
    elif isinstance(value, pd.DataFrame):
        self._particle_set = ParticleSet.from_table(value, source=self.source)
    else:
        raise TypeError(f"particles: expected a DataFrame, a ParticleSet or None, got {type(value)}")


ClassSet.particles = property(_get_particles, _set_particles, doc=_get_particles.__doc__)
ClassSet._particle_set = None
