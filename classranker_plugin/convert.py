"""Conversions between Scipion objects and ClassRanker's ClassSet (Scipion layer only).

- :func:`classes_to_classset`: a ``SetOfClasses2D`` (from RELION, cryoSPARC, Xmipp...) becomes a
  ClassSet. Class averages are read with mrcfile (``pwem.emlib`` is a stub without Xmipp).
  Statistics are taken from the class attributes that scipion-em-relion (and our import
  protocol) store: ``_rlnClassDistribution``, ``_rlnAccuracyRotations``,
  ``_rlnAccuracyTranslationsAngst``, ``_rlnEstimatedResolution``. Without them (cryoSPARC, Xmipp,
  CL2D...) the class distribution is computed from the class sizes and the other statistics stay
  NaN: the scorer then relies on the images and the sizes only (``ScoreResult.inputs_used`` says so).
- :func:`particle_from_row`: one RELION particle row becomes a Scipion ``Particle`` with its CTF and
  2D alignment, following scipion-em-relion's conventions (same matrices as its importer).
- :func:`write_scores` / :func:`read_scores`: the per-class scores file kept in a protocol's extra
  folder (the state between the scoring step and the output step; it survives "continue").
"""
import math
import os

import mrcfile
import numpy as np
import pandas as pd

from pwem.constants import NO_INDEX
from pwem.convert.transformations import euler_matrix
from pwem.objects import CTFModel, Particle, Transform

from .classset import ClassSet
from .contrast import orient_contrast

SCORE_ATTR = "_classranker_score"
#: ClassSet column -> class attribute stored by scipion-em-relion (and by our importer)
STAT_ATTRS = {
    "class_distribution": "_rlnClassDistribution",
    "accuracy_rotations": "_rlnAccuracyRotations",
    "accuracy_translations": "_rlnAccuracyTranslationsAngst",
    "resolution": "_rlnEstimatedResolution",
}
#: set attribute with the mask diameter (Å) of the classification (our importer sets it)
DIAMETER_ATTR = "_rlnParticleDiameter"
SCORES_FILE = "class_scores.csv"
SCORE_COLUMNS = ["class_id", "score", "empty", "particle_count", "explanation"]


