"""Procedural simulator: a labelled, RELION-3.1-style Class2D job in seconds, without RELION.

``simulate_job(outdir, ...)`` writes into ``outdir``::

    run_it025_classes.mrcs     class averages, float32, voxel size set
    run_it025_model.star       model_general + model_classes (distribution, accuracies, resolution)
    run_it025_data.star        optics + particles (class of every particle, CTF, angles, origins)
    run_it025_optimiser.star   particle diameter, mask options, sibling file names
    truth.csv                  class_number, label (1 good / 0 junk), kind, score in [0, 1], n_particles
    particles.mrcs             only with write_particle_images=True

Good classes are projections of random protein-like densities (``density.py``) at random views;
junk classes are templates of the kinds in ``junk.JUNK_KINDS``. Both then go through the same
Class2D imaging (``imaging.py``): Wiener CTF correction averaged over the job's defocus range, a
fall-off at the class's resolution, noise whose level falls with the square root of the class's
particle count, and RELION's zeroed solvent outside a soft circle of the particle diameter.
Per-class statistics come from ``metadata.py``. Every random draw comes from a generator seeded by
(seed, purpose[, class]), so a seed gives byte-identical files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import job_files
from .density import Molecule, euler_matrices, project, random_molecule, random_views
from .imaging import (apply_transfer, coloured_noise, ctf_correction_transfer, masked_std,
                      resolution_envelopes, soft_circular_mask)
from .junk import JUNK_KINDS, JunkContext, junk_template
from .metadata import METADATA_MODES, draw_counts, draw_statistics
from .particles import optics_table, particle_signal_scale, particle_table, render_particles

#: largest particles.mrcs that write_particle_images will write
MAX_PARTICLE_STACK_BYTES = 1 << 30

#: truth score of a junk class, before a small random increase (how "nearly useful" it looks)
JUNK_BASE_SCORE = {"empty": 0.0, "ice": 0.04, "carbon_edge": 0.04, "streaks": 0.04, "fragment": 0.12,
                   "aggregate": 0.18, "blurry": 0.22, "off_centre": 0.26}

#: range of the Wiener constant of the CTF correction (smaller: more low-frequency contrast restored)
WIENER_RANGE = (0.01, 0.05)
#: noise-to-signal ratio (standard deviations, after filtering) of one particle, at 4 px resolution
NOISE_PER_PARTICLE = (0.8, 1.6)

#: fraction of a class's mean density (inside the mask) that its solvent sits below zero
SOLVENT_OFFSET = (0.5, 0.9)

# purposes of the random streams
_JOB, _MOLECULES, _METADATA, _PARTICLES, _NOISE, _PARTICLE_IMAGES, _CLASS = range(7)


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *purpose])


@dataclass(frozen=True)
class JobSummary:
    """What simulate_job made (also printed by the CLI)."""

    path: Path
    n_classes: int
    n_good: int
    box: int
    pixel_size: float
    particle_diameter: float
    n_particles: int
    metadata: str
    seed: int
    seconds: float

    def line(self) -> str:
        return (f"{self.path}: {self.n_classes} classes ({self.n_good} good, {self.n_classes - self.n_good} junk), "
                f"box {self.box}, {self.pixel_size:.3g} A/px, diameter {self.particle_diameter:.0f} A, "
                f"{self.n_particles} particles, {self.metadata} metadata, seed {self.seed}, {self.seconds:.1f} s")


def simulate_job(outdir, n_classes: int = 50, box: int = 64, pixel_size: float = 3.5,
                 particle_diameter: float | None = None, n_particles: int = 5000,
                 junk_fraction: float = 0.4, junk_kinds=None, metadata: str = "realistic",
                 write_particle_images: bool = False, seed: int = 0) -> Path:
    """Write a simulated Class2D job (see the module docstring) into ``outdir`` and return its path.

    particle_diameter: mask diameter in A (default: 55-70% of the box); junk_kinds: names from
    JUNK_KINDS (default all); metadata: "realistic" or "uninformative" (junk and good classes get
    statistics from the same distribution).
    """
    return simulate_job_summary(outdir, n_classes, box, pixel_size, particle_diameter, n_particles,
                                junk_fraction, junk_kinds, metadata, write_particle_images, seed).path


def simulate_job_summary(outdir, n_classes=50, box=64, pixel_size=3.5, particle_diameter=None,
                         n_particles=5000, junk_fraction=0.4, junk_kinds=None, metadata="realistic",
                         write_particle_images=False, seed=0) -> JobSummary:
    """simulate_job, returning a JobSummary."""
    started = time.perf_counter()
    junk_kinds = tuple(JUNK_KINDS if junk_kinds is None else junk_kinds)
    _check_arguments(n_classes, box, pixel_size, particle_diameter, n_particles, junk_fraction,
                     junk_kinds, metadata, write_particle_images)
    outdir = Path(outdir)
    job_rng = _rng(seed, _JOB)
    if particle_diameter is None:
        particle_diameter = np.round(box * pixel_size * job_rng.uniform(0.55, 0.7))
    particle_diameter = float(particle_diameter)
    radius_px = min(particle_diameter / (2.0 * pixel_size), box / 2.0 - 1.0)

    labels, kinds = _assign_kinds(job_rng, n_classes, junk_fraction, junk_kinds)
    molecules = _molecules(_rng(seed, _MOLECULES), particle_diameter)
    meta_rng = _rng(seed, _METADATA)
    counts, meta_labels = draw_counts(meta_rng, labels, kinds, n_particles, metadata)
    table = draw_statistics(meta_rng, meta_labels, counts, box, pixel_size)
    table.insert(0, "class_number", np.arange(1, n_classes + 1))
    reference = _reference_projections(_rng(seed, _JOB, 1), molecules[0], box, pixel_size)
    templates, sources, views = _class_templates(seed, job_rng, labels, kinds, molecules, reference, box,
                                                 pixel_size, radius_px)
    images = _class_averages(seed, job_rng, templates, reference, counts, table["resolution"].to_numpy(),
                             box, pixel_size, radius_px)

    outdir.mkdir(parents=True, exist_ok=True)
    job = job_files.project_relative(outdir)
    job_files.write_stack(outdir / job_files.CLASSES_FILE, images, pixel_size)
    job_files.write_model_star(outdir / job_files.MODEL_FILE, table, f"{job}/{job_files.CLASSES_FILE}",
                               box, pixel_size)
    stack = f"{job}/{job_files.PARTICLES_FILE}" if write_particle_images else None
    particles = particle_table(_rng(seed, _PARTICLES), counts, labels, views[0], views[1], box, pixel_size, stack)
    job_files.write_data_star(outdir / job_files.DATA_FILE, optics_table(box, pixel_size), particles)
    job_files.write_optimiser_star(outdir / job_files.OPTIMISER_FILE, job, particle_diameter, seed)
    scores = _truth_scores(_rng(seed, _JOB, 2), labels, kinds, counts, table["resolution"].to_numpy())
    job_files.write_truth(outdir / job_files.TRUTH_FILE, pd.DataFrame({
        "class_number": table["class_number"], "label": labels, "kind": kinds, "score": scores,
        "n_particles": counts}))
    if write_particle_images:
        scale = particle_signal_scale(reference, pixel_size, radius_px)
        mrc = job_files.open_stack(outdir / job_files.PARTICLES_FILE, n_particles, box, pixel_size)
        try:
            render_particles(mrc.data, _rng(seed, _PARTICLE_IMAGES), particles, sources, pixel_size,
                             scale, radius_px)
            mrc.update_header_stats()
        finally:
            mrc.close()
    return JobSummary(path=outdir, n_classes=n_classes, n_good=int(labels.sum()), box=box, pixel_size=pixel_size,
                      particle_diameter=particle_diameter, n_particles=n_particles, metadata=metadata, seed=seed,
                      seconds=time.perf_counter() - started)


def _assign_kinds(rng, n_classes: int, junk_fraction: float, junk_kinds: tuple) -> tuple:
    """(labels, kinds): which classes are junk and of what kind; every kind appears once there are enough."""
    n_junk = int(round(n_classes * junk_fraction))
    labels = np.ones(n_classes, dtype=int)
    labels[rng.permutation(n_classes)[:n_junk]] = 0
    kinds = np.array(["good"] * n_classes, dtype=object)
    kinds[labels == 0] = rng.permutation(np.resize(rng.permutation(junk_kinds), n_junk))
    return labels, kinds


def _class_templates(seed, job_rng, labels, kinds, molecules, reference, box, pixel_size, radius_px) -> tuple:
    """(templates, sources, (view_rot, view_tilt)): noise-free images before Class2D imaging.

    Good classes project one of the molecules at a random view (psi 0); sources[i] is that molecule,
    or the junk template itself, for drawing particle images later.
    """
    n_classes = len(labels)
    ctx = JunkContext(box=box, pixel_size=pixel_size, radius=radius_px,
                      molecule_radius=max(m.radius for m in molecules) / pixel_size,
                      level=float(np.percentile(reference, 99.5)),
                      good_projection=_projector(molecules, box, pixel_size))
    templates = np.zeros((n_classes, box, box), dtype=np.float32)
    sources: list = [None] * n_classes
    view_rot, view_tilt = np.zeros(n_classes), np.zeros(n_classes)
    molecule_of = job_rng.integers(0, len(molecules), n_classes)
    for i in range(n_classes):
        class_rng = _rng(seed, _CLASS, i)
        if labels[i] == 1:
            rot, tilt = random_views(class_rng, 1)
            view_rot[i], view_tilt[i] = np.round(rot[0], 4), np.round(tilt[0], 4)
            sources[i] = molecules[molecule_of[i]]
        else:
            templates[i] = junk_template(kinds[i], class_rng, ctx)
            sources[i] = templates[i]
    for m, molecule in enumerate(molecules):
        rows = np.flatnonzero((labels == 1) & (molecule_of == m))
        if len(rows):
            templates[rows] = project(molecule.atoms, euler_matrices(view_rot[rows], view_tilt[rows], 0.0),
                                      box, pixel_size, weight=molecule.atom_weight)
    return templates, sources, (view_rot, view_tilt)


def _class_averages(seed, job_rng, templates, reference, counts, resolution, box, pixel_size, radius_px):
    """Class2D imaging of all templates at once: CTF correction, resolution fall-off, solvent plateau,
    noise ~ 1/sqrt(particles), zeroed solvent outside the soft mask; all-zero for empty classes."""
    n_classes = len(templates)
    mask = soft_circular_mask(box, radius_px)
    inside = mask > 0.5
    defocus_low = job_rng.uniform(6000.0, 12000.0)
    correction = ctf_correction_transfer(box, pixel_size, (defocus_low, defocus_low + job_rng.uniform(1e4, 2.5e4)),
                                         wiener_constant=job_rng.uniform(*WIENER_RANGE))
    transfer = correction[None] * resolution_envelopes(box, pixel_size, resolution)
    # one density scale for the whole job: a good projection at 4 px resolution has unit std in the mask
    scale_transfer = correction[None] * resolution_envelopes(box, pixel_size, [4.0 * pixel_size])
    signal = apply_transfer(templates, transfer)
    signal /= float(np.median(masked_std(apply_transfer(reference, scale_transfer), mask)))
    # particles are normalised to a zero-mean background that still holds their CTF fringes: once
    # CTF-corrected, the average sits on a negative plateau (the dark disc inside the mask)
    signal -= (job_rng.uniform(*SOLVENT_OFFSET, n_classes) * signal[:, inside].mean(axis=1))[:, None, None]
    noise = coloured_noise(_rng(seed, _NOISE), transfer, box, mask)
    noise *= (job_rng.uniform(*NOISE_PER_PARTICLE) / np.sqrt(np.maximum(counts, 1)))[:, None, None]
    gain = np.exp(job_rng.normal(0.0, 0.15, n_classes)).astype(np.float32)
    images = (signal + noise) * mask[None] * gain[:, None, None]
    images[np.asarray(counts) == 0] = 0.0
    return images.astype(np.float32)


def _check_arguments(n_classes, box, pixel_size, particle_diameter, n_particles, junk_fraction, junk_kinds,
                     metadata, write_particle_images) -> None:
    if n_classes < 1:
        raise InputError(f"n_classes must be at least 1, got {n_classes}", fix="ask for one class or more")
    if box < 16 or box % 2:
        raise InputError(f"box must be an even number of pixels >= 16, got {box}", fix="use e.g. 64")
    if not pixel_size > 0:
        raise InputError(f"pixel size must be positive, got {pixel_size}", fix="use e.g. 3.5 (A/px)")
    if particle_diameter is not None and not 0 < particle_diameter <= box * pixel_size:
        raise InputError(f"particle diameter {particle_diameter} A does not fit the {box * pixel_size:g} A box",
                         fix="give a diameter between 0 and box * pixel size, or leave it unset")
    if n_particles < n_classes:
        raise InputError(f"{n_particles} particles cannot populate {n_classes} classes",
                         fix="ask for at least as many particles as classes")
    if not 0.0 <= junk_fraction <= 1.0:
        raise InputError(f"junk fraction must be in [0, 1], got {junk_fraction}", fix="use e.g. 0.4")
    unknown = [k for k in junk_kinds if k not in JUNK_KINDS]
    if unknown or not junk_kinds:
        raise InputError(f"unknown or no junk kinds {unknown}", fix=f"choose from {', '.join(JUNK_KINDS)}")
    if metadata not in METADATA_MODES:
        raise InputError(f"unknown metadata mode {metadata!r}", fix=f"choose one of {', '.join(METADATA_MODES)}")
    size = n_particles * box * box * 4
    if write_particle_images and size > MAX_PARTICLE_STACK_BYTES:
        raise InputError(f"particle images would take {size / 2 ** 30:.1f} GiB",
                         fix="write particle images only for small jobs (fewer particles or a smaller box)")


def _molecules(rng: np.random.Generator, particle_diameter: float) -> list:
    """One to three molecules; the first spans 68-88% of the mask diameter, the others 75-100% of that."""
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    first = particle_diameter * rng.uniform(0.68, 0.88)
    sizes = [first] + [first * rng.uniform(0.75, 1.0) for _ in range(count - 1)]
    return [random_molecule(rng, size) for size in sizes]


def _reference_projections(rng, molecule: Molecule, box: int, pixel_size: float) -> np.ndarray:
    rot, tilt = random_views(rng, 8)
    return project(molecule.atoms, euler_matrices(rot, tilt, 0.0), box, pixel_size, weight=molecule.atom_weight)


def _projector(molecules: list, box: int, pixel_size: float):
    """good_projection(rng, fraction) for the junk functions."""
    def good_projection(rng: np.random.Generator, fraction: float = 1.0) -> np.ndarray:
        molecule = molecules[int(rng.integers(len(molecules)))]
        atoms = molecule.atoms
        if fraction < 1.0:
            seed_atom = atoms[int(rng.integers(len(atoms)))]
            nearest = np.argsort(np.linalg.norm(atoms - seed_atom, axis=1), kind="stable")
            atoms = atoms[nearest[:max(4, int(fraction * len(atoms)))]]
            atoms = atoms - atoms.mean(axis=0)
        rot, tilt = random_views(rng, 1)
        return project(atoms, euler_matrices(rot, tilt, rng.uniform(-180, 180)), box, pixel_size,
                       weight=molecule.atom_weight)[0]
    return good_projection


def _truth_scores(rng, labels, kinds, counts, resolution) -> np.ndarray:
    """Soft quality targets in [0, 1]: good classes 0.55-1 by signal and resolution, junk 0-0.34 by kind."""
    res_term = np.clip((25.0 - np.asarray(resolution, dtype=float)) / 15.0, 0.0, 1.0)  # inf -> 0
    snr_term = counts / (counts + 30.0)
    good = 0.55 + 0.45 * (0.5 * res_term + 0.5 * snr_term)
    junk = np.array([JUNK_BASE_SCORE.get(k, 0.0) for k in kinds]) + rng.uniform(0.0, 0.08, len(labels))
    junk = np.where(np.asarray(kinds) == "empty", np.where(counts == 0, 0.0, junk), junk)
    return np.round(np.clip(np.where(np.asarray(labels) == 1, good, junk), 0.0, 1.0), 4)
