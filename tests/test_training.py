"""Dataset builder (every label source, bad inputs) and trainer (learning, resume, fine-tuning)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

from classranker_plugin.checkpoint import Ranker, load_model, save_checkpoint
from classranker_plugin.errors import InputError
from classranker_plugin.features import compute_features
from classranker_plugin.io import read_classes
from classranker_plugin.io.star import write_star
from classranker_plugin.model import ClassRankerNet, RelionRankerNet
from classranker_plugin.preprocess import relion_model_images
from classranker_plugin.simulation import simulate_job
from classranker_plugin.training.augment import AugmentConfig, FeatureMasker, augment_images
from classranker_plugin.training.dataset import build_dataset, load_dataset
from classranker_plugin.training.masking import metadata_groups
from classranker_plugin.training.sources import ClassSetSource
from classranker_plugin.training.trainer import train

torch.set_num_threads(1)
FAST = dict(batch_size=16, lr=3e-3, device="cpu", progress=False)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    return [simulate_job(root / f"job{i}", n_classes=40, box=64, pixel_size=3.5, n_particles=2000, seed=i)
            for i in range(3)]


@pytest.fixture(scope="module")
def dataset(jobs, tmp_path_factory):
    return build_dataset(jobs, tmp_path_factory.mktemp("ds") / "dataset", seed=0)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    summary = train(dataset, out, epochs=5, seed=0, **FAST)
    return out, summary


def _relion_star(tmp_path, job, vectors=True, score=None, short_row=None, index_shift=0):
    """A RELION training-format STAR (paths relative to a project root) made from a simulated job."""
    project = tmp_path / "project"
    stack_dir = project / "Class2D" / "job001"
    stack_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(job) / "run_it025_classes.mrcs", stack_dir / "run_it025_classes.mrcs")
    classes = read_classes(Path(job) / "run_it025_model.star")
    sub = project / "Select" / "job002" / "subimages.mrcs"
    sub.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(sub, overwrite=True) as mrc:
        mrc.set_data(relion_model_images(classes).astype(np.float32))
    truth = pd.read_csv(Path(job) / "truth.csv")
    n = len(classes)
    table = pd.DataFrame({
        "rlnClassNumber": classes.class_numbers,
        "rlnReferenceImage": [f"{i + 1 + index_shift:06d}@Class2D/job001/run_it025_classes.mrcs" for i in range(n)],
        "rlnSubImageStack": [f"{i + 1:06d}@Select/job002/subimages.mrcs" for i in range(n)],
        "rlnClassScore": truth["label"].to_numpy(float) if score is None else score,
        "rlnEstimatedResolution": classes.stat("resolution"),
    })
    features = compute_features(classes, "relion").values
    if vectors:
        text = ["[" + ",".join(f"{v:.6g}" for v in row) + "]" for row in features]
        if short_row is not None:
            text[short_row] = "[" + ",".join(f"{v:.6g}" for v in features[short_row][:-1]) + "]"
        table["rlnNormalizedFeatureVector"] = text
    star = tmp_path / "training" / "features_normalized.star"
    star.parent.mkdir(exist_ok=True)
    write_star(star, {"": table})
    return star, project, features, truth


# ----------------------------------------------------------------------------- dataset builder
def test_dataset_from_simulated_jobs(dataset, jobs):
    data = load_dataset(dataset)
    n = 3 * 40
    assert data.images.shape == (n, 64, 64) and data.images.dtype == np.float32
    assert isinstance(data.images, np.memmap)
    assert data.features.shape == (n, len(data.feature_names))
    truth = pd.concat([pd.read_csv(Path(j) / "truth.csv") for j in jobs])
    np.testing.assert_array_equal(data.labels, truth["label"].to_numpy(np.float32))
    assert set(np.unique(data.split)) == {0, 1} and data.split.sum() == 24
    for part in (0, 1):  # stratified: both labels in both parts, in about the same proportion
        labels = np.asarray(data.labels)[np.asarray(data.split) == part]
        assert 0.4 < labels.mean() < 0.8
    assert list(data.meta.columns[:4]) == ["source", "job", "class_number", "kind"]
    assert {"resolution", "class_distribution", "particle_count", "empty_score"} <= set(data.meta.columns)
    info = json.loads((Path(dataset) / "dataset.json").read_text())
    assert info["feature_set"] == "classranker" and info["counts"]["classes"] == n
    assert len(info["provenance"]["sources"]) == 3 and "command_line" in info["provenance"]
    assert not [p for p in Path(dataset).parent.iterdir() if p.name.startswith(".")]  # no partial folders


def test_dataset_from_relion_star_with_feature_vectors(tmp_path, jobs):
    star, project, features, truth = _relion_star(tmp_path, jobs[0])
    data = load_dataset(build_dataset([star], tmp_path / "ds", root=project, nr_valid=8))
    assert data.info["feature_set"] == "relion" and data.info["image_kind"] == "relion"
    np.testing.assert_allclose(data.features, features, rtol=1e-5, atol=1e-6)  # used as given
    np.testing.assert_array_equal(data.labels, truth["label"].to_numpy(np.float32))
    assert data.split.sum() == 8
    classes = read_classes(Path(jobs[0]) / "run_it025_model.star")
    np.testing.assert_allclose(data.images, relion_model_images(classes), rtol=1e-5, atol=1e-5)


def test_dataset_from_relion_star_without_feature_vectors(tmp_path, jobs):
    star, project, _, truth = _relion_star(tmp_path, jobs[1], vectors=False)
    table = pd.read_csv(Path(jobs[1]) / "truth.csv")
    data = load_dataset(build_dataset([star], tmp_path / "ds", root=project, pixel_size=3.5))
    # features and images are computed from the class averages (rlnReferenceImage)
    assert data.info["feature_set"] == "classranker" and data.info["image_kind"] == "classranker"
    assert data.features.shape == (len(table), len(data.feature_names))
    np.testing.assert_array_equal(data.meta["class_number"], table["class_number"])


def test_dataset_from_a_manual_selection(tmp_path, jobs):
    classes = read_classes(Path(jobs[2]) / "run_it025_model.star")
    kept = [1, 2, 5, 9]
    data = load_dataset(build_dataset([ClassSetSource(classes, kept, job="Class2D/job009")], tmp_path / "ds"))
    assert data.labels.sum() == len(kept)
    np.testing.assert_array_equal(data.meta["class_number"][np.asarray(data.labels) == 1], kept)
    assert set(data.meta["kind"]) == {"kept", "rejected"}


def test_bad_dataset_inputs_are_refused(tmp_path, jobs):
    n = 40
    score = np.linspace(0, 1, n)
    score[3] = 1.5
    star, project, _, _ = _relion_star(tmp_path / "a", jobs[0], score=score)
    with pytest.raises(InputError, match=r"outside \[0, 1\]") as error:
        build_dataset([star], tmp_path / "ds", root=project)
    assert "features_normalized.star" in str(error.value)

    star, project, _, _ = _relion_star(tmp_path / "b", jobs[0], short_row=5)
    with pytest.raises(InputError, match="row 6 has 23 values"):
        build_dataset([star], tmp_path / "ds", root=project)

    star, project, _, _ = _relion_star(tmp_path / "c", jobs[0], index_shift=5)
    with pytest.raises(InputError, match="holds 40") as error:
        build_dataset([star], tmp_path / "ds", root=project)
    assert "features_normalized.star" in str(error.value)

    star, project, _, _ = _relion_star(tmp_path / "d", jobs[0])
    shutil.rmtree(project / "Select")
    with pytest.raises(InputError, match="subimages.mrcs not found"):
        build_dataset([star], tmp_path / "ds", root=project)

    classes = read_classes(Path(jobs[0]) / "run_it025_model.star")
    with pytest.raises(InputError, match="one label only"):
        build_dataset([ClassSetSource(classes, classes.class_numbers)], tmp_path / "ds")
    with pytest.raises(InputError, match="not among"):
        build_dataset([ClassSetSource(classes, [41])], tmp_path / "ds")
    # mixing feature sets is a length mismatch
    star, project, _, _ = _relion_star(tmp_path / "e", jobs[0])
    with pytest.raises(InputError, match="do not match"):
        build_dataset([jobs[1], star], tmp_path / "ds", root=project)
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]


# ----------------------------------------------------------------------------- augmentation
def test_augmentation_is_seeded_and_keeps_shape():
    images = torch.randn(8, 1, 64, 64)
    a = augment_images(images, torch.Generator().manual_seed(3))
    b = augment_images(images, torch.Generator().manual_seed(3))
    assert a.shape == images.shape and torch.equal(a, b)
    exact = augment_images(images, torch.Generator().manual_seed(3),
                           AugmentConfig(p_affine=0.0, p_blur=0.0, p_display=0.0))
    # rotations by 90 degrees and flips only permute pixels
    np.testing.assert_allclose(np.sort(exact.numpy().ravel()), np.sort(images.numpy().ravel()))


def test_photometric_augmentation_blurs_and_renders():
    images = torch.randn(6, 1, 64, 64)
    images[0] = 0.0  # an empty class stays blank
    blurred = augment_images(images, torch.Generator().manual_seed(1),
                             AugmentConfig(rot90=False, flip=False, p_affine=0, p_blur=1.0, p_display=0))
    # a low-pass removes power: white noise loses most of its variance
    assert float(blurred[1:].var()) < 0.6 * float(images[1:].var())
    rendered = augment_images(images, torch.Generator().manual_seed(1),
                              AugmentConfig(rot90=False, flip=False, p_affine=0, p_blur=0, p_display=1.0))
    assert torch.isfinite(rendered).all() and float(rendered[0].abs().max()) == 0.0
    levels = [len(torch.unique(rendered[i])) for i in range(1, 6)]
    assert max(levels) <= 256  # 8-bit steps
    assert torch.allclose(rendered[1:].flatten(1).std(1), torch.ones(5), atol=1e-3)  # standardised again


def test_metadata_masking_uses_the_unknown_encoding(jobs):
    classes = read_classes(Path(jobs[0]) / "run_it025_model.star")
    features = compute_features(classes)
    groups = metadata_groups("classranker", features.names)
    names = {features.names[i] for g in groups for i in g.indices}
    assert {"log_particle_count", "log_particle_count_known", "resolution_relative"} <= names
    assert not any(n.startswith(("power", "blob", "skew")) for n in names)
    bare, particles = classes.table.copy(), classes.particles
    classes.particles = None  # a bare stack: no statistics, no particles
    for column in ("class_distribution", "accuracy_rotations", "accuracy_translations", "resolution",
                   "particle_count"):
        classes.table[column] = np.nan
    unknown = compute_features(classes).values
    classes.table, classes.particles = bare, particles
    masked = FeatureMasker(groups).mask_all(torch.as_tensor(features.values)).numpy()
    columns = sorted(i for g in groups for i in g.indices)
    np.testing.assert_allclose(masked[:, columns], unknown[:, columns], atol=1e-6)


# ----------------------------------------------------------------------------- trainer
def test_training_learns_and_writes_a_calibrated_model(trained, dataset):
    out, summary = trained
    history = pd.read_csv(out / "metrics.csv")
    assert len(history) == 5 and history["val_auc"].max() > 0.7
    assert (out / "metrics.png").stat().st_size > 1000
    data = load_dataset(dataset)
    ranker = load_model(out / "model.pt", device="cpu", feature_names=data.feature_names)
    assert ranker.metrics["val_auc"] > 0.7 and 0 <= ranker.metrics["precision_at_cutoff"] <= 1
    assert "recall_at_cutoff" in ranker.metrics and ranker.temperature > 0
    train_features = np.asarray(data.features)[np.asarray(data.split) == 0]
    np.testing.assert_allclose(ranker.feature_mean, train_features.mean(axis=0), rtol=1e-4, atol=1e-5)
    scores = ranker.score(np.array(data.images[:10]), np.array(data.features[:10]))
    assert scores.shape == (10,) and ((scores >= 0) & (scores <= 1)).all()
    state = torch.load(out / "last.pt", weights_only=True)  # plain tensors and types only
    assert state["epoch"] == 4 and "optimizer" in state and "scheduler" in state


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path):
    options = dict(epochs=3, seed=1, **FAST)
    train(dataset, tmp_path / "straight", **options)

    def crash(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt("killed after epoch 2")
    with pytest.raises(KeyboardInterrupt):
        train(dataset, tmp_path / "resumed", on_epoch_end=crash, **options)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 1
    train(dataset, tmp_path / "resumed", resume=True, **options)
    for name in ("last.pt", "model.pt"):
        key = "model" if name == "last.pt" else "state_dict"
        a = torch.load(tmp_path / "straight" / name, weights_only=True)[key]
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)[key]
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert len(pd.read_csv(tmp_path / "resumed" / "metrics.csv")) == 3
    with pytest.raises(InputError, match="options differ") as error:
        train(dataset, tmp_path / "resumed", resume=True, **{**options, "seed": 2})
    assert "last.pt" in str(error.value)


def test_fine_tuning_with_a_frozen_cnn(trained, dataset, tmp_path):
    out, _ = trained
    before = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    train(dataset, tmp_path / "tuned", epochs=1, init=out / "model.pt", freeze_cnn=True, **FAST)
    after = torch.load(tmp_path / "tuned" / "model.pt", weights_only=True)["state_dict"]
    for key in before:
        if key.startswith("cnn."):
            assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_init_checkpoints_that_do_not_fit_are_refused(dataset, tmp_path):
    names = load_dataset(dataset).feature_names
    n = len(names)

    def ranker(network, feature_names):
        return Ranker(network=network, feature_set="classranker", feature_names=feature_names,
                      feature_mean=np.zeros(len(feature_names), np.float32),
                      feature_std=np.ones(len(feature_names), np.float32))
    other_features = save_checkpoint(tmp_path / "other_features.pt", ranker(ClassRankerNet(3), ["a", "b", "c"]))
    with pytest.raises(InputError, match="feature list does not match") as error:
        train(dataset, tmp_path / "x", epochs=1, init=other_features, **FAST)
    assert "other_features.pt" in str(error.value)

    relion = save_checkpoint(tmp_path / "relion_arch.pt", ranker(RelionRankerNet(n_features=n), names))
    with pytest.raises(InputError, match="not 'classranker'") as error:
        train(dataset, tmp_path / "x", epochs=1, init=relion, arch="classranker", **FAST)
    assert "relion_arch.pt" in str(error.value)

    broken = tmp_path / "mixed_arch.pt"
    payload = torch.load(relion, weights_only=True)
    payload["arch"] = ClassRankerNet(n).config  # weights of one architecture, config of another
    torch.save(payload, broken)
    with pytest.raises(InputError, match="do not fit the architecture") as error:
        train(dataset, tmp_path / "x", epochs=1, init=broken, **FAST)
    assert "mixed_arch.pt" in str(error.value)


def test_resume_from_another_architecture_is_refused(trained, dataset, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(InputError, match="another architecture") as error:
        train(dataset, copy, epochs=5, seed=0, resume=True, arch="relion", **FAST)
    assert "last.pt" in str(error.value)


def test_command_line_make_dataset_and_train(jobs, tmp_path, capsys):
    from classranker_plugin.cli.main import main
    assert main(["make-dataset", str(jobs[0]), str(jobs[1]), "--o", str(tmp_path / "ds"), "--nr-valid", "16"]) == 0
    assert "80 classes" in capsys.readouterr().out
    assert main(["train", "--dataset", str(tmp_path / "ds"), "--o", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "16", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    assert load_model(tmp_path / "run" / "model.pt", device="cpu").job_head is None
    assert main(["make-dataset", str(tmp_path / "nowhere"), "--o", str(tmp_path / "ds2")]) == 2


def test_fine_tuning_from_the_command_line_with_a_job_head(dataset, tmp_path, capsys):
    """train --init <bundled model> --job-head --calibrate-head: the fine-tuned model carries a job
    head (with its calibration) again, and scoring uses it (scores differ from the network alone)."""
    from classranker_plugin.checkpoint import BUNDLED_MODEL
    from classranker_plugin.cli.main import main
    from classranker_plugin.training.job_head_fit import head_scores
    from classranker_plugin.training.real_stage import corpus_records

    assert main(["train", "--dataset", str(dataset), "--o", str(tmp_path / "run"), "--init", str(BUNDLED_MODEL),
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--threads", "1", "--quiet",
                 "--job-head", "--calibrate-head"]) == 0
    assert "job head fitted on 3 jobs (each also without metadata), with its calibration" in capsys.readouterr().out
    ranker = load_model(tmp_path / "run" / "model.pt", device="cpu")
    assert ranker.job_head is not None and ranker.job_head.calibration is not None
    records, names = corpus_records(dataset, ranker)
    with_head = head_scores(ranker.job_head, records[0], names)
    assert not np.allclose(with_head, ranker.scores_from_logits(records[0].logits))


def test_two_process_data_parallel_training_with_torchrun(dataset, tmp_path):
    """torchrun with 2 CPU processes (Gloo): DDP, sharded batches, rank 0 writes the files."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "classranker_plugin.cli.main",
                             "train", "--dataset", str(dataset), "--o", str(tmp_path / "ddp"), "--epochs", "1",
                             "--batch-size", "16", "--device", "cpu", "--threads", "1", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch 1") == 1  # one report, from rank 0
    checkpoint = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    assert checkpoint["provenance"]["training"]["world_size"] == 2
    assert len(pd.read_csv(tmp_path / "ddp" / "metrics.csv")) == 1


