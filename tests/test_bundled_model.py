"""The bundled starter model on fresh simulated jobs (seeds never used in training) and the demo."""
import numpy as np
import pandas as pd
import pytest
import torch

from classranker_plugin.checkpoint import BUNDLED_MODEL, load_model
from classranker_plugin.cli.main import main as cli
from classranker_plugin.io import read_classes
from classranker_plugin.scoring import score_classes
from classranker_plugin.simulation import simulate_job
from classranker_plugin.training.baselines import baseline_scores, empty_heuristic
from classranker_plugin.training.metrics import roc_auc

torch.set_num_threads(2)
TEST_SEED = 987_654  # the starter script trains on seeds 1000..1999


@pytest.fixture(scope="module")
def ranker():
    if not BUNDLED_MODEL.is_file():
        pytest.fail(f"the bundled model {BUNDLED_MODEL} is missing: run python -m classranker_plugin.training.starter --install")
    return load_model(device="cpu")


def _score_fresh_job(tmp_path, ranker, metadata, seed):
    job = simulate_job(tmp_path / f"{metadata}{seed}", n_classes=80, box=72, pixel_size=3.0, n_particles=16000,
                       junk_fraction=0.45, metadata=metadata, seed=seed)
    classes = read_classes(job / "run_it025_model.star")
    truth = pd.read_csv(job / "truth.csv").set_index("class_number").loc[classes.class_numbers]
    return classes, truth["label"].to_numpy(), score_classes(classes, ranker, explain=False)


def test_bundled_model_ranks_fresh_simulated_classes(tmp_path, ranker):
    classes, labels, result = _score_fresh_job(tmp_path, ranker, "realistic", TEST_SEED)
    assert roc_auc(labels, result.scores) >= 0.9


def test_bundled_model_beats_every_baseline_when_metadata_is_uninformative(tmp_path, ranker):
    """Junk as populated and as well resolved as good classes: only the image can tell."""
    classes, labels, result = _score_fresh_job(tmp_path, ranker, "uninformative", TEST_SEED + 1)
    model_auc = roc_auc(labels, result.scores)
    table = classes.table.copy()
    table["empty_score"] = empty_heuristic(classes.images, classes.pixel_size, classes.particle_diameter)
    for name, scores in baseline_scores(table).items():
        scores = np.asarray(scores, float)
        if np.isfinite(scores).all():
            assert model_auc > roc_auc(labels, scores), f"the baseline '{name}' ranks as well as the model"
    assert model_auc >= 0.85


def test_demo_runs_on_the_bundled_example(tmp_path, capsys, ranker):
    assert cli(["demo", "--o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "classes kept at cutoff 0.5" in out and "against the simulator's truth" in out
    assert (tmp_path / "demo" / "particles.star").is_file()


def test_bundled_model_on_held_out_relion_classes(tmp_path, ranker):
    """Genuine RELION Class2D classes whose maps (a generated ring family) no training job contains:
    the ranking is good and the 0.5 cutoff is calibrated for RELION's classes."""
    from pathlib import Path

    from classranker_plugin.training.evaluation import evaluate

    test_part = Path(__file__).resolve().parents[1] / "data" / "relion_corpus" / "test"
    summary = evaluate(BUNDLED_MODEL, [test_part], tmp_path / "eval", plots=False)
    metrics = summary["model_metrics"]
    assert metrics["roc_auc"] >= 0.95
    assert metrics["at_cutoff"]["mcc"] >= 0.7
