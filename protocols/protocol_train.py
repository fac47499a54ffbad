"""Train (or fine-tune) a ClassRanker model on 2D class selections made by hand in Scipion."""
import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.protocols import Prot2D

from classranker_plugin.labels import pairs_to_sources, validate_pairs
from classranker_plugin.objects import ClassRankerModel
from classranker_plugin.plugin import Plugin

INIT_NONE, INIT_BUNDLED, INIT_PROTOCOL = 0, 1, 2
DATA_PAIRS, DATA_DATASET = 0, 1
DATASET, TRAINING, MODEL_FILE, STATE_FILE = "dataset", "training", "model.pt", "last.pt"


class outputs(Enum):
    outputModel = ClassRankerModel


class ProtClassRankerTrain(Prot2D):
    """Train a ClassRanker model on your own selections: give one or more 2D classifications and,
    for each, the subset of classes you kept by hand (e.g. the output of a manual subset). Kept
    classes are "good" (1), the other classes "junk" (0). Or give a training set made by
    "make ClassRanker training set". Start from scratch or fine-tune the
    bundled model (or one trained earlier in this project). The output model can be used by
    "auto-select 2D classes" (Model: trained in this project). "Continue" resumes the training.
    """
    _label = "train ClassRanker model"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("trainingData", params.EnumParam, default=DATA_PAIRS,
                      choices=["manual selections", "a training set"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Training data from",
                      help="manual selections: 2D classes and the classes you kept by hand (the "
                           "training set is built here). a training set: the output of \"make "
                           "ClassRanker training set\", used as it is.")
        form.addParam("inputClasses", params.MultiPointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="All 2D classes",
                      allowsNull=True,
                      condition="trainingData == %d" % DATA_PAIRS,
                      help="The full results of one or more 2D classifications.")
        form.addParam("keptClasses", params.MultiPointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="Classes kept by hand",
                      allowsNull=True,
                      condition="trainingData == %d" % DATA_PAIRS,
                      help="For each input above, in the same order, the subset of its classes "
                           "you kept (e.g. a manual subset). Its classes are the good examples; "
                           "the other classes of the input are the junk examples.")
        form.addParam("inputDataset", params.PointerParam, pointerClass="ClassRankerDataset",
                      allowsNull=True, important=True, label="Training set",
                      condition="trainingData == %d" % DATA_DATASET,
                      help="The output of \"make ClassRanker training set\". A model to "
                           "fine-tune must take its feature set and image size.")
        form.addParam("initModel", params.EnumParam, default=INIT_BUNDLED,
                      choices=["none (from scratch)", "bundled model", "trained in this project"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Start from",
                      help="Fine-tuning the bundled model needs far fewer selections than "
                           "training from scratch.")
        form.addParam("inputModel", params.PointerParam, pointerClass="ClassRankerModel",
                      allowsNull=True, condition="initModel == %d" % INIT_PROTOCOL,
                      label="Model to fine-tune", help="The output of an earlier training run.")
        form.addParam("freezeCnn", params.BooleanParam, default=False,
                      condition="initModel != %d" % INIT_NONE, label="Freeze the image network?",
                      help="Fine-tune only the last layers: safer with few selections.")
        form.addSection(label="Training")
        form.addParam("epochs", params.IntParam, default=30, label="Epochs")
        form.addParam("batchSize", params.IntParam, default=64, label="Batch size")
        form.addParam("learningRate", params.FloatParam, default=1e-3, label="Learning rate",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addParam("seed", params.IntParam, default=0, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True, label="Use GPU?")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0", label="GPU ID",
                       help="The GPU to use (only the first one is used).")
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        if self._fromDataset():  # nothing to build: the training reads the given training set
            self._insertFunctionStep(self.useDatasetStep, self._getDatasetPath())
        else:
            inputs = [p.getUniqueId() for p in list(self.inputClasses) + list(self.keptClasses)]
            self._insertFunctionStep(self.buildDatasetStep, inputs, self._initPath())
        self._insertFunctionStep(self.trainStep, self.epochs.get(), self.batchSize.get(),
                                 self.learningRate.get(), self._initPath(), self.freezeCnn.get(),
                                 self.seed.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def buildDatasetStep(self, inputs, initPath):
        from classranker_plugin.checkpoint import read_checkpoint
        from classranker_plugin.training.dataset import build_dataset

        sources = pairs_to_sources(self.inputClasses, self.keptClasses, log=self.info)
        featureSet, imageSize = "classranker", 64
        if initPath:  # the dataset must give the features and image size the model takes
            payload = read_checkpoint(initPath)
            featureSet, imageSize = payload["feature_set"], int(payload["arch"]["image_size"])
        shutil.rmtree(self._getExtraPath(TRAINING), ignore_errors=True)  # new data: no resuming
        build_dataset(sources, self._getExtraPath(DATASET), feature_set=featureSet,
                      image_size=imageSize, seed=self.seed.get())

    def useDatasetStep(self, datasetPath):
        self.info("Training set: %s" % datasetPath)
        shutil.rmtree(self._getExtraPath(TRAINING), ignore_errors=True)  # new data: no resuming

    def trainStep(self, epochs, batchSize, lr, initPath, freezeCnn, seed):
        import torch

        from classranker_plugin.errors import InputError
        from classranker_plugin.training.trainer import train

        torch.set_num_threads(max(1, self.numberOfThreads.get()))
        out = self._getExtraPath(TRAINING)
        kwargs = dict(epochs=epochs, batch_size=batchSize, lr=lr, device=self._device(),
                      init=initPath or None, freeze_cnn=freezeCnn, seed=seed, progress=True)
        dataset = self._getDatasetPath()
        resume = os.path.exists(os.path.join(out, STATE_FILE))
        try:
            summary = train(dataset, out, resume=resume, **kwargs)
        except InputError as error:
            if not resume:
                raise
            self.warning("Cannot resume (%s): training from the start." % error)
            summary = train(dataset, out, resume=False, **kwargs)
        self.info("Training finished: %s" % summary)

    def createOutputStep(self):
        model = ClassRankerModel(path=self._getModelPath())
        self._defineOutputs(**{outputs.outputModel.name: model})
        sources = [self.inputDataset] if self._fromDataset() else \
            list(self.inputClasses) + list(self.keptClasses)
        for pointer in sources:
            self._defineSourceRelation(pointer, model)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        if self._fromDataset():
            errors = self._validateDataset()
        else:
            errors = validate_pairs(self.inputClasses, self.keptClasses)
        if self.initModel.get() == INIT_PROTOCOL and not self._initPath():
            errors.append("Choose the model to fine-tune (output of a ClassRanker training run).")
        if self.epochs.get() < 1 or self.batchSize.get() < 1 or self.learningRate.get() <= 0:
            errors.append("Epochs, batch size and learning rate must be positive.")
        return errors

    def _summary(self):
        path = self._getModelPath()
        if not os.path.exists(path):
            return ["Not trained yet."]
        from classranker_plugin.checkpoint import read_checkpoint

        metrics = read_checkpoint(path).get("metrics") or {}
        if "val_auc" not in metrics:
            return ["Model: %s (no validation metrics)." % path]
        return ["Best epoch %s: validation AUC *%.3f*; at cutoff %g precision %.2f, recall %.2f "
                "(%d validation classes, %d good)." % (
                    metrics.get("epoch"), metrics["val_auc"], metrics.get("cutoff", 0.5),
                    metrics.get("precision_at_cutoff", float("nan")),
                    metrics.get("recall_at_cutoff", float("nan")),
                    metrics.get("n_valid", 0), metrics.get("n_valid_good", 0))]

    def _citations(self):
        return ["ClassRanker"]

    # --------------------------- UTILS functions -----------------------------
    def _getModelPath(self):
        return os.path.abspath(self._getExtraPath(TRAINING, MODEL_FILE))

    def _fromDataset(self):
        return self.trainingData.get() == DATA_DATASET

    def _getDatasetPath(self):
        if self._fromDataset():
            dataset = self.inputDataset.get()
            return dataset.getPath() if dataset is not None and dataset.getPath() else ""
        return self._getExtraPath(DATASET)

    def _validateDataset(self):
        """The given training set exists (when built already) and fits the model to fine-tune."""
        dataset = self.inputDataset.get()
        if dataset is None:
            return ["Choose the training set (output of \"make ClassRanker training set\")."]
        info = dataset.getInfo()
        if not info:  # not built yet (e.g. scheduled after its protocol): checked when training
            return []
        counts = info.get("counts") or {}
        if not counts.get("good") or not counts.get("bad"):
            return ["The training set needs good and junk classes."]
        initPath = self._initPath()
        if initPath and os.path.exists(initPath):
            from classranker_plugin.checkpoint import read_checkpoint

            payload = read_checkpoint(initPath)
            want = (payload.get("feature_set"), int(payload["arch"]["image_size"]))
            have = (info.get("feature_set"), int(info.get("image_size", 0)))
            if want != have:
                return ["The model to fine-tune takes %s features and %d px images; the training "
                        "set has %s features and %d px images: rebuild it so, or train from "
                        "scratch." % (want + have)]
        return []

    def _initPath(self):
        source = self.initModel.get()
        if source == INIT_BUNDLED:
            return Plugin.getModelPath()
        if source == INIT_PROTOCOL:
            model = self.inputModel.get()
            return model.getPath() if model is not None and model.getPath() else ""
        return ""

    def _device(self):
        return Plugin.torchDevice(self, "training")
