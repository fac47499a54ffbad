"""The particles of a simulated Class2D job: the RELION 3.1 optics and particles tables, and
(for small jobs) a stack of noisy particle images consistent with them.

Good particles carry the 3D orientation they were projected at (rlnAngleRot/Tilt of their class's
view, rlnAnglePsi their in-plane angle); junk particles have rot = tilt = 0. A particle image is its
class's projection rotated by psi and moved by -origin (RELION's rlnOriginX/YAngst re-centre it),
with the CTF of its own defocus (not phase-flipped) and white noise, normalised like RELION's
--norm (background outside the particle circle: mean 0, standard deviation 1).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.ndimage

from .density import euler_matrices, frequency_grid, project
from .imaging import apply_transfer, ctf

VOLTAGE = 300.0
SPHERICAL_ABERRATION = 2.7
AMPLITUDE_CONTRAST = 0.1
MICROGRAPH_SIZE = 4096
#: per-particle signal-to-noise ratio (variances) of written particle images
PARTICLE_SNR = 0.1
B_FACTOR = 100.0


def optics_table(box: int, pixel_size: float) -> pd.DataFrame:
    """One optics group, as in a RELION 3.1 data.star."""
    return pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnOpticsGroup": [1],
        "rlnMicrographOriginalPixelSize": [pixel_size],
        "rlnVoltage": [VOLTAGE],
        "rlnSphericalAberration": [SPHERICAL_ABERRATION],
        "rlnAmplitudeContrast": [AMPLITUDE_CONTRAST],
        "rlnImagePixelSize": [pixel_size],
        "rlnImageSize": [box],
        "rlnImageDimensionality": [2],
    })


def particle_table(rng: np.random.Generator, counts: np.ndarray, labels: np.ndarray, view_rot: np.ndarray,
                   view_tilt: np.ndarray, box: int, pixel_size: float, stack: str | None = None) -> pd.DataFrame:
    """The particles table: ``counts[i]`` particles of class i + 1, grouped by micrograph.

    stack: project-relative path of a real particle stack; None -> notional per-micrograph stacks
    (names only, nothing is written).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    classes = rng.permutation(np.repeat(np.arange(1, len(counts) + 1), counts))
    n_mics = max(1, int(round(n / rng.uniform(60, 150))))
    mic = np.sort(rng.integers(0, n_mics, n))
    index_in_mic = np.arange(n) - np.searchsorted(mic, mic)
    mic_defocus = rng.uniform(8000.0, 30000.0, n_mics)
    mic_astig = rng.uniform(0.0, 800.0, n_mics)
    mic_angle = rng.uniform(-90.0, 90.0, n_mics)
    good = np.asarray(labels)[classes - 1] == 1
    spread = np.where(good, 1.0, 2.0)
    origin = np.clip(rng.normal(0.0, 1.0, (n, 2)) * spread[:, None], -5, 5) * pixel_size
    mic_names = np.array([f"MotionCorr/job002/Movies/mic_{m + 1:05d}.mrc" for m in range(n_mics)])
    if stack is None:
        names = [f"{i + 1:06d}@Extract/job007/Movies/mic_{m + 1:05d}.mrcs" for i, m in zip(index_in_mic, mic)]
    else:
        names = [f"{i + 1:06d}@{stack}" for i in range(n)]
    margin = box / 2
    return pd.DataFrame({
        "rlnCoordinateX": np.round(rng.uniform(margin, MICROGRAPH_SIZE - margin, n)),
        "rlnCoordinateY": np.round(rng.uniform(margin, MICROGRAPH_SIZE - margin, n)),
        "rlnImageName": names,
        "rlnMicrographName": mic_names[mic],
        "rlnOpticsGroup": 1,
        "rlnDefocusU": np.round(mic_defocus[mic], 2),
        "rlnDefocusV": np.round(mic_defocus[mic] - mic_astig[mic], 2),
        "rlnDefocusAngle": np.round(mic_angle[mic], 3),
        "rlnCtfBfactor": 0.0,
        "rlnCtfScalefactor": 1.0,
        "rlnPhaseShift": 0.0,
        "rlnGroupNumber": 1,
        "rlnAngleRot": np.where(good, np.asarray(view_rot)[classes - 1], 0.0).round(4),
        "rlnAngleTilt": np.where(good, np.asarray(view_tilt)[classes - 1], 0.0).round(4),
        "rlnAnglePsi": np.round(rng.uniform(-180.0, 180.0, n), 4),
        "rlnOriginXAngst": np.round(origin[:, 0], 4),
        "rlnOriginYAngst": np.round(origin[:, 1], 4),
        "rlnClassNumber": classes,
        "rlnNormCorrection": np.round(rng.normal(0.55, 0.04, n), 5),
        "rlnLogLikeliContribution": np.round(rng.normal(14700.0, 60.0, n), 3),
        "rlnMaxValueProbDistribution": np.round(np.where(good, rng.uniform(0.3, 1.0, n), rng.uniform(0.05, 0.6, n)), 5),
        "rlnNrOfSignificantSamples": rng.integers(1, 40, n),
    })


