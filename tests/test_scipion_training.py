"""The training protocol on a real Scipion project: a simulated RELION job is imported, the good
classes (truth.csv) are "kept by hand" with pwem's ProtUserSubSet, a model is trained for 2 epochs
on the CPU and used by auto-select ("trained in this project"). Skipped without Scipion."""
import os
from pathlib import Path

import pandas as pd
import pytest

from scipion_env import SCIPION_MISSING, launch, new

pytestmark = pytest.mark.skipif(SCIPION_MISSING is not None, reason=str(SCIPION_MISSING))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from classranker_plugin.simulation import simulate_job

    folder = simulate_job(tmp_path_factory.mktemp("relion") / "Class2D" / "job011", n_classes=16,
                          box=32, pixel_size=4.0, n_particles=320, write_particle_images=False, seed=5)
    return folder / "run_it025_model.star"


@pytest.fixture(scope="module")
def labelled(scipion_domain, scipion_project, job, tmp_path_factory):
    """(imported protocol, hand-kept subset protocol, ids of the classes present, ids of the good ones)."""
    domain, project = scipion_domain, scipion_project
    imported = launch(project, new(domain, project, "ProtClassRankerImportClasses2D", starFile=str(job)))
    truth = pd.read_csv(job.parent / "truth.csv")
    present = {c.getObjId() for c in imported.outputClasses}
    good = set(truth.loc[truth["label"] == 1, "class_number"]) & present
    subset = manual_subset(domain, project, imported, good, tmp_path_factory.mktemp("selection"))
    return imported, subset, present, good


def manual_subset(domain, project, imported, keep_ids, tmp_path):
    """A subset of classes as the GUI makes it: ProtUserSubSet with a text file of selected ids."""
    selection = tmp_path / "selection.txt"
    selection.write_text(" ".join(str(i) for i in sorted(keep_ids)))
    prot = new(domain, project, "ProtUserSubSet", sqliteFile=f"{selection},",
               outputClassName="SetOfClasses2D")
    prot.inputObject.set(imported)
    prot.inputObject.setExtended("outputClasses")
    return launch(project, prot)


def train_protocol(domain, project, imported, subset, **kwargs):
    prot = new(domain, project, "ProtClassRankerTrain", epochs=2, batchSize=8, useGpu=False, **kwargs)
    prot.inputClasses.append(imported)
    prot.inputClasses[0].setExtended("outputClasses")
    prot.keptClasses.append(subset)
    prot.keptClasses[0].setExtended("outputClasses2D")
    return prot


def test_train_then_auto_select_with_the_trained_model(scipion_domain, scipion_project, labelled):
    from classranker_plugin.checkpoint import load_model

    domain, project = scipion_domain, scipion_project
    imported, subset, present, good = labelled
    assert 0 < len(good) < len(present)
    assert {c.getObjId() for c in subset.outputClasses2D} == good

    # validation: a "kept" set that is the whole input has no junk examples
    bad = train_protocol(domain, project, imported, subset)
    bad.keptClasses.clear()
    bad.keptClasses.append(imported)
    bad.keptClasses[0].setExtended("outputClasses")
    assert any("some, but not all" in e for e in bad.validate())

    prot = train_protocol(domain, project, imported, subset, initModel=0)
    assert prot.validate() == []
    launch(project, prot)
    model = prot.outputModel
    assert model.exists() and model.getPath().endswith(os.path.join("training", "model.pt"))
    ranker = load_model(model.getPath(), device="cpu")
    assert ranker.metrics.get("n_valid", 0) > 0
    assert any("validation AUC" in line for line in prot.summary())

    select = new(domain, project, "ProtClassRankerAutoSelect2D", modelSource=2, cutoff=0.0,
                 useGpu=False)
    select.inputClasses.set(imported)
    select.inputClasses.setExtended("outputClasses")
    select.inputModel.set(prot)
    select.inputModel.setExtended("outputModel")
    assert select.validate() == []
    launch(project, select)
    assert {c.getObjId() for c in select.outputClasses} == present  # cutoff 0 keeps every class

    # "continue" fine-tuning the bundled model instead: dataset rebuilt, trained again, same output
    prot.initModel.set(1)
    prot.freezeCnn.set(True)
    launch(project, prot)
    ranker = load_model(prot.outputModel.getPath(), device="cpu")
    assert ranker.metrics["epoch"] >= 1
    assert [name for name, _ in prot.iterOutputAttributes()] == ["outputModel"]


def test_make_dataset_then_train_from_it(scipion_domain, scipion_project, labelled):
    import json

    domain, project = scipion_domain, scipion_project
    imported, subset, present, good = labelled

    make = new(domain, project, "ProtClassRankerMakeDataset", validFraction=0.25, seed=3)
    make.inputClasses.append(imported)
    make.inputClasses[0].setExtended("outputClasses")
    make.keptClasses.append(subset)
    make.keptClasses[0].setExtended("outputClasses2D")
    assert make.validate() == []
    launch(project, make)
    dataset = make.outputDataset
    assert dataset.exists() and dataset.getPath().endswith(os.path.join("extra", "dataset"))
    counts = json.loads((Path(dataset.getPath()) / "dataset.json").read_text())["counts"]
    assert (counts["classes"], counts["good"]) == (len(present), len(good))
    assert counts["bad"] == len(present) - len(good) and counts["valid"] == round(0.25 * len(present))
    assert "%d good" % len(good) in str(dataset)
    assert any("%d classes (%d good" % (len(present), len(good)) in line for line in make.summary())

    prot = new(domain, project, "ProtClassRankerTrain", trainingData=1, initModel=0, epochs=2,
               batchSize=8, useGpu=False)
    assert any("training set" in e for e in prot.validate())  # none chosen yet
    prot.inputDataset.set(make)
    prot.inputDataset.setExtended("outputDataset")
    prot.initModel.set(1)  # the bundled model takes the default features and image size
    assert prot.validate() == []
    prot.initModel.set(0)
    assert prot.validate() == []
    launch(project, prot)
    assert prot.outputModel.exists()
    assert not os.path.exists(prot._getExtraPath("dataset"))  # trained on the given set, none built
    assert any("validation AUC" in line for line in prot.summary())
