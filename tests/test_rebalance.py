"""Rebalance 2D classes: affinity invariances, superclasses, particle rebalancing, validation, outputs."""
import argparse

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from classranker_plugin.affinity import affinity_matrix
from classranker_plugin.classset import ClassSet
from classranker_plugin.errors import InputError
from classranker_plugin.rebalance import (rebalance_classes, rebalance_particles, superclass_cap,
                                          superclasses)

BOX = 64


def blob_object(seed: int, box: int = BOX) -> np.ndarray:
    """An asymmetric particle: a few random anisotropic Gaussians near the centre."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:box, :box] - box / 2
    image = np.zeros((box, box))
    for _ in range(5):
        cy, cx = rng.uniform(-0.17 * box, 0.17 * box, 2)
        sy, sx = rng.uniform(0.03 * box, 0.09 * box, 2)
        angle = rng.uniform(0, np.pi)
        u = (y - cy) * np.cos(angle) + (x - cx) * np.sin(angle)
        v = -(y - cy) * np.sin(angle) + (x - cx) * np.cos(angle)
        image += rng.uniform(0.5, 1.5) * np.exp(-0.5 * ((u / sy) ** 2 + (v / sx) ** 2))
    return image.astype(np.float32)


def view_copy(image: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """The same view again: random in-plane rotation, a shift of a few pixels, some noise."""
    out = ndimage.rotate(image, rng.uniform(0, 360), reshape=False, order=1)
    out = ndimage.shift(out, rng.uniform(-3, 3, 2), order=1)
    return (out + rng.normal(0, noise * image.std(), out.shape)).astype(np.float32)


def superclass_sizes(classes, labels, keep):
    """Particles kept per superclass, classes numbered 1.. with labels aligned."""
    group = np.asarray(labels)[np.asarray(classes) - 1]
    return np.bincount(group[keep])[1:]


@pytest.fixture(scope="module")
def particles():
    """200 000 particles in 6 classes; classes -> superclasses 1, 1, 2, 2, 3, 3 of sizes 100k, 70k, 30k."""
    rng = np.random.default_rng(5)
    classes = np.repeat([1, 2, 3, 4, 5, 6], [60_000, 40_000, 50_000, 20_000, 10_000, 20_000])
    return rng.permutation(classes), np.array([1, 1, 2, 2, 3, 3])


# ----------------------------------------------------------------------------- rebalance_particles

def test_factor_zero_keeps_every_particle(particles):
    classes, labels = particles
    keep = rebalance_particles(classes, labels, 0.0)
    assert keep.dtype == bool and keep.shape == classes.shape and keep.all()


def test_factor_one_makes_every_superclass_as_small_as_the_smallest(particles):
    classes, labels = particles
    keep = rebalance_particles(classes, labels, 1.0)
    assert superclass_sizes(classes, labels, keep).tolist() == [30_000] * 3
    assert (keep[np.isin(classes, [5, 6])]).all()  # the smallest superclass loses nothing


def test_intermediate_factor_bounds_the_ratio(particles):
    classes, labels = particles
    keep = rebalance_particles(classes, labels, 0.4)
    sizes = superclass_sizes(classes, labels, keep)
    assert sizes.tolist() == [75_000, 70_000, 30_000]
    assert sizes.min() >= 0.4 * sizes.max()


def test_max_size_caps_every_superclass(particles):
    classes, labels = particles
    keep = rebalance_particles(classes, labels, 0.0, max_size=50_000)
    assert superclass_sizes(classes, labels, keep).tolist() == [50_000, 50_000, 30_000]
    keep = rebalance_particles(classes, labels, 0.9, max_size=1_000)
    assert superclass_sizes(classes, labels, keep).tolist() == [1_000] * 3


def test_dropping_is_seeded_and_spread_over_the_classes(particles):
    classes, labels = particles
    first = rebalance_particles(classes, labels, 1.0, seed=3)
    assert np.array_equal(first, rebalance_particles(classes, labels, 1.0, seed=3))
    assert not np.array_equal(first, rebalance_particles(classes, labels, 1.0, seed=4))
    # random within a superclass: classes 1 and 2 (60k, 40k) keep about 18k and 12k of 30k
    kept = np.bincount(classes[first])
    assert abs(kept[1] - 18_000) < 600 and abs(kept[2] - 12_000) < 600


def test_mapping_and_array_assignments_agree(particles):
    classes, labels = particles
    as_dict = {c: s for c, s in zip(range(1, 7), labels)}
    assert np.array_equal(rebalance_particles(classes, labels, 0.7),
                          rebalance_particles(classes, as_dict, 0.7))
    # array aligned with explicit, non-contiguous class numbers
    renumbered = classes * 10
    assert np.array_equal(rebalance_particles(classes, labels, 0.7),
                          rebalance_particles(renumbered, labels, 0.7, class_numbers=np.arange(10, 70, 10)))


def test_cap_ignores_empty_superclasses():
    assert superclass_cap(np.array([0, 10, 40]), 0.5) == 20
    assert superclass_cap(np.array([10, 40]), 0.0) is None
    assert superclass_cap(np.array([10, 40]), 0.3, max_size=7) == 7
    assert superclass_cap(np.array([30, 100]), 0.3) == 100  # 30 / 0.3 is 100 despite rounding


@pytest.mark.parametrize("factor", [-0.1, 1.5, float("nan"), "0.5"])
def test_factor_outside_0_1_is_refused(particles, factor):
    classes, labels = particles
    with pytest.raises(InputError, match="factor"):
        rebalance_particles(classes, labels, factor)


@pytest.mark.parametrize("max_size", [0, -5, 2.5])
def test_bad_max_size_is_refused(particles, max_size):
    classes, labels = particles
    with pytest.raises(InputError, match="maximum superclass size"):
        rebalance_particles(classes, labels, 0.5, max_size=max_size)


def test_particles_of_unknown_classes_are_refused(particles):
    classes, labels = particles
    with pytest.raises(InputError, match="different jobs"):
        rebalance_particles(np.append(classes, [7, 9]), labels, 0.5)


# ----------------------------------------------------------------------------- affinity

def test_affinity_is_invariant_to_rotation_and_shift():
    a, b = blob_object(1), blob_object(2)
    stack = np.stack([a, np.rot90(a), ndimage.rotate(a, 30, reshape=False, order=1),
                      np.roll(a, (3, -4), axis=(0, 1)), b])
    affinity = affinity_matrix(stack)
    assert affinity.shape == (5, 5)
    assert np.allclose(affinity, affinity.T) and np.allclose(np.diag(affinity), 1.0)
    assert affinity.min() >= 0 and affinity.max() <= 1
    assert affinity[0, 1] > 0.98 and affinity[0, 3] > 0.98  # rot90 and np.roll are exact
    assert affinity[0, 2] > 0.9  # interpolated rotation
    assert min(affinity[0, 1:4]) > affinity[0, 4] + 0.3


def test_mirror_is_optional():
    a, b = blob_object(3), blob_object(4)
    stack = np.stack([a, a[:, ::-1], b])
    plain, mirrored = affinity_matrix(stack), affinity_matrix(stack, mirror=True)
    assert mirrored[0, 1] > 0.98 and plain[0, 1] < mirrored[0, 1] - 0.1
    assert mirrored[0, 2] < 0.7


def test_affinity_refuses_bad_stacks():
    with pytest.raises(InputError, match="square"):
        affinity_matrix(np.zeros((3, 32, 40)))
    with pytest.raises(InputError, match="n_angles"):
        affinity_matrix(np.zeros((3, 32, 32)), n_angles=35)
    stack = np.zeros((3, 32, 32), np.float32)
    stack[1, 4, 4] = np.nan
    with pytest.raises(InputError, match="class average 2 has NaN"):
        affinity_matrix(stack)


def test_empty_class_average_has_no_affinity_to_others():
    stack = np.stack([blob_object(1), np.zeros((BOX, BOX), np.float32), blob_object(2)])
    affinity = affinity_matrix(stack)
    assert np.isfinite(affinity).all() and affinity[1, 1] == 1.0
    assert affinity[1, 0] == 0.0 and affinity[1, 2] == 0.0


# ----------------------------------------------------------------------------- superclasses

@pytest.fixture(scope="module")
def three_views():
    """15 class averages: 5 rotated, shifted, noisy copies of each of 3 objects, interleaved."""
    rng = np.random.default_rng(0)
    objects = [blob_object(seed) for seed in (11, 12, 13)]
    truth = np.tile([0, 1, 2], 5)
    stack = np.stack([view_copy(objects[t], rng) for t in truth])
    return stack, truth


def test_copies_of_one_view_share_a_superclass(three_views):
    stack, truth = three_views
    labels = superclasses(affinity_matrix(stack), 3)
    assert labels.tolist() == [1, 2, 3] * 5  # numbered by first appearance
    assert np.array_equal(superclasses(affinity_matrix(stack), 3, seed=0), labels)


def test_superclass_count_extremes(three_views):
    affinity = affinity_matrix(three_views[0][:4])
    assert superclasses(affinity, 1).tolist() == [1, 1, 1, 1]
    assert superclasses(affinity, 4).tolist() == [1, 2, 3, 4]
    with pytest.raises(InputError, match="cannot make 5 superclasses from 4 classes"):
        superclasses(affinity, 5)
    for bad in (0, 2.5, None, "2"):
        with pytest.raises(InputError):
            superclasses(affinity, bad)


# ----------------------------------------------------------------------------- on a ClassSet, outputs

def make_classset(three_views, with_optics: bool, source: str = "job/run_it025_model.star") -> ClassSet:
    stack, truth = three_views
    rng = np.random.default_rng(1)
    # view 0 is crowded (classes 1, 4, ...: 400 particles each), views 1 and 2 have 100 and 50
    per_class = np.array([400, 100, 50] * 5)
    classes = rng.permutation(np.repeat(np.arange(1, 16), per_class))
    particles = pd.DataFrame({"rlnImageName": [f"{i:06d}@Extract/p.mrcs" for i in range(1, len(classes) + 1)],
                              "rlnClassNumber": classes})
    optics = None
    if with_optics:
        particles["rlnOpticsGroup"] = 1
        optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                               "rlnImagePixelSize": [1.5]})
    table = pd.DataFrame({"class_number": np.arange(1, 16)})
    return ClassSet(stack, table, particles=particles, optics=optics, source=source)


def test_rebalance_classes_end_to_end(three_views):
    classset = make_classset(three_views, with_optics=True)
    result = rebalance_classes(classset, 3, factor=1.0, seed=2)
    assert result.superclass.tolist() == [1, 2, 3] * 5
    counts = result.superclass_counts()
    assert counts["particles_before"].tolist() == [2000, 500, 250]
    assert counts["particles_after"].tolist() == [250, 250, 250] and result.cap == 250
    assert result.table.columns.tolist() == ["class_number", "superclass", "particles_before",
                                             "particles_after"]
    assert result.keep.sum() == 750


def test_rebalance_classes_checks_inputs_first(three_views):
    classset = make_classset(three_views, with_optics=False)
    classset.particles.loc[0, "rlnClassNumber"] = 42
    with pytest.raises(InputError, match="run_it025_model.star.*different jobs"):
        rebalance_classes(classset, 3, 0.5)
    with pytest.raises(InputError, match="cannot make 16 superclasses"):
        rebalance_classes(make_classset(three_views, False), 16, 0.5)
    with pytest.raises(InputError, match="factor"):
        rebalance_classes(make_classset(three_views, False), 3, 2.0)
    no_particles = make_classset(three_views, False)
    no_particles.particles = None
    with pytest.raises(InputError, match="no particles"):
        rebalance_classes(no_particles, 3, 0.5)


@pytest.mark.parametrize("with_optics", [True, False])
def test_outputs_are_written(tmp_path, three_views, with_optics):
    import starfile
    from classranker_plugin.cli.rebalance import write_outputs

    classset = make_classset(three_views, with_optics)
    result = rebalance_classes(classset, 3, factor=0.0, max_size=300, seed=0)
    write_outputs(tmp_path, classset, result)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["affinity.png", "counts.png", "particles_excluded.star", "particles_retained.star",
                     "superclasses.csv"]
    retained = starfile.read(tmp_path / "particles_retained.star", always_dict=True)
    excluded = starfile.read(tmp_path / "particles_excluded.star", always_dict=True)
    assert list(retained) == (["optics", "particles"] if with_optics else [""])
    kept, dropped = retained[list(retained)[-1]], excluded[list(excluded)[-1]]
    assert len(kept) == result.keep.sum() == 300 + 300 + 250 and len(kept) + len(dropped) == 2750
    assert kept["rlnImageName"].tolist() == classset.particles.loc[result.keep, "rlnImageName"].tolist()
    table = pd.read_csv(tmp_path / "superclasses.csv")
    assert table["particles_after"].sum() == len(kept)
    assert table.groupby("superclass")["particles_after"].sum().tolist() == [300, 300, 250]


def test_command_line(tmp_path, tutorial_dir):
    """The rebalance subcommand on the real RELION 3.0 tutorial job (10 classes, data.star beside it)."""
    pytest.importorskip("classranker_plugin.io", reason="classranker_plugin.io not available")
    import classranker_plugin.io as io
    if not hasattr(io, "read_classes"):
        pytest.skip("classranker_plugin.io.read_classes not available yet")
    from classranker_plugin.cli import rebalance as command

    parser = argparse.ArgumentParser()
    command.add_args(parser)
    model = tutorial_dir / "class2d_job006_K10_manualpick" / "run_it025_model.star"
    args = parser.parse_args([str(model), "--o", str(tmp_path / "out"), "--superclasses", "3",
                              "--factor", "1", "--seed", "1"])
    assert command.main(args) == 0
    table = pd.read_csv(tmp_path / "out" / "superclasses.csv")
    assert len(table) == 10 and table["superclass"].nunique() == 3
    after = table.groupby("superclass")["particles_after"].sum()
    assert after.nunique() == 1  # factor 1: every superclass as small as the smallest
    assert not list((tmp_path / "out").glob(".partial-*"))


def test_command_line_refuses_a_bad_factor(tmp_path, capsys):
    """Through the ``classranker`` dispatcher: an InputError exits with status 2, writes nothing."""
    from classranker_plugin.cli.main import main

    status = main(["rebalance", str(tmp_path / "run_it025_model.star"), "--o", str(tmp_path / "out"),
                   "--superclasses", "3", "--factor", "1.5"])
    assert status == 2
    assert "rebalance factor must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
