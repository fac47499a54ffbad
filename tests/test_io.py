"""Readers, validation and writers of classranker_plugin.io (real RELION 3.0 files + synthetic jobs)."""
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from classranker_plugin.classset import ClassSet
from classranker_plugin.errors import InputError
from classranker_plugin.io import (atomic_output_dir, atomic_write, empty_class_mask, read_classes,
                                   select_particles, validate_classes, write_class_scores,
                                   write_particles, write_selected_class_averages)

JOB006 = "class2d_job006_K10_manualpick"
JOB014 = "class2d_job014_K100_autopick_sorted"


# ----------------------------------------------------------------------------- helpers
def write_mrc(path, data, voxel_size=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


def make_relion31_job(project, n_classes=4, box=32, n_particles=300, seed=0, images=None,
                      model_general=None, drop_class_columns=(), particle_classes=None,
                      reference_stack="Class2D/job003/run_it002_classes.mrcs", n_refs=None):
    """A RELION 3.1-style Class2D iteration under project/Class2D/job003/ (class 4 is empty)."""
    rng = np.random.default_rng(seed)
    job = Path(project) / "Class2D" / "job003"
    job.mkdir(parents=True, exist_ok=True)
    if images is None:
        images = rng.normal(size=(n_classes, box, box)).astype(np.float32)
        images[-1] = 0.0
    write_mrc(job / "run_it002_classes.mrcs", images, voxel_size=2.0)
    n_refs = n_classes if n_refs is None else n_refs
    general = {"rlnReferenceDimensionality": 2, "rlnOriginalImageSize": box, "rlnPixelSize": 2.0,
               "rlnNrClasses": n_refs}
    general.update(model_general or {})
    classes = pd.DataFrame({
        "rlnReferenceImage": [f"{i:06d}@{reference_stack}" for i in range(1, n_refs + 1)],
        "rlnClassDistribution": np.full(n_refs, 1.0 / n_refs),
        "rlnAccuracyRotations": np.linspace(2, 5, n_refs),
        "rlnAccuracyTranslationsAngst": np.linspace(1, 2.5, n_refs),
        "rlnEstimatedResolution": np.linspace(10, 20, n_refs),
        "rlnOverallFourierCompleteness": np.ones(n_refs),
    }).drop(columns=list(drop_class_columns))
    starfile.write({"model_general": general, "model_classes": classes}, job / "run_it002_model.star")
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"],
                           "rlnOpticsGroup": [1, 2], "rlnVoltage": [300.0, 200.0],
                           "rlnImagePixelSize": [2.0, 2.0], "rlnImageSize": [box, box],
                           "rlnImageDimensionality": [2, 2]})
    if particle_classes is None:
        particle_classes = rng.integers(1, n_classes, n_particles)  # never the empty last class
    n_particles = len(particle_classes)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i:06d}@Extract/job002/particles.mrcs" for i in range(1, n_particles + 1)],
        "rlnDefocusU": rng.uniform(1e4, 3e4, n_particles).round(6),
        "rlnAnglePsi": rng.uniform(-180, 180, n_particles).round(6),
        "rlnOpticsGroup": rng.integers(1, 3, n_particles),
        "rlnClassNumber": np.asarray(particle_classes),
    })
    starfile.write({"optics": optics, "particles": particles}, job / "run_it002_data.star")
    starfile.write({"optimiser_general": {"rlnParticleDiameter": 40.0}}, job / "run_it002_optimiser.star")
    return job


@pytest.fixture
def job31(tmp_path):
    return make_relion31_job(tmp_path / "project")


def raises_naming(path, func, *args, **kwargs):
    """Call func, expect an InputError whose text names ``path``; return the error."""
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    assert Path(path).name in str(info.value), str(info.value)
    return info.value


