"""Build a ClassRanker training set from 2D class selections made by hand in Scipion."""
import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.protocols import Prot2D

from classranker_plugin.labels import pairs_to_sources, validate_pairs
from classranker_plugin.objects import ClassRankerDataset

DATASET = "dataset"
FEATURE_SETS = ["classranker", "relion"]


class outputs(Enum):
    outputDataset = ClassRankerDataset


class ProtClassRankerMakeDataset(Prot2D):
    """Make a ClassRanker training set from your own selections: give one or more 2D
    classifications and, for each, the subset of classes you kept by hand (e.g. the output of a
    manual subset). Kept classes are "good" (1), the other classes "junk" (0). The output can be
    given to "train ClassRanker model" (Training data from: a training set), e.g. to train several
    models on the same data without computing the images and features again.
    """
    _label = "make ClassRanker training set"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputClasses", params.MultiPointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="All 2D classes",
                      help="The full results of one or more 2D classifications.")
        form.addParam("keptClasses", params.MultiPointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="Classes kept by hand",
                      help="For each input above, in the same order, the subset of its classes "
                           "you kept (e.g. a manual subset). Its classes are the good examples; "
                           "the other classes of the input are the junk examples.")
        form.addParam("featureSet", params.EnumParam, default=0, choices=FEATURE_SETS,
                      display=params.EnumParam.DISPLAY_HLIST, label="Feature set",
                      help="classranker: the features of ClassRanker models (the bundled model "
                           "uses them). relion: RELION's class-ranker features.")
        form.addParam("imageSize", params.IntParam, default=64, label="Image size (px)",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Size of the network images; a model to fine-tune must take this size "
                           "(the bundled model takes 64).")
        form.addParam("validFraction", params.FloatParam, default=0.2,
                      label="Validation fraction",
                      help="Share of the classes held out for validation (drawn per label).")
        form.addParam("seed", params.IntParam, default=0, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED, help="Seed of the validation split.")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        inputs = [p.getUniqueId() for p in list(self.inputClasses) + list(self.keptClasses)]
        self._insertFunctionStep(self.buildDatasetStep, inputs, self._featureSet(),
                                 self.imageSize.get(), self.validFraction.get(), self.seed.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def buildDatasetStep(self, inputs, featureSet, imageSize, validFraction, seed):
        from classranker_plugin.training.dataset import build_dataset

        sources = pairs_to_sources(self.inputClasses, self.keptClasses, log=self.info)
        shutil.rmtree(self._getDatasetPath(), ignore_errors=True)  # rebuilt from the start
        build_dataset(sources, self._getDatasetPath(), feature_set=featureSet,
                      image_size=imageSize, valid_fraction=validFraction, seed=seed,
                      command_line="Scipion protocol %s" % self.getRunName())

    def createOutputStep(self):
        dataset = ClassRankerDataset(path=self._getDatasetPath())
        self._defineOutputs(**{outputs.outputDataset.name: dataset})
        for pointer in list(self.inputClasses) + list(self.keptClasses):
            self._defineSourceRelation(pointer, dataset)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = validate_pairs(self.inputClasses, self.keptClasses)
        if not 0.0 <= self.validFraction.get() < 1.0:
            errors.append("The validation fraction must be in [0, 1).")
        if self.imageSize.get() < 16:
            errors.append("The image size must be at least 16 px.")
        return errors

    def _summary(self):
        counts = ClassRankerDataset(path=self._getDatasetPath()).getCounts()
        if not counts:
            return ["Not built yet."]
        return ["%d classes (%d good, %d junk) from %d job(s); %d for validation (%d good)." % (
            counts.get("classes", 0), counts.get("good", 0), counts.get("bad", 0),
            counts.get("jobs", 0), counts.get("valid", 0), counts.get("valid_good", 0))]

    def _citations(self):
        return ["ClassRanker"]

    # --------------------------- UTILS functions -----------------------------
    def _getDatasetPath(self):
        return os.path.abspath(self._getExtraPath(DATASET))

    def _featureSet(self):
        return FEATURE_SETS[self.featureSet.get()]
