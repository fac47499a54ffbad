"""Superclasses of similar views and particle rebalancing (cryoSPARC's "Rebalance 2D Classes" idea).

1. :func:`~classranker_plugin.affinity.affinity_matrix` scores how alike every pair of class
   averages looks, whatever their in-plane rotation and shift.
2. :func:`superclasses` groups the classes into superclasses (views) by spectral clustering of that
   matrix.
3. :func:`rebalance_particles` drops particles at random from the over-represented superclasses so
   that the smallest superclass holds at least ``factor`` times as many particles as the largest
   (``factor`` 0 keeps everything, 1 brings every superclass down to the smallest); ``max_size``
   caps every superclass at a given number of particles instead.

:func:`rebalance_classes` runs the three on a :class:`~classranker_plugin.classset.ClassSet`, checking
every input first. Superclass numbers are 1-based, like class numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .affinity import affinity_matrix
from .classset import ClassSet
from .errors import InputError

KMEANS_RESTARTS = 10
KMEANS_ITERATIONS = 100


# ----------------------------------------------------------------------------- validation

def _is_whole(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def check_factor(factor: float) -> float:
    """The rebalance factor as a float in [0, 1]; InputError otherwise."""
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, (int, float, np.number)) \
            or not 0.0 <= float(factor) <= 1.0:
        raise InputError(f"the rebalance factor must be in [0, 1], got {factor!r}",
                         fix="0 keeps every particle, 1 makes every superclass as small as the smallest")
    return float(factor)


def check_max_size(max_size: Optional[int]) -> Optional[int]:
    """None, or the maximum superclass size as an int >= 1; InputError otherwise."""
    if max_size is None:
        return None
    if not _is_whole(max_size) or max_size < 1:
        raise InputError(f"the maximum superclass size must be a whole number >= 1, got {max_size!r}",
                         fix="give a number of particles, or leave it out to use the factor")
    return int(max_size)


def check_n_superclasses(n_superclasses: int, n_classes: int, path=None) -> int:
    """The number of superclasses as an int in [1, n_classes]; InputError otherwise."""
    if not _is_whole(n_superclasses) or not 1 <= n_superclasses <= n_classes:
        raise InputError(f"cannot make {n_superclasses!r} superclasses from {n_classes} classes", path,
                         f"ask for 1 to {n_classes} superclasses (about the number of distinct views)")
    return int(n_superclasses)


# ----------------------------------------------------------------------------- superclasses

def _kmeans_once(points: np.ndarray, k: int, rng: np.random.Generator):
    """Lloyd's k-means from a k-means++ start; returns (labels, inertia)."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(n, p=nearest / total) if total > 0 else rng.integers(n)
        centres.append(points[index])
        nearest = np.minimum(nearest, ((points - points[index]) ** 2).sum(axis=1))
    centres = np.array(centres)
    labels = np.full(n, -1)
    for _ in range(KMEANS_ITERATIONS):
        distance = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
        new = distance.argmin(axis=1)
        for empty in np.setdiff1d(np.arange(k), new):  # reseed an empty cluster on the worst point
            worst = distance[np.arange(n), new].argmax()
            new[worst] = empty
            distance[worst] = 0.0
        if np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([points[labels == j].mean(axis=0) for j in range(k)])
    inertia = float(((points - centres[labels]) ** 2).sum())
    return labels, inertia


def kmeans(points: np.ndarray, k: int, seed: int = 0, restarts: int = KMEANS_RESTARTS) -> np.ndarray:
    """Cluster labels 0..k-1 of the rows of ``points``: best of ``restarts`` seeded k-means runs."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        labels, inertia = _kmeans_once(points, k, rng)
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best


def spectral_embedding(affinity: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k leading eigenvectors of D^-1/2 A D^-1/2, scaled to unit length (Ng-Jordan-Weiss)."""
    degree = affinity.sum(axis=1)
    scale = 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0))
    normalised = affinity * scale[:, None] * scale[None, :]
    _, vectors = np.linalg.eigh(0.5 * (normalised + normalised.T))
    embedding = vectors[:, -k:][:, ::-1]
    length = np.linalg.norm(embedding, axis=1, keepdims=True)
    return embedding / np.where(length > 0, length, 1.0)


