"""``evaluate``: a model against labels, always beside the trivial baselines on the same classes.

Inputs: dataset folders (the model must use the dataset's feature set), or classification jobs (a
job folder, run_itNNN_model.star or .mrcs) with labels from their truth.csv or a labels CSV
(``class_number,label``). Outputs in ``out_dir`` (written all at once):

================== ==================================================================================
metrics.json       ROC AUC, PR AUC (average precision), and precision, recall, MCC at the cutoff and at
                   the MCC-maximising threshold; calibration error; the baselines; the model's margin
                   over the best baseline
per_class.csv      every class: label, score, error, mistake type, baselines' inputs; worst mistakes first
calibration.csv    reliability table (10 score bins: classes, mean score, fraction good)
baselines.csv      one row per ranker (model and baselines): AUCs and best MCC
roc.png pr.png     curves of the model and the baselines
score_histogram.png, reliability.png
================== ==================================================================================
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import pandas as pd

from ..checkpoint import Ranker, load_model
from ..errors import InputError
from ..io import atomic_output_dir
from .baselines import baseline_scores
from .dataset import INFO_FILE, load_dataset
from .metrics import binary_report, calibration_table, expected_calibration_error
from .sources import JobSource, find_model_star, read_label_table

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)
SCORE_CHUNK = 4096


def dataset_classes(path: PathLike, ranker: Ranker, split: Optional[str], batch_size: int) -> pd.DataFrame:
    """Per-class table (meta, label, score) of a dataset's ``split`` scored by ``ranker``."""
    data = load_dataset(path)
    if data.feature_names != list(ranker.feature_names):
        raise InputError(f"the dataset has the feature set {data.info['feature_set']!r} "
                         f"({len(data.feature_names)} features) but the model uses {ranker.feature_set!r} "
                         f"({len(ranker.feature_names)})", path,
                         f"rebuild the dataset with --feature-set {ranker.feature_set}, or evaluate on jobs")
    if data.info["image_kind"] != ranker.image_kind or int(data.info["image_size"]) != ranker.image_size:
        raise InputError(f"the dataset's images ({data.info['image_kind']}, {data.info['image_size']} px) are "
                         f"not the model's ({ranker.image_kind}, {ranker.image_size} px)", path,
                         "rebuild the dataset for this model, or evaluate on jobs")
    if split is None:  # the model's own training set: only its validation part is fair
        trained_on = ((ranker.provenance or {}).get("dataset") or {}).get("path")
        split = "valid" if trained_on and Path(trained_on).resolve() == Path(path).resolve() else "all"
        if split == "valid":
            log.info("%s is the model's training dataset: evaluating its validation split only", path)
    indices = data.indices(split)
    if not len(indices):
        raise InputError(f"the dataset has no {split!r} classes", path, "choose another --split")
    scores = _dataset_scores(data, ranker, indices, batch_size)
    table = data.meta.iloc[indices].reset_index(drop=True)
    table.insert(0, "input", str(path))
    table["label"] = np.asarray(data.labels[indices], np.float64)
    # as in selection: an empty class (blank average or no particles) is never kept
    empty = table["empty"].astype(bool).to_numpy() if "empty" in table else np.zeros(len(table), bool)
    table["score"] = np.where(empty, 0.0, scores)
    table["split"] = np.where(np.asarray(data.split[indices]) == 1, "valid", "train")
    return table


