"""Custom Keras layers, registered so ``.keras`` files load under
``safe_mode=True`` without Lambda layers or custom code objects."""

from __future__ import annotations

import keras
from keras import ops

from .config import WIDE_WEIGHTINGS


@keras.saving.register_keras_serializable(package="sentiscore")
class FeedForwardAttention(keras.layers.Layer):
    """Raffel & Ellis (2015) feed-forward attention over a sequence:

        e_t = tanh(h_t · w + b_t),  α = softmax(e) over real tokens,  c = Σ α_t h_t

    ``b_t`` is a per-position bias (as in TextAttBiRNN) for up to ``max_steps``
    positions; shorter batches use its first T entries. Padding gets exactly
    zero weight. Returns ``[c, α]`` so α is there at prediction time.
    """

    def __init__(self, max_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.max_steps = int(max_steps)
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        self.w = self.add_weight(name="w", shape=(dim, 1), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.max_steps,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, mask=None):
        steps = ops.shape(inputs)[1]
        scores = ops.tanh(ops.squeeze(ops.matmul(inputs, self.w), -1) + self.b[:steps])
        if mask is None:
            mask = ops.ones(ops.shape(scores), dtype="bool")
        mask_f = ops.cast(mask, scores.dtype)
        # Subtracting the max keeps exp() finite; masked steps are zeroed after exp, not before.
        scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        scores = scores - ops.max(scores, axis=1, keepdims=True)
        weights = ops.exp(scores) * mask_f
        alpha = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1e-9)
        context = ops.sum(inputs * ops.expand_dims(alpha, -1), axis=1)
        return [context, alpha]

    def compute_mask(self, inputs, mask=None):
        return [None, None]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], input_shape[-1]), (input_shape[0], input_shape[1])]

    def get_config(self):
        return {**super().get_config(), "max_steps": self.max_steps}


@keras.saving.register_keras_serializable(package="sentiscore")
class HashedNgramLinear(keras.layers.Layer):
    """Linear layer over a bag of hashed n-gram ids (0 = padding): an
    embedding-bag with one weight per (bucket, class), summed over the row and
    scaled so long texts don't dominate. ``weighting="count"``: by
    1/sqrt(count); ``"idf"``: by 1/‖idf of the row's ids‖₂, with the idf
    weights in a frozen ``idf`` vector and folded into ``table`` (each id
    appears once per row, as the hasher gives them), so the output is the
    TF-IDF logistic regression's. ``dropout`` drops n-grams at random while
    training (feature dropout regularises transfer)."""

    def __init__(self, num_buckets: int, units: int, l2: float = 0.0, dropout: float = 0.0, weighting: str = "count", **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = int(num_buckets)
        self.units = int(units)
        self.l2 = float(l2)
        self.dropout = float(dropout)
        if weighting not in WIDE_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WIDE_WEIGHTINGS)}, not {weighting!r}")
        self.weighting = weighting
        self.seed_generator = keras.random.SeedGenerator(7)

    def build(self, input_shape):
        reg = keras.regularizers.L2(self.l2) if self.l2 else None
        self.table = self.add_weight(
            name="table", shape=(self.num_buckets, self.units), initializer="zeros", regularizer=reg
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        if self.weighting == "idf":
            self.idf = self.add_weight(name="idf", shape=(self.num_buckets,), initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, ids, training=False):
        keep = ops.cast(ops.not_equal(ids, 0), self.compute_dtype)
        if training and self.dropout > 0:
            draw = keras.random.uniform(ops.shape(keep), seed=self.seed_generator)
            keep = keep * ops.cast(draw >= self.dropout, self.compute_dtype)
        rows = ops.take(self.table, ids, axis=0) * ops.expand_dims(keep, -1)
        if self.weighting == "idf":
            weight = ops.take(self.idf, ids, axis=0) * keep
            norm = ops.maximum(ops.sqrt(ops.sum(weight * weight, axis=1, keepdims=True)), 1e-6)
        else:
            norm = ops.sqrt(ops.maximum(ops.sum(keep, axis=1, keepdims=True), 1.0))
        return ops.sum(rows, axis=1) / norm + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "num_buckets": self.num_buckets,
            "units": self.units,
            "l2": self.l2,
            "dropout": self.dropout,
            "weighting": self.weighting,
        }


@keras.saving.register_keras_serializable(package="sentiscore")
class TokenDropout(keras.layers.Layer):
    """While training, replaces a share of real token ids by the OOV id, so the
    model learns not to lean on single in-domain words (helps other domains)."""

    def __init__(self, rate: float, oov_id: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.oov_id = int(oov_id)
        self.seed_generator = keras.random.SeedGenerator(11)

    def call(self, ids, training=False):
        if not training or self.rate <= 0:
            return ids
        draw = keras.random.uniform(ops.shape(ids), seed=self.seed_generator)
        drop = ops.logical_and(draw < self.rate, ops.greater(ids, self.oov_id))
        return ops.where(drop, ops.full_like(ids, self.oov_id), ids)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "oov_id": self.oov_id}


@keras.saving.register_keras_serializable(package="sentiscore")
class LogitCalibration(keras.layers.Layer):
    """``logits / temperature + bias``, fitted on the validation split after
    training: the temperature makes ``confidence`` honest, the per-class bias
    sets the decision thresholds (the scarce neutral class needs one)."""

    def __init__(self, temperature: float = 1.0, bias=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.bias = [float(b) for b in bias] if bias is not None else None

    def call(self, logits):
        out = logits / self.temperature
        if self.bias is not None:
            out = out + ops.convert_to_tensor(self.bias, dtype=logits.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "bias": self.bias}


@keras.saving.register_keras_serializable(package="sentiscore")
class ScalarMix(keras.layers.Layer):
    """ELMo's learned layer mix (Peters et al. 2018): ``γ Σ_l softmax(s)_l x_l``
    over the biLM layers of a ``(batch, steps, layers, dim)`` input."""

    def build(self, input_shape):
        self.scalars = self.add_weight(name="scalars", shape=(input_shape[-2],), initializer="zeros")
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")
        super().build(input_shape)

    def call(self, inputs):
        weights = ops.softmax(self.scalars)
        return self.gamma * ops.einsum("btld,l->btd", inputs, weights)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-2], input_shape[-1])
