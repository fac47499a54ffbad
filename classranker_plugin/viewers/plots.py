"""Figures of a ClassRanker selection for the Scipion viewer and protocols.

The drawing itself lives in the core (:mod:`classranker_plugin.report`, no Scipion) so that the
command line and Scipion show the same pictures; this module only saves the protocols' PNGs.
"""
import os


def save_selection_plots(outdir, images, class_ids, scores, kept, cutoff):
    """Write score_histogram.png and class_gallery.png in ``outdir``; returns their paths."""
    from ..report import plot_gallery, plot_score_histogram
    return [str(plot_score_histogram(os.path.join(outdir, "score_histogram.png"), scores, kept, cutoff)),
            str(plot_gallery(os.path.join(outdir, "class_gallery.png"), images, scores, kept, class_ids,
                             columns=8, max_classes=200))]
