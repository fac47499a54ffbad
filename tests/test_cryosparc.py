"""cryoSPARC 2D classification jobs read directly: files written here in cryoSPARC's format
(.cs = NumPy structured arrays in .npy format, field names of cryoSPARC v2-v4), scored with the
bundled model, the selected particles written as a .cs subset and as RELION STAR."""
import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from classranker_plugin.errors import InputError
from classranker_plugin.io import read_classes
from classranker_plugin.io.stack import read_mrc_images

EXAMPLE = Path(__file__).resolve().parent.parent / "classranker_plugin" / "example"


def save_cs(path, array):
    with open(path, "wb") as handle:  # np.save(path) would append .npy
        np.save(handle, array)


#: the fields of a real cryoSPARC 2D-classification particle export (names and types as in cryoDRGN's
#: tests/data/cryosparc_J2_particles_exported.cs; values here are made up)
REAL_PARTICLE_FIELDS = [
    ("uid", "<u8"), ("blob/path", "S61"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"),
    ("blob/sign", "<f4"), ("blob/import_sig", "<u8"), ("ctf/type", "S9"), ("ctf/exp_group_id", "<u4"),
    ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"),
    ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"), ("ctf/scale", "<f4"),
    ("ctf/scale_const", "<f4"), ("ctf/shift_A", "<f4", (2,)), ("ctf/tilt_A", "<f4", (2,)),
    ("ctf/trefoil_A", "<f4", (2,)), ("ctf/tetra_A", "<f4", (4,)), ("ctf/anisomag", "<f4", (4,)),
    ("ctf/bfactor", "<f4"), ("alignments2D/split", "<u4"), ("alignments2D/shift", "<f4", (2,)),
    ("alignments2D/pose", "<f4"), ("alignments2D/psize_A", "<f4"), ("alignments2D/error", "<f4"),
    ("alignments2D/error_min", "<f4"), ("alignments2D/resid_pow", "<f4"), ("alignments2D/slice_pow", "<f4"),
    ("alignments2D/image_pow", "<f4"), ("alignments2D/cross_cor", "<f4"), ("alignments2D/alpha", "<f4"),
    ("alignments2D/alpha_min", "<f4"), ("alignments2D/weight", "<f4"), ("alignments2D/pose_ess", "<f4"),
    ("alignments2D/shift_ess", "<f4"), ("alignments2D/class_posterior", "<f4"), ("alignments2D/class", "<u4"),
    ("alignments2D/class_ess", "<f4")]


def test_real_export_fields_with_project_marks(tmp_path):
    """A particles .cs with the fields of a real export (CTF inside, no passthrough) and cryoSPARC's
    '>' project-relative path marks."""
    job = make_cryosparc_job(tmp_path / "P", passthrough=False)
    old = np.load(job / "J12_020_particles.cs")
    real = np.zeros(len(old), dtype=REAL_PARTICLE_FIELDS)
    for name in old.dtype.names:
        real[name] = old[name]
    real["blob/path"] = np.char.add(b">", old["blob/path"])
    real["ctf/df1_A"], real["ctf/df2_A"], real["ctf/accel_kv"] = 15000, 14800, 300
    save_cs(job / "J12_020_particles.cs", real)
    classes = np.load(job / "J12_020_class_averages.cs")
    classes["blob/path"] = b">J12/J12_020_class_averages.mrc"
    save_cs(job / "J12_020_class_averages.cs", classes)
    read = read_classes(job)
    assert read.stat("particle_count").sum() == len(real)
    assert read.particles["rlnImageName"].iloc[0] == "000001@J3/extract/mic_0000_particles.mrc"
    assert read.particles["rlnDefocusU"].iloc[0] == pytest.approx(15000)
    assert read.optics["rlnVoltage"].tolist() == [300.0]


def make_cryosparc_job(project, n_particles=None, passthrough=True, with_class_field=True, seed=0):
    """P/J12/: J12_020_class_averages.{mrc,cs}, J12_020_particles.cs, J12_passthrough_particles.cs,
    made from the bundled example's averages and its particles' class assignments."""
    rng = np.random.default_rng(seed)
    job = Path(project) / "J12"
    job.mkdir(parents=True)
    images = read_mrc_images(EXAMPLE / "run_it025_classes.mrcs")
    k, box = len(images), images.shape[1]
    with mrcfile.new(job / "J12_020_class_averages.mrc") as mrc:
        mrc.set_data(images)
        mrc.voxel_size = 3.5
    class_fields = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
                    ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("blob/res_A", "<f4"), ("blob/class_ess", "<f4")]
    if with_class_field:
        class_fields.append(("alignments2D/class", "<u4"))
    classes = np.zeros(k, dtype=class_fields)
    classes["uid"] = rng.integers(1, 2**62, k, dtype=np.uint64)
    classes["blob/path"] = b"J12/J12_020_class_averages.mrc"
    classes["blob/idx"] = np.arange(k)
    classes["blob/shape"] = box
    classes["blob/psize_A"] = 3.5
    classes["blob/sign"] = -1.0
    classes["blob/res_A"] = starfile.read(EXAMPLE / "run_it025_model.star")["model_classes"][
        "rlnEstimatedResolution"].replace(np.inf, 100.0).to_numpy()
    if with_class_field:
        classes["alignments2D/class"] = np.arange(k)
    save_cs(job / "J12_020_class_averages.cs", classes)

    assigned = starfile.read(EXAMPLE / "run_it025_data.star")["particles"]["rlnClassNumber"].to_numpy() - 1
    if n_particles is not None:
        assigned = assigned[:n_particles]
    n = len(assigned)
    uid = rng.permutation(np.arange(10**12, 10**12 + n, dtype=np.uint64))
    particles = np.zeros(n, dtype=[("uid", "<u8"), ("blob/path", "S48"), ("blob/idx", "<u4"),
                                   ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"), ("blob/sign", "<f4"),
                                   ("alignments2D/split", "<u4"), ("alignments2D/shift", "<f4", (2,)),
                                   ("alignments2D/pose", "<f4"), ("alignments2D/class_posterior", "<f4"),
                                   ("alignments2D/class", "<u4"), ("alignments2D/class_ess", "<f4")])
    particles["uid"] = uid
    particles["blob/path"] = [f"J3/extract/mic_{i // 100:04d}_particles.mrc".encode() for i in range(n)]
    particles["blob/idx"] = np.arange(n) % 100
    particles["blob/shape"] = box
    particles["blob/psize_A"] = 3.5
    particles["alignments2D/class"] = assigned
    particles["alignments2D/class_posterior"] = rng.uniform(0.5, 1, n)
    save_cs(job / "J12_020_particles.cs", particles)
    if passthrough:
        through = np.zeros(n, dtype=[("uid", "<u8"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
                                     ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"),
                                     ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"),
                                     ("ctf/exp_group_id", "<u4"), ("location/micrograph_path", "S40"),
                                     ("location/micrograph_shape", "<u4", (2,)),
                                     ("location/center_x_frac", "<f4"), ("location/center_y_frac", "<f4")])
        order = rng.permutation(n)  # passthrough rows in another order: joined on uid
        through["uid"] = uid[order]
        through["ctf/accel_kv"] = 300
        through["ctf/cs_mm"] = 2.7
        through["ctf/amp_contrast"] = 0.1
        through["ctf/df1_A"] = rng.uniform(1e4, 2e4, n)
        through["ctf/df2_A"] = through["ctf/df1_A"] - 200
        through["ctf/df_angle_rad"] = np.pi / 4
        through["ctf/exp_group_id"] = (np.arange(n) % 2)[order]
        through["location/micrograph_path"] = b"J2/motioncorrected/mic.mrc"
        through["location/micrograph_shape"] = (4096, 4096)
        through["location/center_x_frac"] = 0.25
        through["location/center_y_frac"] = 0.5
        save_cs(job / "J12_passthrough_particles.cs", through)
    return job


@pytest.fixture
def cs_job(tmp_path):
    return make_cryosparc_job(tmp_path / "P")


def test_reads_job_folder_cs_and_mrc_alike(cs_job):
    by_folder = read_classes(cs_job)
    assert len(by_folder) == 40 and by_folder.class_numbers.tolist() == list(range(1, 41))
    assert by_folder.pixel_size == pytest.approx(3.5)
    counts = by_folder.stat("particle_count")
    assert counts.sum() == 4000
    assert by_folder.stat("class_distribution") == pytest.approx(counts / 4000)
    assert np.isfinite(by_folder.stat("resolution")).all()
    assert np.isnan(by_folder.stat("accuracy_rotations")).all()
    for other in (cs_job / "J12_020_class_averages.cs", cs_job / "J12_020_class_averages.mrc"):
        again = read_classes(other)
        assert np.array_equal(again.images, by_folder.images)
        assert np.array_equal(again.stat("particle_count"), counts)


def test_class_index_from_blob_idx_when_no_alignments_field(tmp_path):
    job = make_cryosparc_job(tmp_path / "P", with_class_field=False)
    classes = read_classes(job)
    assert classes.class_numbers.tolist() == list(range(1, 41))


def test_passthrough_joined_on_uid(cs_job):
    classes = read_classes(cs_job)
    particles = classes.extra["cryosparc_particles"]
    through = np.load(cs_job / "J12_passthrough_particles.cs")
    lookup = dict(zip(through["uid"].tolist(), through["ctf/df1_A"].tolist()))
    assert [lookup[u] for u in particles["uid"][:50].tolist()] == particles["ctf/df1_A"][:50].tolist()
    star = classes.particles
    assert star["rlnDefocusU"].to_numpy() == pytest.approx(particles["ctf/df1_A"])
    assert star["rlnDefocusAngle"].to_numpy() == pytest.approx(45.0)
    assert star["rlnImageName"].iloc[0] == "000001@J3/extract/mic_0000_particles.mrc"
    assert star["rlnCoordinateX"].iloc[0] == pytest.approx(1024.0)
    assert sorted(classes.optics["rlnOpticsGroup"].tolist()) == [1, 2]


def test_score_cli_writes_cs_and_star_subsets(cs_job, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "classranker_plugin.cli.main", "score", str(cs_job), "--o", str(out),
                          "--cutoff", "0.5", "--device", "cpu", "--no-plots", "--write-rejected"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    scores = starfile.read(out / "class_scores.star", always_dict=True)["model_classes"]
    kept = set(scores.loc[scores["rlnSelected"] == 1, "rlnClassNumber"].astype(int))
    assert 0 < len(kept) < 40
    selected = np.load(out / "particles_selected.cs", allow_pickle=False)
    rejected = np.load(out / "particles_rejected.cs", allow_pickle=False)
    assert set((selected["alignments2D/class"] + 1).tolist()) <= kept
    assert not set((rejected["alignments2D/class"] + 1).tolist()) & kept
    assert len(selected) + len(rejected) == 4000
    assert "ctf/df1_A" in selected.dtype.names  # passthrough fields kept in the subset
    star = starfile.read(out / "particles.star", always_dict=True)
    assert len(star["particles"]) == len(selected)
    assert star["particles"]["rlnImageName"].tolist() == [
        f"{i + 1:06d}@{p.decode()}" for i, p in zip(selected["blob/idx"], selected["blob/path"])]
    assert {"rlnVoltage", "rlnImagePixelSize", "rlnImageSize"} <= set(star["optics"].columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["particles"] == 4000 and summary["particles_kept"] == len(selected)


def test_pickled_cs_refused(tmp_path):
    job = make_cryosparc_job(tmp_path / "P")
    objects = np.zeros(40, dtype=[("blob/path", "O"), ("blob/idx", "<u4")])
    objects["blob/path"] = "J12/J12_020_class_averages.mrc"
    with open(job / "J12_020_class_averages.cs", "wb") as handle:
        np.save(handle, objects, allow_pickle=True)
    with pytest.raises(InputError) as info:
        read_classes(job)
    assert "J12_020_class_averages.cs" in str(info.value) and "pickle" in str(info.value)


def test_bad_cryosparc_inputs(tmp_path):
    job = make_cryosparc_job(tmp_path / "P", n_particles=500)
    particles = np.load(job / "J12_020_particles.cs")
    particles["alignments2D/class"][:3] = 77  # particles of a class the job does not have
    save_cs(job / "J12_020_particles.cs", particles)
    with pytest.raises(InputError) as info:
        read_classes(job)
    assert "J12_020_particles.cs" in str(info.value) and "78" in str(info.value)
    save_cs(job / "J12_020_particles.cs", particles[["uid", "blob/idx"]])
    with pytest.raises(InputError) as info:
        read_classes(job)
    assert "alignments2D/class" in str(info.value)
    (job / "J12_020_class_averages.mrc").unlink()
    with pytest.raises(InputError) as info:
        read_classes(job / "J12_020_class_averages.cs")
    assert "J12_020_class_averages.mrc" in str(info.value) and "Fix:" in str(info.value)