def _first_appearance_numbers(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1, 2, ... in the order in which they first appear (label-permutation free)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    renumber = np.empty(len(order), dtype=int)
    renumber[order] = np.arange(1, len(order) + 1)
    _, inverse = np.unique(labels, return_inverse=True)
    return renumber[inverse]


def superclasses(affinity, n_superclasses: int, seed: int = 0) -> np.ndarray:
    """Superclass number (1..n_superclasses) of every class, by spectral clustering of ``affinity``.

    affinity:        (n, n) symmetric matrix in [0, 1] (see :func:`affinity_matrix`)
    n_superclasses:  how many groups (about the number of distinct views)
    seed:            the k-means starts are drawn from it: same inputs and seed, same answer

    Superclasses are numbered in the order of their first class (class 1 is in superclass 1).
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1] or not np.isfinite(affinity).all() \
            or affinity.min() < 0 or affinity.max() > 1 + 1e-9:
        raise InputError(f"the affinity must be a finite square matrix in [0, 1], got shape {affinity.shape}",
                         fix="compute it with affinity_matrix()")
    n = len(affinity)
    k = check_n_superclasses(n_superclasses, n)
    if k == 1:
        return np.ones(n, dtype=int)
    if k == n:
        return np.arange(1, n + 1)
    labels = kmeans(spectral_embedding(affinity, k), k, seed=seed)
    return _first_appearance_numbers(labels)


# ----------------------------------------------------------------------------- particles

def _superclass_lookup(superclass_of_class, class_numbers) -> tuple[np.ndarray, np.ndarray]:
    """(sorted class numbers, their superclasses) from a mapping or an array aligned with class_numbers."""
    if isinstance(superclass_of_class, Mapping):
        keys = np.fromiter(superclass_of_class.keys(), dtype=np.int64, count=len(superclass_of_class))
        values = np.fromiter(superclass_of_class.values(), dtype=np.int64, count=len(superclass_of_class))
    else:
        values = np.asarray(superclass_of_class, dtype=np.int64).ravel()
        keys = np.arange(1, len(values) + 1) if class_numbers is None \
            else np.asarray(class_numbers, dtype=np.int64).ravel()
        if len(keys) != len(values):
            raise InputError(f"{len(values)} superclasses given for {len(keys)} class numbers",
                             fix="give one superclass per class")
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    if len(keys) > 1 and (np.diff(keys) == 0).any():
        raise InputError("a class number appears twice in the superclass assignment",
                         fix="give each class number once")
    return keys, values


def class_index(class_of_particle, class_numbers, path=None) -> np.ndarray:
    """Position in ``class_numbers`` of every particle's class; InputError for unknown classes."""
    class_numbers = np.asarray(class_numbers, dtype=np.int64).ravel()
    classes = np.asarray(class_of_particle)
    if classes.dtype.kind not in "iu":
        numeric = np.asarray(classes, dtype=np.float64)
        if not np.isfinite(numeric).all() or (numeric != np.round(numeric)).any():
            raise InputError("particle class numbers must be whole numbers", path,
                             "give the particles' rlnClassNumber column")
        classes = numeric.astype(np.int64)
    order = np.argsort(class_numbers, kind="stable")
    position = np.clip(np.searchsorted(class_numbers[order], classes), 0, max(len(order) - 1, 0))
    index = order[position] if len(order) else np.zeros(len(classes), dtype=np.intp)
    unknown = (class_numbers[index] != classes) if len(order) else np.ones(len(classes), bool)
    if unknown.any():
        missing = np.unique(classes[unknown])
        shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InputError(f"{int(unknown.sum())} particles belong to class numbers that are not among the "
                         f"{len(class_numbers)} classes ({shown}): the particles and the classes come "
                         f"from different jobs", path,
                         "give the data.star of the same Class2D job and iteration as the classes")
    return index


def superclass_of_particles(class_of_particle, superclass_of_class, class_numbers=None,
                            path=None) -> np.ndarray:
    """Superclass of every particle; InputError if a particle's class is not among the classes."""
    keys, values = _superclass_lookup(superclass_of_class, class_numbers)
    return values[class_index(class_of_particle, keys, path)]


def superclass_cap(sizes: np.ndarray, factor: float, max_size: Optional[int] = None) -> Optional[int]:
    """Most particles any superclass may keep (None = no limit).

    ``max_size`` wins when given; otherwise the smallest non-empty superclass must hold at least
    ``factor`` times the largest: cap = floor(smallest / factor). factor 0 means no limit.
    """
    factor, max_size = check_factor(factor), check_max_size(max_size)
    if max_size is not None:
        return max_size
    sizes = np.asarray(sizes)
    sizes = sizes[sizes > 0]
    if factor == 0.0 or len(sizes) == 0:
        return None
    return int(np.floor(sizes.min() / factor + 1e-9))


def rebalance_particles(class_of_particle, superclass_of_class, factor: float,
                        max_size: Optional[int] = None, seed: int = 0,
                        class_numbers: Optional[Sequence[int]] = None) -> np.ndarray:
    """Keep mask (bool per particle) after dropping particles at random from crowded superclasses.

    class_of_particle:    class number of every particle (rlnClassNumber)
    superclass_of_class:  {class number: superclass}, or an array of superclasses aligned with
                          ``class_numbers`` (default: class numbers 1, 2, ...)
    factor:               in [0, 1]; every superclass is cut to floor(smallest / factor) particles
                          (0: keep all; 1: all as small as the smallest non-empty superclass)
    max_size:             cap every superclass at this many particles instead of using ``factor``
    seed:                 which particles are dropped is drawn from it (same seed, same mask)

    Every superclass keeps min(its size, cap) particles chosen uniformly at random.
    """
    factor, max_size = check_factor(factor), check_max_size(max_size)
    group = superclass_of_particles(class_of_particle, superclass_of_class, class_numbers)
    _, inverse, sizes = np.unique(group, return_inverse=True, return_counts=True)
    cap = superclass_cap(sizes, factor, max_size)
    if cap is None or len(group) == 0 or sizes.max() <= cap:
        return np.ones(len(group), dtype=bool)
    # a random order within each superclass: sort by superclass index + a random key in [0, 1);
    # the first `cap` particles of each superclass stay
    order = np.argsort(inverse + np.random.default_rng(seed).random(len(group)))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(group)) - starts[inverse[order]]
    keep = np.empty(len(group), dtype=bool)
    keep[order] = rank < cap
    return keep


