"""Real Scipion protocols on a simulated RELION Class2D job: import, auto-select, change cutoff.

Each protocol is launched as Scipion launches it (a subprocess running the plugin installed in
this environment). The outputs are read back and compared with the engine called directly
(``score_classes`` + ``select_classes``) on the same classes. Skipped without Scipion.
"""
import os
import time

import numpy as np
import pandas as pd
import pytest
import starfile

from scipion_env import SCIPION_MISSING, launch, new, write_untrained_checkpoint

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))

N_CLASSES, BOX, PIXEL, N_PARTICLES = 12, 32, 4.0, 300


# ----------------------------------------------------------------- fixtures ----------------------
@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from classranker_plugin.simulation import simulate_job

    folder = simulate_job(tmp_path_factory.mktemp("relion") / "Class2D" / "job010", n_classes=N_CLASSES,
                          box=BOX, pixel_size=PIXEL, n_particles=N_PARTICLES,
                          write_particle_images=True, seed=3)
    return folder / "run_it025_model.star"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, job):
    from classranker_plugin.io import read_classes

    return write_untrained_checkpoint(tmp_path_factory.mktemp("model") / "untrained.pt",
                                      read_classes(job))


@pytest.fixture(scope="module")
def direct(job, checkpoint):
    """The engine on the same classes: RELION's non-empty classes (Scipion has no empty class)."""
    from classranker_plugin.checkpoint import load_model
    from classranker_plugin.classset import ClassSet
    from classranker_plugin.io import read_classes
    from classranker_plugin.scoring import score_classes

    full = read_classes(job)
    keep = full.stat("particle_count") > 0
    classset = ClassSet(images=full.images[keep], table=full.table[keep].reset_index(drop=True),
                        pixel_size=full.pixel_size, particle_diameter=full.particle_diameter,
                        particles=full.particles, optics=full.optics, source=full.source)
    result = score_classes(classset, load_model(checkpoint, device="cpu"), device="cpu")
    return classset, result




@pytest.fixture(scope="module")
def imported(scipion_domain, scipion_project, job):
    return launch(scipion_project, new(scipion_domain, scipion_project,
                                       "ProtClassRankerImportClasses2D", starFile=str(job)))


def auto_select(domain, project, imported, checkpoint, cutoff, **kwargs):
    prot = new(domain, project, "ProtClassRankerAutoSelect2D", modelSource=1,
               checkpointFile=checkpoint, cutoff=cutoff, useGpu=False, **kwargs)
    prot.inputClasses.set(imported)
    prot.inputClasses.setExtended("outputClasses")
    return prot


def cutoffs_between(scores, kept):
    """A cutoff keeping exactly ``kept`` classes, halfway between two neighbouring scores."""
    ranked = np.sort(scores)[::-1]
    return float((ranked[kept - 1] + ranked[kept]) / 2)


def data_star_particles(job):
    blocks = starfile.read(str(job).replace("_model.star", "_data.star"), always_dict=True)
    return blocks["particles"].reset_index(drop=True)


def expected_selection(direct, cutoff, **kwargs):
    from classranker_plugin.scoring import select_classes

    classset, result = direct
    keep = select_classes(result.scores, classset.stat("particle_count"), cutoff,
                          empty=result.empty, **kwargs)
    return set(classset.class_numbers[keep].tolist())


def check_outputs(prot, imported, job, direct, kept_ids, suffix=""):
    """Classes, particle ids, scores, CTF and alignment of one pair of output sets."""
    classset, result = direct
    score_of = dict(zip(classset.class_numbers.tolist(), result.scores.tolist()))
    classes = getattr(prot, "outputClasses" + suffix)
    particles = getattr(prot, "outputParticles" + suffix)
    assert {c.getObjId() for c in classes} == kept_ids
    for cls in classes:
        assert cls._classranker_score.get() == pytest.approx(score_of[cls.getObjId()], abs=1e-4)
        assert cls._classranker_reason.get()
        assert cls.hasRepresentative() and cls.getSize() > 0
    rows = data_star_particles(job)
    expected_ids = set((np.flatnonzero(rows["rlnClassNumber"].isin(kept_ids)) + 1).tolist())
    assert sorted(p.getObjId() for p in particles) == sorted(expected_ids)
    assert sum(c.getSize() for c in classes) == len(expected_ids)
    assert particles.hasCTF() and particles.hasAlignment2D()
    assert particles.getSamplingRate() == pytest.approx(PIXEL)
    source = {p.getObjId(): p.clone() for p in imported.outputParticles}
    for particle in particles:
        original = source[particle.getObjId()]
        np.testing.assert_allclose(particle.getTransform().getMatrix(),
                                   original.getTransform().getMatrix())
        assert particle.getCTF().getDefocusU() == original.getCTF().getDefocusU()
        assert particle.getLocation() == original.getLocation()
        assert particle.getClassId() in kept_ids


