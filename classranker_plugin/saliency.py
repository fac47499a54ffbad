"""Where in the class average the image branch looked: occlusion maps.

A square patch of the network image (the normalised model image, mean 0) is set to 0 and the class
is scored again; the drop of the logit (score before minus score after) is the patch's
contribution. Positive values: the region pushed the score up (it looks like particle); negative:
it pulled the score down. Each pixel gets the mean contribution of the patches that cover it.
Occluded copies of all classes are scored in batches, so the cost is that of scoring
``n * positions`` images (64 positions for 8 px patches on a 64 px image, stride 8).
"""
from __future__ import annotations

import numpy as np
import torch


def patch_starts(size: int, patch: int, stride: int) -> list:
    """Patch offsets along one axis; the last patch is moved in so that the edge is covered."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch ({patch}) and stride ({stride}) must be >= 1")
    patch = min(patch, size)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def patch_masks(height: int, width: int, patch: int, stride: int) -> np.ndarray:
    """(positions, height, width) bool: True inside each patch."""
    masks = []
    for y in patch_starts(height, patch, stride):
        for x in patch_starts(width, patch, stride):
            mask = np.zeros((height, width), bool)
            mask[y:y + patch, x:x + patch] = True
            masks.append(mask)
    return np.stack(masks)


@torch.no_grad()
def _logits(network, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    return network(images.unsqueeze(1), features).reshape(-1).float()


@torch.no_grad()
def occlusion_maps(ranker, images: np.ndarray, features: np.ndarray, patch: int = 8, stride: int = 8,
                   batch_size: int = 256) -> np.ndarray:
    """(n, h, w) float32 logit drops when each region of the network image is set to 0.

    ranker:   a checkpoint.Ranker (its network, feature normalisation and device are used)
    images:   (n, h, w) network images, as the scorer makes them (preprocess.model_images or
              relion_model_images, matching ``ranker.image_kind``)
    features: (n, F) raw feature vectors, as compute_features returns them
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, h, w), got shape {images.shape}")
    n, height, width = images.shape
    if n == 0:
        return np.zeros((0, height, width), np.float32)
    network = ranker.network.eval()
    device = ranker.device
    masks = patch_masks(height, width, patch, stride)
    keep = torch.as_tensor(~masks, dtype=torch.float32, device=device)       # (P, h, w): 0 in the patch
    pictures = torch.as_tensor(images, device=device)
    vectors = torch.as_tensor(ranker.normalise(features), device=device)
    base = torch.cat([_logits(network, pictures[s:s + batch_size], vectors[s:s + batch_size])
                      for s in range(0, n, batch_size)])
    positions = len(masks)
    pairs = n * positions
    drops = torch.empty(pairs, device=device)
    for start in range(0, pairs, batch_size):
        index = torch.arange(start, min(start + batch_size, pairs), device=device)
        which, where = index // positions, index % positions
        occluded = pictures[which] * keep[where]
        drops[index] = base[which] - _logits(network, occluded, vectors[which])
    drops = drops.reshape(n, positions).cpu().numpy().astype(np.float64)
    cover = masks.reshape(positions, -1).astype(np.float64)
    counts = cover.sum(axis=0)
    maps = drops @ cover / np.where(counts > 0, counts, 1.0)
    return maps.reshape(n, height, width).astype(np.float32)


def classset_saliency(classset, ranker, features: np.ndarray, patch: int = 8, stride: int = 8,
                      batch_size: int = 256) -> tuple:
    """(network images, occlusion maps) of every class of ``classset``, images made as the scorer does."""
    from .preprocess import model_images, relion_model_images
    images = (relion_model_images(classset) if ranker.image_kind == "relion"
              else model_images(classset, size=ranker.image_size))
    return images, occlusion_maps(ranker, images, features, patch, stride, batch_size)
