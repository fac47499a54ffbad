"""RELION-compatible outputs: per-class scores, selected class_averages.star, particles.star subset.

Every writer goes through :func:`classranker_plugin.io.star.write_star` (atomic: temporary file +
``os.replace``) and returns the path written. Statistics unknown for every class are left out;
partly unknown ones are written as ``nan``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..classset import ClassSet, RELION_LABELS, Selection
from ..errors import InputError
from .particles import RowCountMismatch, write_subset
from .star import write_star

PathLike = Union[str, os.PathLike]
_STAT_COLUMNS = ("class_distribution", "accuracy_rotations", "accuracy_translations", "resolution")
FEATURE_NAMES_BLOCK = "feature_names"
FEATURE_NAME_LABEL = "classrankerFeatureName"


def _per_class(values, classset: ClassSet, what: str, dtype=float) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != (len(classset),):
        raise ValueError(f"{what}: expected {len(classset)} values (one per class), got shape "
                         f"{array.shape}")
    return array


def format_feature_vector(row: np.ndarray) -> str:
    """RELION's vector text: ``[a,b,c]``, no blanks."""
    return "[" + ",".join(f"{v:.6g}" for v in row) + "]"


def _known_stats(classset: ClassSet, rows: np.ndarray) -> dict:
    """RELION label -> values (of ``rows``) for the statistics known for at least one class."""
    out = {}
    for column in _STAT_COLUMNS:
        values = classset.stat(column)
        if not np.isnan(values).all():
            out[RELION_LABELS[column]] = values[rows]
    relion_columns = classset.extra.get("relion_class_columns")
    if isinstance(relion_columns, pd.DataFrame) and len(relion_columns) == len(classset):
        for label in relion_columns.columns:
            out.setdefault(label, relion_columns[label].to_numpy()[rows])
    return out


def write_class_scores(path: PathLike, classset: ClassSet, scores: Sequence[float],
                       selected: Sequence[bool], feature_vectors: Optional[np.ndarray] = None,
                       feature_names: Optional[Sequence[str]] = None,
                       extra_columns: Optional[Mapping[str, Sequence]] = None) -> Path:
    """STAR ``model_classes`` table: rlnClassNumber, rlnReferenceImage, rlnClassScore, rlnSelected
    (1/0), the known RELION statistics, rlnNormalizedFeatureVector ("[a,b,...]") and
    ``extra_columns`` (label -> one value per class). ``feature_names`` go to a second block,
    ``data_feature_names`` (column classrankerFeatureName)."""
    rows = np.arange(len(classset))
    scores = _per_class(scores, classset, "scores")
    selected = _per_class(selected, classset, "selected", dtype=bool)
    columns = {"rlnClassNumber": classset.class_numbers,
               "rlnReferenceImage": classset.table["reference_image"].astype(str).to_numpy(),
               "rlnClassScore": scores,
               "rlnSelected": selected.astype(int)}
    columns.update(_known_stats(classset, rows))
    blocks = {}
    if feature_vectors is not None:
        vectors = np.asarray(feature_vectors, dtype=float)
        if vectors.ndim != 2 or len(vectors) != len(classset):
            raise ValueError(f"feature_vectors: expected ({len(classset)}, F), got {vectors.shape}")
        if feature_names is not None and len(feature_names) != vectors.shape[1]:
            raise ValueError(f"{len(feature_names)} feature names for {vectors.shape[1]} features")
        columns["rlnNormalizedFeatureVector"] = [format_feature_vector(v) for v in vectors]
    for label, values in (extra_columns or {}).items():
        columns[label] = _per_class(values, classset, label, dtype=None)
    blocks["model_classes"] = pd.DataFrame(columns)
    if feature_names is not None:
        blocks[FEATURE_NAMES_BLOCK] = pd.DataFrame({FEATURE_NAME_LABEL: [str(n) for n in feature_names]})
    return write_star(path, blocks)


def write_selected_class_averages(path: PathLike, classset: ClassSet, selected: Sequence[bool],
                                  scores: Sequence[float]) -> Path:
    """RELION class_averages.star of the selected classes, by decreasing score: rlnReferenceImage,
    rlnPredictedClassScore, the known statistics, rlnClassNumber."""
    selected = _per_class(selected, classset, "selected", dtype=bool)
    scores = _per_class(scores, classset, "scores")
    chosen = np.flatnonzero(selected)
    rows = chosen[np.argsort(-scores[chosen], kind="stable")]  # NaN scores last
    columns = {"rlnReferenceImage": classset.table["reference_image"].astype(str).to_numpy()[rows],
               "rlnPredictedClassScore": scores[rows]}
    columns.update(_known_stats(classset, rows))
    columns["rlnClassNumber"] = classset.class_numbers[rows]
    return write_star(path, {"": pd.DataFrame(columns)})