# ----------------------------------------------------------------------------- real RELION 3.0 data
def test_job006_relion30_with_data_star(tutorial_dir):
    job = tutorial_dir / JOB006
    classes = read_classes(job / "run_it025_data.star")
    particles = starfile.read(job / "run_it025_data.star")
    assert len(classes) == 10 and classes.box_size == 100
    assert classes.pixel_size == pytest.approx(3.54)
    assert classes.particle_diameter == pytest.approx(200.0)
    assert classes.optics is None and classes.extra["relion_version"] == "3.0"
    counts = classes.stat("particle_count")
    assert counts.sum() == len(particles) == 1099
    assert counts[0] == (particles["rlnClassNumber"] == 1).sum()
    row9 = classes.table.iloc[8]
    assert row9["accuracy_rotations"] == 999 and row9["accuracy_translations"] == 999
    assert classes.table.iloc[0]["accuracy_translations"] == pytest.approx(0.62 * 3.54)
    assert classes.images.dtype == np.float32 and np.isfinite(classes.images).all()
    same = read_classes(job / "run_it025_model.star")  # data.star found as a sibling
    np.testing.assert_array_equal(same.stat("particle_count"), counts)


def test_job014_empty_classes_and_optimiser(tutorial_dir):
    classes = read_classes(tutorial_dir / JOB014 / "run_it025_optimiser.star")
    assert len(classes) == 100 and classes.particles is None
    assert np.isnan(classes.stat("particle_count")).all()
    assert classes.pixel_size == pytest.approx(3.54)
    assert classes.particle_diameter == pytest.approx(200.0)
    assert list(np.flatnonzero(empty_class_mask(classes)) + 1) == [33, 34, 50, 59, 87]
    assert np.isinf(classes.stat("resolution")).sum() > 0  # inf kept as inf
    validate_classes(classes)  # constant images are not errors


def test_job006_particles_subset_relion30(tutorial_dir, tmp_path):
    classes = read_classes(tutorial_dir / JOB006 / "run_it025_data.star")
    out = write_particles(tmp_path / "particles.star", classes, [1, 5])
    back = starfile.read(out, always_dict=True)
    assert list(back) == [""]  # RELION 3.0 input: one unnamed table, as it came
    table = back[""]
    expected = classes.particles[classes.particles["rlnClassNumber"].isin([1, 5])]
    assert list(table["rlnImageName"]) == list(expected["rlnImageName"])
    np.testing.assert_array_equal(table["rlnDefocusU"], expected["rlnDefocusU"])


# ----------------------------------------------------------------------------- synthetic RELION 3.1
def test_relion31_job_read_and_particles(job31, tmp_path):
    classes = read_classes(job31 / "run_it002_model.star")
    data = starfile.read(job31 / "run_it002_data.star")
    assert classes.extra["relion_version"] == "3.1+"
    assert classes.pixel_size == 2.0 and classes.particle_diameter == 40.0 and classes.box_size == 32
    np.testing.assert_array_equal(classes.stat("accuracy_translations"), np.linspace(1, 2.5, 4))
    assert classes.stat("particle_count").sum() == len(data["particles"])
    assert list(empty_class_mask(classes)) == [False, False, False, True]
    out = write_particles(tmp_path / "out" / "particles.star", classes, [1, 3])
    assert out == tmp_path / "out" / "particles.star"
    back = starfile.read(out)
    pd.testing.assert_frame_equal(back["optics"], data["optics"])
    expected = data["particles"][data["particles"]["rlnClassNumber"].isin([1, 3])].reset_index(drop=True)
    pd.testing.assert_frame_equal(back["particles"], expected)


def test_reference_relative_to_cwd(tmp_path, monkeypatch):
    """A model.star copied away from its project still finds its stack through the current dir."""
    job = make_relion31_job(tmp_path / "project")
    elsewhere = tmp_path / "copy" / "x"
    elsewhere.mkdir(parents=True)
    model = elsewhere / "run_it002_model.star"
    model.write_text((job / "run_it002_model.star").read_text())
    monkeypatch.chdir(tmp_path / "project")
    classes = read_classes(model)
    assert len(classes) == 4 and classes.particles is None


