"""The job head: within-job relative inputs, its fit, and its trip through a checkpoint into scoring."""
import numpy as np
import pytest

from classranker_plugin.checkpoint import BUNDLED_MODEL, load_model, read_checkpoint, save_checkpoint
from classranker_plugin.io import read_classes
from classranker_plugin.job_head import JobHead, head_inputs, relative
from classranker_plugin.scoring import score_classes
from classranker_plugin.training.job_head_fit import JobRecord, drop_metadata, fit_head, head_scores

from test_tolerant_readers import EXAMPLE


def test_relative_z_and_rank():
    column = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 7.0])
    known = np.array([True, True, True, True, True, False])
    z, rank = relative(column, known)
    assert rank[:5].tolist() == pytest.approx([-0.5, -0.25, 0.0, 0.25, 0.5])
    assert z[2] == 0.0 and z[4] == 3.0  # the outlier is clipped
    assert z[5] == 0.0 and rank[5] == 0.0  # unknown: neutral
    _, tied = relative(np.array([1.0, 1.0, 2.0]), np.ones(3, bool))
    assert tied.tolist() == pytest.approx([-0.25, -0.25, 0.5])


def test_inputs_are_relative_to_the_job():
    """Shifting a statistic for the whole job (another sampling, another K) changes nothing."""
    ranker = load_model(device="cpu")
    classes = read_classes(EXAMPLE / "run_it025_model.star")
    scored = score_classes(classes, ranker, explain=False)
    names = scored.feature_names
    values = scored.feature_vectors.copy()
    logits = np.linspace(-2, 2, len(values))
    a, labels = head_inputs(logits, values, names)
    values[:, names.index("log_class_distribution")] += 1.5
    b, _ = head_inputs(logits + 3.0, values, names)
    relative_columns = [i for i, n in enumerate(labels) if n != "logit"]
    assert np.allclose(a[:, relative_columns], b[:, relative_columns])
    assert "log_class_distribution_rank" in labels and "resolution_relative_z" in labels


def synthetic_jobs(seed=0, n_jobs=12):
    """Jobs where good classes are the bigger ones within each job, at a job-specific scale, and the
    network logit is noise: only the relative class distribution tells them apart."""
    ranker = load_model(device="cpu")
    names = ranker.feature_names
    rng = np.random.default_rng(seed)
    records = []
    for j in range(n_jobs):
        n = 30
        labels = (rng.random(n) < 0.4).astype(float)
        values = np.zeros((n, len(names)), np.float32)
        values[:, names.index("log_class_distribution")] = rng.normal(size=n) + 2.0 * labels + rng.normal(0, 3)
        values[:, names.index("log_class_distribution_known")] = 1
        records.append(JobRecord(f"job{j}", rng.normal(size=n), values, labels))
    return records, names


def test_fit_head_learns_the_relative_rule():
    from classranker_plugin.training.metrics import roc_auc

    train, names = synthetic_jobs(0)
    test, _ = synthetic_jobs(1)
    head = fit_head(train, names, l2=0.01)
    weights = dict(zip(head.input_names, head.weights))
    assert weights["log_class_distribution_rank"] + weights["log_class_distribution_z"] > 1.0
    aucs = [roc_auc(r.labels, head_scores(head, r, names)) for r in test]
    assert np.mean(aucs) > 0.85
    # the absolute level differs between jobs: the raw statistic pooled over jobs ranks worse
    pooled = np.concatenate([r.values[:, names.index("log_class_distribution")] for r in test])
    assert roc_auc(np.concatenate([r.labels for r in test]), pooled) < np.mean(aucs)


def test_head_saved_in_checkpoint_changes_scores(tmp_path):
    ranker = load_model(device="cpu")
    classes = read_classes(EXAMPLE / "run_it025_model.star")
    plain = score_classes(classes, ranker, explain=True)
    names = plain.feature_names
    inputs, labels = head_inputs(np.zeros(len(classes)), plain.feature_vectors, names)
    # a head that keeps exactly the bigger half of the classes
    weights = np.zeros(len(labels))
    weights[labels.index("log_class_distribution_rank")] = 40.0
    ranker.job_head = JobHead(labels, weights, bias=-0.1)  # a class at the median (rank 0) is rejected
    path = save_checkpoint(tmp_path / "with_head.pt", ranker)
    assert "job_head" in read_checkpoint(path)
    loaded = load_model(path, device="cpu")
    assert loaded.job_head is not None and loaded.job_head.input_names == labels
    scored = score_classes(classes, loaded, explain=True)
    rank = inputs[:, labels.index("log_class_distribution_rank")]
    assert np.array_equal(scored.scores >= 0.5, rank > 0)
    assert not np.array_equal(scored.scores >= 0.5, plain.scores >= 0.5)
    verdicts = np.array([e.startswith("kept") for e in scored.explanations])
    assert np.array_equal(verdicts, scored.scores >= 0.5)  # explanations follow the final score


