"""Real class averages labelled by eye: ``data/real/<dataset>/`` (labels + provenance, committed)
and the files they label (not committed: fetched from the repository named in the provenance).

A dataset folder holds ``provenance.json`` (repository, commit, paths, licence, pixel size, ...) and
``labels.csv`` (``class_number,label,author_label,note``; label 1 good, 0 junk, empty = uncertain,
left out of training and evaluation). See ``docs/labelling.md`` for how the labels are made.

The labelled files are looked for in ``provenance["local_files"]`` (a folder, relative to the
repository root) when given, or where ``files.model_star`` names a run made here (under
``scratch/``), else in ``$CLASSRANKER_REAL_FILES/<dataset>/`` (default
``scratch/real/<dataset>/``). Inside it, the first that exists is read: a RELION
``*_model.star`` (with its data.star), a cryoSPARC ``*_class_averages.cs``, else the ``.mrcs`` stack
(the one there, or the one the provenance names) with an optional ``stats.csv`` of per-class
statistics.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from classranker_plugin.classset import ClassSet
from classranker_plugin.errors import InputError
from classranker_plugin.io import read_classes

REPO = Path(__file__).resolve().parent.parent
LABELS_ROOT = REPO / "data" / "real"
FILES_ENV = "CLASSRANKER_REAL_FILES"


@dataclass
class RealDataset:
    """One labelled classification run."""

    name: str
    folder: Path
    provenance: dict
    labels: pd.DataFrame  # class_number, label (float: 1, 0 or NaN), author_label, note

    @property
    def specimen(self) -> str:
        return str(self.provenance.get("specimen", ""))

    def files_folder(self, files_root: Optional[Path] = None) -> Path:
        local = self.provenance.get("local_files")
        if local:
            return (REPO / local).resolve()
        root = Path(files_root or os.environ.get(FILES_ENV) or REPO / "scratch" / "real")
        return root / self.name


def list_datasets(root: Path = LABELS_ROOT) -> list[RealDataset]:
    """Every dataset folder under ``root`` that has both files, sorted by name."""
    found = []
    for folder in sorted(Path(root).glob("*/")):
        provenance, labels = folder / "provenance.json", folder / "labels.csv"
        if provenance.is_file() and labels.is_file():
            found.append(read_dataset_labels(folder))
    return found


def read_dataset_labels(folder: Path) -> RealDataset:
    folder = Path(folder)
    provenance = json.loads((folder / "provenance.json").read_text())
    labels = pd.read_csv(folder / "labels.csv", dtype={"note": str})
    if "class_number" not in labels or "label" not in labels:
        raise InputError("labels.csv needs the columns class_number and label", folder / "labels.csv",
                         "write class_number,label,author_label,note (see docs/labelling.md)")
    labels["label"] = pd.to_numeric(labels["label"], errors="coerce")
    bad = labels["label"].notna() & ~labels["label"].isin([0, 1])
    if bad.any():
        raise InputError(f"labels must be 1, 0 or empty; found {labels.loc[bad, 'label'].iloc[0]}",
                         folder / "labels.csv", "label good classes 1, junk 0, uncertain empty")
    return RealDataset(name=provenance.get("dataset", folder.name), folder=folder,
                       provenance=provenance, labels=labels)


def _local_file(provenance: dict) -> Optional[Path]:
    """A model.star (or stack) the provenance names inside this repository (runs made here, under
    scratch/), when it exists."""
    files = provenance.get("files") or {}
    for key in ("model_star", "classes"):
        written = files.get(key)
        if written and str(written).startswith("scratch/") and (REPO / written).is_file():
            return REPO / written
    return None


def _class_file(folder: Path, provenance: dict) -> tuple[Path, Optional[Path]]:
    """(file to read, statistics file or None) inside a dataset's files folder."""
    for pattern in ("*_model.star", "*_class_averages.cs"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1], None
    stacks = sorted(folder.glob("*.mrcs")) or sorted(folder.glob("*.mrc"))
    if len(stacks) > 1:  # several: the one the provenance names ("stack", or in its notes)
        named = provenance.get("stack")
        text = json.dumps(provenance)
        stacks = [s for s in stacks if s.name == named] or [s for s in stacks if s.name in text]
    if len(stacks) != 1:
        raise InputError(f"expected one class average stack, found {len(stacks)}", folder,
                         "keep exactly one .mrcs (or a RELION model.star) in the dataset's files folder")
    stats = folder / "stats.csv"
    return stacks[0], stats if stats.is_file() else None


