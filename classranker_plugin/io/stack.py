"""Class averages from MRC files: a plain ``.mrcs``/``.mrc`` stack plus optional per-class statistics.

Pixel size of a plain stack: the ``pixel_size`` argument if given, else the MRC header voxel size.
A header value of 0 (cell not set) or exactly 1.0 (the placeholder many programs write when they
do not know it) is taken as *unknown* (None) and logged; pass ``pixel_size=1.0`` explicitly for data
that really is 1 A/px.

The statistics file (CSV with a header row, or STAR) has one row per image, in stack order. Its
columns may use our names or RELION labels (see ``STAT_ALIASES``); other columns are ignored.
``rlnAccuracyTranslations`` (RELION 3.0, pixels) is converted to Angstrom with the pixel size.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import mrcfile
import numpy as np
import pandas as pd

from ..classset import ClassSet
from ..errors import InputError
from .star import as_int_array, read_star
from .validate import check_box, check_positive, listed, validate_classes

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

#: accepted column names for each table column, first found wins
STAT_ALIASES = {
    "class_number": ("class_number", "rlnClassNumber"),
    "reference_image": ("reference_image", "rlnReferenceImage"),
    "class_distribution": ("class_distribution", "rlnClassDistribution"),
    "accuracy_rotations": ("accuracy_rotations", "rlnAccuracyRotations"),
    "accuracy_translations": ("accuracy_translations", "rlnAccuracyTranslationsAngst"),
    "resolution": ("resolution", "rlnEstimatedResolution"),
    "particle_count": ("particle_count",),
}
#: RELION 3.0 label in pixels, used only when no Angstrom column is present
TRANSLATIONS_PX = "rlnAccuracyTranslations"
#: RELION's "not estimated" accuracy, kept as is (never scaled by the pixel size)
NOT_ESTIMATED = 999.0
MRC_SUFFIXES = (".mrcs", ".mrc")
_COMPLEX_MODES = (3, 4)


def _open_error(path: Path, error: Exception) -> InputError:
    hint = " (the file is shorter than its header says: truncated?)" if "greater than file size" in str(error) else ""
    return InputError(f"not a readable MRC file ({error}){hint}", path,
                      "copy the file again if it was cut short, or give an MRC/MRCS stack of class averages "
                      "(float32, as RELION writes)")


def mrc_shape(path: PathLike) -> tuple[int, int, int]:
    """(n_images, ny, nx) of an MRC file from its header, without reading the pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError("image stack not found", path, "check the path")
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            shape = mrc.data.shape
    except (ValueError, OSError) as error:
        raise _open_error(path, error) from error
    return (1,) + tuple(shape) if len(shape) == 2 else tuple(shape)


def header_pixel_size(path: PathLike) -> Optional[float]:
    """Pixel size (A) from the MRC header, or None when the header does not know it (0 or 1.0)."""
    path = Path(path)
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            size = float(mrc.voxel_size.x)
    except (ValueError, OSError) as error:
        raise _open_error(path, error) from error
    if size <= 0 or size == 1.0:
        log.warning("%s: header pixel size %.3g taken as unknown; pass pixel_size if it is real",
                    path, size)
        return None
    return size


