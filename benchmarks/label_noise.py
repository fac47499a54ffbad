"""Robustness to wrong labels: test ROC AUC versus the share of flipped training labels.

For each metadata mode of the simulator ("realistic": junk and good classes differ in their
statistics; "uninformative": they do not, only the image tells them apart) it simulates small
training jobs and fresh test jobs (other seeds), builds one training dataset, trains a model per
noise level with ``trainer.train(label_noise=f)`` (that share of the *training* labels flipped;
the validation split used for model selection and calibration stays clean) and evaluates it on
the test jobs with ``training.evaluation.evaluate``. Prints a markdown table.

    python benchmarks/label_noise.py                     # ~5-10 min on 2 busy CPU cores
    python benchmarks/label_noise.py --train-jobs 60 --classes 50 --epochs 30 --seeds 3 --threads 4

Options: --train-jobs N --test-jobs N --classes N --box PX --epochs N --noise 0,0.1,... --modes
realistic,uninformative --seeds N (training seeds per cell; mean and spread are printed)
--threads N --keep DIR (keep the jobs, datasets and models there).
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (markdown_table, model_and_baseline, quiet_evaluate, quiet_logs,  # noqa: E402
                         quiet_train, simulate_family)
from classranker_plugin.training.dataset import build_dataset  # noqa: E402

COLUMNS = {"mode": "metadata", "noise": "flipped train labels", "roc_auc": "test ROC AUC",
           "mcc_05": "MCC @ 0.5", "mcc_best": "best MCC", "val_auc": "clean-val AUC",
           "baseline": "best baseline", "baseline_roc_auc": "its ROC AUC", "seconds": "train s"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-jobs", type=int, default=20)
    parser.add_argument("--test-jobs", type=int, default=5)
    parser.add_argument("--classes", type=int, default=24, help="classes per simulated job")
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--noise", default="0,0.1,0.25,0.4", help="comma-separated shares of flipped labels")
    parser.add_argument("--modes", default="realistic,uninformative")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per (mode, noise)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--keep", help="folder to keep the jobs, datasets and models in (default: a temporary one)")
    return parser.parse_args(argv)


def mode_datasets(root: Path, mode: int, name: str, args) -> tuple:
    """(training dataset, test dataset) of one metadata mode; test jobs use other seeds."""
    base = 100_000 * (mode + 1)
    train_jobs = simulate_family(root / name / "train", args.train_jobs, base, args.classes, args.box, metadata=name)
    test_jobs = simulate_family(root / name / "test", args.test_jobs, base + 50_000, args.classes, args.box,
                                metadata=name)
    train_set = build_dataset(train_jobs, root / name / "train_dataset", valid_fraction=0.2, seed=0,
                              command_line="label_noise benchmark")
    test_set = build_dataset(test_jobs, root / name / "test_dataset", nr_valid=0, seed=0,
                             command_line="label_noise benchmark")
    return train_set, test_set


def run_cell(root: Path, name: str, noise: float, seed: int, train_set: Path, test_set: Path, epochs: int) -> dict:
    run = root / name / f"noise{noise:g}_seed{seed}"
    t0 = time.perf_counter()
    trained = quiet_train(train_set, run / "model", epochs, seed=seed, label_noise=noise)
    seconds = time.perf_counter() - t0
    summary = quiet_evaluate(Path(trained["model"]), [test_set], run / "eval", split="all")
    row = model_and_baseline(summary)
    row.update({"val_auc": trained["best"].get("val_auc", np.nan), "seconds": seconds})
    return row


def summarise(cells: list, name: str, noise: float) -> dict:
    """One table row: the mean over seeds, '±' the spread when there are several."""
    row = {"mode": name, "noise": f"{noise:.0%}"}
    for key in ("roc_auc", "mcc_05", "mcc_best", "val_auc", "seconds"):
        values = np.array([c[key] for c in cells], float)
        row[key] = (f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}" if len(values) > 1
                    else float(values[0]))
    row["seconds"] = f"{np.nanmean([c['seconds'] for c in cells]):.0f}"
    row["baseline"], row["baseline_roc_auc"] = cells[0]["baseline"], cells[0]["baseline_roc_auc"]
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_logs()
    levels = [float(x) for x in args.noise.split(",") if x.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        rows = []
        for index, name in enumerate(modes):
            train_set, test_set = mode_datasets(root, index, name, args)
            for noise in levels:
                cells = [run_cell(root, name, noise, seed, train_set, test_set, args.epochs)
                         for seed in range(args.seeds)]
                rows.append(summarise(cells, name, noise))
                print(f"  {name} {noise:.0%}: test ROC AUC {rows[-1]['roc_auc']}", file=sys.stderr, flush=True)
    n_train, n_test = args.train_jobs * args.classes, args.test_jobs * args.classes
    print(f"## Label noise ({datetime.date.today()}, {os.cpu_count()} CPU cores, torch threads {args.threads})\n")
    given = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: `{' '.join(['python benchmarks/label_noise.py', given]).strip()}`")
    print(f"training: {args.train_jobs} simulated jobs x {args.classes} classes ({n_train}; 20% clean validation), "
          f"box {args.box}, {args.epochs} epochs, {args.seeds} seed(s); test: {args.test_jobs} fresh jobs "
          f"({n_test} classes)\n")
    print(markdown_table(rows, COLUMNS))
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