def load_classes(dataset: RealDataset, files_root: Optional[Path] = None) -> tuple[ClassSet, np.ndarray]:
    """(ClassSet, labels aligned with its classes: 1, 0 or NaN) of a real dataset."""
    named = _local_file(dataset.provenance)
    folder = named.parent if named is not None else dataset.files_folder(files_root)
    if not folder.is_dir():
        prov = dataset.provenance
        raise InputError(f"the labelled files of {dataset.name} are not here", folder,
                         f"fetch {prov.get('repository')} at commit {prov.get('commit')} and extract "
                         f"{prov.get('files', {}).get('classes')} into this folder (see {dataset.folder}/provenance.json)")
    path, stats = (named, None) if named is not None else _class_file(folder, dataset.provenance)
    pixel_size = dataset.provenance.get("pixel_size")
    diameter = dataset.provenance.get("particle_diameter")
    classes = read_classes(path, stats=stats, pixel_size=None if path.suffix == ".star" else pixel_size,
                           particle_diameter=diameter if diameter else None)
    by_number = dataset.labels.set_index("class_number")["label"]
    if by_number.index.duplicated().any():
        twice = sorted(set(by_number.index[by_number.index.duplicated()].tolist()))
        raise InputError(f"class number(s) {_listed(twice)} labelled twice", dataset.folder / "labels.csv",
                         "give each class one row")
    unknown = sorted(set(by_number.index.tolist()) - set(classes.class_numbers.tolist()))
    if unknown:
        raise InputError(f"labels for class number(s) {_listed(unknown)}, but {path} has {len(classes)} "
                         f"class(es) numbered {classes.class_numbers.min()} to {classes.class_numbers.max()}",
                         dataset.folder / "labels.csv",
                         "label the classes of this very file (its images and the labels disagree: a "
                         "different iteration, K or tiling?)")
    labels = by_number.reindex(classes.class_numbers).to_numpy(dtype=float)
    return classes, labels


def _listed(numbers: list, most: int = 8) -> str:
    shown = ", ".join(str(n) for n in numbers[:most])
    return shown + (f" and {len(numbers) - most} more" if len(numbers) > most else "")


def summary_table(datasets: list[RealDataset]) -> pd.DataFrame:
    """One row per dataset: specimen, software, classes, good, junk, uncertain, licence."""
    rows = []
    for d in datasets:
        label = d.labels["label"]
        rows.append({"dataset": d.name, "specimen": d.specimen.split("(")[0].strip(),
                     "software": str(d.provenance.get("software", "")).split(",")[0],
                     "classes": len(d.labels), "good": int((label == 1).sum()), "junk": int((label == 0).sum()),
                     "uncertain": int(label.isna().sum()), "licence": d.provenance.get("licence", ""),
                     "rendering": bool(d.provenance.get("derived_from_rendering")
                                       or "SCREENSHOT" in str(d.provenance.get("format_conversion", "")))})
    return pd.DataFrame(rows)


@dataclass
class ScoredDataset:
    """A real dataset's classes with what the rankers need: features, network logits, statistics."""

    dataset: RealDataset
    classset: ClassSet
    labels: np.ndarray
    images: np.ndarray       # network images (n, 64, 64)
    values: np.ndarray       # feature vectors (n, F)
    names: list
    logits: np.ndarray       # network logits (n,)
    empty: np.ndarray        # bool (n,)
    baselines: dict          # trivial ranker name -> scores (higher = better)


def score_dataset(dataset: RealDataset, ranker, files_root: Optional[Path] = None) -> ScoredDataset:
    """Load a real dataset and compute what every ranker needs (the network without any head)."""
    from classranker_plugin.features import compute_features
    from classranker_plugin.io import empty_class_mask
    from classranker_plugin.preprocess import model_images

    from .baselines import baseline_scores, empty_heuristic

    classes, labels = load_classes(dataset, files_root)
    features = compute_features(classes, ranker.feature_set)
    images = model_images(classes, size=ranker.image_size)
    logits = ranker.logits(images, features.values)
    table = classes.table.copy()
    table["empty_score"] = empty_heuristic(classes.images, classes.pixel_size, classes.particle_diameter)
    return ScoredDataset(dataset=dataset, classset=classes, labels=labels, images=images, values=features.values,
                         names=list(features.names), logits=logits, empty=empty_class_mask(classes),
                         baselines=baseline_scores(table))


@dataclass
class RealSource:
    """Label source (for ``build_dataset``): the labelled classes of a real dataset (uncertain ones
    left out; the features of every class are computed over the whole job)."""

    dataset: RealDataset
    files_root: Optional[Path] = None
    id: str = ""
    only: Optional[tuple] = None  # class numbers to take (default: every labelled class)

    def describe(self) -> dict:
        prov = self.dataset.provenance
        return {"type": "real", "dataset": self.dataset.name, "repository": prov.get("repository"),
                "commit": prov.get("commit"), "labels": str(self.dataset.folder / "labels.csv"),
                **({"only": [int(n) for n in self.only]} if self.only is not None else {})}

    def chunks(self, options):
        from .sources import classset_chunk

        classes, labels = load_classes(self.dataset, self.files_root)
        taken = np.isfinite(labels)
        if self.only is not None:
            taken &= np.isin(classes.class_numbers, np.asarray(self.only))
        rows = np.flatnonzero(taken)
        notes = self.dataset.labels.set_index("class_number")["note"].reindex(classes.class_numbers[rows])
        yield classset_chunk(classes, labels[rows], options, job=f"real:{self.dataset.name}",
                             kinds=notes.fillna("").astype(str).to_numpy(), rows=rows)
