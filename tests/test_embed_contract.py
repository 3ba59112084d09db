"""Every embedder keeps the Embedder contract (sentiscore/embed/__init__.py):
the attributes the pipeline reads, encode's shapes, masks and zero padding,
and a save/load round trip that encodes identically."""

import numpy as np
import pytest

from sentiscore.config import SegmenterConfig
from sentiscore.embed import Embedder, load_embedder
from sentiscore.segment import Segmenter

TEXTS = ["质量很好，物流也快，推荐购买", "太差了", "一般般吧，没什么特别的，价格还行，包装完好，客服回复慢"]


def _vocab(request):
    from sentiscore.embed.vocab import VocabEmbedder

    segmented = Segmenter(SegmenterConfig(), maxlen=48).segment(TEXTS)
    return VocabEmbedder.build(segmented, min_count=1, max_size=100), {"type": "vocab"}


def _elmo(request):
    pytest.importorskip("elmoformanylangs")
    from sentiscore.embed.elmo import ElmoEmbedder

    embedder = ElmoEmbedder(request.getfixturevalue("tiny_elmo"), layer_mix="scalar", device="cpu")
    return embedder, {"type": "elmo", **embedder.settings()}


def _elmo_vocab(request):
    from sentiscore.embed.elmo_vocab import ElmoVocabEmbedder

    elmo, _ = _elmo(request)
    words, _ = _vocab(request)
    embedder = ElmoVocabEmbedder(elmo, words)
    return embedder, embedder.settings()


@pytest.fixture(params=[_vocab, _elmo, _elmo_vocab], ids=["vocab", "elmo", "elmo+vocab"])
def embedder_and_settings(request):
    return request.param(request)


def test_embedder_keeps_the_contract(embedder_and_settings, tmp_path):
    embedder, settings = embedder_and_settings
    assert isinstance(embedder, Embedder)
    assert embedder.kind == settings["type"]
    assert isinstance(embedder.score_batch_size, int) and embedder.score_batch_size > 0
    assert isinstance(embedder.encodes_in_background, bool)

    segmented = Segmenter(SegmenterConfig(), maxlen=48).segment(TEXTS)
    features = embedder.featurize(segmented)
    rows, width = np.array([2, 0, 1]), 6
    inputs = embedder.encode(features, rows, width)
    mask = inputs.pop("mask")
    assert mask.dtype == bool and mask.shape == (3, width)
    expected = np.minimum(segmented.lengths[rows], width)
    np.testing.assert_array_equal(mask.sum(axis=1), expected)
    for r, n in enumerate(expected):  # real tokens first, then padding
        assert mask[r, :n].all() and not mask[r, n:].any()
    assert inputs, "encode returns the embedder's own arrays besides the mask"
    for name, array in inputs.items():
        assert array.shape[:2] == (3, width), name
        assert not np.any(array[~mask]), f"{name} is not zero on padding"
        assert np.any(array[mask]), f"{name} is all zero on real tokens"

    directory = tmp_path / "saved"
    directory.mkdir()
    files = embedder.save(directory)
    assert files and all((directory / f).exists() for f in files)
    again = load_embedder(directory, settings, device="cpu")
    reloaded = again.encode(again.featurize(segmented), rows, width)
    for name, array in embedder.encode(features, rows, width).items():
        np.testing.assert_allclose(reloaded[name], array, rtol=1e-5, atol=1e-6, err_msg=name)
