"""Build (or resume) a corpus of genuine RELION Class2D jobs, record throughput, export the dataset.

    python benchmarks/relion_corpus.py --root scratch/relion_corpus --jobs 40 --budget-minutes 60
    python benchmarks/relion_corpus.py --root scratch/relion_corpus --export data/relion_corpus

Raw job folders stay under --root (scratch/ is git-ignored); the throughput is appended to
benchmarks/relion_corpus.md; --export writes the compact dataset (train / held-out test).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classranker_plugin.simulation.corpus import (HOLDOUT_LAYOUT, plan_corpus, run_corpus,  # noqa: E402
                                                  shared_maps, throughput)
from classranker_plugin.training.dataset import build_dataset  # noqa: E402

DEFAULT_MAPS = REPO.parent / "shared" / "data" / "relion30_tutorial_betagal" / "maps"
REPORT = REPO / "benchmarks" / "relion_corpus.md"


def write_report(jobs: pd.DataFrame, stats: dict, args, wall_s: float) -> None:
    done = jobs[jobs["status"] == "done"]
    test = done[done["split"] == "test"]
    now = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    lines = [f"\n## Run of {now} ({os.cpu_count()} cores, shared with other test runs)\n",
             f"- command: `{' '.join(sys.argv)}`",
             f"- {args.workers} worker process(es), relion_refine --j {args.threads}; wall time {wall_s / 60:.1f} min "
             f"(this invocation; resumed jobs count once)",
             f"- jobs done: {stats['jobs']} of {len(jobs)} planned ({(jobs['status'] == 'failed').sum()} failed); "
             f"classes: {stats['classes']} ({stats['good_classes']} labelled good)",
             f"- **throughput: {stats['classes_per_core_hour']} classes per core-hour** "
             f"({stats['classes_per_wall_hour']} per wall-clock hour on this machine, from the "
             f"{stats['jobs_this_run']} jobs this run made)",
             f"- held-out family: generated-{HOLDOUT_LAYOUT} (test split: {len(test)} jobs, "
             f"{int(test['n_classes'].sum())} classes)"]
    if len(done):
        lines.append(f"- per job: median {done['seconds'].median():.0f} s (relion_refine "
                     f"{done['refine_seconds'].median():.0f} s); particles {done['n_particles'].min()}-"
                     f"{done['n_particles'].max()}, K {done['K'].min()}-{done['K'].max()}, iterations "
                     f"{done['iterations'].min()}-{done['iterations'].max()}, boxes {sorted(set(done['box']))}")
    if not REPORT.exists():
        REPORT.write_text("# RELION corpus throughput\n\nGenuine relion_refine Class2D jobs (RELION 3.1.3 CPU) made by "
                          "`classranker_plugin.simulation.relion_engine`, labelled from class composition.\n")
    with open(REPORT, "a") as report:
        report.write("\n".join(lines) + "\n")


README = """# RELION corpus: genuine Class2D classes labelled by their composition

{jobs} relion_refine Class2D jobs (RELION 3.1.3 CPU; K {k_min} to {k_max}; boxes {boxes} px at {px_min:.2f} to
{px_max:.2f} A/px), {classes} classes ({good} labelled good),
made by `benchmarks/relion_corpus.py` with `classranker_plugin.simulation.relion_engine`: relion_project
projections (CTF, white noise) of real beta-galactosidase maps and generated protein-like densities,
plus junk particles made by our code; each class's score is the fraction of its particles that are good
and centred, label = score >= 0.5, kind = dominant origin (map or junk kind; empty_class = no particle).

- `train/`, `test/`: dataset folders of `classranker_plugin.training.dataset` (images.npy 64 px,
  features.npy, labels.npy, split.npy, meta.csv, dataset.json); `test/` ({test} classes) holds only jobs
  whose maps are the held-out family (generated ring-shaped densities), which no training job contains.
- `classes.csv`: every class's truth (score, label, kind, purity, n_particles) with its job's parameters.
- `jobs.csv`: job parameters, timings and class counts. Raw job folders are not kept here.
"""


def export(root: Path, out: Path) -> None:
    """The compact dataset: one dataset folder per split (train/, test/), classes.csv, jobs.csv, README.md."""
    jobs = pd.read_csv(root / "jobs.csv")
    done = jobs[jobs["status"] == "done"]
    out.mkdir(parents=True, exist_ok=True)
    done.to_csv(out / "jobs.csv", index=False)
    truths = [pd.read_csv(root / job / "truth.csv").assign(job_id=job) for job in done["job_id"]]
    classes = pd.concat(truths, ignore_index=True).merge(done, on="job_id", how="left")
    classes.to_csv(out / "classes.csv", index=False)
    (out / "README.md").write_text(README.format(jobs=len(done), classes=len(classes), good=int(classes["label"].sum()),
                                                 test=int((classes["split"] == "test").sum()),
                                                 k_min=int(done["K"].min()), k_max=int(done["K"].max()),
                                                 boxes=" / ".join(str(b) for b in sorted(done["box"].unique())),
                                                 px_min=float(done["actual_pixel_size"].min()),
                                                 px_max=float(done["actual_pixel_size"].max())))
    for split in ("train", "test"):
        dirs = [str(root / job) for job in done.loc[done["split"] == split, "job_id"]]
        if not dirs:
            continue
        target = out / split
        if target.exists():
            shutil.rmtree(target)
        build_dataset(dirs, target, feature_set="classranker", seed=0, command_line=" ".join(sys.argv))
        print(f"{split}: {len(dirs)} jobs -> {target}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO / "scratch" / "relion_corpus"), help="where the job folders go")
    parser.add_argument("--jobs", type=int, default=30, help="jobs to plan")
    parser.add_argument("--workers", type=int, default=2, help="jobs run side by side")
    parser.add_argument("--threads", type=int, default=1, help="relion_refine --j per job")
    parser.add_argument("--budget-minutes", type=float, default=None, help="start no new job after this long")
    parser.add_argument("--maps", default=str(DEFAULT_MAPS), help="folder of the shared beta-galactosidase maps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=["converged", "quick", "fine", "large"], default="converged",
                        help="parameter ranges of newly planned jobs (see corpus.plan_corpus)")
    parser.add_argument("--wide-every", type=int, default=0,
                        help="make every N-th newly planned training job a wide one (K 30-60; see corpus.plan_corpus)")
    parser.add_argument("--export", metavar="DIR", help="only export the dataset of a finished corpus to DIR")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.export:
        export(root, Path(args.export))
        return 0
    plan_file = root / "plan.json"
    old = json.loads(plan_file.read_text()) if plan_file.is_file() else []  # resume: keep the jobs planned
    specs = old[:args.jobs] + plan_corpus(max(0, args.jobs - len(old)), seed=args.seed, first_index=len(old),
                                          real_maps=shared_maps(args.maps), style=args.style,
                                          wide_every=args.wide_every)
    jobs_file = root / "jobs.csv"
    before = pd.read_csv(jobs_file) if jobs_file.is_file() else pd.DataFrame(columns=["job_id", "status"])
    already_done = set(before.loc[before["status"] == "done", "job_id"])
    start = time.time()
    jobs = run_corpus(root, specs, workers=args.workers, threads=args.threads,
                      budget_s=None if args.budget_minutes is None else args.budget_minutes * 60)
    wall = time.time() - start
    stats = throughput(jobs, wall, args.threads, already_done)
    write_report(jobs, stats, args, wall)
    print(json.dumps(stats), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
