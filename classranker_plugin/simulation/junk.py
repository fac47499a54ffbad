"""Junk class templates: what ends up in 2D classes that a person would not select.

Each kind is a function ``kind(rng, ctx) -> (box, box) float32`` returning a noise-free template in
the same density units as a good projection (``ctx.level`` is the typical peak of one). The caller
then applies the same CTF correction, resolution limit, noise and solvent mask as for good classes,
so junk differs from good classes by content, not by processing.

=============== =========================================================================
kind            template
=============== =========================================================================
empty           nothing (exact zeros), or a faint near-constant gradient
ice             large smooth bright/dark blobs, thick ice rings, or crystalline-ice fringes
carbon_edge     a straight high-contrast edge across the box, with carbon texture
off_centre      a good projection shifted by 28-55% of the particle diameter (cut by the mask)
aggregate       two to four particles touching, the cluster centred
blurry          a good projection heavily low-passed or smeared in-plane (never converged)
streaks         thin line artefacts and hot pixels
fragment        a small part of a molecule (10-30% of its atoms)
=============== =========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.ndimage

from .density import gaussian_blur


@dataclass(frozen=True)
class JunkContext:
    """What junk functions need to know about the job.

    box, pixel_size:    image geometry
    radius:             particle (mask) radius, pixels
    molecule_radius:    radius of the job's molecules, pixels
    level:              typical peak value of a good projection in template units
    good_projection:    (rng, fraction) -> a centred projection (box, box) of a random molecule at
                        a random view; with fraction < 1 only that fraction of its atoms (a compact
                        piece around a random atom), re-centred
    """

    box: int
    pixel_size: float
    radius: float
    molecule_radius: float
    level: float
    good_projection: Callable[[np.random.Generator, float], np.ndarray]


def _grid(box: int):
    y, x = np.mgrid[:box, :box] - box // 2
    return x.astype(np.float32), y.astype(np.float32)


def _shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Integer shift with zero fill (no wrap-around)."""
    box = image.shape[0]
    out = np.zeros_like(image)
    xs, xd = (slice(0, box - dx), slice(dx, box)) if dx >= 0 else (slice(-dx, box), slice(0, box + dx))
    ys, yd = (slice(0, box - dy), slice(dy, box)) if dy >= 0 else (slice(-dy, box), slice(0, box + dy))
    out[yd, xd] = image[ys, xs]
    return out


def empty(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """Empty box: exact zeros, or a faint, almost constant gradient."""
    if rng.random() < 0.7:
        return np.zeros((ctx.box, ctx.box), dtype=np.float32)
    x, y = _grid(ctx.box)
    gx, gy = rng.normal(0.0, 0.03 * ctx.level / ctx.radius, 2)
    return (gx * x + gy * y + rng.normal(0.0, 0.05 * ctx.level)).astype(np.float32)


def ice(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """Ice contamination: big smooth blobs, a thick ring (ice ball edge) or crystalline fringes."""
    x, y = _grid(ctx.box)
    r = ctx.radius
    variant = rng.choice(["blobs", "ring", "crystal"], p=[0.5, 0.25, 0.25])
    image = np.zeros((ctx.box, ctx.box), dtype=np.float32)
    if variant in ("blobs", "crystal"):
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(-1.1, 1.1, 2) * r
            sigma = rng.uniform(0.3, 0.8) * r
            amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 2.5) * ctx.level
            image += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))
    if variant == "ring":
        cx, cy = rng.uniform(-0.5, 0.5, 2) * r
        radius = rng.uniform(0.4, 1.3) * r
        width = rng.uniform(1.5, 5.0)
        d = np.hypot(x - cx, y - cy)
        amp = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.5) * ctx.level
        image += amp * (np.exp(-((d - radius) ** 2) / (2 * width * width)) + 0.3 * (d < radius))
    if variant == "crystal":
        period = rng.uniform(2.2, 6.0)
        theta = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        envelope = np.exp(-(x * x + y * y) / (2 * (rng.uniform(0.5, 1.2) * r) ** 2))
        fringes = np.cos(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + phase)
        image += rng.uniform(1.0, 3.0) * ctx.level * envelope * fringes
    return image.astype(np.float32)


