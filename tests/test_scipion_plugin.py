"""Scipion layer without launching protocols: discovery, menu, citations, conversion, plots, wizard.

Skipped (with the reason) when scipion-pyworkflow / scipion-em are not installed. pyworkflow is
imported only inside tests, after the ``scipion_domain`` fixture has configured it.
"""
import math
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from scipion_env import SCIPION_MISSING

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))

PACKAGE = Path(__file__).resolve().parent.parent / "classranker_plugin"
PROTOCOLS = ("ProtClassRankerImportClasses2D", "ProtClassRankerAutoSelect2D",
             "ProtClassRankerChangeCutoff")


def test_plugin_is_discovered_with_its_protocols_viewer_wizard_and_objects(scipion_domain):
    plugins = scipion_domain.getPlugins()
    assert "classranker_plugin" in plugins
    module = plugins["classranker_plugin"]
    plugin = module._pluginInstance
    assert plugin.getName() == "classranker_plugin"
    assert Path(plugin.getPath()) == PACKAGE
    protocols = scipion_domain.getProtocols()
    for name in PROTOCOLS:
        assert name in protocols and protocols[name]._package is module
    assert "ClassRankerViewer" in scipion_domain.getViewers()
    assert "ClassRankerCutoffWizard" in scipion_domain.getWizards()
    assert "ClassRankerModel" in scipion_domain.getObjects()
    assert [t.name for t in plugin.getTemplates()] == ["auto_select"]
    assert module.Plugin.getDevice() == "auto"
    model = module.Plugin.getModelPath()
    assert model == os.environ.get("CLASSRANKER_MODEL", str(PACKAGE / "models" / "starter.pt"))


def test_protocols_conf_places_the_protocols_in_the_menu(scipion_domain):
    """Read by pyworkflow's own loader (a file it cannot parse is skipped silently there)."""
    import pyworkflow as pw

    tkinter = pytest.importorskip("tkinter", reason="pyworkflow's menu loader needs tkinter")
    assert tkinter
    from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

    menus = ProtocolTreeConfig.load(scipion_domain, pw.Config.SCIPION_PROTOCOLS)

    def find(node, path=()):
        for child in node.childs:
            if child.value in PROTOCOLS:
                yield child.value, path
            yield from find(child, path + (child.text,))

    places = dict(find(menus["Protocols SPA"]))
    assert places["ProtClassRankerAutoSelect2D"] == ("2D", "Classify")
    assert places["ProtClassRankerChangeCutoff"] == ("2D", "Classify")
    assert places["ProtClassRankerImportClasses2D"] == ("Imports", "more")


def test_citations_resolve_to_the_relion_class_ranker_paper(scipion_domain, scipion_project):
    prot = scipion_project.newProtocol(scipion_domain.getProtocols()["ProtClassRankerAutoSelect2D"])
    citations = prot.getCitations()
    assert list(citations) == ["Kimanius2021", "ClassRanker"]
    assert "Kimanius et al., Biochemical Journal, 2021" in citations["Kimanius2021"]
    assert "10.1042/BCJ20210708" in citations["Kimanius2021"]


def test_model_object_keeps_its_checkpoint_path(tmp_path):
    from classranker_plugin.objects import ClassRankerModel

    model = ClassRankerModel(path=str(tmp_path / "m.pt"))
    assert not model.exists() and model.getFiles() == {str(tmp_path / "m.pt")}
    (tmp_path / "m.pt").write_bytes(b"x")
    assert model.exists() and "m.pt" in str(model)


def _classes_without_relion_statistics(folder, with_representatives=True):
    """A cryoSPARC/Xmipp-like SetOfClasses2D: averages and sizes, no _rln* attributes."""
    from pwem.objects import Particle, SetOfClasses2D, SetOfParticles
    from pyworkflow.object import Pointer

    stack = str(folder / "averages.mrcs")
    images = np.random.default_rng(0).normal(size=(3, 24, 24)).astype(np.float32)
    with mrcfile.new(stack, overwrite=True) as mrc:
        mrc.set_data(images)
    parts = SetOfParticles(filename=str(folder / "particles.sqlite"))
    parts.setSamplingRate(2.0)
    for i, class_id in enumerate([1, 1, 1, 2, 3, 3]):
        particle = Particle(location=(i + 1, "particles.mrcs"))
        particle.setClassId(class_id)
        parts.append(particle)
    parts.write()
    classes = SetOfClasses2D(filename=str(folder / "classes2D.sqlite"))
    classes.setImages(Pointer(parts))

    def update(cls):
        if with_representatives:
            cls.getRepresentative().setLocation(cls.getObjId(), stack)
            cls.getRepresentative().setSamplingRate(2.0)
        else:
            cls.setRepresentative(None)

    classes.classifyItems(updateClassCallback=update)
    classes.write()
    return classes, images


