"""Which features are metadata, and what they read when the metadata is unknown.

ClassRanker's feature set (features/classranker.py) pairs every metadata feature ``x`` with a flag
``x_known``; unknown gives ``x = 0`` and ``x_known = 0``. Statistics that come together from one
file are masked together: the two accuracies and ``not_converged`` (model.star), the two
resolution features. RELION's feature set uses the feature mean (0 after its normalisation) for
unknown accuracies and resolution, so those are masked to 0. A feature set with no metadata
("given" vectors) is not masked.
"""
from __future__ import annotations

from .augment import MaskGroup

KNOWN_SUFFIX = "_known"
#: classranker feature -> the statistic it comes from (features of one statistic are masked together)
STATISTIC = {
    "log_class_distribution": "class_distribution",
    "log_particle_count": "particle_count",
    "accuracy_rotations": "accuracies",
    "accuracy_translations": "accuracies",
    "not_converged": "accuracies",
    "resolution_relative": "resolution",
    "resolution_nyquist": "resolution",
}
RELION_METADATA = {
    "accuracy_rotations": "accuracies",
    "accuracy_translations": "accuracies",
    "weighted_resolution": "resolution",
    "relative_resolution": "resolution",
}


def metadata_groups(feature_set: str, names: list) -> list:
    """Mask groups (indices into ``names`` and their unknown values) for ``feature_set``."""
    names = list(names)
    index = {name: i for i, name in enumerate(names)}
    groups: dict = {}
    if feature_set == "relion":
        for name, statistic in RELION_METADATA.items():
            if name in index:
                groups.setdefault(statistic, []).append(index[name])
    elif feature_set != "given":
        for name in names:
            if not name.endswith(KNOWN_SUFFIX) or name[: -len(KNOWN_SUFFIX)] not in index:
                continue
            base = name[: -len(KNOWN_SUFFIX)]
            statistic = STATISTIC.get(base, base)
            groups.setdefault(statistic, []).extend([index[base], index[name]])
        for name, statistic in STATISTIC.items():
            if statistic in groups and name in index and index[name] not in groups[statistic]:
                groups[statistic].append(index[name])
    return [MaskGroup(name=statistic, indices=sorted(members), unknown_values=[0.0] * len(members))
            for statistic, members in groups.items()]
