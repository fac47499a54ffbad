"""Affinity between 2D class averages: 1 = the same view, 0 = nothing in common.

The affinity of two class averages does not depend on how each is rotated in-plane or shifted. It is
the geometric mean of two scores, each the largest normalised cross-correlation over all in-plane
rotations of a polar resampling:

* the *amplitude spectrum* (square root of the Fourier amplitude), which a shift leaves unchanged;
* the *image* itself, centred on its centre of mass, which also sees the phases (two views with
  similar spectra but different shapes).

Steps: remove the background (mean outside the particle circle), apply a soft circular mask (the box
edges would add streaks to the spectrum that do not rotate with the particle), scale to unit RMS,
Fourier-crop to ``size`` px (speed and noise). Resample both on polar grids (rings 1 px apart,
``n_angles`` steps per turn; the spectrum of a real image is centrosymmetric, so half a turn is
enough for it). An in-plane rotation is then a circular shift along the angle axis: the correlation
at every shift of every pair comes from an FFT along that axis and one batched complex matrix
product per angular frequency (no Python loop over pairs); the shift grid is interpolated 4 times
finer by zero-padding the inverse FFT.

Before correlating, each polar array has the *set's* mean radial profile subtracted (a whitening:
what all classes share, the fall-off of density with radius and of the spectrum with frequency,
would otherwise make every pair look alike), so an affinity depends slightly on the other classes.
Correlations are clipped at 0; the diagonal is exactly 1.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import InputError

#: polar samples are taken this many times more finely in angle, then averaged into the bins
ANGULAR_OVERSAMPLING = 4
#: angular shifts are searched on a grid this many times finer than the bins (Fourier interpolation)
SHIFT_OVERSAMPLING = 4
#: outer radius of the spectrum rings, as a fraction of the cropped spectrum's Nyquist radius
SPECTRUM_RADIUS = 0.5
#: outer radius of the image rings, as a fraction of the box (inside the soft mask)
IMAGE_RADIUS = 0.42
#: soft mask: 1 within MASK_INNER box of the centre, cosine fall to 0 at MASK_OUTER box
MASK_INNER, MASK_OUTER = 0.40, 0.45
#: memory for one block of the pairwise correlation array, bytes
BLOCK_BYTES = 64 * 2 ** 20


def _validate(images, n_angles: int, size: int) -> np.ndarray:
    if not hasattr(images, "ndim"):
        images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] < 16:
        raise InputError(f"class averages must be a stack of square images of at least 16 px, "
                         f"got shape {images.shape}", fix="give a (n, box, box) stack")
    if len(images) == 0:
        raise InputError("no class averages given", fix="give at least one class average")
    if int(n_angles) != n_angles or n_angles < 8 or n_angles % 2:
        raise InputError(f"n_angles must be an even whole number >= 8, got {n_angles}",
                         fix="use the default 36 (10 degree steps)")
    if int(size) != size or size < 16:
        raise InputError(f"size must be a whole number >= 16, got {size}", fix="use the default 64")
    return images


def _soft_mask(box: int) -> np.ndarray:
    centre = box // 2
    y, x = np.mgrid[:box, :box]
    r = np.hypot(y - centre, x - centre) / box
    edge = np.clip((r - MASK_INNER) / (MASK_OUTER - MASK_INNER), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * edge)).astype(np.float32)


def _polar_points(radii: np.ndarray, n_bins: int, turn: float):
    """(y, x) offsets of the polar samples, oversampled in angle, bin j centred on j * turn / n_bins."""
    n_fine = n_bins * ANGULAR_OVERSAMPLING
    theta = turn * (np.arange(n_fine) + 0.5) / n_fine - turn / (2 * n_bins)
    return radii[:, None] * np.sin(theta)[None, :], radii[:, None] * np.cos(theta)[None, :]


def _sample(stack: np.ndarray, y: np.ndarray, x: np.ndarray, n_bins: int) -> np.ndarray:
    """Bilinear samples of each image of ``stack`` at (y[i], x[i]) -> (n, n_radii, n_bins) bin means."""
    n, size = stack.shape[:2]
    y = np.clip(y, 0, size - 1.001)
    x = np.clip(x, 0, size - 1.001)
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    flat = stack.reshape(n, -1)
    base = (y0 * size + x0).reshape(y0.shape[0], -1) if y0.ndim == 3 else (y0 * size + x0).ravel()[None]
    rows = np.arange(n)[:, None]

    def at(offset):
        return flat[rows, base + offset]

    fy = fy.reshape(base.shape)
    fx = fx.reshape(base.shape)
    top = at(0) * (1 - fx) + at(1) * fx
    bottom = at(size) * (1 - fx) + at(size + 1) * fx
    values = top * (1 - fy) + bottom * fy
    n_radii = y.shape[-2]
    return values.reshape(n, n_radii, n_bins, ANGULAR_OVERSAMPLING).mean(axis=3)


def _centres(small: np.ndarray) -> np.ndarray:
    """(n, 2) centre of mass of the positive, smoothed density, kept within 0.2 box of the centre."""
    size = small.shape[1]
    smooth = ndimage.gaussian_filter(small, sigma=(0, 1.0, 1.0))
    weight = np.clip(smooth, 0, None) * _soft_mask(size)
    total = weight.sum(axis=(1, 2))
    grid = np.arange(size, dtype=np.float64)
    cy = (weight.sum(axis=2) @ grid) / np.where(total > 0, total, 1.0)
    cx = (weight.sum(axis=1) @ grid) / np.where(total > 0, total, 1.0)
    centre = np.stack([cy, cx], axis=1)
    centre[total <= 0] = size // 2
    return np.clip(centre, size // 2 - 0.2 * size, size // 2 + 0.2 * size)


def polar_representations(images, n_angles: int = 36, size: int = 64, chunk: int = 32):
    """Polar resamplings of each class average: (spectra, images), float32.

    spectra: (n, n_radii, n_angles // 2) square-root amplitude spectrum over half a turn
    images:  (n, n_radii, n_angles) centred image over a full turn, weighted by sqrt(radius)
    Rotating a class average by 360 / n_angles degrees shifts both by one bin along the last axis.
    """
    images = _validate(images, n_angles, size)
    n, box = len(images), images.shape[1]
    size = min(int(size) // 2 * 2, box // 2 * 2)
    half = size // 2
    low = np.r_[0:half, box - half:box]  # the frequencies kept by Fourier cropping
    mask = _soft_mask(box)
    outside = mask < 1e-3
    spec_y, spec_x = _polar_points(np.arange(1.0, SPECTRUM_RADIUS * half + 1e-9), n_angles // 2, np.pi)
    img_radii = np.arange(0.0, IMAGE_RADIUS * size)
    img_y, img_x = _polar_points(img_radii, n_angles, 2 * np.pi)
    radial_weight = np.sqrt(img_radii + 0.5).astype(np.float32)[:, None]
    spectra = np.empty((n, spec_y.shape[0], n_angles // 2), np.float32)
    polar = np.empty((n, len(img_radii), n_angles), np.float32)
    for start in range(0, n, chunk):
        block = np.array(images[start:start + chunk], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if bad.any():
            raise InputError(f"class average {start + int(np.flatnonzero(bad)[0]) + 1} has NaN or "
                             f"infinite pixels", fix="re-run or repair the classification outputs")
        block -= block[:, outside].mean(axis=1)[:, None, None]
        block *= mask
        rms = np.sqrt((block ** 2).mean(axis=(1, 2)))
        block /= np.where(rms > 0, rms, 1.0)[:, None, None]
        cropped = np.fft.fftshift(scipy.fft.fft2(block)[:, low][:, :, low], axes=(1, 2))
        amplitude = np.sqrt(np.abs(cropped)).astype(np.float32)
        spectra[start:start + len(block)] = _sample(amplitude, half + spec_y, half + spec_x, n_angles // 2)
        small = scipy.fft.ifft2(np.fft.ifftshift(cropped, axes=(1, 2))).real.astype(np.float32)
        centre = _centres(small)
        ys = centre[:, 0, None, None] + img_y[None]
        xs = centre[:, 1, None, None] + img_x[None]
        polar[start:start + len(block)] = _sample(small, ys, xs, n_angles) * radial_weight
    return spectra, polar


def _whiten(polar: np.ndarray) -> np.ndarray:
    """Subtract the set's mean radial profile, then each array's mean; scale to unit norm."""
    centred = polar.astype(np.float64) - polar.mean(axis=(0, 2), dtype=np.float64, keepdims=True)
    centred -= centred.mean(axis=(1, 2), keepdims=True)
    norm = np.sqrt((centred ** 2).sum(axis=(1, 2), keepdims=True))
    return centred / np.where(norm > 1e-12, norm, np.inf)


def max_rotational_correlation(polar: np.ndarray, mirror: bool = False) -> np.ndarray:
    """(n, n) largest cross-correlation over circular shifts of the last axis of unit-norm arrays.

    With ``mirror`` the reversed arrays (angle -> -angle, a mirrored image) are tried too.
    """
    n, _, n_bins = polar.shape
    n_shifts = n_bins * SHIFT_OVERSAMPLING
    # (n_freq, n, n_radii): one complex matrix product per angular frequency gives all pairs
    coeffs = np.fft.rfft(polar, axis=2)
    if n_bins % 2 == 0:
        # the Nyquist term is counted once by an n_bins inverse FFT but twice once zero-padded:
        # halving its weight (sqrt(1/2) on each factor) makes the padded one exact on the grid
        coeffs[:, :, -1] *= np.sqrt(0.5)
    coeffs = np.ascontiguousarray(coeffs.transpose(2, 0, 1))
    coeffs_t = coeffs.transpose(0, 2, 1)
    rows = max(1, BLOCK_BYTES // (8 * n * n_shifts))
    best = np.empty((n, n), np.float64)
    for start in range(0, n, rows):
        block = coeffs[:, start:start + rows]
        crosses = [np.conj(block) @ coeffs_t]
        if mirror:  # the spectrum of a reversed real sequence is the conjugate
            crosses.append(np.conj(block @ coeffs_t))
        value = None
        for cross in crosses:  # (n_freq, rows, n) -> correlation at every (interpolated) shift
            corr = np.fft.irfft(cross.transpose(1, 2, 0), n=n_shifts, axis=2).max(axis=2)
            value = corr if value is None else np.maximum(value, corr)
        best[start:start + rows] = value * SHIFT_OVERSAMPLING
    return best


def affinity_matrix(images, n_angles: int = 36, mirror: bool = False, size: int = 64) -> np.ndarray:
    """Pairwise affinity of class averages, invariant to in-plane rotation and shift.

    images:    (n, box, box) class averages (any float dtype; a memory map is read in chunks)
    n_angles:  angular steps per turn (36 = 10 degrees; shifts are interpolated 4 times finer)
    mirror:    also count a mirrored class average as the same view (off by default: in 2D a
               mirrored projection is a different view unless the particle has a mirror symmetry)
    size:      the class averages are compared Fourier-cropped to ``size`` px

    Returns an (n, n) float64 array in [0, 1], symmetric, with 1 on the diagonal.
    """
    spectra, polar = polar_representations(images, n_angles=n_angles, size=size)
    affinity = np.ones((len(spectra), len(spectra)))
    for array in (spectra, polar):
        corr = max_rotational_correlation(_whiten(array), mirror=mirror)
        affinity *= np.clip(0.5 * (corr + corr.T), 0.0, 1.0)
    affinity = np.sqrt(affinity)
    np.fill_diagonal(affinity, 1.0)
    return affinity
