"""Batch augmentation in torch: the network should not care about in-plane pose or missing metadata.

Class averages come at any in-plane rotation and either handedness, slightly off centre, so every
training batch is transformed on its device with:

- an exact random multiple of 90 degrees (``torch.rot90``, no interpolation),
- a random left-right flip,
- with probability ``p_affine``, an arbitrary rotation plus a shift of up to ``max_shift`` pixels
  (one ``affine_grid`` + ``grid_sample`` per batch; outside the image counts as 0, the background
  level of the normalised model images),
- with probability ``p_blur``, a Gaussian low-pass (another filtering or sampling of the same view),
- with probability ``p_display``, the rendering of a viewer (clipping, gamma, 8-bit steps), as in
  class averages that survive only as screenshots.

Every random draw comes from the ``torch.Generator`` given (on the CPU), so a seeded generator
reproduces the same batch on any device.

Metadata masking (:class:`FeatureMasker`) sets, at random per class, a group of metadata features
and their ``*_known`` flag to the values the feature set gives when that statistic is unknown, so
one model also scores classes that come without metadata (a bare .mrcs stack).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rot90: bool = True
    flip: bool = True
    p_affine: float = 0.5
    max_shift: float = 2.0   # pixels
    p_blur: float = 0.25     # Gaussian low-pass, sigma uniform in blur_sigma (pixels): other filtering / sampling
    blur_sigma: tuple = (0.4, 1.2)
    p_display: float = 0.25  # a display's rendering: random gamma, clipping and 8-bit steps (screenshots)


def augment_images(images: torch.Tensor, generator: torch.Generator,
                   config: Optional[AugmentConfig] = None) -> torch.Tensor:
    """Randomly rotated / flipped / shifted copy of ``images`` (n, 1, size, size)."""
    config = config or AugmentConfig()
    n, size = images.shape[0], images.shape[-1]
    # all draws first, in a fixed order, so the random stream does not depend on the options' effects
    turns = torch.randint(0, 4, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    use_affine = torch.rand(n, generator=generator) < config.p_affine
    angles = torch.rand(n, generator=generator) * (2 * math.pi)
    shifts = (torch.rand(n, 2, generator=generator) * 2 - 1) * config.max_shift
    use_blur = torch.rand(n, generator=generator) < config.p_blur
    sigmas = config.blur_sigma[0] + torch.rand(n, generator=generator) * (config.blur_sigma[1] - config.blur_sigma[0])
    use_display = torch.rand(n, generator=generator) < config.p_display
    display = torch.rand(n, 3, generator=generator)  # gamma, low clip, high clip
    out = images
    if config.rot90:
        out = out.clone()
        for k in (1, 2, 3):
            chosen = (turns == k).to(images.device)
            if chosen.any():
                out[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    if config.flip:
        chosen = flips.to(images.device)
        out = torch.where(chosen[:, None, None, None], out.flip(-1), out)
    if config.p_affine > 0 and bool(use_affine.any()):
        out = _rotate_shift(out, torch.where(use_affine, angles, torch.zeros_like(angles)),
                            torch.where(use_affine[:, None], shifts, torch.zeros_like(shifts)), size)
    if config.p_blur > 0 and bool(use_blur.any()):
        chosen = use_blur.to(images.device)
        out = torch.where(chosen[:, None, None, None], _blur(out, sigmas.to(images.device)), out)
    if config.p_display > 0 and bool(use_display.any()):
        chosen = use_display.to(images.device)
        out = torch.where(chosen[:, None, None, None], _display(out, display.to(images.device)), out)
    return out


def _blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Gaussian low-pass of each image with its own sigma (pixels), in Fourier space."""
    size = images.shape[-1]
    freq = torch.fft.fftfreq(size, device=images.device)
    f2 = freq[:, None] ** 2 + freq[None, :] ** 2
    kernel = torch.exp(-2 * (math.pi ** 2) * sigmas[:, None, None] ** 2 * f2)[:, None]
    return torch.fft.ifft2(torch.fft.fft2(images) * kernel).real.to(images.dtype)


def _display(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """What a viewer's 8-bit rendering does to an average: clip to a random percentile window,
    apply a gamma in [0.6, 1.6], quantise to 256 levels, then standardise again (as the model
    images are)."""
    flat = images.flatten(1)
    low = torch.quantile(flat, (draws[:, 1] * 0.03).to(flat.dtype), dim=1).diagonal()
    high = torch.quantile(flat, (1 - draws[:, 2] * 0.03).to(flat.dtype), dim=1).diagonal()
    scaled = ((flat - low[:, None]) / (high - low).clamp_min(1e-6)[:, None]).clamp(0, 1)
    gamma = 0.6 + draws[:, 0:1] * 1.0
    scaled = torch.round(scaled ** gamma * 255) / 255
    scaled = (scaled - scaled.mean(1, keepdim=True)) / scaled.std(1, keepdim=True).clamp_min(1e-6)
    return scaled.view_as(images)


def _rotate_shift(images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor, size: int) -> torch.Tensor:
    """Rotate each image by ``angles`` (radians) about its centre and shift it by ``shifts`` (px)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(len(angles), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = shifts * (2.0 / size)  # normalised coordinates run from -1 to 1
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class MaskGroup:
    """Features that are unknown together (a statistic and its flag) and their 'unknown' values."""

    name: str
    indices: list
    unknown_values: list


class FeatureMasker:
    """Replace metadata feature groups by their 'unknown' encoding at random (raw feature space)."""

    def __init__(self, groups: Sequence[MaskGroup], p: float = 0.3, p_all: float = 0.5):
        """p: probability that a class loses its metadata; p_all: given that, that it loses all of it
        (a bare stack) rather than each group independently with probability 1/2."""
        self.groups = [g for g in groups if g.indices]
        self.p = float(p)
        self.p_all = float(p_all)

    def __bool__(self) -> bool:
        return bool(self.groups) and self.p > 0

    def mask_all(self, features: torch.Tensor) -> torch.Tensor:
        """Every metadata group unknown for every class (a bare stack of averages)."""
        out = features.clone()
        for group in self.groups:
            out[:, torch.as_tensor(group.indices, device=features.device)] = torch.as_tensor(
                group.unknown_values, dtype=features.dtype, device=features.device)
        return out

    def __call__(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, n_groups = features.shape[0], len(self.groups)
        masked = torch.rand(n, generator=generator) < self.p
        everything = torch.rand(n, generator=generator) < self.p_all
        per_group = torch.rand(n, max(n_groups, 1), generator=generator) < 0.5
        if not self or not bool(masked.any()):
            return features
        out = features.clone()
        drop = (masked[:, None] & (everything[:, None] | per_group)).to(features.device)
        for g, group in enumerate(self.groups):
            rows = drop[:, g]
            if rows.any():
                index = torch.as_tensor(group.indices, device=features.device)
                values = torch.as_tensor(group.unknown_values, dtype=features.dtype, device=features.device)
                out[rows.nonzero(as_tuple=True)[0][:, None], index[None, :]] = values
        return out