def select_particles(particles: pd.DataFrame, class_numbers: Iterable[int]) -> pd.DataFrame:
    """Rows of ``particles`` whose rlnClassNumber is in ``class_numbers``, in their original order."""
    wanted = np.unique(np.asarray(list(class_numbers), dtype=np.int64))
    mask = np.isin(particles["rlnClassNumber"].to_numpy(), wanted)
    return particles.loc[mask]


def write_particles(path: PathLike, classset: ClassSet, selected_class_numbers: Iterable[int],
                    rejected_path: Optional[PathLike] = None) -> Path:
    """particles.star with the particles of the selected classes, in their original order.

    RELION 3.1+ input: optics table kept as read, then the ``particles`` table; RELION 3.0 input:
    one unnamed table, as it came. When the particles come from a data.star (``extra["data_star"]``)
    its rows are copied verbatim in one streamed pass (:mod:`.particles`), memory independent of the
    number of particles; otherwise the table is written. ``rejected_path``: also write the other
    particles there (same pass).
    """
    particle_set = classset.particle_set
    if particle_set is None:
        raise InputError("no particles to write (no data.star was read)", classset.source or None,
                         "give the job's run_itNNN_data.star (data_star=...)")
    wanted = np.asarray(list(selected_class_numbers), dtype=np.int64)
    unknown = np.setdiff1d(wanted, classset.class_numbers)
    if unknown.size:
        raise ValueError(f"selected class numbers {unknown.tolist()} are not among the classes")
    if particle_set.table_loaded:  # rows chosen from the table as it is now
        selection = Selection(rows=np.isin(particle_set.class_numbers, wanted))
    else:
        selection = Selection(classes=wanted)
    return _write_selection(path, classset, selection, rejected_path)


def write_particle_rows(path: PathLike, classset: ClassSet, keep: Sequence[bool],
                        rejected_path: Optional[PathLike] = None) -> Path:
    """Like :func:`write_particles` for a per-particle choice: the particles where ``keep`` is True
    (one flag per particle, file order), and the others in ``rejected_path`` if given."""
    particle_set = classset.particle_set
    if particle_set is None:
        raise InputError("no particles to write (no data.star was read)", classset.source or None,
                         "give the job's run_itNNN_data.star (data_star=...)")
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(particle_set),):
        raise ValueError(f"expected {len(particle_set)} particle flags, got shape {keep.shape}")
    return _write_selection(path, classset, Selection(rows=keep), rejected_path)


def _write_selection(path: PathLike, classset: ClassSet, selection: Selection,
                     rejected_path: Optional[PathLike]) -> Path:
    """The streamed verbatim copy from the particles' data.star when there is one, else the table."""
    particle_set = classset.particle_set
    if particle_set.write_subset is not None:  # the reader's own way (a data.star's verbatim rows, a .cs's rows)
        try:
            particle_set.write_subset(path, selection, rejected_path)
            return Path(path)
        except RowCountMismatch:
            if not particle_set.table_loaded:
                raise
    particles = classset.particles
    for target, chosen in ((path, selection), (rejected_path, selection.inverted())):
        if target is None:
            continue
        subset = particles.loc[chosen.mask(particles["rlnClassNumber"].to_numpy())]
        if classset.optics is not None:
            blocks = {"optics": classset.optics, "particles": subset}
        else:
            blocks = {"": subset}
        write_star(target, blocks)
    return Path(path)


def copy_selected_rows(source: PathLike, block: Optional[str], keep: np.ndarray, path: PathLike) -> bool:
    """Write ``source`` with only the rows of its particles loop where ``keep`` is True, verbatim.

    Streamed (:func:`.particles.write_subset`); returns False, writing nothing, when the file's
    rows do not line up one to one with ``keep`` (then the caller writes from the table).
    ``block`` is kept for compatibility: the particles loop is found as the readers find it.
    """
    try:
        write_subset(source, [(path, Selection(rows=np.asarray(keep, dtype=bool)))],
                     expected_rows=len(keep))
    except RowCountMismatch:
        return False
    return True
