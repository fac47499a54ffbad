"""One epoch of training and one pass of validation, and the seeded order of the classes.

Reproducibility: every epoch draws from generators seeded by (seed, epoch) only (batch order,
augmentation, metadata masking, and torch's global generator for dropout), so an epoch run after a
resume is the same as in an uninterrupted run.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentConfig, FeatureMasker, augment_images
from .distributed import Context, shard

PRELOAD_BYTES = 2 << 30  # images are copied to the device when they take less than this


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint32)[0])


class Batches:
    """Images, raw features and labels of a dataset, fetched by index (preloaded when small)."""

    def __init__(self, images: np.ndarray, features: np.ndarray, labels: np.ndarray, device: torch.device,
                 feature_mean: np.ndarray, feature_std: np.ndarray):
        self.device = device
        self.mean = torch.as_tensor(feature_mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(feature_std, dtype=torch.float32, device=device)
        self.features = torch.from_numpy(np.array(features, np.float32)).to(device)
        self.labels = torch.from_numpy(np.array(labels, np.float32)).to(device)
        self.preloaded = images.nbytes <= PRELOAD_BYTES
        self.images = (torch.from_numpy(np.array(images, np.float32)).to(device) if self.preloaded
                       else images)

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def get(self, indices: torch.Tensor):
        """(images (b,1,s,s), raw features (b,F), labels (b,)) of the classes ``indices``."""
        if self.preloaded:
            index = indices.to(self.device)
            images = self.images[index]
        else:  # memory map: read the rows in file order, then put them back in batch order
            order = np.argsort(indices.numpy(), kind="stable")
            rows = np.asarray(self.images[indices.numpy()[order]], dtype=np.float32)
            images = torch.empty((len(indices),) + rows.shape[1:])
            images[torch.as_tensor(order)] = torch.from_numpy(rows)
            images = images.to(self.device, non_blocking=True)
            index = indices.to(self.device)
        return images.unsqueeze(1), self.features[index], self.labels[index]


def epoch_order(train_indices: np.ndarray, labels: np.ndarray, balance: str,
                generator: torch.Generator) -> torch.Tensor:
    """The classes of one epoch in order: a permutation, or a class-balanced draw with replacement."""
    indices = torch.as_tensor(train_indices, dtype=torch.int64)
    if balance == "sampler":
        good = torch.as_tensor(labels[train_indices] >= 0.5)
        n_good = int(good.sum())
        weights = torch.where(good, 0.5 / max(n_good, 1), 0.5 / max(len(good) - n_good, 1)).double()
        draw = torch.multinomial(weights, len(indices), replacement=True, generator=generator)
        return indices[draw]
    return indices[torch.randperm(len(indices), generator=generator)]


@dataclass
class StepOptions:
    batch_size: int
    augment: Optional[AugmentConfig]
    masker: Optional[FeatureMasker]
    pos_weight: Optional[float]
    amp: bool
    freeze_cnn: bool
    clip_norm: float = 5.0


def soft_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: Optional[float] = None) -> torch.Tensor:
    weight = None if pos_weight is None else torch.as_tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weight)


def train_epoch(network, optimizer, scaler, batches: Batches, order: torch.Tensor, options: StepOptions,
                generator: torch.Generator, context: Context,
                progress: Optional[Callable[[int, int], None]] = None) -> tuple[float, int]:
    """Train on the classes of ``order`` (this rank's share). Returns (mean loss, images seen)."""
    network.train()
    if options.freeze_cnn:  # frozen batch-norm statistics too: the CNN stays exactly as loaded
        getattr(network, "module", network).cnn.eval()
    local = shard(order, context)
    device_type = batches.device.type
    total, seen = 0.0, 0
    n_batches = -(-len(local) // options.batch_size)
    for b in range(n_batches):
        index = local[b * options.batch_size:(b + 1) * options.batch_size]
        if len(index) < 2 and n_batches > 1:
            continue  # batch norm needs two samples; the class comes back next epoch
        images, features, labels = batches.get(index)
        if options.augment is not None:
            images = augment_images(images, generator, options.augment)
        if options.masker:
            features = options.masker(features, generator)
        features = batches.normalise(features)
        with torch.autocast(device_type=device_type, dtype=torch.float16, enabled=options.amp):
            logits = network(images, features)
        loss = soft_bce(logits, labels, options.pos_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in network.parameters() if p.requires_grad], options.clip_norm)
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(index)
        seen += len(index)
        if progress is not None:
            progress(b + 1, n_batches)
    return total / max(seen, 1), seen


@torch.no_grad()
def predict(network, batches: Batches, indices: np.ndarray, batch_size: int, amp: bool,
            masker: Optional[FeatureMasker] = None) -> np.ndarray:
    """Logits of the classes ``indices`` (eval mode; with ``masker``: every metadata group unknown)."""
    network.eval()
    out = []
    order = torch.as_tensor(indices, dtype=torch.int64)
    for start in range(0, len(order), batch_size):
        images, features, _ = batches.get(order[start:start + batch_size])
        if masker is not None:
            features = masker.mask_all(features)
        with torch.autocast(device_type=batches.device.type, dtype=torch.float16, enabled=amp):
            logits = network(images, batches.normalise(features))
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class ProgressLine:
    """A one-line bar on an interactive stderr; nothing when stderr is a file (logs stay clean)."""

    def __init__(self, epoch: int, epochs: int, enabled: bool = True):
        self.prefix = f"epoch {epoch + 1}/{epochs}"
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{self.prefix} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} batches")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
