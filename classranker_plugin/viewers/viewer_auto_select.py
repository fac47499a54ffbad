"""Viewer of a ClassRanker selection: score histogram, class gallery, score table, new cutoff."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, MessageView, ProtocolViewer, TextView

from classranker_plugin.convert import classes_to_classset, read_scores
from classranker_plugin.outputs import read_selection, select_from_scores
from classranker_plugin.protocols import ProtClassRankerAutoSelect2D, ProtClassRankerChangeCutoff
from classranker_plugin.report import draw_gallery, draw_histogram, gallery_shape


class ClassRankerViewer(ProtocolViewer):
    """See the ClassRanker scores, try another cutoff, and create outputs at that cutoff."""
    _label = "ClassRanker selection viewer"
    _environments = [DESKTOP_TKINTER]
    _targets = [ProtClassRankerAutoSelect2D, ProtClassRankerChangeCutoff]

    def _defineParams(self, form):
        selection = read_selection(self.protocol) or {}
        form.addSection(label="Visualization")
        form.addParam("viewCutoff", params.FloatParam, default=selection.get("cutoff", 0.5),
                      label="Cutoff to preview (0-1)",
                      help="The plots show which classes this cutoff keeps (green) and rejects "
                           "(red). It starts at the cutoff of the run; the wand suggests one.")
        form.addParam("displayHistogram", params.LabelParam, label="Score histogram")
        form.addParam("displayGallery", params.LabelParam, label="Class averages by score")
        form.addParam("displayTable", params.LabelParam, label="Table of scores and reasons")
        form.addParam("doChangeCutoff", params.LabelParam,
                      label="Create outputs at the preview cutoff",
                      help="Adds and launches a 'change ClassRanker cutoff' run with this cutoff "
                           "(no re-scoring; takes seconds).")

    def _getVisualizeDict(self):
        return {"displayHistogram": self._showHistogram, "displayGallery": self._showGallery,
                "displayTable": self._showTable, "doChangeCutoff": self._changeCutoff}

    # ------------------------------------------------------------------ views
    def _showHistogram(self, paramName=None):
        frame, kept, cutoff = self._selection()
        plotter = Plotter(windowTitle="ClassRanker scores", figsize=(7, 4))
        draw_histogram(plotter.figure.add_subplot(1, 1, 1), frame["score"], kept, cutoff)
        plotter.figure.tight_layout()
        return [plotter]

    def _showGallery(self, paramName=None):
        frame, kept, _ = self._selection()
        classset, ids = classes_to_classset(self.protocol.getInputClasses(), root=self._root())
        order = [ids.index(i) for i in frame["class_id"]]
        rows, columns = gallery_shape(min(len(order), 200))
        plotter = Plotter(windowTitle="ClassRanker gallery",
                          figsize=(columns * 1.3, rows * 1.45 + 0.4))
        draw_gallery(plotter.figure, classset.images[order], frame["score"], kept,
                     frame["class_id"].tolist())
        plotter.figure.tight_layout()
        return [plotter]

    def _showTable(self, paramName=None):
        frame, kept, cutoff = self._selection()
        path = self._getTmpPath("classranker_scores_%s.txt" % self.protocol.getObjId())
        order = np.argsort(-frame["score"].to_numpy(float), kind="stable")
        with open(path, "w") as handle:
            handle.write("Cutoff %g: %d of %d classes kept\n\n" % (cutoff, kept.sum(), len(kept)))
            handle.write("%6s %6s %5s %10s  %s\n" % ("class", "score", "kept", "particles", "reason"))
            for i in order:
                row = frame.iloc[i]
                handle.write("%6d %6.3f %5s %10d  %s\n" % (
                    row["class_id"], row["score"], "yes" if kept[i] else "no",
                    row["particle_count"], row["explanation"]))
        return [TextView([path], "ClassRanker scores")]

    def _changeCutoff(self, paramName=None):
        """Launch a 'change ClassRanker cutoff' run on this run's scores at the preview cutoff."""
        project = self.getProject()
        cutoff = self._cutoff()
        run = project.newProtocol(ProtClassRankerChangeCutoff, cutoff=cutoff,
                                  objLabel="ClassRanker cutoff %g" % cutoff)
        run.inputProtocol.set(self.protocol)
        project.launchProtocol(run)
        self.changeCutoffRun = run
        return [MessageView("Launched '%s': it keeps the classes scoring at least %g."
                            % (run.getRunName(), cutoff), title="ClassRanker", tkParent=self.getTkRoot())]

    # ------------------------------------------------------------------ utils
    def _cutoff(self):
        value = self.viewCutoff.get()
        return float(min(max(value, 0.0), 1.0))

    def _selection(self):
        frame = read_scores(self.protocol.getScoresFile())
        selection = read_selection(self.protocol) or {}
        kept = select_from_scores(frame, self._cutoff(), selection.get("min_classes", 0),
                                  selection.get("min_particles", 0))
        return frame, kept, self._cutoff()

    def _root(self):
        project = self.getProject()
        return project.getPath() if project is not None else os.getcwd()
