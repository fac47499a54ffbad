"""Why a class got its score: the features that pushed it up or down most, as a readable sentence.

Each feature group (a feature and its ``*_known`` flag) is replaced by its neutral value (the
training mean, i.e. 0 after normalisation; metadata flagged unknown) and the change of the logit
is its contribution. The image branch is measured the same way by blanking the image. The image
embedding is computed once, so explaining costs a few cheap passes through the small head.
"""
from __future__ import annotations

import numpy as np
import torch

KNOWN_SUFFIX = "_known"


def feature_groups(names) -> dict:
    """base feature name -> column indices (a feature with its '<name>_known' flag)."""
    groups = {}
    for index, name in enumerate(names):
        base = name[:-len(KNOWN_SUFFIX)] if name.endswith(KNOWN_SUFFIX) else name
        groups.setdefault(base, []).append(index)
    return groups


def _readable(name: str) -> str:
    return name.replace("_", " ")


@torch.no_grad()
def contributions(ranker, images: np.ndarray, features: np.ndarray, names) -> tuple:
    """(n, groups) logit contributions and the group names; the image counts as group 'image'."""
    network = ranker.network.eval()
    device = ranker.device
    normalised = torch.as_tensor(ranker.normalise(features), device=device)
    embedding = torch.cat([network.embed_image(torch.as_tensor(
        np.ascontiguousarray(images[i:i + 256]), dtype=torch.float32, device=device).unsqueeze(1))
        for i in range(0, len(images), 256)]) if len(images) else torch.zeros((0, 1))
    full = network.forward_embedded(embedding, normalised)
    groups = feature_groups(names)
    columns, labels = [], []
    for base, indices in groups.items():
        occluded = normalised.clone()
        occluded[:, indices] = 0.0
        for index in indices:  # an unknown statistic is encoded as value 0 and flag 0 (raw units)
            if names[index].endswith(KNOWN_SUFFIX):
                occluded[:, index] = float((0.0 - ranker.feature_mean[index]) / ranker.feature_std[index])
        columns.append((full - network.forward_embedded(embedding, occluded)).cpu().numpy())
        labels.append(base)
    blank = network.embed_image(torch.zeros((1, 1, ranker.image_size, ranker.image_size), device=device))
    columns.append((full - network.forward_embedded(blank.expand_as(embedding), normalised)).cpu().numpy())
    labels.append("image")
    return np.stack(columns, axis=1) if columns else np.zeros((len(images), 0)), labels


def explain_scores(ranker, images, features, names, logits=None, top: int = 2) -> list:
    """One sentence per class, e.g. 'rejected: low class distribution, image (-1.2)'."""
    if len(images) == 0 or not hasattr(ranker.network, "forward_embedded"):
        return [""] * len(images)
    contrib, labels = contributions(ranker, images, features, names)
    normalised = ranker.normalise(features)
    groups = feature_groups(names)
    scores = ranker.scores_from_logits(ranker.logits(images, features) if logits is None else logits)
    sentences = []
    for row, score in enumerate(scores):
        kept = score >= 0.5
        order = np.argsort(-contrib[row] if kept else contrib[row])
        reasons = []
        for g in order[:top]:
            value = contrib[row, g]
            if (value > 0) != kept or abs(value) < 0.05:
                continue
            label = labels[g]
            if label == "image":
                reasons.append("image looks " + ("like a particle" if value > 0 else "like junk"))
            else:
                level = normalised[row, groups[label][0]]
                reasons.append(f"{'high' if level > 0 else 'low'} {_readable(label)}")
        verdict = "kept" if kept else "rejected"
        sentences.append(f"{verdict}: " + (", ".join(reasons) if reasons else "no single dominant reason"))
    return sentences