def test_star_files_not_named_run_itNNN(job31):
    renamed = job31 / "my_model.star"
    renamed.write_text((job31 / "run_it002_model.star").read_text())
    assert len(read_classes(renamed)) == 4
    optimiser = job31 / "opt.star"
    starfile.write({"optimiser_general": {
        "rlnModelStarFile": "Class2D/job003/run_it002_model.star",
        "rlnExperimentalDataStarFile": "Class2D/job003/run_it002_data.star"}}, optimiser)
    classes = read_classes(optimiser)
    assert classes.particles is not None and classes.particle_diameter is None


def test_pixel_size_argument_overrides_model(tmp_path):
    job = make_relion31_job(tmp_path / "p", model_general={"rlnPixelSize": 0.0})
    assert read_classes(job / "run_it002_model.star", pixel_size=2.5).pixel_size == 2.5


def test_select_particles_million_rows_fast():
    rng = np.random.default_rng(1)
    particles = pd.DataFrame({"rlnClassNumber": rng.integers(1, 101, 10**6),
                              "rlnDefocusU": rng.uniform(1e4, 3e4, 10**6)})
    start = time.perf_counter()
    subset = select_particles(particles, range(1, 51))
    assert time.perf_counter() - start < 1.0
    assert len(subset) == (particles["rlnClassNumber"] <= 50).sum()
    assert subset.index.is_monotonic_increasing


# ----------------------------------------------------------------------------- plain stacks
def test_plain_stack_with_csv_stats(tmp_path):
    stack = write_mrc(tmp_path / "avg.mrcs", np.random.default_rng(2).normal(size=(3, 40, 40)),
                      voxel_size=1.5)
    stats = tmp_path / "stats.csv"
    pd.DataFrame({"class_distribution": [0.5, 0.3, 0.2], "rlnAccuracyRotations": [2, 3, 999],
                  "rlnAccuracyTranslations": [1.0, 2.0, 999.0], "resolution": [8, 9, np.inf],
                  "particle_count": [50, 30, 20], "comment": ["a", "b", "c"]}).to_csv(stats, index=False)
    classes = read_classes(stack, stats=stats)
    assert classes.pixel_size == 1.5 and classes.box_size == 40
    np.testing.assert_array_equal(classes.stat("accuracy_translations"), [1.5, 3.0, 999.0])
    np.testing.assert_array_equal(classes.stat("particle_count"), [50, 30, 20])
    assert list(classes.class_numbers) == [1, 2, 3]
    assert classes.table["reference_image"][0] == f"000001@{stack}"


def test_plain_stack_star_stats_and_pixel_size_rules(tmp_path):
    stack = write_mrc(tmp_path / "avg.mrcs", np.ones((2, 32, 32)) * [[[1]], [[2]]], voxel_size=1.0)
    stats = tmp_path / "stats.star"
    starfile.write({"model_classes": pd.DataFrame({"rlnClassNumber": [7, 9],
                                                   "rlnClassDistribution": [0.4, 0.6]})}, stats)
    classes = read_classes(stack, stats=stats)
    assert classes.pixel_size is None  # header 1.0 = "not set"
    assert list(classes.class_numbers) == [7, 9]
    assert read_classes(stack, pixel_size=1.0).pixel_size == 1.0
    single = write_mrc(tmp_path / "one.mrc", np.zeros((32, 32)))
    one = read_classes(single)
    assert one.images.shape == (1, 32, 32) and one.pixel_size is None  # header 0 = unknown
    assert bool(empty_class_mask(one)[0])


# ----------------------------------------------------------------------------- bad inputs
def test_missing_stack(tmp_path):
    job = make_relion31_job(tmp_path / "p", reference_stack="Class2D/job003/gone.mrcs")
    error = raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_model.star")
    assert "gone.mrcs" in str(error)


