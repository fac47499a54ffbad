"""Leave one real dataset out: the model beside every trivial ranker on real, hand-labelled classes.

For each real dataset in data/real/ (files in scratch/real/, see training/real_data.py), the job head
is fitted on the RELION-made corpus (training split) and on every OTHER real dataset, then the held-out
dataset is scored: by the network alone (the bundled model's own calibrated score), by network + job
head, and by each trivial ranker available for it (class distribution, resolution, particle count,
the empty-class heuristic). Reported per dataset: ROC-AUC, MCC at 0.5 and at the best threshold,
share of good classes kept at 0.5; and the same without any metadata (every statistic unknown).
Prints a markdown table; --out writes the per-class scores and the table.

    git show e8da347~1:classranker_plugin/models/starter.pt > scratch/stage2.pt   # never saw real data
    python benchmarks/real_data.py --model scratch/stage2.pt --finetune 6 [--out benchmarks/real_data] [--l2 0.01]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classranker_plugin.checkpoint import load_model  # noqa: E402
from classranker_plugin.training.job_head_fit import fit_head, head_scores  # noqa: E402
from classranker_plugin.training.metrics import binary_report  # noqa: E402
from classranker_plugin.training.real_data import list_datasets, load_classes, score_dataset  # noqa: E402
from classranker_plugin.training.real_stage import (corpus_records, finetune_on_real,  # noqa: E402
                                                   real_records)


#: the last commit whose bundled model (stage 2) saw no real class averages
STAGE2_COMMIT = "e8da347~1"


def prepare(ranker, datasets, args):
    """(corpus records, feature names, scored real datasets, their records) for one network."""
    corpus, names = corpus_records(args.corpus, ranker)
    scored = {d.name: score_dataset(d, ranker) for d in datasets}
    return corpus, names, scored, {name: real_records(s, ranker) for name, s in scored.items()}


def finetuned(held, others, args):
    """The network fine-tuned on the corpus and ``others`` (never ``held``), loaded."""
    from classranker_plugin.checkpoint import BUNDLED_MODEL

    work = Path(args.out or REPO / "scratch" / "real_eval") / "folds" / held.name
    model = finetune_on_real(Path(args.model or BUNDLED_MODEL), args.corpus, others, work,
                             epochs=args.finetune, repeat=args.real_repeat)
    return load_model(model, device="cpu")


def metrics(labels, scores, empty, cutoff=0.5) -> dict:
    scores = np.where(empty, 0.0, scores)
    report = binary_report(labels, scores, cutoff)
    y = labels[np.isfinite(labels)] == 1
    s = scores[np.isfinite(labels)]
    best = report["at_best_mcc"] or {}
    return {"roc_auc": report["roc_auc"], "mcc_at_0.5": report["at_cutoff"]["mcc"],
            "best_mcc": best.get("mcc", np.nan), "good_kept_at_0.5": float((s[y] >= cutoff).mean()) if y.any() else np.nan}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="network checkpoint (default: the bundled model)")
    parser.add_argument("--corpus", nargs="+", default=[str(REPO / "data" / "relion_corpus" / "train")],
                        help="RELION-made corpus training folder(s)")
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--real-weight", type=float, default=1.0,
                        help="total weight of the real datasets relative to the corpus in the head fit")
    parser.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                        help="per held-out dataset, first fine-tune the network for EPOCHS on the corpus and "
                             "the other real datasets (0: the network as it is)")
    parser.add_argument("--draws", type=int, default=24,
                        help="sub-jobs per job for the head's per-job calibration (job_head_fit.composition_draws)")
    parser.add_argument("--real-repeat", type=int, default=2, help="copies of each real dataset in a fine-tune")
    parser.add_argument("--out", help="folder for per-class scores and the table")
    args = parser.parse_args(argv)

    base_ranker = load_model(args.model, device="cpu")
    seen = (base_ranker.provenance or {}).get("real_datasets") or []
    if seen:  # the bundled stage-3 model has seen every real run: nothing would be held out
        print(f"{base_ranker.path} was trained on the real runs {', '.join(seen)}: nothing is held out from it. "
              f"Give a model that never saw them, e.g. the stage-2 model: git show {STAGE2_COMMIT}:"
              f"classranker_plugin/models/starter.pt > stage2.pt; --model stage2.pt", file=sys.stderr)
        return 2
    datasets = []
    for dataset in list_datasets():
        try:
            load_classes(dataset)  # are its files here?
            datasets.append(dataset)
        except Exception as error:  # report and go on: one dataset's files may be missing here
            print(f"skipped {dataset.name}: {error}", file=sys.stderr)
    rows, per_class, shared = [], [], None
    for dataset in datasets:
        if args.finetune:   # the network too is trained without the held-out dataset
            ranker = finetuned(dataset, [d for d in datasets if d is not dataset], args)
            fold = prepare(ranker, datasets, args)
        else:
            ranker = base_ranker
            shared = shared or prepare(ranker, datasets, args)
            fold = shared
        corpus, names, scored, records = fold
        held = scored[dataset.name]
        train = corpus + [r for name, pair in records.items() if name != dataset.name for r in pair]
        head = fit_head(train, names, l2=args.l2, calibrate=True, draws=args.draws,
                        group_weights={"corpus": 1.0, "real": args.real_weight})
        with_metadata, without = records[dataset.name]
        plain = replace(head, calibration=None)     # the bundled model's head has no calibration
        variants = {
            "network": ranker.scores_from_logits(held.logits),
            "network + job head": head_scores(plain, with_metadata, names),
            "network + job head, no metadata": head_scores(plain, without, names),
            "network + job head, calibrated": head_scores(head, with_metadata, names),
        }
        variants.update({f"trivial: {k}": v for k, v in held.baselines.items()})
        n_labelled = np.isfinite(held.labels)
        base = {"dataset": held.dataset.name, "classes": int(n_labelled.sum()),
                "good": int((held.labels == 1).sum())}
        for name, scores in variants.items():
            m = metrics(held.labels, np.asarray(scores, float), held.empty)
            if name.startswith("trivial"):
                m = {"roc_auc": m["roc_auc"]}
            rows.append({**base, "ranker": name, **m})
            per_class.append(pd.DataFrame({"dataset": held.dataset.name, "ranker": name,
                                           "class_number": held.classset.class_numbers,
                                           "label": held.labels, "score": np.asarray(scores, float)}))
    table = pd.DataFrame(rows)
    print(markdown(table))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "lodo.csv", index=False)
        pd.concat(per_class).to_csv(out / "per_class.csv", index=False)
        (out / "lodo.md").write_text(markdown(table) + "\n")
        (out / "run.json").write_text(json.dumps(vars(args), indent=2))
    return 0


def markdown(table: pd.DataFrame) -> str:
    """One row per held-out dataset: model and head beside the best trivial ranker."""
    lines = ["| held-out dataset | classes (good) | network ROC-AUC | + job head ROC-AUC | head, no metadata | "
             "best trivial (ROC-AUC) | head MCC@0.5 / best | good kept at 0.5 | calibrated head: MCC@0.5, kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, group in table.groupby("dataset", sort=False):
        by = group.set_index("ranker")
        trivial = by[by.index.str.startswith("trivial")]["roc_auc"].dropna()
        best = f"{trivial.idxmax().split(': ')[1]} {trivial.max():.3f}" if len(trivial) else "-"
        head, calibrated = by.loc["network + job head"], by.loc["network + job head, calibrated"]
        lines.append(f"| {name} | {int(head['classes'])} ({int(head['good'])}) | {by.loc['network', 'roc_auc']:.3f} | "
                     f"{head['roc_auc']:.3f} | {by.loc['network + job head, no metadata', 'roc_auc']:.3f} | {best} | "
                     f"{head['mcc_at_0.5']:.2f} / {head['best_mcc']:.2f} | {head['good_kept_at_0.5']:.2f} | "
                     f"{calibrated['mcc_at_0.5']:.2f}, {calibrated['good_kept_at_0.5']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
