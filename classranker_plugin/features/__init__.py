"""Per-class feature vectors: ClassRanker's own set and RELION's 24 features.

``compute_features(classset, feature_set)`` returns a ``FeatureMatrix``; ``FEATURE_SETS`` maps a
feature-set name to ``(function, names)`` for code that needs the names without computing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classset import ClassSet
from ..errors import InputError
from .classranker import CLASSRANKER_FEATURE_NAMES, FEATURE_TABLE, classranker_features
from .relion import RELION_FEATURE_NAMES, relion_features

#: feature-set name -> (function(classset) -> (n, F) float32, list of the F column names)
FEATURE_SETS = {
    "classranker": (classranker_features, CLASSRANKER_FEATURE_NAMES),
    "relion": (relion_features, RELION_FEATURE_NAMES),
}


@dataclass
class FeatureMatrix:
    """Feature vectors of a set of classes: ``values`` (n, F) float32, one column per name."""

    values: np.ndarray
    names: list = field(default_factory=list)

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float32)
        self.names = list(self.names)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"feature matrix of shape {self.values.shape} does not match "
                             f"{len(self.names)} feature names")

    def __len__(self) -> int:
        return len(self.values)

    def column(self, name: str) -> np.ndarray:
        """One feature for every class."""
        return self.values[:, self.names.index(name)]


def compute_features(classset: ClassSet, feature_set: str = "classranker", frame=None) -> FeatureMatrix:
    """Feature vectors of every class of ``classset`` with the named feature set.

    frame: for the "classranker" set, the averages in its frame (``classranker.frame_images``)
    when already computed (e.g. by ``preprocess.model_images_and_frame``); other sets ignore it.
    """
    if feature_set not in FEATURE_SETS:
        raise InputError(f"unknown feature set '{feature_set}'", classset.source or None,
                         fix=f"use one of: {', '.join(sorted(FEATURE_SETS))}")
    function, names = FEATURE_SETS[feature_set]
    if feature_set == "classranker" and frame is not None:
        return FeatureMatrix(function(classset, frame=frame), list(names))
    return FeatureMatrix(function(classset), list(names))


__all__ = [
    "CLASSRANKER_FEATURE_NAMES", "FEATURE_SETS", "FEATURE_TABLE", "FeatureMatrix", "RELION_FEATURE_NAMES",
    "classranker_features", "compute_features", "relion_features",
]
