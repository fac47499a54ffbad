"""RELION's training-format STAR as a label source.

One row per class: ``rlnClassScore`` (the label, 0..1), the image as ``index@path`` in
``rlnSubImageStack`` (RELION's 64 px network image) and/or ``rlnReferenceImage`` (the class average),
and optionally ``rlnNormalizedFeatureVector`` ("[a,b,...]"). Paths are relative to a dataset root
(default: tried relative to the STAR's folder and to the RELION project the STAR sits in).

Given feature vectors are used as they are: 24 values are RELION's normalised features (the dataset
records feature_set "relion"), any other length is recorded as feature_set "given". Without them the
features are computed from the class averages with the dataset's feature set. Classes are processed
one stack (one job) at a time; RELION's per-job features (protein/solvent sums) need exactly that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import pandas as pd

from ..classset import ClassSet
from ..contrast import orient_contrast
from ..errors import InputError
from ..io.relion import project_candidates
from ..io.stack import header_pixel_size, mrc_shape, read_mrc_images, stats_to_table
from ..io.star import read_star
from ..io.validate import empty_class_mask, listed
from .baselines import empty_heuristic
from .sources import META_STATS, BuildOptions, Chunk, check_labels, classset_chunk, network_images

PathLike = Union[str, os.PathLike]

SCORE = "rlnClassScore"
SUBIMAGE = "rlnSubImageStack"
REFERENCE = "rlnReferenceImage"
VECTOR = "rlnNormalizedFeatureVector"
PIXEL_SIZE_LABELS = ("rlnImagePixelSize", "rlnPixelSize")
RELION_FEATURE_COUNT = 24


def training_table(path: PathLike) -> pd.DataFrame:
    """The first table of ``path`` that has rlnClassScore; InputError if there is none."""
    blocks = read_star(path)
    for block in blocks.values():
        if isinstance(block, pd.DataFrame) and SCORE in block.columns:
            return block.reset_index(drop=True)
    raise InputError(f"no table with {SCORE} (RELION's training format)", path,
                     f"give a STAR with {SCORE} and {SUBIMAGE} or {REFERENCE} per class")


def is_training_star(path: PathLike) -> bool:
    try:
        training_table(path)
    except InputError:
        return False
    return True


def parse_vectors(column: pd.Series, path) -> np.ndarray:
    """'[a,b,...]' strings -> (n, F) float32; InputError naming the row of a malformed or odd-length one."""
    rows, length = [], None
    for i, text in enumerate(column.astype(str)):
        body = text.strip().strip('"').strip()
        try:
            if not (body.startswith("[") and body.endswith("]")):
                raise ValueError
            values = [float(v) for v in body[1:-1].replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise InputError(f"{VECTOR} of row {i + 1} is not a list of numbers: {text[:60]!r}", path,
                             'write the vector as "[a,b,c]"') from None
        if length is None:
            length = len(values)
        if len(values) != length or not values:
            raise InputError(f"{VECTOR} of row {i + 1} has {len(values)} values but row 1 has {length}",
                             path, "give feature vectors of one length (one feature set) in a file")
        rows.append(values)
    array = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1)) + 1
        raise InputError(f"NaN or infinite values in {VECTOR} of row(s) {listed(bad)}", path,
                         "recompute the feature vectors")
    return array


def split_references(column: pd.Series, path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(0-based indices, stack as written) of 'index@path' values."""
    parts = column.astype(str).str.strip().str.extract(r"^(?:(\d+)@)?(.+)$")
    if parts[1].isna().any():
        rows = np.flatnonzero(parts[1].isna().to_numpy()) + 1
        raise InputError(f"empty {label} in row(s) {listed(rows)}", path, f"give {label} as index@stack.mrcs")
    indices = pd.to_numeric(parts[0], errors="coerce").fillna(1).to_numpy(dtype=np.int64) - 1
    return indices, parts[1].to_numpy(dtype=str)


def given_feature_names(n: int) -> tuple[str, list]:
    """(feature set, names) recorded for given vectors of length ``n``."""
    if n == RELION_FEATURE_COUNT:
        from ..features import FEATURE_SETS
        return "relion", list(FEATURE_SETS["relion"][1])
    return "given", [f"given_{i}" for i in range(n)]


