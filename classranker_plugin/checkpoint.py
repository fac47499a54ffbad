"""Single-file model checkpoints, loaded as weights only, and the ``Ranker`` that scores with them.

A checkpoint is ``torch.save`` of a dict of plain Python values and tensors (nothing that needs
pickle to run code), loaded with ``torch.load(..., weights_only=True)``:

=============== ============================================================================
key             value
=============== ============================================================================
format          "classranker-checkpoint"
format_version  CHECKPOINT_VERSION
arch            network config (model.build_network), incl. image_size and n_features
feature_set     name of the feature set (features.FEATURE_SETS) the network was trained on
feature_names   the feature names, in order: loading refuses a mismatch with the code's list
feature_mean    per-feature offset applied before the network (list of floats)
feature_std     per-feature scale applied before the network (list of floats)
image_kind      how class averages become network images: "classranker" or "relion"
output          "logit" (sigmoid(logit / temperature + bias)) or "score" (RELION: clamp to [0, 1])
temperature     calibration temperature (1.0 = uncalibrated)
bias            calibration offset (0.0 = uncalibrated), so that 0.5 means "as likely good as not"
metrics         validation metrics, e.g. precision/recall at the default cutoff
provenance      who/what/when: version, command line, training data, date
state_dict      the weights
=============== ============================================================================
"""
from __future__ import annotations

import datetime
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import __version__
from .errors import InputError
from .job_head import JobHead
from .model import build_network

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "classranker-checkpoint"
CHECKPOINT_VERSION = 1
BUNDLED_MODEL = Path(__file__).resolve().parent / "models" / "starter.pt"
MODEL_ENV_VAR = "CLASSRANKER_MODEL"
#: most classes per forward pass on the CPU (see Ranker._batch)
CPU_BATCH = 64


def default_model_path() -> Path:
    """The model used when none is given: $CLASSRANKER_MODEL, else the bundled starter model."""
    return Path(os.environ.get(MODEL_ENV_VAR) or BUNDLED_MODEL)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is an InputError."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but torch sees no CUDA GPU",
                         fix="use --device cpu (or auto), or install a CUDA build of torch")
    return torch.device(device)


def calibrated_scores(logits, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """sigmoid(logit / temperature + bias): a calibrated model's scores from its logits."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(logits, np.float64) / temperature + bias)))


@dataclass
class Ranker:
    """A network with everything needed to turn (images, feature vectors) into scores."""

    network: torch.nn.Module
    feature_set: str
    feature_names: list
    feature_mean: np.ndarray
    feature_std: np.ndarray
    image_kind: str = "classranker"
    output: str = "logit"
    temperature: float = 1.0
    bias: float = 0.0
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    path: Optional[str] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    job_head: Optional[JobHead] = None   # within-job combination of the network's logits (job_head.py)

    @property
    def image_size(self) -> int:
        return int(self.network.config["image_size"])

    def normalise(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float32) - self.feature_mean) / self.feature_std).astype(np.float32)

    def _batch(self, batch_size: int) -> int:
        """Classes per forward pass: at most ``batch_size``; on the CPU at most CPU_BATCH, so that a
        batch's activations stay in the CPU caches (2-4x faster than one batch of 300 on the 2-core
        machine). 32 is faster still on one thread, but with 2 threads on a busy machine (torch's
        default OpenMP wait policy) the extra passes cost more than the old 256-class batches."""
        batch_size = max(1, int(batch_size))
        return min(batch_size, CPU_BATCH) if self.device.type == "cpu" else batch_size

    def _image_batch(self, images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32,
                               device=self.device).unsqueeze(1)

    @torch.no_grad()
    def image_embeddings(self, images: np.ndarray, batch_size: int = 256) -> Optional[torch.Tensor]:
        """(n, E) image-branch embeddings of (n, size, size) images, on the ranker's device; None
        for networks without a separate image branch (RELION 4 TorchScript)."""
        self.network.eval()
        if not hasattr(self.network, "embed_image") or not hasattr(self.network, "forward_embedded"):
            return None
        builder = getattr(self.network, "inference_embedder", None)
        embed = builder() if builder is not None else self.network.embed_image
        step = self._batch(batch_size)
        with torch.inference_mode():
            chunks = [embed(self._image_batch(images[start:start + step]))
                      for start in range(0, len(images), step)]
        return torch.cat(chunks) if chunks else None     # outside inference mode: a plain tensor

    @torch.no_grad()
    def logits(self, images: np.ndarray, features: np.ndarray, batch_size: int = 256,
               embeddings: Optional[torch.Tensor] = None) -> np.ndarray:
        """Raw network outputs for (n, size, size) images and (n, F) *unnormalised* feature vectors.

        embeddings: ``image_embeddings(images)`` when already computed (it is not computed again).
        """
        self.network.eval()
        if len(images) == 0:
            return np.zeros(0, np.float32)
        feats = torch.as_tensor(self.normalise(features), device=self.device)
        if embeddings is None:
            embeddings = self.image_embeddings(images, batch_size)
        if embeddings is not None:
            return self.network.forward_embedded(embeddings, feats).float().cpu().numpy()
        step = self._batch(batch_size)
        return np.concatenate([self.network(self._image_batch(images[start:start + step]),
                                            feats[start:start + step]).float().cpu().numpy()
                               for start in range(0, len(images), step)])

    def job_scores(self, logits: np.ndarray, features: np.ndarray, names) -> tuple:
        """(final logits, scores) of ONE job's classes from the network's logits: through the job head
        when the checkpoint has one (its output is calibrated: score = sigmoid(logit)), else the
        network's calibrated scores."""
        if self.job_head is None:
            return logits, self.scores_from_logits(logits)
        final = self.job_head.logits(logits, features, names)
        return final, calibrated_scores(final)

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        if self.output == "score":  # RELION models regress the score directly
            return np.clip(logits, 0.0, 1.0)
        return calibrated_scores(logits, self.temperature, self.bias)

    def score(self, images: np.ndarray, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self.scores_from_logits(self.logits(images, features, batch_size)).astype(np.float32)

    def to(self, device) -> "Ranker":
        self.device = torch.device(device)
        self.network.to(self.device)
        return self


def save_checkpoint(path, ranker: Ranker, extra: Optional[dict] = None) -> Path:
    """Write ``ranker`` as a weights-only checkpoint, atomically (temp file + rename)."""
    path = Path(path)
    provenance = {"classranker_version": __version__,
                  "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  **(ranker.provenance or {})}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": dict(ranker.network.config),
        "feature_set": ranker.feature_set,
        "feature_names": list(ranker.feature_names),
        "feature_mean": [float(v) for v in ranker.feature_mean],
        "feature_std": [float(v) for v in ranker.feature_std],
        "image_kind": ranker.image_kind,
        "output": ranker.output,
        "temperature": float(ranker.temperature),
        "bias": float(ranker.bias),
        **({"job_head": ranker.job_head.to_dict()} if ranker.job_head is not None else {}),
        "metrics": _plain(ranker.metrics),
        "provenance": _plain(provenance),
        "state_dict": {k: v.detach().cpu() for k, v in ranker.network.state_dict().items()},
    }
    if extra:
        payload.update(_plain(extra))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict, loaded weights-only; InputError for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model checkpoint not found", path,
                         fix="give an existing .pt file with --model, or omit --model to use the bundled model")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            IndexError, KeyError, TypeError, AttributeError) as error:  # torch's errors on garbage vary
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            raise InputError("this file holds pickled Python objects besides weights: loading them could "
                             "run code, and ClassRanker loads weights only", path,
                             fix="use a checkpoint written by ClassRanker (save_checkpoint) or a RELION 5 "
                                 "class ranker checkpoint; never load a file of unknown origin") from None
        raise InputError(f"cannot read this model checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})",
                         path, fix="the file is corrupt, truncated or not a ClassRanker/RELION checkpoint; "
                                   "re-copy it or retrain") from None


