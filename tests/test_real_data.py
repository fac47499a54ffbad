"""The real, hand-labelled datasets (data/real): their records are complete, none comes from a
repository reserved for independent evaluation, and the bundled scorer ranks the real RELION tutorial
classes (in ../shared) at least as well as the trivial rankers."""
import json

import numpy as np
import pytest

from classranker_plugin.checkpoint import load_model
from classranker_plugin.scoring import score_classes
from classranker_plugin.training.baselines import baseline_scores, empty_heuristic
from classranker_plugin.training.metrics import roc_auc
from classranker_plugin.training.real_data import LABELS_ROOT, list_datasets, load_classes, summary_table

RESERVED = {"dzyla/follow_relion_gracefully", "marcottelab/slicem", "integrativemodeling/npc2018",
            "integrativemodeling/nup133", "integrativemodeling/nup82"}
REQUIRED = ("dataset", "specimen", "software", "repository", "commit", "files", "licence", "redistributable",
            "stain", "contrast", "n_classes", "n_good", "n_junk", "n_uncertain", "labelled_by")


def test_every_dataset_has_provenance_and_valid_labels():
    datasets = list_datasets()
    assert len(datasets) >= 8
    for dataset in datasets:
        missing = [key for key in REQUIRED if key not in dataset.provenance]
        assert not missing, f"{dataset.name}: provenance lacks {missing}"
        labels = dataset.labels["label"]
        assert labels.dropna().isin([0, 1]).all()
        assert dataset.labels["class_number"].is_unique
        counts = (int((labels == 1).sum()), int((labels == 0).sum()), int(labels.isna().sum()))
        declared = tuple(int(dataset.provenance[k]) for k in ("n_good", "n_junk", "n_uncertain"))
        assert counts == declared, f"{dataset.name}: labels.csv says {counts}, provenance {declared}"
        assert len(str(dataset.provenance["commit"])) == 40


def test_no_reserved_repository_anywhere():
    for path in LABELS_ROOT.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".txt", ".md", ".py"):
            text = path.read_text(errors="replace").lower()
            hits = [repo for repo in RESERVED if repo in text]
            assert not hits, f"{path} names reserved repositories {hits}"


def test_summary_table_counts():
    table = summary_table(list_datasets())
    assert {"dataset", "classes", "good", "junk", "uncertain", "licence"} <= set(table.columns)
    assert (table["good"] + table["junk"] + table["uncertain"] == table["classes"]).all()


@pytest.mark.parametrize("name", ["relion30_tutorial_k10", "relion30_tutorial_k100"])
def test_bundled_scorer_on_real_tutorial_labels(tutorial_dir, name):
    dataset = next(d for d in list_datasets() if d.name == name)
    classes, labels = load_classes(dataset)
    assert np.isfinite(labels).sum() >= 8
    result = score_classes(classes, load_model(device="cpu"), explain=False)
    scores = np.where(result.empty, 0.0, result.scores)
    table = classes.table.copy()
    table["empty_score"] = empty_heuristic(classes.images, classes.pixel_size, classes.particle_diameter)
    trivial = {k: roc_auc(labels, v) for k, v in baseline_scores(table).items()}
    model = roc_auc(labels, scores)
    assert model >= max(trivial.values()) - 0.02, (model, trivial)
    good = labels == 1
    assert (scores[good] >= 0.5).mean() >= 0.8  # the default cutoff keeps the good classes
