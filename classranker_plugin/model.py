"""The networks: a CNN on the class average plus an MLP on the feature vector, one logit per class.

``ClassRankerNet`` is ours: small (~0.1 M parameters), batch-normalised, global pooling so that it
does not care where in the image a feature sits (class averages come at any in-plane rotation).
``RelionRankerNet`` re-implements the architecture of RELION 5's class ranker from its description
(see docs/relion.md), so that RELION checkpoints can be loaded as weights only.

Both take ``images`` of shape (n, 1, size, size) and ``features`` of shape (n, F) and return logits
of shape (n,); the score is ``sigmoid(logit / temperature)`` (see checkpoint.Ranker).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = ("classranker", "relion")


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ClassRankerNet(nn.Module):
    """CNN (three stages, each conv + strided conv) + MLP on features, fused by a small head."""

    def __init__(self, n_features: int, image_size: int = 64, widths=(16, 32, 64),
                 embedding: int = 32, hidden: int = 48, dropout: float = 0.3):
        super().__init__()
        self.config = {"arch": "classranker", "n_features": int(n_features), "image_size": int(image_size),
                       "widths": [int(w) for w in widths], "embedding": int(embedding),
                       "hidden": int(hidden), "dropout": float(dropout)}
        layers, c_in = [], 1
        for width in widths:
            layers += [_conv_block(c_in, width), _conv_block(width, width, stride=2)]
            c_in = width
        self.cnn = nn.Sequential(*layers)
        self.image_head = nn.Sequential(nn.Linear(2 * c_in, embedding), nn.ReLU(inplace=True))
        self.feature_mlp = nn.Sequential(nn.Linear(max(n_features, 1), hidden), nn.ReLU(inplace=True),
                                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding + hidden, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.n_features = n_features

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.cnn(images)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.image_head(pooled)

    def inference_embedder(self):
        """``embed_image`` for scoring, built from the current weights: in eval mode every
        BatchNorm is folded into its convolution (conv -> ReLU, activations channels-last), which
        gives the same embedding to float rounding in fewer passes over memory. In training mode
        (batch statistics) it is ``embed_image`` itself. Build it again after the weights change.
        """
        if self.training:
            return self.embed_image
        layers = []
        with torch.no_grad():
            for conv, norm, _ in self.cnn:
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
                layers.append((weight, bias, conv.stride, conv.padding))

        def embed(images: torch.Tensor) -> torch.Tensor:
            maps = images.contiguous(memory_format=torch.channels_last)
            for weight, bias, stride, padding in layers:
                maps = F.conv2d(maps, weight, bias, stride, padding).relu_()
            pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
            return self.image_head(pooled)
        return embed

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed_image(images), features)

    def forward_embedded(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits from a precomputed image embedding (cheap re-scoring with other feature vectors)."""
        if self.n_features == 0:
            features = embedding.new_zeros((embedding.shape[0], 1))
        return self.head(torch.cat([embedding, self.feature_mlp(features)], dim=1)).squeeze(1)


class RelionRankerNet(nn.Module):
    """RELION 5 class ranker architecture (64 px image, 24 features), for its published weights.

    Nine 3x3 convolutions in three groups (16,16,32 | 32,32,64 | 64,64,128), the third of each group
    with stride 2 (64 -> 8 px), ReLU after the stride-1 ones, dropout between groups; the flattened
    8192 values go through Linear(8192, 48), are concatenated with the 24 features and pass
    dropout, Linear(72, 48), ReLU, dropout, Linear(48, 1). No output activation: RELION trains it
    with an MSE loss on scores in [0, 1], so its raw output *is* the score (see checkpoint.Ranker).
    """

    def __init__(self, n_features: int = 24, image_size: int = 64, cnn_width: int = 16,
                 feature_width: int = 48, feature_width2: int = 48, dropout: float = 0.3):
        super().__init__()
        self.config = {"arch": "relion", "n_features": int(n_features), "image_size": int(image_size),
                       "cnn_width": int(cnn_width), "feature_width": int(feature_width),
                       "feature_width2": int(feature_width2), "dropout": float(dropout)}
        w = cnn_width
        groups, c_in = [], 1
        for width in (w, 2 * w, 4 * w):
            c_out = 2 * width
            groups += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, c_out, 3, stride=2, padding=1), nn.Dropout(dropout)]
            c_in = c_out
        self.cnn = nn.Sequential(*groups)
        flat = c_in * (image_size // 8) ** 2
        self.image_fc = nn.Linear(flat, feature_width)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_width + n_features, feature_width2),
                                  nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_width2, 1))

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_fc(self.cnn(images).flatten(1))

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed_image(images), features)

    def forward_embedded(self, embedding: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([embedding, features], dim=1)).squeeze(1)


def build_network(config: dict) -> nn.Module:
    """Instantiate a network from the ``config`` stored in a checkpoint."""
    config = dict(config)
    arch = config.pop("arch", "classranker")
    if arch == "classranker":
        return ClassRankerNet(**config)
    if arch == "relion":
        return RelionRankerNet(**config)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
