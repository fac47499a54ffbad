"""Random protein-like 3D densities (pseudo-atom models) and their 2D projections.

A molecule is a cloud of pseudo-atoms, one per residue, laid out as secondary-structure elements
(helices: 1.5 A rise, 2.3 A radius; beta sheets: strands 4.8 A apart, 3.3 A per residue) packed into
ellipsoidal domains. Domains form an asymmetric unit that is repeated by a point-group symmetry
(C1..C7, D2..D4) in one of several layouts (globular, elongated, ring, cyclic, dihedral), then the
whole is centred on its centre of mass. Sizes are in Angstrom, so secondary structure keeps its real
dimensions whatever the molecule's diameter.

Projections follow RELION's conventions: ``euler_matrices(rot, tilt, psi)`` is RELION's
Euler_angles2matrix, a 3D point ``r`` lands at ``(A r)[0], (A r)[1]`` pixels (divided by the pixel
size) from the image centre ``box // 2``, and a particle shifted by ``-origin`` is what RELION's
``rlnOriginX/YAngst`` re-centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

#: residues per cubic Angstrom of protein (about 133 A^3 per residue)
RESIDUE_DENSITY = 1.0 / 133.0
#: fraction of a domain's ellipsoid filled with protein
FILL_FRACTION = 0.9
LAYOUTS = ("globular", "elongated", "ring", "cyclic", "dihedral")
#: most pseudo-atoms in one molecule: bigger molecules get fewer, heavier pseudo-atoms (atom_weight)
MAX_ATOMS = 40_000
#: pseudo-atoms used while finding the scale that gives the requested diameter
SCALE_PROBE_ATOMS = 6_000
#: least (domain volume / bounding-sphere volume) accepted per layout: folded proteins are compact
MIN_PACKING = {"globular": 0.15, "elongated": 0.08, "ring": 0.3, "cyclic": 0.35, "dihedral": 0.5}


@dataclass(frozen=True)
class Molecule:
    """A pseudo-atom model centred on its centre of mass.

    atoms:       (n, 3) float64 coordinates, Angstrom
    symmetry:    point group, e.g. "C1", "C6", "D2"
    layout:      one of LAYOUTS
    atom_weight: residues per pseudo-atom (1 unless the molecule exceeds MAX_ATOMS residues)
    """

    atoms: np.ndarray
    symmetry: str
    layout: str
    atom_weight: float = 1.0

    @property
    def radius(self) -> float:
        """Radius (A) of the sphere around the centre that holds 99% of the atoms."""
        return float(np.percentile(np.linalg.norm(self.atoms, axis=1), 99))


def random_molecule(rng: np.random.Generator, diameter: float, layout: str | None = None) -> Molecule:
    """A random protein-like molecule whose largest extent is about ``diameter`` Angstrom."""
    layout = layout or str(rng.choice(LAYOUTS, p=[0.3, 0.15, 0.15, 0.2, 0.2]))
    for _ in range(50):  # draw layouts until one is compact enough for a folded protein
        centres, radii, symmetry = _domain_layout(rng, layout)
        operators = _symmetry_operators(symmetry)
        extent = max(np.linalg.norm(op @ c) + r.max() for op in operators for c, r in zip(centres, radii))
        packing = len(operators) * np.sum(np.prod(radii, axis=1)) / extent ** 3
        if packing >= MIN_PACKING[layout]:
            break
    fill_seed = int(rng.integers(2 ** 62))
    scale = 0.5 * diameter / extent

    def residues(scale):
        volume = 4.0 / 3.0 * np.pi * np.sum(np.prod(radii * scale, axis=1))
        return len(operators) * FILL_FRACTION * volume * RESIDUE_DENSITY

    for _ in range(2):  # find the scale at which the filled domains reach the requested diameter
        density = RESIDUE_DENSITY * min(1.0, SCALE_PROBE_ATOMS / residues(scale))
        atoms = _assemble(np.random.default_rng(fill_seed), centres * scale, radii * scale, operators, density)
        reach = np.percentile(np.linalg.norm(atoms, axis=1), 99.5) + 2.0
        scale *= 0.5 * diameter / reach
    thinning = min(1.0, MAX_ATOMS / residues(scale))
    atoms = _assemble(np.random.default_rng(fill_seed), centres * scale, radii * scale, operators,
                      RESIDUE_DENSITY * thinning)
    return Molecule(atoms=atoms, symmetry=symmetry, layout=layout, atom_weight=1.0 / thinning)


def _assemble(rng, centres, radii, operators, density) -> np.ndarray:
    unit = np.concatenate([_fill_domain(rng, c, r, density) for c, r in zip(centres, radii)])
    atoms = np.concatenate([unit @ op.T for op in operators])
    return atoms - atoms.mean(axis=0)


def _domain_layout(rng, layout):
    """Domain centres (k, 3) and semi-axes (k, 3) of one asymmetric unit, in arbitrary units.

    Neighbouring domains (and symmetry mates) overlap a little so that the assembly is compact.
    """
    if layout == "globular":
        k = int(rng.integers(3, 8))
        centres = rng.normal(0.0, 0.3, (k, 3))
        radii = rng.uniform(0.2, 0.36, (k, 3))
        return centres, radii, "C1"
    if layout == "elongated":
        k = int(rng.integers(3, 6))
        x = np.linspace(-1.0, 1.0, k)
        centres = np.column_stack([x, rng.normal(0, 0.08, k), rng.normal(0, 0.08, k)])
        spacing = 2.0 / (k - 1)
        radii = np.column_stack([rng.uniform(0.6, 0.75, k) * spacing,
                                 rng.uniform(0.5, 0.8, (k, 2)) * spacing])
        return centres, radii, str(rng.choice(["C1", "C2"]))
    if layout == "ring":
        n = int(rng.integers(5, 9))
        k = int(rng.integers(1, 3))
        centres = np.column_stack([np.full(k, 1.0), rng.normal(0, 0.08, k), np.linspace(-0.3, 0.3, k)])
        r = np.pi / n * 1.25
        radii = rng.uniform(0.9, 1.2, (k, 3)) * r
        return centres, radii, f"C{n}"
    if layout == "cyclic":
        n = int(rng.integers(2, 5))
        k = int(rng.integers(2, 4))
        centres = np.column_stack([rng.uniform(0.15, 0.35, k), rng.normal(0, 0.1, k),
                                   np.linspace(-0.4, 0.4, k) + rng.normal(0, 0.05, k)])
        radii = rng.uniform(0.3, 0.45, (k, 3))
        return centres, radii, f"C{n}"
    if layout == "dihedral":
        n = int(rng.integers(2, 5))
        k = int(rng.integers(1, 4))
        centres = np.column_stack([rng.uniform(0.15, 0.4, k), rng.normal(0, 0.1, k),
                                   rng.uniform(0.12, 0.35, k)])
        radii = rng.uniform(0.28, 0.42, (k, 3))
        return centres, radii, f"D{n}"
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def _symmetry_operators(symmetry: str) -> list:
    n = int(symmetry[1:])
    ops = []
    for i in range(n):
        a = 2 * np.pi * i / n
        ops.append(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]]))
    if symmetry[0] == "D":
        flip = np.diag([1.0, -1.0, -1.0])  # two-fold about x
        ops += [flip @ op for op in ops]
    return ops


def _random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _fill_domain(rng, centre, semi_axes, density=RESIDUE_DENSITY) -> np.ndarray:
    """Pseudo-atoms of helices, sheets and loops packed into one ellipsoidal domain (density: atoms/A^3)."""
    orientation = _random_rotation(rng)
    volume = 4.0 / 3.0 * np.pi * np.prod(semi_axes)
    target = max(8, int(FILL_FRACTION * volume * density))
    pieces, count = [], 0
    for _ in range(20 * target):  # bounded: a tiny domain may reject most elements
        if count >= target:
            break
        start = _inside_point(rng) * semi_axes
        kind = rng.random()
        if kind < 0.55:
            local = _helix(rng)
        elif kind < 0.85:
            local = _sheet(rng)
        else:
            local = _loop(rng)
        local = local @ _random_rotation(rng).T + start
        inside = np.sum((local / semi_axes) ** 2, axis=1) <= 1.0
        local = local[inside]
        pieces.append(local)
        count += len(local)
    atoms = np.concatenate(pieces + [np.zeros((1, 3))])[:target]
    return atoms @ orientation.T + centre


def _inside_point(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * rng.random() ** (1 / 3)


def _helix(rng) -> np.ndarray:
    n = int(rng.integers(7, 24))
    i = np.arange(n)
    t = np.deg2rad(100.0) * i
    return np.column_stack([2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * (i - n / 2)])


def _sheet(rng) -> np.ndarray:
    strands = int(rng.integers(3, 7))
    length = int(rng.integers(4, 8))
    s, i = np.meshgrid(np.arange(strands), np.arange(length), indexing="ij")
    twist = 0.08 * (s - strands / 2) * (i - length / 2)
    return np.column_stack([(4.8 * (s - strands / 2)).ravel(), (3.3 * (i - length / 2)).ravel(),
                            (twist + 0.6 * ((i % 2) - 0.5)).ravel()])


def _loop(rng) -> np.ndarray:
    n = int(rng.integers(4, 12))
    steps = rng.normal(size=(n, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    return np.cumsum(steps, axis=0)


def euler_matrices(rot, tilt, psi) -> np.ndarray:
    """RELION's rotation matrices A (n, 3, 3) for Euler angles in degrees (ZYZ)."""
    a, b, g = (np.deg2rad(np.atleast_1d(np.asarray(v, dtype=float))) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(a.shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def random_views(rng: np.random.Generator, n: int) -> tuple:
    """(rot, tilt) in degrees, uniform over the sphere of projection directions."""
    rot = rng.uniform(-180.0, 180.0, n)
    tilt = np.rad2deg(np.arccos(rng.uniform(-1.0, 1.0, n)))
    return rot, tilt


def project(atoms: np.ndarray, matrices: np.ndarray, box: int, pixel_size: float,
            shifts: np.ndarray | None = None, atom_sigma: float = 2.0, weight: float = 1.0) -> np.ndarray:
    """Projections (n, box, box) float32 of a pseudo-atom model along z of each rotation.

    shifts: (n, 2) pixel offsets (x, y) of the projected centre from ``box // 2``.
    Each atom is a 3D Gaussian of ``atom_sigma`` Angstrom (splatted bilinearly, then blurred in
    Fourier space); values are the projected atom count per pixel times ``weight`` (pass a
    Molecule's atom_weight to get residues per pixel).
    """
    matrices = np.asarray(matrices, dtype=float).reshape(-1, 3, 3)
    n = len(matrices)
    shifts = np.zeros((n, 2)) if shifts is None else np.asarray(shifts, dtype=float).reshape(n, 2)
    out = np.empty((n, box, box), dtype=np.float32)
    chunk = max(1, int(4_000_000 // max(1, len(atoms))))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        xy = np.einsum("nij,aj->nai", matrices[start:stop, :2, :], atoms) / pixel_size
        xy += shifts[start:stop, None, :] + box // 2
        out[start:stop] = _splat(xy, box) * weight
    return gaussian_blur(out, atom_sigma / pixel_size)


def _splat(xy: np.ndarray, box: int) -> np.ndarray:
    """Bilinear splatting of points (n, a, 2) [x, y] onto n images; points off the box are dropped."""
    n = xy.shape[0]
    base = np.floor(xy)
    frac = xy - base
    base = base.astype(np.int64)
    image_index = np.broadcast_to(np.arange(n)[:, None], xy.shape[:2])
    total = np.zeros(n * box * box)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x = base[..., 0] + dx
        y = base[..., 1] + dy
        w = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
        ok = (x >= 0) & (x < box) & (y >= 0) & (y < box)
        flat = (image_index[ok] * box + y[ok]) * box + x[ok]
        total += np.bincount(flat, weights=w[ok], minlength=n * box * box)
    return total.reshape(n, box, box)


def frequency_grid(box: int) -> np.ndarray:
    """|k| in cycles per pixel on the rfft2 grid (box, box // 2 + 1)."""
    ky = scipy.fft.fftfreq(box)[:, None]
    kx = scipy.fft.rfftfreq(box)[None, :]
    return np.sqrt(kx * kx + ky * ky)


def gaussian_blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of a stack (n, box, box) by ``sigma_px`` pixels, in Fourier space, float32."""
    images = np.asarray(images, dtype=np.float32)
    if sigma_px <= 0:
        return images
    box = images.shape[-1]
    k = frequency_grid(box)
    transfer = np.exp(-2.0 * (np.pi * sigma_px * k) ** 2).astype(np.float32)
    spectrum = scipy.fft.rfft2(images, workers=1)
    return scipy.fft.irfft2(spectrum * transfer, s=(box, box), workers=1).astype(np.float32)
