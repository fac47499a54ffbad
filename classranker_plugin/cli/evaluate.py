"""Measure a model against labels, beside the trivial baselines on the same classes.

INPUTS are dataset folders (from 'classranker make-dataset') or labelled jobs: a job folder,
run_itNNN_model.star or .mrcs, with labels from the job's truth.csv or --labels CSV
(class_number,label). Writes in --o: metrics.json (ROC AUC, PR AUC, precision/recall/MCC at the
cutoff and at the MCC-maximising threshold, calibration, baselines and the model's margin over the
best one), per_class.csv (worst mistakes first), calibration.csv, baselines.csv and PNG plots.
"""
from __future__ import annotations

import json
import sys


def add_args(parser):
    parser.add_argument("inputs", nargs="+", help="dataset folders and/or labelled jobs")
    parser.add_argument("--model", help="model checkpoint (default: $CLASSRANKER_MODEL or the bundled model)")
    parser.add_argument("--o", "--output", dest="output", required=True, help="output folder")
    parser.add_argument("--cutoff", type=float, default=0.5, help="score at which classes are kept")
    parser.add_argument("--labels", help="labels CSV (class_number,label) for jobs without truth.csv")
    parser.add_argument("--split", choices=["all", "train", "valid"],
                        help="classes of a dataset to use (default: valid for the model's own training "
                             "dataset, else all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="allow a RELION 4.0 TorchScript model (runs code from the file)")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the summary")


def main(args) -> int:
    from ..training.evaluation import evaluate, format_report
    summary = evaluate(args.model, args.inputs, args.output, cutoff=args.cutoff, labels=args.labels,
                       split=args.split, device=args.device, batch_size=args.batch_size,
                       plots=not args.no_plots, trust_torchscript=args.trust_torchscript)
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        print()
    else:
        print(format_report(summary))
        print(f"outputs in {args.output}")
    return 0
