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


# ----------------------------------------------------------------------------- bad input on this path
def _real_dataset(root, name, images, labels, pixel_size=None):
    """A labelled dataset (labels + provenance in root/labels/name, the stack in root/files/name)."""
    import mrcfile
    import pandas as pd

    from classranker_plugin.training.real_data import read_dataset_labels

    folder, files = root / "labels" / name, root / "files" / name
    folder.mkdir(parents=True)
    files.mkdir(parents=True)
    with mrcfile.new(files / "classes.mrcs") as handle:
        handle.set_data(images)
        if pixel_size:
            handle.voxel_size = pixel_size
    pd.DataFrame({"class_number": list(labels), "label": list(labels.values()), "author_label": "",
                  "note": ""}).to_csv(folder / "labels.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps({"dataset": name, "pixel_size": pixel_size}))
    return read_dataset_labels(folder)


def _blobs(n, box, rng, dtype=np.float32):
    y, x = np.mgrid[:box, :box] - box / 2
    disc = (np.hypot(y, x) < box / 5).astype(np.float32)
    images = np.stack([disc * (1 + i % 3) + rng.normal(0, 0.5, (box, box)) for i in range(n)])
    if dtype == np.uint8:   # an 8-bit rendering: clipped, 256 levels
        images = np.clip((images - images.min()) / np.ptp(images) * 255, 0, 255)
    return images.astype(dtype)


def test_rendering_without_pixel_size_and_mixed_boxes_build_one_dataset(tmp_path):
    """An 8-bit rendering with no pixel size (MRC header 0) and a float stack of another box and
    sampling are read (the pixel size as unknown) and go into one training set at the model's image size."""
    from classranker_plugin.training.dataset import build_dataset, load_dataset
    from classranker_plugin.training.real_data import RealSource

    rng = np.random.default_rng(0)
    eight_bit = _real_dataset(tmp_path, "rendering", _blobs(8, 90, rng, np.uint8), {i: i % 2 for i in range(1, 9)})
    fine = _real_dataset(tmp_path, "fine", _blobs(6, 160, rng), {i: 1 for i in range(1, 7)}, pixel_size=1.1)
    classes, labels = load_classes(eight_bit, files_root=tmp_path / "files")
    assert classes.pixel_size is None and classes.images.shape == (8, 90, 90) and np.isfinite(labels).all()
    assert load_classes(fine, files_root=tmp_path / "files")[0].pixel_size == pytest.approx(1.1)
    build_dataset([RealSource(eight_bit, tmp_path / "files"), RealSource(fine, tmp_path / "files")],
                  tmp_path / "dataset", valid_fraction=0.25, seed=0)
    data = load_dataset(tmp_path / "dataset")
    assert len(data.labels) == 14 and data.images.shape[1:] == (64, 64)
    assert np.isfinite(np.asarray(data.images)).all() and np.isfinite(np.asarray(data.features)).all()


@pytest.mark.parametrize("labels, message", [
    ({1: 1, 2: 0, 3: 1, 9: 0}, r"labels for class number\(s\) 9, but .*classes.mrcs has 4 class"),
    ({1: 1, 2: 0}, None),                               # fewer labels than classes: the rest unlabelled
])
def test_labels_that_do_not_match_the_images_are_refused(tmp_path, labels, message):
    from classranker_plugin.errors import InputError

    dataset = _real_dataset(tmp_path, "d", _blobs(4, 48, np.random.default_rng(1)), labels)
    if message is None:
        _, found = load_classes(dataset, files_root=tmp_path / "files")
        assert found[:2].tolist() == [1, 0] and np.isnan(found[2:]).all()
        return
    with pytest.raises(InputError, match=message) as info:
        load_classes(dataset, files_root=tmp_path / "files")
    assert "labels.csv" in str(info.value) and "Fix:" in str(info.value)


def test_a_class_labelled_twice_is_refused(tmp_path):
    from classranker_plugin.errors import InputError

    dataset = _real_dataset(tmp_path, "d", _blobs(3, 48, np.random.default_rng(2)), {1: 1, 2: 0, 3: 1})
    dataset.labels.loc[len(dataset.labels)] = [2, 1.0, "", ""]
    with pytest.raises(InputError, match=r"class number\(s\) 2 labelled twice"):
        load_classes(dataset, files_root=tmp_path / "files")
