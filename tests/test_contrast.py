"""Contrast convention: protein-black stacks (negative stain, some EMAN2/SPHIRE outputs) are inverted
once per job, so that they score as the same averages stored protein white."""
import json
import shutil

import mrcfile
import numpy as np
import pytest

from classranker_plugin.cli.main import main
from classranker_plugin.contrast import protein_is_dark
from classranker_plugin.io import read_classes
from classranker_plugin.io.stack import read_mrc_images
from classranker_plugin.scoring import score_classes

from test_tolerant_readers import EXAMPLE


def write_stack(path, images, apix=3.5):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(images, np.float32))
        mrc.voxel_size = apix
    return path


@pytest.fixture
def stacks(tmp_path):
    images = read_mrc_images(EXAMPLE / "run_it025_classes.mrcs")
    white = write_stack(tmp_path / "white.mrcs", images)
    black = write_stack(tmp_path / "black.mrcs", -images)
    shutil.copy(EXAMPLE / "run_it025_model.star", tmp_path / "unused.star")
    return white, black


def test_cryo_stack_is_left_alone(stacks):
    white, _ = stacks
    classes = read_classes(white, particle_diameter=150)
    assert classes.extra["contrast_inverted"] is False
    assert not protein_is_dark(classes)[0]


def test_protein_black_scores_as_protein_white(stacks):
    white, black = stacks
    a = read_classes(white, particle_diameter=150)
    b = read_classes(black, particle_diameter=150)
    assert b.extra["contrast_inverted"] is True
    assert np.allclose(a.images, b.images)
    assert np.allclose(score_classes(a, explain=False).scores, score_classes(b, explain=False).scores, atol=1e-6)


def test_forced_conventions(stacks, tmp_path, capsys):
    white, black = stacks
    assert read_classes(black, contrast="white").extra["contrast_inverted"] is False
    assert read_classes(white, contrast="black").extra["contrast_inverted"] is True
    status = main(["score", str(black), "--o", str(tmp_path / "out"), "--device", "cpu", "--no-plots",
                   "--diameter", "150"])
    assert status == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["contrast_inverted"] is True
    assert "protein black" in capsys.readouterr().out


def test_a_few_dark_junk_classes_do_not_flip_a_job(stacks, tmp_path):
    """Ice or carbon can be darker inside: it takes a clear majority to call the stack protein black."""
    images = read_mrc_images(EXAMPLE / "run_it025_classes.mrcs")
    images[:15] *= -1  # 15 of 40 classes look protein-black
    classes = read_classes(write_stack(tmp_path / "mixed.mrcs", images), particle_diameter=150)
    assert classes.extra["contrast_inverted"] is False


def test_eight_bit_rendering_is_scored_like_the_original(tmp_path):
    """A stack saved from a viewer (8-bit, display-scaled: MRC mode 0) is read as float and ranks
    the classes like the original densities (the training augmentation imitates such renderings)."""
    from classranker_plugin.training.metrics import roc_auc

    images = read_mrc_images(EXAMPLE / "run_it025_classes.mrcs")
    low, high = np.percentile(images, [1, 99], axis=(1, 2), keepdims=True)
    rendered = (np.clip((images - low) / np.maximum(high - low, 1e-6), 0, 1) * 255 - 128).round().astype(np.int8)
    path = tmp_path / "rendered.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(rendered)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 0
    original = score_classes(read_classes(EXAMPLE / "run_it025_model.star"), explain=False).scores
    classes = read_classes(path, pixel_size=3.5, particle_diameter=150)
    assert classes.images.dtype == np.float32
    scores = score_classes(classes, explain=False).scores
    # the same classes come out on top: rank agreement with the original densities
    top = original >= np.median(original)
    assert roc_auc(top.astype(float), scores) >= 0.8
