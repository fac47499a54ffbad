"""Occlusion maps of the image branch and the saliency gallery (`classranker score --saliency`)."""
import numpy as np
import pytest
import torch
from torch import nn

from classranker_plugin.checkpoint import Ranker, save_checkpoint
from classranker_plugin.cli.main import main as cli
from classranker_plugin.features import FEATURE_SETS
from classranker_plugin.model import ClassRankerNet
from classranker_plugin.saliency import occlusion_maps, patch_starts
from classranker_plugin.simulation import simulate_job

torch.set_num_threads(1)
NAMES = list(FEATURE_SETS["classranker"][1])


class RegionNet(nn.Module):
    """A hand-made network whose logit is 4 x the mean of the image's top-left 16 x 16 corner."""

    def __init__(self, size: int = 64):
        super().__init__()
        self.config = {"arch": "region", "image_size": size}
        weight = torch.zeros(1, 1, size, size)
        weight[..., :16, :16] = 4.0 / 256
        self.weight = nn.Parameter(weight)

    def forward(self, images, features):
        return (images * self.weight).sum(dim=(1, 2, 3)) + 0.0 * features.sum(dim=1)


def _ranker(network):
    return Ranker(network=network, feature_set="classranker", feature_names=NAMES,
                  feature_mean=np.zeros(len(NAMES), np.float32), feature_std=np.ones(len(NAMES), np.float32))


def test_occluding_the_region_the_network_uses_lowers_the_score():
    ranker = _ranker(RegionNet())
    images = np.random.default_rng(0).normal(0.0, 0.1, (3, 64, 64)).astype(np.float32)
    images[:, :16, :16] += 1.0  # bright where the network looks
    features = np.zeros((3, len(NAMES)), np.float32)
    maps = occlusion_maps(ranker, images, features, patch=8, stride=8, batch_size=50)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32 and np.isfinite(maps).all()
    assert (maps[:, :16, :16] > 0.2).all()               # the region pushed the score up
    assert np.abs(maps[:, 16:, :]).max() < 1e-6          # the rest does not matter
    assert np.abs(maps[:, :, 16:]).max() < 1e-6
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    occluded = images.copy()
    occluded[0, y // 8 * 8:y // 8 * 8 + 8, x // 8 * 8:x // 8 * 8 + 8] = 0.0
    assert ranker.score(occluded, features)[0] < ranker.score(images, features)[0] - 0.01


def test_maps_of_a_real_network_are_finite_and_independent_of_batching():
    torch.manual_seed(0)
    ranker = _ranker(ClassRankerNet(len(NAMES)))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(4, 64, 64)).astype(np.float32)
    features = rng.normal(size=(4, len(NAMES))).astype(np.float32)
    big = occlusion_maps(ranker, images, features, patch=8, stride=8, batch_size=1000)
    small = occlusion_maps(ranker, images, features, patch=8, stride=8, batch_size=7)
    assert big.shape == (4, 64, 64) and np.isfinite(big).all() and np.abs(big).max() > 0
    assert np.allclose(big, small, atol=1e-5)
    overlapping = occlusion_maps(ranker, images[:1], features[:1], patch=12, stride=10)
    assert overlapping.shape == (1, 64, 64) and np.isfinite(overlapping).all()
    assert occlusion_maps(ranker, images[:0], features[:0]).shape == (0, 64, 64)


def test_patches_cover_the_whole_image():
    assert patch_starts(64, 8, 8)[-1] == 56 and patch_starts(64, 12, 10) == [0, 10, 20, 30, 40, 50, 52]
    with pytest.raises(ValueError):
        patch_starts(64, 0, 8)


def test_score_with_saliency_writes_the_saliency_gallery(tmp_path):
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "random.pt", _ranker(ClassRankerNet(len(NAMES))))
    job = simulate_job(tmp_path / "Class2D" / "job001", n_classes=8, box=64, n_particles=400, seed=2)
    out, plain = tmp_path / "out", tmp_path / "plain"
    star = str(job / "run_it025_model.star")
    assert cli(["score", star, "--model", str(model), "--o", str(out), "--device", "cpu", "--saliency"]) == 0
    assert (out / "gallery_saliency.png").stat().st_size > 0 and (out / "gallery.png").is_file()
    assert cli(["score", star, "--model", str(model), "--o", str(plain), "--device", "cpu"]) == 0
    assert not (plain / "gallery_saliency.png").exists()
