"""The procedural simulator: files RELION tools can read, labels that mean what they say, determinism."""

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from classranker_plugin.cli.main import main as cli_main
from classranker_plugin.errors import InputError
from classranker_plugin.simulation import JUNK_KINDS, simulate_job
from classranker_plugin.simulation.density import euler_matrices, project, random_molecule, random_views
from classranker_plugin.simulation.junk import JunkContext, junk_template
from classranker_plugin.simulation.particles import transform_template

FILES = ("run_it025_classes.mrcs", "run_it025_model.star", "run_it025_data.star",
         "run_it025_optimiser.star", "truth.csv")


def _auc(values, labels) -> float:
    """Probability that a random good class has a larger value than a random junk class (ties 1/2)."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    good, junk = values[labels == 1][:, None], values[labels == 0][None, :]
    return float(np.mean((good > junk) + 0.5 * (good == junk)))


def _centre_offset(image) -> float:
    """Distance of the bright part's centre of mass from the box centre, in boxes."""
    weights = np.clip(image - 0.3 * image.max(), 0, None)
    box = image.shape[-1]
    y, x = np.mgrid[:box, :box] - box // 2
    return float(np.hypot((weights * x).sum(), (weights * y).sum()) / weights.sum() / box)


@pytest.fixture(scope="module")
def small_job(tmp_path_factory):
    return simulate_job(tmp_path_factory.mktemp("sim") / "job001", n_classes=24, box=48, n_particles=2000, seed=3)


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    # STAR files hold paths relative to the project (<parent>/<job>): same names, same bytes
    first = simulate_job(tmp_path / "a" / "Class2D" / "job001", n_classes=12, box=32, n_particles=600, seed=3,
                         write_particle_images=True)
    again = simulate_job(tmp_path / "b" / "Class2D" / "job001", n_classes=12, box=32, n_particles=600, seed=3,
                         write_particle_images=True)
    for name in FILES + ("particles.mrcs",):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    other = simulate_job(tmp_path / "c" / "Class2D" / "job001", n_classes=12, box=32, n_particles=600, seed=4)
    assert (other / FILES[0]).read_bytes() != (first / FILES[0]).read_bytes()


