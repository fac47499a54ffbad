"""Retrain the bundled starter model and measure it, beside the baselines, on data it never saw.

    python -m classranker_plugin.training.starter --o scratch/starter [--jobs 80] [--epochs 30]
        [--corpus data/relion_corpus] [--real data/real] [--corpus-extra data/relion_corpus_fine]
        [--from-model M] [--install]

1. simulates a corpus of procedural Class2D jobs varied in box, pixel size, number of classes,
   particle counts, junk fraction and kinds, with realistic or uninformative metadata;
2. adds any extra labelled sources given with --extra (e.g. RELION-made jobs with truth.csv);
3. builds one dataset, trains (feature masking teaches it to work without metadata);
3b. with --corpus (a RELION-made corpus: train/ and test/ dataset folders, see benchmarks/relion_corpus.py),
   fine-tunes that model on the corpus's training part (counted twice) plus some of the simulated jobs,
   so that its calibration fits genuine RELION classes, and also evaluates on the corpus's test part;
3c. with --real (labelled real class averages, data/real; their files in scratch/real, see
   training/real_data.py), fine-tunes again on the corpus (and the train/ parts of --corpus-extra) plus
   the real datasets and fits the job head (training/real_stage.py) on them; --from-model starts this
   stage from a finished stage-2 model;
4. evaluates on fresh simulated jobs (other seeds; realistic and uninformative metadata) and on the
   real RELION tutorial runs in ../shared with their human labels, when present;
5. with --install, copies the model into the package (models/starter.pt) with its report
   (models/starter.json), which the README quotes.
Deterministic given --seed (up to floating-point differences between machines).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..checkpoint import BUNDLED_MODEL
from ..simulation import simulate_job
from .dataset import build_dataset
from .evaluation import evaluate
from .trainer import train

log = logging.getLogger(__name__)
TUTORIAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "relion30_tutorial_betagal"
BOXES = (48, 64, 80, 100, 128, 160)
FINETUNE_EPOCHS, FINETUNE_LR, FINETUNE_SIM_JOBS = 10, 3e-4, 20
REAL_EPOCHS = 8


def job_parameters(index: int, seed: int) -> dict:
    """Parameters of simulated job ``index``: varied, reproducible."""
    rng = np.random.default_rng([seed, index])
    box = int(rng.choice(BOXES))
    extent = rng.uniform(160, 420)  # box size in Angstrom
    n_classes = int(rng.integers(20, 101))
    return {"n_classes": n_classes, "box": box, "pixel_size": round(extent / box, 3),
            "n_particles": int(n_classes * rng.uniform(60, 600)),
            "junk_fraction": round(float(rng.uniform(0.2, 0.7)), 2),
            "metadata": "uninformative" if rng.random() < 0.4 else "realistic",
            "seed": int(seed * 1000 + index)}


def simulate_corpus(root: Path, n_jobs: int, seed: int, metadata=None) -> list:
    jobs = []
    for index in range(n_jobs):
        params = job_parameters(index, seed)
        if metadata:
            params["metadata"] = metadata
        job = root / f"job{index + 1:03d}"
        if not (job / "truth.csv").is_file():
            simulate_job(job, **params)
        jobs.append(job)
        print(f"\rsimulated {index + 1}/{n_jobs} jobs", end="", file=sys.stderr)
    print(file=sys.stderr)
    return jobs


def tutorial_sets(workdir: Path) -> list:
    """(name, model.star, labels CSV) for the real tutorial runs with their human selections."""
    sets = []
    for folder in sorted(TUTORIAL.glob("class2d_job*")) if TUTORIAL.is_dir() else []:
        labels = pd.read_csv(folder / "labels.csv")
        path = workdir / f"{folder.name}_labels.csv"
        labels.rename(columns={"class": "class_number", "human_selected": "label"})[
            ["class_number", "label"]].to_csv(path, index=False)
        sets.append((folder.name, folder / "run_it025_model.star", path))
    return sets


def measure(model: Path, workdir: Path, seed: int, n_test_jobs: int) -> dict:
    """Model and baselines on fresh simulated jobs and on the real tutorial runs."""
    results = {}
    for metadata in ("realistic", "uninformative"):
        jobs = simulate_corpus(workdir / f"test_{metadata}", n_test_jobs, seed + 7919, metadata)
        results[f"simulated, {metadata} metadata"] = evaluate(model, jobs, workdir / f"eval_{metadata}", plots=True)
    for name, model_star, labels in tutorial_sets(workdir):
        results[f"real RELION tutorial {name}"] = evaluate(model, [model_star], workdir / f"eval_{name}",
                                                           labels=labels, plots=True)
    return results


def summary_table(results: dict) -> pd.DataFrame:
    rows = []
    for name, summary in results.items():
        metrics, margin = summary["model_metrics"], summary["margin_over_best_baseline"] or {}
        rows.append({"test set": name,
                     "model ROC-AUC": metrics["roc_auc"], "model MCC@0.5": metrics["at_cutoff"]["mcc"],
                     "model best MCC": (metrics.get("at_best_mcc") or {}).get("mcc"),
                     "best baseline": margin.get("best_baseline"),
                     "baseline ROC-AUC": margin.get("best_baseline_roc_auc")})
    return pd.DataFrame(rows)


def finetune_on_corpus(model: Path, corpus: Path, sim_jobs: list, work: Path, seed: int,
                       epochs: int = FINETUNE_EPOCHS) -> dict:
    """Stage 2: fine-tune ``model`` on the corpus's training part (x2) plus ``sim_jobs``; the run's summary."""
    dataset = work / "dataset"
    if not dataset.is_dir():
        train_part = corpus / "train"
        build_dataset([train_part, train_part] + list(sim_jobs), dataset, valid_fraction=0.15, seed=seed,
                      command_line=" ".join(sys.argv))
    resume = (work / "train" / "last.pt").is_file()
    return train(dataset, work / "train", epochs=epochs, lr=FINETUNE_LR, init=None if resume else model,
                 seed=seed, resume=resume)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--o", dest="output", default="scratch/starter", help="work folder")
    parser.add_argument("--jobs", type=int, default=80, help="simulated training jobs")
    parser.add_argument("--test-jobs", type=int, default=8, help="fresh simulated jobs per test set")
    parser.add_argument("--extra", nargs="*", default=[], help="more labelled sources (job folders with truth.csv)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", help="RELION-made corpus (train/, test/) to fine-tune on, e.g. data/relion_corpus")
    parser.add_argument("--real", help="labelled real datasets (e.g. data/real): stage 3, needs --corpus")
    parser.add_argument("--calibrate-head", action="store_true",
                        help="stage 3: give the job head its per-job calibration (job_head.Calibration)")
    parser.add_argument("--corpus-extra", nargs="*", default=[],
                        help="more RELION-made corpora (e.g. data/relion_corpus_fine) whose train/ parts join stage 3")
    parser.add_argument("--real-epochs", type=int, default=REAL_EPOCHS, help="stage-3 fine-tuning epochs")
    parser.add_argument("--from-model", help="skip stages 1-2: start stage 3 from this checkpoint")
    parser.add_argument("--install", action="store_true", help="copy the model into the package")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.output)
    if args.real and not args.corpus:
        parser.error("--real needs --corpus (stage 3 trains on both)")
    if args.from_model:
        model, report, results = Path(args.from_model), {"training": {"from_model": args.from_model}}, {}
    else:
        model, report, results = stages_1_2(args, work)
    if args.real:
        model, report["real"] = real_stage(model, args, work)
    results.update(measure(model, work, args.seed, args.test_jobs))
    table = summary_table(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    report["results"] = table.to_dict("records")
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if args.install:
        shutil.copyfile(model, BUNDLED_MODEL)
        BUNDLED_MODEL.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
        print(f"installed {BUNDLED_MODEL}")
    return 0


def real_stage(model: Path, args, work: Path) -> tuple[Path, dict]:
    """Stage 3: fine-tune on the corpus + real datasets, fit the job head; (model, report)."""
    from ..checkpoint import load_model
    from .real_data import list_datasets, load_classes
    from .real_stage import finetune_on_real, fit_job_head, with_job_head

    datasets = list_datasets(Path(args.real))
    for dataset in datasets:
        load_classes(dataset)  # every dataset's files must be here: the error names the fetch to do
    corpus_train = [Path(c) / "train" for c in [args.corpus] + list(args.corpus_extra)]
    tuned = finetune_on_real(model, corpus_train, datasets, work / "real", epochs=args.real_epochs, seed=args.seed)
    head = fit_job_head(load_model(tuned, device="cpu"), corpus_train, datasets, calibrate=args.calibrate_head)
    final = with_job_head(tuned, head, work / "real" / "model_with_head.pt",
                          provenance={"real_datasets": [d.name for d in datasets]})
    return final, {"datasets": [d.name for d in datasets], "epochs": args.real_epochs, "init": str(model),
                   "job_head": head.to_dict()}


def stages_1_2(args, work: Path) -> tuple[Path, dict, dict]:
    """Stage 1 (procedural simulations) and, with --corpus, stage 2; (model, report, results)."""
    jobs = simulate_corpus(work / "train_jobs", args.jobs, args.seed)
    dataset = work / "dataset"
    if not dataset.is_dir():
        build_dataset(jobs + [Path(p) for p in args.extra], dataset, valid_fraction=0.15, seed=args.seed,
                      command_line=" ".join(sys.argv))
    run = train(dataset, work / "train", epochs=args.epochs, seed=args.seed, resume=(work / "train" / "last.pt").is_file())
    model = Path(run["model"]) if "model" in run else work / "train" / "model.pt"
    report = {"training": {"simulated_jobs": args.jobs, "extra_sources": args.extra, "epochs": args.epochs,
                           "seed": args.seed, "best": _summary(run)}}
    results = {}
    if args.corpus:
        corpus = Path(args.corpus)
        test_name = "RELION-made jobs, held-out map family"
        report["stage1_on_corpus_test"] = summary_table(
            {test_name: evaluate(model, [corpus / "test"], work / "eval_corpus_test_stage1")}).to_dict("records")
        run = finetune_on_corpus(model, corpus, jobs[:FINETUNE_SIM_JOBS], work / "finetune", args.seed)
        model = work / "finetune" / "train" / "model.pt"
        report["finetune"] = {"corpus": str(corpus), "simulated_jobs": FINETUNE_SIM_JOBS, "epochs": FINETUNE_EPOCHS,
                              "lr": FINETUNE_LR, "best": _summary(run)}
        results[test_name] = evaluate(model, [corpus / "test"], work / "eval_corpus_test", plots=True)
    return model, report, results


def _summary(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "history"}


if __name__ == "__main__":
    sys.exit(main())
