"""Scipion objects of ClassRanker."""
import os

import pyworkflow.object as pwobj
from pwem.objects import EMObject


class ClassRankerModel(EMObject):
    """A ClassRanker checkpoint file (.pt), e.g. the output of a training protocol."""

    def __init__(self, path=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)

    def getPath(self):
        return self._path.get()

    def setPath(self, path):
        self._path.set(path)

    def exists(self):
        return bool(self.getPath()) and os.path.isfile(self.getPath())

    def getFiles(self):
        return {self.getPath()} if self.getPath() else set()

    def __str__(self):
        return "ClassRankerModel(path=%s)" % self.getPath()
