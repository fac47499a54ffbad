"""Class averages of a RELION Class2D job: run_itNNN_model.star / _data.star / _optimiser.star + stack.

Handles RELION 3.0 files (data.star is a single unnamed table without optics; model.star gives
``rlnAccuracyTranslations`` in pixels, converted here to Angstrom with the model pixel size, 999
kept as 999) and RELION 3.1+ files (``optics`` + ``particles`` tables, ``...TranslationsAngst``).

Reference images (``000001@Class2D/job006/run_it025_classes.mrcs``) are written relative to the
RELION project directory. They are looked for, in order: relative to the project directory guessed
from the STAR file location (``P/Class2D/job006/x.star`` -> ``P``), relative to the current
directory, then as the file with the same name next to the STAR file (a copied job folder).

Only ``rlnReferenceImage`` is required in ``data_model_classes``: files converted from cryoSPARC
(pyem's csparc2star), exported from Scipion or rebuilt by hand often lack the accuracies, the
resolution or the class distribution. A missing statistic is unknown (NaN): the feature vector
flags it as unknown (``*_known`` = 0), the log and the summary name it.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from ..classset import ClassSet, ParticleSet
from ..errors import InputError
from .particles import stream_particles, stream_writer
from .stack import mrc_shape, read_mrc_images, translations_to_angstrom
from .star import as_int_array, loop_block, read_star, require_columns
from .validate import check_box, check_particle_classes, check_positive, listed, validate_classes

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

#: run_it025_model.star -> root "run_it025", kind "model" (also run_ct5_it025_..., any iteration)
RUN_NAME = re.compile(r"^(?P<root>.*_it\d+)_(?P<kind>model|data|optimiser)\.star$")
#: the one column without which the classes cannot be read
REQUIRED_CLASS_COLUMNS = ("rlnReferenceImage",)
TRANSLATIONS_ANGST = "rlnAccuracyTranslationsAngst"
TRANSLATIONS_PX = "rlnAccuracyTranslations"
#: model_classes label -> our table column (translations handled apart); each is optional
_CLASS_COLUMNS = {"rlnClassDistribution": "class_distribution",
                  "rlnAccuracyRotations": "accuracy_rotations",
                  "rlnEstimatedResolution": "resolution"}
#: the statistics RELION writes, in the order they are reported when missing
OPTIONAL_CLASS_COLUMNS = tuple(_CLASS_COLUMNS) + (TRANSLATIONS_ANGST,)


@dataclass
class JobFiles:
    """The STAR files of one RELION iteration (None where absent)."""

    model: Path
    data: Optional[Path] = None
    optimiser: Optional[Path] = None


def job_files(path: PathLike) -> JobFiles:
    """model/data/optimiser STAR files of the iteration that ``path`` (any of them) belongs to."""
    path = Path(path)
    match = RUN_NAME.match(path.name)
    if match is None:
        raise InputError("not a RELION run_itNNN_model/_data/_optimiser.star name", path,
                         "give run_itNNN_model.star, run_itNNN_data.star or run_itNNN_optimiser.star")
    if not path.is_file():
        raise InputError("file not found", path, "check the path")
    root = path.parent / match["root"]
    siblings = {kind: Path(f"{root}_{kind}.star") for kind in ("model", "data", "optimiser")}
    if not siblings["model"].is_file():
        raise InputError(f"the model.star of the same iteration ({siblings['model'].name}) is missing",
                         path, "keep the job's run_itNNN_model.star next to the file given")
    present = {kind: p if p.is_file() else None for kind, p in siblings.items()}
    return JobFiles(model=siblings["model"], data=present["data"], optimiser=present["optimiser"])


def project_candidates(written: str, star_path: PathLike) -> list[Path]:
    """Where a project-relative path written in ``star_path`` may be, in the order to try."""
    written_path = Path(written)
    star_dir = Path(star_path).resolve().parent
    if written_path.is_absolute():
        return [written_path, star_dir / written_path.name]
    candidates = []
    if len(star_dir.parents) >= 2:
        candidates.append(star_dir.parents[1] / written_path)
    candidates += [Path.cwd() / written_path, star_dir / written_path.name]
    return list(dict.fromkeys(candidates))  # without repeats, order kept


def resolve_project_path(written: str, star_path: PathLike) -> Optional[Path]:
    """The first existing candidate of :func:`project_candidates`, None if none exists."""
    return next((p for p in project_candidates(written, star_path) if p.is_file()), None)


def read_model_star(path: PathLike) -> tuple[dict, pd.DataFrame]:
    """(model_general as a dict, model_classes table) of a RELION model.star, columns checked."""
    path = Path(path)
    blocks = read_star(path, n_blocks=2)  # RELION writes model_general then model_classes first
    if "model_classes" not in blocks:
        blocks = read_star(path)
    _, classes = loop_block(blocks, ["model_classes"], path)
    general = blocks.get("model_general")
    general = general if isinstance(general, dict) else {}
    if int(general.get("rlnReferenceDimensionality", 2)) != 2:
        raise InputError("this is a 3D classification; ClassRanker scores 2D class averages", path,
                         "give the model.star of a Class2D job")
    if "rlnReferenceImage" not in classes:
        raise InputError("block data_model_classes lacks the column rlnReferenceImage, so the class "
                         "averages cannot be found", path,
                         "add rlnReferenceImage (NNNNNN@classes.mrcs) to data_model_classes, or give "
                         "the class average stack itself (.mrcs) with --stats")
    return general, classes


def missing_class_columns(classes: pd.DataFrame) -> list[str]:
    """RELION statistics absent from a model_classes table (scored as unknown)."""
    missing = [label for label in _CLASS_COLUMNS if label not in classes]
    if TRANSLATIONS_ANGST not in classes and TRANSLATIONS_PX not in classes:
        missing.append(TRANSLATIONS_ANGST)
    return missing


def read_data_star(path: PathLike) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
    """(particles, optics) of a RELION data.star; optics is None for RELION 3.0 files."""
    path = Path(path)
    blocks = read_star(path)
    if "particles" in blocks:
        name, particles = loop_block(blocks, ["particles"], path)
        optics = blocks.get("optics")
        optics = optics if isinstance(optics, pd.DataFrame) else None
    else:
        tables = [n for n, b in blocks.items() if isinstance(b, pd.DataFrame)]
        if len(tables) != 1:
            loop_block(blocks, ["particles"], path)  # raises, naming the blocks found
        name, particles, optics = tables[0], blocks[tables[0]], None
    require_columns(particles, ["rlnClassNumber"], path, name)
    if particles["rlnClassNumber"].dtype.kind not in "iu":
        particles["rlnClassNumber"] = as_int_array(particles["rlnClassNumber"], path, "rlnClassNumber")
    return particles, optics


def particle_counts(particle_classes: np.ndarray, class_numbers: np.ndarray) -> np.ndarray:
    """Number of particles in each class (float array aligned with ``class_numbers``)."""
    top = int(max(particle_classes.max(initial=0), class_numbers.max(initial=0)))
    counts = np.bincount(particle_classes[particle_classes >= 0], minlength=top + 1)
    return counts[class_numbers].astype(float)


def read_particles(path: PathLike) -> tuple[ParticleSet, Optional[pd.DataFrame]]:
    """(particles, optics) of a RELION data.star without reading its whole table: one streamed pass
    counts the particles per class (:mod:`.particles`); subsets are copied row by row from the file
    and the full table (starfile, :func:`read_data_star`) is read only if ``.table()`` is asked for.
    optics is None for RELION 3.0 files."""
    path = Path(path)
    return stream_particles(path, load_table=lambda: read_data_star(path)[0])


def attach_particles(classset: ClassSet, particles: Union[pd.DataFrame, ParticleSet],
                     optics: Optional[pd.DataFrame], data_star: PathLike) -> ClassSet:
    """Set particles/optics and the particle counts of ``classset`` (class numbers checked).

    particles: a ParticleSet (:func:`read_particles`) or the table read from ``data_star`` (its
    subsets are then copied verbatim from ``data_star`` when the rows still match).
    """
    numbers = classset.class_numbers
    if isinstance(particles, pd.DataFrame):
        particles = ParticleSet.from_table(particles, source=str(data_star),
                                           write_subset=stream_writer(data_star, len(particles)))
    values, _ = particles.class_counts()
    check_particle_classes(values, numbers, data_star)
    classset.particles, classset.optics = particles, optics
    classset.table["particle_count"] = particles.counts_for(numbers)
    classset.extra["data_star"] = str(data_star)
    return classset


def _reference_parts(references: pd.Series, model_star: Path) -> tuple[np.ndarray, np.ndarray]:
    """(0-based image indices, stack file as written) of 'NNNNNN@path' references ('path' -> 1)."""
    parts = references.astype(str).str.strip().str.extract(r"^(?:(\d+)@)?(.+)$")
    if parts[1].isna().any():
        rows = np.flatnonzero(parts[1].isna().to_numpy()) + 1
        raise InputError(f"empty rlnReferenceImage in model_classes row(s) {listed(rows)}", model_star,
                         "give the model.star written by RELION")
    indices = pd.to_numeric(parts[0], errors="coerce").fillna(1).to_numpy(dtype=np.int64) - 1
    return indices, parts[1].to_numpy(dtype=str)


def read_reference_images(references: pd.Series, class_numbers: np.ndarray, model_star: Path,
                          expected_box: Optional[int]) -> np.ndarray:
    """Class averages named by rlnReferenceImage, in table order; headers checked before reading."""
    indices, files = _reference_parts(references, model_star)
    plan = []
    for written in pd.unique(files):
        rows = np.flatnonzero(files == written)
        stack = resolve_project_path(written, model_star)
        if stack is None:
            tried = ", ".join(str(p) for p in project_candidates(written, model_star))
            raise InputError(f"class average stack {written} not found (tried {tried})", model_star,
                             "run from the RELION project directory or keep the job's "
                             "run_itNNN_classes.mrcs next to the model.star")
        n, ny, nx = mrc_shape(stack)
        beyond = (indices[rows] >= n) | (indices[rows] < 0)
        if beyond.any():
            raise InputError(f"class(es) {listed(class_numbers[rows][beyond])} refer to image(s) "
                             f"{listed(indices[rows][beyond] + 1)} but {stack} holds {n} image(s)",
                             model_star, "give the class average stack of the same iteration")
        if ny != nx:
            raise InputError(f"class averages in {stack} are not square ({nx} x {ny} px)", model_star,
                             "give square 2D class averages")
        if expected_box is not None and nx != expected_box:
            raise InputError(f"rlnOriginalImageSize is {expected_box} px but {stack} holds "
                             f"{nx} px images", model_star,
                             "give the class average stack written by this job")
        check_box(nx, stack)
        plan.append((stack, rows, nx))
    box = plan[0][2]
    if any(size != box for _, _, size in plan[1:]):
        raise InputError("the reference images have different box sizes", model_star,
                         "give class averages of one job")
    if len(plan) == 1:                           # one stack: its rows are all rows, in order
        return read_mrc_images(plan[0][0], indices)
    images = np.empty((len(files), box, box), dtype=np.float32)
    for stack, rows, _ in plan:
        images[rows] = read_mrc_images(stack, indices[rows])
    return images


def _optimiser_diameter(path: Optional[Path]) -> Optional[float]:
    if path is None:
        return None
    general = read_star(path, n_blocks=1)
    block = next(iter(general.values()))
    try:
        value = float(block["rlnParticleDiameter"])
    except (KeyError, TypeError, ValueError):
        return None
    # RELION writes -1 when the diameter was left to its default
    return value if np.isfinite(value) and value > 0 else None


def _pixel_size(given: Optional[float], general: dict, model_star: Path) -> Optional[float]:
    """The pixel size to use: ``given`` if any (a differing model value is logged), else
    model_general's rlnPixelSize (checked > 0), else None."""
    value = general.get("rlnPixelSize")
    model = None if value is None else float(pd.to_numeric(value, errors="coerce"))
    if given is not None:
        if model is not None and abs(given - model) > 1e-3:
            log.warning("%s: pixel size %.4g given, rlnPixelSize is %.4g; using %.4g",
                        model_star, given, model, given)
        return given
    check_positive(model, "pixel size (rlnPixelSize)", model_star)
    if model is None:
        log.warning("%s: no rlnPixelSize; pixel size unknown", model_star)
    return model


