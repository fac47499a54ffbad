"""Score the bundled example (a small simulated Class2D job with known good/junk classes).

Prints every class's score and the selection, then how the selection compares with the truth
that the simulator recorded. Outputs are written to --o (default: ./classranker_demo).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..checkpoint import load_model
from ..io import read_classes
from ..scoring import auto_select, format_summary
from .score import print_scores

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "example"
EXAMPLE_JOB = EXAMPLE_DIR / "run_it025_model.star"


def add_args(parser):
    parser.add_argument("--o", "--output", dest="output", default="classranker_demo", help="output directory")
    parser.add_argument("--cutoff", type=float, default=0.5, help="keep classes with score >= cutoff")
    parser.add_argument("--model", help="model checkpoint (default: the bundled starter model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def main(args) -> int:
    classset = read_classes(EXAMPLE_JOB)
    ranker = load_model(args.model, device=args.device)
    summary = auto_select(classset, args.output, ranker, cutoff=args.cutoff, device=args.device)
    print(f"example: {EXAMPLE_JOB}")
    print_scores(args.output)
    print(format_summary(summary))
    truth = pd.read_csv(EXAMPLE_DIR / "truth.csv").set_index("class_number")
    scores = pd.Series(_scores(args.output)).reindex(truth.index)
    good = truth["label"].to_numpy() == 1
    kept = scores.to_numpy() >= args.cutoff
    print(f"against the simulator's truth: {np.sum(kept & good)} of {good.sum()} good classes kept, "
          f"{np.sum(kept & ~good)} of {(~good).sum()} junk classes kept")
    print(f"outputs (STAR files, gallery.png, score_histogram.png) in {Path(args.output).resolve()}")
    return 0


def _scores(outdir) -> dict:
    import starfile
    table = starfile.read(Path(outdir) / "class_scores.star", always_dict=True)
    table = next(iter(table.values()))
    return dict(zip(table["rlnClassNumber"].astype(int), table["rlnClassScore"].astype(float)))
