"""Class average -> the small square image the network sees.

* ``model_images``: ClassRanker's image. The centre window of ``WINDOW_DIAMETERS`` x the particle
  diameter (the whole box when the diameter or the pixel size is unknown), zero-filled where it
  leaves the box, Fourier-resampled to ``size`` px, then normalised per image to mean 0 and
  stddev 1 (a constant image becomes all zeros). The same particle gives the same image whatever
  the box and pixel size.
* ``relion_model_images``: the image RELION's class ranker feeds its CNN: the centre window of
  ceil(diameter / pixel_size) + 1 px (made even, zero-filled outside the box), Fourier-resampled
  to 64 px, no mask, no normalisation.
"""
from __future__ import annotations

import numpy as np

from .classset import ClassSet
from .features.image import Window, as_stack, crop_or_pad, fourier_resample, resample_windows
from .features.metadata import positive_or_none

WINDOW_DIAMETERS = 1.2
RELION_IMAGE_SIZE = 64


def standardise(stack: np.ndarray) -> np.ndarray:
    """Every image to mean 0, stddev 1 (float32); constant images become zeros, never NaN."""
    stack = as_stack(stack)
    n = len(stack)
    flat = stack.reshape(n, -1).astype(np.float64)
    mean = flat.mean(axis=1)
    centred = flat - mean[:, None]
    std = np.sqrt((centred * centred).mean(axis=1))
    flat_enough = std <= 1e-6 * (np.abs(flat).max(axis=1, initial=0.0) + 1e-30)
    centred /= np.where(flat_enough, 1.0, std)[:, None]
    centred[flat_enough] = 0.0
    return centred.astype(np.float32).reshape(stack.shape)


def model_window(classset: ClassSet, size: int = 64) -> Window:
    """The model image of ``classset`` as a :class:`~.features.image.Window` (zero fill)."""
    apix = positive_or_none(classset.pixel_size)
    diameter = positive_or_none(classset.particle_diameter)
    window = WINDOW_DIAMETERS * diameter / apix if (apix and diameter) else float(classset.box_size)
    return Window(window, size, 0.0)


def model_images(classset: ClassSet, size: int = 64) -> np.ndarray:
    """(n, size, size) float32 normalised images for ClassRanker models."""
    images = as_stack(classset.images)
    if len(images) == 0:
        return np.zeros((0, size, size), dtype=np.float32)
    return standardise(resample_windows(images, [model_window(classset, size)])[0])


def model_images_and_frame(classset: ClassSet, size: int = 64):
    """``(model_images(classset, size), features.classranker.frame_images(classset))`` from one
    pass over the stack (both windows share the products along x)."""
    from .features.classranker import FRAME_SIZE, frame_window
    images = as_stack(classset.images)
    if len(images) == 0:
        return (np.zeros((0, size, size), dtype=np.float32),
                np.zeros((0, FRAME_SIZE, FRAME_SIZE), dtype=np.float32))
    model, frame = resample_windows(images, [model_window(classset, size), frame_window(classset)])
    return standardise(model), frame


def relion_window(classset: ClassSet) -> int:
    """RELION's window in pixels: ceil(diameter / pixel_size) + 1, made even; the box if unknown."""
    apix = positive_or_none(classset.pixel_size)
    diameter = positive_or_none(classset.particle_diameter)
    if not (apix and diameter):
        return classset.box_size
    window = int(np.ceil(diameter / apix - 1e-9)) + 1
    return window + window % 2


def relion_model_images(classset: ClassSet) -> np.ndarray:
    """(n, 64, 64) float32 images as RELION's class ranker gives them to its CNN."""
    images = as_stack(classset.images)
    if len(images) == 0:
        return np.zeros((0, RELION_IMAGE_SIZE, RELION_IMAGE_SIZE), dtype=np.float32)
    framed = crop_or_pad(images, relion_window(classset), fill=0.0)
    return fourier_resample(framed, RELION_IMAGE_SIZE)
