"""The training dataset: one compact folder of .npy files, built from label sources, read memory-mapped.

Layout of a dataset folder (all arrays in class order):

============= ==================================================================================
file          content
============= ==================================================================================
images.npy    float32 (n, size, size): the network images (as the scorer makes them)
features.npy  float32 (n, F): raw feature vectors (the trainer normalises them)
labels.npy    float32 (n,): scores in [0, 1] (1 = good)
split.npy     int8 (n,): 0 = training, 1 = validation (fixed at build time, stratified by label)
meta.csv      per class: source, job, class_number, kind and the statistics the baselines use
dataset.json  feature_set, feature_names, image_kind, image_size, counts, split and provenance
============= ==================================================================================

``build_dataset`` streams: each source yields one job's classes at a time, which is written to a
chunk file and dropped; the final arrays are filled chunk by chunk through ``open_memmap``. The
folder is built under a temporary name next to ``out_dir`` and renamed into place at the end, so an
interrupted build leaves no folder that looks like a dataset.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError
from .sources import BuildOptions, Chunk, open_source

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

DATASET_FORMAT = "classranker-dataset"
DATASET_VERSION = 1
ARRAYS = ("images", "features", "labels", "split")
INFO_FILE = "dataset.json"
RELION_FEATURE_COUNT = 24


@dataclass
class Dataset:
    """A dataset folder opened read-only; arrays are memory maps."""

    path: Path
    images: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    meta: pd.DataFrame
    info: dict

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def feature_names(self) -> list:
        return list(self.info["feature_names"])

    def indices(self, part: str) -> np.ndarray:
        """Indices of 'train', 'valid' or 'all' classes."""
        if part == "all":
            return np.arange(len(self))
        return np.flatnonzero(np.asarray(self.split) == {"train": 0, "valid": 1}[part])


def load_dataset(path: PathLike) -> Dataset:
    """Open a dataset folder; InputError naming it when it is incomplete or inconsistent."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise InputError(f"not a ClassRanker dataset ({INFO_FILE} missing)", path,
                         "build one with 'classranker make-dataset'")
    info = json.loads(info_path.read_text())
    if info.get("format") != DATASET_FORMAT or int(info.get("format_version", 0)) > DATASET_VERSION:
        raise InputError(f"unknown dataset format {info.get('format')!r} version {info.get('format_version')}",
                         info_path, "rebuild it with this ClassRanker version")
    arrays = {}
    for name in ARRAYS:
        file = path / f"{name}.npy"
        if not file.is_file():
            raise InputError(f"{file.name} is missing", path, "rebuild the dataset")
        arrays[name] = np.load(file, mmap_mode="r")
    n = len(arrays["labels"])
    shapes_ok = (len(arrays["images"]) == n and len(arrays["features"]) == n and len(arrays["split"]) == n
                 and arrays["features"].shape[1] == len(info["feature_names"]))
    meta = pd.read_csv(path / "meta.csv", keep_default_na=True) if (path / "meta.csv").is_file() else None
    if not shapes_ok or meta is None or len(meta) != n:
        raise InputError("the dataset files disagree on the number of classes or features", path,
                         "rebuild the dataset")
    return Dataset(path=path, meta=meta, info=info, **arrays)


def stratified_split(labels: np.ndarray, nr_valid: Optional[int], valid_fraction: float, seed: int) -> np.ndarray:
    """0/1 per class, ~nr_valid (or valid_fraction * n) validation classes drawn per label group."""
    n = len(labels)
    if nr_valid is None:
        if not 0.0 <= valid_fraction < 1.0:
            raise InputError(f"valid_fraction {valid_fraction} is outside [0, 1)", fix="give e.g. 0.2")
        nr_valid = int(round(valid_fraction * n))
    if not 0 <= nr_valid < n:
        raise InputError(f"{nr_valid} validation classes asked for, out of {n}",
                         fix=f"give --nr-valid between 0 and {n - 1}")
    good = labels >= 0.5
    rng = np.random.default_rng(seed)
    split = np.zeros(n, dtype=np.int8)
    for group in (np.flatnonzero(good), np.flatnonzero(~good)):
        share = nr_valid * len(group) / n
        k = int(round(share))
        if nr_valid >= 2 and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)  # both labels in both parts whenever possible
        split[rng.permutation(group)[:k]] = 1
    return split