def read_mrc_images(path: PathLike, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Images of an MRC file as a (n, box, box) float32 array.

    indices: 0-based image indices to read (only those are copied from the memory map); all if None.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("image stack not found", path, "check the path")
    try:
        with mrcfile.mmap(path, mode="r", permissive=False) as mrc:
            if int(mrc.header.mode) in _COMPLEX_MODES:
                raise InputError("complex-valued MRC data", path, "give real-space class averages")
            data = mrc.data
            data = data[np.newaxis] if data.ndim == 2 else data
            if indices is not None:
                indices = np.asarray(indices, dtype=np.int64)
                if indices.size and (indices.min() < 0 or indices.max() >= len(data)):
                    raise InputError(f"image index {int(indices.max()) + 1} is beyond the "
                                     f"{len(data)} images of the stack", path,
                                     "give the stack written by the same job")
                data = data[indices]                 # already a copy in memory
            images = np.array(data, dtype=np.float32) if indices is None else np.asarray(data, dtype=np.float32)
    except (ValueError, OSError) as error:
        if isinstance(error, InputError):
            raise
        raise _open_error(path, error) from error
    if images.shape[1] != images.shape[2]:
        raise InputError(f"images are not square ({images.shape[2]} x {images.shape[1]} px)", path,
                         "give square class averages")
    return images


def _read_stats_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".star":
        blocks = read_star(path)
        tables = {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}
        if not tables:
            raise InputError("no table (loop_) block", path, "give a STAR file with a loop_ table")
        return tables.get("model_classes", next(iter(tables.values())))
    if not path.is_file():
        raise InputError("statistics file not found", path, "check the path")
    try:
        with open(path, encoding="utf-8") as handle:
            header = next((line for line in handle if line.strip() and not line.startswith("#")), "")
        return pd.read_csv(path, sep=table_delimiter(header), comment="#", skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read this table ({type(error).__name__}: {error})", path,
                         "give a UTF-8 text table with a header row, separated by commas, tabs or "
                         "blanks") from error


def table_delimiter(header: str) -> str:
    """The delimiter of a text table from its header line: comma, tab, else runs of blanks.

    (pandas' sniffer guesses a letter as delimiter for a one-column header such as
    ``class_number``; a header has no quoted separators, so the first that occurs decides.)
    """
    for delimiter in (",", "\t", ";"):
        if delimiter in header:
            return delimiter
    return r"\s+"


def stats_to_table(raw: pd.DataFrame, path: PathLike, pixel_size: Optional[float]) -> pd.DataFrame:
    """Our per-class table from a statistics table that uses our names or RELION labels."""
    table = pd.DataFrame(index=range(len(raw)))
    for column, aliases in STAT_ALIASES.items():
        name = next((a for a in aliases if a in raw.columns), None)
        if name is None:
            continue
        if column == "class_number":
            table[column] = check_class_numbers(as_int_array(raw[name], path, name), path, name)
        elif column == "reference_image":
            table[column] = raw[name].astype(str).to_numpy()
        else:
            values = pd.to_numeric(raw[name], errors="coerce").to_numpy(dtype=float)
            table[column] = values
    if "accuracy_translations" not in table and TRANSLATIONS_PX in raw.columns:
        table["accuracy_translations"] = translations_to_angstrom(
            pd.to_numeric(raw[TRANSLATIONS_PX], errors="coerce").to_numpy(dtype=float), pixel_size, path)
    if table.shape[1] == 0:
        accepted = sorted({a for aliases in STAT_ALIASES.values() for a in aliases} | {TRANSLATIONS_PX})
        raise InputError(f"no recognised column (found: {', '.join(map(str, raw.columns))})", path,
                         f"name the columns with a header row using any of: {', '.join(accepted)}")
    return table


def check_class_numbers(numbers: np.ndarray, path: PathLike, label: str = "class_number") -> np.ndarray:
    """``numbers`` if they are unique and >= 1; InputError naming the offending ones otherwise."""
    values, counts = np.unique(numbers, return_counts=True)
    if (values < 1).any() or (counts > 1).any():
        bad = np.concatenate([values[values < 1], values[counts > 1]])
        raise InputError(f"{label} must hold unique numbers >= 1; {listed(bad)} occur(s) more than "
                         f"once or below 1", path,
                         f"give each class its own number (1, 2, ...) in the {label} column")
    return numbers


def translations_to_angstrom(pixels: np.ndarray, pixel_size: Optional[float],
                             path: PathLike) -> np.ndarray:
    """RELION 3.0 translational accuracy (px) in Angstrom; 999 stays 999, NaN if no pixel size."""
    sentinel = pixels == NOT_ESTIMATED
    if pixel_size is None:
        if not sentinel.all():
            log.warning("%s: rlnAccuracyTranslations is in pixels and the pixel size is unknown: "
                        "translational accuracy left unknown", path)
        return np.where(sentinel, NOT_ESTIMATED, np.nan)
    # rounded to 1e-6 A so that 0.67 px * 3.54 is written as 2.3718, not 2.3718000000000004
    return np.where(sentinel, NOT_ESTIMATED, np.round(pixels * pixel_size, 6))


def read_stack(path: PathLike, stats: Optional[PathLike] = None, pixel_size: Optional[float] = None,
               particle_diameter: Optional[float] = None) -> ClassSet:
    """ClassSet from a plain stack of class averages and an optional statistics file."""
    path = Path(path)
    check_positive(pixel_size, "pixel size", path)
    check_positive(particle_diameter, "particle diameter", path)
    n, ny, nx = mrc_shape(path)
    if ny != nx:
        raise InputError(f"images are not square ({nx} x {ny} px)", path, "give square class averages")
    check_box(nx, path)
    if pixel_size is None:
        pixel_size = header_pixel_size(path)
    table = pd.DataFrame(index=range(n))
    if stats is not None:
        stats = Path(stats)
        table = stats_to_table(_read_stats_table(stats), stats, pixel_size)
        if len(table) != n:
            raise InputError(f"{len(table)} rows of statistics for the {n} images of {path}", stats,
                             "give one row per class average, in stack order")
    if "class_number" not in table:
        table.insert(0, "class_number", np.arange(1, n + 1))
    if "reference_image" not in table:
        table["reference_image"] = [f"{i:06d}@{path}" for i in range(1, n + 1)]
    images = read_mrc_images(path)
    classset = ClassSet(images=images, table=table, pixel_size=pixel_size,
                        particle_diameter=particle_diameter,
                        source=str(path), extra={"stats": None if stats is None else str(stats)})
    validate_classes(classset)
    return classset

