"""The scorer engine: a ClassSet and a model in, scores and a selection out.

``score_classes`` turns class averages into scores in [0, 1]; ``select_classes`` applies the
cutoff (and the minimum numbers of classes / particles); ``auto_select`` does both and writes the
outputs, atomically, in RELION's formats.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .checkpoint import Ranker, load_model
from .classset import ClassSet
from .errors import InputError
from .explain import explain_scores
from .features import compute_features
from .io import atomic_output_dir, check_output_dir, empty_class_mask, validate_classes
from .io.validate import check_not_all_blank
from .io.cryosparc import write_cryosparc_particles
from .io.writers import write_class_scores, write_particles, write_selected_class_averages
from .preprocess import model_images, model_images_and_frame, relion_model_images

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """Per-class outcome of scoring; arrays are in the ClassSet's class order."""

    scores: np.ndarray
    feature_vectors: np.ndarray
    feature_names: list
    empty: np.ndarray
    inputs_used: list
    explanations: list = field(default_factory=list)
    model: str = ""
    timings: dict = field(default_factory=dict)


def validate_cutoff(cutoff: float, name: str = "cutoff") -> float:
    cutoff = float(cutoff)
    if not 0.0 <= cutoff <= 1.0 or np.isnan(cutoff):
        raise InputError(f"{name} {cutoff} is outside [0, 1]",
                         fix=f"scores run from 0 (junk) to 1 (good): give a {name} between 0 and 1, e.g. 0.5")
    return cutoff


