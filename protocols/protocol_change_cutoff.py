"""Re-select classes at another cutoff from the scores of an earlier ClassRanker run."""
import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfClasses2D, SetOfParticles
from pwem.protocols import Prot2D

from classranker_plugin.convert import SCORES_FILE
from classranker_plugin.outputs import define_selection_outputs, read_selection


class outputs(Enum):
    outputClasses = SetOfClasses2D
    outputParticles = SetOfParticles
    outputClassesRejected = SetOfClasses2D
    outputParticlesRejected = SetOfParticles


class ProtClassRankerChangeCutoff(Prot2D):
    """Keep the classes of an earlier "auto-select 2D classes" run at another score cutoff.

    The scores are not recomputed (this takes seconds): only the selection changes. Use the
    wand next to the cutoff to get a cutoff suggested from the score distribution, and the
    viewer of the earlier run to see the scores.
    """
    _label = "change ClassRanker cutoff"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputProtocol", params.PointerParam, important=True,
                      pointerClass="ProtClassRankerAutoSelect2D,ProtClassRankerChangeCutoff",
                      label="Earlier ClassRanker run",
                      help="An 'auto-select 2D classes' run (or a previous cutoff change) whose "
                           "scores are reused.")
        form.addParam("cutoff", params.FloatParam, default=0.5, label="New score cutoff (0-1)",
                      help="Classes scoring at least this are kept. Higher: cleaner but fewer "
                           "particles; lower: more particles, more junk. The wand suggests the "
                           "cutoff that best separates the two groups of scores.")
        form.addParam("minClasses", params.IntParam, default=0, label="Keep at least N classes",
                      help="Best-scoring classes are added until there are this many. 0 = none.")
        form.addParam("minParticles", params.IntParam, default=0,
                      label="Keep at least N particles",
                      help="Best-scoring classes are added until they hold this many particles.")
        form.addParam("writeRejected", params.BooleanParam, default=False,
                      label="Also output the rejected classes?")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.copyScoresStep, self.inputProtocol.getUniqueId())
        self._insertFunctionStep(self.createOutputStep, self.cutoff.get(), self.minClasses.get(),
                                 self.minParticles.get(), self.writeRejected.get())

    # --------------------------- STEPS functions -----------------------------
    def copyScoresStep(self, inputId):
        """Keep a copy of the scores: this run stays readable if the earlier one is deleted."""
        shutil.copy(self._inputScoresFile(), self._getExtraPath(SCORES_FILE))

    def createOutputStep(self, cutoff, minClasses, minParticles, writeRejected):
        define_selection_outputs(self, self.getInputClasses(), self._getExtraPath(SCORES_FILE), cutoff,
                                 minClasses, minParticles, writeRejected)

    # --------------------------- INFO functions ------------------------------
    def _summary(self):
        selection = read_selection(self)
        if selection is None:
            return ["Not run yet."]
        return ["Kept *%(classes_kept)d* of %(classes)d classes (%(particles_kept)d of "
                "%(particles)d particles) at cutoff %(cutoff)g, without re-scoring." % selection]

    def _methods(self):
        selection = read_selection(self)
        if selection is None:
            return []
        return ["The ClassRanker scores [ClassRanker] were re-thresholded at %(cutoff)g, keeping "
                "%(classes_kept)d of %(classes)d classes." % selection]

    def _validate(self):
        errors = []
        if not 0.0 <= self.cutoff.get() <= 1.0:
            errors.append("Score cutoff %s is outside 0-1: scores run from 0 (junk) to 1 (good)."
                          % self.cutoff.get())
        if self.minClasses.get() < 0 or self.minParticles.get() < 0:
            errors.append("The minimum numbers of classes and particles must be 0 or more.")
        prot = self.inputProtocol.get()
        if prot is not None and not os.path.exists(self._inputScoresFile()):
            errors.append("The run %s has no scores (%s): let it finish first."
                          % (prot.getRunName(), self._inputScoresFile()))
        return errors

    def _citations(self):
        return ["ClassRanker"]

    # --------------------------- UTILS functions -----------------------------
    def getInputClasses(self):
        return self.inputProtocol.get().getInputClasses()

    def getScoresFile(self):
        """The scores this run uses (its own copy once copied, else the earlier run's)."""
        own = self._getExtraPath(SCORES_FILE)
        return own if os.path.exists(own) else self._inputScoresFile()

    def _inputScoresFile(self):
        return self.inputProtocol.get().getScoresFile()
