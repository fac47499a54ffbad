"""Group the classes into superclasses of similar views and rebalance the particles between them.

INPUT is a RELION Class2D job file (run_itNNN_model.star, _data.star or _optimiser.star; the other
files of the same iteration are found by name). The class averages are compared whatever their
in-plane rotation and shift, grouped into --superclasses groups, and particles are dropped at
random from the crowded superclasses until the smallest holds at least --factor times as many as the
largest (0: keep all, 1: all as small as the smallest), or until none holds more than --max-size.

Outputs in --o, written all at once (a failed run leaves nothing behind): particles_retained.star,
particles_excluded.star (optics kept; one table for RELION 3.0 input), superclasses.csv
(class_number, superclass, particles_before, particles_after), affinity.png (the affinity matrix,
classes ordered by superclass) and counts.png (particles per superclass before and after).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..rebalance import check_factor, check_max_size, rebalance_classes

log = logging.getLogger(__name__)
BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#1a9850"


def add_args(parser):
    parser.add_argument("input", help="run_itNNN_model.star / _data.star / _optimiser.star of a Class2D job")
    parser.add_argument("--data-star", help="particles STAR (default: the run_itNNN_data.star beside INPUT)")
    parser.add_argument("--o", "--output", dest="output", required=True, help="output directory")
    parser.add_argument("--superclasses", type=int, required=True,
                        help="number of superclasses (about the number of distinct views)")
    parser.add_argument("--factor", type=float, default=0.0,
                        help="rebalance factor in [0, 1]: the smallest superclass keeps at least this "
                             "fraction of the largest (0 keeps every particle)")
    parser.add_argument("--max-size", type=int,
                        help="cap every superclass at this many particles (overrides --factor)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (clustering and particle choice)")
    parser.add_argument("--mirror", action="store_true",
                        help="treat mirrored class averages as the same view")


def main(args) -> int:
    check_factor(args.factor)
    check_max_size(args.max_size)
    from ..io import read_classes

    classset = read_classes(args.input, data_star=args.data_star)
    result = rebalance_classes(classset, args.superclasses, args.factor, max_size=args.max_size,
                               seed=args.seed, mirror=args.mirror)
    write_outputs(args.output, classset, result)
    print(format_summary(result))
    print(f"outputs in {args.output}")
    return 0


def write_outputs(outdir, classset, result) -> list:
    """Write the particle STAR files, superclasses.csv and the two plots into ``outdir`` atomically."""
    from ..io.atomic import atomic_output_dir
    from ..io.writers import write_particle_rows

    if not classset.has_particles:
        raise InputError("no particles to write", classset.source or None, "give the job's data.star")
    keep = np.asarray(result.keep, dtype=bool)
    with atomic_output_dir(outdir) as tmp:  # both files in one streamed pass over the data.star
        write_particle_rows(tmp / "particles_retained.star", classset, keep,
                            rejected_path=tmp / "particles_excluded.star")
        result.table.to_csv(tmp / "superclasses.csv", index=False)
        plot_affinity(tmp / "affinity.png", result.affinity, result.superclass, classset.class_numbers)
        plot_counts(tmp / "counts.png", result.superclass_counts(), result.cap)
    return [Path(outdir) / n for n in ("particles_retained.star", "particles_excluded.star",
                                       "superclasses.csv", "affinity.png", "counts.png")]


def format_summary(result) -> str:
    counts = result.superclass_counts()
    lines = [f"{'superclass':>10} {'classes':>8} {'before':>10} {'after':>10}"]
    for row in counts.itertuples(index=False):
        lines.append(f"{row.superclass:>10} {row.classes:>8} {row.particles_before:>10} "
                     f"{row.particles_after:>10}")
    before, after = int(counts.particles_before.sum()), int(counts.particles_after.sum())
    cap = "none" if result.cap is None else str(result.cap)
    lines.append(f"kept {after} of {before} particles (superclass cap: {cap})")
    return "\n".join(lines)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_affinity(path, affinity, superclass, class_numbers) -> Path:
    """The affinity matrix with classes ordered by superclass; lines separate the superclasses."""
    plt = _pyplot()
    superclass = np.asarray(superclass)
    order = np.argsort(superclass, kind="stable")
    n = len(order)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    image = ax.imshow(affinity[np.ix_(order, order)], vmin=0, vmax=1, cmap="viridis",
                      interpolation="nearest")
    bounds = np.flatnonzero(np.diff(superclass[order])) + 0.5
    for b in bounds:
        ax.axhline(b, color="w", lw=0.8)
        ax.axvline(b, color="w", lw=0.8)
    if n <= 60:
        labels = [str(c) for c in np.asarray(class_numbers)[order]]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n), labels, fontsize=6)
        ax.set_xlabel("class (ordered by superclass)")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{n} classes ordered by superclass")
    fig.colorbar(image, ax=ax, label="affinity (1 = same view)")
    ax.set_title(f"Class affinity, {len(np.unique(superclass))} superclasses")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_counts(path, counts, cap=None) -> Path:
    """Bar chart of particles per superclass before and after rebalancing."""
    plt = _pyplot()
    x = np.arange(len(counts))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(x) + 2), 3.5), dpi=110)
    ax.bar(x - 0.2, counts["particles_before"], width=0.4, color=BEFORE_COLOUR, label="before")
    ax.bar(x + 0.2, counts["particles_after"], width=0.4, color=AFTER_COLOUR, label="after")
    if cap is not None:
        ax.axhline(cap, color="k", ls="--", lw=1, label=f"cap {cap}")
    ax.set_xticks(x, [str(s) for s in counts["superclass"]])
    ax.set_xlabel("superclass")
    ax.set_ylabel("particles")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