def class_table(classes: pd.DataFrame, pixel_size: Optional[float], model_star: PathLike) -> pd.DataFrame:
    """Our per-class table from a model_classes table (class numbers 1..n unless given)."""
    n = len(classes)
    table = pd.DataFrame({"class_number": (classes["rlnClassNumber"].to_numpy(dtype=np.int64)
                                           if "rlnClassNumber" in classes else np.arange(1, n + 1)),
                          "reference_image": classes["rlnReferenceImage"].astype(str).to_numpy()})
    for label, column in _CLASS_COLUMNS.items():
        table[column] = (pd.to_numeric(classes[label], errors="coerce").to_numpy(dtype=float)
                         if label in classes else np.nan)
    if TRANSLATIONS_ANGST in classes:
        table["accuracy_translations"] = pd.to_numeric(classes[TRANSLATIONS_ANGST],
                                                       errors="coerce").to_numpy(dtype=float)
    elif TRANSLATIONS_PX not in classes:
        table["accuracy_translations"] = np.nan
    else:
        pixels = pd.to_numeric(classes[TRANSLATIONS_PX], errors="coerce").to_numpy(dtype=float)
        table["accuracy_translations"] = translations_to_angstrom(pixels, pixel_size, model_star)
    table["particle_count"] = np.nan
    return table


