"""Networks, checkpoints (weights-only, refusals) and RELION model compatibility."""
import numpy as np
import pytest
import torch
from torch import nn

from classranker_plugin.checkpoint import Ranker, load_model, read_checkpoint, save_checkpoint
from classranker_plugin.errors import InputError
from classranker_plugin.model import ClassRankerNet, RelionRankerNet, build_network

torch.set_num_threads(1)


def _ranker(n_features=5):
    torch.manual_seed(0)
    net = ClassRankerNet(n_features)
    return Ranker(network=net, feature_set="test", feature_names=[f"f{i}" for i in range(n_features)],
                  feature_mean=np.arange(n_features, dtype=np.float32),
                  feature_std=np.full(n_features, 2.0, np.float32), temperature=1.5,
                  metrics={"precision_at_cutoff": np.float64(0.9)}, provenance={"data": "unit test"})


def _inputs(n=6, n_features=5, size=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size)).astype(np.float32), rng.normal(size=(n, n_features)).astype(np.float32)


def test_networks_give_one_logit_per_class():
    images = torch.zeros(3, 1, 64, 64)
    assert ClassRankerNet(7)(images, torch.zeros(3, 7)).shape == (3,)
    assert RelionRankerNet()(images, torch.zeros(3, 24)).shape == (3,)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network({"arch": "resnet"})


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    ranker = _ranker()
    images, features = _inputs()
    before = ranker.score(images, features)
    path = save_checkpoint(tmp_path / "m.pt", ranker)
    loaded = load_model(path, device="cpu", feature_names=ranker.feature_names)
    np.testing.assert_allclose(loaded.score(images, features), before, rtol=1e-5, atol=1e-6)
    assert 0 <= before.min() and before.max() <= 1
    assert loaded.temperature == 1.5 and loaded.metrics["precision_at_cutoff"] == pytest.approx(0.9)
    assert loaded.provenance["data"] == "unit test" and "classranker_version" in loaded.provenance
    payload = torch.load(path, weights_only=True)  # nothing in it needs pickle to run code
    assert payload["format_version"] == 1 and payload["feature_names"] == ranker.feature_names


def test_feature_list_mismatch_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _ranker())
    with pytest.raises(InputError, match="feature list does not match") as error:
        load_model(path, device="cpu", feature_names=["f0", "f1", "other"])
    assert "m.pt" in str(error.value) and "Fix:" in str(error.value)


def test_corrupt_missing_and_foreign_checkpoints_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="corrupt.pt"):
        load_model(corrupt, device="cpu")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "absent.pt", device="cpu")
    truncated = tmp_path / "truncated.pt"
    good = save_checkpoint(tmp_path / "good.pt", _ranker())
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(InputError, match="truncated.pt"):
        load_model(truncated, device="cpu")


def test_checkpoint_that_pickles_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))
    path = tmp_path / "evil.pt"
    torch.save({"format": "classranker-checkpoint", "evil": Evil()}, path)
    with pytest.raises(InputError, match="evil.pt"):
        read_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    ranker = _ranker()
    path = save_checkpoint(tmp_path / "m.pt", ranker)
    payload = torch.load(path, weights_only=True)
    payload["arch"]["widths"] = [8, 16, 32]
    torch.save(payload, path)
    with pytest.raises(InputError, match="do not fit the architecture"):
        load_model(path, device="cpu")


class _ReferenceRelionNet(nn.Module):
    """A stand-in for RELION 5's class ranker with its parameter names (cnn_layers.N, ...)."""

    def __init__(self, w=16):
        super().__init__()
        layers, c_in = [], 1
        for width in (w, 2 * w, 4 * w):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(), nn.Dropout(0.0),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.Dropout(0.0)]
            c_in = 2 * width
        self.cnn_layers = nn.Sequential(*layers)
        self.feature_extractor = nn.Sequential(nn.Linear(c_in * 64, 48))
        self.classifier_images_and_features = nn.Sequential(nn.Dropout(0.0), nn.Linear(72, 48), nn.ReLU(),
                                                            nn.Dropout(0.0), nn.Linear(48, 1))
        self.classifier_images = nn.Sequential(nn.Dropout(0.0), nn.Linear(48, 1))
        self.classifier_features = nn.Sequential(nn.Linear(24, 12), nn.ReLU(), nn.Dropout(0.0), nn.Linear(12, 1))

    def forward(self, images, features):
        embedded = self.feature_extractor(torch.flatten(self.cnn_layers(images), 1))
        return self.classifier_images_and_features(torch.cat([embedded, features], 1))


def test_relion5_checkpoint_loads_weights_only_and_matches_reference(tmp_path):
    torch.manual_seed(3)
    reference = _ReferenceRelionNet().eval()
    marker = tmp_path / "executed"
    path = tmp_path / "relion5.ckpt"
    torch.save({"model_state_dict": reference.state_dict(),
                "model_definition": f"open({str(marker)!r}, 'w').write('ran')",
                "P_DROPOUT": 0.3, "CNN_W": 16, "FEAT_EXT_W": 48, "FEAT_EXT_W2": 48,
                "USE_IMAGES": True, "USE_FEATURES": True, "train_losses": [1.0], "valid_losses": [1.0]}, path)
    ranker = load_model(path, device="cpu")
    images, features = _inputs(n=4, n_features=24)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(features)).squeeze(1).numpy()
    np.testing.assert_allclose(ranker.logits(images, features), expected, rtol=1e-4, atol=1e-5)
    assert ranker.image_kind == "relion" and ranker.output == "score" and len(ranker.feature_names) == 24
    assert not marker.exists(), "the model_definition source stored in the checkpoint must never run"


def test_relion4_torchscript_needs_explicit_trust(tmp_path):
    torch.manual_seed(4)
    reference = _ReferenceRelionNet().eval()
    path = tmp_path / "relion4.pt"
    torch.jit.script(reference).save(str(path))
    with pytest.raises(InputError, match="TorchScript"):
        load_model(path, device="cpu")
    ranker = load_model(path, device="cpu", trust_torchscript=True)
    images, features = _inputs(n=3, n_features=24)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(features)).reshape(-1).numpy()
    np.testing.assert_allclose(ranker.logits(images, features), expected, rtol=1e-4, atol=1e-5)