# ----------------------------------------------------------------- tests -------------------------
def test_import_keeps_statistics_ctf_and_alignment(imported, job):
    truth = pd.read_csv(job.parent / "truth.csv")
    non_empty = set(truth.loc[truth["n_particles"] > 0, "class_number"])
    classes = imported.outputClasses
    assert {c.getObjId() for c in classes} == non_empty
    model = starfile.read(str(job), always_dict=True)["model_classes"]
    for cls in classes:
        row = model.iloc[cls.getObjId() - 1]
        assert cls._rlnClassDistribution.get() == pytest.approx(row["rlnClassDistribution"], rel=1e-5)
        assert cls._rlnAccuracyRotations.get() == pytest.approx(row["rlnAccuracyRotations"], rel=1e-5)
        assert cls._rlnEstimatedResolution.get() == pytest.approx(row["rlnEstimatedResolution"], rel=1e-5)
        assert cls.getSize() == truth.set_index("class_number").loc[cls.getObjId(), "n_particles"]
    assert classes._rlnParticleDiameter.get() > 0
    rows = data_star_particles(job)
    particles = imported.outputParticles
    assert particles.getSize() == len(rows) and particles.hasCTF() and particles.hasAlignment2D()
    for particle in list(particles)[:20]:
        row = rows.iloc[particle.getObjId() - 1]
        psi = np.radians(row["rlnAnglePsi"])
        matrix = particle.getTransform().getMatrix()
        np.testing.assert_allclose(matrix[:2, :2], [[np.cos(psi), -np.sin(psi)],
                                                    [np.sin(psi), np.cos(psi)]], atol=1e-6)
        np.testing.assert_allclose(matrix[:2, 3], [row["rlnOriginXAngst"] / PIXEL,
                                                   row["rlnOriginYAngst"] / PIXEL], atol=1e-5)
        assert particle.getClassId() == row["rlnClassNumber"]
        assert particle.getCTF().getDefocusU() == pytest.approx(max(row["rlnDefocusU"], row["rlnDefocusV"]))
        assert os.path.exists(particle.getFileName())


def test_auto_select_matches_the_engine_at_two_cutoffs(scipion_domain, scipion_project, imported,
                                                       checkpoint, job, direct):
    _, result = direct
    assert np.ptp(result.scores) > 0.05, "the test model should spread the scores"
    for kept, rejected in ((3, True), (7, False)):
        cutoff = cutoffs_between(result.scores, kept)
        prot = launch(scipion_project, auto_select(scipion_domain, scipion_project, imported,
                                                   checkpoint, cutoff, writeRejected=rejected))
        kept_ids = expected_selection(direct, cutoff)
        assert len(kept_ids) == kept
        check_outputs(prot, imported, job, direct, kept_ids)
        if rejected:
            all_ids = {c.getObjId() for c in imported.outputClasses}
            check_outputs(prot, imported, job, direct, all_ids - kept_ids, suffix="Rejected")
        else:
            assert not prot.hasAttribute("outputClassesRejected")
        summary = "\n".join(prot.summary())
        assert f"Kept *{kept}* of {len(result.scores)} classes" in summary
        assert os.path.exists(prot._getExtraPath("score_histogram.png"))
        assert os.path.exists(prot._getExtraPath("class_gallery.png"))


def test_minimum_particles_adds_the_next_best_classes(scipion_domain, scipion_project, imported,
                                                      checkpoint, job, direct):
    classset, result = direct
    cutoff = cutoffs_between(result.scores, 1)
    prot = launch(scipion_project, auto_select(scipion_domain, scipion_project, imported, checkpoint,
                                               cutoff, minParticles=200))
    kept_ids = expected_selection(direct, cutoff, min_particles=200)
    assert len(kept_ids) > 1
    check_outputs(prot, imported, job, direct, kept_ids)


