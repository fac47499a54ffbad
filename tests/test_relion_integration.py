"""Integration with a real RELION (3.1+ CPU build): genuine Class2D outputs, RELION reading our outputs,
and the External job run through RELION's own pipeliner.

Skipped when relion_refine (or another RELION program a test needs) is not on PATH.
The Class2D job is made once per session by the RELION engine (conftest.class2d_job).
"""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from conftest import RELION_CLASS2D as CLASS2D, RELION_MISSING

ITERATIONS, K = CLASS2D["iterations"], CLASS2D["K"]
pytestmark = pytest.mark.skipif(RELION_MISSING, reason="RELION is not installed (relion_refine / relion_project "
                                                       "not on PATH; `apt-get install relion` provides them)")


def _need(program):
    if shutil.which(program) is None:
        pytest.skip(f"{program} not on PATH (RELION installation incomplete)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small untrained model of the current feature set (the bundled model may not exist yet)."""
    import torch

    from classranker_plugin.checkpoint import Ranker, save_checkpoint
    from classranker_plugin.features import FEATURE_SETS
    from classranker_plugin.model import ClassRankerNet

    names = list(FEATURE_SETS["classranker"][1])
    torch.manual_seed(0)
    ranker = Ranker(network=ClassRankerNet(len(names)), feature_set="classranker", feature_names=names,
                    feature_mean=np.zeros(len(names), np.float32), feature_std=np.ones(len(names), np.float32),
                    temperature=1.0, metrics={}, provenance={"data": "relion integration test"})
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", ranker)


@pytest.fixture(scope="session")
def external_program(tmp_path_factory):
    """The installed classranker_external script, or the same entry point wrapped in a script."""
    installed = Path(sys.executable).parent / "classranker_external"
    if installed.is_file():
        return installed
    wrapper = tmp_path_factory.mktemp("bin") / "classranker_external"
    wrapper.write_text(f"#!{sys.executable}\nimport sys\nfrom classranker_plugin.cli.external import entry_point\n"
                       "sys.exit(entry_point())\n")
    wrapper.chmod(0o755)
    return wrapper


def _run(args, cwd, timeout=300):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def test_engine_labels_every_class(class2d_job):
    truth = pd.read_csv(class2d_job / "truth.csv")
    assert list(truth["class_number"]) == list(range(1, K + 1))
    assert truth["score"].between(0, 1).all() and set(truth["label"]) <= {0, 1}
    assert (truth["label"] == (truth["score"] >= 0.5)).all()
    assert truth["n_particles"].sum() == 300
    training = starfile.read(class2d_job / "classranker_training.star", always_dict=True)
    table = next(iter(training.values()))
    assert {"rlnReferenceImage", "rlnClassScore"} <= set(table.columns) and len(table) == K
    assert (class2d_job / f"run_it{ITERATIONS:03d}_classes.mrcs").is_file()


def test_read_score_and_relion_reads_our_outputs(class2d_job, tiny_model, tmp_path):
    _need("relion_reconstruct")
    _need("relion_star_handler")
    from classranker_plugin.cli.main import main
    from classranker_plugin.io import read_classes

    data_star = class2d_job / f"run_it{ITERATIONS:03d}_data.star"
    classes = read_classes(data_star)
    assert len(classes) == K and classes.box_size == 48 and classes.particles is not None
    assert classes.pixel_size == pytest.approx(7.0, rel=0.05)

    out = tmp_path / "scored"
    assert main(["score", str(data_star), "--o", str(out), "--model", str(tiny_model), "--cutoff", "0",
                 "--no-plots"]) == 0
    particles_star = out / "particles.star"
    scores = next(iter(starfile.read(out / "class_scores.star", always_dict=True).values()))
    assert len(scores) == K and scores["rlnClassScore"].between(0, 1).all()
    ours = starfile.read(particles_star, always_dict=True)
    assert len(ours["particles"]) == 300 and "optics" in ours

    # RELION's own programs accept our particles.star (image paths are relative to the job folder)
    _run(["relion_star_handler", "--i", particles_star, "--o", tmp_path / "checked.star",
          "--select", "rlnClassNumber", "--minval", 1, "--maxval", K], cwd=class2d_job)
    assert len(starfile.read(tmp_path / "checked.star", always_dict=True)["particles"]) == 300
    _run(["relion_reconstruct", "--i", particles_star, "--o", tmp_path / "map.mrc", "--ctf", "--j", 1],
         cwd=class2d_job)
    with mrcfile.open(tmp_path / "map.mrc") as mrc:
        assert mrc.data.shape == (48, 48, 48) and np.isfinite(mrc.data).all()


# ------------------------------------------------------------------ External job through relion_pipeliner

def _project(root: Path, class2d_job: Path) -> str:
    """A RELION project with the Class2D job as Class2D/job006/; returns the data.star path in it."""
    job = root / "Class2D" / "job006"
    job.mkdir(parents=True)
    for path in class2d_job.glob(f"run_it{ITERATIONS:03d}_*"):
        shutil.copy(path, job / path.name)
    (root / "default_pipeline.star").write_text("data_pipeline_general\n\n_rlnPipeLineJobCounter 1\n")
    return f"Class2D/job006/run_it{ITERATIONS:03d}_data.star"


def _job_star(path: Path, program: Path, in_part: str, model: Path) -> Path:
    path.write_text(textwrap.dedent(f"""\
        data_job

        _rlnJobType 99
        _rlnJobIsContinue 0

        data_joboptions_values

        loop_
        _rlnJobOptionVariable #1
        _rlnJobOptionValue #2
        fn_exe {program}
        in_part {in_part}
        param1_label min_score
        param1_value 0.5
        param2_label model
        param2_value {model}
        nr_threads 1
        do_queue No
        """))
    return path


def _pipeline(root: Path) -> dict:
    return starfile.read(root / "default_pipeline.star", always_dict=True)


def _run_external(root: Path, job_star: Path):
    _run(["relion_pipeliner", "--addJobFromStar", job_star], cwd=root)
    _run(["relion_pipeliner", "--RunJobs", "External/job001/", "--sec_wait_after", 1], cwd=root)
    _run(["relion_pipeliner", "--check_job_completion"], cwd=root)
    processes = _pipeline(root)["pipeline_processes"]
    row = processes[processes["rlnPipeLineProcessName"] == "External/job001/"]
    assert len(row) == 1, processes
    return int(row["rlnPipeLineProcessStatus"].iloc[0])


def test_external_job_through_relion_pipeliner(class2d_job, tiny_model, external_program, tmp_path):
    _need("relion_pipeliner")
    root = tmp_path / "project"
    in_part = _project(root, class2d_job)
    status = _run_external(root, _job_star(tmp_path / "job.star", external_program, in_part, tiny_model))
    job = root / "External" / "job001"
    error_log = job / "run.err"
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file(), error_log.read_text() if error_log.exists() else ""
    assert status == 2  # RELION 3.1: PROC_FINISHED_SUCCESS
    nodes = _pipeline(root)["pipeline_nodes"]["rlnPipeLineNodeName"].tolist()
    assert any(name.endswith("External/job001/particles.star") for name in nodes), nodes
    ours = starfile.read(job / "particles.star", always_dict=True)
    assert {"optics", "particles"} <= set(ours)


def test_external_job_failure_is_seen_by_relion(class2d_job, tiny_model, external_program, tmp_path):
    """Bad input that exists (RELION's pipeliner itself waits for missing input files): a broken data.star,
    and a data.star whose model.star / classes are missing. Our program must mark the job failed."""
    _need("relion_pipeliner")
    root = tmp_path / "project"
    in_part = _project(root, class2d_job)
    broken = root / "Class2D" / "job007" / "run_it003_data.star"
    broken.parent.mkdir(parents=True)
    broken.write_text("data_particles\nloop_\n_rlnClassNumber #1\nthis is not a star file\n")
    orphan = root / "Class2D" / "job008" / "run_it003_data.star"
    orphan.parent.mkdir(parents=True)
    shutil.copy(root / in_part, orphan)
    for in_part in (broken, orphan):
        shutil.rmtree(root / "External", ignore_errors=True)
        (root / "default_pipeline.star").write_text("data_pipeline_general\n\n_rlnPipeLineJobCounter 1\n")
        rel = str(in_part.relative_to(root))
        status = _run_external(root, _job_star(tmp_path / "job.star", external_program, rel, tiny_model))
        job = root / "External" / "job001"
        assert (job / "RELION_JOB_EXIT_FAILURE").is_file() and not (job / "RELION_JOB_EXIT_SUCCESS").exists()
        assert status == 3, f"{rel}: status {status}"  # RELION 3.1: PROC_FINISHED_FAILURE


def test_external_program_fails_cleanly_on_missing_input(external_program, tiny_model, tmp_path):
    """Called as RELION calls it, with an input that does not exist: exit status 1 and the failure marker."""
    job = tmp_path / "External" / "job001"
    result = subprocess.run([str(external_program), "--o", "External/job001/", "--in_parts",
                             "Class2D/job099/run_it025_data.star", "--min_score", "0.5", "--model", str(tiny_model),
                             "--j", "1", "--pipeline_control", "External/job001/"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and (job / "RELION_JOB_EXIT_FAILURE").is_file()
    assert "run_it025_data.star" in result.stderr


def test_simulate_cli_relion_engine(tmp_path):
    from classranker_plugin.cli.main import main

    out = tmp_path / "cli_job"
    assert main(["simulate", "--engine", "relion", "--o", str(out), "--particles", "80", "--classes", "2",
                 "--iterations", "1", "--box", "32", "--apix", "8", "--junk-fraction", "0.25",
                 "--junk-kinds", "ice,empty", "--snr", "0.2", "--seed", "5"]) == 0
    truth = pd.read_csv(out / "truth.csv")
    assert len(truth) == 2 and truth["n_particles"].sum() == 80
    origins = pd.read_csv(out / "particle_truth.csv")
    assert set(origins.loc[~origins["good"], "origin"]) <= {"ice", "empty"} and (~origins["good"]).sum() == 20


def test_training_sources_read_the_relion_job(class2d_job):
    """make-dataset's sources read both the job folder (truth.csv) and the training-format STAR."""
    from classranker_plugin.training.sources import BuildOptions, open_source

    truth = pd.read_csv(class2d_job / "truth.csv")
    options = BuildOptions()
    from_job = list(open_source(str(class2d_job)).chunks(options))
    labels = np.concatenate([chunk.labels for chunk in from_job])
    np.testing.assert_array_equal(labels, truth["label"].to_numpy(np.float32))
    assert from_job[0].images.shape == (K, 64, 64) and list(from_job[0].meta["kind"]) == list(truth["kind"])
    from_star = list(open_source(str(class2d_job / "classranker_training.star")).chunks(options))
    scores = np.concatenate([chunk.labels for chunk in from_star])
    np.testing.assert_allclose(scores, truth["score"].to_numpy(np.float32), atol=1e-4)
