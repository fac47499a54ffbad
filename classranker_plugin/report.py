"""Pictures people would rather look at than read: score histogram and galleries sorted by score.

The ``draw_*`` functions draw on given matplotlib objects (the Scipion viewer puts them in its
windows); the ``plot_*`` functions write PNG files through a plain ``Figure`` (no pyplot, no
display needed). With occlusion maps (saliency.py), a second gallery shows each network image with
the regions that pushed its score up in red and down in blue.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

KEPT_COLOUR = "#1a9850"
REJECTED_COLOUR = "#d73027"


def _figure(width: float, height: float, dpi: int = 100):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=dpi)


def _save(fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_histogram(ax, scores, keep, cutoff: float, title: str = ""):
    """Histogram of scores, kept and rejected stacked, with the cutoff as a dashed line."""
    scores, keep = np.asarray(scores, float), np.asarray(keep, bool)
    ax.hist([scores[keep], scores[~keep]], bins=np.linspace(0, 1, 21), stacked=True,
            color=[KEPT_COLOUR, REJECTED_COLOUR],
            label=[f"kept ({int(keep.sum())})", f"rejected ({int((~keep).sum())})"])
    ax.axvline(cutoff, color="k", ls="--", lw=1.5, label=f"cutoff {cutoff:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (0 = junk, 1 = good)")
    ax.set_ylabel("number of classes")
    ax.set_title(title or f"ClassRanker scores: {int(keep.sum())} of {len(keep)} classes kept")
    ax.legend(frameon=False, fontsize=8)


def gallery_shape(n: int, columns: int = 10) -> tuple:
    """(rows, columns) of a gallery of ``n`` tiles."""
    columns = max(1, min(columns, n))
    return max(1, int(np.ceil(n / columns))), columns


def _draw_tile(ax, image, kept: bool, title: str, overlay=None, note: str = ""):
    image = np.asarray(image, float)
    low, high = np.percentile(image, [1, 99]) if np.ptp(image) > 0 else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
    if overlay is not None:
        ax.imshow(overlay, interpolation="nearest")
    colour = KEPT_COLOUR if kept else REJECTED_COLOUR
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
    ax.set_title(title, fontsize=7, color=colour)
    if note:
        ax.set_xlabel(note, fontsize=6, labelpad=1)


def draw_gallery(fig, images, scores, keep, class_numbers, columns: int = 10, max_classes: int = 300,
                 maps=None, title: str = "Class averages by score (green: kept, red: rejected)"):
    """Tiles sorted by decreasing score; green frame = kept, red = rejected; optional saliency maps."""
    scores, keep = np.asarray(scores, float), np.asarray(keep, bool)
    order = np.argsort(-scores, kind="stable")[:max_classes]
    rows, columns = gallery_shape(len(order), columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, order):
        ax.axis("on")
        overlay, note = None, ""
        if maps is not None:
            saliency = np.nan_to_num(np.asarray(maps[index], float))
            limit = float(np.abs(saliency).max())
            overlay, note = saliency_overlay(saliency, limit), f"max {limit:.2g}"
        _draw_tile(ax, images[index], keep[index], f"{class_numbers[index]}: {scores[index]:.2f}", overlay, note)
    fig.suptitle(title, fontsize=9)
    return axes


def saliency_overlay(saliency: np.ndarray, limit: float, strength: float = 0.65) -> np.ndarray:
    """(h, w, 4) RGBA: red where the map is positive, blue where negative, opacity ~ |value| / limit."""
    saliency = np.asarray(saliency, float)
    rgba = np.zeros(saliency.shape + (4,))
    rgba[..., 0] = saliency > 0
    rgba[..., 2] = saliency < 0
    rgba[..., 3] = strength * np.clip(np.abs(saliency) / limit, 0.0, 1.0) if limit > 0 else 0.0
    return rgba


def plot_score_histogram(path, scores, keep, cutoff: float, title: str = "") -> Path:
    fig = _figure(6, 3.5, dpi=110)
    draw_histogram(fig.add_subplot(1, 1, 1), scores, keep, cutoff, title)
    return _save(fig, path)


def plot_gallery(path, images, scores, keep, class_numbers, columns: int = 10, max_classes: int = 300) -> Path:
    """Class averages sorted by decreasing score; green frame = kept, red = rejected."""
    rows, columns = gallery_shape(min(len(scores), max_classes), columns)
    fig = _figure(columns * 1.25, rows * 1.4 + 0.4)
    draw_gallery(fig, images, scores, keep, class_numbers, columns, max_classes)
    return _save(fig, path)


def plot_saliency_gallery(path, images, maps, scores, keep, class_numbers, columns: int = 10,
                          max_classes: int = 300) -> Path:
    """Network images sorted by score with their occlusion maps: red = occluding the region lowers
    the score (it pushed the score up), blue = the reverse; each map scaled to its own maximum."""
    rows, columns = gallery_shape(min(len(scores), max_classes), columns)
    fig = _figure(columns * 1.25, rows * 1.5 + 0.4)
    draw_gallery(fig, images, scores, keep, class_numbers, columns, max_classes, maps=maps,
                 title="What the image branch used (red: raised the score, blue: lowered it; "
                       "occlusion, per-class scale)")
    return _save(fig, path)


def write_report_plots(outdir, classset, scores, keep, cutoff, saliency_maps=None, saliency_images=None) -> list:
    """score_histogram.png and gallery.png; with ``saliency_maps`` (n, h, w) also gallery_saliency.png,
    drawn over ``saliency_images`` (the network images the maps belong to; default the class averages)."""
    outdir = Path(outdir)
    title = f"{Path(classset.source).name or 'classes'}: {int(keep.sum())} of {len(keep)} kept"
    written = [plot_score_histogram(outdir / "score_histogram.png", scores, keep, cutoff, title=title),
               plot_gallery(outdir / "gallery.png", classset.images, scores, keep, classset.class_numbers)]
    if saliency_maps is not None:
        images = classset.images if saliency_images is None else saliency_images
        if np.shape(images)[1:] != np.shape(saliency_maps)[1:]:
            raise ValueError(f"saliency maps of shape {np.shape(saliency_maps)} do not fit images of shape "
                             f"{np.shape(images)}: give the network images they were computed on")
        written.append(plot_saliency_gallery(outdir / "gallery_saliency.png", images, saliency_maps, scores,
                                             keep, classset.class_numbers))
    return written
