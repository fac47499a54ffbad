"""Readers that score whatever class averages users have: model.star files lacking optional
columns (pyem's csparc2star, Scipion exports, hand-made), RELION 3.0 / 3.1 / 4 / 5 headers, and
per-class statistics tables in CSV, TSV or blank-separated text."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from classranker_plugin.errors import InputError
from classranker_plugin.features import compute_features
from classranker_plugin.io import read_classes
from classranker_plugin.scoring import auto_select, format_summary

EXAMPLE = Path(__file__).resolve().parent.parent / "classranker_plugin" / "example"


def copy_example(tmp_path, keep_columns=None, version="30001", extra_blocks=None):
    """The bundled example job in tmp_path/job, its model_classes cut to ``keep_columns``."""
    job = tmp_path / "job"
    shutil.copytree(EXAMPLE, job)
    model = starfile.read(job / "run_it025_model.star", always_dict=True)
    classes = model["model_classes"]
    classes["rlnReferenceImage"] = classes["rlnReferenceImage"].str.replace(
        "classranker_plugin/example/", "", regex=False)
    if keep_columns is not None:
        classes = classes[list(keep_columns)]
    blocks = {"model_general": model["model_general"], "model_classes": classes}
    blocks.update(extra_blocks or {})
    starfile.write(blocks, job / "run_it025_model.star")
    text = (job / "run_it025_model.star").read_text()
    (job / "run_it025_model.star").write_text(f"\n# version {version}\n" + text)
    return job


def feature(classset, name):
    features = compute_features(classset)
    return features.values[:, list(features.names).index(name)]


def test_pyem_like_model_star_scores_end_to_end(tmp_path):
    """Only rlnReferenceImage, rlnClassDistribution and rlnEstimatedResolution (as csparc2star
    writes): read, scored with the bundled model, the missing columns named in the summary."""
    job = copy_example(tmp_path, ["rlnReferenceImage", "rlnClassDistribution", "rlnEstimatedResolution"])
    classes = read_classes(job / "run_it025_model.star")
    assert classes.extra["missing_columns"] == ["rlnAccuracyRotations", "rlnAccuracyTranslationsAngst"]
    assert np.isnan(classes.stat("accuracy_rotations")).all()
    assert np.isfinite(classes.stat("class_distribution")).all()
    assert (feature(classes, "accuracy_rotations_known") == 0).all()
    assert (feature(classes, "log_class_distribution_known") == 1).all()
    summary = auto_select(classes, tmp_path / "out", cutoff=0.5, device="cpu", plots=False)
    assert summary["inputs_missing"] == ["rlnAccuracyRotations", "rlnAccuracyTranslationsAngst"]
    assert "accuracy_rotations" not in summary["inputs_used"]
    assert "missing in the input" in format_summary(summary)
    # the bundled model has a job head: the validation figures are the network's, and say so
    assert "network (before its job head) on its validation set" in format_summary(summary)
    assert 0 < summary["classes_kept"] < summary["classes"]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["inputs_missing"] == summary["inputs_missing"]
    assert (tmp_path / "out" / "particles.star").is_file()


def test_reference_image_only(tmp_path):
    job = copy_example(tmp_path, ["rlnReferenceImage"])
    classes = read_classes(job / "run_it025_model.star")
    assert len(classes) == 40
    assert set(classes.extra["missing_columns"]) == {"rlnClassDistribution", "rlnAccuracyRotations",
                                                     "rlnEstimatedResolution", "rlnAccuracyTranslationsAngst"}
    # the particle count still comes from data.star
    assert np.nansum(classes.stat("particle_count")) == 4000


def test_without_reference_image_refused_with_fix(tmp_path):
    job = copy_example(tmp_path, ["rlnClassDistribution", "rlnEstimatedResolution"])
    with pytest.raises(InputError) as info:
        read_classes(job / "run_it025_model.star")
    message = str(info.value)
    assert "run_it025_model.star" in message and "rlnReferenceImage" in message and "Fix:" in message


@pytest.mark.parametrize("version", ["30001", "40000", "50001"])
def test_relion_4_and_5_headers_and_extra_blocks(tmp_path, version):
    """RELION 4/5 model.star: version comment, extra per-class columns, pdf blocks after the classes."""
    extra = {"model_class_1": pd.DataFrame({"rlnSpectralIndex": [0, 1], "rlnResolution": [0.0, 0.01],
                                            "rlnSsnrMap": [1.0, 0.5]}),
             "model_pdf_orient_class_1": pd.DataFrame({"rlnOrientationDistribution": [0.5, 0.5]})}
    job = copy_example(tmp_path, version=version, extra_blocks=extra)
    classes = read_classes(job / "run_it025_model.star")
    assert len(classes) == 40 and classes.extra["missing_columns"] == []
    assert classes.extra["relion_version"] == "3.1+"


def test_relion30_without_accuracies(tmp_path):
    """RELION 3.0 layout (no optics table, translations in px) with the accuracies removed."""
    job = copy_example(tmp_path, ["rlnReferenceImage", "rlnClassDistribution", "rlnEstimatedResolution"])
    data = starfile.read(job / "run_it025_data.star", always_dict=True)
    particles = data["particles"].drop(columns=["rlnOpticsGroup"])
    starfile.write({"": particles}, job / "run_it025_data.star")
    classes = read_classes(job / "run_it025_data.star")
    assert classes.optics is None and classes.extra["relion_version"] == "3.0"
    assert np.nansum(classes.stat("particle_count")) == len(particles)


def test_class3d_refused_naming_the_fix(tmp_path):
    job = copy_example(tmp_path)
    model = starfile.read(job / "run_it025_model.star", always_dict=True)
    model["model_general"]["rlnReferenceDimensionality"] = 3
    starfile.write(model, job / "run_it025_model.star")
    with pytest.raises(InputError) as info:
        read_classes(job / "run_it025_model.star")
    assert "3D" in str(info.value) and "Class2D" in str(info.value)


# ----------------------------------------------------------------------------- statistics tables
STACK_STATS = {
    "csv": "class_number,class_distribution,resolution\n1,0.5,10\n2,0.3,12\n3,0.2,inf\n",
    "tsv": "class_number\tclass_distribution\tresolution\n1\t0.5\t10\n2\t0.3\t12\n3\t0.2\tinf\n",
    "blanks": "# written by hand\nclass_number   class_distribution resolution\n1 0.5 10\n\n2  0.3\t12\n3 0.2 inf\n",
    "relion_labels": "rlnClassNumber rlnClassDistribution rlnEstimatedResolution\n1 0.5 10\n2 0.3 12\n3 0.2 inf\n",
    "semicolon": "class_number;class_distribution;resolution\n1;0.5;10\n2;0.3;12\n3;0.2;inf\n",
}


@pytest.fixture
def stack3(tmp_path):
    import mrcfile
    path = tmp_path / "averages.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32))
    return path


@pytest.mark.parametrize("kind", sorted(STACK_STATS))
def test_stats_tables_in_any_delimiter(tmp_path, stack3, kind):
    stats = tmp_path / f"stats_{kind}.txt"
    stats.write_text(STACK_STATS[kind])
    classes = read_classes(stack3, stats=stats)
    assert classes.class_numbers.tolist() == [1, 2, 3]
    assert classes.stat("class_distribution").tolist() == [0.5, 0.3, 0.2]
    assert classes.stat("resolution")[:2].tolist() == [10.0, 12.0] and np.isinf(classes.stat("resolution")[2])


def test_one_column_stats_table(tmp_path, stack3):
    """A header with one name is not split into letters (the old delimiter sniffer did)."""
    stats = tmp_path / "numbers.csv"
    stats.write_text("class_number\n3\n1\n2\n")
    classes = read_classes(stack3, stats=stats)
    assert classes.class_numbers.tolist() == [3, 1, 2]
    assert classes.available_stats() == []
