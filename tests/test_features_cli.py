"""`classranker features`: RELION's training-format STAR, read back by the dataset builder."""
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from classranker_plugin.cli.main import main as cli
from classranker_plugin.features import compute_features
from classranker_plugin.io import read_classes
from classranker_plugin.simulation import simulate_job
from classranker_plugin.training.dataset import build_dataset, load_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return simulate_job(tmp_path_factory.mktemp("sim") / "Class2D" / "job001", n_classes=12, box=64,
                        pixel_size=3.5, n_particles=600, seed=3)


def _table(path):
    return starfile.read(path, always_dict=True)[""]


@pytest.mark.parametrize("feature_set, length", [("relion", 24), ("classranker", None)])
def test_written_star_reads_back_as_the_same_feature_vectors(job, tmp_path, feature_set, length):
    model_star = job / "run_it025_model.star"
    out = tmp_path / "train" / "features.star"
    assert cli(["features", str(model_star), "--o", str(out), "--feature-set", feature_set,
                "--labels", str(job / "truth.csv")]) == 0
    expected = compute_features(read_classes(model_star), feature_set)
    data = load_dataset(build_dataset([out], tmp_path / "dataset", seed=0))
    assert np.array_equal(np.asarray(data.features), expected.values)  # exact: shortest float32 text
    if length:
        assert data.features.shape == (12, length) and data.info["feature_set"] == "relion"
    truth = pd.read_csv(job / "truth.csv")
    assert np.array_equal(np.asarray(data.labels), truth["label"].to_numpy(np.float32))
    assert data.images.shape == (12, 64, 64) and data.info["image_kind"] == "relion"
    table = _table(out)
    assert not table["rlnNormalizedFeatureVector"].str.contains(r"\s").any()
    assert table["rlnNormalizedFeatureVector"].str.match(r"^\[[^\]]+\]$").all()
    assert table["rlnSubImageStack"].iloc[0] == "000001@features_subimages.mrcs"


def test_without_labels_every_class_is_written_without_a_score(job, tmp_path):
    out = tmp_path / "features.star"
    assert cli(["features", str(job / "run_it025_data.star"), "--o", str(out)]) == 0
    table = _table(out)
    assert len(table) == 12 and "rlnClassScore" not in table
    assert table["rlnNormalizedFeatureVector"].map(lambda t: len(t[1:-1].split(","))).eq(24).all()
    names = starfile.read(out, always_dict=True)["feature_names"]
    assert len(names) == 24


def test_labels_of_unknown_classes_are_refused_before_writing(job, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("class_number,label\n1,1\n99,0\n")
    out = tmp_path / "features.star"
    assert cli(["features", str(job / "run_it025_model.star"), "--o", str(out), "--labels", str(labels)]) == 2
    assert "99" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob("*.mrcs"))


def test_real_tutorial_job_with_human_labels(tutorial_dir, tmp_path):
    job = tutorial_dir / "class2d_job014_K100_autopick_sorted"
    out = tmp_path / "features.star"
    assert cli(["features", str(job / "run_it025_model.star"), "--o", str(out),
                "--labels", str(job / "labels.csv")]) == 0
    table = _table(out)
    assert len(table) == 100 and table["rlnClassScore"].sum() == 16
    data = load_dataset(build_dataset([out], tmp_path / "dataset", seed=0))
    assert data.features.shape == (100, 24) and np.isfinite(np.asarray(data.features)).all()
