"""A cryoSPARC 2D classification job, read directly (no conversion to STAR first).

A job folder ``J12/`` holds, for every iteration NNN it wrote (the highest is read):

========================================= ======================================================
``J12_NNN_class_averages.mrc``            the class averages, one MRC stack
``J12_NNN_class_averages.cs``             one row per class: ``blob/path``, ``blob/idx`` (0-based
                                          image index), ``blob/shape``, ``blob/psize_A``,
                                          ``blob/res_A`` (class resolution, Å), optionally
                                          ``blob/class_ess``, ``alignments2D/class``
``J12_NNN_particles.cs``                  one row per particle: ``uid``, ``blob/path``, ``blob/idx``,
                                          ``blob/psize_A``, ``blob/shape``, ``alignments2D/class``
                                          (0-based class index), ``alignments2D/class_posterior``, ...
``J12_passthrough_particles.cs``          fields passed through from earlier jobs (``ctf/*``,
                                          ``location/*``), joined on ``uid``
========================================= ======================================================

The field names are those cryoSPARC v2 to v4 write (``.cs`` files are NumPy structured arrays in
``.npy`` format). They are loaded with ``allow_pickle=False``: a ``.cs`` file that needs pickle
(object fields) is refused, since unpickling runs code.

Numbering: cryoSPARC class index k (0-based) is ClassRanker class number k + 1, as in RELION.
A class's image is ``blob/idx`` of its row, its class index ``alignments2D/class`` when the row has
it, else ``blob/idx`` (cryoSPARC writes class k as image k). Statistics: class distribution and
particle count from the particles' assignments, resolution from ``blob/res_A``; cryoSPARC writes no
angular or translational accuracy (unknown). Paths in ``blob/path`` are relative to the cryoSPARC
project directory (the job folder's parent), often marked so by a leading ``>``; the averages are
also looked for next to the .cs.

The particle fields were checked against a real cryoSPARC export (2D classification particles, the
field names and types of cryoDRGN's test file ``cryosparc_J2_particles_exported.cs``); no public
class-averages ``.cs`` was found, so those fields follow cryoSPARC's Select 2D code (``blob/path``,
``blob/idx``, ``blob/shape``, ``blob/psize_A``, ``blob/res_A``).

Selected particles are written as ``particles_selected.cs`` (the rows of the merged particle
array, every field kept) and as RELION STAR (``particles.star``: image names, CTF, optics groups,
micrograph coordinates; the 2D alignments are not converted, 3D jobs do not need them).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from ..classset import ClassSet, ParticleSet
from ..errors import InputError
from .atomic import atomic_write
from .star import write_star
from .stack import mrc_shape, read_mrc_images
from .validate import check_box, check_particle_classes, check_positive, validate_classes

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

#: J12_020_class_averages.cs -> job "J12", iteration "020"
AVERAGES_NAME = re.compile(r"^(?P<job>.+?)_(?P<iteration>\d+)_class_averages\.cs$")
CLASS_FIELDS = ("blob/path", "blob/idx")
PARTICLE_FIELDS = ("alignments2D/class",)


def is_cryosparc_input(path: PathLike) -> bool:
    """True for a cryoSPARC 2D job folder, a ``*_class_averages.cs`` or an ``.mrc`` beside one."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("*_class_averages.cs"))
    if path.suffix == ".cs":
        return True
    return path.suffix == ".mrc" and path.with_suffix(".cs").is_file()


