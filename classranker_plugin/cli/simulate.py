"""Write labelled, Class2D-like simulated jobs (a truth.csv says which classes are good).

One job goes into --o itself; with --jobs N, jobs go into --o/job001 ... --o/jobNNN with seeds
seed, seed+1, ... and a box size, pixel size and number of classes varied around the ones given.
Each job is a RELION 3.1 Class2D folder (run_it025_classes.mrcs, _model.star, _data.star,
_optimiser.star) that ``classranker score`` and RELION's tools can read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..simulation import JUNK_KINDS
from ..simulation.metadata import METADATA_MODES
from ..simulation.procedural import simulate_job_summary
from ..simulation.relion_engine import add_relion_args, run_relion

ENGINES = ["procedural", "relion"]
BOX_FACTORS = (0.75, 1.0, 1.25, 1.5)


def add_args(parser):
    parser.add_argument("--o", "--output", dest="output", required=True, help="output directory")
    parser.add_argument("--engine", default="procedural", choices=ENGINES,
                        help="how classes are made: procedural (fast, no RELION needed) or relion (genuine "
                             "relion_refine Class2D of projected maps plus junk particles; needs RELION)")
    parser.add_argument("--classes", type=int, default=50, help="number of classes (K)")
    parser.add_argument("--box", type=int, default=64, help="box size, pixels (even)")
    parser.add_argument("--apix", type=float, default=3.5, help="pixel size, A")
    parser.add_argument("--diameter", type=float, default=None,
                        help="particle (mask) diameter, A (default: 55-70%% of the box)")
    parser.add_argument("--particles", type=int, default=5000, help="number of particles in the job")
    parser.add_argument("--junk-fraction", type=float, default=0.4, help="fraction of junk classes")
    parser.add_argument("--junk-kinds", default=",".join(JUNK_KINDS),
                        help="comma-separated junk kinds to draw from")
    parser.add_argument("--metadata", default="realistic", choices=list(METADATA_MODES),
                        help="realistic: junk classes sparse and poorly resolved, as RELION reports them; "
                             "uninformative: the same statistics for junk and good classes")
    parser.add_argument("--particle-images", action="store_true",
                        help="also write particles.mrcs with a noisy image per particle (small jobs only)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="number of jobs; with more than one, write --o/job001... with varied box, "
                             "pixel size and K")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    add_relion_args(parser)


def job_settings(args) -> list:
    """(folder, keyword arguments of simulate_job) for every job asked for."""
    kinds = tuple(k.strip() for k in args.junk_kinds.split(",") if k.strip())
    base = dict(n_particles=args.particles, junk_fraction=args.junk_fraction, junk_kinds=kinds,
                metadata=args.metadata, write_particle_images=args.particle_images)
    output = Path(args.output)
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}", fix="use --jobs 1 or more")
    if args.jobs == 1:
        return [(output, dict(base, n_classes=args.classes, box=args.box, pixel_size=args.apix,
                              particle_diameter=args.diameter, seed=args.seed))]
    settings = []
    for i in range(args.jobs):
        rng = np.random.default_rng([args.seed, i, 7])
        box = int(2 * round(args.box * float(rng.choice(BOX_FACTORS)) / 2))
        apix = round(args.apix * args.box / box * rng.uniform(0.85, 1.2), 3)
        n_classes = max(2, int(round(args.classes * rng.uniform(0.5, 1.5))))
        n_classes = min(n_classes, args.particles)
        diameter = None if args.diameter is None else min(args.diameter, 0.9 * box * apix)
        settings.append((output / f"job{i + 1:03d}",
                         dict(base, n_classes=n_classes, box=box, pixel_size=apix, particle_diameter=diameter,
                              seed=args.seed + i)))
    return settings


def main(args) -> int:
    if args.engine == "relion":
        return run_relion(args)
    if args.engine != "procedural":
        raise InputError(f"engine {args.engine!r} is not available in this build", fix="use --engine procedural")
    for folder, kwargs in job_settings(args):
        summary = simulate_job_summary(folder, **kwargs)
        print(summary.line(), flush=True)
    return 0
