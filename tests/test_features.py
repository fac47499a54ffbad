"""Feature vectors (features/) and model images (preprocess.py) on images known by construction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from classranker_plugin.classset import ClassSet
from classranker_plugin.errors import InputError
from classranker_plugin.features import (CLASSRANKER_FEATURE_NAMES, FEATURE_SETS, FEATURE_TABLE,
                                         RELION_FEATURE_NAMES, FeatureMatrix, compute_features)
from classranker_plugin.features import image as im
from classranker_plugin.features.classranker import classranker_raw_features
from classranker_plugin.features.relion import (RELION_MEANS, RELION_STDS, relion_features,
                                                relion_raw_features, relion_segmentation)
from classranker_plugin.preprocess import (model_images, model_images_and_frame, relion_model_images,
                                          relion_window)

DIAMETER = 150.0
# a small asymmetric "particle": Gaussian blobs (x A, y A, sigma A, amplitude)
PARTICLE = [(0.0, 0.0, 18.0, 1.0), (30.0, 12.0, 12.0, 0.8), (-25.0, 20.0, 10.0, 0.7),
            (-10.0, -35.0, 11.0, 0.9), (20.0, -25.0, 8.0, 0.6)]
EMPTY_INDEX = CLASSRANKER_FEATURE_NAMES.index("empty")
META_NAMES = set(CLASSRANKER_FEATURE_NAMES[:EMPTY_INDEX])
IMAGE_NAMES = CLASSRANKER_FEATURE_NAMES[EMPTY_INDEX + 1:]


def render(box: int, apix: float, blobs=PARTICLE, shift=(0.0, 0.0)) -> np.ndarray:
    """(box, box) sum of Gaussians placed in Angstrom around the centre pixel box // 2."""
    coords = (np.arange(box) - box // 2) * apix
    y, x = np.meshgrid(coords, coords, indexing="ij")
    image = np.zeros((box, box))
    for bx, by, sigma, amp in blobs:
        image += amp * np.exp(-((x - bx - shift[0]) ** 2 + (y - by - shift[1]) ** 2) / (2 * sigma ** 2))
    return image.astype(np.float32)


def make_set(images, pixel_size=None, diameter=None, **columns) -> ClassSet:
    images = np.asarray(images, dtype=np.float32)
    table = pd.DataFrame({"class_number": np.arange(1, len(images) + 1), **columns})
    return ClassSet(images, table, pixel_size=pixel_size, particle_diameter=diameter)


META = dict(class_distribution=[0.05], accuracy_rotations=[2.5], accuracy_translations=[1.2],
            resolution=[12.0], particle_count=[2500.0])


def named(matrix: np.ndarray, names) -> dict:
    return {name: matrix[:, i] for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- image helpers
def test_fourier_resample_keeps_mean_and_centre():
    image = render(64, 3.5, [(0.0, 0.0, 10.0, 1.0)])[None] + 0.3
    for size in (32, 50, 96, 128):
        out = im.fourier_resample(image, size)
        assert out.shape == (1, size, size)
        assert out.mean() == pytest.approx(image.mean(), rel=1e-5)
        assert np.unravel_index(out[0].argmax(), out[0].shape) == (size // 2, size // 2)


def test_window_resample_matches_physical_scale():
    a = im.window_resample(render(64, 3.5)[None], 225.0 / 3.5, 64)
    b = im.window_resample(render(150, 2.0)[None], 225.0 / 2.0, 64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_crop_or_pad_keeps_centre_pixel():
    stack = np.zeros((2, 9, 9), np.float32)
    stack[:, 4, 4] = 1.0
    for size in (4, 8, 12, 13):
        out = im.crop_or_pad(stack, size, fill=np.array([0.0, -1.0]))
        assert out[0, size // 2, size // 2] == 1.0 and out[0].sum() == 1.0
    assert im.crop_or_pad(stack, 13, fill=np.array([0.0, -1.0]))[1, 0, 0] == -1.0


def test_grey_opening_disc_equals_scipy():
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(3, 23, 23)).astype(np.float32)
    for radius in (1, 2, 4, 6):
        footprint = im.disc_mask(2 * radius + 1, radius)
        expected = np.stack([ndimage.grey_opening(a, footprint=footprint, mode="reflect") for a in stack])
        np.testing.assert_array_equal(im.grey_opening_disc(stack, radius), expected)


def test_label_stack_never_joins_images():
    binary = np.ones((3, 5, 5), bool)
    labels, owner, n_labels = im.label_stack(binary)
    assert n_labels == 3 and list(owner[1:]) == [0, 1, 2]


def test_moments_profile_centre_of_mass_and_otsu():
    stack = np.full((2, 16, 16), 2.0, np.float32)
    moments = im.masked_moments(stack, im.disc_mask(16, 5))
    assert moments.mean == pytest.approx([2, 2]) and moments.std == pytest.approx([0, 0], abs=1e-9)
    assert moments.count[0] == im.disc_mask(16, 5).sum()
    profile, radii = im.radial_profile(stack)
    assert np.allclose(profile, 2.0) and radii[0] == 0
    spot = np.zeros((1, 16, 16), np.float32)
    spot[0, 8 + 3, 8 - 2] = 1.0
    assert im.centre_of_mass(spot)[0] == pytest.approx([3.0, -2.0])
    assert im.centre_of_mass(np.zeros((1, 8, 8)))[0] == pytest.approx([0.0, 0.0])
    values = np.concatenate([np.zeros(50), np.ones(50)])[None]
    assert 0.0 < im.otsu_thresholds(values)[0] <= 1.0


# ----------------------------------------------------------------------------- RELION features
def _disc(size, radius, centre=(0.0, 0.0), smooth=3.0):
    coords = np.arange(size) - size // 2
    y, x = np.meshgrid(coords, coords, indexing="ij")
    hard = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2).astype(np.float64)
    return ndimage.gaussian_filter(hard, smooth).astype(np.float32) if smooth else hard.astype(np.float32)


def test_relion_names_and_shapes():
    assert len(RELION_FEATURE_NAMES) == 24 == len(set(RELION_FEATURE_NAMES))
    assert len(RELION_MEANS) == len(RELION_STDS) == 21
    values = relion_features(make_set([_disc(64, 10)], pixel_size=4.0, diameter=200.0))
    assert values.shape == (1, 24) and values.dtype == np.float32


def test_relion_centred_disc_known_by_construction():
    # 4 A/px, 64 px: no resampling; R = 200 / 8 = 25 px; smooth disc of radius 10 px, amplitude 1
    disc = _disc(64, 10)
    raw = named(relion_raw_features(make_set([disc], pixel_size=4.0, diameter=200.0)), RELION_FEATURE_NAMES)
    assert raw["ring_mean"][0] == pytest.approx(0.0, abs=1e-3)        # ring at 0.95-1 R is background
    assert raw["ring_stddev"][0] == pytest.approx(0.0, abs=1e-3)
    assert raw["edge_signal"][0] == 0.0
    assert raw["scattered_signal"][0] == 0.0
    assert raw["solvent_mean"][0] == pytest.approx(0.0, abs=5e-3)
    hard_area = _disc(64, 10, smooth=0).sum()
    assert raw["protein_sum"][0] == pytest.approx(hard_area, rel=0.01)   # all signal is protein
    assert raw["relative_signal_intensity"][0] == pytest.approx(hard_area, rel=0.02)
    assert raw["lowpass_mean"][0] == pytest.approx(disc.mean(), rel=1e-4)
    assert raw["lowpass_max"][0] == pytest.approx(1.0, abs=0.05)
    assert raw["granulo_1"][0] == pytest.approx(disc.sum(), rel=0.02)    # a broad disc survives opening

    low = im.lowpass(disc[None], 64 * 4 / 25.0)
    protein, scattered = relion_segmentation(low, 25.0)
    inner_disc = im.disc_mask(64, 10)
    assert protein[0][inner_disc].all() and not protein[0][~im.disc_mask(64, 10 + 4 * 3)].any()
    assert scattered[0] == 0


def test_relion_disc_filling_the_mask_has_full_edge_and_ring():
    # a constant image is all protein inside R = 25 px; the edge ring round(r) == 25 reaches
    # r < 25.5, beyond R, so only its part with r <= R is protein
    disc = np.ones((64, 64), np.float32) * 1.5
    raw = named(relion_raw_features(make_set([disc], pixel_size=4.0, diameter=200.0)), RELION_FEATURE_NAMES)
    r = im.radius_grid(64)
    edge = np.rint(r) == 25
    assert raw["edge_signal"][0] == pytest.approx((edge & (r <= 25)).sum() / edge.sum())
    assert raw["ring_mean"][0] == pytest.approx(1.5, rel=1e-5) and raw["ring_stddev"][0] < 1e-4
    assert raw["granulo_6"][0] == pytest.approx(1.5 * 64 * 64, rel=1e-5)


def test_relion_off_centre_blob_is_scattered_signal():
    centred = _disc(64, 5, smooth=1.0)
    off = _disc(64, 4, centre=(18.0, 0.0), smooth=1.0)        # reaches 0.6 R = 15 px only slightly
    raw = named(relion_raw_features(make_set([centred, off], pixel_size=4.0, diameter=200.0)),
                RELION_FEATURE_NAMES)
    assert raw["scattered_signal"][0] == 0.0
    assert raw["scattered_signal"][1] > 0.5


def test_relion_resamples_to_4A():
    # the same disc at 2 A/px (box 128) gives nearly the same image features as at 4 A/px (box 64)
    a = relion_raw_features(make_set([render(64, 4.0)], pixel_size=4.0, diameter=200.0))
    b = relion_raw_features(make_set([render(128, 2.0)], pixel_size=2.0, diameter=200.0))
    cols = [RELION_FEATURE_NAMES.index(n) for n in ("ring_mean", "protein_stddev", "lowpass_max",
                                                      "granulo_1", "protein_sum", "edge_signal")]
    np.testing.assert_allclose(a[0, cols], b[0, cols], rtol=0.05, atol=0.02)


def test_relion_zero_image_and_missing_metadata_are_finite():
    zero = np.zeros((2, 40, 40), np.float32)
    values = relion_features(make_set(zero))               # nothing known at all
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values[:, :4], 0.0)      # unknown metadata -> neutral
    np.testing.assert_array_equal(values[:, 21:], 0.0)     # identical classes: z-scores 0
    expected = (0.0 - RELION_MEANS[4:]) / RELION_STDS[4:]
    np.testing.assert_allclose(values[0, 4:21], expected, rtol=1e-5)


def test_relion_metadata_normalisation():
    cs = make_set(np.stack([render(64, 4.0)] * 3), pixel_size=4.0, diameter=200.0,
                  class_distribution=[0.5, 0.3, 0.2], accuracy_rotations=[2.0, 999.0, np.nan],
                  accuracy_translations=[1.0, 999.0, 2.0], resolution=[10.0, np.inf, 20.0],
                  particle_count=[500.0, 300.0, 200.0])
    raw = relion_raw_features(cs)
    values = relion_features(cs)
    assert np.isfinite(values).all()
    assert raw[0, 2] == pytest.approx((1 / 100.0) / np.log(500.0))      # total 1000 x 0.5
    assert raw[1, 2] == 0.0                                             # infinite resolution
    assert raw[0, 3] == pytest.approx(10.0 / (64 * 4.0))
    assert values[0, 0] == pytest.approx((2.0 - 4.352) / 4.759, rel=1e-5)
    assert values[2, 0] == 0.0                                          # unknown -> mean
    assert values[1, 0] > 10                                            # 999: not converged, capped


# ----------------------------------------------------------------------------- ClassRanker features
def test_feature_table_documents_every_feature():
    assert 25 <= len(CLASSRANKER_FEATURE_NAMES) <= 40
    assert len(set(CLASSRANKER_FEATURE_NAMES)) == len(CLASSRANKER_FEATURE_NAMES)
    assert [row[0] for row in FEATURE_TABLE] == CLASSRANKER_FEATURE_NAMES
    assert all(len(row) == 4 and all(isinstance(c, str) and c for c in row) for row in FEATURE_TABLE)
    for name in CLASSRANKER_FEATURE_NAMES:                 # every metadata value has its flag
        if name in META_NAMES and not name.endswith("_known") and name not in (
                "not_converged", "particle_diameter_known"):
            assert f"{name}_known" in CLASSRANKER_FEATURE_NAMES


@pytest.fixture(scope="module")
def sampled_features():
    """The same particle rendered at four samplings / box sizes, with the same metadata."""
    samplings = [(64, 3.5), (128, 1.75), (100, 3.0), (180, 1.25)]
    out = []
    for box, apix in samplings:
        cs = make_set([render(box, apix)], pixel_size=apix, diameter=DIAMETER, **META)
        out.append((apix, compute_features(cs)))
    return out


def test_classranker_features_invariant_to_box_and_pixel_size(sampled_features):
    reference = sampled_features[0][1]
    image_cols = [CLASSRANKER_FEATURE_NAMES.index(n) for n in IMAGE_NAMES]
    meta_cols = [CLASSRANKER_FEATURE_NAMES.index(n) for n in META_NAMES if n != "resolution_nyquist"]
    for apix, features in sampled_features[1:]:
        diff = np.abs(features.values[0, image_cols] - reference.values[0, image_cols])
        worst = IMAGE_NAMES[int(diff.argmax())]
        assert diff.max() < 0.15, f"apix {apix}: {worst} differs by {diff.max():.3f}"
        np.testing.assert_array_equal(features.values[0, meta_cols], reference.values[0, meta_cols])
        nyquist = features.column("resolution_nyquist")[0]
        assert nyquist == pytest.approx((2 * apix / 12.0 - 0.3) / 0.2, rel=1e-5)


def test_classranker_missing_metadata_flags_and_finite():
    cs = make_set([render(64, 3.5), np.zeros((64, 64))])   # no pixel size, diameter or statistics
    features = compute_features(cs)
    assert np.isfinite(features.values).all()
    for name in CLASSRANKER_FEATURE_NAMES:
        if name.endswith("_known"):
            assert (features.column(name) == 0).all(), name
    for name in META_NAMES:
        assert (features.column(name) == 0).all(), name


def test_classranker_constant_images_are_empty_and_finite():
    images = np.stack([np.zeros((48, 48)), np.full((48, 48), 5.0), render(48, 4.0)])
    raw = classranker_raw_features(make_set(images, pixel_size=4.0, diameter=DIAMETER))
    features = compute_features(make_set(images, pixel_size=4.0, diameter=DIAMETER))
    assert np.isfinite(features.values).all()
    assert list(features.column("empty")) == [1.0, 1.0, 0.0]
    for name in IMAGE_NAMES:
        assert (features.column(name)[:2] == 0).all(), name
        assert np.isfinite(raw[name][2]), name


def test_classranker_off_centre_particle():
    blob = [(0.0, 0.0, 14.0, 1.0)]
    images = [render(64, 3.5, blob), render(64, 3.5, blob, shift=(40.0, 0.0))]
    features = compute_features(make_set(images, pixel_size=3.5, diameter=DIAMETER))
    assert features.column("com_offset")[1] > features.column("com_offset")[0] + 2.0
    assert features.column("blob_offset")[1] > features.column("blob_offset")[0] + 2.0


def test_classranker_blur_lowers_high_frequency_power():
    details = [(8.0, 8.0, 3.0, 0.5), (-15.0, -5.0, 3.0, 0.5), (5.0, 30.0, 3.0, 0.5)]
    sharp = render(128, 1.75, PARTICLE + details)
    blurred = ndimage.gaussian_filter(sharp, 6.0)
    features = compute_features(make_set([sharp, blurred], pixel_size=1.75, diameter=DIAMETER))
    assert features.column("power_high")[1] < features.column("power_high")[0] - 1.0
    assert features.column("power_mid")[1] < features.column("power_mid")[0]


def test_classranker_straight_edge_is_anisotropic():
    coords = np.arange(96) - 48
    edge = (coords[None, :] + 0.3 * coords[:, None] > 10).astype(np.float32)
    edge = ndimage.gaussian_filter(edge, 1.0)
    features = compute_features(make_set([render(96, 2.5), edge], pixel_size=2.5, diameter=DIAMETER))
    assert features.column("gradient_coherence")[1] > features.column("gradient_coherence")[0] + 1.0
    assert features.column("angular_power_peak")[1] > features.column("angular_power_peak")[0]


def test_classranker_metadata_values():
    cs = make_set(np.stack([render(64, 3.5)] * 2), pixel_size=3.5, diameter=DIAMETER,
                  class_distribution=[0.5, 0.0], accuracy_rotations=[999.0, 3.0],
                  accuracy_translations=[999.0, 1.5], resolution=[np.inf, 10.5],
                  particle_count=[np.nan, 40.0])
    features = compute_features(cs)
    col = features.column
    assert list(col("not_converged")) == [1.0, 0.0]
    assert list(col("accuracy_rotations_known")) == [1.0, 1.0]
    assert col("accuracy_rotations")[0] == 0.0                       # not converged -> neutral value
    assert col("log_class_distribution")[0] == pytest.approx((np.log(1.0) + 1.5) / 2.0)
    assert col("resolution_nyquist")[0] == pytest.approx((0.0 - 0.3) / 0.2)   # infinite resolution
    assert col("resolution_nyquist")[1] == pytest.approx((7.0 / 10.5 - 0.3) / 0.2, rel=1e-5)
    assert list(col("log_particle_count_known")) == [0.0, 1.0]
    assert np.isfinite(features.values).all()


# ----------------------------------------------------------------------------- compute_features
def test_compute_features_sets():
    cs = make_set(np.stack([render(64, 3.5), np.zeros((64, 64))]), pixel_size=3.5, diameter=DIAMETER)
    for name, (function, names) in FEATURE_SETS.items():
        matrix = compute_features(cs, name)
        assert isinstance(matrix, FeatureMatrix)
        assert matrix.values.shape == (2, len(names)) and matrix.values.dtype == np.float32
        assert matrix.names == list(names)
    with pytest.raises(InputError, match="unknown feature set"):
        compute_features(cs, "nope")
    empty = make_set(np.zeros((0, 32, 32)))
    assert compute_features(empty).values.shape == (0, len(CLASSRANKER_FEATURE_NAMES))


# ----------------------------------------------------------------------------- preprocess
def test_model_images_invariant_to_box_and_pixel_size():
    a = model_images(make_set([render(64, 3.5)], pixel_size=3.5, diameter=DIAMETER))
    b = model_images(make_set([render(128, 1.75)], pixel_size=1.75, diameter=DIAMETER))
    c = model_images(make_set([render(200, 1.5)], pixel_size=1.5, diameter=DIAMETER))
    assert a.shape == (1, 64, 64) and a.dtype == np.float32
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] > 0.95
    assert a.mean() == pytest.approx(0.0, abs=1e-5) and a.std() == pytest.approx(1.0, rel=1e-4)


def test_model_images_constant_and_unknown_metadata():
    images = np.stack([np.zeros((50, 50)), np.full((50, 50), 3.0), render(50, 4.0)])
    out = model_images(make_set(images), size=32)          # no pixel size: the whole box
    assert out.shape == (3, 32, 32) and np.isfinite(out).all()
    assert (out[:2] == 0).all()


def test_relion_model_images_window():
    cs = make_set([render(100, 3.0)], pixel_size=3.0, diameter=DIAMETER)
    assert relion_window(cs) == 52                          # ceil(150 / 3) + 1 = 51 -> even
    out = relion_model_images(cs)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert out.mean() == pytest.approx(im.crop_or_pad(cs.images, 52).mean(), rel=1e-4)  # no normalisation
    assert relion_window(make_set([render(100, 3.0)])) == 100


# ----------------------------------------------------------------------------- fast paths = previous values
REFERENCE = Path(__file__).parent / "data" / "feature_reference.npz"
#: metadata of the reference settings: (pixel size, particle diameter); the job's own diameter
#: frames a window wider than the box (edge-mean padding), 90 A one inside it
REFERENCE_SETTINGS = {"job": (3.5, 144.0), "small_particle": (3.5, 90.0), "no_diameter": (3.5, None),
                      "no_metadata": (None, None)}


def _reference_sets():
    data = np.load(REFERENCE)
    images = data["images"].astype(np.float32)
    table = pd.DataFrame({key.split("/", 1)[1]: data[key] for key in data.files if key.startswith("table/")})
    table["class_number"] = table["class_number"].astype(int)
    sets = {name: ClassSet(images, table.copy(), pixel_size=apix, particle_diameter=diameter)
            for name, (apix, diameter) in REFERENCE_SETTINGS.items()}
    return data, sets


def _projection(pixels: int = 64 * 64) -> np.ndarray:
    """(pixels, 16) fixed patterns (as in tests/data/make_feature_reference.py)."""
    n = np.arange(pixels)
    return np.stack([np.cos(2 * np.pi * ((k + 1) * 0.6180339887 * n % 1.0)) for k in range(16)], axis=1)


def test_window_resample_equals_crop_fft_crop():
    rng = np.random.default_rng(3)
    for box, window, size in [(256, 241.25, 64), (256, 193.0, 64), (64, 100.3, 64), (63, 70.0, 64),
                              (65, 30.0, 32), (48, 48.0, 48), (100, 37.5, 64), (40, 90.0, 64)]:
        stack = rng.normal(size=(3, box, box)).astype(np.float32) + 0.5
        fill = rng.normal(size=3)
        cut, resampled = im._window_grid(window, size)
        expected = im.crop_or_pad(im.fourier_resample(im.crop_or_pad(stack, cut, fill), resampled), size)
        out = im.window_resample(stack, window, size, fill)
        assert out.shape == expected.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=2e-5 * expected.std())
    several = im.resample_windows(stack, [im.Window(90.0, 64, fill), im.Window(30.0, 32)])
    np.testing.assert_array_equal(several[0], im.window_resample(stack, 90.0, 64, fill))
    np.testing.assert_array_equal(several[1], im.window_resample(stack, 30.0, 32))


