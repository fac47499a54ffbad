"""What Class2D does to an image: CTF correction, resolution limit, noise and the solvent mask.

A RELION class average is a Wiener-filtered sum of CTF-modulated particles: low spatial frequencies,
where the CTF of phase contrast is weak, come out attenuated (a dark halo around the particle), the
CTF zeros of different defoci average out into slight ringing, the regularised reference fades out
beyond the class's resolution, and with ``--zero_mask --flatten_solvent`` everything outside a soft
circle of the particle diameter is set to exactly zero. The functions here reproduce those steps for
whole stacks at once (rfft2 over the stack), in float32.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from .density import frequency_grid

#: RELION's default soft-edge width of the particle mask, pixels (rlnWidthMaskEdge)
MASK_EDGE_PX = 5.0


def soft_circular_mask(box: int, radius_px: float, edge_px: float = MASK_EDGE_PX) -> np.ndarray:
    """1 inside ``radius_px`` of the centre (box // 2), raised-cosine fall-off to 0 over ``edge_px``."""
    y, x = np.mgrid[:box, :box] - box // 2
    r = np.hypot(x, y)
    t = np.clip((r - radius_px) / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength, Angstrom."""
    v = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


def ctf(k_per_A: np.ndarray, defocus_A, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1) -> np.ndarray:
    """CTF at spatial frequencies ``k_per_A`` (1/A) for each defocus (A); shape defocus.shape + k.shape."""
    lam = electron_wavelength(voltage_kv)
    cs = cs_mm * 1e7
    k2 = np.asarray(k_per_A, dtype=float) ** 2
    defocus = np.asarray(defocus_A, dtype=float)[(...,) + (None,) * k2.ndim]
    chi = np.pi * lam * defocus * k2 - 0.5 * np.pi * cs * lam ** 3 * k2 * k2
    w = amplitude_contrast
    return -(np.sqrt(1.0 - w * w) * np.sin(chi) + w * np.cos(chi))


def ctf_correction_transfer(box: int, pixel_size: float, defocus_range=(8000.0, 30000.0),
                            wiener_constant: float = 0.1, n_defocus: int = 24) -> np.ndarray:
    """Transfer function (box, box // 2 + 1) of a Wiener-CTF-corrected average over a defocus range.

    <CTF^2> / (<CTF^2> + wiener_constant): near 0 at the lowest frequencies (amplitude contrast only),
    close to 1 where the CTF is strong, with shallow dips where most defoci have zeros.
    """
    k = frequency_grid(box) / pixel_size
    defoci = np.linspace(defocus_range[0], defocus_range[1], n_defocus)
    mean_power = np.mean(ctf(k, defoci) ** 2, axis=0)
    return (mean_power / (mean_power + wiener_constant)).astype(np.float32)


def resolution_envelopes(box: int, pixel_size: float, resolutions_A) -> np.ndarray:
    """Gaussian fall-off (n, box, box // 2 + 1) reaching 1/20 at each resolution (inf -> 40 A, 12 px at least).

    Steeper than a plain FSC-like cut-off: a regularised RELION reference keeps little beyond its
    estimated resolution."""
    res = np.asarray(resolutions_A, dtype=float)
    res = np.where(np.isfinite(res), res, max(40.0, 12.0 * pixel_size))
    k_res = pixel_size / res  # cycles per pixel
    k = frequency_grid(box)
    return np.exp(-np.log(20.0) * (k[None] / k_res[:, None, None]) ** 2).astype(np.float32)


def apply_transfer(images: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Filter a stack (n, box, box) by transfer functions broadcastable to (n, box, box // 2 + 1)."""
    box = images.shape[-1]
    spectrum = scipy.fft.rfft2(np.asarray(images, dtype=np.float32), workers=1)
    return scipy.fft.irfft2(spectrum * transfer, s=(box, box), workers=1).astype(np.float32)


def masked_std(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standard deviation of each image over the pixels where ``mask`` > 0.5."""
    inside = mask > 0.5
    return images[:, inside].std(axis=1)


def coloured_noise(rng: np.random.Generator, transfer: np.ndarray, box: int, mask: np.ndarray) -> np.ndarray:
    """Gaussian noise (n, box, box) shaped by ``transfer`` (n, box, box//2+1), unit std inside the mask."""
    n = transfer.shape[0]
    white = rng.standard_normal((n, box, box), dtype=np.float32)
    noise = apply_transfer(white, transfer)
    std = masked_std(noise, mask)
    return noise / np.maximum(std, 1e-12)[:, None, None]