@dataclass
class StarSource:
    """Classes listed in a RELION training-format STAR."""

    path: PathLike
    root: Optional[PathLike] = None
    id: str = ""

    def describe(self) -> dict:
        return {"type": "relion training star", "path": str(self.path),
                "root": None if self.root is None else str(self.root)}

    def _resolve(self, written: str) -> Path:
        candidates = [Path(self.root) / written] if self.root is not None else []
        candidates += [Path(self.path).resolve().parent / written] + project_candidates(written, self.path)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            tried = ", ".join(dict.fromkeys(str(p) for p in candidates))
            raise InputError(f"image stack {written} not found (tried {tried})", self.path,
                             "give the dataset root (--root) that the image paths are relative to")
        return found

    def _read(self, indices: np.ndarray, written: str, rows: np.ndarray, label: str) -> tuple[np.ndarray, Path]:
        stack = self._resolve(written)
        n = mrc_shape(stack)[0]
        beyond = indices >= n
        if beyond.any():
            raise InputError(f"{label} of row(s) {listed(rows[beyond] + 1)} asks for image "
                             f"{int(indices.max()) + 1} but {stack} holds {n}", self.path,
                             "give the stack the STAR was written with")
        return read_mrc_images(stack, indices), stack

    def chunks(self, options: BuildOptions) -> Iterator[Chunk]:
        table = training_table(self.path)
        if SUBIMAGE not in table and REFERENCE not in table:
            raise InputError(f"neither {SUBIMAGE} nor {REFERENCE} in the table", self.path,
                             "give the images of the classes as index@stack.mrcs")
        labels = check_labels(pd.to_numeric(table[SCORE], errors="coerce"), self.path, SCORE)
        vectors = parse_vectors(table[VECTOR], self.path) if VECTOR in table else None
        stats = stats_to_table(table, self.path, None) if any(
            c in table for c in ("rlnClassDistribution", "rlnAccuracyRotations", "rlnEstimatedResolution")) else None
        # one job at a time: group by the stack of the class averages (else of the sub-images)
        group_label = REFERENCE if REFERENCE in table else SUBIMAGE
        indices, files = split_references(table[group_label], self.path, group_label)
        for written in pd.unique(files):
            rows = np.flatnonzero(files == written)
            yield self._chunk(table, rows, indices[rows], written, group_label, labels[rows],
                              None if vectors is None else vectors[rows],
                              None if stats is None else stats.iloc[rows].reset_index(drop=True), options)

    def _chunk(self, table, rows, indices, written, group_label, labels, vectors, stats, options) -> Chunk:
        averages, stack = self._read(indices, written, rows, group_label)
        pixel_size = options.pixel_size or self._pixel_size(table, rows) or header_pixel_size(stack)
        class_table = stats if stats is not None else pd.DataFrame(index=range(len(rows)))
        class_table = class_table.copy()
        class_table["class_number"] = (pd.to_numeric(table["rlnClassNumber"].iloc[rows]).to_numpy(int)
                                       if "rlnClassNumber" in table else indices + 1)
        if class_table["class_number"].duplicated().any():
            class_table["class_number"] = np.arange(1, len(rows) + 1)
        class_table["reference_image"] = table[group_label].iloc[rows].astype(str).to_numpy()
        classset = ClassSet(images=averages, table=class_table, pixel_size=pixel_size,
                            particle_diameter=options.particle_diameter, source=str(self.path))
        if vectors is None and group_label == REFERENCE:   # class averages: protein white, as scoring reads them
            chunk = classset_chunk(orient_contrast(classset), labels, options, job=str(stack))
        else:
            chunk = self._given_chunk(classset, table, rows, labels, vectors, options, stack)
        chunk.meta["kind"] = "star"
        chunk.origin = str(self.path)
        return chunk

    def _given_chunk(self, classset, table, rows, labels, vectors, options, stack) -> Chunk:
        """Features given in the STAR, or images that are RELION's sub-images (used as they are)."""
        if vectors is None:  # sub-images only: features computed from them
            from ..features import compute_features
            computed = compute_features(classset, feature_set=options.feature_set)
            feature_set, names, vectors = options.feature_set, list(computed.names), computed.values
        else:
            feature_set, names = given_feature_names(vectors.shape[1])
        if SUBIMAGE in table:
            indices, files = split_references(table[SUBIMAGE].iloc[rows], self.path, SUBIMAGE)
            images = np.empty((len(rows),) + (options.image_size,) * 2, np.float32)
            for written in pd.unique(files):
                sub = np.flatnonzero(files == written)
                read, _ = self._read(indices[sub], written, rows[sub], SUBIMAGE)
                if read.shape[1] != options.image_size:
                    raise InputError(f"{SUBIMAGE} images are {read.shape[1]} px, the dataset uses "
                                     f"{options.image_size} px", self.path, f"use --image-size {read.shape[1]}")
                images[sub] = read
            image_kind = "relion"
        else:  # RELION's features go with RELION's images unless asked otherwise
            kind = options.image_kind or ("relion" if feature_set == "relion" else None)
            options = replace(options, image_kind=kind)
            images, image_kind = network_images(classset, options), options.resolved_image_kind()
        meta = pd.DataFrame({"job": str(stack), "class_number": classset.class_numbers, "kind": "star"})
        for column in META_STATS:
            meta[column] = classset.stat(column)
        meta["pixel_size"] = classset.pixel_size or np.nan
        meta["box"] = classset.box_size
        meta["empty_score"] = empty_heuristic(classset.images, classset.pixel_size, classset.particle_diameter)
        meta["empty"] = empty_class_mask(classset)
        return Chunk(images=images, features=np.asarray(vectors, np.float32), labels=labels, meta=meta,
                     feature_names=names, feature_set=feature_set, image_kind=image_kind)

    @staticmethod
    def _pixel_size(table: pd.DataFrame, rows: np.ndarray) -> Optional[float]:
        for label in PIXEL_SIZE_LABELS:
            if label in table:
                value = float(pd.to_numeric(table[label].iloc[rows[0]], errors="coerce"))
                if np.isfinite(value) and value > 0:
                    return value
        return None