def test_dilate_stack_equals_scipy():
    rng = np.random.default_rng(4)
    binary = rng.random((3, 17, 19)) < 0.05
    binary[0, 0, 0] = binary[1, -1, 5] = True
    for connectivity in (4, 8):
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        for iterations in (1, 2, 3):
            expected = ndimage.binary_dilation(binary, structure=structure, iterations=iterations)
            np.testing.assert_array_equal(im.dilate_stack(binary, iterations, connectivity), expected)


def test_features_and_model_images_equal_the_previous_values():
    """The fast path (one matrix product per stack, fused mask sums) gives the feature vectors and
    model images the crop / FFT / per-feature code gave (tests/data/feature_reference.npz)."""
    data, sets = _reference_sets()
    projection = _projection()
    for name, classset in sets.items():
        features = compute_features(classset).values
        np.testing.assert_allclose(features, data[f"{name}/features"], atol=1e-5, err_msg=name)
        images = model_images(classset)
        np.testing.assert_allclose(images.reshape(len(images), -1).astype(np.float64) @ projection,
                                   data[f"{name}/model_images_projected"], atol=1e-3, err_msg=name)
        if f"{name}/model_images_first" in data.files:
            np.testing.assert_allclose(images[:2], data[f"{name}/model_images_first"], atol=1e-5)
        shared_images, frame = model_images_and_frame(classset)
        np.testing.assert_array_equal(shared_images, images)
        np.testing.assert_array_equal(compute_features(classset, frame=frame).values, features)
        if f"{name}/relion_features" in data.files:
            np.testing.assert_allclose(compute_features(classset, "relion").values,
                                       data[f"{name}/relion_features"], atol=1e-5, err_msg=name)
            relion_images = relion_model_images(classset)
            np.testing.assert_allclose(relion_images.reshape(len(relion_images), -1).astype(np.float64)
                                       @ projection, data[f"{name}/relion_images_projected"], atol=1e-3)
    assert compute_features(sets["job"]).column("empty")[20:].tolist() == [1.0, 1.0]
