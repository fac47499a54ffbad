"""Evaluation plots (PNG): ROC and PR curves of the model and the baselines, score histograms per
label, and the reliability diagram. Written with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import binarise, pr_curve, roc_curve


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path: Path) -> None:
    figure.savefig(path, dpi=100, format="png")
    _pyplot().close(figure)


def plot_roc(path: Path, labels, curves: dict, aucs: dict) -> None:
    """curves: name -> scores (the model first, drawn thicker)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.8, 4.5), constrained_layout=True)
    for i, (name, scores) in enumerate(curves.items()):
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, lw=2.2 if i == 0 else 1.0, ls="-" if i == 0 else "--",
                  label=f"{name} (AUC {aucs.get(name, float('nan')):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    axes.set(xlabel="false positive rate (junk kept)", ylabel="true positive rate (good kept)",
             title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(fontsize=7, loc="lower right")
    _save(figure, path)


def plot_pr(path: Path, labels, curves: dict, aps: dict) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.8, 4.5), constrained_layout=True)
    for i, (name, scores) in enumerate(curves.items()):
        precision, recall, _ = pr_curve(labels, scores)
        axes.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="post",
                  lw=2.2 if i == 0 else 1.0, ls="-" if i == 0 else "--",
                  label=f"{name} (AP {aps.get(name, float('nan')):.3f})")
    prevalence = float(np.mean(binarise(labels))) if len(labels) else 0.0
    axes.axhline(prevalence, color="grey", lw=0.8, ls=":")
    axes.set(xlabel="recall (good classes kept)", ylabel="precision (kept classes that are good)",
             title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(fontsize=7, loc="lower left")
    _save(figure, path)


def plot_histograms(path: Path, labels, scores, cutoff: float) -> None:
    plt = _pyplot()
    good = binarise(labels)
    scores = np.asarray(scores, float)
    figure, axes = plt.subplots(figsize=(5.5, 3.5), constrained_layout=True)
    bins = np.linspace(0, 1, 26)
    axes.hist(scores[~good], bins=bins, alpha=0.6, color="tab:red", label=f"junk ({(~good).sum()})")
    axes.hist(scores[good], bins=bins, alpha=0.6, color="tab:green", label=f"good ({good.sum()})")
    axes.axvline(cutoff, color="black", lw=1, ls="--", label=f"cutoff {cutoff:g}")
    axes.set(xlabel="model score", ylabel="classes", title="scores by label")
    axes.legend(fontsize=8)
    _save(figure, path)


def plot_reliability(path: Path, table: pd.DataFrame) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4.3), constrained_layout=True)
    used = table[table["classes"] > 0]
    centres = (used["bin_lower"] + used["bin_upper"]) / 2
    axes.bar(centres, used["fraction_good"], width=0.09, alpha=0.5, label="fraction good")
    axes.plot(used["mean_score"], used["fraction_good"], "o-", ms=4, label="per bin")
    axes.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8, label="perfect calibration")
    axes.set(xlabel="mean score in bin", ylabel="fraction of good classes", title="reliability",
             xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(fontsize=7, loc="upper left")
    _save(figure, path)
