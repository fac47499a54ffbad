"""Leave-one-dataset-out: does a model trained on the other datasets rank the held-out one better
than the trivial baselines?

Datasets (each absent one is skipped with the reason):

* three simulator families (procedural engine, fresh seeds each):
  ``sim-clear-junk`` (realistic metadata; junk: empty, ice, carbon edge, streaks; 64 px, 3.5 Å/px),
  ``sim-particle-like-junk`` (realistic metadata; junk: fragment, aggregate, blurry, off-centre;
  64 px, 3.5 Å/px), ``sim-no-metadata-signal`` ("uninformative" metadata: junk and good classes
  share their statistics; all junk kinds; 96 px, 2.2 Å/px);
* the real RELION 3.0 tutorial runs in ../shared/data/relion30_tutorial_betagal (K=10 and K=100),
  labelled by labels.csv ``human_selected``: classes chosen as templates / for the initial model,
  a reliable but incomplete positive set (good-but-unchosen classes count as 0);
* data/relion_corpus (genuine RELION Class2D jobs, exported by benchmarks/relion_corpus.py as
  dataset folders): all of its classes.

For each held-out dataset a model is trained on all the others (``trainer.train``, few epochs) and
evaluated on the held-out one with ``training.evaluation.evaluate``: ROC AUC, MCC at cutoff 0.5 and
at the MCC-maximising threshold, against the best baseline (class distribution, resolution, particle
count, empty-image heuristic; a baseline is a ranking, not a score, so it has no MCC at 0.5).

    python benchmarks/generalization.py                  # ~5-10 min on 2 busy CPU cores
    python benchmarks/generalization.py --jobs 20 --classes 50 --epochs 30 --threads 4

Options: --jobs N (simulated jobs per family) --classes N --epochs N --seed N --threads N
--shared DIR --corpus DIR --keep DIR (keep jobs, datasets, models and evaluations there).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (markdown_table, model_and_baseline, quiet_evaluate,  # noqa: E402
                         quiet_logs, quiet_train, simulate_family)
from classranker_plugin.features import FEATURE_SETS  # noqa: E402
from classranker_plugin.training.dataset import INFO_FILE, build_dataset, load_dataset  # noqa: E402
from classranker_plugin.training.dataset_source import DatasetSource  # noqa: E402
from classranker_plugin.training.sources import JobSource  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIM_FAMILIES = {
    "sim-clear-junk": dict(metadata="realistic", junk_kinds=("empty", "ice", "carbon_edge", "streaks"),
                           box=64, pixel_size=3.5),
    "sim-particle-like-junk": dict(metadata="realistic", junk_kinds=("fragment", "aggregate", "blurry", "off_centre"),
                                   box=64, pixel_size=3.5),
    "sim-no-metadata-signal": dict(metadata="uninformative", junk_kinds=None, box=96, pixel_size=2.2),
}
TIE = 0.005  # |model AUC - baseline AUC| below this is a tie
TUTORIAL_RUNS = {"tutorial-K10": "class2d_job006_K10_manualpick",
                 "tutorial-K100": "class2d_job014_K100_autopick_sorted"}
COLUMNS = {"dataset": "held-out dataset", "size": "classes (good)", "roc_auc": "model ROC AUC",
           "mcc_05": "model MCC @ 0.5", "mcc_best": "model best MCC", "baseline": "best baseline",
           "baseline_roc_auc": "baseline ROC AUC", "baseline_mcc_best": "baseline best MCC",
           "delta": "Δ AUC", "verdict": "model vs baseline", "trained_on": "trained on (classes)"}


class Held:
    """One dataset: how to train on it (label sources) and how to evaluate on it (evaluate inputs)."""

    def __init__(self, name: str, sources: list, inputs: list, labels=None, split=None):
        self.name, self.sources, self.inputs, self.labels, self.split = name, sources, inputs, labels, split


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8, help="simulated jobs per family")
    parser.add_argument("--classes", type=int, default=24, help="classes per simulated job")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--shared", default=os.environ.get("CLASSRANKER_SHARED", str(REPO.parent / "shared")))
    parser.add_argument("--corpus", default=str(REPO / "data" / "relion_corpus"))
    parser.add_argument("--keep", help="folder to keep everything in (default: a temporary one)")
    return parser.parse_args(argv)


def simulated(root: Path, args) -> list:
    out = []
    for index, (name, options) in enumerate(SIM_FAMILIES.items()):
        jobs = simulate_family(root / name, args.jobs, 200_000 * (index + 1), args.classes, **options)
        out.append(Held(name, [JobSource(job) for job in jobs], jobs))
    return out


def tutorial(shared: Path) -> tuple:
    folder = shared / "data" / "relion30_tutorial_betagal"
    held, skipped = [], []
    for name, run in TUTORIAL_RUNS.items():
        job, labels = folder / run, folder / run / "labels.csv"
        if not labels.is_file():
            skipped.append(f"{name}: {labels} not found")
            continue
        held.append(Held(name, [JobSource(job, labels=labels)], [job], labels=labels))
    return held, skipped


def corpus(path: Path, root: Path) -> tuple:
    """(Held or None, reason skipped): the corpus merged into one dataset folder."""
    if not path.is_dir():
        return None, f"relion-corpus: {path} not found"
    folders = [p for p in [path, *sorted(path.iterdir())] if (p / INFO_FILE).is_file()]
    if not folders:
        return None, f"relion-corpus: no dataset folder in {path}"
    names = list(FEATURE_SETS["classranker"][1])
    for folder in folders:
        if load_dataset(folder).feature_names != names:
            return None, f"relion-corpus: {folder} has other features than this version's 'classranker' set"
    sources = [DatasetSource(p) for p in folders]
    merged = build_dataset(sources, root / "relion-corpus" / "dataset", nr_valid=0, seed=0,
                           command_line="generalization benchmark")
    return Held("relion-corpus", [DatasetSource(merged)], [merged], split="all"), None


def hold_out(target: Held, others: list, root: Path, args) -> dict:
    work = root / "runs" / target.name
    sources = [source for other in others for source in other.sources]
    dataset = build_dataset(sources, work / "train_dataset", valid_fraction=0.2, seed=0,
                            command_line="generalization benchmark")
    trained = quiet_train(dataset, work / "model", args.epochs, seed=args.seed)
    summary = quiet_evaluate(Path(trained["model"]), target.inputs, work / "eval", labels=target.labels,
                             split=target.split)
    row = model_and_baseline(summary)
    counts = load_dataset(dataset).meta.groupby("source").size()
    row.update({"dataset": target.name, "size": f"{row['classes']} ({row['good']})",
                "trained_on": ", ".join(f"{o.name} ({n})" for o, n in zip(others, _per_held(others, counts)))})
    delta = row["roc_auc"] - row["baseline_roc_auc"]
    row["delta"] = f"{delta:+.3f}" if np.isfinite(delta) else "-"
    row["verdict"] = ("-" if not np.isfinite(delta) else "**loses**" if delta < -TIE
                      else "wins" if delta > TIE else "ties")
    return row


def _per_held(others: list, counts: pd.Series) -> list:
    """Classes per held dataset from the per-source counts (sources are numbered s0, s1, ... in order)."""
    out, index = [], 0
    for other in others:
        out.append(int(sum(counts.get(f"s{index + k}", 0) for k in range(len(other.sources)))))
        index += len(other.sources)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_logs()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        held = simulated(root, args)
        real, skipped = tutorial(Path(args.shared))
        held += real
        relion, reason = corpus(Path(args.corpus), root)
        held += [relion] if relion else []
        skipped += [reason] if reason else []
        rows = []
        for target in held:
            rows.append(hold_out(target, [h for h in held if h is not target], root, args))
            print(f"  held out {target.name}: model {rows[-1]['roc_auc']:.3f}, {rows[-1]['baseline']} "
                  f"{rows[-1]['baseline_roc_auc']:.3f}", file=sys.stderr, flush=True)
    print(f"## Generalization, leave one dataset out ({datetime.date.today()}, {os.cpu_count()} CPU cores, "
          f"torch threads {args.threads})\n")
    given = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: `{' '.join(['python benchmarks/generalization.py', given]).strip()}`")
    print(f"simulated: {args.jobs} jobs x {args.classes} classes per family; {args.epochs} epochs, seed {args.seed}; "
          f"20% of the training classes for validation\n")
    print(markdown_table(rows, COLUMNS))
    for line in skipped:
        print(f"\nskipped {line}")
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
