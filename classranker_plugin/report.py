"""Pictures people would rather look at than read: score histogram and a gallery sorted by score.

With occlusion maps (saliency.py), a second gallery shows each network image with the regions that
pushed its score up in red and down in blue.
"""
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


def saliency_overlay(saliency: np.ndarray, limit: float, strength: float = 0.65) -> np.ndarray:
    """(h, w, 4) RGBA: red where the map is positive, blue where negative, opacity ~ |value| / limit."""
    saliency = np.asarray(saliency, float)
    rgba = np.zeros(saliency.shape + (4,))
    rgba[..., 0] = saliency > 0
    rgba[..., 2] = saliency < 0
    rgba[..., 3] = strength * np.clip(np.abs(saliency) / limit, 0.0, 1.0) if limit > 0 else 0.0
    return rgba


def plot_saliency_gallery(path, images, maps, scores, keep, class_numbers, columns: int = 10,
                          max_classes: int = 300) -> Path:
    """Network images sorted by decreasing score with their occlusion maps overlaid.

    Red: occluding the region lowers the score (it pushed the score up); blue: the reverse. Each
    map is scaled to its own largest magnitude, printed under the class as the largest logit drop.
    """
    plt = _pyplot()
    scores, keep = np.asarray(scores, float), np.asarray(keep, bool)
    order = np.argsort(-scores, kind="stable")[:max_classes]
    rows = max(1, int(np.ceil(len(order) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.25, rows * 1.5), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, order):
        image = np.asarray(images[index], float)
        low, high = np.percentile(image, [1, 99]) if np.ptp(image) > 0 else (0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        saliency = np.nan_to_num(np.asarray(maps[index], float))
        limit = float(np.abs(saliency).max())
        ax.imshow(saliency_overlay(saliency, limit), interpolation="nearest")
        colour = KEPT_COLOUR if keep[index] else REJECTED_COLOUR
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(f"{class_numbers[index]}: {scores[index]:.2f}", fontsize=7, color=colour)
        ax.set_xlabel(f"max {limit:.2g}", fontsize=6, labelpad=1)
    fig.suptitle("What the image branch used (red: raised the score, blue: lowered it; "
                 "occlusion, per-class scale)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_report_plots(outdir, classset, scores, keep, cutoff, explanations=None, saliency_maps=None,
                       saliency_images=None) -> list:
    """score_histogram.png and gallery.png; with ``saliency_maps`` (n, h, w) also gallery_saliency.png,
    drawn over ``saliency_images`` (the network images the maps belong to; default the class averages)."""
    outdir = Path(outdir)
    title = f"{Path(classset.source).name or 'classes'}: {keep.sum()} of {len(keep)} kept"
    written = [plot_score_histogram(outdir / "score_histogram.png", scores, keep, cutoff, title=title),
               plot_gallery(outdir / "gallery.png", classset.images, scores, keep, classset.class_numbers,
                            explanations)]
    if saliency_maps is not None:
        images = classset.images if saliency_images is None else saliency_images
        if np.shape(images)[1:] != np.shape(saliency_maps)[1:]:
            raise ValueError(f"saliency maps of shape {np.shape(saliency_maps)} do not fit images of shape "
                             f"{np.shape(images)}: give the network images they were computed on")
        written.append(plot_saliency_gallery(outdir / "gallery_saliency.png", images, saliency_maps, scores,
                                             keep, classset.class_numbers))
    return written
