"""Build a compact training dataset (memory-mapped .npy files) from labelled classes.

SOURCES are any mix of: a RELION training-format STAR (rlnClassScore with rlnSubImageStack and/or
rlnReferenceImage as index@path, optionally rlnNormalizedFeatureVector, which is then used as it is);
a simulated job folder (labels from its truth.csv); a job folder / run_itNNN_model.star / .mrcs with
--labels CSV (class_number,label). One job is processed at a time; the dataset folder appears only
when complete. A fixed validation split, stratified by label, is drawn once here.
"""
from __future__ import annotations

import sys


def add_args(parser):
    parser.add_argument("sources", nargs="+", help="training STAR files and/or labelled jobs; JOB=LABELS "
                        "pairs a job with its own labels file (CSV, or RELION's backup_selection.star)")
    parser.add_argument("--o", "--output", dest="output", required=True, help="dataset folder to write")
    parser.add_argument("--feature-set", default="classranker", choices=["classranker", "relion"],
                        help="features computed for sources that do not give them")
    parser.add_argument("--image-size", type=int, default=64, help="network image size in pixels")
    parser.add_argument("--labels", help="labels CSV (class_number,label) or backup_selection.star for job "
                        "sources without truth.csv")
    parser.add_argument("--target", default="label", choices=["label", "score"],
                        help="truth.csv column used as the label (score: the simulator's soft score)")
    parser.add_argument("--root", help="folder the image paths of a training STAR are relative to")
    parser.add_argument("--apix", type=float, help="pixel size in Å for inputs that do not give it")
    parser.add_argument("--diameter", type=float, help="particle diameter in Å for inputs that do not give it")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="share of classes kept for validation")
    parser.add_argument("--nr-valid", type=int, help="number of validation classes (overrides --valid-fraction)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")


def main(args) -> int:
    from ..training.dataset import build_dataset, load_dataset
    path = build_dataset(args.sources, args.output, feature_set=args.feature_set, image_size=args.image_size,
                         nr_valid=args.nr_valid, valid_fraction=args.valid_fraction, seed=args.seed,
                         labels=args.labels, root=args.root, pixel_size=args.apix,
                         particle_diameter=args.diameter, target=args.target,
                         command_line=" ".join(["classranker"] + sys.argv[1:]))
    info = load_dataset(path).info
    counts = info["counts"]
    print(f"{path}: {counts['classes']} classes ({counts['good']} good, {counts['bad']} junk) from "
          f"{counts['jobs']} job(s); {counts['train']} for training, {counts['valid']} for validation; "
          f"feature set {info['feature_set']} ({len(info['feature_names'])} features), "
          f"{info['image_kind']} images of {info['image_size']} px")
    return 0