class _Collector:
    """Writes chunks to disk as they come and checks that they agree with each other."""

    def __init__(self, folder: Path, options: BuildOptions):
        self.folder, self.options = folder, options
        self.files, self.metas, self.first = [], [], None

    def add(self, chunk: Chunk, source_id: str) -> None:
        self._check(chunk)
        if not len(chunk):
            return
        stem = self.folder / f"{len(self.files):05d}"
        for name in ("images", "features", "labels"):
            np.save(f"{stem}_{name}.npy", np.ascontiguousarray(getattr(chunk, name)))
        self.files.append(stem)
        meta = chunk.meta.copy()
        meta.insert(0, "source", source_id)
        self.metas.append(meta)

    def _check(self, chunk: Chunk) -> None:
        where = chunk.origin or (chunk.meta["job"].iloc[0] if len(chunk.meta) else "")
        if not np.isfinite(chunk.features).all():
            raise InputError("NaN or infinite values in the feature vectors", where, "check the input classes")
        if self.options.feature_set == "relion" and chunk.features.shape[1] != RELION_FEATURE_COUNT:
            raise InputError(f"feature vectors have {chunk.features.shape[1]} values; RELION's feature set "
                             f"has {RELION_FEATURE_COUNT}", where, "give RELION's 24 normalised features")
        if self.first is None:
            self.first = chunk
            return
        first = self.first
        if chunk.feature_names != first.feature_names:
            raise InputError(f"feature vectors of length {chunk.features.shape[1]} ({chunk.feature_set}) do not "
                             f"match the {len(first.feature_names)} features ({first.feature_set}) of "
                             f"{first.origin}", where, "build a dataset from sources of one feature set")
        if chunk.image_kind != first.image_kind:
            raise InputError(f"network images of kind {chunk.image_kind!r} cannot be mixed with "
                             f"{first.image_kind!r} ones from {first.origin}", where,
                             "give sources whose images are made the same way")

    def labels(self) -> np.ndarray:
        if not self.files:
            return np.zeros(0, np.float32)
        return np.concatenate([np.load(f"{stem}_labels.npy") for stem in self.files])

    def write(self, name: str, out: Path, n: int) -> None:
        """Concatenate the chunks of array ``name`` into ``out`` through a memory map."""
        first = np.load(f"{self.files[0]}_{name}.npy", mmap_mode="r")
        array = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n,) + first.shape[1:])
        start = 0
        for stem in self.files:
            part = np.load(f"{stem}_{name}.npy", mmap_mode="r")
            array[start:start + len(part)] = part
            start += len(part)
        array.flush()
        del array


def build_dataset(sources: Iterable, out_dir: PathLike, feature_set: str = "classranker", image_size: int = 64,
                  nr_valid: Optional[int] = None, valid_fraction: float = 0.2, seed: int = 0,
                  labels: Optional[PathLike] = None, root: Optional[PathLike] = None,
                  pixel_size: Optional[float] = None, particle_diameter: Optional[float] = None,
                  image_kind: Optional[str] = None, target: str = "label",
                  command_line: Optional[str] = None) -> Path:
    """Build a dataset folder at ``out_dir`` from label sources; returns its path.

    sources: paths (a RELION training-format STAR; a job folder / model.star / .mrcs with ``labels``
    or its truth.csv) or source objects (sources.JobSource, sources.ClassSetSource, star_source.StarSource).
    """
    sources = [open_source(s, labels=labels, root=root, target=target) for s in sources]
    if not sources:
        raise InputError("no label source given", fix="give at least one training STAR or labelled job")
    options = BuildOptions(feature_set=feature_set, image_size=image_size, image_kind=image_kind,
                           pixel_size=pixel_size, particle_diameter=particle_diameter)
    out_dir = Path(out_dir)
    _check_target(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{secrets.token_hex(4)}"
    (tmp / "chunks").mkdir(parents=True)
    try:
        info = _build(sources, tmp, options, nr_valid, valid_fraction, seed, command_line)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("dataset %s: %d classes (%d good), %d for validation", out_dir, info["counts"]["classes"],
             info["counts"]["good"], info["counts"]["valid"])
    return out_dir


def _build(sources, tmp: Path, options: BuildOptions, nr_valid, valid_fraction, seed, command_line) -> dict:
    collector = _Collector(tmp / "chunks", options)
    described = []
    for number, source in enumerate(sources):
        source_id = getattr(source, "id", "") or f"s{number}"
        before = len(collector.metas)
        for chunk in source.chunks(options):
            collector.add(chunk, source_id)
        classes = sum(len(m) for m in collector.metas[before:])
        described.append({"id": source_id, "classes": classes, **source.describe()})
    labels = collector.labels()
    if len(labels) == 0:
        raise InputError("the sources hold no labelled class", fix="check the labels and the inputs")
    good = labels >= 0.5
    if good.all() or not good.any():
        which = "good (>= 0.5)" if good.all() else "bad (< 0.5)"
        raise InputError(f"all {len(labels)} labels are {which}: a ranker cannot learn from one label only",
                         ", ".join(d["path"] for d in described),
                         "add classes of the other kind (rejected junk or kept good classes)")
    split = stratified_split(labels, nr_valid, valid_fraction, seed)
    n = len(labels)
    for name in ("images", "features"):
        collector.write(name, tmp / f"{name}.npy", n)
    np.save(tmp / "labels.npy", labels.astype(np.float32))
    np.save(tmp / "split.npy", split)
    meta = pd.concat(collector.metas, ignore_index=True)
    meta.to_csv(tmp / "meta.csv", index=False)
    shutil.rmtree(tmp / "chunks")
    first = collector.first
    info = {
        "format": DATASET_FORMAT, "format_version": DATASET_VERSION,
        "feature_set": first.feature_set, "feature_names": list(first.feature_names),
        "image_kind": first.image_kind, "image_size": int(options.image_size),
        "counts": {"classes": n, "good": int(good.sum()), "bad": int((~good).sum()),
                   "train": int((split == 0).sum()), "valid": int((split == 1).sum()),
                   "valid_good": int((good & (split == 1)).sum()), "jobs": int(meta["job"].nunique())},
        "split": {"seed": int(seed), "valid_fraction": valid_fraction, "nr_valid": nr_valid,
                  "stratified_by": "label >= 0.5"},
        "provenance": {"classranker_version": __version__,
                       "command_line": command_line or " ".join(sys.argv),
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "sources": described},
    }
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
    return info


def _check_target(out_dir: Path) -> None:
    if out_dir.is_file():
        raise InputError("the output is a file, not a folder", out_dir, "give a new folder name for the dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INFO_FILE).is_file():
        raise InputError("the output folder exists and is not a dataset; it is left untouched", out_dir,
                         "give a new or empty folder (an existing dataset folder is replaced)")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder onto ``out_dir`` (an old dataset there is replaced)."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
