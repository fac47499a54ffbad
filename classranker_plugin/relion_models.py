"""RELION's own class ranker models, run by our code.

* RELION 5 checkpoints are a dict with ``model_state_dict``, hyper-parameters (P_DROPOUT, CNN_W,
  FEAT_EXT_W, FEAT_EXT_W2, USE_IMAGES, USE_FEATURES, ...) and ``model_definition``, the Python
  source that RELION itself exec()s. We read the dict weights-only and pour the weights into our
  own implementation of that architecture (model.RelionRankerNet); the stored source is never run.
* RELION 4.0 shipped a TorchScript file. TorchScript is a program, not just weights, so it loads
  only when the user passes ``--trust-torchscript``.

RELION's models regress the score directly (MSE on scores in [0, 1]) and take RELION's 24
normalised features and RELION's 64 x 64 image (features.relion, preprocess.relion_model_images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import Ranker
from .errors import InputError
from .model import RelionRankerNet

RELION_FEATURE_SET = "relion"
N_RELION_FEATURES = 24


def _relion_feature_names():
    from .features import FEATURE_SETS
    return list(FEATURE_SETS[RELION_FEATURE_SET][1])


def _ordered_parameters(state_dict: dict, prefix: str) -> list:
    """(weight, bias) pairs of the layers under ``prefix``, in layer order (keys like 'prefix.3.weight')."""
    layers = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix + "."):
            continue
        index, kind = key[len(prefix) + 1:].split(".", 1)
        layers.setdefault(int(index), {})[kind] = value
    return [(layers[i]["weight"], layers[i].get("bias")) for i in sorted(layers)]


def _pour(layers_ours: list, weights: list, what: str, path):
    if len(layers_ours) != len(weights):
        raise InputError(f"RELION checkpoint has {len(weights)} {what} layers, the RELION architecture "
                         f"has {len(layers_ours)}", path, fix="this RELION model variant is not supported")
    for layer, (weight, bias) in zip(layers_ours, weights):
        if tuple(layer.weight.shape) != tuple(weight.shape):
            raise InputError(f"RELION checkpoint {what} weight of shape {tuple(weight.shape)} does not fit "
                             f"{tuple(layer.weight.shape)}", path,
                             fix="check the CNN_W / FEAT_EXT_W hyper-parameters stored in the checkpoint")
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)


def ranker_from_relion_checkpoint(payload: dict, path) -> Ranker:
    """A Ranker holding RELION 5 weights (payload already loaded with weights_only=True)."""
    state = payload["model_state_dict"]
    if not payload.get("USE_IMAGES", True) or not payload.get("USE_FEATURES", True):
        raise InputError("RELION models trained on images only or on features only are not supported",
                         path, fix="use a model trained with both images and features (RELION's default)")
    network = RelionRankerNet(cnn_width=int(payload.get("CNN_W", 16)),
                              feature_width=int(payload.get("FEAT_EXT_W", 48)),
                              feature_width2=int(payload.get("FEAT_EXT_W2", 48)))
    ours_conv = [m for m in network.cnn if isinstance(m, nn.Conv2d)]
    ours_head = [m for m in network.head if isinstance(m, nn.Linear)]
    _pour(ours_conv, _ordered_parameters(state, "cnn_layers"), "convolution", path)
    _pour([network.image_fc], _ordered_parameters(state, "feature_extractor"), "image embedding", path)
    _pour(ours_head, _ordered_parameters(state, "classifier_images_and_features"), "classifier", path)
    return Ranker(network=network, feature_set=RELION_FEATURE_SET, feature_names=_relion_feature_names(),
                  feature_mean=np.zeros(N_RELION_FEATURES, np.float32),
                  feature_std=np.ones(N_RELION_FEATURES, np.float32), image_kind="relion", output="score",
                  provenance={"source": "RELION 5 class ranker checkpoint", "file": str(path)},
                  path=str(path))


class _TorchScriptNet(nn.Module):
    """Adapter giving a RELION 4 TorchScript model our network interface."""

    def __init__(self, scripted):
        super().__init__()
        self.scripted = scripted
        self.config = {"arch": "relion-torchscript", "image_size": 64, "n_features": N_RELION_FEATURES}

    def forward(self, images, features):
        return self.scripted(images, features).reshape(-1)


def load_relion_torchscript(path, trust: bool = False, device="cpu") -> Ranker:
    """Load a RELION 4.0 TorchScript class ranker; refuses unless ``trust`` (it runs code from the file)."""
    path = Path(path)
    if not trust:
        raise InputError("this is a TorchScript model (RELION 4.0 format): loading it runs code stored in the file",
                         path, fix="pass --trust-torchscript only for a file from a source you trust "
                                   "(e.g. downloaded from RELION's authors)")
    try:
        scripted = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"cannot load TorchScript model ({str(error).splitlines()[0]})", path,
                         fix="re-copy the file; it is corrupt or not a TorchScript model") from None
    return Ranker(network=_TorchScriptNet(scripted), feature_set=RELION_FEATURE_SET,
                  feature_names=_relion_feature_names(), feature_mean=np.zeros(N_RELION_FEATURES, np.float32),
                  feature_std=np.ones(N_RELION_FEATURES, np.float32), image_kind="relion", output="score",
                  provenance={"source": "RELION 4.0 TorchScript model", "file": str(path)}, path=str(path))


def is_torchscript(path) -> bool:
    """TorchScript archives hold a 'code/' folder (plain checkpoints do not)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
