"""Metrics on known toy cases, baselines, and the evaluate command on jobs and datasets."""
import json
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from classranker_plugin.checkpoint import Ranker, calibrated_scores, save_checkpoint
from classranker_plugin.errors import InputError
from classranker_plugin.features import FEATURE_SETS
from classranker_plugin.model import ClassRankerNet
from classranker_plugin.simulation import simulate_job
from classranker_plugin.training import metrics
from classranker_plugin.training.baselines import baseline_scores, empty_heuristic
from classranker_plugin.training.calibration import fit_temperature
from classranker_plugin.training.dataset import build_dataset
from classranker_plugin.training.evaluation import evaluate, format_report

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- metrics
def test_auc_of_perfect_reversed_and_tied_rankings():
    y = np.array([0, 0, 0, 1, 1])
    assert metrics.roc_auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc(y, np.full(5, 0.5)) == 0.5
    assert metrics.average_precision(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    # soft labels are binarised at 0.5
    assert metrics.roc_auc([0.1, 0.4, 0.6, 0.9], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_auc_equals_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    s = np.round(rng.random(60) + 0.4 * y, 1)  # many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in product(s[y], s[~y])]
    assert metrics.roc_auc(y, s) == pytest.approx(np.mean(pairs))
    fpr, tpr, _ = metrics.roc_curve(y, s)
    assert np.trapz(tpr, fpr) == pytest.approx(np.mean(pairs))  # ties are diagonal steps


def test_average_precision_by_hand():
    # ranks: good, bad, good -> precision 1 at recall 1/2, 2/3 at recall 1
    assert metrics.average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_mcc_known_values():
    y = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1]  # at 0.5: tp 2, fn 1, fp 1, tn 2
    assert metrics.mcc(y, scores, 0.5) == pytest.approx(1 / 3)
    assert metrics.mcc(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], 0.5) == 1.0
    assert metrics.mcc(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], 0.5) == -1.0
    assert metrics.mcc(y, np.ones(6), 0.5) == 0.0  # everything kept: undefined -> 0
    threshold, best = metrics.best_mcc_threshold(y, scores)
    assert (threshold, best) == (0.8, pytest.approx(metrics.mcc(y, scores, 0.8)))
    assert best >= 1 / 3
    c = metrics.confusion(y, scores, 0.5)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 2, 1) and c["precision"] == pytest.approx(2 / 3)


def test_unlabelled_classes_are_left_out_not_counted_as_junk():
    """A NaN label (an uncertain class of a real run) must not count as junk: here it scores 0.7,
    above the cutoff, and would be a false positive."""
    y = np.array([1, 1, np.nan, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    report = metrics.binary_report(y, s)
    assert report["classes"] == 4 and report["at_cutoff"]["fp"] == 0 and report["at_cutoff"]["mcc"] == 1.0
    assert metrics.roc_auc(np.array([1, np.nan, 0]), [0.5, 0.9, 0.4]) == 1.0
    assert metrics.calibration_table(y, s)["classes"].sum() == 4


def test_calibration_table_and_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 400)
    labels = (rng.random(400) < 1 / (1 + np.exp(-logits / 3))).astype(float)  # true temperature 3
    assert fit_temperature(logits, labels) == pytest.approx(3, rel=0.35)
    table = metrics.calibration_table(labels, calibrated_scores(logits, 3.0))
    assert table["classes"].sum() == 400 and len(table) == 10
    assert metrics.expected_calibration_error(table) < 0.1


# ----------------------------------------------------------------------------- baselines
def test_baselines():
    box = 64
    y, x = np.mgrid[:box, :box] - (box - 1) / 2
    blob = np.exp(-(x ** 2 + y ** 2) / 50.0).astype(np.float32)
    noise = np.random.default_rng(0).normal(size=(box, box)).astype(np.float32)
    scores = empty_heuristic(np.stack([np.zeros((box, box), np.float32), blob, noise]))
    assert scores[0] == 0 and scores[1] > 0.9 and 0.2 < scores[2] < 0.8
    table = pd.DataFrame({"resolution": [8.0, np.inf, 20.0], "particle_count": [10, 500, 30]})
    found = baseline_scores(table)
    assert set(found) == {"resolution", "particle_count"}  # unknown statistics are left out
    assert list(np.argsort(-found["resolution"])) == [0, 2, 1]  # lower A is better, inf worst


# ----------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    jobs = [simulate_job(root / f"job{i}", n_classes=30, box=64, pixel_size=3.5, n_particles=1500, seed=10 + i)
            for i in range(2)]
    names = list(FEATURE_SETS["classranker"][1])
    torch.manual_seed(0)
    ranker = Ranker(network=ClassRankerNet(len(names)), feature_set="classranker", feature_names=names,
                    feature_mean=np.zeros(len(names), np.float32), feature_std=np.ones(len(names), np.float32))
    model = save_checkpoint(root / "model.pt", ranker)
    return root, jobs, model


