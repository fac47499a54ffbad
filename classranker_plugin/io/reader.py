"""``read_classes``: one entry point that picks the reader from the file given."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

from ..classset import ClassSet
from ..contrast import orient_contrast
from ..errors import InputError
from .cryosparc import is_cryosparc_input, read_cryosparc_job
from .relion import (RUN_NAME, JobFiles, attach_particles, read_particles, read_relion_job,
                     resolve_project_path)
from .stack import MRC_SUFFIXES, read_stack
from .star import read_star

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)
RELION_STACK = re.compile(r"^.*_it\d+_classes\.mrcs$")


def _files_from_content(path: Path) -> JobFiles:
    """Job files of a STAR file not named run_itNNN_*: a model.star, or an optimiser.star (its
    rlnModelStarFile / rlnExperimentalDataStarFile entries are followed)."""
    blocks = read_star(path, n_blocks=2)
    if "model_classes" in blocks:
        return JobFiles(model=path)
    general = blocks.get("optimiser_general")
    if isinstance(general, dict) and "rlnModelStarFile" in general:
        model = resolve_project_path(str(general["rlnModelStarFile"]), path)
        if model is None:
            raise InputError(f"its model.star {general['rlnModelStarFile']} was not found", path,
                             "run from the RELION project directory or give the model.star")
        data = general.get("rlnExperimentalDataStarFile")
        data = None if data is None else resolve_project_path(str(data), path)
        return JobFiles(model=model, data=data, optimiser=path)
    raise InputError("not a RELION model.star or optimiser.star (no data_model_classes or "
                     "data_optimiser_general block)", path,
                     "give run_itNNN_model.star, _optimiser.star, _data.star or an .mrcs stack")


CONTRAST_CHOICES = ("auto", "white", "black")


def read_classes(path: PathLike, data_star: Optional[PathLike] = None,
                 stats: Optional[PathLike] = None, pixel_size: Optional[float] = None,
                 particle_diameter: Optional[float] = None, with_particles: bool = True,
                 contrast: str = "auto") -> ClassSet:
    """Read class averages and their statistics; InputError (naming the file) on bad input.

    contrast:  how the stack stores protein: "white" (RELION, cryoSPARC, cryo), "black" (inverted
               here to white), or "auto" (decided from the averages, see classranker_plugin.contrast)

    path:      RELION run_itNNN_model.star / _optimiser.star / _data.star (siblings of the same
               iteration found by name), another model/optimiser STAR, an .mrcs/.mrc stack, or a
               cryoSPARC 2D classification job (its folder, J12_NNN_class_averages.cs or .mrc)
    data_star: particles to count per class (default for RELION: the iteration's data.star; for
               cryoSPARC: the iteration's particles.cs)
    stats:     per-class statistics for a plain stack (CSV with header, or STAR)
    pixel_size, particle_diameter: Angstrom; override what the files say
    with_particles: False reads only the class averages and their statistics (no data.star)
    """
    if contrast not in CONTRAST_CHOICES:
        raise InputError(f"contrast must be one of {', '.join(CONTRAST_CHOICES)}, got {contrast!r}", path,
                         "give --contrast auto, white or black")
    classset = _read(Path(path).expanduser(), data_star, stats, pixel_size, particle_diameter, with_particles)
    return orient_contrast(classset, None if contrast == "auto" else contrast == "black")


def _read(path: Path, data_star, stats, pixel_size, particle_diameter, with_particles) -> ClassSet:
    if is_cryosparc_input(path) and stats is None:
        return read_cryosparc_job(path, particles_cs=data_star, pixel_size=pixel_size,
                                  particle_diameter=particle_diameter, with_particles=with_particles)
    if path.is_dir():
        raise InputError("a folder, but not a cryoSPARC 2D job folder (no *_class_averages.cs)", path,
                         "give a RELION run_itNNN_model.star, an .mrcs stack of class averages or a "
                         "cryoSPARC 2D classification job folder")
    if not path.is_file():
        raise InputError("file not found", path, "check the path")
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        if stats is None and RELION_STACK.match(path.name):
            log.warning("%s is a RELION stack: give its run_itNNN_model.star to use the job's "
                        "statistics and particles", path)
        particles = read_particles(data_star) if data_star is not None else None
        classset = read_stack(path, stats=stats, pixel_size=pixel_size,
                              particle_diameter=particle_diameter)
        if particles is not None:
            attach_particles(classset, particles[0], particles[1], data_star)
        return classset
    if suffix != ".star":
        raise InputError(f"unsupported file type {path.suffix!r}", path,
                         "give a RELION run_itNNN_model.star / _data.star / _optimiser.star or an "
                         ".mrcs stack of class averages")
    if stats is not None:
        raise InputError("a statistics file is only used with a plain .mrcs stack", stats,
                         "leave it out: the RELION job's model.star has the statistics")
    files = None if RUN_NAME.match(path.name) else _files_from_content(path)
    return read_relion_job(path, data_star=data_star, pixel_size=pixel_size,
                           particle_diameter=particle_diameter, files=files, with_particles=with_particles)
