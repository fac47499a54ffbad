"""Image maths shared by the feature sets and the preprocessing, vectorised over stacks.

Every function takes a stack of square images ``(n, box, box)`` and works on all images at once
(no per-pixel Python loops). The image centre is pixel ``box // 2`` on both axes, RELION's
convention, and it stays on pixel ``size // 2`` through cropping, padding and resampling.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple, Optional

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

#: FFT threads: the machines this runs on are shared, two are plenty for 64-256 px stacks
FFT_WORKERS = max(1, min(2, os.cpu_count() or 1))


def as_stack(images) -> np.ndarray:
    """``images`` as a float32 (n, box, box) array; a single (box, box) image becomes (1, box, box)."""
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        raise ValueError(f"expected a stack of square images (n, box, box), got shape {stack.shape}")
    return stack


def even_size(value: float, minimum: int = 2) -> int:
    """The even integer nearest to ``value`` (ties go up), at least ``minimum``."""
    return max(int(minimum), 2 * int(np.floor(float(value) / 2.0 + 0.5)))


# ----------------------------------------------------------------------------- geometry
def radius_grid(size: int) -> np.ndarray:
    """(size, size) distance of every pixel from the centre pixel ``size // 2``."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    return np.hypot(coords[:, None], coords[None, :])


def disc_mask(size: int, radius: float) -> np.ndarray:
    """(size, size) bool: pixels at distance <= ``radius`` from the centre."""
    return radius_grid(size) <= radius