def test_dataset_from_real_relion_jobs_with_human_selections(tutorial_dir, tmp_path):
    """Real RELION 3.0 Class2D jobs, labelled by RELION's backup_selection.star and by a CSV."""
    k100, k10 = tutorial_dir / "class2d_job014_K100_autopick_sorted", tutorial_dir / "class2d_job006_K10_manualpick"
    sources = [f"{k100}={k100 / 'Select_job015' / 'backup_selection.star'}", f"{k10}={k10 / 'labels.csv'}"]
    data = load_dataset(build_dataset(sources, tmp_path / "ds"))
    assert len(data) == 110 and data.labels.sum() == 16 + 6  # the tutorial's selections
    assert data.images.shape[1:] == (64, 64) and np.isfinite(data.features).all()


def test_batches_from_a_memory_map_equal_preloaded_ones(dataset, monkeypatch):
    from classranker_plugin.training import loop
    data = load_dataset(dataset)
    args = (data.images, data.features, data.labels, torch.device("cpu"), np.zeros(data.features.shape[1]),
            np.ones(data.features.shape[1]))
    preloaded = loop.Batches(*args)
    monkeypatch.setattr(loop, "PRELOAD_BYTES", 0)
    streamed = loop.Batches(*args)
    assert preloaded.preloaded and not streamed.preloaded
    index = torch.tensor([17, 3, 99, 3, 40])
    for a, b in zip(preloaded.get(index), streamed.get(index)):
        assert torch.equal(a, b)