def test_evaluate_jobs_with_baselines(setup, tmp_path):
    root, jobs, model = setup
    summary = evaluate(model, jobs, tmp_path / "out", cutoff=0.5, device="cpu")
    out = tmp_path / "out"
    for name in ("metrics.json", "per_class.csv", "calibration.csv", "baselines.csv", "roc.png", "pr.png",
                 "score_histogram.png", "reliability.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model_metrics"]["classes"] == 60
    assert {"class_distribution", "resolution", "particle_count", "empty_heuristic"} <= set(saved["baselines"])
    margin = saved["margin_over_best_baseline"]
    best = max(saved["baselines"].values(), key=lambda r: r["roc_auc"])
    assert margin["roc_auc"] == pytest.approx(saved["model_metrics"]["roc_auc"] - best["roc_auc"])
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == 60 and per_class["error"].is_monotonic_decreasing
    assert set(per_class["mistake"].dropna()) <= {"false positive", "false negative"}
    truth = pd.concat([pd.read_csv(Path(j) / "truth.csv") for j in jobs])
    assert per_class["label"].sum() == truth["label"].sum()
    assert "margin over the best baseline" in format_report(summary)


def test_evaluate_a_dataset_and_a_labels_csv(setup, tmp_path):
    root, jobs, model = setup
    dataset = build_dataset(jobs, tmp_path / "ds", nr_valid=10)
    summary = evaluate(model, [dataset], tmp_path / "a", device="cpu", split="valid", plots=False)
    assert summary["model_metrics"]["classes"] == 10
    on_all = evaluate(model, [dataset], tmp_path / "b", device="cpu", plots=False)
    on_job = evaluate(model, [jobs[0], jobs[1]], tmp_path / "c", device="cpu", plots=False)
    assert on_all["model_metrics"]["roc_auc"] == pytest.approx(on_job["model_metrics"]["roc_auc"], abs=1e-6)

    labels = tmp_path / "labels.csv"
    pd.read_csv(Path(jobs[0]) / "truth.csv")[["class_number", "label"]].head(20).to_csv(labels, index=False)
    star = next(Path(jobs[0]).glob("*_model.star"))
    summary = evaluate(model, [star], tmp_path / "d", labels=labels, device="cpu", plots=False)
    assert summary["model_metrics"]["classes"] == 20


def test_evaluate_refuses_mismatched_inputs(setup, tmp_path):
    root, jobs, model = setup
    names = list(FEATURE_SETS["relion"][1])
    relion = save_checkpoint(tmp_path / "relion.pt", Ranker(
        network=ClassRankerNet(len(names)), feature_set="relion", feature_names=names,
        feature_mean=np.zeros(len(names), np.float32), feature_std=np.ones(len(names), np.float32)))
    dataset = build_dataset(jobs[:1], tmp_path / "ds")
    with pytest.raises(InputError, match="feature set") as error:
        evaluate(relion, [dataset], tmp_path / "out", device="cpu")
    assert "ds" in str(error.value)
    with pytest.raises(InputError, match="truth.csv not found"):
        evaluate(model, [tmp_path / "ds" / "images.npy"], tmp_path / "out", device="cpu")
    all_good = tmp_path / "good.csv"
    pd.DataFrame({"class_number": [1, 2], "label": [1, 1]}).to_csv(all_good, index=False)
    with pytest.raises(InputError, match="same label"):
        evaluate(model, [jobs[0]], tmp_path / "out", labels=all_good, device="cpu")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_evaluate_command_line(setup, tmp_path, capsys):
    from classranker_plugin.cli.main import main
    root, jobs, model = setup
    assert main(["evaluate", str(jobs[0]), "--model", str(model), "--o", str(tmp_path / "out"),
                 "--device", "cpu", "--no-plots"]) == 0
    assert "ROC AUC" in capsys.readouterr().out
    assert main(["evaluate", str(jobs[0]), "--model", str(model), "--o", str(tmp_path / "x"), "--cutoff", "2"]) == 2
