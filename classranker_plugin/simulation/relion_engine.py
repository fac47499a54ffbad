"""RELION engine: genuine Class2D jobs from known maps, labelled by what each class holds.

``simulate_relion_job(outdir, maps, ...)``
1. brings every map to the job's box and pixel size (Fourier crop, :mod:`.relion_maps`) or generates
   a protein-like density, and writes it to ``maps/``;
2. writes an orientation + CTF STAR per map (RELION 3.1: optics + particles) and runs
   ``relion_project --ctf --add_noise --white_noise sigma`` for the good particles, sigma from the SNR
   of the imaged signal (:func:`noise_for_snr`); optionally with preferred orientations;
3. adds junk particles made by our own code (:mod:`.relion_junk`) in ``Particles/junk.mrcs``;
4. writes ``particles.star`` (shuffled, no orientations or offsets: Class2D starts from scratch) and
   ``particle_truth.csv`` (image name -> origin, family, good & centred);
5. runs ``relion_refine`` Class2D as a user would, then labels every class from its composition
   (``truth.csv``: class_number, label, kind, score, n_particles, ...) and writes RELION's
   training-format STAR (``classranker_training.star``) beside the run_itNNN_* files;
6. writes ``simulation.json`` (parameters, timings, counts) last: a job folder without it is unfinished.

The job folder is its own RELION project directory: image paths are relative to it.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import mrcfile
import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from .density import LAYOUTS, euler_matrices, random_views
from .junk import JUNK_KINDS
from .relion_junk import DEFAULT_RELION_JUNK, apply_ctf, junk_particles, relion_ctf
from .relion_labels import TRAINING_STAR, class_composition, write_training_star, write_truth
from .relion_maps import JobMap, generated_map, load_map, project_map, write_map
from .relion_programs import find_program, progress, run_program

DONE_FILE = "simulation.json"
PARTICLES_STAR = "particles.star"
PARTICLE_TRUTH = "particle_truth.csv"
RUN_ROOT = "./run"
VOLTAGE, CS, AMPLITUDE_CONTRAST = 300.0, 2.7, 0.1
DEFOCUS_RANGE = (8000.0, 30000.0)
#: good particles are picked within this many pixels of the centre (Class2D re-centres them)
PICK_JITTER_PX = 1.5


@dataclass
class RelionJobSummary:
    outdir: str
    n_classes: int
    n_good_classes: int
    n_particles: int
    n_junk: int
    pixel_size: float
    particle_diameter: float
    maps: list
    seconds: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)


def _rng(seed: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(purpose)])


def resolve_maps(specs: Sequence, box: int, pixel_size: float, rng: np.random.Generator) -> list:
    """JobMaps from MRC paths, JobMap objects or "generated[:layout]" strings."""
    maps = []
    for index, spec in enumerate(specs):
        if isinstance(spec, JobMap):
            if spec.volume.shape != (box,) * 3:
                raise InputError(f"generated map {spec.name} is {spec.volume.shape[0]} px, the job box is {box}")
            maps.append(spec)
        elif str(spec).startswith("generated"):
            layout = str(spec).partition(":")[2] or None
            if layout is not None and layout not in LAYOUTS:
                raise InputError(f"unknown layout {layout!r}", fix=f"choose from {', '.join(LAYOUTS)}")
            maps.append(generated_map(rng, box, pixel_size, layout, index=index))
        else:
            path = Path(spec)
            if not path.is_file():
                raise InputError("map not found", path=path, fix="give an MRC map, or 'generated[:layout]'")
            maps.append(load_map(path, box, pixel_size))
    if not maps:
        raise InputError("no map given", fix="give at least one MRC map or 'generated'")
    return maps


def optics_table(box: int, pixel_size: float) -> pd.DataFrame:
    return pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnVoltage": [VOLTAGE],
                         "rlnSphericalAberration": [CS], "rlnAmplitudeContrast": [AMPLITUDE_CONTRAST],
                         "rlnImagePixelSize": [pixel_size], "rlnImageSize": [box], "rlnImageDimensionality": [2]})


def ctf_columns(rng: np.random.Generator, n: int) -> pd.DataFrame:
    defocus_u = rng.uniform(*DEFOCUS_RANGE, n)
    return pd.DataFrame({"rlnDefocusU": defocus_u, "rlnDefocusV": defocus_u - rng.uniform(0, 800, n),
                         "rlnDefocusAngle": rng.uniform(-180, 180, n)})


def draw_views(rng: np.random.Generator, n: int, preferred_views: int = 0, preferred_fraction: float = 0.7,
               spread_deg: float = 8.0) -> tuple:
    """(rot, tilt) in degrees: uniform, or with ``preferred_fraction`` of the particles lying near one of
    ``preferred_views`` random directions (Gaussian spread ``spread_deg``), as on a grid with preferred
    orientation: fewer distinct views, so small Class2D jobs give clean class averages."""
    rot, tilt = random_views(rng, n)
    if preferred_views > 0:
        centre_rot, centre_tilt = random_views(rng, preferred_views)
        chosen = rng.random(n) < preferred_fraction
        which = rng.integers(preferred_views, size=int(chosen.sum()))
        rot[chosen] = centre_rot[which] + rng.normal(0, spread_deg, len(which))
        tilt[chosen] = np.clip(centre_tilt[which] + rng.normal(0, spread_deg, len(which)), 0, 180)
    return rot, tilt


def orientation_table(rng: np.random.Generator, n: int, pixel_size: float, preferred_views: int = 0) -> pd.DataFrame:
    rot, tilt = draw_views(rng, n, preferred_views)
    shifts = np.clip(rng.normal(0, PICK_JITTER_PX, (n, 2)), -3, 3) * pixel_size
    table = pd.DataFrame({"rlnAngleRot": rot, "rlnAngleTilt": tilt, "rlnAnglePsi": rng.uniform(-180, 180, n),
                          "rlnOriginXAngst": shifts[:, 0], "rlnOriginYAngst": shifts[:, 1]})
    table = pd.concat([table, ctf_columns(rng, n)], axis=1)
    table["rlnOpticsGroup"] = 1
    return table


def user_particle_diameter(maps: list, box: int, pixel_size: float) -> float:
    """The mask diameter a user would type: the largest molecule plus ~15%, rounded up to 10 A."""
    wanted = np.ceil(max(m.diameter for m in maps) * 1.15 / 10.0) * 10.0
    return float(min(wanted, np.floor((box - 2) * pixel_size)))


def split_counts(rng: np.random.Generator, total: int, n: int) -> np.ndarray:
    """``total`` split into ``n`` positive parts with random (but not extreme) proportions."""
    if n == 1:
        return np.array([total])
    weights = rng.dirichlet(np.full(n, 4.0))
    counts = np.floor(weights * total).astype(int)
    counts[: total - counts.sum()] += 1
    return counts


def noise_for_snr(rng: np.random.Generator, maps: list, box: int, pixel_size: float, snr: float, ctf: bool,
                  n_views: int = 24) -> float:
    """White-noise sigma giving ``snr`` = variance of the imaged signal (projection, CTF applied when
    ``ctf``) inside the particle circle / noise variance. The CTF removes most low-frequency power, so
    the SNR is defined on what the detector sees, with or without CTF."""
    rot, tilt = random_views(rng, n_views)
    psi = rng.uniform(-180, 180, n_views)
    which = rng.integers(len(maps), size=n_views)
    images = np.stack([project_map(maps[w].volume, m) for w, m in zip(which, euler_matrices(rot, tilt, psi))])
    if ctf:
        table = ctf_columns(rng, n_views)
        images = apply_ctf(images, relion_ctf(box, pixel_size, table["rlnDefocusU"], table["rlnDefocusV"],
                                              table["rlnDefocusAngle"]))
    radius = 0.5 * np.mean([m.diameter for m in maps]) / pixel_size
    y, x = np.mgrid[:box, :box] - box // 2
    inside = np.hypot(x, y) <= radius
    return float(np.sqrt(images[:, inside].var() / snr))


def write_stack(path: Path, images: np.ndarray, pixel_size: float) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(images, np.float32))
        mrc.voxel_size = pixel_size


def _check(n_particles, junk_fraction, junk_kinds, box, snr, K, iterations):
    if box < 24 or box % 2:
        raise InputError(f"box {box} px: give an even box of at least 24 px")
    if not 0.0 <= junk_fraction < 1.0:
        raise InputError(f"junk fraction {junk_fraction} must be in [0, 1)")
    unknown = sorted(set(junk_kinds) - set(JUNK_KINDS))
    if unknown:
        raise InputError(f"unknown junk kind(s) {', '.join(unknown)}", fix=f"choose from {', '.join(JUNK_KINDS)}")
    if snr <= 0 or K < 1 or iterations < 1 or n_particles < 2 * K:
        raise InputError(f"need snr > 0, K >= 1, iterations >= 1 and at least 2 particles per class "
                         f"(got snr={snr}, K={K}, iterations={iterations}, particles={n_particles})")


def simulate_relion_job(outdir, maps: Sequence = ("generated", "generated"), n_particles: int = 600,
                        junk_fraction: float = 0.3, junk_kinds: Optional[Sequence[str]] = None, box: int = 64,
                        pixel_size: float = 5.5, snr: float = 0.05, K: int = 10, iterations: int = 10,
                        ctf: bool = True, seed: int = 0, threads: int = 1, overwrite: bool = False,
                        preferred_views: int = 0, extra_parameters: Optional[dict] = None) -> RelionJobSummary:
    """Write a genuine RELION Class2D job with a truth.csv labelling every class (see module docstring)."""
    junk_kinds = list(junk_kinds or DEFAULT_RELION_JUNK)
    _check(n_particles, junk_fraction, junk_kinds, box, snr, K, iterations)
    find_program("relion_project")
    find_program("relion_refine")
    outdir = Path(outdir).resolve()
    if outdir.exists() and any(outdir.iterdir()):
        if not overwrite:
            raise InputError("output folder is not empty", path=outdir, fix="give a new folder or overwrite=True")
        shutil.rmtree(outdir)
    for sub in ("maps", "Particles", "logs"):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    parameters = dict(maps=[str(m) if not isinstance(m, JobMap) else m.name for m in maps],
                      n_particles=n_particles, junk_fraction=junk_fraction, junk_kinds=junk_kinds, box=box,
                      pixel_size=pixel_size, snr=snr, K=K, iterations=iterations, ctf=ctf, seed=seed,
                      threads=threads, preferred_views=preferred_views, **(extra_parameters or {}))
    seconds = {}
    start = time.time()

    job_maps = resolve_maps(maps, box, pixel_size, _rng(seed, 1))
    actual_pixel = job_maps[0].pixel_size
    for m in job_maps:  # all maps share the job's grid
        m.pixel_size = actual_pixel
    diameter = user_particle_diameter(job_maps, box, actual_pixel)
    noise_sigma = noise_for_snr(_rng(seed, 4), job_maps, box, actual_pixel, snr, ctf)
    n_junk = int(round(n_particles * junk_fraction))
    n_good = n_particles - n_junk
    progress(f"{outdir.name}: {len(job_maps)} map(s), {n_good} good + {n_junk} junk particles, box {box}, "
             f"{actual_pixel:.2f} A/px, SNR {snr}, K={K}, {iterations} iterations, ctf={ctf}")

    rng = _rng(seed, 2)
    good_tables, truth_rows = [], []
    for index, (job_map, count) in enumerate(zip(job_maps, split_counts(rng, n_good, len(job_maps))), 1):
        map_path = write_map(outdir / "maps" / f"map{index:02d}.mrc", job_map)
        ang_path = outdir / "Particles" / f"good{index:02d}_orientations.star"
        starfile.write({"optics": optics_table(box, actual_pixel),
                        "particles": orientation_table(rng, int(count), actual_pixel, preferred_views)},
                       ang_path, overwrite=True)
        root = f"Particles/good{index:02d}"
        command = ["relion_project", "--i", map_path.relative_to(outdir), "--o", root,
                   "--ang", ang_path.relative_to(outdir), "--angpix", f"{actual_pixel:.6f}",
                   "--add_noise", "--white_noise", f"{noise_sigma:.6f}"]
        if ctf:
            command.append("--ctf")
        log_path = outdir / "logs" / f"project{index:02d}.log"
        seconds["project"] = seconds.get("project", 0.0) + run_program(command, log_path, cwd=outdir)
        projected = starfile.read(outdir / f"{root}.star", always_dict=True)["particles"]
        good_tables.append(projected)
        truth_rows.append(pd.DataFrame({"rlnImageName": projected["rlnImageName"], "origin": job_map.name,
                                        "family": job_map.family, "good": True}))

    junk_rng = _rng(seed, 3)
    weights = junk_rng.dirichlet(np.full(len(junk_kinds), 2.0))
    kinds = list(junk_rng.choice(junk_kinds, size=n_junk, p=weights)) if n_junk else []
    junk_ctf = ctf_columns(junk_rng, n_junk)
    t = time.time()
    junk = junk_particles(junk_rng, kinds, job_maps, box, actual_pixel, 0.5 * diameter / actual_pixel,
                          junk_ctf, noise_sigma, ctf)
    seconds["junk"] = time.time() - t
    if n_junk:
        write_stack(outdir / "Particles" / "junk.mrcs", junk, actual_pixel)
        names = [f"{i:06d}@Particles/junk.mrcs" for i in range(1, n_junk + 1)]
        junk_table = junk_ctf.assign(rlnOpticsGroup=1, rlnImageName=names)
        good_tables.append(junk_table)
        truth_rows.append(pd.DataFrame({"rlnImageName": names, "origin": kinds, "family": "junk", "good": False}))

    columns = ["rlnImageName", "rlnMicrographName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnOpticsGroup"]
    particles = pd.concat(good_tables, ignore_index=True)
    particles = particles.iloc[rng.permutation(len(particles))].reset_index(drop=True)
    particles["rlnMicrographName"] = [f"Micrographs/mic{i // 40:04d}.mrc" for i in range(len(particles))]
    starfile.write({"optics": optics_table(box, actual_pixel), "particles": particles[columns]},
                   outdir / PARTICLES_STAR, overwrite=True)
    particle_truth = pd.concat(truth_rows, ignore_index=True)
    particle_truth.to_csv(outdir / PARTICLE_TRUTH, index=False)

    progress(f"{outdir.name}: relion_refine Class2D (K={K}, {iterations} iterations, --j {threads})")
    command = ["relion_refine", "--i", PARTICLES_STAR, "--o", RUN_ROOT, "--K", K, "--iter", iterations,
               "--tau2_fudge", 2, "--particle_diameter", f"{diameter:g}", "--zero_mask", "--flatten_solvent",
               "--norm", "--scale", "--oversampling", 1, "--psi_step", 12, "--offset_range", 5,
               "--offset_step", 2, "--j", threads, "--dont_combine_weights_via_disc", "--pool", 30,
               "--random_seed", seed]
    if ctf:
        command.append("--ctf")
    seconds["refine"] = run_program(command, outdir / "logs" / "relion_refine.log", cwd=outdir, threads=threads)

    summary = label_job(outdir, iterations, K)
    seconds["total"] = time.time() - start
    result = RelionJobSummary(outdir=str(outdir), n_classes=K, n_good_classes=int(summary["label"].sum()),
                              n_particles=n_particles, n_junk=n_junk, pixel_size=actual_pixel,
                              particle_diameter=diameter,
                              maps=[{"name": m.name, "family": m.family, "diameter": round(m.diameter, 1),
                                     "symmetry": m.symmetry} for m in job_maps],
                              seconds={k: round(v, 2) for k, v in seconds.items()}, parameters=parameters)
    tmp = outdir / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=1, default=str))
    tmp.replace(outdir / DONE_FILE)
    progress(f"{outdir.name}: {K} classes, {result.n_good_classes} good, {seconds['total']:.0f} s")
    return result


def label_job(outdir: Path, iterations: int, K: int) -> pd.DataFrame:
    """truth.csv and the training STAR of a finished Class2D run in ``outdir``."""
    root = f"run_it{iterations:03d}"
    data_star = outdir / f"{root}_data.star"
    if not data_star.is_file():
        raise RuntimeError(f"relion_refine wrote no {data_star.name} in {outdir}")
    assignments = starfile.read(data_star, always_dict=True)["particles"]
    particle_truth = pd.read_csv(outdir / PARTICLE_TRUTH)
    truth = class_composition(assignments, particle_truth, K)
    write_truth(outdir / "truth.csv", truth)
    write_training_star(outdir / TRAINING_STAR, truth, f"{root}_classes.mrcs")
    return truth


def is_finished(outdir) -> bool:
    return (Path(outdir) / DONE_FILE).is_file() and (Path(outdir) / "truth.csv").is_file()


# ---------------------------------------------------------------- command line (classranker simulate --engine relion)

def add_relion_args(parser) -> None:
    """Options only the RELION engine uses (``classranker simulate --engine relion``); it also reads --o,
    --classes (K), --box, --apix, --particles, --junk-fraction (of particles), --junk-kinds, --jobs, --seed."""
    group = parser.add_argument_group("RELION engine (--engine relion: runs relion_project and relion_refine; "
                                      "keep it small, e.g. --particles 600 --classes 10 --box 64 --apix 5.5)")
    group.add_argument("--map", dest="maps", action="append", default=None,
                       help="MRC map of a good particle (repeat); 'generated' or 'generated:LAYOUT' for a "
                            "procedural density; default: two generated densities")
    group.add_argument("--iterations", type=int, default=10, help="Class2D iterations")
    group.add_argument("--snr", type=float, default=0.1,
                       help="signal-to-noise ratio of the particle images (variance of the CTF-modulated signal "
                            "inside the particle circle over the noise variance)")
    group.add_argument("--no-ctf", dest="ctf", action="store_false", help="no CTF (and Class2D without --ctf)")
    group.add_argument("--threads", type=int, default=1, help="relion_refine --j")


def run_relion(args) -> int:
    """``classranker simulate --engine relion``: one job in --o, or --jobs N in --o/job001... (seeds seed+i)."""
    kinds = [k.strip() for k in args.junk_kinds.split(",") if k.strip()]
    output = Path(args.output)
    folders = [output] if args.jobs == 1 else [output / f"job{i + 1:03d}" for i in range(args.jobs)]
    for i, folder in enumerate(folders):
        summary = simulate_relion_job(folder, maps=args.maps or ["generated", "generated"], n_particles=args.particles,
                                      junk_fraction=args.junk_fraction, junk_kinds=kinds, box=args.box,
                                      pixel_size=args.apix, snr=args.snr, K=args.classes, iterations=args.iterations,
                                      ctf=args.ctf, seed=args.seed + i, threads=args.threads)
        print(f"{summary.outdir}: {summary.n_classes} classes ({summary.n_good_classes} good) from "
              f"{summary.n_particles} particles ({summary.n_junk} junk); labels in truth.csv", flush=True)
    return 0