def test_change_cutoff_reuses_the_scores_and_continue_does_not_duplicate(
        scipion_domain, scipion_project, imported, checkpoint, job, direct):
    _, result = direct
    first, second = cutoffs_between(result.scores, 4), cutoffs_between(result.scores, 8)
    prot = launch(scipion_project, auto_select(scipion_domain, scipion_project, imported,
                                               checkpoint, first))
    scores_file = prot.getScoresFile()
    scored_at = os.path.getmtime(scores_file)

    change = new(scipion_domain, scipion_project, "ProtClassRankerChangeCutoff", cutoff=second,
                 writeRejected=True)
    change.inputProtocol.set(prot)
    launch(scipion_project, change)
    check_outputs(change, imported, job, direct, expected_selection(direct, second))
    assert not os.path.exists(change._getExtraPath("scoring.json"))  # nothing was re-scored

    # "continue" with another cutoff: only the output step runs again; outputs replaced
    prot.cutoff.set(second)
    launch(scipion_project, prot)
    assert os.path.getmtime(scores_file) == scored_at
    check_outputs(prot, imported, job, direct, expected_selection(direct, second))
    outputs = sorted(name for name, _ in prot.iterOutputAttributes())
    assert outputs == ["outputClasses", "outputParticles"]
    sets = sorted(f for f in os.listdir(prot._getPath()) if f.endswith(".sqlite"))
    assert sets == ["classes2D.sqlite", "particles.sqlite"]


def test_failed_scoring_leaves_no_output(scipion_domain, scipion_project, imported, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a checkpoint")
    prot = auto_select(scipion_domain, scipion_project, imported, str(broken), 0.5)
    assert prot.validate() == []  # the file exists: the problem shows when loading it
    launch(scipion_project, prot, expect="failed")
    assert "broken.pt" in prot.getErrorMessage()
    assert prot.getOutputsSize() == 0
    assert not os.path.exists(prot.getScoresFile())


def test_viewer_draws_histogram_gallery_and_table(scipion_domain, scipion_project, imported,
                                                  checkpoint, direct):
    from pyworkflow.gui.plotter import Plotter

    from classranker_plugin.viewers.viewer_auto_select import ClassRankerViewer

    Plotter.setBackend("Agg")
    _, result = direct
    prot = launch(scipion_project, auto_select(scipion_domain, scipion_project, imported,
                                               checkpoint, cutoffs_between(result.scores, 5)))
    viewer = ClassRankerViewer(project=scipion_project, protocol=prot)
    viewer.setProtocol(prot)
    assert viewer.viewCutoff.get() == pytest.approx(prot.cutoff.get())
    viewer.viewCutoff.set(cutoffs_between(result.scores, 2))
    (histogram,) = viewer._showHistogram()
    bars = histogram.figure.axes[0].patches
    assert sum(b.get_height() for b in bars) == len(result.scores)
    (gallery,) = viewer._showGallery()
    titles = [ax.get_title() for ax in gallery.figure.axes if ax.get_title()]
    assert len(titles) == len(result.scores)
    green = [t for ax in gallery.figure.axes for t in [ax.title] if t.get_color() == "#1a9850"]
    assert len(green) == 2
    (table,) = viewer._showTable()
    text = open(table.getFileList()[0]).read()
    assert text.startswith("Cutoff") and text.count(" yes ") == 2

    viewer._changeCutoff()  # launches a "change cutoff" run in the background, as from the GUI
    run_id = viewer.changeCutoffRun.getObjId()
    for _ in range(60):
        run = next(r for r in scipion_project.getRuns(refresh=True) if r.getObjId() == run_id)
        if run.getStatus() in ("finished", "failed"):
            break
        time.sleep(1)
    assert run.getStatus() == "finished", run.getErrorMessage()
    assert {c.getObjId() for c in run.outputClasses} == expected_selection(direct, viewer.viewCutoff.get())


def test_bundled_model_is_the_default(scipion_domain, scipion_project, imported, job, direct):
    from classranker_plugin.checkpoint import default_model_path, load_model
    from classranker_plugin.scoring import score_classes

    if not default_model_path().is_file():
        pytest.skip(f"no bundled model at {default_model_path()}")
    classset, _ = direct
    result = score_classes(classset, load_model(None, device="cpu"), device="cpu")
    prot = new(scipion_domain, scipion_project, "ProtClassRankerAutoSelect2D", useGpu=False)
    prot.inputClasses.set(imported)
    prot.inputClasses.setExtended("outputClasses")
    launch(scipion_project, prot)
    score_of = dict(zip(classset.class_numbers.tolist(), result.scores.tolist()))
    for cls in prot.outputClasses:
        assert cls._classranker_score.get() == pytest.approx(score_of[cls.getObjId()], abs=1e-4)
    assert {c.getObjId() for c in prot.outputClasses} == expected_selection((classset, result), 0.5)
    assert any(os.path.basename(str(default_model_path())) in line for line in prot.summary())