def test_damaged_head_refused(tmp_path):
    from classranker_plugin.errors import InputError
    import torch

    payload = read_checkpoint(BUNDLED_MODEL)
    payload["job_head"] = {"format": "something else"}
    torch.save(payload, tmp_path / "bad_head.pt")
    with pytest.raises(InputError) as info:
        load_model(tmp_path / "bad_head.pt", device="cpu")
    assert "bad_head.pt" in str(info.value) and "job head" in str(info.value)


def test_drop_metadata_sets_unknown():
    ranker = load_model(device="cpu")
    classes = read_classes(EXAMPLE / "run_it025_model.star")
    scored = score_classes(classes, ranker, explain=False)
    names = scored.feature_names
    dropped = drop_metadata(scored.feature_vectors, names)
    for flag in [n for n in names if n.endswith("_known") and n != "particle_diameter_known"]:
        assert (dropped[:, names.index(flag)] == 0).all(), flag
    assert np.array_equal(dropped[:, names.index("power_mid")], scored.feature_vectors[:, names.index("power_mid")])


def composition_jobs(seed, shares, n=30):
    """Jobs with the given shares of good classes: the network logit is informative in absolute terms
    (good ~ N(1.5, 1), junk ~ N(-1.5, 1)) and the good classes are the bigger ones within the job."""
    names = load_model(device="cpu").feature_names
    rng = np.random.default_rng(seed)
    records = []
    for j, share in enumerate(shares):
        labels = np.zeros(n)
        labels[:int(round(share * n))] = 1
        values = np.zeros((n, len(names)), np.float32)
        values[:, names.index("log_class_distribution")] = rng.normal(size=n) + 2.5 * labels + rng.normal(0, 2)
        values[:, names.index("log_class_distribution_known")] = 1
        logits = rng.normal(size=n) + np.where(labels == 1, 1.5, -1.5)
        records.append(JobRecord(f"job{j}", logits, values, labels))
    return records, names


def test_calibration_keeps_the_good_classes_of_an_all_good_job():
    """Within-job ranks push the lowest good classes of an all-good job below 0.5; the per-job
    calibration, fitted on sub-jobs of every composition, keeps them, does not reorder any job, and
    still rejects the junk of mostly-junk jobs."""
    from classranker_plugin.training.metrics import roc_auc

    train, names = composition_jobs(0, [0.2, 0.3, 0.4, 0.5, 0.3, 0.25, 0.6, 0.35] * 2)
    head = fit_head(train, names, l2=0.01, calibrate=True, draws=24, seed=0)
    plain = JobHead(head.input_names, head.weights, head.bias)
    all_good, _ = composition_jobs(5, [1.0, 1.0, 0.95, 1.0])
    mixed, _ = composition_jobs(6, [0.2, 0.3, 0.4])
    kept = lambda h, jobs: np.mean([(head_scores(h, r, names)[r.labels == 1] >= 0.5).mean() for r in jobs])
    assert kept(plain, all_good) < 0.85                # the failure the calibration is for (0.79)
    assert kept(head, all_good) >= 0.95
    junk_kept = np.mean([(head_scores(head, r, names)[r.labels == 0] >= 0.5).mean() for r in mixed])
    assert junk_kept < 0.2 and kept(head, mixed) >= 0.8
    for record in all_good + mixed:                    # one monotone map per job: the order is kept
        a, b = head_scores(plain, record, names), head_scores(head, record, names)
        assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(b, kind="stable"))
        if 0 < record.labels.mean() < 1:
            assert roc_auc(record.labels, a) == roc_auc(record.labels, b)


def test_calibration_goes_through_the_checkpoint(tmp_path):

    train, names = composition_jobs(0, [0.3, 0.5, 0.2, 0.4])
    head = fit_head(train, names, calibrate=True, draws=8)
    ranker = load_model(device="cpu")
    ranker.job_head = head
    path = save_checkpoint(tmp_path / "calibrated.pt", ranker)
    loaded = load_model(path, device="cpu").job_head
    assert loaded.calibration is not None
    record = train[0]
    np.testing.assert_allclose(head_scores(loaded, record, names), head_scores(head, record, names), rtol=1e-6)
    payload = head.to_dict()
    payload["calibration"]["job_inputs"] = ["something", "else"]
    with pytest.raises(ValueError, match="unknown inputs"):
        JobHead.from_dict(payload)
    del payload["calibration"]                         # a head written before the calibration existed
    payload["format"] = "classranker-job-head-1"
    assert JobHead.from_dict(payload).calibration is None
    assert head.to_dict()["format"] == "classranker-job-head-2"   # older readers refuse a calibrated head
