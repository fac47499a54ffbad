"""A genuine RELION Class2D job through a real Scipion project: our own import (no scipion-em-relion),
then auto-select with the bundled model, compared with the engine called directly on the same job.

Needs RELION (the job is made by relion_refine, see conftest.class2d_job) and Scipion; skips
without either, saying which.
"""
import numpy as np
import pytest
import starfile

from conftest import RELION_CLASS2D
from scipion_env import SCIPION_MISSING, launch, new

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))
CUTOFF = 0.5


@pytest.fixture(scope="module")
def model_star(class2d_job):
    return class2d_job / f"run_it{RELION_CLASS2D['iterations']:03d}_model.star"


@pytest.fixture(scope="module")
def direct(model_star):
    """The bundled model and the selection rule on RELION's non-empty classes (Scipion has no empty class)."""
    from classranker_plugin.checkpoint import BUNDLED_MODEL, load_model
    from classranker_plugin.io import read_classes
    from classranker_plugin.scoring import score_classes, select_classes

    classset = read_classes(model_star)
    result = score_classes(classset, load_model(BUNDLED_MODEL, device="cpu"), device="cpu")
    counts = classset.stat("particle_count")
    keep = select_classes(result.scores, counts, CUTOFF, empty=result.empty) & (counts > 0)
    score_of = dict(zip(classset.class_numbers.tolist(), result.scores.tolist()))
    return score_of, set(classset.class_numbers[keep].tolist())


def test_real_relion_class2d_through_import_and_auto_select(scipion_domain, scipion_project, model_star,
                                                            class2d_job, direct):
    imported = launch(scipion_project, new(scipion_domain, scipion_project, "ProtClassRankerImportClasses2D",
                                           starFile=str(model_star)))
    rows = starfile.read(str(model_star).replace("_model.star", "_data.star"), always_dict=True)["particles"]
    assert imported.outputParticles.getSize() == len(rows)
    assert imported.outputParticles.hasCTF() and imported.outputParticles.hasAlignment2D()
    populated = set(rows["rlnClassNumber"].unique().tolist())
    assert {c.getObjId() for c in imported.outputClasses} == populated

    prot = new(scipion_domain, scipion_project, "ProtClassRankerAutoSelect2D", cutoff=CUTOFF, useGpu=False)
    prot.inputClasses.set(imported)
    prot.inputClasses.setExtended("outputClasses")
    launch(scipion_project, prot)

    score_of, kept_ids = direct
    assert kept_ids, "the bundled model should keep a class of this job (its good particles are 70 %)"
    classes = prot.outputClasses
    assert {c.getObjId() for c in classes} == kept_ids
    for cls in classes:
        assert cls._classranker_score.get() == pytest.approx(score_of[cls.getObjId()], abs=1e-4)
    expected = np.flatnonzero(rows["rlnClassNumber"].isin(kept_ids).to_numpy()) + 1
    assert sorted(p.getObjId() for p in prot.outputParticles) == expected.tolist()
    assert prot.outputParticles.hasCTF() and prot.outputParticles.hasAlignment2D()