def transform_template(template: np.ndarray, psi: float, origin_px: np.ndarray) -> np.ndarray:
    """A class template seen as a particle: rotated by psi (RELION's in-plane convention), moved by -origin."""
    box = template.shape[0]
    c, s = np.cos(np.deg2rad(psi)), np.sin(np.deg2rad(psi))
    matrix = np.array([[c, s], [-s, c]])  # (y, x) index order
    centre = np.array([box // 2, box // 2], dtype=float)
    origin_yx = np.array([origin_px[1], origin_px[0]], dtype=float)
    offset = centre - matrix @ centre + matrix @ origin_yx
    return scipy.ndimage.affine_transform(template, matrix, offset=offset, order=1, mode="constant", cval=0.0)


def particle_signal_scale(projections: np.ndarray, pixel_size: float, radius_px: float) -> float:
    """Standard deviation, inside the particle circle, of typical projections seen through a 2 um CTF."""
    box = projections.shape[-1]
    k = frequency_grid(box) / pixel_size
    transfer = (ctf(k, 20000.0) * np.exp(-B_FACTOR * k * k / 4.0)).astype(np.float32)
    y, x = np.mgrid[:box, :box] - box // 2
    inside = np.hypot(x, y) <= radius_px
    return float(np.median(apply_transfer(projections, transfer)[:, inside].std(axis=1)))


def render_particles(out: np.ndarray, rng: np.random.Generator, table: pd.DataFrame, sources: list,
                     pixel_size: float, signal_scale: float, radius_px: float, snr: float = PARTICLE_SNR,
                     chunk: int = 256) -> None:
    """Fill ``out`` (n, box, box) with the particle images of ``table``.

    sources[i]: for class i + 1 either a Molecule (good: projected at the particle's rot, tilt, psi)
    or a (box, box) template (junk: rotated by psi). signal_scale divides the noise-free density so
    that a good particle has unit standard deviation; snr is the per-particle signal-to-noise ratio.
    """
    n, box = out.shape[0], out.shape[-1]
    k = frequency_grid(box) / pixel_size
    envelope = np.exp(-B_FACTOR * k * k / 4.0)
    y, x = np.mgrid[:box, :box] - box // 2
    background = np.hypot(x, y) > radius_px
    noise_std = 1.0 / np.sqrt(snr)
    classes = table["rlnClassNumber"].to_numpy()
    rot, tilt, psi = (table[c].to_numpy(dtype=float) for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"))
    origin = table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(dtype=float) / pixel_size
    defocus = 0.5 * (table["rlnDefocusU"].to_numpy(dtype=float) + table["rlnDefocusV"].to_numpy(dtype=float))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        clean = np.zeros((stop - start, box, box), dtype=np.float32)
        for i in range(start, stop):
            source = sources[classes[i] - 1]
            if isinstance(source, np.ndarray):
                clean[i - start] = transform_template(source, psi[i], origin[i])
        for source in {id(s): s for s in sources if not isinstance(s, np.ndarray)}.values():
            rows = [i for i in range(start, stop) if sources[classes[i] - 1] is source]
            if rows:
                rows = np.array(rows)
                clean[rows - start] = project(source.atoms, euler_matrices(rot[rows], tilt[rows], psi[rows]),
                                              box, pixel_size, shifts=-origin[rows], weight=source.atom_weight)
        transfer = (ctf(k, defocus[start:stop]) * envelope).astype(np.float32)
        signal = apply_transfer(clean, transfer) / signal_scale
        noisy = signal + rng.standard_normal(signal.shape, dtype=np.float32) * noise_std
        bg = noisy[:, background]
        mean, std = bg.mean(axis=1), np.maximum(bg.std(axis=1), 1e-6)
        out[start:stop] = (noisy - mean[:, None, None]) / std[:, None, None]
