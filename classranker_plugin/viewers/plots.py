"""Figures of a ClassRanker selection, drawn on given matplotlib objects (viewer and PNG files).

No Scipion here: the viewer puts these on its windows, the protocols save them as PNG in their
extra folder with a non-interactive backend.
"""
import numpy as np

KEPT_COLOUR = "#1a9850"
REJECTED_COLOUR = "#d73027"


def draw_histogram(ax, scores, kept, cutoff):
    """Score histogram, kept and rejected stacked, with the cutoff as a dashed line."""
    scores, kept = np.asarray(scores, float), np.asarray(kept, bool)
    ax.hist([scores[kept], scores[~kept]], bins=np.linspace(0, 1, 21), stacked=True,
            color=[KEPT_COLOUR, REJECTED_COLOUR],
            label=[f"kept ({int(kept.sum())})", f"rejected ({int((~kept).sum())})"])
    ax.axvline(cutoff, color="k", ls="--", lw=1.5, label=f"cutoff {cutoff:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (0 = junk, 1 = good)")
    ax.set_ylabel("number of classes")
    ax.set_title(f"ClassRanker scores: {int(kept.sum())} of {len(kept)} classes kept")
    ax.legend(frameon=False, fontsize=8)


def gallery_shape(n, columns=8):
    columns = max(1, min(columns, n))
    return max(1, int(np.ceil(n / columns))), columns


def draw_gallery(fig, images, scores, kept, class_ids, columns=8, max_classes=200):
    """Class averages by decreasing score; green frame and title = kept, red = rejected."""
    scores, kept = np.asarray(scores, float), np.asarray(kept, bool)
    order = np.argsort(-scores, kind="stable")[:max_classes]
    rows, columns = gallery_shape(len(order), columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, order):
        image = np.asarray(images[index], float)
        low, high = np.percentile(image, [1, 99])
        ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        colour = KEPT_COLOUR if kept[index] else REJECTED_COLOUR
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(f"class {class_ids[index]}: {scores[index]:.2f}", fontsize=7, color=colour)
    fig.suptitle("Class averages by score (green: kept, red: rejected)", fontsize=10)
    return axes


def save_selection_plots(outdir, images, class_ids, scores, kept, cutoff):
    """Write score_histogram.png and class_gallery.png in ``outdir``; returns their paths."""
    import os

    from matplotlib.figure import Figure  # no pyplot: safe in a protocol process without display

    paths = []
    fig = Figure(figsize=(6, 3.5), dpi=110)
    draw_histogram(fig.add_subplot(1, 1, 1), scores, kept, cutoff)
    fig.tight_layout()
    paths.append(os.path.join(outdir, "score_histogram.png"))
    fig.savefig(paths[-1])
    rows, columns = gallery_shape(min(len(scores), 200))
    fig = Figure(figsize=(columns * 1.3, rows * 1.45 + 0.4), dpi=100)
    draw_gallery(fig, images, scores, kept, class_ids)
    fig.tight_layout()
    paths.append(os.path.join(outdir, "class_gallery.png"))
    fig.savefig(paths[-1])
    return paths