def test_index_beyond_stack(tmp_path):
    job = make_relion31_job(tmp_path / "p", n_refs=5, particle_classes=[1, 2])
    error = raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_model.star")
    assert "class(es) 5" in str(error)


def test_box_mismatch(tmp_path):
    job = make_relion31_job(tmp_path / "p", model_general={"rlnOriginalImageSize": 64})
    error = raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_data.star")
    assert "64" in str(error) and "32" in str(error)


def test_non_square_and_tiny_stacks(tmp_path):
    wide = write_mrc(tmp_path / "wide.mrcs", np.zeros((2, 32, 40)))
    assert "not square" in str(raises_naming(wide, read_classes, wide))
    tiny = write_mrc(tmp_path / "tiny.mrcs", np.zeros((2, 8, 8)))
    assert "too small" in str(raises_naming(tiny, read_classes, tiny))


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_nan_pixels_name_the_classes(tmp_path):
    images = np.random.default_rng(3).normal(size=(4, 32, 32)).astype(np.float32)
    images[1, 3, 3] = np.nan
    images[2, 0, 0] = np.inf
    job = make_relion31_job(tmp_path / "p", images=images)
    error = raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_model.star")
    assert "class(es) 2, 3" in str(error)
    stack = write_mrc(tmp_path / "nan.mrcs", images)
    raises_naming(stack, read_classes, stack)


def test_missing_columns_named_with_block(tmp_path):
    job = make_relion31_job(tmp_path / "p", drop_class_columns=["rlnReferenceImage"])
    error = raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_model.star")
    assert "rlnReferenceImage" in str(error) and "model_classes" in str(error)
    job = make_relion31_job(tmp_path / "q")
    data = starfile.read(job / "run_it002_data.star")
    data["particles"] = data["particles"].drop(columns="rlnClassNumber")
    starfile.write(data, job / "run_it002_data.star")
    error = raises_naming(job / "run_it002_data.star", read_classes, job / "run_it002_model.star")
    assert "rlnClassNumber" in str(error) and "data_particles" in str(error)


def test_particles_in_unknown_classes(tmp_path):
    job = make_relion31_job(tmp_path / "p", particle_classes=[1, 2, 7, 9])
    error = raises_naming(job / "run_it002_data.star", read_classes, job / "run_it002_model.star")
    assert "7, 9" in str(error)


def test_bad_pixel_size(tmp_path):
    job = make_relion31_job(tmp_path / "p", model_general={"rlnPixelSize": 0.0})
    raises_naming(job / "run_it002_model.star", read_classes, job / "run_it002_model.star")
    stack = write_mrc(tmp_path / "avg.mrcs", np.zeros((2, 32, 32)))
    raises_naming(stack, read_classes, stack, pixel_size=-1.0)


def test_other_bad_inputs(tmp_path):
    raises_naming(tmp_path / "none.mrcs", read_classes, tmp_path / "none.mrcs")
    text = tmp_path / "x.txt"
    text.write_text("hello")
    raises_naming(text, read_classes, text)
    stack = write_mrc(tmp_path / "avg.mrcs", np.zeros((3, 32, 32)))
    stats = tmp_path / "stats.csv"
    pd.DataFrame({"class_distribution": [0.5, 0.5]}).to_csv(stats, index=False)
    raises_naming(stats, read_classes, stack, stats=stats)
    garbage = tmp_path / "garbage.mrcs"
    garbage.write_bytes(b"not an mrc file" * 100)
    raises_naming(garbage, read_classes, garbage)
    classes = ClassSet(images=np.zeros((1, 32, 32), np.float32), table=pd.DataFrame(index=[0]),
                       source="mem.mrcs", pixel_size=-2.0)
    raises_naming("mem.mrcs", validate_classes, classes)