def load_model(path=None, device: str = "auto", feature_names=None, trust_torchscript: bool = False) -> Ranker:
    """Load a model (default: :func:`default_model_path`) onto ``device``.

    Accepts our checkpoints, RELION 5 class ranker checkpoints (weights only) and, with
    ``trust_torchscript``, RELION 4.0 TorchScript files. ``feature_names``, when given, must equal
    the checkpoint's list (the features the code computes).
    """
    path = Path(path) if path else default_model_path()
    from .relion_models import is_torchscript, load_relion_torchscript
    if path.is_file() and is_torchscript(path):
        return load_relion_torchscript(path, trust_torchscript).to(resolve_device(device))
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        if isinstance(payload, dict) and "model_state_dict" in payload:
            from .relion_models import ranker_from_relion_checkpoint
            return ranker_from_relion_checkpoint(payload, path).to(resolve_device(device))
        raise InputError("not a ClassRanker checkpoint (no 'format' key)", path,
                         fix="train one with 'classranker train', or pass a RELION 5 class ranker checkpoint")
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(f"checkpoint format version {payload['format_version']} is newer than this "
                         f"ClassRanker understands ({CHECKPOINT_VERSION})", path, fix="upgrade classranker")
    names = list(payload["feature_names"])
    if feature_names is not None and list(feature_names) != names:
        missing = [n for n in feature_names if n not in names]
        extra = [n for n in names if n not in feature_names]
        raise InputError(f"the checkpoint's feature list does not match the feature set "
                         f"'{payload.get('feature_set')}' of this version (missing: {missing or '-'}; "
                         f"unexpected: {extra or '-'})", path,
                         fix="use a model trained with this ClassRanker version, or retrain/fine-tune it")
    try:
        network = build_network(payload["arch"])
        network.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise InputError(f"the weights do not fit the architecture recorded in the checkpoint "
                         f"({str(error).splitlines()[0]})", path,
                         fix="the checkpoint comes from another architecture or is damaged; retrain it") from None
    ranker = Ranker(network=network, feature_set=payload["feature_set"], feature_names=names,
                    feature_mean=np.asarray(payload["feature_mean"], np.float32),
                    feature_std=np.asarray(payload["feature_std"], np.float32),
                    image_kind=payload.get("image_kind", "classranker"), output=payload.get("output", "logit"),
                    temperature=float(payload.get("temperature", 1.0)), bias=float(payload.get("bias", 0.0)),
                    metrics=payload.get("metrics", {}),
                    provenance=payload.get("provenance", {}), path=str(path))
    if "job_head" in payload:
        try:
            ranker.job_head = JobHead.from_dict(payload["job_head"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"the checkpoint's job head is damaged ({error})", path,
                             fix="re-copy the checkpoint or refit its job head") from None
    return ranker.to(resolve_device(device))


def _plain(value):
    """Convert numpy scalars/arrays inside nested dicts/lists to plain Python (weights-only safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
