"""RELION engine pieces that need no RELION: map resampling, projections, junk particles, labels, corpus plan."""
import numpy as np
import pandas as pd
import pytest

from classranker_plugin.errors import InputError
from classranker_plugin.simulation import relion_programs
from classranker_plugin.simulation.corpus import HOLDOUT_LAYOUT, plan_corpus, prune_iterations
from classranker_plugin.simulation.density import euler_matrices
from classranker_plugin.simulation.imaging import ctf as simulator_ctf
from classranker_plugin.simulation.relion_engine import simulate_relion_job, split_counts, user_particle_diameter
from classranker_plugin.simulation.relion_junk import DEFAULT_RELION_JUNK, junk_particles, relion_ctf
from classranker_plugin.simulation.relion_labels import class_composition
from classranker_plugin.simulation.relion_maps import (centre_crop, fourier_resample, generated_map,
                                                       project_map, resample_map)


def _blob(n=40, sigma=4.0, centre=None):
    c = np.array(centre if centre is not None else (n // 2,) * 3)
    z, y, x = np.indices((n, n, n))
    return np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_fourier_resample_keeps_mass_and_shape():
    volume = _blob(40, 4.0)
    small = fourier_resample(volume, 20)
    assert small.shape == (20, 20, 20)
    assert small.sum() * 8 == pytest.approx(volume.sum(), rel=1e-3)  # voxels are 8x larger
    assert np.unravel_index(small.argmax(), small.shape) == (10, 10, 10)  # centre stays at size // 2
    resampled, pixel = resample_map(volume, 2.0, 16, 4.0)
    assert resampled.shape == (16, 16, 16) and pixel == pytest.approx(4.0)
    assert centre_crop(volume, 50).sum() == pytest.approx(volume.sum())


def test_projection_follows_relion_euler_convention():
    volume = _blob(32, 2.0, centre=(16, 16, 24))  # off-centre along +x (index order z, y, x)
    straight = project_map(volume, np.eye(3))
    assert np.unravel_index(straight.argmax(), straight.shape) == (16, 24)
    # rot = 90: RELION's A maps x to -y in the image
    turned = project_map(volume, euler_matrices(90, 0, 0)[0])
    assert np.unravel_index(turned.argmax(), turned.shape) == (8, 16)
    assert turned.sum() == pytest.approx(straight.sum(), rel=1e-3)


def test_relion_ctf_is_the_negative_of_the_simulator_convention():
    box, apix = 48, 5.0
    ctf = relion_ctf(box, apix, [15000.0], [15000.0], [0.0])[0]
    assert ctf[0, 0] == pytest.approx(0.1, abs=1e-3)  # amplitude contrast, positive in RELION
    k = np.hypot(np.fft.fftfreq(box)[:, None], np.fft.rfftfreq(box)[None, :]) / apix
    np.testing.assert_allclose(ctf, -simulator_ctf(k, 15000.0), atol=1e-5)


def test_junk_particles_have_the_job_noise_and_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    job_map = generated_map(rng, 32, 6.0, "globular")
    kinds = list(DEFAULT_RELION_JUNK) * 2
    table = pd.DataFrame({"rlnDefocusU": np.full(len(kinds), 12000.0), "rlnDefocusV": 11800.0,
                          "rlnDefocusAngle": 30.0})
    junk = junk_particles(rng, kinds, [job_map], 32, 6.0, 12.0, table, noise_sigma=3.0, use_ctf=True)
    assert junk.shape == (len(kinds), 32, 32) and junk.dtype == np.float32 and np.isfinite(junk).all()
    corner = junk[:, :4, :4]
    assert corner.std() == pytest.approx(3.0, rel=0.4)


def test_generated_maps_are_normalised_and_sized():
    job_map = generated_map(np.random.default_rng(2), 48, 6.0, "ring")
    assert job_map.family == "generated-ring" and job_map.volume.shape == (48,) * 3
    assert 0.3 * 48 * 6.0 <= job_map.diameter <= 0.65 * 48 * 6.0
    box = 48
    y, x = np.mgrid[:box, :box] - box // 2
    inside = np.hypot(x, y) <= job_map.diameter / 12.0
    power = np.mean([np.mean(job_map.volume.sum(axis=a)[inside] ** 2) for a in range(3)])
    assert power == pytest.approx(1.0, rel=1e-3)
    diameter = user_particle_diameter([job_map], box, 6.0)
    assert job_map.diameter < diameter <= (box - 2) * 6.0 and diameter % 10 == 0 or diameter == (box - 2) * 6.0


def test_class_labels_come_from_composition():
    names = [f"{i:06d}@x.mrcs" for i in range(1, 11)]
    truth = pd.DataFrame({"rlnImageName": names, "origin": ["mapA"] * 6 + ["ice"] * 3 + ["off_centre"],
                          "family": ["A"] * 6 + ["junk"] * 4, "good": [True] * 6 + [False] * 4})
    assignments = pd.DataFrame({"rlnImageName": names, "rlnClassNumber": [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]})
    table = class_composition(assignments, truth, 3)
    assert list(table["class_number"]) == [1, 2, 3]
    assert table.loc[0, "score"] == 1.0 and table.loc[0, "label"] == 1 and table.loc[0, "kind"] == "mapA"
    assert table.loc[1, "score"] == pytest.approx(2 / 6, abs=1e-4) and table.loc[1, "label"] == 0
    assert table.loc[1, "kind"] == "ice" and table.loc[1, "purity"] == pytest.approx(0.5)
    assert table.loc[2, "kind"] == "empty_class" and table.loc[2, "n_particles"] == 0 and table.loc[2, "label"] == 0
    with pytest.raises(ValueError, match="not in the truth table"):
        class_composition(assignments.assign(rlnImageName=["zz"] + names[1:]), truth, 3)


def test_split_counts_sum_to_total():
    counts = split_counts(np.random.default_rng(1), 101, 3)
    assert counts.sum() == 101 and (counts > 0).all()


def test_missing_relion_is_a_clear_input_error(monkeypatch, tmp_path):
    monkeypatch.setattr(relion_programs.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="relion_project not found") as error:
        simulate_relion_job(tmp_path / "job", maps=["generated"], n_particles=40, K=2, iterations=1, box=32)
    assert "apt-get install relion" in str(error.value)
    assert not (tmp_path / "job").exists()


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="junk kind"):
        simulate_relion_job(tmp_path / "j", junk_kinds=["lava"])
    with pytest.raises(InputError, match="box"):
        simulate_relion_job(tmp_path / "j", box=33)
    with pytest.raises(InputError, match="map not found"):
        from classranker_plugin.simulation.relion_engine import resolve_maps
        resolve_maps([tmp_path / "missing.mrc"], 32, 5.0, np.random.default_rng(0))


def test_corpus_plan_holds_out_a_map_family():
    specs = plan_corpus(20, seed=3, real_maps=["/x/betagal.mrc"])
    test = [s for s in specs if s["split"] == "test"]
    train = [s for s in specs if s["split"] == "train"]
    assert len(test) == 4 and all(all(m == f"generated:{HOLDOUT_LAYOUT}" for m in s["maps"]) for s in test)
    assert not any(HOLDOUT_LAYOUT in m for s in train for m in s["maps"])
    assert all(10 <= s["K"] <= 40 and s["box"] in (48, 64) and s["n_particles"] >= 2 * s["K"] for s in specs)
    assert len({(s["K"], s["n_particles"], s["snr"]) for s in specs}) > 10  # parameters vary
    assert plan_corpus(20, seed=3, real_maps=["/x/betagal.mrc"]) == specs  # reproducible
    assert all(s["style"] == "converged" for s in specs)


def test_corpus_plan_wide_jobs():
    specs = plan_corpus(40, seed=3, wide_every=10)
    wide = [s for s in specs if s["style"] == "wide"]
    assert [s["job_id"] for s in wide] == ["job006", "job016", "job026", "job036"]  # index % 10 == 5, all train
    assert all(30 <= s["K"] <= 60 and s["box"] == 48 and s["split"] == "train" for s in wide)
    assert all(s["n_particles"] <= 900 and s["n_particles"] >= 10 * s["K"] for s in wide)
    assert all(s["K"] <= 24 for s in specs if s["style"] != "wide")


def test_prune_keeps_only_the_last_iteration(tmp_path):
    for it in range(4):
        for suffix in ("data.star", "model.star", "classes.mrcs"):
            (tmp_path / f"run_it{it:03d}_{suffix}").write_text("x")
    (tmp_path / "truth.csv").write_text("x")
    prune_iterations(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_it003_classes.mrcs", "run_it003_data.star",
                                                          "run_it003_model.star", "truth.csv"]


def _fake_job(outdir, threads=1, extra_parameters=None, **parameters):
    """Stands in for simulate_relion_job in the corpus tests (runs in the forked worker)."""
    import json
    from pathlib import Path

    from classranker_plugin.simulation.relion_engine import RelionJobSummary
    outdir = Path(outdir)
    assert not outdir.exists(), "a half-finished job must be removed before it is rerun"
    outdir.mkdir(parents=True)
    (outdir / f"run_it{parameters['iterations']:03d}_data.star").write_text("x")
    (outdir / "run_it000_data.star").write_text("x")
    pd.DataFrame({"class_number": range(1, parameters["K"] + 1), "label": 1}).to_csv(outdir / "truth.csv", index=False)
    summary = RelionJobSummary(outdir=str(outdir), n_classes=parameters["K"], n_good_classes=parameters["K"],
                               n_particles=parameters["n_particles"], n_junk=0, pixel_size=5.0,
                               particle_diameter=150.0, maps=[], seconds={"total": 1.0, "refine": 0.5})
    (outdir / "simulation.json").write_text(json.dumps(summary.__dict__))
    return summary


def test_corpus_resumes_skips_finished_and_reruns_half_finished(tmp_path, monkeypatch):
    import multiprocessing

    from classranker_plugin.simulation import corpus
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the fake job reaches the workers only through fork")
    monkeypatch.setattr(corpus, "simulate_relion_job", _fake_job)
    specs = plan_corpus(3, seed=1)
    _fake_job(tmp_path / "job001", **{k: specs[0][k] for k in ("K", "n_particles", "iterations")})
    (tmp_path / "job002").mkdir()
    (tmp_path / "job002" / "run_it001_data.star").write_text("half-finished")
    jobs = corpus.run_corpus(tmp_path, specs, workers=2)
    assert list(jobs["status"]) == ["done", "done", "done"]
    assert not (tmp_path / "job002" / "run_it001_data.star").exists() or specs[1]["iterations"] == 1
    assert not (tmp_path / "job003" / "run_it000_data.star").exists()  # intermediate iterations pruned
    assert (tmp_path / "job001" / "run_it000_data.star").exists()  # the finished job was not touched
    assert (jobs["n_classes"] == [s["K"] for s in specs]).all()
    stats = corpus.throughput(jobs, wall_s=3600.0)
    assert stats["classes"] == sum(s["K"] for s in specs) and stats["classes_per_core_hour"] > 0


def test_corpus_budget_stops_new_jobs(tmp_path, monkeypatch):
    from classranker_plugin.simulation import corpus
    monkeypatch.setattr(corpus, "simulate_relion_job", _fake_job)
    jobs = corpus.run_corpus(tmp_path, plan_corpus(2, seed=1), workers=1, budget_s=0)
    assert list(jobs["status"]) == ["pending", "pending"]


def test_noise_follows_the_snr_of_the_imaged_signal():
    from classranker_plugin.simulation.relion_engine import noise_for_snr
    job_map = generated_map(np.random.default_rng(4), 32, 6.0, "globular")
    sigma = {snr: noise_for_snr(np.random.default_rng(0), [job_map], 32, 6.0, snr, ctf=True) for snr in (0.1, 0.4)}
    assert sigma[0.1] == pytest.approx(2 * sigma[0.4], rel=1e-6)
    # the CTF removes most of a projection's (low-frequency) power: less noise for the same SNR
    assert noise_for_snr(np.random.default_rng(0), [job_map], 32, 6.0, 0.1, ctf=False) > 2 * sigma[0.1]


def test_preferred_views_cluster_around_a_few_directions():
    from classranker_plugin.simulation.relion_engine import draw_views
    rot, tilt = draw_views(np.random.default_rng(0), 2000, preferred_views=3, preferred_fraction=0.8)
    counts, _, _ = np.histogram2d(rot, tilt, bins=(18, 9), range=((-200, 200), (0, 180)))
    assert np.sort(counts.ravel())[-8:].sum() > 1000  # most particles in a few of the 162 bins
    rot_u, tilt_u = draw_views(np.random.default_rng(0), 2000)
    uniform, _, _ = np.histogram2d(rot_u, tilt_u, bins=(18, 9), range=((-200, 200), (0, 180)))
    assert np.sort(uniform.ravel())[-8:].sum() < 400


def test_corpus_plan_fine_style_uses_the_samplings_people_use():
    specs = plan_corpus(30, seed=4, real_maps=["/x/betagal.mrc"], style="fine")
    assert {s["box"] for s in specs} == {96, 128} and all(s["style"] == "fine" for s in specs)
    assert all(1.2 <= s["pixel_size"] <= 4.0 and 8 <= s["K"] <= 12 and s["iterations"] == 6 for s in specs)
    real = [s for s in specs if any(not m.startswith("generated") for m in s["maps"])]
    assert real and all(s["pixel_size"] >= (2.4 if s["box"] == 128 else 3.0) for s in real)
    assert min(s["pixel_size"] for s in specs) < 2.0    # generated maps go finer
    assert plan_corpus(30, seed=4, real_maps=["/x/betagal.mrc"]) != specs
    with pytest.raises(ValueError, match="unknown corpus style"):
        plan_corpus(2, style="fast")
    large = plan_corpus(12, seed=4, real_maps=["/x/betagal.mrc"], style="large")
    assert {s["box"] for s in large} == {192, 256} and all(1.0 <= s["pixel_size"] <= 2.0 for s in large)
    assert all(s["pixel_size"] * s["box"] >= 300 for s in large if not all(m.startswith("generated") for m in s["maps"]))