def test_classes_without_relion_statistics_convert_gracefully(scipion_domain, tmp_path):
    from classranker_plugin.convert import classes_to_classset

    classes, images = _classes_without_relion_statistics(tmp_path)
    classset, ids = classes_to_classset(classes)
    assert ids == [1, 2, 3]
    np.testing.assert_array_equal(classset.images, images)
    np.testing.assert_allclose(classset.stat("particle_count"), [3, 1, 2])
    np.testing.assert_allclose(classset.stat("class_distribution"), [0.5, 1 / 6, 1 / 3])
    for column in ("accuracy_rotations", "accuracy_translations", "resolution"):
        assert np.isnan(classset.stat(column)).all()
    assert classset.pixel_size == 2.0 and classset.particle_diameter is None
    assert classset.available_stats() == ["class_distribution", "particle_count"]
    assert classes_to_classset(classes, diameter=40)[0].particle_diameter == 40


def test_validation_names_the_problem_and_the_fix(scipion_domain, scipion_project, tmp_path):
    protocols = scipion_domain.getProtocols()
    classes, _ = _classes_without_relion_statistics(tmp_path, with_representatives=False)
    prot = scipion_project.newProtocol(protocols["ProtClassRankerAutoSelect2D"], cutoff=1.5,
                                       modelSource=1, checkpointFile=str(tmp_path / "none.pt"))
    prot.inputClasses.set(classes)
    errors = "\n".join(prot.validate())
    assert "no average images" in errors
    assert "cutoff 1.5 is outside 0-1" in errors
    assert str(tmp_path / "none.pt") in errors and "Fix:" in errors
    from classranker_plugin.objects import ClassRankerModel

    prot.modelSource.set(2)  # "trained in this project": the model object's checkpoint
    assert any("Choose the trained model" in e for e in prot.validate())
    prot.inputModel.set(ClassRankerModel(path=str(tmp_path / "trained.pt")))
    assert any(str(tmp_path / "trained.pt") in e and "not found" in e for e in prot.validate())
    change = scipion_project.newProtocol(protocols["ProtClassRankerChangeCutoff"], cutoff=-0.1)
    assert any("outside 0-1" in e for e in change.validate())
    imp = scipion_project.newProtocol(protocols["ProtClassRankerImportClasses2D"],
                                      starFile=str(tmp_path / "run_it025_model.star"))
    assert any("file not found" in e and "run_it025_model.star" in e for e in imp.validate())


def test_suggested_cutoff_splits_two_groups_of_scores():
    from classranker_plugin.wizards.wizard_cutoff import suggest_cutoff

    scores = [0.05, 0.1, 0.12, 0.2, 0.75, 0.8, 0.9, 0.95]
    assert 0.2 < suggest_cutoff(scores) < 0.75
    assert suggest_cutoff([0.4, 0.4]) == 0.5 and suggest_cutoff([]) == 0.5
    assert math.isclose(suggest_cutoff([0.1, 0.9]), 0.5)


def test_selection_plots_are_written(tmp_path):
    from classranker_plugin.viewers.plots import save_selection_plots

    images = np.random.default_rng(1).normal(size=(5, 16, 16))
    paths = save_selection_plots(str(tmp_path), images, [1, 2, 3, 4, 5],
                                 np.array([0.9, 0.2, 0.6, 0.4, 0.1]),
                                 np.array([True, False, True, False, False]), 0.5)
    assert [Path(p).name for p in paths] == ["score_histogram.png", "class_gallery.png"]
    assert all(Path(p).stat().st_size > 5000 for p in paths)
