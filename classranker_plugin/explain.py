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


#: feature -> (phrase when the feature is high, phrase when it is low), for a biologist to read
PHRASES = {
    "empty": ("blank average", "non-blank average"),
    "log_class_distribution": ("well-populated class", "few particles in the class"),
    "log_particle_count": ("many particles", "few particles"),
    "accuracy_rotations": ("poor angular accuracy", "accurate angles"),
    "accuracy_translations": ("poor translational accuracy", "accurate shifts"),
    "not_converged": ("alignment did not converge", "alignment converged"),
    "resolution_relative": ("low resolution", "high resolution"),
    "resolution_nyquist": ("high resolution", "low resolution"),
    "log_signal_std": ("strong signal", "weak signal"),
    "contrast_in_out": ("particle stands out from its surroundings", "particle does not stand out"),
    "protein_solvent_contrast": ("clear particle against the solvent", "faint particle against the solvent"),
    "solvent_flatness": ("structured or noisy solvent", "flat solvent"),
    "outside_signal": ("signal outside the mask", "clean surroundings"),
    "com_offset": ("signal off-centre", "signal centred"),
    "radial_centroid": ("density far from the centre", "density at the centre"),
    "radial_spread": ("spread-out density", "compact density"),
    "rotational_symmetry": ("featureless round blob", "structured density"),
    "power_mid": ("medium-resolution detail", "blurry, little detail"),
    "power_high": ("fine detail", "no fine detail"),
    "angular_power_peak": ("straight edges or streaks", "no straight edges"),
    "gradient_coherence": ("one dominant edge (carbon, streak)", "no dominant edge"),
    "n_blobs": ("several separate densities", "a single density"),
    "largest_blob_area": ("large main density", "small main density"),
    "largest_blob_share": ("one compact particle", "scattered fragments"),
    "blob_offset": ("main density off-centre", "main density centred"),
    "blob_outside": ("density beyond the mask (neighbours, aggregates)", "density within the mask"),
}


def _readable(name: str, level: float) -> str:
    high, low = PHRASES.get(name, (f"high {name.replace('_', ' ')}", f"low {name.replace('_', ' ')}"))
    return high if level > 0 else low


@torch.no_grad()
def contributions(ranker, images: np.ndarray, features: np.ndarray, names, embeddings=None) -> tuple:
    """(n, groups) logit contributions and the group names; the image counts as group 'image'.

    embeddings: ``ranker.image_embeddings(images)`` when already computed.
    """
    network = ranker.network.eval()
    device = ranker.device
    normalised = torch.as_tensor(ranker.normalise(features), device=device)
    if embeddings is None:
        embeddings = ranker.image_embeddings(images) if len(images) else None
    embedding = embeddings if embeddings is not None else torch.zeros((0, 1))
    full = network.forward_embedded(embedding, normalised)
    groups = feature_groups(names)
    variants, labels = [], []
    for base, indices in groups.items():
        occluded = normalised.clone()
        occluded[:, indices] = 0.0
        for index in indices:  # an unknown statistic is encoded as value 0 and flag 0 (raw units)
            if names[index].endswith(KNOWN_SUFFIX):
                occluded[:, index] = float((0.0 - ranker.feature_mean[index]) / ranker.feature_std[index])
        variants.append(occluded)
        labels.append(base)
    columns = []
    if variants:  # every occluded variant through the head in one pass (few, larger operations)
        occluded_logits = network.forward_embedded(embedding.repeat(len(variants), 1), torch.cat(variants))
        columns = list((full[None] - occluded_logits.reshape(len(variants), -1)).cpu().numpy())
    blank = network.embed_image(torch.zeros((1, 1, ranker.image_size, ranker.image_size), device=device))
    columns.append((full - network.forward_embedded(blank.expand_as(embedding), normalised)).cpu().numpy())
    labels.append("image")
    return np.stack(columns, axis=1) if columns else np.zeros((len(images), 0)), labels


def explain_scores(ranker, images, features, names, logits=None, top: int = 2, embeddings=None,
                   scores=None) -> list:
    """One sentence per class, e.g. 'rejected: few particles in the class, signal off-centre'.

    logits, embeddings: ``ranker.logits`` and ``ranker.image_embeddings`` when already computed.
    scores: the final scores (after the job head) that decide "kept" / "rejected"; default: the
    network's own.
    """
    if len(images) == 0 or not hasattr(ranker.network, "forward_embedded"):
        return [""] * len(images)
    contrib, labels = contributions(ranker, images, features, names, embeddings)
    normalised = ranker.normalise(features)
    groups = feature_groups(names)
    if scores is None:
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
                reasons.append(_readable(label, normalised[row, groups[label][0]]))
        verdict = "kept" if kept else "rejected"
        sentences.append(f"{verdict}: " + (", ".join(reasons) if reasons else "no single dominant reason"))
    return sentences
