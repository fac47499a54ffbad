"""Label source: a dataset folder that is already built (e.g. the committed RELION corpus).

Lets a new dataset combine a finished one with other sources (simulated jobs, a user's own labels)
without the raw job folders it was made from: each of its jobs comes back as one chunk with its
network images, raw feature vectors, labels and meta table, unchanged. The dataset must have been
built the way the new one is (feature set, image kind and size); the error says how to rebuild.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from ..errors import InputError
from .sources import BuildOptions, Chunk

PathLike = Union[str, os.PathLike]


@dataclass
class DatasetSource:
    """Every class of a built dataset folder (both of its parts), one chunk per job."""

    path: PathLike
    id: str = ""

    def describe(self) -> dict:
        return {"type": "dataset", "path": str(self.path)}

    def chunks(self, options: BuildOptions) -> Iterator[Chunk]:
        from .dataset import load_dataset
        data = load_dataset(self.path)
        info = data.info
        wanted = (options.feature_set, options.resolved_image_kind(), int(options.image_size))
        have = (info["feature_set"], info["image_kind"], int(info["image_size"]))
        if have != wanted:
            raise InputError(f"the dataset was built with feature set {have[0]!r}, {have[1]} images of {have[2]} px; "
                             f"this build uses {wanted[0]!r}, {wanted[1]} images of {wanted[2]} px", self.path,
                             f"build with --feature-set {have[0]} --image-size {have[2]}, or rebuild that dataset")
        meta = data.meta.drop(columns=["source"], errors="ignore")
        for job, rows in meta.groupby("job", sort=False).indices.items():
            rows = np.sort(rows)
            yield Chunk(images=np.asarray(data.images[rows]), features=np.asarray(data.features[rows]),
                        labels=np.asarray(data.labels[rows]), meta=meta.iloc[rows].reset_index(drop=True),
                        feature_names=data.feature_names, feature_set=info["feature_set"],
                        image_kind=info["image_kind"], origin=f"{self.path} ({job})")
