"""The fast inference path (BatchNorm folded into the convolutions, channels-last, small CPU
batches, one image pass shared with the explanations) gives the plain forward pass's logits."""
import numpy as np
import torch

from classranker_plugin.checkpoint import CPU_BATCH, Ranker, load_model
from classranker_plugin.explain import explain_scores
from classranker_plugin.model import ClassRankerNet, RelionRankerNet

torch.set_num_threads(1)


def _plain_logits(ranker, images, features):
    network = ranker.network.eval()
    with torch.no_grad():
        return network(torch.as_tensor(images)[:, None], torch.as_tensor(ranker.normalise(features))).numpy()


def _inputs(n, n_features, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 64, 64)).astype(np.float32),
            rng.normal(size=(n, n_features)).astype(np.float32))


def _ranker(network, n_features):
    return Ranker(network=network, feature_set="test", feature_names=[f"f{i}" for i in range(n_features)],
                  feature_mean=np.zeros(n_features, np.float32), feature_std=np.ones(n_features, np.float32))


def test_bundled_model_fast_logits_equal_the_plain_forward():
    ranker = load_model(device="cpu")
    images, features = _inputs(CPU_BATCH * 2 + 5, len(ranker.feature_names))
    expected = _plain_logits(ranker, images, features)
    for batch_size in (1, 7, 256):
        np.testing.assert_allclose(ranker.logits(images, features, batch_size=batch_size), expected,
                                   rtol=1e-5, atol=1e-5)
    embeddings = ranker.image_embeddings(images)
    assert not embeddings.is_inference()
    np.testing.assert_allclose(ranker.logits(images, features, embeddings=embeddings), expected,
                               rtol=1e-5, atol=1e-5)
    logits = ranker.logits(images, features)
    names = ranker.feature_names
    assert (explain_scores(ranker, images, features, names, logits, embeddings=embeddings)
            == explain_scores(ranker, images, features, names, logits))


def test_folded_batchnorm_with_trained_statistics():
    torch.manual_seed(0)
    network = ClassRankerNet(5)
    with torch.no_grad():                       # BatchNorms far from their initial identity
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.2, 3)
                module.weight.uniform_(0.5, 2)
                module.bias.uniform_(-0.5, 0.5)
    ranker = _ranker(network, 5)
    images, features = _inputs(20, 5, seed=2)
    np.testing.assert_allclose(ranker.logits(images, features), _plain_logits(ranker, images, features),
                               rtol=1e-5, atol=1e-5)
    network.train()                             # training mode: the unfolded embed_image itself
    assert network.inference_embedder() == network.embed_image
    assert ranker.logits(np.zeros((0, 64, 64), np.float32), np.zeros((0, 5), np.float32)).shape == (0,)


def test_relion_network_path():
    torch.manual_seed(0)
    ranker = _ranker(RelionRankerNet(), 24)
    images, features = _inputs(CPU_BATCH + 3, 24, seed=3)
    np.testing.assert_allclose(ranker.logits(images, features), _plain_logits(ranker, images, features),
                               rtol=1e-5, atol=1e-5)
