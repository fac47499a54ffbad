"""ClassRanker's own feature vector: invariant to box and pixel size, robust to missing metadata.

Image features are measured on a fixed physical frame: the centre window of
``WINDOW_DIAMETERS`` x the particle diameter (the whole box when the diameter or the pixel size is
unknown; the particle is then assumed to span 1 / WINDOW_DIAMETERS of the box), padded with the
image's edge mean where the window leaves the box, Fourier-resampled to ``FRAME_SIZE`` px. In
that frame the particle radius is always ``FRAME_SIZE / (2 * WINDOW_DIAMETERS)`` px, distances
are in particle radii (r) and spatial frequencies in shells of the frame (shell k = resolution
WINDOW_DIAMETERS * diameter / k). Intensities are standardised (mean 0, stddev 1 over r <= 1.45),
so only ``log_signal_std`` sees the absolute scale. In ``FEATURE_TABLE``: ``z`` is the
standardised frame, ``z_lowpass`` the same low-passed at shell ``SEGMENT_SHELL`` (diameter / 8),
``r`` the distance from the centre in particle radii, blobs the 8-connected regions of
``z_lowpass`` above its Otsu threshold (computed within r <= 1.2).

Every metadata feature ``x`` has a companion ``x_known`` (1 known, 0 unknown); unknown values are
0 after normalisation (the neutral value), so one model works with and without metadata.
Constant (e.g. all-zero) averages give ``empty = 1`` and 0 for every image feature.

Each feature is normalised with fixed constants, ``(raw - centre) / scale``, so one class's
vector never depends on the other classes. The constants give roughly zero mean and unit spread
on the RELION 3.0 beta-galactosidase tutorial Class2D job (100 classes); revisit them with more
data. ``FEATURE_TABLE`` documents every column.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft

from ..classset import ClassSet
from .image import (FFT_WORKERS, Window, as_stack, dilate_stack, edge_mean, frequency_angle, frequency_radius,
                    label_stack, lowpass, otsu_thresholds, radial_bins, radius_grid, resample_windows,
                    rfft_weights, soft_disc)
from .metadata import particle_counts, positive_or_none

FRAME_SIZE = 64
WINDOW_DIAMETERS = 1.5                              # frame width in particle diameters
PARTICLE_RADIUS_PX = FRAME_SIZE / (2.0 * WINDOW_DIAMETERS)
FRAME_EDGE_R = 1.45                                 # image statistics use r <= 1.45 (inside the frame)
OUTSIDE_R = (1.05, 1.45)                            # the ring just outside the particle
SEGMENT_SHELL = 12.0                                # low-pass for segmentation: diameter / 8
MIN_BLOB_FRACTION = 0.01                            # blobs smaller than 1% of the particle disc are ignored
SOLVENT_MARGIN_PX = 2                               # blobs are dilated by this before taking the solvent
MIN_SOLVENT_PX = 20
POWER_BANDS = ((1, 6), (6, 12), (12, 25))           # shells: > D/4, D/4 - D/8, D/8 - D/16
ANGLE_BAND = (3, 25)
ANGLE_BINS = 12
ACCURACY_NOT_CONVERGED = 99.0                       # RELION writes 999 for "not estimated"
RESOLUTION_RELATIVE_CAP = 0.5                       # res / diameter; infinite resolution -> cap
MIN_DISTRIBUTION_RATIO = 1e-3


class Spec(NamedTuple):
    """One feature: name, what it means, how it is computed, and its fixed normalisation."""
    name: str
    meaning: str
    how: str
    centre: float = 0.0
    scale: float = 1.0
    flag: bool = False                  # 0/1 value, not normalised

    @property
    def normalisation(self) -> str:
        if self.flag:
            return "0/1, not scaled"
        return f"(x - {self.centre:g}) / {self.scale:g}; unknown -> 0"


def _flag(name: str, meaning: str, how: str) -> Spec:
    return Spec(name, meaning, how, flag=True)


def _known(base: str, what: str) -> Spec:
    return _flag(f"{base}_known", f"1 when {what} is known", f"1 if {what} is available, else 0")


SPECS = [
    # ---- metadata
    Spec("log_class_distribution", "class size relative to a uniform share",
         "ln(max(class_distribution * K, 1e-3)), K = number of classes", -1.5, 2.0),
    _known("log_class_distribution", "the class distribution"),
    Spec("log_particle_count", "number of particles in the class",
         "log10(max(particle_count, 1)) (counted from the particles when not given)", 2.5, 1.0),
    _known("log_particle_count", "the particle count"),
    Spec("accuracy_rotations", "angular accuracy of the class",
         "ln(max(deg, 0.1)); values >= 99 (not converged) -> neutral", 1.0, 0.7),
    _known("accuracy_rotations", "the angular accuracy"),
    Spec("accuracy_translations", "translational accuracy relative to the particle size",
         "ln(max(A / diameter, 1e-4)); values >= 99 -> neutral", -4.5, 0.7),
    _known("accuracy_translations", "the translational accuracy (and a length scale)"),
    _flag("not_converged", "RELION did not estimate the accuracies (999)",
          "1 if accuracy_rotations or accuracy_translations >= 99"),
    Spec("resolution_relative", "class resolution relative to the particle size",
         "ln(res / diameter), infinite or > 0.5 D capped at 0.5 D", -2.0, 0.7),
    _known("resolution_relative", "the resolution (and a length scale)"),
    Spec("resolution_nyquist", "class resolution as a fraction of Nyquist (depends on sampling)",
         "2 * pixel_size / res (0 for infinite resolution)", 0.3, 0.2),
    _known("resolution_nyquist", "the resolution and the pixel size"),
    _flag("particle_diameter_known", "the frame is built from the particle diameter",
          "1 if particle diameter and pixel size are known, else the frame is the whole box"),
    # ---- image
    _flag("empty", "the class average is constant (e.g. an all-zero empty class)",
          "max == min (or a vanishing stddev); all image features are then 0"),
    Spec("log_signal_std", "absolute contrast of the average (weak for near-empty classes)",
         "log10 stddev of the framed average within r <= 1", 0.2, 0.3),
    Spec("contrast_in_out", "particle brighter than its surroundings",
         "mean z inside r <= 1 minus mean z in 1.05 <= r <= 1.45", 0.1, 0.4),
    Spec("protein_solvent_contrast", "segmented particle against the solvent inside the mask",
         "mean z of the blobs minus mean z of r <= 1 outside the dilated blobs", 2.7, 0.35),
    Spec("solvent_flatness", "structure left in the solvent (streaks, noise, neighbours)",
         "log10 stddev of z in r <= 1 outside the dilated blobs", -0.3, 0.2),
    Spec("outside_signal", "signal beyond the particle diameter",
         "log10 max(stddev of z in 1.05 <= r <= 1.45 / stddev of z in r <= 1, 0.01)", -1.1, 0.3),
    Spec("com_offset", "particle off-centre",
         "distance from the centre of the centre of mass of max(z_lowpass, 0) within r <= 1.45, in r",
         0.12, 0.08),
    Spec("radial_centroid", "how far from the centre the positive density sits",
         "mean r weighted by max(z_lowpass, 0) within r <= 1.45", 0.5, 0.15),
    Spec("radial_spread", "how concentrated the positive density is",
         "stddev of r weighted by max(z_lowpass, 0) within r <= 1.45", 0.27, 0.1),
    Spec("rotational_symmetry", "featureless round blob (1) versus detailed particle",
         "variance of the rotational average / variance of z within r <= 1", 0.53, 0.17),
    Spec("power_mid", "detail at D/4 - D/8 relative to coarse shape (blur lowers it)",
         "log10 power in shells 6-11 / power in shells 1-5 (tapered r <= 1.45)", -1.25, 0.2),
    Spec("power_high", "detail at D/8 - D/16 relative to coarse shape (blur lowers it)",
         "log10 power in shells 12-24 / power in shells 1-5", -2.45, 0.3),
    Spec("angular_power_peak", "straight edges and streaks (carbon, lines)",
         "ln(max / mean) of the power in shells 3-24 binned in 12 orientations", 0.9, 0.22),
    Spec("gradient_coherence", "one dominant edge orientation",
         "structure-tensor coherence of z_lowpass within r <= 1.45", 0.2, 0.12),
    Spec("n_blobs", "fragments and aggregates",
         "ln(1 + number of Otsu blobs of z_lowpass (>= 1% of the particle disc) in r <= 1.45)", 0.85, 0.3),
    Spec("largest_blob_area", "size of the main density relative to the particle disc",
         "ln(max(area of the largest blob / (pi R^2), 0.01))", -0.95, 0.65),
    Spec("largest_blob_share", "one compact particle (1) versus scattered fragments",
         "area of the largest blob / area of all blobs", 0.95, 0.15),
    Spec("blob_offset", "main density off-centre",
         "distance of the largest blob's centroid from the centre, in r", 0.12, 0.1),
    Spec("blob_outside", "density beyond the particle diameter (neighbours, aggregates)",
         "fraction of the blob area with r > 1", 0.13, 0.24),
    Spec("skewness", "sparse bright density on a dark background (positive) or not",
         "skewness of z within r <= 1", 0.6, 0.5),
    Spec("kurtosis", "peaked intensity distribution",
         "ln kurtosis (Pearson, 3 for a Gaussian) of z within r <= 1", 1.0, 0.25),
]

CLASSRANKER_FEATURE_NAMES = [spec.name for spec in SPECS]
#: (name, meaning, how computed, normalisation), one row per feature
FEATURE_TABLE = [(spec.name, spec.meaning, spec.how, spec.normalisation) for spec in SPECS]

#: the image features (after the ``empty`` flag): 0 (neutral) for empty classes
_IMAGE_FEATURES = CLASSRANKER_FEATURE_NAMES[CLASSRANKER_FEATURE_NAMES.index("empty") + 1:]


# ----------------------------------------------------------------------------- metadata
def _length_scale(classset: ClassSet):
    """Particle diameter in A for relative lengths: the given one, else 1 / WINDOW_DIAMETERS of the
    box when the pixel size is known, else None."""
    diameter = positive_or_none(classset.particle_diameter)
    if diameter is not None:
        return diameter
    apix = positive_or_none(classset.pixel_size)
    return None if apix is None else classset.box_size * apix / WINDOW_DIAMETERS


def metadata_features(classset: ClassSet) -> dict:
    """Raw metadata features (NaN where unknown) and their flags, by name."""
    n = len(classset)
    out = {}
    distribution = classset.stat("class_distribution")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["log_class_distribution"] = np.log(np.maximum(distribution * n, MIN_DISTRIBUTION_RATIO))
        counts = particle_counts(classset)
        out["log_particle_count"] = np.log10(np.maximum(counts, 1.0))

        rotations = classset.stat("accuracy_rotations")
        translations = classset.stat("accuracy_translations")
        out["not_converged"] = ((rotations >= ACCURACY_NOT_CONVERGED)
                                | (translations >= ACCURACY_NOT_CONVERGED)).astype(float)
        converged_rot = np.where(rotations < ACCURACY_NOT_CONVERGED, rotations, np.nan)
        converged_trans = np.where(translations < ACCURACY_NOT_CONVERGED, translations, np.nan)
        out["accuracy_rotations"] = np.log(np.maximum(converged_rot, 0.1))
        out["accuracy_rotations_known"] = np.isfinite(rotations).astype(float)

        diameter = _length_scale(classset)
        scale = np.nan if diameter is None else diameter
        out["accuracy_translations"] = np.log(np.maximum(converged_trans / scale, 1e-4))
        out["accuracy_translations_known"] = (np.isfinite(translations)
                                              & (diameter is not None)).astype(float)

        resolution = classset.stat("resolution")
        resolution = np.where(resolution > 0, resolution, np.nan)      # inf stays: "no resolution"
        out["resolution_relative"] = np.log(np.minimum(resolution / scale, RESOLUTION_RELATIVE_CAP))
        apix = positive_or_none(classset.pixel_size)
        out["resolution_nyquist"] = (np.minimum(2.0 * apix / resolution, 1.0) if apix is not None
                                     else np.full(n, np.nan))
    out["log_class_distribution_known"] = np.isfinite(out["log_class_distribution"]).astype(float)
    out["log_particle_count_known"] = np.isfinite(out["log_particle_count"]).astype(float)
    out["resolution_relative_known"] = np.isfinite(out["resolution_relative"]).astype(float)
    out["resolution_nyquist_known"] = np.isfinite(out["resolution_nyquist"]).astype(float)
    known_diameter = (positive_or_none(classset.particle_diameter) is not None
                      and positive_or_none(classset.pixel_size) is not None)
    out["particle_diameter_known"] = np.full(n, float(known_diameter))
    return out


# ----------------------------------------------------------------------------- image frame
def frame_window(classset: ClassSet) -> Window:
    """The frame of ``classset`` as a :class:`~.image.Window` (window in px, FRAME_SIZE, edge-mean fill)."""
    images = as_stack(classset.images)
    apix = positive_or_none(classset.pixel_size)
    diameter = positive_or_none(classset.particle_diameter)
    window = WINDOW_DIAMETERS * diameter / apix if (apix and diameter) else float(images.shape[1])
    return Window(window, FRAME_SIZE, edge_mean(images))


def frame_images(classset: ClassSet) -> np.ndarray:
    """(n, FRAME_SIZE, FRAME_SIZE) float32: the averages in the fixed physical frame."""
    return resample_windows(classset.images, [frame_window(classset)])[0]


def _constant(images: np.ndarray) -> np.ndarray:
    """(n,) bool: every pixel of the image equals its first pixel (max == min)."""
    stack = as_stack(images)
    flat = stack.reshape(len(stack), -1)
    if flat.shape[1] == 0:
        return np.ones(len(stack), bool)
    # an image with two different pixels in its middle row is not constant: only the others
    # (typically RELION's all-zero empty classes) need a look at every pixel
    box = stack.shape[-1]
    middle = flat[:, (box // 2) * box:(box // 2 + 1) * box]
    constant = (middle == flat[:, :1]).all(axis=1)
    for index in np.flatnonzero(constant):
        constant[index] = flat[index].max() == flat[index].min()
    return constant


class _Geometry:
    """Pixel masks of the frame, in particle radii, and the fixed weights the features sum with.

    Sums of pixel values over fixed masks are matrix products of the (n, pixels) stack with
    (pixels, k) weight matrices, several masks at once.
    """

    def __init__(self, size: int = FRAME_SIZE):
        self.size = size
        self.r = radius_grid(size) / PARTICLE_RADIUS_PX
        self.frame = self.r <= FRAME_EDGE_R
        self.particle = self.r <= 1.0
        self.outside = (self.r >= OUTSIDE_R[0]) & (self.r <= OUTSIDE_R[1])
        self.taper = soft_disc(size, 1.3 * PARTICLE_RADIUS_PX, 0.2 * PARTICLE_RADIUS_PX)
        coords = np.arange(size, dtype=np.float64) - size // 2
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")
        self.shell = frequency_radius(size)
        self.column_weight = rfft_weights(size)[None, :]
        angle_bin = np.minimum((frequency_angle(size) / np.pi * ANGLE_BINS).astype(int), ANGLE_BINS - 1)
        in_band = (self.shell >= ANGLE_BAND[0]) & (self.shell < ANGLE_BAND[1])
        onehot = np.zeros((self.shell.size, ANGLE_BINS))
        onehot[np.flatnonzero(in_band), angle_bin.ravel()[in_band.ravel()]] = 1.0
        self.angle_onehot = onehot * self.column_weight.repeat(size, axis=0).reshape(-1, 1)
        self.band_masks = [((self.shell >= lo) & (self.shell < hi)) * self.column_weight
                           for lo, hi in POWER_BANDS]
        self.radial_bins = radial_bins(size)
        # ---- weight matrices (pixels, k)
        #: masks of masked_moments: frame, particle, outside
        self.masks = np.stack([self.frame.ravel(), self.particle.ravel(), self.outside.ravel()],
                              axis=1).astype(np.float64)
        self.mask_count = self.masks.sum(axis=0)
        #: radial_profile's rings: round(distance) up to size // 2
        n_rings = size // 2 + 1
        rings = self.radial_bins.ravel()
        self.rings = np.zeros((size * size, n_rings))
        self.rings[np.flatnonzero(rings < n_rings), rings[rings < n_rings]] = 1.0
        self.ring_count = self.rings.sum(axis=0)
        ring_of_particle = np.minimum(rings, n_rings - 1)[self.particle.ravel()]
        self.particle_ring_count = np.bincount(ring_of_particle, minlength=n_rings).astype(np.float64)
        self.particle_index = np.flatnonzero(self.particle.ravel())
        self.otsu_index = np.flatnonzero((self.r <= 1.2).ravel())
        #: power bands then angular bins, in rfft2 layout
        self.spectral = np.concatenate([np.stack([band.ravel() for band in self.band_masks], axis=1),
                                        self.angle_onehot], axis=1)
        #: density moments: frame * (1, y, x, r, r^2)
        self.density = (self.frame.ravel()[:, None]
                        * np.stack([np.ones(size * size), self.y.ravel(), self.x.ravel(), self.r.ravel(),
                                    (self.r ** 2).ravel()], axis=1))
        # the frame never touches the outer pixels: gradients there are not needed
        inner = np.zeros((size, size), bool)
        inner[1:-1, 1:-1] = True
        assert not (self.frame & ~inner).any()
        self.frame_index = np.flatnonzero(self.frame.ravel())
        self.blob_y, self.blob_x = self.y.ravel(), self.x.ravel()
        self.blob_outside = (self.r > 1.0).ravel().astype(np.float64)
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False


@functools.lru_cache(maxsize=2)
def _geometry(size: int = FRAME_SIZE) -> _Geometry:
    return _Geometry(size)


def _moments(total, total_sq, count):
    """mean and population stddev from sums, as ``masked_moments`` (0 for an empty mask)."""
    safe = np.maximum(count, 1.0)
    mean = np.where(count > 0, total / safe, 0.0)
    var = np.where(count > 0, total_sq / safe - mean * mean, 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _radial_features(z: np.ndarray, zz: np.ndarray, geo: _Geometry, inside_std: np.ndarray) -> dict:
    """rotational_symmetry (variance of the rotational average over r <= 1), skewness, kurtosis."""
    profile = (z @ geo.rings) / np.maximum(geo.ring_count, 1.0)
    count = geo.mask_count[1]
    _, rotational_std = _moments(profile @ geo.particle_ring_count, (profile * profile) @ geo.particle_ring_count,
                                 count)
    values = np.take(z, geo.particle_index, axis=1)
    centred = values - values.mean(axis=1, keepdims=True)
    squared = centred * centred
    var = squared.mean(axis=1)
    ok = var > 1e-20 * np.maximum(np.abs(values).max(axis=1, initial=0.0) ** 2, 1e-300)
    safe = np.where(ok, var, 1.0)
    skew = np.where(ok, (squared * centred).mean(axis=1) / safe ** 1.5, 0.0)
    kurt = np.where(ok, (squared * squared).mean(axis=1) / safe ** 2 - 3.0, 0.0)
    return {
        "rotational_symmetry": rotational_std ** 2 / np.where(inside_std > 0, inside_std ** 2, 1.0),
        "skewness": skew,
        "kurtosis": np.log(np.maximum(kurt + 3.0, 1.0)),
    }


def _spectral_features(z: np.ndarray, geo: _Geometry) -> dict:
    n = len(z)
    tapered = (z.reshape(n, geo.size, geo.size) * geo.taper).astype(np.float32)
    power = np.abs(sfft.rfft2(tapered, workers=FFT_WORKERS)).astype(np.float64) ** 2
    sums = power.reshape(n, -1) @ geo.spectral
    low, mid, high = sums[:, 0], sums[:, 1], sums[:, 2]
    angular = sums[:, 3:]
    floor = 1e-12 * (low + mid + high) + 1e-300
    return {
        "power_mid": np.log10((mid + floor) / (low + floor)),
        "power_high": np.log10((high + floor) / (low + floor)),
        "angular_power_peak": np.log((angular.max(axis=1) + 1e-300) / (angular.mean(axis=1) + 1e-300)),
    }


def _density_features(zl: np.ndarray, geo: _Geometry) -> dict:
    """Centre of mass and radial moments of the positive low-passed density; structure tensor."""
    n, size = len(zl), geo.size
    sums = np.maximum(zl, 0.0).reshape(n, -1) @ geo.density
    total = sums[:, 0]
    safe = np.where(total > 0, total, 1.0)
    com_y, com_x, centroid = sums[:, 1] / safe, sums[:, 2] / safe, sums[:, 3] / safe
    spread = np.sqrt(np.maximum(sums[:, 4] / safe - centroid ** 2, 0.0))
    # np.gradient's central differences (f[i + 1] - f[i - 1]) / 2 at the frame's pixels (the frame
    # never reaches the edge); the halving is exact, so it is applied to the sums (/ 4)
    flat = zl.reshape(n, -1)
    dy = np.take(flat, geo.frame_index + size, axis=1)
    dy -= np.take(flat, geo.frame_index - size, axis=1)
    dx = np.take(flat, geo.frame_index + 1, axis=1)
    dx -= np.take(flat, geo.frame_index - 1, axis=1)
    jxx = np.einsum("ij,ij->i", dx, dx) / 4.0
    jyy = np.einsum("ij,ij->i", dy, dy) / 4.0
    jxy = np.einsum("ij,ij->i", dx, dy) / 4.0
    trace = jxx + jyy
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.where(trace > 0, trace, 1.0)
    return {
        "com_offset": np.hypot(com_y, com_x) / PARTICLE_RADIUS_PX,
        "radial_centroid": centroid,
        "radial_spread": spread,
        "gradient_coherence": coherence,
    }


def _blob_features(z: np.ndarray, zz: np.ndarray, zl: np.ndarray, geo: _Geometry) -> dict:
    """Otsu segmentation of the low-passed frame: blob counts, sizes, positions; solvent stats."""
    n, size = len(zl), geo.size
    threshold = otsu_thresholds(np.take(zl.reshape(n, -1), geo.otsu_index, axis=1))
    binary = (zl > threshold[:, None, None]) & geo.frame
    labels, owner, n_labels = label_stack(binary, connectivity=8)
    # per-blob sums over the blob pixels only (labels are 0 elsewhere)
    pixels = np.flatnonzero(binary)
    blob_of_pixel = labels.reshape(-1)[pixels]
    position = pixels % (size * size)

    def per_label(pixel_values=None) -> np.ndarray:
        weights = None if pixel_values is None else pixel_values[position]
        return np.bincount(blob_of_pixel, weights=weights, minlength=n_labels + 1).astype(np.float64)

    area = per_label()
    disc_area = np.pi * PARTICLE_RADIUS_PX ** 2
    keep = area >= MIN_BLOB_FRACTION * disc_area
    keep[0] = False
    kept = np.flatnonzero(keep)
    n_blobs = np.bincount(owner[kept], minlength=n)
    blob_area = np.bincount(owner[kept], weights=area[kept], minlength=n)

    # the largest kept blob of every image: sort by (image, area), take the last of each image
    order = kept[np.lexsort((area[kept], owner[kept]))]
    last_of_image = np.flatnonzero(np.r_[owner[order][1:] != owner[order][:-1], True]) if len(order) else []
    largest = np.zeros(n, dtype=np.int64)
    largest[owner[order[last_of_image]]] = order[last_of_image]
    has_blob = n_blobs > 0

    safe_area = np.maximum(area[largest], 1.0)
    offset = np.hypot(per_label(geo.blob_y)[largest], per_label(geo.blob_x)[largest]) / safe_area / PARTICLE_RADIUS_PX
    outside_px = per_label(geo.blob_outside)
    outside_area = np.bincount(owner[kept], weights=outside_px[kept], minlength=n)
    blob_outside = outside_area / np.maximum(blob_area, 1.0)

    protein = keep[labels]
    solvent = geo.particle & ~dilate_stack(protein, iterations=SOLVENT_MARGIN_PX)
    protein, solvent = protein.reshape(n, -1), solvent.reshape(n, -1)
    protein_mean, _ = _moments(np.einsum("ij,ij->i", z, protein), np.einsum("ij,ij->i", zz, protein),
                               protein.sum(axis=1).astype(np.float64))
    solvent_count = solvent.sum(axis=1).astype(np.float64)
    solvent_mean, solvent_std = _moments(np.einsum("ij,ij->i", z, solvent), np.einsum("ij,ij->i", zz, solvent),
                                         solvent_count)
    solvent_ok = solvent_count >= MIN_SOLVENT_PX
    nan = np.nan
    return {
        "n_blobs": np.log1p(n_blobs),
        "largest_blob_area": np.log(np.maximum(np.where(has_blob, area[largest] / disc_area, 0.0),
                                               MIN_BLOB_FRACTION)),
        "largest_blob_share": np.where(has_blob, area[largest] / np.maximum(blob_area, 1.0), nan),
        "blob_offset": np.where(has_blob, offset, nan),
        "blob_outside": np.where(has_blob, blob_outside, nan),
        "protein_solvent_contrast": np.where(has_blob & solvent_ok, protein_mean - solvent_mean, nan),
        "solvent_flatness": np.where(solvent_ok, np.log10(np.maximum(solvent_std, 1e-3)), nan),
    }


def image_features(classset: ClassSet, frame=None) -> dict:
    """Raw image features by name ((n,) each, NaN where undefined) and the ``empty`` flag.

    frame: the averages in the frame (:func:`frame_images`) when already computed.
    """
    geo = _geometry()
    frame = frame_images(classset) if frame is None else as_stack(frame)
    n, size = len(frame), geo.size
    if frame.shape != (len(classset), size, size):
        raise ValueError(f"frame of shape {frame.shape} for {len(classset)} classes; expected "
                         f"({len(classset)}, {size}, {size}) from frame_images")
    frame = frame.reshape(n, -1).astype(np.float64)
    frame_sq = frame * frame
    sums, sums_sq = frame @ geo.masks[:, :2], frame_sq @ geo.masks[:, :2]
    mean, std = _moments(sums[:, 0], sums_sq[:, 0], geo.mask_count[0])
    _, particle_std = _moments(sums[:, 1], sums_sq[:, 1], geo.mask_count[1])
    empty = _constant(classset.images) | (std <= 1e-6 * (np.abs(frame).max(axis=1) + 1e-30))
    scale = np.where(empty, 1.0, std)
    z = (frame - mean[:, None]) / scale[:, None]
    zz = z * z
    zl = lowpass(z.reshape(n, size, size).astype(np.float32), SEGMENT_SHELL).astype(np.float64)

    sums, sums_sq = z @ geo.masks[:, 1:], zz @ geo.masks[:, 1:]
    inside_mean, inside_std = _moments(sums[:, 0], sums_sq[:, 0], geo.mask_count[1])
    around_mean, around_std = _moments(sums[:, 1], sums_sq[:, 1], geo.mask_count[2])
    raw = {
        "log_signal_std": np.log10(np.maximum(particle_std, 1e-6)),
        "contrast_in_out": inside_mean - around_mean,
        "outside_signal": np.log10(np.maximum(around_std / np.where(inside_std > 0, inside_std, 1.0), 0.01)),
    }
    raw.update(_radial_features(z, zz, geo, inside_std))
    raw.update(_spectral_features(z, geo))
    raw.update(_density_features(zl, geo))
    raw.update(_blob_features(z, zz, zl, geo))
    for name in raw:
        raw[name] = np.where(empty, np.nan, raw[name])
    raw["empty"] = empty.astype(float)
    assert set(raw) == set(_IMAGE_FEATURES) | {"empty"}, sorted(set(raw) ^ set(_IMAGE_FEATURES))
    return {name: np.asarray(values, dtype=np.float64).reshape(n) for name, values in raw.items()}


def normalise(raw: dict) -> np.ndarray:
    """(n, F) float32 in ``CLASSRANKER_FEATURE_NAMES`` order; unknown (NaN) -> 0."""
    columns = []
    for spec in SPECS:
        values = np.asarray(raw[spec.name], dtype=np.float64)
        if not spec.flag:
            values = (values - spec.centre) / spec.scale
        columns.append(np.where(np.isfinite(values), values, 0.0))
    return np.stack(columns, axis=1).astype(np.float32)


def classranker_raw_features(classset: ClassSet, frame=None) -> dict:
    """All raw (unnormalised) features by name; ``frame``: :func:`frame_images`, when already computed."""
    raw = metadata_features(classset)
    raw.update(image_features(classset, frame=frame))
    return raw


def classranker_features(classset: ClassSet, frame=None) -> np.ndarray:
    """(n, F) float32 ClassRanker feature vectors, columns ``CLASSRANKER_FEATURE_NAMES``.

    frame: the averages in the frame (:func:`frame_images`) when already computed.
    """
    if len(classset) == 0:
        return np.zeros((0, len(SPECS)), dtype=np.float32)
    return normalise(classranker_raw_features(classset, frame=frame))