def test_files_read_back_as_a_relion_31_class2d_job(small_job):
    with mrcfile.open(small_job / "run_it025_classes.mrcs", permissive=False) as mrc:
        images = mrc.data.copy()
        assert mrc.is_image_stack()
        assert mrc.voxel_size.x == pytest.approx(3.5)
    assert images.shape == (24, 48, 48) and images.dtype == np.float32 and np.isfinite(images).all()

    model = starfile.read(small_job / "run_it025_model.star", always_dict=True)
    general, classes = model["model_general"], model["model_classes"]
    assert general["rlnPixelSize"] == pytest.approx(3.5)
    assert general["rlnOriginalImageSize"] == 48 and general["rlnNrClasses"] == 24
    for column in ("rlnReferenceImage", "rlnClassDistribution", "rlnAccuracyRotations",
                   "rlnAccuracyTranslationsAngst", "rlnEstimatedResolution", "rlnOverallFourierCompleteness"):
        assert column in classes, column
    assert classes["rlnReferenceImage"].iloc[4] == f"000005@{small_job.parent.name}/job001/run_it025_classes.mrcs"
    assert classes["rlnClassDistribution"].sum() == pytest.approx(1.0, abs=1e-5)
    shells = 48 * 3.5 / classes["rlnEstimatedResolution"].to_numpy()
    finite = np.isfinite(classes["rlnEstimatedResolution"].to_numpy())
    assert np.allclose(shells[finite], np.round(shells[finite]), atol=1e-3)  # RELION's Fourier shells

    data = starfile.read(small_job / "run_it025_data.star", always_dict=True)
    assert set(data) == {"optics", "particles"}
    assert data["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(3.5)
    particles = data["particles"]
    for column in ("rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnDefocusU",
                   "rlnDefocusV", "rlnDefocusAngle", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                   "rlnOriginXAngst", "rlnOriginYAngst", "rlnClassNumber", "rlnOpticsGroup"):
        assert column in particles, column
    assert len(particles) == 2000

    truth = pd.read_csv(small_job / "truth.csv")
    assert list(truth.columns) == ["class_number", "label", "kind", "score", "n_particles"]
    counted = particles["rlnClassNumber"].value_counts().reindex(truth["class_number"], fill_value=0)
    assert (counted.to_numpy() == truth["n_particles"].to_numpy()).all()
    assert np.allclose(classes["rlnClassDistribution"] * 2000, truth["n_particles"], atol=0.01)
    assert truth["score"].between(0, 1).all() and set(truth["label"]) <= {0, 1}
    assert (truth["score"][truth["label"] == 1].min() > truth["score"][truth["label"] == 0].max())

    optimiser = starfile.read(small_job / "run_it025_optimiser.star", always_dict=True)["optimiser_general"]
    assert optimiser["rlnParticleDiameter"] > 0
    assert optimiser["rlnModelStarFile"].endswith("job001/run_it025_model.star")
    assert optimiser["rlnExperimentalDataStarFile"].endswith("job001/run_it025_data.star")


@pytest.mark.parametrize("kind", JUNK_KINDS)
def test_each_junk_kind_makes_a_finite_template(kind):
    rng = np.random.default_rng(11)
    molecule = random_molecule(rng, 120.0)

    def good_projection(rng, fraction=1.0):
        rot, tilt = random_views(rng, 1)
        return project(molecule.atoms, euler_matrices(rot, tilt, 0.0), 48, 3.5)[0]

    ctx = JunkContext(box=48, pixel_size=3.5, radius=20.0, molecule_radius=molecule.radius / 3.5,
                      level=float(good_projection(rng).max()), good_projection=good_projection)
    for seed in range(3):
        image = junk_template(kind, np.random.default_rng(seed), ctx)
        assert image.shape == (48, 48) and np.isfinite(image).all()


def test_every_junk_kind_appears_in_a_job_and_empty_classes_are_zero(tmp_path):
    job = simulate_job(tmp_path / "job", n_classes=40, box=32, n_particles=3000, junk_fraction=0.6, seed=5)
    truth = pd.read_csv(job / "truth.csv")
    assert set(truth["kind"][truth["label"] == 0]) == set(JUNK_KINDS)
    images = mrcfile.read(job / "run_it025_classes.mrcs")
    classes = starfile.read(job / "run_it025_model.star")["model_classes"]
    zero = truth["n_particles"].to_numpy() == 0
    assert (images[zero] == 0).all()
    assert np.isinf(classes["rlnEstimatedResolution"][zero]).all()
    assert (classes["rlnAccuracyRotations"][zero] == 999).all()
    assert (images[~zero].std(axis=(1, 2)) > 0).all()


def test_good_classes_are_centred_and_off_centre_junk_is_not(tmp_path):
    job = simulate_job(tmp_path / "job", n_classes=24, box=48, n_particles=3000, junk_fraction=0.5,
                       junk_kinds=("off_centre",), seed=0)
    truth = pd.read_csv(job / "truth.csv")
    offsets = np.array([_centre_offset(image) for image in mrcfile.read(job / "run_it025_classes.mrcs")])
    good, off = offsets[truth["label"] == 1], offsets[truth["label"] == 0]
    assert good.max() < 0.06
    assert np.median(off) > 0.12 and np.mean(off > 0.06) >= 0.8


def test_solvent_is_flattened_outside_the_mask(small_job):
    images = mrcfile.read(small_job / "run_it025_classes.mrcs")
    diameter = starfile.read(small_job / "run_it025_optimiser.star")["rlnParticleDiameter"]
    radius = diameter / 2 / 3.5
    y, x = np.mgrid[:48, :48] - 24
    outside = np.hypot(x, y) > radius + 5.5
    assert (images[:, outside] == 0).all()


def test_realistic_metadata_separates_labels_and_uninformative_does_not(tmp_path):
    aucs = {}
    for mode in ("realistic", "uninformative"):
        job = simulate_job(tmp_path / mode, n_classes=300, box=16, n_particles=30000, metadata=mode, seed=2)
        truth = pd.read_csv(job / "truth.csv")
        classes = starfile.read(job / "run_it025_model.star")["model_classes"]
        aucs[mode] = {
            "distribution": _auc(classes["rlnClassDistribution"], truth["label"]),
            "resolution": _auc(-classes["rlnEstimatedResolution"].to_numpy(), truth["label"]),
            "accuracy": _auc(-classes["rlnAccuracyRotations"].to_numpy(), truth["label"]),
        }
    # with 300 classes almost every class holds < 1% of the particles: 999 accuracies, as RELION writes
    assert aucs["realistic"]["distribution"] > 0.8 and aucs["realistic"]["resolution"] > 0.8, aucs
    assert all(0.3 < v < 0.7 for v in aucs["uninformative"].values()), aucs


def test_particle_images_match_the_particle_table(tmp_path):
    job = simulate_job(tmp_path / "job", n_classes=6, box=32, n_particles=240, write_particle_images=True, seed=1)
    particles = starfile.read(job / "run_it025_data.star")["particles"]
    with mrcfile.open(job / "particles.mrcs") as mrc:
        stack = mrc.data.copy()
    assert stack.shape == (len(particles), 32, 32) and np.isfinite(stack).all()
    index, path = zip(*(name.split("@") for name in particles["rlnImageName"]))
    assert [int(i) for i in index] == list(range(1, len(particles) + 1))
    assert set(path) == {f"{job.parent.name}/job/particles.mrcs"}
    # the notional stacks of a job without images are never written
    plain = simulate_job(tmp_path / "plain", n_classes=6, box=32, n_particles=240, seed=1)
    assert not (plain / "particles.mrcs").exists()


def test_rotating_a_class_projection_by_psi_is_projecting_at_psi():
    molecule = random_molecule(np.random.default_rng(0), 100.0)
    at_psi = project(molecule.atoms, euler_matrices(20, 50, -75), 48, 3.5, shifts=-np.array([[3.0, -2.0]]))[0]
    rotated = transform_template(project(molecule.atoms, euler_matrices(20, 50, 0), 48, 3.5)[0], -75,
                                 np.array([3.0, -2.0]))
    assert np.corrcoef(at_psi.ravel(), rotated.ravel())[0, 1] > 0.99


def test_bad_arguments_raise_input_errors(tmp_path):
    with pytest.raises(InputError):
        simulate_job(tmp_path / "a", junk_kinds=("lava",))
    with pytest.raises(InputError):
        simulate_job(tmp_path / "b", box=63)
    with pytest.raises(InputError):
        simulate_job(tmp_path / "c", n_classes=10, n_particles=5)
    with pytest.raises(InputError):
        simulate_job(tmp_path / "d", metadata="noisy")
    assert not any(tmp_path.iterdir())


def test_cli_writes_several_varied_jobs(tmp_path, capsys):
    status = cli_main(["simulate", "--o", str(tmp_path / "sims"), "--jobs", "2", "--classes", "6",
                       "--box", "32", "--particles", "200", "--seed", "4"])
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "job001" in lines[0] and "seed 5" in lines[1]
    for name in ("job001", "job002"):
        assert all((tmp_path / "sims" / name / f).is_file() for f in FILES)
    assert cli_main(["simulate", "--o", str(tmp_path / "bad"), "--junk-kinds", "lava"]) == 2