def test_best_epoch_choice():
    from classranker_plugin.training.results import is_better
    best = {"epoch": 2, "val_auc": 0.9, "val_loss": 0.3, "train_loss": 0.2}
    assert is_better({"epoch": 3, "val_auc": 0.95, "val_loss": 0.5, "train_loss": 0.2}, best)
    assert is_better({"epoch": 3, "val_auc": 0.9, "val_loss": 0.2, "train_loss": 0.2}, best)
    assert not is_better({"epoch": 3, "val_auc": 0.85, "val_loss": 0.1, "train_loss": 0.1}, best)
    assert is_better({"epoch": 0, "val_auc": float("nan"), "val_loss": float("nan"), "train_loss": 1.0},
                     {"epoch": -1})


def test_a_built_dataset_is_a_source_of_a_new_one(dataset, jobs, tmp_path):
    merged = build_dataset([dataset, jobs[0]], tmp_path / "merged", seed=1)
    old, new = load_dataset(dataset), load_dataset(merged)
    n = len(old)
    assert len(new) == n + len(load_dataset(build_dataset([jobs[0]], tmp_path / "one")))
    np.testing.assert_array_equal(new.images[:n], old.images)
    np.testing.assert_array_equal(new.features[:n], old.features)
    np.testing.assert_array_equal(new.labels[:n], old.labels)
    assert list(new.meta["job"][:n]) == list(old.meta["job"])
    assert new.info["provenance"]["sources"][0]["type"] == "dataset"
    with pytest.raises(InputError, match="feature set 'classranker'.*--feature-set classranker"):
        build_dataset([dataset], tmp_path / "relion", feature_set="relion")
    assert not (tmp_path / "relion").exists()


