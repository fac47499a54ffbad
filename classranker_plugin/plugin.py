"""The Scipion plugin class: environment variables and references of ClassRanker.

Scipion finds the plugin through the ``pyworkflow.plugin`` entry point (setup.py); the package
``__init__`` exposes :class:`Plugin` when pyworkflow is loaded. ClassRanker needs no external
binaries: scoring runs in Scipion's own Python (torch, CPU or CUDA).
"""
import os

import pwem
import pyworkflow.utils as pwutils

# Not imported from .checkpoint: that pulls in torch, and Scipion imports every plugin at start-up.
#: checkpoint used when a protocol asks for the default model (same variable as checkpoint.py)
CLASSRANKER_MODEL = "CLASSRANKER_MODEL"
BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "starter.pt")
#: torch device used when the protocol's GPU switch is off or not decided: auto, cpu, cuda, cuda:N
CLASSRANKER_DEVICE = "CLASSRANKER_DEVICE"


class Plugin(pwem.Plugin):
    _url = "https://github.com/classranker/scipion-em-classranker"
    _supportedVersions = []

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(CLASSRANKER_MODEL, BUNDLED_MODEL,
                       description="Checkpoint (.pt) used as the default ClassRanker model.")
        cls._defineVar(CLASSRANKER_DEVICE, "auto",
                       description="Torch device for ClassRanker: auto, cpu, cuda or cuda:N.")

    @classmethod
    def getEnviron(cls):
        """ClassRanker runs inside Scipion's Python: only its own variables are passed on."""
        environ = pwutils.Environ(os.environ)
        environ.update({CLASSRANKER_MODEL: cls.getModelPath(),
                        CLASSRANKER_DEVICE: cls.getDevice()}, position=pwutils.Environ.REPLACE)
        return environ

    @classmethod
    def getModelPath(cls):
        """The default checkpoint: $CLASSRANKER_MODEL, else the bundled starter model."""
        return cls.getVar(CLASSRANKER_MODEL) or BUNDLED_MODEL

    @classmethod
    def getDevice(cls):
        return cls.getVar(CLASSRANKER_DEVICE) or "auto"

    @classmethod
    def torchDevice(cls, protocol, task="scoring"):
        """The torch device for a protocol: $CLASSRANKER_DEVICE when set, else its GPU switch/list."""
        device = cls.getDevice()
        if device != "auto":  # set by the site: it wins
            return device
        if protocol.useGpu.get():
            import torch

            if torch.cuda.is_available():
                return "cuda:%d" % (protocol.getGpuList() or [0])[0]
            protocol.warning("No CUDA GPU visible to torch: %s on the CPU." % task)
        return "cpu"

    # The class lives in classranker_plugin.plugin, not in the package __init__ as pyworkflow assumes
    # (it reads __module__): name and folder are those of the package.
    def getName(self):
        return __package__

    def getPath(self):
        return os.path.dirname(os.path.abspath(__file__))

    @classmethod
    def defineBinaries(cls, env):
        """Nothing to install: the Python package brings torch and the bundled model."""