def score_classes(classset: ClassSet, ranker: Optional[Ranker] = None, device: str = "auto",
                  batch_size: int = 256, explain: bool = True) -> ScoreResult:
    """Score every class of ``classset`` with ``ranker`` (default: the bundled model)."""
    validate_classes(classset)
    check_not_all_blank(classset)
    ranker = ranker or load_model(device=device)
    timings = {}
    t0 = time.perf_counter()
    frame = None
    if ranker.image_kind == "relion":
        images = relion_model_images(classset)
    elif ranker.feature_set == "classranker":   # the model image and the feature frame in one pass
        images, frame = model_images_and_frame(classset, size=ranker.image_size)
    else:
        images = model_images(classset, size=ranker.image_size)
    features = compute_features(classset, ranker.feature_set, frame=frame)
    if list(features.names) != list(ranker.feature_names):
        missing = [n for n in ranker.feature_names if n not in features.names]
        unexpected = [n for n in features.names if n not in ranker.feature_names]
        raise InputError(f"the model's feature list differs from feature set '{ranker.feature_set}' of "
                         f"this version (model only: {missing or '-'}; this version only: "
                         f"{unexpected or '-'})", ranker.path,
                         fix="use a model trained with this ClassRanker version, or fine-tune it with "
                             "`classranker train --init`")
    timings["features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    embeddings = ranker.image_embeddings(images, batch_size)   # once, for the scores and the explanations
    logits = ranker.logits(images, features.values, batch_size=batch_size, embeddings=embeddings)
    network_logits = logits
    logits, scores = ranker.job_scores(logits, features.values, features.names)
    scores = scores.astype(np.float32)
    timings["inference_s"] = time.perf_counter() - t0
    explanations = []
    if explain:
        t0 = time.perf_counter()
        explanations = explain_scores(ranker, images, features.values, features.names, network_logits,
                                      embeddings=embeddings, scores=scores)
        timings["explain_s"] = time.perf_counter() - t0
    return ScoreResult(scores=scores, feature_vectors=features.values, feature_names=list(features.names),
                       empty=empty_class_mask(classset), inputs_used=["class averages"] + classset.available_stats(),
                       explanations=explanations, model=ranker.path or "", timings=timings)


def validate_minimums(n_classes: int, min_classes: int = 0, min_particles: int = 0) -> None:
    """InputError for negative minimums or more classes asked for than there are."""
    if min_classes < 0 or min_particles < 0:
        raise InputError("minimum numbers of classes and particles must be >= 0",
                         fix="give --min-classes / --min-particles of 0 or more")
    if min_classes > n_classes:
        raise InputError(f"--min-classes {min_classes} asks for more classes than the {n_classes} there are",
                         fix=f"give --min-classes between 0 and {n_classes}")


def select_classes(scores, particle_counts=None, cutoff: float = 0.5, min_classes: int = 0,
                   min_particles: int = 0, empty=None) -> np.ndarray:
    """Classes to keep: score >= cutoff, then more in decreasing score while under the minimums.

    Empty classes (no particles or a constant average) are never kept.
    """
    cutoff = validate_cutoff(cutoff)
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    validate_minimums(n, min_classes, min_particles)
    counts = np.zeros(n) if particle_counts is None else np.nan_to_num(np.asarray(particle_counts, float))
    allowed = np.ones(n, bool) if empty is None else ~np.asarray(empty, bool)
    keep = (scores >= cutoff) & allowed
    for index in np.argsort(-scores, kind="stable"):
        if keep.sum() >= min_classes and counts[keep].sum() >= min_particles:
            break
        if allowed[index]:
            keep[index] = True
    return keep


def auto_select(classset: ClassSet, outdir, ranker: Optional[Ranker] = None, cutoff: float = 0.5,
                min_classes: int = 0, min_particles: int = 0, device: str = "auto",
                batch_size: int = 256, plots: bool = True, write_rejected: bool = False,
                saliency: bool = False) -> dict:
    """Score, select and write the outputs in ``outdir`` (all or nothing). Returns the summary.

    saliency: with plots, also draw gallery_saliency.png (occlusion maps of the image branch).
    """
    validate_cutoff(cutoff)
    check_output_dir(outdir)
    validate_minimums(len(classset), min_classes, min_particles)
    ranker = ranker or load_model(device=device)
    result = score_classes(classset, ranker, device=device, batch_size=batch_size)
    counts = classset.stat("particle_count")
    keep = select_classes(result.scores, counts, cutoff, min_classes, min_particles, empty=result.empty)
    saliency_images = saliency_maps = None
    if saliency and plots:
        from .saliency import classset_saliency
        t0 = time.perf_counter()
        saliency_images, saliency_maps = classset_saliency(classset, ranker,
                                                           result.feature_vectors, batch_size=batch_size)
        result.timings["saliency_s"] = time.perf_counter() - t0
    summary = summarise(classset, result, keep, cutoff, ranker)
    # summary.json is moved in last: a folder without it is not a finished run
    with atomic_output_dir(outdir, marker="summary.json", marker_text=json.dumps(summary, indent=2)) as tmp:
        tmp = Path(tmp)
        write_class_scores(tmp / "class_scores.star", classset, result.scores, keep,
                           result.feature_vectors, result.feature_names,
                           extra_columns={"rlnClassRankerExplanation": result.explanations}
                           if result.explanations else None)
        write_selected_class_averages(tmp / "class_averages.star", classset, keep, result.scores)
        if classset.has_particles:  # one streamed pass over the data.star writes both subsets
            write_particles(tmp / "particles.star", classset, classset.class_numbers[keep],
                            rejected_path=tmp / "particles_rejected.star" if write_rejected else None)
        if classset.extra.get("cryosparc_particles") is not None:
            write_cryosparc_particles(tmp / "particles_selected.cs", classset, classset.class_numbers[keep])
            if write_rejected:
                write_cryosparc_particles(tmp / "particles_rejected.cs", classset,
                                          classset.class_numbers[~keep])
        if plots:
            from .report import write_report_plots
            write_report_plots(tmp, classset, result.scores, keep, cutoff,
                               saliency_maps=saliency_maps, saliency_images=saliency_images)
    return summary


def summarise(classset: ClassSet, result: ScoreResult, keep: np.ndarray, cutoff: float,
              ranker: Optional[Ranker]) -> dict:
    counts = classset.stat("particle_count")
    known = np.isfinite(counts)
    summary = {
        "source": classset.source,
        "model": result.model,
        "cutoff": cutoff,
        "classes": int(len(keep)),
        "classes_kept": int(keep.sum()),
        "empty_classes": int(result.empty.sum()),
        "particles": int(counts[known].sum()) if known.any() else None,
        "particles_kept": int(counts[keep & known].sum()) if known.any() else None,
        "inputs_used": result.inputs_used,
        "inputs_missing": list(classset.extra.get("missing_columns", [])),
        "contrast_inverted": bool(classset.extra.get("contrast_inverted", False)),
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
    }
    if ranker is not None and ranker.metrics:
        summary["model_validation"] = ranker.metrics
        summary["model_has_job_head"] = ranker.job_head is not None
    return summary


def format_summary(summary: dict) -> str:
    """A few human lines for the terminal."""
    lines = [f"{summary['classes_kept']} of {summary['classes']} classes kept at cutoff {summary['cutoff']}"]
    if summary.get("particles") is not None:
        share = 100.0 * summary["particles_kept"] / max(summary["particles"], 1)
        lines.append(f"{summary['particles_kept']} of {summary['particles']} particles kept ({share:.1f}%)")
    if summary["empty_classes"]:
        lines.append(f"{summary['empty_classes']} empty classes (no particles or a blank average) never kept")
    lines.append("inputs used: " + ", ".join(summary["inputs_used"]))
    if summary.get("contrast_inverted"):
        lines.append("the averages store protein black: inverted to protein white before scoring")
    if summary.get("inputs_missing"):
        lines.append("missing in the input (scored as unknown): " + ", ".join(summary["inputs_missing"]))
    validation = summary.get("model_validation") or {}
    if "precision_at_cutoff" in validation:
        who = ("network (before its job head) on its validation set" if summary.get("model_has_job_head")
               else "model on its validation set")
        lines.append(f"{who} at cutoff 0.5: precision {validation['precision_at_cutoff']:.2f}, "
                     f"recall {validation.get('recall_at_cutoff', float('nan')):.2f}")
    return "\n".join(lines)
