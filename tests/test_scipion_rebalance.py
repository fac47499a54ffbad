"""The rebalance protocol on a real Scipion project (simulated RELION job). Skipped without Scipion."""
import os

import numpy as np
import pandas as pd
import pytest

from scipion_env import SCIPION_MISSING, launch

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))

N_SUPER = 3


@pytest.fixture(scope="module")
def imported(scipion_domain, scipion_project, tmp_path_factory):
    from classranker_plugin.simulation import simulate_job

    folder = simulate_job(tmp_path_factory.mktemp("relion") / "Class2D" / "job012", n_classes=10,
                          box=32, pixel_size=4.0, n_particles=400, write_particle_images=False, seed=7)
    prot = scipion_project.newProtocol(scipion_domain.getProtocols()["ProtClassRankerImportClasses2D"],
                                       starFile=str(folder / "run_it025_model.star"))
    return launch(scipion_project, prot)



def rebalance(domain, project, imported, **kwargs):
    prot = project.newProtocol(domain.getProtocols()["ProtClassRankerRebalance2D"],
                               numberOfSuperclasses=N_SUPER, **kwargs)
    prot.inputClasses.set(imported)
    prot.inputClasses.setExtended("outputClasses")
    return prot


def superclass_sizes(prot, particles):
    superclass = {c.getObjId(): c._classranker_superclass.get() for c in prot.outputClasses}
    ids = np.array([superclass[p.getClassId()] for p in particles])
    return np.bincount(ids, minlength=max(superclass.values()) + 1)[sorted(set(superclass.values()))]


def test_validation(scipion_domain, scipion_project, imported):
    n = imported.outputClasses.getSize()
    errors = rebalance(scipion_domain, scipion_project, imported, factor=1.5).validate()
    assert any("outside 0-1" in e for e in errors)
    prot = rebalance(scipion_domain, scipion_project, imported, factor=0.5)
    prot.numberOfSuperclasses.set(n + 1)
    assert any("at most as many superclasses" in e for e in prot.validate())


def test_factor_0_keeps_all_particles(scipion_domain, scipion_project, imported):
    prot = launch(scipion_project, rebalance(scipion_domain, scipion_project, imported, factor=0.0))
    all_ids = sorted(p.getObjId() for p in imported.outputParticles)
    assert sorted(p.getObjId() for p in prot.outputParticles) == all_ids
    assert not prot.hasAttribute("outputParticlesExcluded")
    assert prot.outputParticles.hasCTF() and prot.outputParticles.hasAlignment2D()
    assert {c.getObjId() for c in prot.outputClasses} == {c.getObjId() for c in imported.outputClasses}
    assert len({c._classranker_superclass.get() for c in prot.outputClasses}) == N_SUPER
    assert os.path.exists(prot._getExtraPath("affinity.png"))
    assert os.path.exists(prot._getExtraPath("counts.png"))


def test_factor_1_equalises_superclasses(scipion_domain, scipion_project, imported):
    prot = launch(scipion_project, rebalance(scipion_domain, scipion_project, imported, factor=1.0))
    kept = superclass_sizes(prot, prot.outputParticles)
    before = superclass_sizes(prot, imported.outputParticles)
    assert kept.max() == kept.min() == before.min()
    excluded = {p.getObjId() for p in prot.outputParticlesExcluded}
    kept_ids = {p.getObjId() for p in prot.outputParticles}
    assert not excluded & kept_ids
    table = pd.read_csv(prot._getExtraPath("rebalance_particles.csv"))
    assert kept_ids == set(table.loc[table["keep"].astype(bool), "particle_id"])
    assert prot.outputParticles.getSize() == len(kept_ids) and prot.outputParticlesExcluded.getSize() == len(excluded)
    logs = "".join(open(path).read() for path in prot.getLogPaths()[:2] if os.path.exists(path))
    assert "item by item" not in logs  # the SQL copy was used
    assert excluded | kept_ids == {p.getObjId() for p in imported.outputParticles}
    source = {p.getObjId(): p.clone() for p in imported.outputParticles}
    for particle in list(prot.outputParticles)[:10]:
        original = source[particle.getObjId()]
        np.testing.assert_allclose(particle.getTransform().getMatrix(),
                                   original.getTransform().getMatrix())
        assert particle.getCTF().getDefocusU() == original.getCTF().getDefocusU()
    assert any("Kept *%d*" % len(kept_ids) in line for line in prot.summary())
