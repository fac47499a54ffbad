"""Score 2D class averages with ClassRanker and keep the good ones."""
import json
import os
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfClasses2D, SetOfParticles
from pwem.protocols import Prot2D

from classranker_plugin.convert import SCORES_FILE, classes_to_classset, write_scores
from classranker_plugin.outputs import (KEPT, REJECTED, define_selection_outputs, read_extra_json,
                                        read_selection, remove_outputs)
from classranker_plugin.plugin import Plugin

MODEL_BUNDLED, MODEL_FILE, MODEL_PROTOCOL = 0, 1, 2
SCORING_FILE = "scoring.json"


class outputs(Enum):
    outputClasses = SetOfClasses2D
    outputParticles = SetOfParticles
    outputClassesRejected = SetOfClasses2D
    outputParticlesRejected = SetOfParticles


class ProtClassRankerAutoSelect2D(Prot2D):
    """Score every 2D class average from 0 (junk) to 1 (good) and keep the classes that reach the
    cutoff, with their particles (CTF and alignment kept).

    The score comes from a neural network that looks at the class average and, when known, at the
    class statistics of the 2D classification (class size, accuracy of angles and shifts,
    resolution), as RELION's class ranker does. Works on classes from RELION, cryoSPARC or Xmipp;
    without RELION statistics only the images and class sizes are used.
    Each class gets its score (column _classranker_score) and a one-line reason.
    To try another cutoff later without re-scoring, use "change ClassRanker cutoff".
    """
    _label = "auto-select 2D classes"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputClasses", params.PointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="2D classes",
                      help="The result of a 2D classification (RELION, cryoSPARC, Xmipp...). "
                           "The classes must have their average images.")
        form.addParam("particleDiameter", params.FloatParam, default=0.0,
                      label="Mask diameter (Å)",
                      help="The circular mask diameter used in the 2D classification. Leave 0 to "
                           "take it from the input when it is known (RELION imports); if it is "
                           "not known, ClassRanker scores without it.")
        form.addParam("modelSource", params.EnumParam, default=MODEL_BUNDLED,
                      choices=["bundled model", "checkpoint file", "trained in this project"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Model",
                      help="Which trained network scores the classes. The bundled model works "
                           "for most single-particle data; use a checkpoint (.pt) trained on "
                           "your own selections (classranker train) for unusual samples.")
        form.addParam("checkpointFile", params.PathParam, condition="modelSource == %d" % MODEL_FILE,
                      label="Checkpoint file (.pt)",
                      help="A model file written by 'classranker train' or 'classranker finetune'.")
        form.addParam("inputModel", params.PointerParam, pointerClass="ClassRankerModel",
                      allowsNull=True, condition="modelSource == %d" % MODEL_PROTOCOL,
                      label="Trained model", help="The model output of a ClassRanker training run.")
        form.addParam("cutoff", params.FloatParam, default=0.5, label="Score cutoff (0-1)",
                      help="Classes scoring at least this are kept. 0.5 is balanced; raise it "
                           "(0.6-0.7) for a cleaner but smaller set, lower it (0.3-0.4) to lose "
                           "fewer rare views. You can change it later without re-scoring.")
        form.addParam("minClasses", params.IntParam, default=0, label="Keep at least N classes",
                      help="If fewer classes reach the cutoff, the best-scoring ones are added "
                           "until there are this many. 0 = no minimum.")
        form.addParam("minParticles", params.IntParam, default=0,
                      label="Keep at least N particles",
                      help="If the kept classes hold fewer particles, the next best classes are "
                           "added until they do. 0 = no minimum.")
        form.addParam("writeRejected", params.BooleanParam, default=False,
                      label="Also output the rejected classes?",
                      help="Adds outputClassesRejected and outputParticlesRejected, e.g. to "
                           "inspect what was thrown away or to re-classify it.")
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU?", help="Scoring is fast on a CPU too (seconds for "
                                              "hundreds of classes); a GPU helps for thousands.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0", label="GPU ID",
                       help="The GPU to use (only the first one is used).")
        form.addParam("batchSize", params.IntParam, default=256, expertLevel=params.LEVEL_ADVANCED,
                      label="Batch size", help="Classes scored at once; lower it if the GPU runs "
                                               "out of memory.")
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        # The arguments make "continue" redo only what changed: the scores when the input or the
        # model changed, the outputs when only the selection parameters changed.
        self._insertFunctionStep(self.scoreStep, self.inputClasses.getUniqueId(), self._modelPath(),
                                 self.particleDiameter.get())
        self._insertFunctionStep(self.createOutputStep, self.cutoff.get(), self.minClasses.get(),
                                 self.minParticles.get(), self.writeRejected.get())

    # --------------------------- STEPS functions -----------------------------
    def scoreStep(self, inputId, modelPath, diameter):
        import torch

        from classranker_plugin.checkpoint import load_model
        from classranker_plugin.scoring import score_classes

        remove_outputs(self, KEPT + REJECTED)  # a failed re-scoring must leave no stale outputs
        scoresFile = self._getExtraPath(SCORES_FILE)
        if os.path.exists(scoresFile):
            os.remove(scoresFile)
        torch.set_num_threads(max(1, self.numberOfThreads.get()))
        classset, ids = classes_to_classset(self.inputClasses.get(), diameter=diameter)
        device = self._device()
        ranker = self._loadModel(load_model, modelPath, device)
        result = score_classes(classset, ranker, device=device, batch_size=self.batchSize.get())
        write_scores(scoresFile, ids, result, classset.stat("particle_count"))
        info = {"model": result.model or modelPath, "device": device,
                "particle_diameter": classset.particle_diameter,
                "inputs_used": result.inputs_used, "timings_s": result.timings}
        with open(self._getExtraPath(SCORING_FILE), "w") as handle:
            json.dump(info, handle, indent=2, default=str)
        self.info("Scored %d classes with %s on %s; inputs used: %s"
                  % (len(ids), info["model"], device, ", ".join(result.inputs_used)))

    def createOutputStep(self, cutoff, minClasses, minParticles, writeRejected):
        define_selection_outputs(self, self.inputClasses.get(), self._getExtraPath(SCORES_FILE), cutoff,
                                 minClasses, minParticles, writeRejected)

    # --------------------------- INFO functions ------------------------------
    def _summary(self):
        selection = read_selection(self)
        if selection is None:
            return ["Not scored yet."]
        lines = ["Kept *%(classes_kept)d* of %(classes)d classes (%(particles_kept)d of "
                 "%(particles)d particles) at cutoff %(cutoff)g." % selection]
        if not selection["classes_kept"]:
            lines.append("No class reached the cutoff: lower it with 'change ClassRanker cutoff'.")
        scoring = self._readScoring()
        if scoring:
            lines.append("Model: %s" % os.path.basename(str(scoring["model"])))
            lines.append("Inputs used: %s" % ", ".join(scoring["inputs_used"]))
            diameter = scoring.get("particle_diameter")
            lines.append("Mask diameter: %s" % ("%g Å" % diameter if diameter else "unknown"))
        return lines

    def _methods(self):
        selection = read_selection(self)
        if selection is None:
            return []
        return ["The 2D class averages were scored from 0 (junk) to 1 (good) with ClassRanker "
                "[ClassRanker], a convolutional network on the class images and statistics "
                "following RELION's class ranker [Kimanius2021]; %(classes_kept)d of %(classes)d "
                "classes scoring at least %(cutoff)g were kept." % selection]

    def _validate(self):
        errors = []
        classes = self.inputClasses.get()
        if classes is not None and not classes.hasRepresentatives():
            errors.append("The input classes have no average images (representatives): "
                          "ClassRanker scores the averages. Use the output of a 2D classification.")
        if not 0.0 <= self.cutoff.get() <= 1.0:
            errors.append("Score cutoff %s is outside 0-1: scores run from 0 (junk) to 1 (good); "
                          "give e.g. 0.5." % self.cutoff.get())
        if self.minClasses.get() < 0 or self.minParticles.get() < 0:
            errors.append("The minimum numbers of classes and particles must be 0 or more.")
        if self.particleDiameter.get() < 0:
            errors.append("The mask diameter must be positive (or 0 to read it from the input).")
        if self.batchSize.get() < 1:
            errors.append("The batch size must be at least 1.")
        path = self._modelPath()
        if self.modelSource.get() == MODEL_PROTOCOL and not path:
            errors.append("Choose the trained model (output of a ClassRanker training run).")
        elif path and not os.path.isfile(path):
            errors.append("Model checkpoint not found: %s. Fix: give the path of a .pt file "
                          "written by 'classranker train', or choose the bundled model." % path)
        elif not path and not os.path.isfile(Plugin.getModelPath()):
            errors.append("The bundled model %s is missing. Fix: reinstall scipion-em-classranker "
                          "or set CLASSRANKER_MODEL to a checkpoint." % Plugin.getModelPath())
        return errors

    def _citations(self):
        return ["Kimanius2021", "ClassRanker"]

    # --------------------------- UTILS functions -----------------------------
    def getInputClasses(self):
        return self.inputClasses.get()

    def getScoresFile(self):
        return self._getExtraPath(SCORES_FILE)

    def _modelPath(self):
        """The checkpoint to load; '' means the default (CLASSRANKER_MODEL or the bundled one)."""
        source = self.modelSource.get()
        if source == MODEL_FILE:
            return os.path.abspath(self.checkpointFile.get() or "") if self.checkpointFile.get() else ""
        if source == MODEL_PROTOCOL:
            model = self.inputModel.get()
            return model.getPath() if model is not None and model.getPath() else ""
        return ""

    @staticmethod
    def _loadModel(load_model, modelPath, device):
        """load_model, with any failure reported as an error naming the checkpoint file."""
        from classranker_plugin.errors import InputError

        try:
            return load_model(modelPath or None, device=device)
        except InputError:
            raise
        except Exception as error:
            raise InputError("cannot load this model checkpoint (%s: %s)" % (type(error).__name__, error),
                             modelPath or Plugin.getModelPath(),
                             fix="give a .pt file written by 'classranker train'") from error

    def _device(self):
        return Plugin.torchDevice(self, "scoring")

    def _readScoring(self):
        return read_extra_json(self, SCORING_FILE)
