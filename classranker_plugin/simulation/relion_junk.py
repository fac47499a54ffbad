"""Junk particles for the RELION engine, made by our own code on the same scale as RELION's projections.

The junk templates of :mod:`.junk` (empty ice, carbon edges, ice blobs/crystals, aggregates,
off-centre particles, fragments, streaks/hot pixels) are drawn with projections of the job's own
maps (a numpy sum projection that matches relion_project's convention and scale), modulated by the
CTF exactly as relion_project --ctf does (RELION's sign convention, astigmatism included), and
given the same white noise as the good particles.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from .density import euler_matrices, random_views
from .imaging import electron_wavelength
from .junk import JunkContext, junk_template
from .relion_maps import JobMap, project_map

#: junk kinds the RELION engine makes by default (blurry is a class-level artefact, not a particle)
DEFAULT_RELION_JUNK = ("empty", "ice", "carbon_edge", "off_centre", "aggregate", "streaks", "fragment")


def relion_ctf(box: int, pixel_size: float, defocus_u, defocus_v, defocus_angle, voltage=300.0, cs=2.7,
               amplitude_contrast=0.1) -> np.ndarray:
    """CTF (n, box, box // 2 + 1) on the rfft2 grid, RELION's convention (positive at low frequency)."""
    lam = electron_wavelength(voltage)
    ky = scipy.fft.fftfreq(box)[:, None] / pixel_size
    kx = scipy.fft.rfftfreq(box)[None, :] / pixel_size
    u2 = kx * kx + ky * ky
    angle = np.arctan2(ky, kx)
    du = np.asarray(defocus_u, float)[:, None, None]
    dv = np.asarray(defocus_v, float)[:, None, None]
    da = np.deg2rad(np.asarray(defocus_angle, float))[:, None, None]
    defocus = 0.5 * (du + dv) + 0.5 * (du - dv) * np.cos(2.0 * (angle - da))
    k3 = np.arctan(amplitude_contrast / np.sqrt(1.0 - amplitude_contrast ** 2))
    chi = np.pi * lam * defocus * u2 - 0.5 * np.pi * cs * 1e7 * lam ** 3 * u2 * u2
    return np.sin(chi + k3).astype(np.float32)


def apply_ctf(images: np.ndarray, ctf: np.ndarray) -> np.ndarray:
    box = images.shape[-1]
    spectrum = scipy.fft.rfft2(images, workers=1)
    return scipy.fft.irfft2(spectrum * ctf, s=(box, box), workers=1).astype(np.float32)


def _fragment_volume(rng: np.random.Generator, volume: np.ndarray, fraction: float) -> np.ndarray:
    """The part of ``volume`` nearest a random strong voxel that holds ``fraction`` of its mass, re-centred."""
    box = volume.shape[0]
    strong = np.argwhere(volume > np.percentile(volume, 99))
    centre = strong[rng.integers(len(strong))]
    grid = np.indices(volume.shape).reshape(3, -1).T
    distance = np.linalg.norm(grid - centre, axis=1)
    order = np.argsort(distance)
    mass = np.cumsum(volume.ravel()[order])
    keep = order[: int(np.searchsorted(mass, fraction * mass[-1])) + 1]
    piece = np.zeros(volume.size, np.float32)
    piece[keep] = volume.ravel()[keep]
    piece = piece.reshape(volume.shape)
    com = np.array([np.average(np.indices(volume.shape)[a], weights=piece + 1e-12) for a in range(3)])
    shift = np.round(box // 2 - com).astype(int)
    return np.roll(piece, tuple(shift), axis=(0, 1, 2))


def junk_context(maps: list, box: int, pixel_size: float, mask_radius_px: float) -> JunkContext:
    """The context the junk templates need, with projections of the job's maps as good particles."""
    def good_projection(rng: np.random.Generator, fraction: float) -> np.ndarray:
        job_map = maps[int(rng.integers(len(maps)))]
        volume = job_map.volume if fraction >= 1.0 else _fragment_volume(rng, job_map.volume, fraction)
        rot, tilt = random_views(rng, 1)
        matrix = euler_matrices(rot, tilt, rng.uniform(-180, 180, 1))[0]
        return project_map(volume, matrix)

    probe = np.random.default_rng(12345)
    peaks = [good_projection(probe, 1.0).max() for _ in range(6)]
    molecule_radius = float(np.mean([m.diameter for m in maps]) / 2.0 / pixel_size)
    return JunkContext(box=box, pixel_size=pixel_size, radius=mask_radius_px, molecule_radius=molecule_radius,
                       level=float(np.mean(peaks)), good_projection=good_projection)


def junk_particles(rng: np.random.Generator, kinds: list, maps: list, box: int, pixel_size: float,
                   mask_radius_px: float, ctf_table, noise_sigma: float, use_ctf: bool) -> np.ndarray:
    """Noisy, CTF-modulated junk particles (n, box, box), one per entry of ``kinds``.

    ctf_table: DataFrame with rlnDefocusU/V/Angle per particle (same length as ``kinds``).
    """
    n = len(kinds)
    if n == 0:
        return np.zeros((0, box, box), np.float32)
    ctx = junk_context(maps, box, pixel_size, mask_radius_px)
    templates = np.stack([junk_template(kind, rng, ctx) for kind in kinds]).astype(np.float32)
    if use_ctf:
        ctf = relion_ctf(box, pixel_size, ctf_table["rlnDefocusU"], ctf_table["rlnDefocusV"],
                         ctf_table["rlnDefocusAngle"])
        templates = apply_ctf(templates, ctf)
    return templates + rng.normal(0.0, noise_sigma, templates.shape).astype(np.float32)
