"""The workflow template (import RELION classes -> auto-select), in a project and in batch.

1. in-process: the template found among the plugin templates, filled in, loaded into a project
   and its runs launched in order (what the GUI does);
2. batch, as users run it: ``python -m scipion template <template> alias=value ... --nogui``
   creates and schedules the project with no window; the runs finish on their own.
   (``python -m scipion`` rather than the ``scipion`` console script: in a plain pip install the
   latter dies at import, scipion-app 3.8.3 bug "module 'importlib' has no attribute 'util'".)
Skipped without Scipion (and the batch part without scipion-app).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scipion_env import SCIPION_MISSING, write_untrained_checkpoint

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))

TEMPLATE = Path(__file__).resolve().parent.parent / "classranker_plugin" / "templates" / "auto_select.json.template"
ALIASES = {"star", "cutoff", "minclasses", "minparticles", "rejected"}


@pytest.fixture(scope="module")
def job_and_model(tmp_path_factory):
    from classranker_plugin.io import read_classes
    from classranker_plugin.simulation import simulate_job

    folder = simulate_job(tmp_path_factory.mktemp("relion") / "Class2D" / "job007", n_classes=10,
                          box=32, pixel_size=4.0, n_particles=200, write_particle_images=True, seed=5)
    star = folder / "run_it025_model.star"
    model = write_untrained_checkpoint(tmp_path_factory.mktemp("model") / "m.pt", read_classes(star))
    return star, model


def plugin_template():
    from pyworkflow.template import TemplateList

    templates = TemplateList()
    templates.addPluginTemplates()
    found = [t for t in templates.templates if t.name == "auto_select"]
    assert len(found) == 1, [t.name for t in templates.templates]
    return found[0]


def wait_for_runs(project_name, n_runs, timeout=150):
    from pyworkflow.project import Manager

    deadline, runs, project = time.time() + timeout, [], None
    while time.time() < deadline:
        project = Manager().loadProject(project_name)
        runs = project.getRuns(refresh=True)
        if len(runs) == n_runs and all(r.getStatus() in ("finished", "failed") for r in runs):
            return sorted(runs, key=lambda r: r.getObjId())
        time.sleep(3)
    for run in runs:  # leave no scheduled process polling forever
        if run.getStatus() not in ("finished", "failed"):
            project.stopProtocol(run)
    pytest.fail(f"{project_name}: runs not finished after {timeout} s: "
                + ", ".join(f"{r.getRunName()}={r.getStatus()}" for r in runs))


def test_template_is_shipped_with_its_fields(scipion_domain):
    template = plugin_template()
    template.replaceEnvVariables()
    template.parseContent()
    assert {p.getAlias() for p in template.getParams().values()} == ALIASES
    assert "ClassRanker" in template.description


def test_template_runs_in_a_project(scipion_domain, job_and_model, monkeypatch):
    from pyworkflow.project import Manager

    star, model = job_and_model
    template = plugin_template()
    template.replaceEnvVariables()
    template.parseContent()
    for alias, value in {"star": str(star), "cutoff": "0.5", "minclasses": "3",
                         "minparticles": "0", "rejected": "true"}.items():
        assert template.setParamValue(alias, value) == 1
    workflow = template.createTemplateFile()
    project = Manager().createProject("template_in_process")
    cwd = os.getcwd()
    os.chdir(project.getPath())
    try:
        project.loadProtocols(workflow)
        runs = sorted(project.getRuns(), key=lambda r: r.getObjId())
        assert [r.getClassName() for r in runs] == ["ProtClassRankerImportClasses2D",
                                                   "ProtClassRankerAutoSelect2D"]
        select = runs[1]
        select.modelSource.set(1)  # the template uses the bundled model; tests use their own
        select.checkpointFile.set(model)
        for run in runs:
            project.launchProtocol(run, wait=True)
            assert run.getStatus() == "finished", run.getErrorMessage()
        assert select.outputClasses.getSize() >= 3
        assert select.outputClasses.getSize() + select.outputClassesRejected.getSize() == \
            runs[0].outputClasses.getSize()
        assert select.outputParticles.getSize() + select.outputParticlesRejected.getSize() == 200
    finally:
        os.chdir(cwd)


def test_template_runs_in_batch_without_a_window(scipion_domain, job_and_model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("scipion") is None:
        pytest.skip("the scipion launcher (scipion-app) is not installed")
    star, model = job_and_model
    # the launcher starts "python -m scipion ..." from PATH: this environment's python first, as
    # in an activated environment; CLASSRANKER_MODEL: the "bundled" model of this batch run
    env = dict(os.environ, CLASSRANKER_MODEL=model,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    log = tmp_path / "scipion_template.log"
    with open(log, "w") as out:  # not a pipe: the scheduled runs outlive the launcher
        subprocess.run([sys.executable, "-m", "scipion", "template", str(TEMPLATE), f"star={star}", "cutoff=0.5",
                        "minclasses=2", "minparticles=0", "rejected=false",
                        "project_name=classranker_batch", "--nogui"],
                       stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120, check=True,
                       cwd=str(tmp_path))
    runs = wait_for_runs("classranker_batch", 2)
    assert [r.getStatus() for r in runs] == ["finished", "finished"], log.read_text()[-2000:]
    select = runs[1]
    assert select.outputClasses.getSize() >= 2
    assert 0 < select.outputParticles.getSize() <= 200
    assert not select.hasAttribute("outputClassesRejected")