def load_cs(path: PathLike, required=(), what: str = "cryoSPARC dataset") -> np.ndarray:
    """A .cs file as a structured array (never unpickled); InputError naming missing fields."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path, "give the files of the cryoSPARC job as it wrote them")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as error:
        fix = ("export the job again from cryoSPARC; ClassRanker never unpickles .cs files (unpickling runs code)"
               if "pickle" in str(error) else "give the .cs file written by cryoSPARC")
        raise InputError(f"not a readable cryoSPARC .cs file ({error})", path, fix) from error
    except (OSError, EOFError) as error:
        raise InputError(f"not a readable cryoSPARC .cs file ({error})", path,
                         "give the .cs file written by cryoSPARC (it may be truncated)") from error
    if data.dtype.names is None or data.ndim != 1:
        raise InputError("not a cryoSPARC dataset (a .cs file holds a table of named fields)", path,
                         "give the .cs file written by cryoSPARC")
    missing = [name for name in required if name not in data.dtype.names]
    if missing:
        raise InputError(f"{what} lacks the field(s) {', '.join(missing)} (fields found: "
                         f"{', '.join(data.dtype.names)})", path,
                         "give the class averages and particles .cs files of a 2D classification job")
    return data


def text(values: np.ndarray) -> np.ndarray:
    """Fixed-width byte or unicode strings as a str array."""
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)


def project_path(values: np.ndarray) -> np.ndarray:
    """cryoSPARC paths as written relative to the project directory: the leading '>' that marks
    them so (``>J1/imported/x.mrcs``) is removed."""
    return np.char.lstrip(text(values), ">")


def _latest(folder: Path, pattern: str, path_for_error: Path) -> Path:
    found = sorted(folder.glob(pattern), key=lambda p: (len(p.name), p.name))
    if not found:
        raise InputError(f"no {pattern} in this folder", path_for_error,
                         "give a cryoSPARC 2D classification job folder (J12/) or its "
                         "J12_NNN_class_averages.cs")
    return found[-1]


def job_files(path: PathLike) -> tuple[Path, Optional[Path], Optional[Path]]:
    """(class_averages.cs, particles.cs or None, passthrough_particles.cs or None) of a job."""
    path = Path(path)
    if path.is_dir():
        averages = _latest(path, "*_class_averages.cs", path)
    elif path.suffix == ".mrc":
        averages = path.with_suffix(".cs")
    else:
        averages = path
    if not averages.is_file():
        raise InputError("file not found", averages, "check the path")
    match = AVERAGES_NAME.match(averages.name)
    if match is None:
        return averages, None, None
    folder = averages.parent
    particles = folder / f"{match['job']}_{match['iteration']}_particles.cs"
    passthrough = folder / f"{match['job']}_passthrough_particles.cs"
    return (averages, particles if particles.is_file() else None,
            passthrough if passthrough.is_file() else None)


def _stack_path(written: str, averages_cs: Path) -> Path:
    folder = averages_cs.resolve().parent
    for candidate in (folder.parent / written, folder / Path(written).name, Path.cwd() / written):
        if candidate.is_file():
            return candidate
    raise InputError(f"class average stack {written} not found (looked in {folder.parent} and {folder})",
                     averages_cs, "keep the job folder inside its cryoSPARC project directory, or the "
                     "class_averages.mrc next to the .cs file")


def merge_passthrough(particles: np.ndarray, passthrough: Optional[np.ndarray], path: Path) -> np.ndarray:
    """The particle rows with the passthrough fields they lack, joined on ``uid``."""
    if passthrough is None or "uid" not in particles.dtype.names or "uid" not in passthrough.dtype.names:
        return particles
    new = [name for name in passthrough.dtype.names if name not in particles.dtype.names]
    if not new:
        return particles
    order = np.argsort(passthrough["uid"], kind="stable")
    where = np.searchsorted(passthrough["uid"], particles["uid"], sorter=order)
    where = order[np.clip(where, 0, len(order) - 1)]
    if len(passthrough) == 0 or not np.array_equal(passthrough["uid"][where], particles["uid"]):
        raise InputError("the passthrough particles do not cover every particle (uid mismatch)", path,
                         "give the passthrough_particles.cs of the same job")
    dtype = [(name, particles.dtype[name]) for name in particles.dtype.names]
    dtype += [(name, passthrough.dtype[name]) for name in new]
    merged = np.empty(len(particles), dtype=dtype)
    for name in particles.dtype.names:
        merged[name] = particles[name]
    for name in new:
        merged[name] = passthrough[name][where]
    return merged


def read_cryosparc_job(path: PathLike, particles_cs: Optional[PathLike] = None,
                       pixel_size: Optional[float] = None, particle_diameter: Optional[float] = None,
                       with_particles: bool = True) -> ClassSet:
    """ClassSet of a cryoSPARC 2D classification job (folder, class_averages.cs or .mrc)."""
    path = Path(path)
    check_positive(pixel_size, "pixel size", path)
    check_positive(particle_diameter, "particle diameter", path)
    averages_cs, found_particles, passthrough_cs = job_files(path)
    classes = load_cs(averages_cs, CLASS_FIELDS, "class averages dataset")
    if len(classes) == 0:
        raise InputError("no classes in this dataset", averages_cs, "give the class averages of a finished job")
    images_idx = classes["blob/idx"].astype(np.int64)
    class_index = (classes["alignments2D/class"].astype(np.int64)
                   if "alignments2D/class" in classes.dtype.names else images_idx)
    class_numbers = class_index + 1
    stacks = pd.unique(project_path(classes["blob/path"]))
    if len(stacks) != 1:
        raise InputError(f"the class averages are spread over {len(stacks)} stacks", averages_cs,
                         "give the class averages of one job (one class_averages.mrc)")
    stack = _stack_path(stacks[0], averages_cs)
    n, ny, nx = mrc_shape(stack)
    if len(classes) != n:
        raise InputError(f"{len(classes)} classes in {averages_cs.name} but {n} images in {stack.name}",
                         averages_cs, "give the .cs and .mrc of the same iteration")
    check_box(nx, stack)
    if pixel_size is None and "blob/psize_A" in classes.dtype.names:
        pixel_size = float(classes["blob/psize_A"][0])
        check_positive(pixel_size, "pixel size (blob/psize_A)", averages_cs)
    table = pd.DataFrame({"class_number": class_numbers,
                          "reference_image": [f"{i + 1:06d}@{stack}" for i in images_idx]})
    if "blob/res_A" in classes.dtype.names:
        table["resolution"] = classes["blob/res_A"].astype(float)
    images = read_mrc_images(stack, images_idx)
    extra = {"cryosparc_classes": str(averages_cs), "missing_columns": [], "data_star": None}
    classset = ClassSet(images=images, table=table, pixel_size=pixel_size,
                        particle_diameter=particle_diameter, source=str(averages_cs), extra=extra)
    particles_cs = Path(particles_cs) if particles_cs is not None else found_particles
    if with_particles and particles_cs is not None:
        attach_cryosparc_particles(classset, particles_cs, passthrough_cs)
    else:
        classset.extra["missing_columns"] = ["class distribution (no particles.cs)"]
    validate_classes(classset)
    return classset


def attach_cryosparc_particles(classset: ClassSet, particles_cs: PathLike,
                               passthrough_cs: Optional[PathLike] = None) -> ClassSet:
    """Counts, class distribution and the particles from a particles .cs. The RELION table of the
    particles is built only for the rows written (``write_particles``) or when asked for."""
    particles_cs = Path(particles_cs)
    particles = load_cs(particles_cs, PARTICLE_FIELDS, "particles dataset")
    passthrough = None if passthrough_cs is None else load_cs(passthrough_cs, (), "passthrough particles")
    particles = merge_passthrough(particles, passthrough, Path(passthrough_cs or particles_cs))
    particle_classes = particles["alignments2D/class"].astype(np.int64) + 1
    check_particle_classes(particle_classes, classset.class_numbers, particles_cs)
    groups = _optics_groups(particles)

    def write_star_subset(path, selection, rejected_path=None):
        for target, chosen in ((path, selection), (rejected_path, selection.inverted())):
            if target is not None:
                rows = chosen.mask(particle_classes)
                write_star(target, {"optics": classset.optics,
                                    "particles": relion_particles(particles[rows], groups[rows])})
        return path

    classset.particles = ParticleSet.from_classes(
        particle_classes, source=str(particles_cs), write_subset=write_star_subset,
        load_table=lambda: relion_particles(particles, groups))
    counts = classset.particle_set.counts_for(classset.class_numbers)
    classset.table["particle_count"] = counts
    classset.table["class_distribution"] = counts / max(len(particles), 1)
    classset.optics = relion_optics(particles, groups)
    classset.extra.update(cryosparc_particles=particles, cryosparc_particles_path=str(particles_cs))
    return classset


def _optics_groups(particles: np.ndarray) -> np.ndarray:
    """1-based RELION optics group of every particle, from ``ctf/exp_group_id`` (one group without it)."""
    if "ctf/exp_group_id" not in particles.dtype.names:
        return np.ones(len(particles), np.int64)
    return np.unique(particles["ctf/exp_group_id"].astype(np.int64), return_inverse=True)[1] + 1


def relion_optics(particles: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """The optics table (RELION 3.1 labels): one row per group, from its first particle."""
    numbers, first = np.unique(groups, return_index=True)
    names = set(particles.dtype.names)
    optics = {"rlnOpticsGroup": numbers, "rlnOpticsGroupName": [f"opticsGroup{g}" for g in numbers]}
    optional = {"ctf/accel_kv": "rlnVoltage", "ctf/cs_mm": "rlnSphericalAberration",
                "ctf/amp_contrast": "rlnAmplitudeContrast", "blob/psize_A": "rlnImagePixelSize"}
    for field, label in optional.items():
        if field in names:
            optics[label] = particles[field][first].astype(float)
    if "blob/shape" in names:
        optics["rlnImageSize"] = np.asarray(particles["blob/shape"])[first].reshape(len(first), -1)[:, 0]
        optics["rlnImageDimensionality"] = np.full(len(first), 2)
    return pd.DataFrame(optics)


def relion_particles(particles: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """The particles table in RELION 3.1 labels from (merged) cryoSPARC particle rows."""
    names = set(particles.dtype.names)
    star = {}
    if {"blob/path", "blob/idx"} <= names:
        star["rlnImageName"] = np.char.add(np.char.add(np.char.zfill((particles["blob/idx"] + 1).astype(str), 6), "@"),
                                           project_path(particles["blob/path"]))
    if {"location/micrograph_path", "location/center_x_frac", "location/micrograph_shape"} <= names:
        shape = particles["location/micrograph_shape"]
        star["rlnMicrographName"] = project_path(particles["location/micrograph_path"])
        star["rlnCoordinateX"] = np.round(particles["location/center_x_frac"] * shape[:, 1], 2)
        star["rlnCoordinateY"] = np.round(particles["location/center_y_frac"] * shape[:, 0], 2)
    conversions = {"ctf/df1_A": ("rlnDefocusU", 1.0), "ctf/df2_A": ("rlnDefocusV", 1.0),
                   "ctf/df_angle_rad": ("rlnDefocusAngle", 180.0 / np.pi),
                   "ctf/phase_shift_rad": ("rlnPhaseShift", 180.0 / np.pi)}
    for field, (label, scale) in conversions.items():
        if field in names:
            star[label] = particles[field].astype(float) * scale
    star["rlnOpticsGroup"] = groups
    star["rlnClassNumber"] = particles["alignments2D/class"].astype(np.int64) + 1
    return pd.DataFrame(star)


def write_cryosparc_particles(path: PathLike, classset: ClassSet, selected_class_numbers) -> Path:
    """The rows of the job's particle array whose class is selected, as a .cs file (every field)."""
    particles = classset.extra.get("cryosparc_particles")
    if particles is None:
        raise InputError("no cryoSPARC particles to write", classset.source or None,
                         "give the job's particles.cs")
    keep = np.isin(particles["alignments2D/class"].astype(np.int64) + 1,
                   np.asarray(list(selected_class_numbers), dtype=np.int64))
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, particles[keep], allow_pickle=False)
    return path
