"""Label sources for the dataset builder: where labelled classes come from.

Every source yields :class:`Chunk` objects, one per job (a set of classes read together), holding
the network images, feature vectors, labels in [0, 1] and a per-class meta table. Sources:

- :class:`JobSource`: a classification job (job folder, run_itNNN_model.star or .mrcs stack) with
  labels from a CSV (``class_number`` plus ``label`` or ``score``). A simulator job folder brings its
  own ``truth.csv``.
- :class:`ClassSetSource`: a ClassSet and the class numbers a user kept by hand (kept = 1, others 0),
  what the Scipion protocol builds from a manual subset.
- :class:`~classranker_plugin.training.star_source.StarSource`: RELION's training-format STAR.
- :class:`~classranker_plugin.training.dataset_source.DatasetSource`: a dataset folder already built.

:func:`open_source` turns a command-line argument into the right source.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..classset import ClassSet
from ..errors import InputError
from ..io.validate import empty_class_mask, listed
from .baselines import empty_heuristic

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

META_STATS = ("class_distribution", "accuracy_rotations", "accuracy_translations", "resolution",
              "particle_count")
TRUTH_FILE = "truth.csv"
_ITERATION = re.compile(r"_it(\d+)_model\.star$")


@dataclass
class BuildOptions:
    """How classes become network inputs (shared by every source of one dataset)."""

    feature_set: str = "classranker"
    image_size: int = 64
    image_kind: Optional[str] = None       # None: "relion" for the relion feature set, else "classranker"
    pixel_size: Optional[float] = None     # override for inputs that do not know it
    particle_diameter: Optional[float] = None

    def resolved_image_kind(self) -> str:
        return self.image_kind or ("relion" if self.feature_set == "relion" else "classranker")


@dataclass
class Chunk:
    """Labelled classes of one job, ready to be appended to a dataset."""

    images: np.ndarray          # (n, size, size) float32 network images
    features: np.ndarray        # (n, F) float32, raw (unnormalised) feature vectors
    labels: np.ndarray          # (n,) float32 in [0, 1]
    meta: pd.DataFrame          # job, class_number, kind, statistics, empty_score
    feature_names: list
    feature_set: str
    image_kind: str
    origin: str = ""            # file named in error messages

    def __len__(self) -> int:
        return len(self.labels)


def check_labels(labels: np.ndarray, path, what: str = "label") -> np.ndarray:
    """Labels as float32; InputError naming the file when any is missing or outside [0, 1]."""
    labels = np.asarray(labels, dtype=np.float64)
    bad = ~np.isfinite(labels) | (labels < 0) | (labels > 1)
    if bad.any():
        raise InputError(f"{bad.sum()} {what}(s) missing or outside [0, 1] (first: {labels[bad][0]} in "
                         f"row {int(np.flatnonzero(bad)[0]) + 1})", path,
                         "give scores from 0 (junk) to 1 (good), e.g. 1 for kept classes and 0 for rejected")
    return labels.astype(np.float32)


def network_images(classset: ClassSet, options: BuildOptions) -> np.ndarray:
    """The images the network sees, as the scorer makes them."""
    from ..preprocess import model_images, relion_model_images
    if options.resolved_image_kind() == "relion":
        images = relion_model_images(classset)
    else:
        images = model_images(classset, size=options.image_size)
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] != (options.image_size, options.image_size):
        raise InputError(f"network images are {images.shape[1]} px but the dataset uses "
                         f"{options.image_size} px", classset.source, "build the dataset with --image-size "
                         f"{images.shape[1]}")
    return images


def classset_chunk(classset: ClassSet, labels: np.ndarray, options: BuildOptions, job: str,
                   kinds: Optional[Sequence[str]] = None, rows: Optional[np.ndarray] = None) -> Chunk:
    """Chunk of the classes ``rows`` (all if None) of ``classset`` with their ``labels``."""
    from ..features import compute_features
    features = compute_features(classset, feature_set=options.feature_set)
    images = network_images(classset, options)
    rows = np.arange(len(classset)) if rows is None else np.asarray(rows)
    meta = pd.DataFrame({"job": job, "class_number": classset.class_numbers[rows],
                         "kind": list(kinds) if kinds is not None else ""})
    for column in META_STATS:
        meta[column] = classset.stat(column)[rows]
    meta["pixel_size"] = classset.pixel_size if classset.pixel_size else np.nan
    meta["box"] = classset.box_size
    meta["empty_score"] = empty_heuristic(classset.images[rows], classset.pixel_size,
                                          classset.particle_diameter)
    meta["empty"] = empty_class_mask(classset)[rows]
    return Chunk(images=images[rows], features=np.asarray(features.values, np.float32)[rows],
                 labels=check_labels(labels, classset.source), meta=meta,
                 feature_names=list(features.names), feature_set=options.feature_set,
                 image_kind=options.resolved_image_kind(), origin=classset.source)


def find_model_star(path: PathLike) -> Path:
    """The file to read for a job argument: a folder -> its last iteration's run_itNNN_model.star."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise InputError("job not found", path, "give a Class2D job folder, a model.star or an .mrcs stack")
        return path
    def iteration(star: Path):
        match = _ITERATION.search(star.name)
        return (int(match.group(1)) if match else -1, star.name)
    stars = sorted(path.glob("*_model.star"), key=iteration)
    if not stars:
        raise InputError("no *_model.star in this folder", path,
                         "give a RELION Class2D job folder (or the model.star / .mrcs itself)")
    return stars[-1]


