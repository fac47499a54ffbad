"""Write a simulated Class2D job as RELION 3.1 does: classes .mrcs, model/data/optimiser STAR files.

Everything goes through starfile and mrcfile, and the output is byte-identical for identical
inputs: the time stamps both libraries put in their headers are replaced by fixed text.
Paths inside the STAR files are relative to the RELION project directory, which is taken to be the
job folder's grandparent (as for Class2D/jobNNN), so ``<parent>/<job>/run_it025_classes.mrcs``
resolves from there.
"""
from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

ITERATION = 25
ROOT = f"run_it{ITERATION:03d}"
CLASSES_FILE = f"{ROOT}_classes.mrcs"
MODEL_FILE = f"{ROOT}_model.star"
DATA_FILE = f"{ROOT}_data.star"
OPTIMISER_FILE = f"{ROOT}_optimiser.star"
SAMPLING_FILE = f"{ROOT}_sampling.star"
PARTICLES_FILE = "particles.mrcs"
TRUTH_FILE = "truth.csv"
MRC_LABEL = "ClassRanker procedural simulator"


def project_relative(outdir: Path) -> str:
    """``<parent>/<job>``: the job folder relative to its grandparent (the RELION project)."""
    outdir = Path(outdir).resolve()
    return f"{outdir.parent.name}/{outdir.name}" if outdir.parent.name else outdir.name


def write_star(path: Path, blocks: dict) -> None:
    """starfile.write, with the time-stamped header replaced by RELION's version line."""
    starfile.write(blocks, path, float_format="%.8g", overwrite=True)
    lines = Path(path).read_text().splitlines(keepends=True)
    lines = [line for line in lines if not line.startswith("# Created by the starfile")]
    Path(path).write_text("\n# version 30001\n" + "".join(lines).lstrip("\n"))


def _fix_header(mrc, pixel_size: float) -> None:
    mrc.set_image_stack()
    mrc.voxel_size = pixel_size
    mrc.header.label[0] = MRC_LABEL.encode().ljust(80)
    mrc.header.nlabl = 1


def write_stack(path: Path, images: np.ndarray, pixel_size: float) -> None:
    """A float32 .mrcs image stack with its voxel size set."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(images, dtype=np.float32))
        _fix_header(mrc, pixel_size)


def open_stack(path: Path, n: int, box: int, pixel_size: float):
    """A writable memory-mapped float32 .mrcs of n images (call ``.close()`` when filled)."""
    mrc = mrcfile.new_mmap(path, shape=(n, box, box), mrc_mode=2, overwrite=True)
    _fix_header(mrc, pixel_size)
    return mrc


def write_model_star(path: Path, table: pd.DataFrame, reference: str, box: int, pixel_size: float,
                     n_groups: int = 1) -> None:
    """run_itNNN_model.star: model_general and model_classes, as RELION 3.1 writes them."""
    resolution = table["resolution"].to_numpy(dtype=float)
    finite = resolution[np.isfinite(resolution)]
    current = float(finite.min()) if len(finite) else float(box * pixel_size / 2)
    general = {
        "rlnReferenceDimensionality": 2,
        "rlnDataDimensionality": 2,
        "rlnOriginalImageSize": box,
        "rlnCurrentResolution": round(current, 6),
        "rlnCurrentImageSize": box,
        "rlnPaddingFactor": 2.0,
        "rlnIsHelix": 0,
        "rlnFourierSpaceInterpolator": 1,
        "rlnMinRadiusNnInterpolation": 10,
        "rlnPixelSize": pixel_size,
        "rlnNrClasses": len(table),
        "rlnNrBodies": 1,
        "rlnNrGroups": n_groups,
        "rlnTau2FudgeFactor": 2.0,
        "rlnNormCorrectionAverage": 0.55,
        "rlnSigmaOffsetsAngst": 2.0 * pixel_size,
        "rlnOrientationalPriorMode": 0,
        "rlnSigmaPriorRotAngle": 0.0,
        "rlnSigmaPriorTiltAngle": 0.0,
        "rlnSigmaPriorPsiAngle": 0.0,
        "rlnLogLikelihood": 0.0,
        "rlnAveragePmax": 0.8,
    }
    classes = pd.DataFrame({
        "rlnReferenceImage": [f"{i:06d}@{reference}" for i in table["class_number"]],
        "rlnClassDistribution": table["class_distribution"].to_numpy(dtype=float),
        "rlnAccuracyRotations": table["accuracy_rotations"].to_numpy(dtype=float),
        "rlnAccuracyTranslationsAngst": table["accuracy_translations"].to_numpy(dtype=float),
        "rlnEstimatedResolution": resolution,
        "rlnOverallFourierCompleteness": table["completeness"].to_numpy(dtype=float),
        "rlnClassPriorOffsetX": 0.0,
        "rlnClassPriorOffsetY": 0.0,
    })
    write_star(path, {"model_general": general, "model_classes": classes})


def write_data_star(path: Path, optics: pd.DataFrame, particles: pd.DataFrame) -> None:
    """run_itNNN_data.star: the RELION 3.1 optics and particles tables."""
    write_star(path, {"optics": optics, "particles": particles})


def write_optimiser_star(path: Path, job: str, particle_diameter: float, seed: int) -> None:
    """run_itNNN_optimiser.star with the options a Class2D job records (and the sibling files)."""
    general = {
        "rlnOutputRootName": f"{job}/run",
        "rlnModelStarFile": f"{job}/{MODEL_FILE}",
        "rlnExperimentalDataStarFile": f"{job}/{DATA_FILE}",
        "rlnOrientSamplingStarFile": f"{job}/{SAMPLING_FILE}",
        "rlnCurrentIteration": ITERATION,
        "rlnNumberOfIterations": ITERATION,
        "rlnDoSplitRandomHalves": 0,
        "rlnRandomSeed": int(seed),
        "rlnParticleDiameter": float(particle_diameter),
        "rlnWidthMaskEdge": 5,
        "rlnDoZeroMask": 1,
        "rlnDoSolventFlattening": 1,
        "rlnDoAutoRefine": 0,
        "rlnDoCorrectNorm": 1,
        "rlnDoCorrectScale": 1,
        "rlnDoCorrectCtf": 1,
        "rlnCtfDataArePhaseFlipped": 0,
        "rlnRefsAreCtfCorrected": 1,
    }
    write_star(path, {"optimiser_general": general})


def write_truth(path: Path, truth: pd.DataFrame) -> None:
    """truth.csv: class_number, label (1 good, 0 junk), kind, score in [0, 1], n_particles."""
    columns = ["class_number", "label", "kind", "score", "n_particles"]
    truth[columns].to_csv(path, index=False, float_format="%.4f")
