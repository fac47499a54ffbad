"""Rebalance the particles of 2D classes by view: fewer particles from over-represented views."""
import os
from enum import Enum

import numpy as np
import pandas as pd

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pyworkflow.object import Integer
from pwem.objects import SetOfClasses2D, SetOfParticles
from pwem.protocols import Prot2D

SUPERCLASS_ATTR = "_classranker_superclass"
PARTICLES_FILE, CLASSES_FILE = "rebalance_particles.csv", "superclasses.csv"


class outputs(Enum):
    outputParticles = SetOfParticles
    outputParticlesExcluded = SetOfParticles
    outputClasses = SetOfClasses2D


class ProtClassRankerRebalance2D(Prot2D):
    """Group the 2D classes into superclasses of similar views (rotation-invariant affinity of
    the class averages) and thin out the particles of the most populated superclasses, so that
    a preferred orientation dominates less. Factor 0 keeps every particle; factor 1 keeps in
    every superclass no more than the smallest superclass holds. Alignment and CTF are kept.
    Each output class carries its superclass (column _classranker_superclass).
    """
    _label = "rebalance 2D classes by view"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputClasses", params.PointerParam, pointerClass="SetOfClasses2D",
                      important=True, label="2D classes",
                      help="Good 2D classes (e.g. the output of auto-select) with their particles.")
        form.addParam("numberOfSuperclasses", params.IntParam, default=10,
                      label="Number of superclasses (views)",
                      help="How many groups of similar views the classes are put into.")
        form.addParam("factor", params.FloatParam, default=0.5, label="Rebalance factor (0-1)",
                      help="0: keep every particle; 1: cut every superclass down to the size of "
                           "the smallest; in between: a cap between the two.")
        form.addParam("maxSize", params.IntParam, default=0, label="Max particles per superclass",
                      help="An absolute cap on every superclass; 0 = none.")
        form.addParam("seed", params.IntParam, default=0, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.rebalanceStep, self.inputClasses.getUniqueId(),
                                 self.numberOfSuperclasses.get(), self.factor.get(),
                                 self.maxSize.get(), self.seed.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def rebalanceStep(self, inputId, nSuper, factor, maxSize, seed):
        from classranker_plugin.classset import ClassSet
        from classranker_plugin.cli.rebalance import plot_affinity, plot_counts
        from classranker_plugin.convert import classes_to_classset
        from classranker_plugin.rebalance import rebalance_classes

        inClasses = self.inputClasses.get()
        classset, ids = classes_to_classset(inClasses)
        pids, cids = [], []
        for cid in ids:  # no nested iteration: it would share the sqlite cursor
            # one class's ids at a time as Python ints, kept as numpy (8 bytes per particle)
            members = np.sort(np.asarray(inClasses[cid].getUniqueValues("id", where="enabled=1"),
                                         dtype=np.int64))
            pids.append(members)
            cids.append(np.full(len(members), cid, dtype=np.int64))
        empty = np.zeros(0, dtype=np.int64)
        particles = pd.DataFrame({"particle_id": np.concatenate(pids) if pids else empty,
                                  "rlnClassNumber": np.concatenate(cids) if cids else empty})
        classset = ClassSet(images=classset.images, table=classset.table,
                            pixel_size=classset.pixel_size, particles=particles,
                            source=classset.source)
        result = rebalance_classes(classset, nSuper, factor, max_size=maxSize or None, seed=seed)
        particles["keep"] = result.keep
        particles.to_csv(self._getExtraPath(PARTICLES_FILE), index=False)
        result.table.to_csv(self._getExtraPath(CLASSES_FILE), index=False)
        plot_affinity(self._getExtraPath("affinity.png"), result.affinity, result.superclass,
                      classset.class_numbers)
        plot_counts(self._getExtraPath("counts.png"), result.superclass_counts(), result.cap)
        self.info("Kept %d of %d particles (cap per superclass: %s)"
                  % (result.keep.sum(), len(result.keep), result.cap))

    def createOutputStep(self):
        from classranker_plugin.subset import copy_particles, new_particle_set, subset_classes

        inClasses = self.inputClasses.get()
        table = pd.read_csv(self._getExtraPath(PARTICLES_FILE)).rename(columns={"rlnClassNumber": "class_id"})
        keep = table["keep"].astype(bool)
        superOf = self._readSuperclasses()
        kept = new_particle_set(self, inClasses)
        excluded = new_particle_set(self, inClasses, "_excluded")
        copy_particles(inClasses, kept, table[keep])
        copy_particles(inClasses, excluded, table[~keep])
        classes = self._createSetOfClasses2D(inClasses.getImagesPointer())
        classes.copyInfo(inClasses)

        def update(cls):
            setattr(cls, SUPERCLASS_ATTR, Integer(superOf[cls.getObjId()]))

        subset_classes(inClasses, classes, sorted(superOf), update)
        # literal names: members of an Enum with equal values are aliases (same .name)
        for name, output in (("outputParticles", kept), ("outputParticlesExcluded", excluded),
                             ("outputClasses", classes)):
            if output.getSize() == 0:  # factor 0: nothing excluded, no empty output
                continue
            output.write()
            self._defineOutputs(**{name: output})
            self._defineSourceRelation(self.inputClasses, output)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        classes = self.inputClasses.get()
        n = self.numberOfSuperclasses.get() or 0
        if n < 1:
            errors.append("The number of superclasses must be at least 1.")
        elif classes is not None and n > classes.getSize():
            errors.append("%d superclasses for %d classes: give at most as many superclasses as "
                          "classes." % (n, classes.getSize()))
        if not 0.0 <= (self.factor.get() or 0.0) <= 1.0:
            errors.append("Rebalance factor %s is outside 0-1 (0 keeps every particle)."
                          % self.factor.get())
        if (self.maxSize.get() or 0) < 0:
            errors.append("The max superclass size must be 0 (none) or positive.")
        if classes is not None and not classes.hasRepresentatives():
            errors.append("The input classes have no average images (representatives).")
        return errors

    def _summary(self):
        path = self._getExtraPath(CLASSES_FILE)
        if not os.path.exists(path):
            return ["Not run yet."]
        table = pd.read_csv(path)
        return ["Kept *%d* of %d particles in %d superclasses (factor %g)."
                % (table["particles_after"].sum(), table["particles_before"].sum(),
                   table["superclass"].nunique(), self.factor.get())]

    def _citations(self):
        return ["ClassRanker"]

    # --------------------------- UTILS functions -----------------------------
    def _readSuperclasses(self):
        table = pd.read_csv(self._getExtraPath(CLASSES_FILE))
        return {int(c): int(s) for c, s in zip(table["class_number"], table["superclass"])}
