"""Does fine-tuning on a user's own labels help where the bundled model is weak?

Takes one real dataset (default: the cryoSPARC K=100 run of EMPIAR-10880, where the bundled network
ranks worst), splits its labelled classes into N for fine-tuning (stratified, seeded) and the rest for
testing, fine-tunes the bundled model on the N classes (with the RELION-made corpus beside them, so
that it does not forget), refits nothing else, and compares on the held-out classes: ROC-AUC, MCC at
0.5, good classes kept at 0.5, before and after. Prints a table; asserts nothing.

    python benchmarks/finetune_gain.py --model stage2.pt [--dataset NAME] [--n 50] [--epochs 6] [--seeds 1 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classranker_plugin.checkpoint import BUNDLED_MODEL, load_model  # noqa: E402
from classranker_plugin.scoring import score_classes  # noqa: E402
from classranker_plugin.training.metrics import binary_report  # noqa: E402
from classranker_plugin.training.real_data import RealSource, list_datasets, load_classes  # noqa: E402


def split(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Bool mask of ``n`` labelled classes for fine-tuning, both labels in proportion."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), bool)
    labelled = np.flatnonzero(np.isfinite(labels))
    for value in (0, 1):
        rows = labelled[labels[labelled] == value]
        take = int(round(n * len(rows) / len(labelled)))
        chosen[rng.choice(rows, size=min(take, len(rows)), replace=False)] = True
    return chosen


def measure(model, classes, labels, test) -> dict:
    result = score_classes(classes, load_model(model, device="cpu"), explain=False)
    scores = np.where(result.empty, 0.0, result.scores)
    report = binary_report(labels[test], scores[test], 0.5)
    good = test & (labels == 1)
    return {"roc_auc": report["roc_auc"], "mcc": report["at_cutoff"]["mcc"],
            "kept": float((scores[good] >= 0.5).mean())}


def main(argv=None) -> int:
    from classranker_plugin.training.dataset import build_dataset
    from classranker_plugin.training.dataset_source import DatasetSource
    from classranker_plugin.training.trainer import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cs_empiar10880_class2d_k100")
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the N classes in the fine-tuning set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--corpus", default=str(REPO / "data" / "relion_corpus" / "train"))
    parser.add_argument("--work", default=str(REPO / "scratch" / "finetune_gain"))
    args = parser.parse_args(argv)
    dataset = next(d for d in list_datasets() if d.name == args.dataset)
    seen = (load_model(args.model, device="cpu").provenance or {}).get("real_datasets") or []
    if dataset.name in seen:
        print(f"{args.model} was trained on {dataset.name}: give a model that never saw it, e.g. the stage-2 "
              f"model (git show e8da347~1:classranker_plugin/models/starter.pt > stage2.pt; --model stage2.pt)",
              file=sys.stderr)
        return 2
    classes, labels = load_classes(dataset)
    print("| seed | fine-tuned on | tested on | ROC-AUC before -> after | MCC@0.5 before -> after | "
          "good kept at 0.5 before -> after |\n|---|---|---|---|---|---|")
    for seed in args.seeds:
        chosen = split(labels, args.n, seed)
        test = np.isfinite(labels) & ~chosen
        work = Path(args.work) / f"{dataset.name}_n{args.n}_seed{seed}"
        model = work / "train" / "model.pt"
        if not model.is_file():
            sources = [DatasetSource(args.corpus)] + [
                RealSource(dataset, only=tuple(classes.class_numbers[chosen])) for _ in range(args.repeat)]
            build_dataset(sources, work / "dataset", valid_fraction=0.15, seed=seed)
            train(work / "dataset", work / "train", epochs=args.epochs, lr=3e-4, init=args.model, device="cpu",
                  seed=seed, patience=args.epochs, progress=False)
        before, after = measure(args.model, classes, labels, test), measure(model, classes, labels, test)
        print(f"| {seed} | {int(chosen.sum())} ({int((labels[chosen] == 1).sum())} good) | {int(test.sum())} | "
              f"{before['roc_auc']:.3f} -> {after['roc_auc']:.3f} | {before['mcc']:.2f} -> {after['mcc']:.2f} | "
              f"{before['kept']:.2f} -> {after['kept']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
