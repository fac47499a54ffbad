"""Import a RELION Class2D job as Scipion 2D classes, without the RELION plugin."""
from enum import Enum

import mrcfile
import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pyworkflow.object import Float, Pointer
from pwem.objects import Particle, SetOfAverages, SetOfClasses2D, SetOfParticles
from pwem.protocols import ProtImport

from classranker_plugin.convert import DIAMETER_ATTR, STAT_ATTRS, particle_from_row


class outputs(Enum):
    outputClasses = SetOfClasses2D
    outputParticles = SetOfParticles
    outputAverages = SetOfAverages


class ProtClassRankerImportClasses2D(ProtImport):
    """Import the result of a RELION 2D classification (Class2D job) as Scipion 2D classes.

    Give the run_itNNN_model.star (or _data.star) of the iteration to import. The class averages
    are copied into the project; the particles keep their CTF and 2D alignment and point to the
    particle stacks of the RELION project (which must stay where they are). Each class carries
    RELION's statistics (class distribution, accuracies, resolution), which ClassRanker uses.
    Works for RELION 3.0 and 3.1+ files; the RELION plugin is not needed.
    """
    _label = "import 2D classes (RELION)"
    _devStatus = BETA
    _possibleOutputs = outputs

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("starFile", params.PathParam, important=True,
                      label="RELION Class2D STAR file",
                      help="The run_itNNN_model.star or run_itNNN_data.star of the iteration to "
                           "import (usually the last one, e.g. Class2D/job008/run_it025_model.star). "
                           "The model.star, data.star and class averages (.mrcs) of that iteration "
                           "must be in the same folder.")
        form.addParam("samplingRate", params.FloatParam, default=0.0,
                      label="Pixel size (Å/px)",
                      help="Leave 0 to use the pixel size written by RELION. Set it only if "
                           "the STAR file has none or it is wrong.")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, self.starFile.get(), self.samplingRate.get())

    # --------------------------- STEPS functions -----------------------------
    def importStep(self, starFile, samplingRate):
        from classranker_plugin.io import read_classes
        from classranker_plugin.io.relion import resolve_project_path

        classset = read_classes(starFile, pixel_size=samplingRate or None)
        if classset.particles is None:
            raise ValueError(f"{starFile}: no particles (data.star) found for this iteration; "
                             "keep run_itNNN_data.star next to the model.star")
        pixel = float(classset.pixel_size or self._opticsValue(classset, "rlnImagePixelSize", 1.0))
        stack = self._getExtraPath("class_averages.mrcs")
        with mrcfile.new(stack, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(classset.images, dtype=np.float32))
            mrc.voxel_size = pixel
        self._classRows = {int(row.class_number): (i + 1, row)
                           for i, row in enumerate(classset.table.itertuples())}
        self._stack, self._pixel = stack, pixel

        parts = self._createSetOfParticles()
        parts.setSamplingRate(pixel)
        parts.setHasCTF(True)
        parts.setAlignment2D()
        acq = parts.getAcquisition()
        acq.setVoltage(self._opticsValue(classset, "rlnVoltage", 300.0))
        acq.setSphericalAberration(self._opticsValue(classset, "rlnSphericalAberration", 2.7))
        acq.setAmplitudeContrast(self._opticsValue(classset, "rlnAmplitudeContrast", 0.1))
        resolved = {}
        data_star = classset.extra.get("data_star") or starFile

        def resolve(written):
            if written not in resolved:
                found = resolve_project_path(written, data_star)
                if found is None:
                    self.warning(f"particle stack {written} not found; the path is kept as written")
                resolved[written] = written if found is None else str(found)
            return resolved[written]

        for i, row in enumerate(classset.particles.to_dict("records")):
            particle = particle_from_row(row, pixel, resolve)
            particle.setObjId(i + 1)
            parts.append(particle)
        self._defineOutputs(**{outputs.outputParticles.name: parts})

        classes = self._createSetOfClasses2D(Pointer(self, extended=outputs.outputParticles.name))
        classes.classifyItems(updateClassCallback=self._updateClass)
        if classset.particle_diameter:
            setattr(classes, DIAMETER_ATTR, Float(classset.particle_diameter))
        self._defineOutputs(**{outputs.outputClasses.name: classes})
        self._defineSourceRelation(parts, classes)

        averages = self._createSetOfAverages()
        averages.setSamplingRate(pixel)
        for number, (index, _) in sorted(self._classRows.items()):
            average = Particle(location=(index, stack))
            average.setObjId(number)
            averages.append(average)
        self._defineOutputs(**{outputs.outputAverages.name: averages})

    # --------------------------- INFO functions ------------------------------
    def _summary(self):
        if not self.hasAttribute(outputs.outputClasses.name):
            return ["Not imported yet."]
        classes = getattr(self, outputs.outputClasses.name)
        parts = getattr(self, outputs.outputParticles.name)
        return [f"Imported {classes.getSize()} classes with {parts.getSize()} particles "
                f"from {self.starFile.get()}",
                f"Pixel size: {parts.getSamplingRate():.3f} Å/px"]

    def _methods(self):
        if not self.hasAttribute(outputs.outputClasses.name):
            return []
        return [f"The RELION 2D classification {self.starFile.get()} was imported into Scipion "
                f"({getattr(self, outputs.outputClasses.name).getSize()} classes)."]

    def _validate(self):
        from classranker_plugin.errors import InputError
        from classranker_plugin.io.relion import job_files

        errors = []
        path = self.starFile.get()
        if not path:
            return ["Give the run_itNNN_model.star (or _data.star) of a RELION Class2D job."]
        try:
            files = job_files(path)
            if files.data is None:
                errors.append(f"{path}: the run_itNNN_data.star of this iteration is missing "
                              "(it lists the particles). Fix: copy it next to the model.star.")
        except InputError as error:
            errors.append(str(error))
        if self.samplingRate.get() < 0:
            errors.append("The pixel size must be positive (or 0 to read it from the file).")
        return errors

    # --------------------------- UTILS functions -----------------------------
    @staticmethod
    def _opticsValue(classset, label, default):
        for table in (classset.optics, classset.particles):
            if table is not None and label in table and len(table):
                return float(table[label].iloc[0])
        return default

    def _updateClass(self, item):
        index, row = self._classRows[item.getObjId()]
        rep = item.getRepresentative()
        rep.setLocation(index, self._stack)
        rep.setSamplingRate(self._pixel)
        item.setAlignment2D()
        for column, attr in STAT_ATTRS.items():
            value = getattr(row, column)
            if not np.isnan(value):  # RELION's inf resolution and 999 accuracies are kept
                setattr(item, attr, Float(float(value)))