NUMBER_COLUMNS = ("class_number", "class", "rlnClassNumber")
LABEL_COLUMNS = ("label", "score", "human_selected", "selected", "rlnSelected", "rlnClassScore")


def _label_frame(path: Path) -> pd.DataFrame:
    """The raw table of a labels file: CSV with a header, or STAR (e.g. RELION's backup_selection.star,
    one rlnSelected per class in class order)."""
    if path.suffix.lower() == ".star":
        from ..io.star import read_star
        table = next((b for b in read_star(path).values() if isinstance(b, pd.DataFrame)), None)
        if table is None:
            raise InputError("no table in this STAR file", path, "give RELION's backup_selection.star or a CSV")
        table = table.reset_index(drop=True)
        if not any(c in table.columns for c in NUMBER_COLUMNS):
            table.insert(0, "class_number", np.arange(1, len(table) + 1))
        if "rlnSelected" in table.columns:  # RELION writes 1 (kept), 0, or other group numbers
            table["rlnSelected"] = (pd.to_numeric(table["rlnSelected"], errors="coerce") == 1).astype(float)
        return table
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read this CSV file ({error})", path, "give a CSV with a header row") from None


def read_label_table(path: PathLike, target: str = "label") -> pd.DataFrame:
    """class_number, label, kind from a labels file.

    CSV: a class number column (class_number, class or rlnClassNumber) and a label column (``target``,
    else the first of label, score, human_selected, selected, rlnSelected, rlnClassScore).
    STAR: RELION's backup_selection.star (rlnSelected == 1 -> label 1, one row per class).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("labels file not found", path, "give a CSV with columns class_number,label")
    table = _label_frame(path)
    number = next((c for c in NUMBER_COLUMNS if c in table.columns), None)
    column = next((c for c in (target,) + LABEL_COLUMNS if c in table.columns), None)
    if number is None or column is None:
        raise InputError(f"the labels file needs a class number and a label column "
                         f"(found: {', '.join(map(str, table.columns))})", path,
                         "write a header row: class_number,label")
    numbers = pd.to_numeric(table[number], errors="coerce")
    if numbers.isna().any() or numbers.duplicated().any():
        raise InputError(f"{number} must hold unique whole numbers", path, f"repair the {number} column")
    out = pd.DataFrame({"class_number": numbers.astype(int),
                        "label": check_labels(pd.to_numeric(table[column], errors="coerce"), path, column)})
    out["kind"] = table["kind"].astype(str) if "kind" in table.columns else ""
    return out


@dataclass
class JobSource:
    """A classification job with labels from a CSV (default: the job folder's truth.csv)."""

    path: PathLike
    labels: Optional[PathLike] = None
    target: str = "label"
    id: str = ""

    def labels_path(self) -> Path:
        if self.labels is not None:
            return Path(self.labels)
        path = Path(self.path)
        folder = path if path.is_dir() else path.parent
        return folder / TRUTH_FILE

    def describe(self) -> dict:
        return {"type": "job", "path": str(self.path), "labels": str(self.labels_path()), "target": self.target}

    def chunks(self, options: BuildOptions) -> Iterator[Chunk]:
        from ..io import read_classes
        labels_path = self.labels_path()
        if not labels_path.is_file():
            raise InputError(f"no labels for this job ({labels_path} not found)", self.path,
                             "pass --labels CSV (class_number,label), or give a simulated job with truth.csv")
        table = read_label_table(labels_path, self.target)
        classset = read_classes(find_model_star(self.path), pixel_size=options.pixel_size,
                                particle_diameter=options.particle_diameter)
        numbers = classset.class_numbers
        unknown = np.setdiff1d(table["class_number"].to_numpy(), numbers)
        if unknown.size:
            raise InputError(f"labels for class(es) {listed(unknown)} that the job does not have", labels_path,
                             f"give the labels of {self.path}")
        by_number = table.set_index("class_number")
        rows = np.flatnonzero(np.isin(numbers, by_number.index))
        if len(rows) < len(numbers):
            log.info("%s: %d of %d classes have no label and are left out", self.path,
                     len(numbers) - len(rows), len(numbers))
        labels = by_number.loc[numbers[rows], "label"].to_numpy()
        kinds = by_number.loc[numbers[rows], "kind"].to_numpy()
        yield classset_chunk(classset, labels, options, job=str(self.path), kinds=kinds, rows=rows)


@dataclass
class ClassSetSource:
    """A ClassSet whose classes a user kept (label 1) or rejected (label 0) by hand."""

    classset: ClassSet
    kept: Sequence[int]
    job: str = ""
    id: str = ""
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"type": "manual selection", "path": self.job or self.classset.source,
                "kept": [int(k) for k in self.kept], **self.extra}

    def chunks(self, options: BuildOptions) -> Iterator[Chunk]:
        kept = np.asarray(list(self.kept), dtype=np.int64)
        numbers = self.classset.class_numbers
        unknown = np.setdiff1d(kept, numbers)
        if unknown.size:
            raise InputError(f"kept class(es) {listed(unknown)} are not among the {len(numbers)} classes",
                             self.classset.source or self.job, "give class numbers of these classes")
        labels = np.isin(numbers, kept).astype(np.float32)
        kinds = np.where(labels > 0, "kept", "rejected")
        yield classset_chunk(self.classset, labels, options, job=self.job or self.classset.source, kinds=kinds)


def open_source(spec, labels: Optional[PathLike] = None, root: Optional[PathLike] = None, target: str = "label"):
    """A source from a command-line argument or an object that already is one.

    A built dataset folder (dataset.json) -> DatasetSource; a STAR file with rlnClassScore ->
    StarSource (paths relative to ``root``); any other job
    argument (folder, model.star, .mrcs) -> JobSource with ``labels`` (default truth.csv).
    ``JOB=LABELS`` pairs a job with its own labels file.
    """
    if hasattr(spec, "chunks"):
        return spec
    text = str(spec)
    if "=" in text and not Path(text).exists():
        job, own_labels = text.rsplit("=", 1)
        return JobSource(Path(job), labels=Path(own_labels), target=target)
    path = Path(spec)
    if (path / "dataset.json").is_file():
        from .dataset_source import DatasetSource
        return DatasetSource(path)
    if path.suffix == ".star" and path.is_file() and not path.name.endswith("_model.star"):
        from .star_source import StarSource, is_training_star
        if is_training_star(path):
            return StarSource(path, root=root)
    return JobSource(path, labels=labels, target=target)
