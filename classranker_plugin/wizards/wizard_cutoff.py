"""Wand next to the cutoff: suggest the cutoff that best separates the scores of an earlier run."""
import numpy as np

from pyworkflow.wizard import Wizard

from classranker_plugin.convert import read_scores
from classranker_plugin.protocols import ProtClassRankerChangeCutoff
from classranker_plugin.viewers.viewer_auto_select import ClassRankerViewer


def suggest_cutoff(scores, default=0.5):
    """Otsu's threshold of the scores: the cut that best splits them into a low and a high group.

    Candidate cuts are midpoints between consecutive distinct scores; the one maximising the
    between-group variance wins. Fewer than two distinct scores: ``default``.
    """
    values = np.sort(np.asarray(scores, float)[np.isfinite(scores)])
    distinct = np.unique(values)
    if len(distinct) < 2:
        return float(default)
    cuts = (distinct[:-1] + distinct[1:]) / 2.0
    n_low = np.searchsorted(values, cuts)  # scores below each cut
    total, n = values.sum(), len(values)
    low_sum = np.cumsum(values)[n_low - 1]
    w_low, w_high = n_low / n, 1.0 - n_low / n
    mean_low, mean_high = low_sum / n_low, (total - low_sum) / (n - n_low)
    between = w_low * w_high * (mean_low - mean_high) ** 2
    return float(np.round(cuts[int(np.argmax(between))], 3))


def scores_protocol(protocol):
    """The ClassRanker run whose scores a form (change-cutoff protocol or viewer) is about."""
    pointer = getattr(protocol, "inputProtocol", None)
    if pointer is not None:
        return pointer.get()
    return getattr(protocol, "protocol", None)  # a ProtocolViewer: the run it shows


class ClassRankerCutoffWizard(Wizard):
    """Suggest a score cutoff from the score distribution of the chosen ClassRanker run."""
    _targets = [(ProtClassRankerChangeCutoff, ["cutoff"]), (ClassRankerViewer, ["viewCutoff"])]

    def show(self, form, *params):
        run = scores_protocol(form.protocol)
        if run is None or not hasattr(run, "getScoresFile"):
            form.showWarning("Choose the earlier ClassRanker run first.")
            return
        try:
            frame = read_scores(run.getScoresFile())
        except FileNotFoundError as error:
            form.showWarning(str(error))
            return
        name = getattr(form, "wizParamName", None) or (params[0] if params else "cutoff")
        form.setVar(name, suggest_cutoff(frame["score"].to_numpy()))