def ring_mask(size: int, inner: float, outer: float) -> np.ndarray:
    """(size, size) bool: pixels with ``inner <= distance <= outer`` (compared as squares, as RELION)."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    r2 = coords[:, None] ** 2 + coords[None, :] ** 2
    return (r2 >= inner * inner) & (r2 <= outer * outer)


def soft_disc(size: int, radius: float, edge: float) -> np.ndarray:
    """(size, size) float: 1 inside ``radius``, a raised-cosine fall to 0 over ``edge`` pixels outside."""
    r = radius_grid(size)
    t = np.clip((r - radius) / max(edge, 1e-9), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * t)


# ----------------------------------------------------------------------------- crop / pad / resample
def crop_or_pad(stack: np.ndarray, size: int, fill=0.0) -> np.ndarray:
    """Centre window of ``size`` px; pixels outside the original box get ``fill`` (scalar or (n,))."""
    stack = as_stack(stack)
    n, box = stack.shape[0], stack.shape[1]
    if size == box:
        return stack.copy()
    out = np.empty((n, size, size), dtype=np.float32)
    out[...] = np.asarray(fill, dtype=np.float32).reshape(-1, 1, 1) if np.ndim(fill) else fill
    offset = size // 2 - box // 2          # destination index = source index + offset
    lo, hi = max(0, -offset), min(box, size - offset)
    out[:, lo + offset:hi + offset, lo + offset:hi + offset] = stack[:, lo:hi, lo:hi]
    return out


def fourier_resample(stack: np.ndarray, size: int) -> np.ndarray:
    """Resample every image to ``size`` x ``size`` by cropping or zero-padding its Fourier transform.

    The frequencies kept are those with |k| <= (min(box, size) - 1) // 2 on each axis (the Nyquist
    row/column of the smaller grid is dropped, which keeps the result exactly real and Hermitian
    consistent). The image mean is kept and the field of view is unchanged: the pixel size becomes
    ``pixel_size * box / size``.
    """
    stack = as_stack(stack)
    n, box = stack.shape[0], stack.shape[1]
    size = int(size)
    if size == box:
        return stack.copy()
    spectrum = sfft.rfft2(stack, workers=FFT_WORKERS)
    kmax = (min(box, size) - 1) // 2
    out = np.zeros((n, size, size // 2 + 1), dtype=spectrum.dtype)
    out[:, :kmax + 1, :kmax + 1] = spectrum[:, :kmax + 1, :kmax + 1]
    if kmax > 0:
        out[:, size - kmax:, :kmax + 1] = spectrum[:, box - kmax:, :kmax + 1]
    resampled = sfft.irfft2(out, s=(size, size), workers=FFT_WORKERS)
    resampled *= (size * size) / float(box * box)
    return resampled.astype(np.float32, copy=False)


def _window_grid(window_px: float, size: int, tries: int = 16):
    """(cut, resampled size), both even, cut >= window, with cut / resampled closest to window / size."""
    first = max(2, 2 * int(np.ceil(window_px / 2.0 - 1e-9)))
    best = None
    for cut in range(first, first + 2 * tries, 2):
        resampled = even_size(cut * size / window_px, minimum=size)
        error = abs(cut * size / (resampled * window_px) - 1.0)
        if best is None or error < best[0] - 1e-12:
            best = (error, cut, resampled)
    return best[1], best[2]


class Window(NamedTuple):
    """One framed image of a stack: the centre ``window_px`` resampled to ``size`` px, ``fill`` outside."""
    window_px: float
    size: int
    fill: object = 0.0


def window_resample(stack: np.ndarray, window_px: float, size: int, fill=0.0) -> np.ndarray:
    """The centre window of ``window_px`` (any real number of pixels) resampled to ``size`` px.

    Outside the original box the window is ``fill`` (scalar or one value per image). The window is
    first cut (or padded) to an even whole number of pixels >= ``window_px``, Fourier-resampled so
    that ``window_px`` spans ``size`` px, then the centre ``size`` px are kept. The cut is chosen
    among a few even sizes to make the scale error small (typically < 0.2%), so the same physical
    window gives the same image whatever the box and pixel size.

    Computed as the equivalent separable linear map (see :func:`resample_windows`).
    """
    return resample_windows(stack, [Window(window_px, size, fill)])[0]


def _window_operator_1d(box: int, cut: int, resampled: int, size: int) -> np.ndarray:
    """(size, cut + box) float64: one axis of crop_or_pad(box -> cut), fourier_resample(cut ->
    resampled), crop_or_pad(resampled -> size), as a matrix.

    Columns ``[:box]`` act on the box's pixels; columns ``[box:]`` are the operator on the whole cut
    (their row sums give the image of a constant window, used for the fill).
    """
    if resampled == cut:
        operator = np.eye(cut)
    else:
        # fourier_resample keeps the frequencies |k| <= kmax of the cut; along one axis it is
        # x_out[m] = sum_j x[j] D(2 pi (m / resampled - j / cut)) / cut with the Dirichlet kernel
        # D(theta) = sum_{|k| <= kmax} exp(i k theta) = sin((kmax + 1/2) theta) / sin(theta / 2)
        kmax = (min(cut, resampled) - 1) // 2
        m = np.arange(resampled, dtype=np.int64)
        j = np.arange(cut, dtype=np.int64)
        period = resampled * cut                  # theta = 2 pi t / period, t an exact integer
        t = np.mod(m[:, None] * cut - j[None, :] * resampled, period)
        numerator = np.sin(np.pi * np.mod((2 * kmax + 1) * t, 2 * period) / period)
        denominator = np.sin(np.pi * t / period)
        kernel = np.divide(numerator, denominator, out=np.full(t.shape, 2.0 * kmax + 1.0), where=t != 0)
        operator = kernel / cut
    rows = np.arange(size) - (size // 2 - resampled // 2)          # crop_or_pad(resampled -> size)
    on_grid = (rows >= 0) & (rows < resampled)
    framed = np.zeros((size, cut))
    framed[on_grid] = operator[rows[on_grid]]
    source = np.arange(box) + (cut // 2 - box // 2)                # crop_or_pad(box -> cut)
    in_cut = (source >= 0) & (source < cut)
    on_box = np.zeros((size, box))
    on_box[:, in_cut] = framed[:, source[in_cut]]
    return np.concatenate([on_box, framed], axis=1)


@functools.lru_cache(maxsize=32)
def _window_operator(box: int, window_px: float, size: int):
    """(matrix (size, box) float32, fill image (size, size) float64) of one window, read-only.

    The framed image is ``matrix @ image @ matrix.T + fill_value * fill_image``: the fill covers
    the cut where the box does not (the whole cut's image minus the box's).
    """
    cut, resampled = _window_grid(window_px, size)
    full = _window_operator_1d(box, cut, resampled, size)
    matrix, whole = full[:, :box], full[:, box:]
    on_box, on_cut = matrix.sum(axis=1), whole.sum(axis=1)
    fill_image = np.outer(on_cut, on_cut) - np.outer(on_box, on_box)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    fill_image.flags.writeable = False
    return matrix, fill_image


def resample_windows(stack: np.ndarray, windows, chunk_pixels: int = 1 << 21) -> list:
    """Several framed images of every image of ``stack`` in one pass over it.

    ``windows``: :class:`Window` (window_px, size, fill) tuples, each as in :func:`window_resample`.
    Returns one (n, size, size) float32 array per window. Cropping, padding and Fourier
    resampling are linear and separable, so every window is ``A @ image @ A.T`` (plus the fill
    times a fixed image) with a small real matrix ``A`` (size x box): the products along x of all
    windows are one matrix product over the stack, a few images at a time (float32, as the FFTs
    were; the result equals the crop / FFT / crop route to float32 rounding).
    """
    stack = as_stack(stack)
    windows = [Window(float(w[0]), int(w[1]), w[2] if len(w) > 2 else 0.0) for w in windows]
    n, box = stack.shape[0], stack.shape[1]
    for window in windows:
        if window.window_px <= 0:
            raise ValueError(f"window must be positive, got {window.window_px}")
    operators = [_window_operator(box, window.window_px, window.size) for window in windows]
    outputs = [np.empty((n, w.size, w.size), dtype=np.float32) for w in windows]
    if n == 0 or not windows:
        return outputs
    stacked = np.concatenate([matrix for matrix, _ in operators], axis=0).T.copy()   # (box, sum sizes)
    edges = np.cumsum([0] + [w.size for w in windows])
    step = max(1, chunk_pixels // (box * box))
    for start in range(0, n, step):
        block = stack[start:start + step]
        along_x = (block.reshape(-1, box) @ stacked).reshape(len(block), box, -1)
        for index, (matrix, _) in enumerate(operators):
            np.matmul(matrix, along_x[:, :, edges[index]:edges[index + 1]], out=outputs[index][start:start + step])
    for window, (_, fill_image), out in zip(windows, operators, outputs):
        fill = np.asarray(window.fill, dtype=np.float64)
        if np.any(fill != 0):
            out += (fill.reshape(-1, 1, 1) * fill_image).astype(np.float32)
    return outputs


def edge_mean(stack: np.ndarray) -> np.ndarray:
    """(n,) mean of the outermost one-pixel frame of every image (a neutral padding value)."""
    stack = as_stack(stack)
    if stack.shape[1] < 3:
        return stack.reshape(len(stack), -1).mean(axis=1)
    rows = stack[:, [0, -1], :].sum(axis=(1, 2), dtype=np.float64)
    columns = stack[:, 1:-1, [0, -1]].sum(axis=(1, 2), dtype=np.float64)
    total = rows + columns
    return total / (4 * stack.shape[1] - 4)


# ----------------------------------------------------------------------------- Fourier filters
def frequency_radius(size: int) -> np.ndarray:
    """(size, size // 2 + 1) spatial frequency radius, in Fourier pixels (shells), in rfft2 layout."""
    ky = sfft.fftfreq(size, d=1.0 / size)
    kx = sfft.rfftfreq(size, d=1.0 / size)
    return np.hypot(ky[:, None], kx[None, :])


def frequency_angle(size: int) -> np.ndarray:
    """(size, size // 2 + 1) orientation of each frequency in [0, pi), rfft2 layout."""
    ky = sfft.fftfreq(size, d=1.0 / size)
    kx = sfft.rfftfreq(size, d=1.0 / size)
    return np.mod(np.arctan2(ky[:, None], kx[None, :]), np.pi)


def rfft_weights(size: int) -> np.ndarray:
    """(size // 2 + 1,) how many times each rfft2 column stands in the full spectrum (1 or 2)."""
    weights = np.full(size // 2 + 1, 2.0)
    weights[0] = 1.0
    if size % 2 == 0:
        weights[-1] = 1.0
    return weights


def raised_cosine_lowpass(size: int, cutoff_shell: float, edge_width: float = 2.0) -> np.ndarray:
    """(size, size // 2 + 1) filter: 1 below ``cutoff - width/2`` shells, 0 above ``cutoff + width/2``,
    a raised cosine in between."""
    k = frequency_radius(size)
    low = max(0.0, cutoff_shell - edge_width / 2.0)
    high = cutoff_shell + edge_width / 2.0
    t = np.clip((k - low) / max(high - low, 1e-9), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * t)


def lowpass(stack: np.ndarray, cutoff_shell: float, edge_width: float = 2.0) -> np.ndarray:
    """Low-pass every image at ``cutoff_shell`` Fourier pixels with a raised-cosine edge."""
    stack = as_stack(stack)
    size = stack.shape[1]
    spectrum = sfft.rfft2(stack, workers=FFT_WORKERS)
    spectrum *= raised_cosine_lowpass(size, cutoff_shell, edge_width).astype(np.float32)
    return sfft.irfft2(spectrum, s=(size, size), workers=FFT_WORKERS).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- statistics
class Moments(NamedTuple):
    """Per-image statistics over a mask: sum, mean, population stddev, number of pixels (all (n,))."""
    sum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def masked_moments(stack: np.ndarray, mask: np.ndarray) -> Moments:
    """Sum, mean and population stddev of every image over ``mask`` ((box, box) or (n, box, box)).

    An empty mask gives sum, mean and stddev 0.
    """
    stack = as_stack(stack)
    n = len(stack)
    flat = stack.reshape(n, -1).astype(np.float64, copy=False)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        weights = mask.reshape(-1).astype(np.float64)
        count = np.full(n, weights.sum())
        total = flat @ weights
        total_sq = (flat * flat) @ weights
    else:
        weights = mask.reshape(n, -1)
        count = weights.sum(axis=1).astype(np.float64)
        masked = np.where(weights, flat, 0.0)
        total = masked.sum(axis=1)
        total_sq = (masked * masked).sum(axis=1)
    safe = np.maximum(count, 1.0)
    mean = np.where(count > 0, total / safe, 0.0)
    var = np.where(count > 0, total_sq / safe - mean * mean, 0.0)
    return Moments(total, mean, np.sqrt(np.maximum(var, 0.0)), count)


def radial_bins(size: int, bin_width: float = 1.0) -> np.ndarray:
    """(size, size) integer ring index of every pixel: round(distance / bin_width)."""
    return np.floor(radius_grid(size) / bin_width + 0.5).astype(np.int64)


def radial_profile(stack: np.ndarray, bin_width: float = 1.0, max_radius: Optional[float] = None):
    """Rotational average of every image.

    Returns ``(profile (n, n_bins), radii (n_bins,))``: ring ``b`` holds the pixels with
    round(distance / bin_width) == b, up to ``max_radius`` (default: the largest inscribed circle).
    """
    stack = as_stack(stack)
    n, size = stack.shape[0], stack.shape[1]
    bins = radial_bins(size, bin_width).reshape(-1)
    if max_radius is None:
        max_radius = size // 2
    n_bins = int(np.floor(max_radius / bin_width + 0.5)) + 1
    order = np.argsort(bins, kind="stable")
    sorted_bins = bins[order]
    keep = sorted_bins < n_bins
    order, sorted_bins = order[keep], sorted_bins[keep]
    starts = np.searchsorted(sorted_bins, np.arange(n_bins))
    counts = np.bincount(sorted_bins, minlength=n_bins).astype(np.float64)
    values = stack.reshape(n, -1)[:, order].astype(np.float64)
    sums = np.add.reduceat(values, np.minimum(starts, values.shape[1] - 1), axis=1)
    sums[:, counts == 0] = 0.0
    profile = sums / np.maximum(counts, 1.0)
    return profile, np.arange(n_bins) * bin_width


def centre_of_mass(weights: np.ndarray) -> np.ndarray:
    """(n, 2) centre of mass (dy, dx) of non-negative ``weights`` relative to the centre pixel.

    Images whose weights sum to zero give (0, 0).
    """
    weights = as_stack(weights).astype(np.float64)
    size = weights.shape[1]
    coords = np.arange(size, dtype=np.float64) - size // 2
    total = weights.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    dy = weights.sum(axis=2) @ coords / safe
    dx = weights.sum(axis=1) @ coords / safe
    return np.stack([np.where(total > 0, dy, 0.0), np.where(total > 0, dx, 0.0)], axis=1)


def skewness_kurtosis(stack: np.ndarray, mask: np.ndarray):
    """(n,) skewness and excess kurtosis of every image over the (box, box) ``mask``; 0 for flat images."""
    stack = as_stack(stack)
    values = stack.reshape(len(stack), -1)[:, np.asarray(mask, bool).reshape(-1)].astype(np.float64)
    centred = values - values.mean(axis=1, keepdims=True)
    var = (centred ** 2).mean(axis=1)
    ok = var > 1e-20 * np.maximum(np.abs(values).max(axis=1, initial=0.0) ** 2, 1e-300)
    safe = np.where(ok, var, 1.0)
    skew = (centred ** 3).mean(axis=1) / safe ** 1.5
    kurt = (centred ** 4).mean(axis=1) / safe ** 2 - 3.0
    return np.where(ok, skew, 0.0), np.where(ok, kurt, 0.0)


# ----------------------------------------------------------------------------- connected components
def label_stack(binary: np.ndarray, connectivity: int = 4):
    """Connected components of every image of a boolean stack, in one ``scipy.ndimage.label`` call.

    Components never join across images. Returns ``(labels (n, box, box), owner (n_labels + 1,),
    n_labels)`` where ``owner[label]`` is the image holding the component (``owner[0] = -1``).
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim == 2:
        binary = binary[None]
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    plane = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    if not binary[:, 0].any() and not binary[:, -1].any():
        # empty first and last rows keep the images apart when they are stacked vertically: one
        # 2D labelling, numbered in the same raster order as the 3D one (and faster)
        labels, n_labels = ndimage.label(binary.reshape(-1, binary.shape[2]), structure=plane)
        labels = labels.reshape(binary.shape)
    else:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = plane
        labels, n_labels = ndimage.label(binary, structure=structure)
    owner = np.full(n_labels + 1, -1, dtype=np.int64)
    image_index = np.broadcast_to(np.arange(len(binary))[:, None, None], binary.shape)
    owner[labels[binary]] = image_index[binary]
    return labels, owner, int(n_labels)


def dilate_stack(binary: np.ndarray, iterations: int = 1, connectivity: int = 4) -> np.ndarray:
    """Binary dilation of every image of a stack (never across images), outside the image False.

    The same as ``scipy.ndimage.binary_dilation`` with the 3 x 3 cross (4) or square (8) in the
    image plane, done with shifted ORs over the whole stack.
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim == 2:
        return dilate_stack(binary[None], iterations, connectivity)[0]
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    out = binary.copy()
    for _ in range(int(iterations)):
        previous = out
        out = previous.copy()
        out[:, 1:, :] |= previous[:, :-1, :]
        out[:, :-1, :] |= previous[:, 1:, :]
        if connectivity == 8:       # the square: the rows already grown, shifted sideways
            grown = out.copy()
            out[:, :, 1:] |= grown[:, :, :-1]
            out[:, :, :-1] |= grown[:, :, 1:]
        else:
            out[:, :, 1:] |= previous[:, :, :-1]
            out[:, :, :-1] |= previous[:, :, 1:]
    return out


# ----------------------------------------------------------------------------- grey morphology
def _disc_half_widths(radius: int) -> list:
    """[(dy, half width of the disc row dy)] for the digital disc dx^2 + dy^2 <= radius^2."""
    return [(dy, int(np.floor(np.sqrt(radius * radius - dy * dy) + 1e-9)))
            for dy in range(-radius, radius + 1)]


def _disc_filter(stack: np.ndarray, radius: int, extreme) -> np.ndarray:
    """min (erosion) or max (dilation) of every image over the disc dx^2 + dy^2 <= radius^2.

    Row extremes of growing width are built by combining shifted copies (width 2w+1 from 2w-1),
    then rows dy = -radius..radius, each with the half width of the disc at dy, are combined.
    Pixels outside the image are ignored: the 'symmetric' padding (edge pixel repeated) only brings
    in pixels that are themselves inside the disc around the output pixel.
    """
    size = stack.shape[1]
    padded = np.pad(stack, ((0, 0), (radius, radius), (radius, radius)), mode="symmetric")
    # rows[w][:, y, j]: extreme over padded x in [j, j + 2w]; width 3 from three shifts, then
    # width 2w+1 = union of two width-(2w-1) windows centred one pixel either side
    rows = [padded]
    if radius >= 1:
        rows.append(extreme(extreme(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:]))
    for _ in range(2, radius + 1):
        previous = rows[-1]
        rows.append(extreme(previous[:, :, :-2], previous[:, :, 2:]))
    out = None
    for dy, half in _disc_half_widths(radius):
        shifted = rows[half][:, radius + dy:radius + dy + size, radius - half:radius - half + size]
        out = shifted.copy() if out is None else extreme(out, shifted, out=out)
    return out


def grey_erosion_disc(stack: np.ndarray, radius: int) -> np.ndarray:
    """Grey erosion (minimum) of every image over the disc dx^2 + dy^2 <= radius^2."""
    stack = as_stack(stack)
    if radius <= 0:
        return stack.copy()
    return _disc_filter(stack, int(radius), np.minimum)


def grey_dilation_disc(stack: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation (maximum) of every image over the disc dx^2 + dy^2 <= radius^2."""
    stack = as_stack(stack)
    if radius <= 0:
        return stack.copy()
    return _disc_filter(stack, int(radius), np.maximum)


def grey_opening_disc(stack: np.ndarray, radius: int) -> np.ndarray:
    """Grey opening (erosion then dilation) with a disc, pixels outside the image ignored.

    Equal to ``scipy.ndimage.grey_opening(image, footprint=disc, mode='reflect')`` but runs on the
    whole stack with shifted-array minima and maxima (a few dozen array operations per radius).
    """
    return grey_dilation_disc(grey_erosion_disc(stack, radius), radius)


def opening_sums(stack: np.ndarray, radii, chunk_pixels: int = 1 << 18) -> np.ndarray:
    """(n, len(radii)) sum of every image after a grey opening with a disc of each radius.

    Works through the stack a few images at a time so that the arrays stay in the CPU cache.
    """
    stack = as_stack(stack)
    n, size = stack.shape[0], stack.shape[1]
    out = np.zeros((n, len(radii)))
    step = max(1, chunk_pixels // max(size * size, 1))
    for start in range(0, n, step):
        block = stack[start:start + step]
        for j, radius in enumerate(radii):
            out[start:start + step, j] = grey_opening_disc(block, radius).sum(axis=(1, 2), dtype=np.float64)
    return out


# ----------------------------------------------------------------------------- thresholds
def otsu_thresholds(values: np.ndarray, bins: int = 64) -> np.ndarray:
    """(n,) Otsu threshold of every row of ``values`` (n, m): the histogram split (``bins`` bins)
    that maximises the between-class variance. Constant rows give their value."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    lo, hi = values.min(axis=1), values.max(axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    index = np.clip(((values - lo[:, None]) / span[:, None] * bins).astype(np.int64), 0, bins - 1)
    index += (np.arange(n) * bins)[:, None]
    hist = np.bincount(index.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)
    centres = lo[:, None] + (np.arange(bins) + 0.5) / bins * span[:, None]
    weight_low = np.cumsum(hist, axis=1)[:, :-1]
    weight_high = hist.sum(axis=1, keepdims=True) - weight_low
    mass_low = np.cumsum(hist * centres, axis=1)[:, :-1]
    mass_high = (hist * centres).sum(axis=1, keepdims=True) - mass_low
    with np.errstate(divide="ignore", invalid="ignore"):
        between = weight_low * weight_high * (mass_low / weight_low - mass_high / weight_high) ** 2
    between = np.where(np.isfinite(between), between, -1.0)
    split = np.argmax(between, axis=1)
    return np.where(hi > lo, lo + (split + 1) / bins * span, lo)