@pytest.mark.parametrize("name, boxes, least", [("relion_corpus", {48, 64}, (200, 40)),
                                               ("relion_corpus_fine", {96, 128}, (200, 40)),
                                               ("relion_corpus_large", {192, 256}, (100, 15))])
def test_the_committed_relion_corpus_is_a_dataset(name, boxes, least):
    corpus = Path(__file__).resolve().parents[1] / "data" / name
    train_part, test_part = load_dataset(corpus / "train"), load_dataset(corpus / "test")
    assert len(train_part) > least[0] and len(test_part) > least[1]
    jobs = pd.read_csv(corpus / "jobs.csv")
    assert set(jobs["box"]) == boxes and (jobs["status"] == "done").all()
    assert not set(train_part.meta["job"]) & set(test_part.meta["job"])
    for part in (train_part, test_part):
        labels = np.asarray(part.labels)
        assert 0.1 < (labels >= 0.5).mean() < 0.9 and np.isfinite(np.asarray(part.features)).all()


def test_training_star_with_protein_black_averages_gives_the_same_dataset(tmp_path, jobs):
    """A training STAR whose class averages store protein black (inverted stack) is read protein white,
    as scoring reads it: the same network images and features as from the original stack."""
    star, project, _, _ = _relion_star(tmp_path / "white", jobs[1], vectors=False)
    white = load_dataset(build_dataset([star], tmp_path / "ds_white", root=project, pixel_size=3.5))
    star, project, _, _ = _relion_star(tmp_path / "black", jobs[1], vectors=False)
    stack = project / "Class2D" / "job001" / "run_it025_classes.mrcs"
    with mrcfile.open(stack, mode="r+") as mrc:
        mrc.data[:] = -mrc.data
    black = load_dataset(build_dataset([star], tmp_path / "ds_black", root=project, pixel_size=3.5))
    np.testing.assert_allclose(black.images, white.images, atol=1e-4)
    np.testing.assert_allclose(black.features, white.features, atol=1e-3)