def carbon_edge(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """A straight edge of support carbon crossing the box, sometimes with a particle beside it."""
    x, y = _grid(ctx.box)
    theta = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.7, 0.7) * ctx.radius
    d = x * np.cos(theta) + y * np.sin(theta) - offset
    width = rng.uniform(0.5, 2.0)
    amp = rng.uniform(1.5, 4.0) * ctx.level
    carbon = 1.0 / (1.0 + np.exp(-np.clip(d / width, -50, 50)))
    texture = gaussian_blur(rng.standard_normal((1, ctx.box, ctx.box)), 2.0)[0]
    texture /= max(float(texture.std()), 1e-12)
    image = amp * carbon * (1.0 + 0.15 * texture)
    if rng.random() < 0.3:
        image = image + rng.uniform(0.5, 1.0) * ctx.good_projection(rng, 1.0)
    return image.astype(np.float32)


def off_centre(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """A particle picked off-centre: shifted by more than a quarter of the diameter."""
    projection = ctx.good_projection(rng, 1.0)
    distance = rng.uniform(0.28, 0.55) * 2.0 * ctx.radius
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = int(round(distance * np.cos(angle))), int(round(distance * np.sin(angle)))
    return _shifted(projection, dx, dy)


def aggregate(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """Two to four particles touching one another, the cluster centred in the box."""
    count = int(rng.integers(2, 5))
    positions = [np.zeros(2)]
    for _ in range(count - 1):
        anchor = positions[int(rng.integers(len(positions)))]
        angle = rng.uniform(0, 2 * np.pi)
        step = rng.uniform(1.2, 1.7) * ctx.molecule_radius
        positions.append(anchor + step * np.array([np.cos(angle), np.sin(angle)]))
    positions = np.array(positions)
    positions -= positions.mean(axis=0)
    image = np.zeros((ctx.box, ctx.box), dtype=np.float32)
    for px, py in positions:
        image += _shifted(ctx.good_projection(rng, 1.0), int(round(px)), int(round(py)))
    return image


def blurry(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """A good projection heavily low-passed or smeared in-plane, like a class that never converged."""
    projection = ctx.good_projection(rng, 1.0)
    if rng.random() < 0.5:
        sigma = rng.uniform(0.15, 0.3) * ctx.radius
        return gaussian_blur(projection[None], sigma)[0]
    spread = rng.uniform(40.0, 180.0)
    angles = np.linspace(-spread / 2, spread / 2, 9)
    smeared = np.mean([scipy.ndimage.rotate(projection, a, reshape=False, order=1) for a in angles], axis=0)
    return gaussian_blur(smeared[None], rng.uniform(0.05, 0.12) * ctx.radius)[0]


def streaks(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """Line artefacts across the box and a few hot pixels."""
    x, y = _grid(ctx.box)
    image = np.zeros((ctx.box, ctx.box), dtype=np.float32)
    for _ in range(int(rng.integers(1, 5))):
        theta = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.8, 0.8) * ctx.radius
        d = x * np.cos(theta) + y * np.sin(theta) - offset
        along = -x * np.sin(theta) + y * np.cos(theta)
        half_length = rng.uniform(0.5, 2.0) * ctx.radius
        width = rng.uniform(0.4, 1.5)
        amp = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 3.0) * ctx.level
        image += amp * np.exp(-d * d / (2 * width * width)) * (np.abs(along) < half_length)
    hot = int(rng.integers(0, 9))
    if hot:
        px = np.clip(np.round(rng.uniform(-0.9, 0.9, hot) * ctx.radius).astype(int) + ctx.box // 2, 0, ctx.box - 1)
        py = np.clip(np.round(rng.uniform(-0.9, 0.9, hot) * ctx.radius).astype(int) + ctx.box // 2, 0, ctx.box - 1)
        image[py, px] += rng.uniform(5.0, 20.0, hot) * ctx.level
    return image


def fragment(rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """A small piece of a molecule (a broken or dissociated particle)."""
    return ctx.good_projection(rng, rng.uniform(0.1, 0.3))


#: junk kind name -> template function
JUNK_FUNCTIONS = {
    "empty": empty,
    "ice": ice,
    "carbon_edge": carbon_edge,
    "off_centre": off_centre,
    "aggregate": aggregate,
    "blurry": blurry,
    "streaks": streaks,
    "fragment": fragment,
}
#: every junk kind, in a fixed order
JUNK_KINDS = tuple(JUNK_FUNCTIONS)


def junk_template(kind: str, rng: np.random.Generator, ctx: JunkContext) -> np.ndarray:
    """The template of one junk class of ``kind`` (see JUNK_KINDS)."""
    try:
        function = JUNK_FUNCTIONS[kind]
    except KeyError:
        raise ValueError(f"unknown junk kind {kind!r}; choose from {', '.join(JUNK_KINDS)}") from None
    return np.asarray(function(rng, ctx), dtype=np.float32)
