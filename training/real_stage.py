"""Stage 3 of the bundled model: real class averages.

1. ``finetune_on_real``: fine-tune a network on the RELION-made corpus (training part) plus labelled
   real datasets (each counted ``repeat`` times), with the usual augmentation and metadata masking;
2. ``fit_job_head``: fit the job head (``classranker_plugin.job_head``; with ``calibrate``, also its
   per-job calibration) on that network's logits for the corpus jobs and the real datasets, each with
   a copy whose metadata is unknown;
3. ``with_job_head``: write the network and its head as one checkpoint.

``benchmarks/real_data.py`` runs the same steps with one real dataset held out at a time.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from classranker_plugin.checkpoint import load_model, save_checkpoint

from .job_head_fit import JobRecord, drop_metadata, fit_head
from .real_data import RealDataset, RealSource, score_dataset

FINETUNE_LR = 3e-4


def corpus_records(corpus_train, ranker) -> tuple[list, list]:
    """Per job of a dataset folder (e.g. data/relion_corpus/train), or of several (their feature names
    must agree): its JobRecord and a copy without metadata; and the feature names."""
    records, names = [], None
    for folder in _folders(corpus_train):
        found, found_names = _folder_records(folder, ranker)
        if names is not None and list(found_names) != list(names):
            raise ValueError(f"{folder} has other features than {_folders(corpus_train)[0]}")
        records, names = records + found, found_names
    return records, names


def _folder_records(path: Path, ranker) -> tuple[list, list]:
    from .dataset import load_dataset

    data = load_dataset(path)
    images, values = np.asarray(data.images), np.asarray(data.features)
    values_nm = drop_metadata(values, data.feature_names, ranker.feature_set)
    logits, logits_nm = ranker.logits(images, values), ranker.logits(images, values_nm)
    labels = (np.asarray(data.labels) >= 0.5).astype(float)
    records = []
    for job, rows in data.meta.groupby("job").indices.items():
        records.append(JobRecord(str(job), logits[rows], values[rows], labels[rows], group="corpus"))
        records.append(JobRecord(f"{job} (no metadata)", logits_nm[rows], values_nm[rows], labels[rows],
                                 group="corpus"))
    return records, data.feature_names


def real_records(scored, ranker) -> tuple[JobRecord, JobRecord]:
    """A scored real dataset (real_data.score_dataset) as a JobRecord, and the same without metadata."""
    values_nm = drop_metadata(scored.values, scored.names, ranker.feature_set)
    name = scored.dataset.name
    return (JobRecord(name, scored.logits, scored.values, scored.labels, group="real"),
            JobRecord(f"{name} (no metadata)", ranker.logits(scored.images, values_nm), values_nm, scored.labels,
                      group="real"))


def _folders(corpus_train) -> list:
    """One corpus training folder or several, as a list of Paths."""
    return [Path(corpus_train)] if isinstance(corpus_train, (str, Path)) else [Path(p) for p in corpus_train]


def finetune_on_real(init: Path, corpus_train, datasets: Iterable[RealDataset], work: Path,
                     epochs: int, repeat: int = 2, seed: int = 1) -> Path:
    """Fine-tune ``init`` on the corpus (one training folder or several) and the real ``datasets``;
    returns model.pt (reused if done)."""
    from .dataset import build_dataset
    from .dataset_source import DatasetSource
    from .trainer import train

    work = Path(work)
    model = work / "train" / "model.pt"
    if model.is_file():
        return model
    shutil.rmtree(work, ignore_errors=True)
    sources = ([DatasetSource(folder) for folder in _folders(corpus_train)]
               + [RealSource(d) for d in datasets for _ in range(repeat)])
    build_dataset(sources, work / "dataset", valid_fraction=0.15, seed=seed)
    train(work / "dataset", work / "train", epochs=epochs, lr=FINETUNE_LR, init=init, device="cpu", seed=seed,
          patience=epochs, progress=False)
    return model


def fit_job_head(ranker, corpus_train, datasets: Iterable[RealDataset], l2: float = 0.01,
                 real_weight: float = 1.0, calibrate: bool = False):
    """The job head for ``ranker``'s network, fitted on the corpus jobs (one training folder or
    several) and the real datasets; with ``calibrate``, with its per-job calibration (measured in
    benchmarks/RESULTS.md: not used by the bundled model, which it did not improve)."""
    corpus, names = corpus_records(corpus_train, ranker)
    real = [r for d in datasets for r in real_records(score_dataset(d, ranker), ranker)]
    head = fit_head(corpus + real, names, l2=l2, group_weights={"corpus": 1.0, "real": real_weight},
                    calibrate=calibrate)
    head.metrics.update({"corpus": [str(p) for p in _folders(corpus_train)], "real_datasets": [d.name for d in datasets],
                         "real_weight": real_weight})
    return head


def with_job_head(model: Path, head, out: Path, provenance: Optional[dict] = None) -> Path:
    """``model``'s network with ``head``, saved as ``out``."""
    ranker = load_model(model, device="cpu")
    ranker.job_head = head
    ranker.provenance = {**(ranker.provenance or {}), **(provenance or {})}
    return save_checkpoint(out, ranker)
