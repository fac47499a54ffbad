"""Score every class, keep those with score >= cutoff, and write the selected classes and particles.

INPUT is a RELION Class2D job file (run_itNNN_model.star, _data.star or _optimiser.star; the other
files of the same iteration are found by name), a plain .mrcs stack of class averages (with --stats
for per-class statistics), or a cryoSPARC 2D classification job (folder or class_averages.cs).
Outputs in --o: class_scores.star (all classes, with rlnClassScore and rlnNormalizedFeatureVector),
class_averages.star (the selected classes), particles.star (exactly the particles of the selected
classes, optics kept), particles_selected.cs for cryoSPARC input, summary.json and PNG plots. The output directory is written all at once: a failed run leaves nothing behind.
"""
from __future__ import annotations

import json
import sys

from ..checkpoint import load_model
from ..io import read_classes
from ..scoring import auto_select, format_summary, validate_cutoff


def add_input_args(parser):
    """Input options shared by the subcommands that read classes."""
    parser.add_argument("input", help="run_itNNN_model.star / _data.star / _optimiser.star, a .mrcs of class "
                                      "averages, or a cryoSPARC 2D classification job folder (or its "
                                      "J12_NNN_class_averages.cs)")
    parser.add_argument("--data-star", help="particles STAR (default: the run_itNNN_data.star beside INPUT); for "
                                            "cryoSPARC, the particles .cs (default: J12_NNN_particles.cs)")
    parser.add_argument("--stats", help="per-class statistics (CSV or STAR) for a plain .mrcs input")
    parser.add_argument("--apix", type=float, help="pixel size in Å (default: from the STAR/MRC header)")
    parser.add_argument("--diameter", type=float, help="particle (mask) diameter in Å (default: from optimiser.star)")
    parser.add_argument("--contrast", default="auto", choices=["auto", "white", "black"],
                        help="protein in the averages: white (cryo, RELION, cryoSPARC), black (often negative "
                             "stain: inverted before scoring), auto = decided from the averages")


def add_model_args(parser):
    parser.add_argument("--model", help="model checkpoint (default: $CLASSRANKER_MODEL or the bundled starter model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the network runs: auto = GPU when present, else CPU")
    parser.add_argument("--batch-size", type=int, default=256, help="classes per forward pass")
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="allow a RELION 4.0 TorchScript model: it contains code that torch runs, so "
                             "use it only for a file from a source you trust")


def add_args(parser):
    add_input_args(parser)
    add_model_args(parser)
    parser.add_argument("--o", "--output", dest="output", required=True, help="output directory")
    parser.add_argument("--cutoff", type=float, default=0.5, help="keep classes with score >= cutoff (0..1)")
    parser.add_argument("--min-classes", type=int, default=0, help="keep at least this many classes (best first)")
    parser.add_argument("--min-particles", type=int, default=0,
                        help="keep the best classes until at least this many particles are kept")
    parser.add_argument("--write-rejected", action="store_true", help="also write particles_rejected.star")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG histogram and gallery")
    parser.add_argument("--saliency", action="store_true",
                        help="also draw gallery_saliency.png: where the image branch looked (occlusion maps; "
                             "about 64 extra network passes per class)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")


def read_input(args):
    return read_classes(args.input, data_star=args.data_star, stats=args.stats, pixel_size=args.apix,
                        particle_diameter=args.diameter, contrast=getattr(args, "contrast", "auto"))


def main(args) -> int:
    validate_cutoff(args.cutoff, "--cutoff")
    classset = read_input(args)
    ranker = load_model(args.model, device=args.device, trust_torchscript=args.trust_torchscript)
    summary = auto_select(classset, args.output, ranker, cutoff=args.cutoff, min_classes=args.min_classes,
                          min_particles=args.min_particles, device=args.device, batch_size=args.batch_size,
                          plots=not args.no_plots, write_rejected=args.write_rejected,
                          saliency=args.saliency)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_scores(args.output)
        print(format_summary(summary))
        print(f"outputs in {args.output}")
    return 0


def print_scores(outdir, limit: int = 400):
    """The per-class table, best first, from the written class_scores.star."""
    import starfile
    from pathlib import Path

    table = starfile.read(Path(outdir) / "class_scores.star", always_dict=True)
    table = next(iter(table.values())).sort_values("rlnClassScore", ascending=False)
    print(f"{'class':>5} {'score':>6} {'kept':>4}  why")
    for _, row in table.head(limit).iterrows():
        why = row.get("rlnClassRankerExplanation", "")
        print(f"{int(row['rlnClassNumber']):>5} {row['rlnClassScore']:6.3f} "
              f"{'yes' if row['rlnSelected'] else 'no':>4}  {why if isinstance(why, str) else ''}")
