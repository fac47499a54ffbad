"""Checks on class averages that readers run before any work, and the empty-class flag.

Constant images are not errors: RELION writes an all-zero average for a class that lost all its
particles. ``empty_class_mask`` flags them (and classes with a particle count of 0) so that the
scorer can give them the lowest score instead of feeding a blank image to the network.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Union

import numpy as np

from ..classset import ClassSet
from ..errors import InputError

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

MIN_BOX = 24                      # refused below: no detail left to score
MAX_BOX = 800                     # refused above: bin first (the network sees 64 px anyway)
TYPICAL_BOX = (32, 512)           # accepted outside with a warning
_MAX_LISTED = 10


def listed(values) -> str:
    """'1, 2, 3' for a few values, '1, 2, ... (57 in all)' for many."""
    values = [int(v) if float(v).is_integer() else v for v in values]
    text = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return text if len(values) <= _MAX_LISTED else f"{text}, ... ({len(values)} in all)"


def check_box(box: int, path: PathLike, warn: bool = True) -> None:
    """InputError below 24 px or above 800 px; a logged warning (if ``warn``) outside 32..512 px."""
    if box < MIN_BOX:
        raise InputError(f"box size {box} px is too small to score (minimum {MIN_BOX} px)", path,
                         "give the class averages at their original size")
    if box > MAX_BOX:
        raise InputError(f"box size {box} px is larger than ClassRanker reads (maximum {MAX_BOX} px)",
                         path, "bin the class averages first, e.g. relion_image_handler --i IN.mrcs "
                         "--o OUT.mrcs --new_box ... or --rescale_angpix (twice the pixel size); the "
                         "network sees them at 64 px")
    if warn and not TYPICAL_BOX[0] <= box <= TYPICAL_BOX[1]:
        log.warning("%s: box size %d px is outside the usual %d..%d px; scores may be less reliable",
                    path, box, *TYPICAL_BOX)


def check_positive(value: Optional[float], what: str, path: PathLike) -> None:
    """InputError if ``value`` is given and not a finite number > 0."""
    if value is not None and not (np.isfinite(value) and value > 0):
        raise InputError(f"{what} must be > 0, got {value}", path, f"give the real {what} in Angstrom")


def check_finite_images(images: np.ndarray, class_numbers: np.ndarray, path: PathLike) -> None:
    """InputError naming the classes whose average holds NaN or infinite pixels."""
    bad = ~np.isfinite(images).all(axis=(1, 2))
    if bad.any():
        raise InputError(f"NaN or infinite pixels in the average of class(es) "
                         f"{listed(np.asarray(class_numbers)[bad])}", path,
                         "re-run or repair the classification that wrote these averages")


def check_particle_classes(particle_classes: np.ndarray, class_numbers: np.ndarray,
                           path: PathLike) -> None:
    """InputError if particles are assigned to classes that the class averages do not have."""
    unknown = np.setdiff1d(np.unique(particle_classes), class_numbers)
    if unknown.size:
        raise InputError(f"particles assigned to class number(s) {listed(unknown)} that are not among "
                         f"the {len(class_numbers)} classes", path,
                         "give the data.star of the same job and iteration as the class averages")


def validate_classes(classset: ClassSet) -> None:
    """Raise InputError if ``classset`` cannot be scored; constant (empty) images are allowed."""
    path = classset.source or "class averages"
    images = classset.images
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(f"class averages must be square images, got shape {images.shape}", path,
                         "give square 2D class averages")
    check_box(images.shape[1], path, warn=False)  # readers already warned
    numbers = classset.table["class_number"].to_numpy()
    if len(numbers) != len(images):
        raise InputError(f"{len(numbers)} classes in the table but {len(images)} images", path,
                         "give the statistics of the same classes")
    if (numbers < 1).any() or len(np.unique(numbers)) != len(numbers):
        raise InputError("class numbers must be unique and >= 1", path, "repair the class numbers")
    check_positive(classset.pixel_size, "pixel size", path)
    check_positive(classset.particle_diameter, "particle diameter", path)
    check_finite_images(images, numbers, path)
    particles = classset.particle_set  # counts only: a streamed data.star is not read again
    if particles is not None:
        data_path = classset.extra.get("data_star") or path
        if not particles.has_class_column:
            raise InputError("the particles table lacks rlnClassNumber", data_path,
                             "give the data.star written by the classification job")
        check_particle_classes(particles.class_counts()[0], numbers, data_path)


def check_not_all_blank(classset: ClassSet) -> None:
    """InputError when every class average is blank: there is nothing to score (one blank class is
    an empty class, scored and never kept)."""
    if len(classset) and _constant(classset.images).all():
        raise InputError(f"all {len(classset)} class averages are blank (constant images)",
                         classset.source or "class averages",
                         "give the class averages of a finished classification (this stack holds no signal)")


def empty_class_mask(classset: ClassSet) -> np.ndarray:
    """Bool per class: True where the average is constant (e.g. all zero) or no particle is in it."""
    counts = classset.stat("particle_count")
    return _constant(classset.images) | (counts == 0)


def _constant(images: np.ndarray) -> np.ndarray:
    """Bool per image: True where every pixel has the same value."""
    flat = images.reshape(len(images), -1)
    if not flat.shape[1]:
        return np.ones(len(images), bool)
    # two different pixels in the middle row: not constant; only the others need every pixel
    box = images.shape[-1]
    middle = flat[:, (images.shape[-2] // 2) * box:(images.shape[-2] // 2 + 1) * box]
    constant = (middle == flat[:, :1]).all(axis=1)
    for index in np.flatnonzero(constant):
        constant[index] = flat[index].max() == flat[index].min()
    return constant
