"""Shared pytest fixtures."""
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLASSRANKER_SHARED", REPO.parent / "shared"))
TUTORIAL = SHARED / "data" / "relion30_tutorial_betagal"
RELION_MISSING = shutil.which("relion_refine") is None or shutil.which("relion_project") is None
RELION_CLASS2D = dict(maps=["generated:globular", "generated:cyclic"], n_particles=300, junk_fraction=0.3, box=48,
                      pixel_size=7.0, snr=0.1, K=4, iterations=3, seed=3)


@pytest.fixture(scope="session")
def tutorial_dir():
    """The real RELION 3.0 tutorial Class2D outputs; skipped on a clone without ../shared."""
    if not TUTORIAL.is_dir():
        pytest.skip(f"real RELION tutorial data not found at {TUTORIAL} (a fresh clone has no ../shared)")
    return TUTORIAL


@pytest.fixture(scope="session")
def class2d_job(tmp_path_factory):
    """A genuine, labelled RELION Class2D job made by the RELION engine (~300 particles, K=4, 3
    iterations, box 48; generated densities: no ../shared needed). Skipped without RELION."""
    if RELION_MISSING:
        pytest.skip("RELION is not installed (relion_refine / relion_project not on PATH; "
                    "`apt-get install relion` provides them)")
    from classranker_plugin.simulation.relion_engine import simulate_relion_job

    job = tmp_path_factory.mktemp("relion") / "Class2D"
    simulate_relion_job(job, threads=2, **RELION_CLASS2D)
    return job


# ----------------------------------------------------------------- Scipion (tests/test_scipion_*.py)
@pytest.fixture(scope="session")
def scipion_domain(tmp_path_factory):
    """A hermetic Scipion environment (everything under a pytest temp dir), plugins discovered.

    Skips when scipion-pyworkflow / scipion-em are not installed. pyworkflow must not be imported
    before this fixture runs (it reads its configuration once, at import).
    """
    import scipion_env

    if scipion_env.SCIPION_MISSING:
        pytest.skip(scipion_env.SCIPION_MISSING)
    scipion_env.configure(tmp_path_factory.mktemp("scipion"))
    import pyworkflow as pw

    domain = pw.Config.getDomain()
    domain.getPlugins()
    return domain


@pytest.fixture(scope="module")
def scipion_project(scipion_domain, request):
    """A fresh Scipion project per test module; the working directory is the project's meanwhile."""
    from pyworkflow.project import Manager

    name = "test_" + request.module.__name__.split(".")[-1]
    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    project = manager.createProject(name)
    cwd = os.getcwd()
    os.chdir(project.getPath())
    yield project
    os.chdir(cwd)