# ----------------------------------------------------------------------------- atomic outputs
def test_atomic_output_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "job"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "particles.star").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists()  # the folder it created is removed again
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "particles.star").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_atomic_output_dir_success_and_marker(tmp_path):
    out = tmp_path / "job"
    with atomic_output_dir(out, marker="DONE") as tmp:
        (tmp / "a.star").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
        assert not (out / "a.star").exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["DONE", "a.star", "sub", "sub/b.txt"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "scores.star"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write(target) as tmp:
            tmp.write_text("new, half")
            raise ValueError("boom")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


# ----------------------------------------------------------------------------- writers
def test_class_scores_round_trip(job31, tmp_path):
    classes = read_classes(job31 / "run_it002_model.star")
    scores = np.array([0.9, 0.2, 0.75, 0.0])
    selected = scores >= 0.5
    vectors = np.array([[0.5, -1.25, 3.0], [1, 2, 3], [0, 0, 0], [np.nan, 1, 2]])
    out = write_class_scores(tmp_path / "class_scores.star", classes, scores, selected,
                             vectors, ["a", "b", "c"], extra_columns={"rlnNote": ["x y", "", "z", "w"]})
    back = starfile.read(out, always_dict=True)
    table = back["model_classes"]
    assert list(table.columns[:4]) == ["rlnClassNumber", "rlnReferenceImage", "rlnClassScore",
                                       "rlnSelected"]
    np.testing.assert_array_equal(table["rlnClassScore"], scores)
    assert list(table["rlnSelected"]) == [1, 0, 1, 0]
    assert table["rlnNormalizedFeatureVector"][0] == "[0.5,-1.25,3]"
    assert table["rlnNormalizedFeatureVector"][3] == "[nan,1,2]"
    np.testing.assert_array_equal(table["rlnAccuracyTranslationsAngst"], np.linspace(1, 2.5, 4))
    assert "rlnOverallFourierCompleteness" in table
    assert list(table["rlnReferenceImage"]) == list(classes.table["reference_image"])
    assert list(back["feature_names"]["classrankerFeatureName"]) == ["a", "b", "c"]
    assert list(table["rlnNote"]) == ["x y", "", "z", "w"]


def test_selected_class_averages_sorted(job31, tmp_path):
    classes = read_classes(job31 / "run_it002_model.star")
    scores = np.array([0.6, 0.9, 0.1, 0.7])
    out = write_selected_class_averages(tmp_path / "class_averages.star", classes, scores >= 0.5, scores)
    table = starfile.read(out)
    assert list(table["rlnClassNumber"]) == [2, 4, 1]
    np.testing.assert_array_equal(table["rlnPredictedClassScore"], [0.9, 0.7, 0.6])
    assert {"rlnReferenceImage", "rlnClassDistribution", "rlnEstimatedResolution"} <= set(table.columns)


def test_particle_subset_copies_rows_verbatim_and_matches_the_table_writer(tmp_path, tutorial_dir):
    """The fast path (rows copied as text) and the table writer give the same particles."""
    from classranker_plugin.io.writers import write_particles
    from classranker_plugin.simulation import simulate_job
    jobs = [simulate_job(tmp_path / "job", n_classes=8, box=32, pixel_size=4.0, n_particles=400, seed=2)
            / "run_it025_data.star",
            tutorial_dir / "class2d_job006_K10_manualpick" / "run_it025_data.star"]  # RELION 3.1 and 3.0
    for index, data_star in enumerate(jobs):
        classes = read_classes(data_star)
        selected = classes.class_numbers[::3]
        fast = write_particles(tmp_path / f"fast{index}.star", classes, selected)
        assert fast.read_text().count("\n") < data_star.read_text().count("\n")
        classes.extra["data_star"] = None  # forces the table writer
        slow = write_particles(tmp_path / f"slow{index}.star", classes, selected)
        a, b = starfile.read(fast, always_dict=True), starfile.read(slow, always_dict=True)
        assert list(a) == list(b)
        for name in a:
            pd.testing.assert_frame_equal(a[name].reset_index(drop=True), b[name].reset_index(drop=True),
                                          check_dtype=False)
