"""3D maps for the RELION engine: real maps resampled to the job's box, and generated densities.

Every map is returned as a ``JobMap``: a (box, box, box) float32 volume at the job's pixel size,
normalised so that its projections have unit mean square inside the particle circle (the noise level
of a job then follows from its SNR alone, whatever the map), with a name, an origin family (the real
map's file stem, or ``generated-<layout>``) and the diameter (A) of the molecule it holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import scipy.fft
import scipy.ndimage

from ..errors import InputError
from .density import random_molecule


@dataclass
class JobMap:
    name: str          # unique within a job, e.g. "betagal-Refine3D_job027" or "generated-ring-C6-17"
    family: str        # what the corpus holds out: file stem or "generated-<layout>"
    volume: np.ndarray  # (box, box, box) float32
    pixel_size: float
    diameter: float    # molecule diameter, Angstrom
    symmetry: str = "C1"


def fourier_resample(volume: np.ndarray, new_size: int) -> np.ndarray:
    """Resample a cubic volume to ``new_size``^3 voxels by cropping (or zero-padding) its spectrum."""
    n = volume.shape[0]
    if new_size == n:
        return volume.astype(np.float32)
    spectrum = scipy.fft.fftshift(scipy.fft.fftn(volume.astype(np.float64), workers=1))
    out = np.zeros((new_size,) * 3, dtype=complex)
    m = min(n, new_size)
    src = slice(n // 2 - m // 2, n // 2 - m // 2 + m)
    dst = slice(new_size // 2 - m // 2, new_size // 2 - m // 2 + m)
    out[dst, dst, dst] = spectrum[src, src, src]
    resampled = scipy.fft.ifftn(scipy.fft.ifftshift(out), workers=1).real
    return (resampled * (new_size / n) ** 3).astype(np.float32)


def centre_crop(volume: np.ndarray, box: int) -> np.ndarray:
    """Crop or zero-pad a cubic volume about its centre (index size // 2) to ``box``^3."""
    n = volume.shape[0]
    out = np.zeros((box,) * 3, dtype=np.float32)
    m = min(n, box)
    src = slice(n // 2 - m // 2, n // 2 - m // 2 + m)
    dst = slice(box // 2 - m // 2, box // 2 - m // 2 + m)
    out[dst, dst, dst] = volume[src, src, src]
    return out


def resample_map(volume: np.ndarray, pixel_size: float, box: int, target_pixel_size: float):
    """(volume, actual pixel size) of a map brought to ``box`` voxels of about ``target_pixel_size``."""
    n = volume.shape[0]
    new_size = max(8, int(round(n * pixel_size / target_pixel_size / 2.0)) * 2)
    resampled = fourier_resample(volume, new_size)
    return centre_crop(resampled, box), pixel_size * n / new_size


def molecule_diameter(volume: np.ndarray, pixel_size: float) -> float:
    """Diameter (A) of the density: twice the 99th percentile distance of the strong voxels from the centre."""
    threshold = volume.mean() + 2.0 * volume.std()
    coords = np.argwhere(volume > threshold)
    if len(coords) == 0:
        return volume.shape[0] * pixel_size * 0.5
    centre = volume.shape[0] // 2
    radius = np.percentile(np.linalg.norm(coords - centre, axis=1), 99)
    return float(2.0 * (radius + 1.0) * pixel_size)


def normalise(volume: np.ndarray, radius_px: float) -> np.ndarray:
    """Scale so that the three axial projections have unit mean square inside ``radius_px``."""
    box = volume.shape[0]
    y, x = np.mgrid[:box, :box] - box // 2
    inside = np.hypot(x, y) <= radius_px
    power = np.mean([np.mean(volume.sum(axis=a)[inside] ** 2) for a in range(3)])
    return (volume / np.sqrt(max(power, 1e-20))).astype(np.float32)


def load_map(path, box: int, pixel_size: float) -> JobMap:
    """A real map (MRC) resampled to ``box`` voxels of about ``pixel_size`` A."""
    path = Path(path)
    try:
        with mrcfile.open(path, permissive=True) as mrc:
            volume = np.asarray(mrc.data, dtype=np.float32)
            voxel = float(mrc.voxel_size.x)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the map ({error})", path=path, fix="give an MRC volume") from None
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise InputError(f"a cubic 3D map is needed, got shape {volume.shape}", path=path)
    if voxel <= 0:
        raise InputError("the map has no pixel size in its header", path=path,
                         fix="set it with relion_image_handler --i map.mrc --o fixed.mrc --angpix A")
    volume, actual = resample_map(volume - np.median(volume), voxel, box, pixel_size)
    volume = np.clip(volume, 0.0, None)  # solvent is flat: keep the protein, drop negative ripples
    diameter = min(molecule_diameter(volume, actual), 0.9 * box * actual)
    volume = normalise(volume, 0.5 * diameter / actual)
    return JobMap(name=path.stem, family=path.stem, volume=volume, pixel_size=actual, diameter=diameter)


def voxelise(atoms: np.ndarray, box: int, pixel_size: float, atom_sigma: float = 2.0) -> np.ndarray:
    """Pseudo-atoms (A, centred) -> (box, box, box) density, each atom a Gaussian of ``atom_sigma`` A."""
    edges = (np.arange(box + 1) - box // 2 - 0.5) * pixel_size
    # volume index order (z, y, x): atoms[:, 2] is z
    grid, _ = np.histogramdd(atoms[:, ::-1], bins=(edges, edges, edges))
    return scipy.ndimage.gaussian_filter(grid.astype(np.float32), atom_sigma / pixel_size)


def generated_map(rng: np.random.Generator, box: int, pixel_size: float, layout: str | None = None,
                  size_fraction: tuple = (0.35, 0.6), index: int = 0) -> JobMap:
    """A protein-like density (procedural simulator's pseudo-atom model) of ``layout``, voxelised."""
    diameter = float(rng.uniform(*size_fraction) * box * pixel_size)
    molecule = random_molecule(rng, diameter, layout)
    volume = voxelise(molecule.atoms, box, pixel_size)
    volume = normalise(volume, 0.5 * diameter / pixel_size)
    name = f"generated-{molecule.layout}-{molecule.symmetry}-{index}"
    return JobMap(name=name, family=f"generated-{molecule.layout}", volume=volume, pixel_size=pixel_size,
                  diameter=diameter, symmetry=molecule.symmetry)


def write_map(path, job_map: JobMap) -> Path:
    path = Path(path)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(job_map.volume.astype(np.float32))
        mrc.voxel_size = job_map.pixel_size
    return path


def project_map(volume: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Sum projection of ``volume`` rotated by the 3x3 ``matrix`` (RELION's A), about index box // 2."""
    box = volume.shape[0]
    c = box // 2
    # output voxel (z, y, x) samples the input at A^T (x, y, z) in xyz order
    inverse = matrix.T
    perm = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)  # xyz <-> zyx
    m = perm @ inverse @ perm
    offset = c - m @ np.full(3, c, dtype=float)
    rotated = scipy.ndimage.affine_transform(volume, m, offset=offset, order=1, mode="constant")
    return rotated.sum(axis=0).astype(np.float32)
