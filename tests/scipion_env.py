"""A hermetic Scipion environment for tests, benchmarks and screenshots (and a test model).

pyworkflow reads its configuration from ``os.environ`` once, when it is first imported, so
:func:`configure` must run before ``import pyworkflow``. Everything (projects, config, test data)
goes under one folder; nothing is written in the home directory.
"""
import importlib.util
import os
import sys
from pathlib import Path

SCIPION_MISSING = None
if importlib.util.find_spec("pyworkflow") is None or importlib.util.find_spec("pwem") is None:
    SCIPION_MISSING = ("Scipion is not installed (pip install scipion-pyworkflow scipion-em "
                       "scipion-app, or pip install -e .[scipion])")


def configure(base) -> dict:
    """Point Scipion at ``base`` (created) and return the variables set. Idempotent."""
    if "pyworkflow" in sys.modules and os.environ.get("SCIPION_USER_DATA"):
        # pyworkflow is configured already (an earlier call, or a Scipion launcher): keep it
        return {k: v for k, v in os.environ.items() if k.startswith("SCIPION_")}
    base = Path(base).resolve()
    home = base / "scipion_home"
    variables = {
        "SCIPION_HOME": str(home),
        "SCIPION_USER_DATA": str(base / "user_data"),
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_PYTHON": sys.executable,
        "SCIPION_LOCAL_CONFIG": str(home / "config" / "scipion.conf"),
        "SCIPION_TESTS": str(base / "data" / "tests"),
        "SCIPION_TEST_NOSYNC": "1",
        "SCIPION_NOTIFY": "False",
    }
    for key in ("SCIPION_HOME", "SCIPION_USER_DATA", "SCIPION_TESTS"):
        Path(variables[key]).mkdir(parents=True, exist_ok=True)
    (home / "config").mkdir(parents=True, exist_ok=True)
    os.environ.update(variables)
    hosts = home / "config" / "hosts.conf"
    if not hosts.exists():
        import pyworkflow.protocol as pwprot  # first import: reads the variables just set
        pwprot.HostConfig.writeBasic(str(hosts))
    return variables


def write_untrained_checkpoint(path, classset, seed=0):
    """A real checkpoint with random weights, centred and scaled on ``classset`` so that its
    scores spread over (0, 1): deterministic, independent of the bundled model."""
    import numpy as np
    import torch

    from classranker_plugin.checkpoint import Ranker, save_checkpoint
    from classranker_plugin.features import FEATURE_SETS, compute_features
    from classranker_plugin.model import ClassRankerNet
    from classranker_plugin.preprocess import model_images

    names = list(FEATURE_SETS["classranker"][1])
    torch.manual_seed(seed)
    features = compute_features(classset, "classranker").values
    ranker = Ranker(network=ClassRankerNet(len(names)), feature_set="classranker",
                    feature_names=names, feature_mean=features.mean(0),
                    feature_std=features.std(0) + 1e-3)
    logits = ranker.logits(model_images(classset, size=ranker.image_size), features)
    with torch.no_grad():
        ranker.network.head[-1].bias -= float(np.median(logits))
    ranker.temperature = float(np.std(logits)) / 2 + 1e-6
    return str(save_checkpoint(path, ranker))


def launch(project, prot, expect="finished"):
    """Run ``prot`` in ``project`` and fail with its log when it does not end as ``expect``."""
    import pytest
    project.launchProtocol(prot, wait=True)
    if prot.getStatus() != expect:
        logs = "".join(open(p).read()[-3000:] for p in prot.getLogPaths()[:2] if os.path.exists(p))
        pytest.fail(f"{prot.getRunName()} is {prot.getStatus()}: {prot.getErrorMessage()}\n{logs}")
    return prot


def new(domain, project, name, **kwargs):
    """A new protocol of the class registered as ``name``."""
    return project.newProtocol(domain.getProtocols()[name], **kwargs)