def _relion_version(classes: pd.DataFrame, particles, optics) -> str:
    """"3.0" (no optics table, translations in pixels) or "3.1+" (optics, Angstrom)."""
    if TRANSLATIONS_ANGST in classes or optics is not None:
        return "3.1+"
    if TRANSLATIONS_PX in classes or particles is not None:
        return "3.0"
    return "3.1+"


def read_relion_job(path: PathLike, data_star: Optional[PathLike] = None,
                    pixel_size: Optional[float] = None,
                    particle_diameter: Optional[float] = None,
                    files: Optional[JobFiles] = None, with_particles: bool = True) -> ClassSet:
    """ClassSet of a RELION Class2D iteration from any of its model/data/optimiser STAR files.

    data_star:  particles to count per class (default: the iteration's run_itNNN_data.star, if any)
    with_particles: False skips the particles (only the class averages and statistics are read)
    pixel_size, particle_diameter: override the values of model.star / optimiser.star
    files:      the job's files when they are not named run_itNNN_* (else found from ``path``)
    """
    path = Path(path)
    files = files or job_files(path)
    check_positive(pixel_size, "pixel size", path)
    check_positive(particle_diameter, "particle diameter", path)
    general, classes = read_model_star(files.model)
    pixel_size = _pixel_size(pixel_size, general, files.model)
    if particle_diameter is None:
        particle_diameter = _optimiser_diameter(files.optimiser)
    data_star = Path(data_star) if data_star is not None else files.data
    if not with_particles:
        data_star = None
    particles, optics = read_particles(data_star) if data_star is not None else (None, None)
    table = class_table(classes, pixel_size, files.model)
    box = general.get("rlnOriginalImageSize")
    images = read_reference_images(classes["rlnReferenceImage"], table["class_number"].to_numpy(),
                                   files.model, None if box is None else int(box))
    known = REQUIRED_CLASS_COLUMNS + OPTIONAL_CLASS_COLUMNS + (TRANSLATIONS_PX, "rlnClassNumber")
    other = [c for c in classes.columns if c not in known]
    missing = missing_class_columns(classes)
    if missing:
        log.warning("%s: data_model_classes lacks %s; scoring without them (they count as unknown)",
                    files.model, ", ".join(missing))
    extra = {"relion_version": _relion_version(classes, particles, optics),
             "missing_columns": missing,
             "model_star": str(files.model),
             "optimiser_star": None if files.optimiser is None else str(files.optimiser),
             "data_star": None,
             "relion_class_columns": classes[other].reset_index(drop=True)}
    classset = ClassSet(images=images, table=table, pixel_size=pixel_size,
                        particle_diameter=particle_diameter, source=str(files.model), extra=extra)
    if particles is not None:
        attach_particles(classset, particles, optics, data_star)
    validate_classes(classset)
    return classset
