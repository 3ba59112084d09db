import numpy as np
import pytest

keras = pytest.importorskip("keras")
from sentiscore.model import import_tensorflow  # noqa: E402

import_tensorflow()
from sentiscore.layers import FeedForwardAttention, HashedNgramLinear, TokenDropout  # noqa: E402


def attention_model(max_steps=12, dim=6):
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, dim, mask_zero=True)(ids)
    context, alpha = FeedForwardAttention(max_steps, name="attention")(x)
    return keras.Model(ids, [context, alpha])


def test_attention_is_zero_on_padding_and_sums_to_one():
    model = attention_model()
    ids = np.array([[5, 6, 7, 0, 0, 0], [1, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]], np.int32)
    context, alpha = (t.numpy() for t in model(ids))
    assert alpha.shape == ids.shape
    assert (alpha[ids == 0] == 0).all()
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)
    assert context.shape == (3, 6)


def test_padding_does_not_change_a_texts_result():
    model = attention_model()
    short = np.array([[5, 6, 7]], np.int32)
    padded = np.array([[5, 6, 7, 0, 0, 0, 0, 0]], np.int32)
    c1, a1 = (t.numpy() for t in model(short))
    c2, a2 = (t.numpy() for t in model(padded))
    np.testing.assert_allclose(c1, c2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a1[0], a2[0, :3], rtol=1e-5, atol=1e-7)


def test_attention_layer_round_trips_through_config():
    layer = FeedForwardAttention(40, name="attention")
    clone = FeedForwardAttention.from_config(layer.get_config())
    assert clone.max_steps == 40 and clone.name == "attention"


def test_hashed_linear_equals_a_manual_bag_of_ngrams():
    layer = HashedNgramLinear(10, 3)
    ids = np.array([[1, 4, 4, 0], [2, 0, 0, 0]], np.int32)
    layer(ids)
    table = np.arange(30, dtype=np.float32).reshape(10, 3) / 10
    bias = np.array([0.5, -0.5, 0.0], np.float32)
    layer.set_weights([table, bias])
    out = layer(ids).numpy()
    expected0 = (table[1] + 2 * table[4]) / np.sqrt(3) + bias
    expected1 = table[2] + bias
    np.testing.assert_allclose(out, [expected0, expected1], rtol=1e-6)


def test_hashed_linear_all_padding_gives_bias_only():
    layer = HashedNgramLinear(10, 2)
    out = layer(np.zeros((1, 4), np.int32)).numpy()
    np.testing.assert_allclose(out, np.zeros((1, 2)))


def test_token_dropout_only_while_training_and_never_touches_padding():
    layer = TokenDropout(0.5)
    ids = np.array([[5, 6, 7, 8, 9, 10, 0, 0]] * 50, np.int32)
    assert (layer(ids, training=False).numpy() == ids).all()
    dropped = layer(ids, training=True).numpy()
    assert (dropped[:, 6:] == 0).all()
    assert set(np.unique(dropped[:, :6])) <= {1, 5, 6, 7, 8, 9, 10}
    assert 0.3 < (dropped[:, :6] == 1).mean() < 0.7