def _dataset_scores(data, ranker: Ranker, indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Scores of a dataset's classes ``indices``; with a job head, each job is scored as a whole
    (its ranks are taken over all of the job's classes) and the asked-for classes are returned."""
    if ranker.job_head is None:
        return np.concatenate([ranker.score(np.asarray(data.images[part]), np.asarray(data.features[part]), batch_size)
                               for part in np.array_split(indices, -(-len(indices) // SCORE_CHUNK))])
    jobs = data.meta["job"].to_numpy()
    scores = np.full(len(data), np.nan)
    for job in np.unique(jobs[indices]):
        rows = np.flatnonzero(jobs == job)
        features = np.asarray(data.features[rows])
        logits = ranker.logits(np.asarray(data.images[rows]), features, batch_size)
        scores[rows] = ranker.job_scores(logits, features, data.feature_names)[1]
    return scores[indices]


def job_classes(path: PathLike, ranker: Ranker, labels: Optional[PathLike], device: str,
                batch_size: int) -> pd.DataFrame:
    """Per-class table (label, score, statistics) of a labelled job scored by ``ranker``."""
    from ..io import empty_class_mask, read_classes
    from ..scoring import score_classes
    from .baselines import empty_heuristic
    source = JobSource(path, labels=labels)
    labels_path = source.labels_path()
    if not labels_path.is_file():
        raise InputError(f"no labels for this job ({labels_path} not found)", path,
                         "pass --labels CSV (class_number,label), or give a simulated job with truth.csv")
    truth = read_label_table(labels_path).set_index("class_number")
    classset = read_classes(find_model_star(path))
    result = score_classes(classset, ranker, device=device, batch_size=batch_size, explain=False)
    numbers = classset.class_numbers
    unknown = np.setdiff1d(truth.index.to_numpy(), numbers)
    if unknown.size:
        raise InputError(f"labels for {unknown.size} class(es) that the job does not have", labels_path,
                         f"give the labels of {path}")
    rows = np.flatnonzero(np.isin(numbers, truth.index))
    table = pd.DataFrame({"input": str(path), "job": str(path), "class_number": numbers[rows],
                          "kind": truth.loc[numbers[rows], "kind"].to_numpy()})
    for column in ("class_distribution", "resolution", "particle_count", "accuracy_rotations"):
        table[column] = classset.stat(column)[rows]
    table["empty_score"] = empty_heuristic(classset.images, classset.pixel_size, classset.particle_diameter)[rows]
    table["label"] = truth.loc[numbers[rows], "label"].to_numpy(np.float64)
    # as in selection: an empty class (blank average or no particles) is never kept
    empty = empty_class_mask(classset)[rows]
    table["score"] = np.where(empty, 0.0, result.scores[rows])
    table["empty"] = empty
    return table


def _ranker_row(name: str, labels, scores, cutoff: Optional[float]) -> dict:
    report = binary_report(labels, scores, cutoff if cutoff is not None else 0.5)
    best = report["at_best_mcc"] or {}
    row = {"ranker": name, "roc_auc": report["roc_auc"], "pr_auc": report["pr_auc"],
           "best_mcc": best.get("mcc", float("nan")), "best_mcc_threshold": best.get("threshold", float("nan")),
           "precision_at_best_mcc": best.get("precision"), "recall_at_best_mcc": best.get("recall")}
    if cutoff is not None:
        row.update({"mcc_at_cutoff": report["at_cutoff"]["mcc"],
                    "precision_at_cutoff": report["at_cutoff"]["precision"],
                    "recall_at_cutoff": report["at_cutoff"]["recall"]})
    return row


def evaluate(model: Optional[PathLike], inputs: Iterable[PathLike], out_dir: PathLike, cutoff: float = 0.5,
             labels: Optional[PathLike] = None, split: Optional[str] = None, device: str = "auto",
             batch_size: int = 256, plots: bool = True, trust_torchscript: bool = False) -> dict:
    """Evaluate ``model`` on ``inputs``; write the outputs in ``out_dir`` and return the report."""
    from ..scoring import validate_cutoff
    cutoff = validate_cutoff(cutoff)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError("no input to evaluate on", fix="give a dataset folder or labelled jobs")
    if split not in (None, "all", "train", "valid"):
        raise InputError(f"unknown split {split!r}", fix="give all, train or valid")
    ranker = load_model(model, device=device, trust_torchscript=trust_torchscript)
    tables = [dataset_classes(p, ranker, split, batch_size) if (p / INFO_FILE).is_file()
              else job_classes(p, ranker, labels, device, batch_size) for p in inputs]
    table = pd.concat(tables, ignore_index=True)
    y = table["label"].to_numpy(np.float64)
    good = y >= 0.5
    if good.all() or not good.any():
        raise InputError(f"all {len(y)} evaluated classes have the same label: no ranking can be measured",
                         ", ".join(map(str, inputs)), "evaluate on classes of both labels")
    report = binary_report(y, table["score"], cutoff)
    calibration = calibration_table(y, table["score"])
    report["expected_calibration_error"] = expected_calibration_error(calibration)
    baselines = baseline_scores(table)
    rows = [_ranker_row("model", y, table["score"], cutoff)]
    rows += [_ranker_row(name, y, scores, None) for name, scores in baselines.items()]
    rankers = pd.DataFrame(rows)
    others = rankers.iloc[1:].dropna(subset=["roc_auc"])
    best = others.loc[others["roc_auc"].idxmax()] if len(others) else None
    margin = None if best is None else {
        "best_baseline": best["ranker"], "best_baseline_roc_auc": float(best["roc_auc"]),
        "roc_auc": float(report["roc_auc"] - best["roc_auc"]),
        "pr_auc": float(report["pr_auc"] - others["pr_auc"].max())}
    summary = {"model": str(ranker.path or model), "inputs": [str(p) for p in inputs], "cutoff": cutoff,
               "split": split, "model_metrics": report,
               "baselines": {r["ranker"]: {k: v for k, v in r.items() if k != "ranker"}
                             for r in rankers.iloc[1:].to_dict("records")},
               "margin_over_best_baseline": margin}
    table["error"] = (table["score"] - y).abs()
    table["mistake"] = np.where(good & (table["score"] < cutoff), "false negative",
                                np.where(~good & (table["score"] >= cutoff), "false positive", ""))
    table = table.sort_values("error", ascending=False, kind="stable")
    with atomic_output_dir(out_dir) as tmp:
        tmp = Path(tmp)
        (tmp / "metrics.json").write_text(json.dumps(_finite(summary), indent=2, default=_json_default))
        table.to_csv(tmp / "per_class.csv", index=False, float_format="%.6g")
        calibration.to_csv(tmp / "calibration.csv", index=False, float_format="%.6g")
        rankers.to_csv(tmp / "baselines.csv", index=False, float_format="%.6g")
        if plots:
            _write_plots(tmp, y, table, baselines, rankers, calibration, cutoff)
    return summary


def _write_plots(folder: Path, y, table: pd.DataFrame, baselines: dict, rankers: pd.DataFrame,
                 calibration: pd.DataFrame, cutoff: float) -> None:
    from .plots import plot_histograms, plot_pr, plot_reliability, plot_roc
    order = table.index  # baselines were computed before sorting: realign them
    curves = {"model": table["score"].to_numpy()}
    curves.update({name: pd.Series(values).loc[order].to_numpy() for name, values in baselines.items()})
    labels = table["label"].to_numpy()
    aucs = dict(zip(rankers["ranker"], rankers["roc_auc"]))
    aps = dict(zip(rankers["ranker"], rankers["pr_auc"]))
    plot_roc(folder / "roc.png", labels, curves, aucs)
    plot_pr(folder / "pr.png", labels, curves, aps)
    plot_histograms(folder / "score_histogram.png", labels, table["score"], cutoff)
    plot_reliability(folder / "reliability.png", calibration)


def _finite(value):
    """NaN and infinities -> None (strict JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def format_report(summary: dict) -> str:
    """A few lines for the terminal."""
    m = summary["model_metrics"]
    lines = [f"{m['classes']} classes ({m['good']} good, {m['bad']} junk)",
             f"model: ROC AUC {m['roc_auc']:.3f}  PR AUC {m['pr_auc']:.3f}  "
             f"at cutoff {summary['cutoff']:g}: precision {m['at_cutoff']['precision']:.3f} "
             f"recall {m['at_cutoff']['recall']:.3f} MCC {m['at_cutoff']['mcc']:.3f}"]
    if m.get("at_best_mcc"):
        b = m["at_best_mcc"]
        lines.append(f"best MCC {b['mcc']:.3f} at threshold {b['threshold']:.3f} "
                     f"(precision {b['precision']:.3f}, recall {b['recall']:.3f})")
    for name, row in summary["baselines"].items():
        lines.append(f"baseline {name:<20} ROC AUC {row['roc_auc']:.3f}  PR AUC {row['pr_auc']:.3f}")
    margin = summary.get("margin_over_best_baseline")
    if margin:
        lines.append(f"margin over the best baseline ({margin['best_baseline']}): "
                     f"ROC AUC {margin['roc_auc']:+.3f}, PR AUC {margin['pr_auc']:+.3f}")
    return "\n".join(lines)
