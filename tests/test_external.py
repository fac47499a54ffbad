"""The RELION External job entry point, called as RELION's pipeliner calls it (no RELION needed)."""
import subprocess
import sys

import starfile

from classranker_plugin.cli.external import FAILURE, OUTPUT_NODES, SUCCESS, entry_point
from classranker_plugin.simulation import simulate_job


def test_external_job_writes_relion_outputs_and_the_success_marker(tmp_path, monkeypatch):
    project = tmp_path / "project"
    job = simulate_job(project / "Class2D" / "job008", n_classes=12, box=48, pixel_size=4.0,
                       n_particles=600, seed=11)
    monkeypatch.chdir(project)
    out = "External/job012/"
    code = entry_point(["--o", out, "--in_parts", "Class2D/job008/run_it025_data.star", "--min_score", "0.5",
                        "--j", "1", "--pipeline_control", out, "--in_mics", "ignored.star"])
    assert code == 0
    job_dir = project / out
    assert (job_dir / SUCCESS).exists() and not (job_dir / FAILURE).exists()
    particles = starfile.read(job_dir / "particles.star")
    assert set(particles) == {"optics", "particles"}  # RELION 3.1+ format, optics kept
    scores = next(iter(starfile.read(job_dir / "class_scores.star", always_dict=True).values()))
    kept = set(scores.loc[scores["rlnSelected"] == 1, "rlnClassNumber"].astype(int))
    original = starfile.read(job / "run_it025_data.star")["particles"]
    assert len(particles["particles"]) == original["rlnClassNumber"].isin(kept).sum() > 0
    averages = starfile.read(job_dir / "class_averages.star")
    assert sorted(averages["rlnClassNumber"].astype(int)) == sorted(kept)
    nodes = starfile.read(job_dir / OUTPUT_NODES)
    assert list(nodes["rlnPipeLineNodeType"]) == [3, 5]
    assert nodes["rlnPipeLineNodeName"].iloc[0].endswith("External/job012/particles.star")


def test_external_job_failure_marker_on_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = "External/job013/"
    assert entry_point(["--o", out, "--in_parts", "Class2D/job404/run_it025_data.star", "--j", "1"]) == 1
    assert (tmp_path / out / FAILURE).exists() and not (tmp_path / out / SUCCESS).exists()
    assert "run_it025_data.star" in capsys.readouterr().err
    assert not (tmp_path / out / "particles.star").exists()


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "classranker_plugin.cli.main", "external", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--in_parts" in result.stdout and "--pipeline_control" in result.stdout
