"""Compute the feature vector of every class and write RELION's training-format STAR.

INPUT is read as by 'classranker score' (a RELION Class2D run_itNNN_model/_data/_optimiser.star,
or a .mrcs of class averages with --stats). --o names the STAR to write (e.g. features.star), one
row per class:

  rlnClassNumber               the class
  rlnReferenceImage            index@path of the class average (relative to the STAR's folder when
                               the stack lies inside it, else absolute)
  rlnClassScore                the label (0 junk .. 1 good), only with --labels
  rlnSubImageStack             index@path of the 64 px image RELION's network sees, written beside the
                               STAR as <name>_subimages.mrcs (RELION's training scripts read this one)
  rlnNormalizedFeatureVector   "[a,b,...]" without blanks: RELION's 24 normalised features with
                               --feature-set relion; ClassRanker's raw values (the model normalises
                               them) with --feature-set classranker
  statistics                   rlnClassDistribution, accuracies, rlnEstimatedResolution when known

The feature names are listed in a second block, data_feature_names. With --labels (CSV with
class_number and label/score/human_selected, or RELION's backup_selection.star) only the labelled
classes are written. The stack is written first and the STAR last, each atomically: a STAR that
exists is complete. 'classranker make-dataset features.star' reads the file back.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from ..classset import RELION_LABELS
from ..errors import InputError
from ..features import FEATURE_SETS, compute_features
from ..io import atomic_write
from ..io.relion import resolve_project_path
from ..io.star import write_star
from ..io.validate import listed
from ..io.writers import FEATURE_NAME_LABEL, FEATURE_NAMES_BLOCK
from ..preprocess import relion_model_images, relion_window
from .score import add_input_args, read_input

log = logging.getLogger(__name__)

SUBIMAGE_SUFFIX = "_subimages.mrcs"
_STATS = ("class_distribution", "accuracy_rotations", "accuracy_translations", "resolution")


def add_args(parser):
    add_input_args(parser)
    parser.add_argument("--o", "--output", dest="output", required=True,
                        help="STAR file to write (RELION's training format), e.g. features.star")
    parser.add_argument("--feature-set", default="relion", choices=sorted(FEATURE_SETS),
                        help="relion: RELION's 24 normalised features; classranker: ClassRanker's own")
    parser.add_argument("--labels", help="labels CSV (class_number plus label/score/human_selected) or "
                                         "backup_selection.star: written as rlnClassScore")


def format_vector(row) -> str:
    """'[a,b,...]' without blanks; each value is the shortest text that reads back as the same float32."""
    texts = []
    for value in np.asarray(row, dtype=np.float32):
        if value == 0 or 1e-4 <= abs(value) < 1e6:
            texts.append(np.format_float_positional(value, unique=True, trim="-"))
        else:
            texts.append(np.format_float_scientific(value, unique=True, trim="-"))
    return "[" + ",".join(texts) + "]"


def _label_rows(classset, labels_path):
    """(rows of the labelled classes, their labels); InputError for labels of unknown classes."""
    from ..training.sources import read_label_table
    table = read_label_table(labels_path).set_index("class_number")
    numbers = classset.class_numbers
    unknown = np.setdiff1d(table.index.to_numpy(), numbers)
    if unknown.size:
        raise InputError(f"labels for class(es) {listed(unknown)} that {classset.source} does not have",
                         labels_path, "give the labels of this job")
    rows = np.flatnonzero(np.isin(numbers, table.index))
    if len(rows) < len(numbers):
        log.info("%d of %d classes have no label and are left out", len(numbers) - len(rows), len(numbers))
    return rows, table.loc[numbers[rows], "label"].to_numpy(dtype=float)


def _reference_paths(classset, star_dir: Path) -> list:
    """rlnReferenceImage values, the stack path relative to the output STAR's folder when inside it, else absolute."""
    out, cache = [], {}
    for text in classset.table["reference_image"].astype(str):
        index, _, written = text.strip().rpartition("@")
        if written not in cache:
            found = resolve_project_path(written, classset.source or written) if written else None
            cache[written] = written if found is None else _relative_or_absolute(found.resolve(), star_dir)
        out.append(f"{index}@{cache[written]}" if index else cache[written])
    return out


def _relative_or_absolute(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it (the pair moves together), else absolute."""
    relative = os.path.relpath(path, folder)
    return str(path) if relative.startswith("..") else relative


def _write_stack(path: Path, images: np.ndarray, pixel_size) -> None:
    with atomic_write(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(images, dtype=np.float32))
            mrc.set_image_stack()
            if pixel_size:
                mrc.voxel_size = float(pixel_size)


def feature_table(classset, features, star_dir: Path, subimage_stack: str, labels=None, rows=None) -> pd.DataFrame:
    """The training-format table of the classes ``rows`` (all if None)."""
    rows = np.arange(len(classset)) if rows is None else np.asarray(rows)
    table = pd.DataFrame({"rlnClassNumber": classset.class_numbers[rows],
                          "rlnReferenceImage": np.asarray(_reference_paths(classset, star_dir), dtype=object)[rows]})
    if labels is not None:
        table["rlnClassScore"] = np.asarray(labels, dtype=float)
    table["rlnSubImageStack"] = [f"{i:06d}@{subimage_stack}" for i in range(1, len(rows) + 1)]
    table["rlnNormalizedFeatureVector"] = [format_vector(v) for v in features.values[rows]]
    for column in _STATS:
        values = classset.stat(column)[rows]
        if not np.isnan(values).all():
            table[RELION_LABELS[column]] = values
    if classset.pixel_size:
        table["rlnImagePixelSize"] = float(classset.pixel_size)
    return table


def write_features_star(path, classset, feature_set: str = "relion", labels_path=None) -> tuple:
    """Write ``path`` (and its sub-image stack) for ``classset``; returns (path, rows written, features)."""
    path = Path(path)
    if path.suffix != ".star":
        raise InputError("the output must be a .star file", path, "give e.g. --o features.star")
    features = compute_features(classset, feature_set)
    bad = ~np.isfinite(features.values).all(axis=1)
    if bad.any():
        raise InputError(f"NaN or infinite feature values for class(es) {listed(classset.class_numbers[bad])}",
                         classset.source, "check these class averages and their statistics")
    rows, labels = (None, None) if labels_path is None else _label_rows(classset, labels_path)
    rows = np.arange(len(classset)) if rows is None else rows
    if not len(rows):
        raise InputError("no class to write (none of them is labelled)", labels_path, "give labels of this job")
    stack = path.with_name(path.stem + SUBIMAGE_SUFFIX)
    apix = classset.pixel_size
    sub_apix = relion_window(classset) * apix / 64 if apix else None
    path.parent.mkdir(parents=True, exist_ok=True)
    table = feature_table(classset, features, path.parent.resolve(), stack.name, labels, rows)
    names = pd.DataFrame({FEATURE_NAME_LABEL: features.names})
    _write_stack(stack, relion_model_images(classset)[rows], sub_apix)
    write_star(path, {"": table, FEATURE_NAMES_BLOCK: names})  # last: the STAR marks a complete output
    return path, rows, features


def main(args) -> int:
    classset = read_input(args)
    path, rows, features = write_features_star(args.output, classset, args.feature_set, args.labels)
    labelled = " with labels" if args.labels else ""
    print(f"{len(rows)} classes{labelled}, {len(features.names)} '{args.feature_set}' features each -> {path} "
          f"(network images in {path.stem + SUBIMAGE_SUFFIX})")
    return 0
