"""The scorer engine and the `classranker score` command: selection rules, outputs, bad input."""
import json

import numpy as np
import pytest
import starfile
import torch

from classranker_plugin.checkpoint import Ranker, save_checkpoint
from classranker_plugin.cli.main import main as cli
from classranker_plugin.errors import InputError
from classranker_plugin.features import FEATURE_SETS
from classranker_plugin.io import read_classes
from classranker_plugin.model import ClassRankerNet
from classranker_plugin.scoring import auto_select, score_classes, select_classes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained model of the right shape: the outputs, not the scores, are under test here."""
    names = list(FEATURE_SETS["classranker"][1])
    torch.manual_seed(0)
    ranker = Ranker(network=ClassRankerNet(len(names)), feature_set="classranker", feature_names=names,
                    feature_mean=np.zeros(len(names), np.float32), feature_std=np.ones(len(names), np.float32))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "random.pt", ranker)


def test_cutoff_keeps_scores_at_or_above_it():
    scores = np.array([0.9, 0.5, 0.49, 0.1])
    assert select_classes(scores, cutoff=0.5).tolist() == [True, True, False, False]
    assert select_classes(scores, cutoff=0.0).all()
    assert select_classes(scores, cutoff=1.0).sum() == 0


def test_minimum_classes_and_particles_add_the_best_remaining_classes():
    scores = np.array([0.9, 0.2, 0.4, 0.3])
    counts = np.array([100, 1000, 50, 10])
    assert select_classes(scores, counts, cutoff=0.5, min_classes=3).tolist() == [True, False, True, True]
    # 100 kept; the next best (0.4: +50, then 0.3: +10, then 0.2: +1000) until >= 1100
    assert select_classes(scores, counts, cutoff=0.5, min_particles=1100).tolist() == [True, True, True, True]
    assert select_classes(scores, counts, cutoff=0.5, min_particles=150).tolist() == [True, False, True, False]


def test_empty_classes_are_never_kept():
    keep = select_classes([0.9, 0.8], [0, 10], cutoff=0.5, min_classes=2, empty=[True, False])
    assert keep.tolist() == [False, True]


@pytest.mark.parametrize("cutoff", [-0.1, 1.5, float("nan")])
def test_cutoff_outside_0_1_is_an_error(cutoff):
    with pytest.raises(InputError, match="outside"):
        select_classes([0.5], cutoff=cutoff)


def test_scores_real_tutorial_job_with_empty_classes(tutorial_dir, random_model, tmp_path):
    from classranker_plugin.checkpoint import load_model
    classes = read_classes(tutorial_dir / "class2d_job014_K100_autopick_sorted" / "run_it025_model.star")
    result = score_classes(classes, load_model(random_model, device="cpu"))
    assert result.scores.shape == (100,) and np.isfinite(result.scores).all()
    assert result.empty.sum() == 5  # RELION's all-zero averages of empty classes: flagged, not fatal
    assert len(result.explanations) == 100 and all(e.startswith(("kept", "rejected")) for e in result.explanations)


def test_score_cli_writes_consistent_outputs(tutorial_dir, random_model, tmp_path):
    data_star = tutorial_dir / "class2d_job006_K10_manualpick" / "run_it025_data.star"
    out = tmp_path / "out"
    assert cli(["score", str(data_star), "--model", str(random_model), "--o", str(out), "--cutoff", "0.515"]) == 0
    scores = starfile.read(out / "class_scores.star", always_dict=True)
    scores = next(iter(scores.values()))
    kept = set(scores.loc[scores["rlnClassScore"] >= 0.515, "rlnClassNumber"].astype(int))
    assert set(scores.loc[scores["rlnSelected"] == 1, "rlnClassNumber"].astype(int)) == kept
    particles = starfile.read(out / "particles.star")
    original = starfile.read(data_star)
    assert set(particles["rlnClassNumber"]) <= kept
    assert len(particles) == original["rlnClassNumber"].isin(kept).sum()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes_kept"] == len(kept) and summary["particles_kept"] == len(particles)
    assert (out / "gallery.png").stat().st_size > 0 and (out / "score_histogram.png").stat().st_size > 0


def test_failed_run_leaves_no_output(tutorial_dir, random_model, tmp_path, monkeypatch):
    import classranker_plugin.scoring as scoring
    from classranker_plugin.checkpoint import load_model
    classes = read_classes(tutorial_dir / "class2d_job006_K10_manualpick" / "run_it025_model.star")

    def broken_plots(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr("classranker_plugin.report.write_report_plots", broken_plots)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        scoring.auto_select(classes, out, load_model(random_model, device="cpu"), cutoff=0.5)
    assert not out.exists() or not any(out.iterdir())


def test_bad_inputs_fail_before_any_output(tmp_path, random_model, capsys):
    out = tmp_path / "out"
    assert cli(["score", str(tmp_path / "missing_model.star"), "--o", str(out)]) == 2
    assert "missing_model.star" in capsys.readouterr().err
    stack = tmp_path / "classes.mrcs"
    import mrcfile
    data = np.random.default_rng(0).normal(size=(4, 32, 32)).astype(np.float32)
    data[2, 5, 5] = np.nan
    with mrcfile.new(stack) as mrc:
        mrc.set_data(data)
    assert cli(["score", str(stack), "--model", str(random_model), "--o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "classes.mrcs" in err and "3" in err  # names the file and the class with NaN pixels
    assert cli(["score", str(stack), "--o", str(out), "--cutoff", "2"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    assert not out.exists()


def test_same_classes_scored_with_and_without_metadata(tutorial_dir, random_model, tmp_path):
    from classranker_plugin.checkpoint import load_model
    job = tutorial_dir / "class2d_job006_K10_manualpick"
    ranker = load_model(random_model, device="cpu")
    with_meta = score_classes(read_classes(job / "run_it025_model.star"), ranker)
    bare = score_classes(read_classes(job / "run_it025_classes.mrcs", pixel_size=3.54), ranker)
    assert "resolution" in with_meta.inputs_used and bare.inputs_used == ["class averages"]
    assert np.isfinite(bare.scores).all() and bare.scores.shape == with_meta.scores.shape