# ----------------------------------------------------------------------------- on a ClassSet

@dataclass
class RebalanceResult:
    affinity: np.ndarray        # (n_classes, n_classes), stack order
    superclass: np.ndarray      # superclass number of every class, stack order
    keep: np.ndarray            # bool per particle (file order, as classset.particle_set)
    cap: Optional[int]          # most particles a superclass kept (None: no limit)
    table: pd.DataFrame         # class_number, superclass, particles_before, particles_after

    def superclass_counts(self) -> pd.DataFrame:
        """Particles per superclass before and after, with the number of classes in each."""
        grouped = self.table.groupby("superclass")
        counts = grouped[["particles_before", "particles_after"]].sum()
        counts.insert(0, "classes", grouped.size())
        return counts.reset_index()


def rebalance_classes(classset: ClassSet, n_superclasses: int, factor: float,
                      max_size: Optional[int] = None, seed: int = 0, n_angles: int = 36,
                      mirror: bool = False) -> RebalanceResult:
    """Affinity, superclasses and the rebalanced particle mask of a ClassSet (inputs checked first)."""
    path = classset.source or None
    factor, max_size = check_factor(factor), check_max_size(max_size)
    check_n_superclasses(n_superclasses, len(classset), path)
    particles = classset.particle_set  # the class column only (a streamed data.star: int32)
    if particles is None or not particles.has_class_column:
        raise InputError("no particles with rlnClassNumber to rebalance", path,
                         "give the run_itNNN_data.star of the Class2D job (or --data-star)")
    class_numbers = classset.class_numbers
    particle_classes = particles.class_numbers
    index = class_index(particle_classes, class_numbers, path)  # checked before the affinity work
    affinity = affinity_matrix(classset.images, n_angles=n_angles, mirror=mirror)
    labels = superclasses(affinity, n_superclasses, seed=seed)
    keep = rebalance_particles(particle_classes, labels, factor, max_size, seed, class_numbers)
    cap = superclass_cap(np.bincount(labels[index]), factor, max_size)
    table = pd.DataFrame({"class_number": class_numbers, "superclass": labels,
                          "particles_before": np.bincount(index, minlength=len(class_numbers)),
                          "particles_after": np.bincount(index[keep], minlength=len(class_numbers))})
    return RebalanceResult(affinity, labels, keep, cap, table)