# ----------------------------------------------------------------- images ------------------------
def split_location(index, filename):
    """Scipion (index, file) -> (0-based index or None for a single image, plain path)."""
    path = str(filename)
    for suffix in (":mrcs", ":mrc"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    return (None if index in (None, NO_INDEX) else int(index) - 1), path


class ImageReader:
    """Reads single images out of MRC stacks, keeping each file open (memory-mapped) once."""

    def __init__(self, root=None):
        self.root = root
        self._files = {}

    def _data(self, path):
        if self.root and not os.path.isabs(path):
            path = os.path.join(self.root, path)
        if path not in self._files:
            if not os.path.exists(path):
                raise FileNotFoundError(f"class average stack not found: {path}")
            self._files[path] = mrcfile.mmap(path, mode="r", permissive=True)
        return self._files[path].data

    def read(self, index, filename):
        index, path = split_location(index, filename)
        data = self._data(path)
        if data.ndim == 2:
            return np.asarray(data, dtype=np.float32)
        return np.asarray(data[0 if index is None else index], dtype=np.float32)

    def close(self):
        for handle in self._files.values():
            handle.close()
        self._files.clear()


# ----------------------------------------------------------------- classes -> ClassSet -----------
def _attr(obj, name):
    value = getattr(obj, name, None)
    value = value.get() if hasattr(value, "get") else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def particle_diameter(classes, given=None):
    """Mask diameter (Å): ``given`` if > 0, else the classes' ``_rlnParticleDiameter``, else None."""
    if given:
        return float(given)
    value = _attr(classes, DIAMETER_ATTR)
    return value if value > 0 else None


def classes_to_classset(classes, root=None, diameter=None):
    """A SetOfClasses2D -> (ClassSet, class ids). Disabled and empty-representative classes skipped.

    ``root``: folder that relative image paths start from (the project folder; default: cwd).
    ``diameter``: mask diameter in Å (default: :func:`particle_diameter`).
    """
    reader = ImageReader(root)
    images, rows, ids = [], [], []
    try:
        for cls in classes.iterItems(orderBy="id"):
            if not cls.isEnabled() or not cls.hasRepresentative():
                continue
            rep = cls.getRepresentative()
            index, filename = rep.getLocation()
            images.append(reader.read(index, filename))
            row = {"class_number": cls.getObjId(), "particle_count": float(cls.getSize()),
                   "reference_image": "%s@%s" % (index, filename)}
            row.update({column: _attr(cls, attr) for column, attr in STAT_ATTRS.items()})
            rows.append(row)
            ids.append(cls.getObjId())
    finally:
        reader.close()
    if not images:
        raise ValueError("the input classes have no class averages (representatives)")
    boxes = {im.shape for im in images}
    if len(boxes) != 1:
        raise ValueError(f"class averages of different sizes: {sorted(boxes)}")
    table = pd.DataFrame(rows)
    if table["class_distribution"].isna().all():  # cryoSPARC / Xmipp inputs: from the sizes
        total = table["particle_count"].sum()
        table["class_distribution"] = table["particle_count"] / total if total > 0 else math.nan
    pixel_size = None
    try:
        pixel_size = float(classes.getFirstItem().getRepresentative().getSamplingRate() or 0) or None
    except Exception:  # representatives without sampling rate
        pixel_size = None
    if pixel_size is None:
        try:
            pixel_size = float(classes.getSamplingRate() or 0) or None
        except Exception:
            pixel_size = None
    classset = ClassSet(images=np.stack(images).astype(np.float32), table=table,
                        pixel_size=pixel_size, particle_diameter=particle_diameter(classes, diameter),
                        source=str(classes.getFileName()))
    return orient_contrast(classset), ids


# ----------------------------------------------------------------- RELION rows -> Scipion ---------
def _get(row, *labels, default=0.0):
    for label in labels:
        if label in row and not pd.isna(row[label]):
            return float(row[label])
    return default


def relion_location(image_name):
    """'000012@Extract/job005/mic1.mrcs' -> (12, 'Extract/job005/mic1.mrcs')."""
    if "@" in image_name:
        index, path = image_name.split("@", 1)
        return int(index), path
    return NO_INDEX, image_name


def particle_from_row(row, pixel_size, resolve=None, with_alignment=True):
    """A RELION particle row (a dict or pandas row) -> Particle with CTF, class id and transform.

    Shifts: rlnOriginXAngst (RELION 3.1+) or rlnOriginX (pixels, RELION 3.0). The matrix is the one
    scipion-em-relion builds for 2D alignment (rotation by psi, shifts in pixels).
    """
    index, path = relion_location(str(row["rlnImageName"]))
    particle = Particle(location=(index, resolve(path) if resolve else path))
    ctf = CTFModel()
    ctf.setStandardDefocus(_get(row, "rlnDefocusU"), _get(row, "rlnDefocusV", "rlnDefocusU"),
                           _get(row, "rlnDefocusAngle"))
    if "rlnPhaseShift" in row:
        ctf.setPhaseShift(_get(row, "rlnPhaseShift"))
    particle.setCTF(ctf)
    if "rlnClassNumber" in row:
        particle.setClassId(int(row["rlnClassNumber"]))
    if with_alignment:
        inv = 1.0 / pixel_size
        shift_x = _get(row, "rlnOriginXAngst", default=math.nan)
        shift_y = _get(row, "rlnOriginYAngst", default=math.nan)
        if math.isnan(shift_x):
            shift_x, shift_y = _get(row, "rlnOriginX") * pixel_size, _get(row, "rlnOriginY") * pixel_size
        matrix = euler_matrix(0.0, 0.0, math.radians(_get(row, "rlnAnglePsi")), "szyz")
        matrix[:3, 3] = [shift_x * inv, shift_y * inv, 0.0]
        particle.setTransform(Transform(matrix))
    return particle


# ----------------------------------------------------------------- scores file -------------------
def write_scores(path, class_ids, result, counts):
    """Write the per-class scores (and feature vectors) atomically: all or nothing."""
    frame = pd.DataFrame({
        "class_id": np.asarray(class_ids, dtype=int),
        "score": np.asarray(result.scores, dtype=float),
        "empty": np.asarray(result.empty, dtype=bool),
        "particle_count": np.asarray(counts, dtype=float),
        "explanation": list(result.explanations) if len(result.explanations) == len(class_ids)
        else [""] * len(class_ids),
    })
    for j, name in enumerate(result.feature_names):
        frame["feature_" + name] = np.asarray(result.feature_vectors)[:, j]
    tmp = str(path) + ".tmp"
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return frame


def read_scores(path):
    """The scores file written by :func:`write_scores` (DataFrame, one row per class)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no class scores (the scoring step has not finished)")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame["explanation"] = frame["explanation"].fillna("").astype(str)
    frame["empty"] = frame["empty"].astype(str).str.lower().isin(["true", "1"])
    return frame
