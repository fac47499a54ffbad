"""Pictures people would rather look at than read: score histogram and a gallery sorted by score."""
from __future__ import annotations

from pathlib import Path

import numpy as np

KEPT_COLOUR = "#1a9850"
REJECTED_COLOUR = "#d73027"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_score_histogram(path, scores, keep, cutoff: float, title: str = "") -> Path:
    """Histogram of scores, kept and rejected stacked, with the cutoff as a vertical line."""
    plt = _pyplot()
    scores, keep = np.asarray(scores, float), np.asarray(keep, bool)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    bins = np.linspace(0, 1, 21)
    ax.hist([scores[keep], scores[~keep]], bins=bins, stacked=True, color=[KEPT_COLOUR, REJECTED_COLOUR],
            label=[f"kept ({keep.sum()})", f"rejected ({(~keep).sum()})"])
    ax.axvline(cutoff, color="k", ls="--", lw=1.5, label=f"cutoff {cutoff:g}")
    ax.set_xlabel("score (0 = junk, 1 = good)")
    ax.set_ylabel("classes")
    ax.set_xlim(0, 1)
    ax.set_title(title or "ClassRanker scores")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_gallery(path, images, scores, keep, class_numbers, explanations=None, columns: int = 10,
                 max_classes: int = 300) -> Path:
    """Class averages sorted by decreasing score; green frame = kept, red = rejected."""
    plt = _pyplot()
    scores, keep = np.asarray(scores, float), np.asarray(keep, bool)
    order = np.argsort(-scores, kind="stable")[:max_classes]
    rows = max(1, int(np.ceil(len(order) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.25, rows * 1.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, order):
        image = np.asarray(images[index], float)
        low, high = np.percentile(image, [1, 99]) if np.ptp(image) > 0 else (0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        colour = KEPT_COLOUR if keep[index] else REJECTED_COLOUR
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(f"{class_numbers[index]}: {scores[index]:.2f}", fontsize=7, color=colour)
    fig.suptitle("Classes by score (green: kept, red: rejected)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_report_plots(outdir, classset, scores, keep, cutoff, explanations=None) -> list:
    outdir = Path(outdir)
    return [plot_score_histogram(outdir / "score_histogram.png", scores, keep, cutoff,
                                 title=f"{Path(classset.source).name or 'classes'}: {keep.sum()} of {len(keep)} kept"),
            plot_gallery(outdir / "gallery.png", classset.images, scores, keep, classset.class_numbers,
                         explanations)]
