"""Scipion objects of ClassRanker."""
import os

import pyworkflow.object as pwobj
from pwem.objects import EMObject


class _PathObject(EMObject):
    """An EMObject that stands for one file or folder on disk."""

    def __init__(self, path=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)

    def getPath(self):
        return self._path.get()

    def setPath(self, path):
        self._path.set(path)


class ClassRankerModel(_PathObject):
    """A ClassRanker checkpoint file (.pt), e.g. the output of a training protocol."""

    def exists(self):
        return bool(self.getPath()) and os.path.isfile(self.getPath())

    def getFiles(self):
        return {self.getPath()} if self.getPath() else set()

    def __str__(self):
        return "ClassRankerModel(path=%s)" % self.getPath()


class ClassRankerDataset(_PathObject):
    """A ClassRanker training dataset folder (dataset.json and .npy arrays), e.g. the output of
    "make ClassRanker training set"; the training protocol can read it directly."""

    INFO_FILE = "dataset.json"

    def getInfoPath(self):
        return os.path.join(self.getPath(), self.INFO_FILE) if self.getPath() else ""

    def exists(self):
        return bool(self.getPath()) and os.path.isfile(self.getInfoPath())

    def getInfo(self):
        """The content of dataset.json ({} when missing or unreadable)."""
        import json

        try:
            with open(self.getInfoPath()) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def getCounts(self):
        """{"classes", "good", "bad", "train", "valid", ...} from dataset.json ({} when missing)."""
        return self.getInfo().get("counts") or {}

    def getFiles(self):
        return {self.getPath()} if self.getPath() else set()

    def __str__(self):
        counts = self.getCounts()
        if not counts:
            return "ClassRankerDataset(path=%s)" % self.getPath()
        return "ClassRankerDataset(%d classes, %d good, %d for validation)" % (
            counts.get("classes", 0), counts.get("good", 0), counts.get("valid", 0))
